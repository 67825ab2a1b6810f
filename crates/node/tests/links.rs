//! The node core's links, event by event: what a payment, a status request and invalid data
//! on a link make it send, and to whom.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mvbc_node::apply::BlockSink;
use mvbc_node::core::{Effect, Input, NodeCore, Note, Timing};
use mvbc_node::links::{LinkId, Links, Refused};
use mvbc_protocol::block::GENESIS_TIMESTAMP;
use mvbc_protocol::store::{BodyAt, StoreError};
use mvbc_protocol::wire::{LinkMessage, Status};
use mvbc_protocol::{
    Amount, Block, BlockHeader, Chain, ConsensusParams, Hash256, KeyPair, Payment, Reward,
    Transaction, genesis_block,
};

const PARAMS: ConsensusParams = ConsensusParams {
    difficulty: 4,
    block_size: 2,
    block_reward: Amount::from_units(10_000_000),
};
const NOW: u64 = GENESIS_TIMESTAMP + 86_400;

struct Memory;

impl BlockSink for Memory {
    fn append(&mut self, _: &Block) -> Result<Option<BodyAt>, StoreError> {
        Ok(None)
    }
}

/// A block on `parent` paying its reward to `miner`, with `payments`, mined at the test
/// difficulty.
fn block_on(parent: &BlockHeader, miner: &KeyPair, payments: &[&Payment]) -> Block {
    let height = parent.height + 1;
    let mut transactions = vec![Transaction::Reward(Reward {
        to: miner.address(),
        amount: PARAMS.block_reward,
        height,
    })];
    transactions.extend(payments.iter().map(|p| Transaction::Payment((*p).clone())));
    let mut block = Block::assemble(
        parent,
        transactions,
        parent.timestamp + 1,
        PARAMS.difficulty,
    );
    block.header.solve();
    block
}

/// A chain whose block 1 pays `key`, and that block.
fn chain_paying(key: &KeyPair) -> (Chain, Block) {
    let mut chain = Chain::new(PARAMS);
    let block = block_on(&genesis_block().header, key, &[]);
    chain.add_block(block.clone(), NOW).unwrap();
    (chain, block)
}

/// Node 1 on `chain`, paying its rewards to `key`, with links but none up yet.
fn node(chain: Chain, key: &KeyPair, t0: Instant) -> Node {
    let chain = Arc::new(RwLock::new(chain));
    let timing = Timing::for_interval(Duration::from_secs(5));
    let mut core = NodeCore::new(1, 2607, chain, Memory, key.address(), timing);
    core.set_links(Links::new(1, &[], &[], t0));
    Node {
        core,
        said: Vec::new(),
    }
}

/// A core and the effects it asked for that the test has not read yet.
struct Node {
    core: NodeCore<Memory>,
    said: Vec<Effect>,
}

impl std::ops::Deref for Node {
    type Target = NodeCore<Memory>;
    fn deref(&self) -> &NodeCore<Memory> {
        &self.core
    }
}

impl Node {
    fn handle(&mut self, input: Input, t0: Instant) {
        self.core.handle(input, t0, NOW);
        self.said.extend(self.core.take_effects());
    }

    /// Every effect asked for since the last call, in order.
    fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.said)
    }
}

/// Offers an inbound link from node `id` at 10.0.0.`i`: the core's verdict (the other effects
/// stay to be read).
fn offer(core: &mut Node, i: u8, id: u64, t0: Instant) -> Result<LinkId, Refused> {
    let conn = u64::from(i) * 1_000 + id;
    let input = Input::LinkOffered {
        conn,
        peer: SocketAddr::from(([10, 0, 0, i], 40_000)),
        outbound: false,
        hello: hello(id),
    };
    core.handle(input, t0);
    let at = core
        .said
        .iter()
        .position(|e| matches!(e, Effect::Link { conn: c, .. } if *c == conn))
        .expect("every offer gets a verdict");
    match core.said.remove(at) {
        Effect::Link { verdict, .. } => verdict,
        _ => unreachable!("found above"),
    }
}

/// Brings up an inbound link from node `id` at 10.0.0.`i`.
fn link_in(core: &mut Node, i: u8, id: u64, t0: Instant) -> LinkId {
    offer(core, i, id, t0).unwrap()
}

/// A status heard from `from`.
fn heard(core: &mut Node, status: Status, from: SocketAddr, t0: Instant) {
    let input = Input::Status {
        status,
        from,
        received: t0,
    };
    core.handle(input, t0);
}

fn hello(node_id: u64) -> Status {
    Status {
        network: PARAMS.network_id(),
        node_id,
        height: 0,
        tip: Hash256::ZERO,
        chain_work: 0,
        block_server_port: 2607,
    }
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 2607))
}

/// Which links were sent a payment.
fn payments_sent(effects: &[Effect]) -> Vec<LinkId> {
    let mut to: Vec<LinkId> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(id, LinkMessage::Payment(_)) => Some(*id),
            _ => None,
        })
        .collect();
    to.sort_unstable();
    to
}

#[test]
fn a_payment_goes_on_to_every_other_link_once_and_a_bad_one_closes_its_link() {
    let t0 = Instant::now();
    let key = KeyPair::generate(1024).unwrap();
    let mut core = node(chain_paying(&key).0, &key, t0);
    let ids: Vec<LinkId> = (1..=3u8)
        .map(|i| link_in(&mut core, i, 10 + u64::from(i), t0))
        .collect();
    let greeted: Vec<LinkId> = core
        .take_effects()
        .iter()
        .filter_map(|e| match e {
            Effect::Send(id, LinkMessage::Status(s)) if s.node_id == 1 => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(greeted, ids, "each new link is sent our status");

    // A payment from link 1 goes to links 2 and 3, once; the same from link 2 goes nowhere.
    let payment = Payment::new_signed(&key, key.address(), Amount::from_units(5), NOW);
    let from_link = |id, payment| Input::LinkMessage(id, LinkMessage::Payment(payment));
    core.handle(from_link(ids[0], payment.clone()), t0);
    assert_eq!(payments_sent(&core.take_effects()), [ids[1], ids[2]]);
    core.handle(from_link(ids[1], payment), t0);
    assert_eq!(payments_sent(&core.take_effects()), Vec::<LinkId>::new());

    // A broadcast request for status is answered by broadcast only: nothing to the links.
    core.handle(Input::StatusRequest, t0);
    let said = core.take_effects();
    assert!(matches!(said.as_slice(), [Effect::Announce(_)]), "{said:?}");

    // A payment whose signature does not hold: the link closes, its address is refused.
    let mut forged = Payment::new_signed(&key, key.address(), Amount::from_units(6), NOW);
    forged.amount = Amount::from_units(7);
    core.handle(from_link(ids[2], forged), t0);
    let said = core.take_effects();
    let closed = said
        .iter()
        .any(|e| matches!(e, Effect::Close(id) if *id == ids[2]));
    assert!(closed, "{said:?}");
    assert!(payments_sent(&said).is_empty());
    assert_eq!(offer(&mut core, 3, 99, t0), Err(Refused::Banned));
    assert_eq!(core.links().len(), 2);
}

#[test]
fn payments_a_reorg_puts_back_in_the_pool_are_passed_on_to_the_links() {
    let t0 = Instant::now();
    let key = KeyPair::generate(1024).unwrap();
    let (chain, first) = chain_paying(&key);
    let mut core = node(chain, &key, t0);
    let link = link_in(&mut core, 1, 11, t0);

    // Our block 2 holds P; a peer's branch of two blocks, without P, takes its place.
    let pay = |units| Payment::new_signed(&key, key.address(), Amount::from_units(units), NOW);
    let p = pay(5);
    let ours = block_on(&first.header, &key, &[&p]);
    let mined = Input::Mined {
        job: 1,
        block: ours,
        took: Duration::from_millis(1),
        hashes: 1,
    };
    core.handle(mined, t0);
    let (q, r) = (pay(6), pay(7));
    let theirs_2 = block_on(&first.header, &key, &[&q]);
    let theirs_3 = block_on(&theirs_2.header, &key, &[&r]);
    core.take_effects();
    let downloaded = Input::Downloaded {
        peer: addr(1),
        blocks: vec![theirs_2, theirs_3],
    };
    core.handle(downloaded, t0);
    let effects = core.take_effects();
    let delivered = effects
        .iter()
        .any(|e| matches!(e, Effect::Delivered { result: Ok(2), .. }));
    assert!(delivered, "{effects:?}");
    let passed: Vec<&Payment> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(id, LinkMessage::Payment(p)) if *id == link => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(passed, [&p], "{effects:?}");
    assert_eq!(core.pending(), 1);
}

/// Stale blocks a node never fetched still count when a status names them, but only real ones:
/// a tip whose hash meets the difficulty (nobody makes one up without the work).
#[test]
fn heard_tips_count_as_stale_only_when_their_hash_is_a_real_blocks() {
    let t0 = Instant::now();
    let key = KeyPair::generate(1024).unwrap();
    let (chain, b1) = chain_paying(&key);
    let mut core = node(chain, &key, t0);
    assert_eq!(core.stale_blocks(10).stale, 0);
    let rival = block_on(
        &genesis_block().header,
        &KeyPair::generate(1024).unwrap(),
        &[],
    );
    let status = |tip: Hash256, height: u64| Status {
        network: PARAMS.network_id(),
        node_id: 9,
        height,
        tip,
        chain_work: 1,
        block_server_port: 2607,
    };
    // Made up: a hash that misses the difficulty. Ignored.
    let mut fake = Hash256([0xff; 32]);
    fake.0[0] = 1;
    heard(&mut core, status(fake, 1), addr(9), t0);
    assert_eq!(core.stale_blocks(10).stale, 0);
    // Our own tip, said again: not stale.
    heard(&mut core, status(b1.hash(), 1), addr(9), t0);
    assert_eq!(core.stale_blocks(10).stale, 0);
    // A real rival block 1, never fetched, heard twice: one stale block beside block 1.
    heard(&mut core, status(rival.hash(), 1), addr(9), t0);
    heard(&mut core, status(rival.hash(), 1), addr(8), t0);
    let count = core.stale_blocks(10);
    assert_eq!((count.stale, count.best), (1, 1));
}

/// Issue 22: nodes of another network (other consensus parameters) are ignored: their statuses
/// start no download and count no peer, their link offers are refused, and the first from
/// each network is told of once while the rest are only counted.
#[test]
fn nodes_of_another_network_are_ignored_told_of_once_and_counted() {
    let t0 = Instant::now();
    let key = KeyPair::generate(1024).unwrap();
    let (chain, _) = chain_paying(&key);
    let mut core = node(chain, &key, t0);
    core.handle(Input::Start, t0);
    core.take_effects();
    let other = ConsensusParams {
        block_size: PARAMS.block_size + 1,
        ..PARAMS
    }
    .network_id();
    let boast = Status {
        network: other,
        node_id: 9,
        height: 1_000,
        tip: Hash256([7; 32]),
        chain_work: u128::MAX / 2,
        block_server_port: 2607,
    };
    for i in 0..5 {
        heard(&mut core, boast, addr(20 + i), t0);
    }
    let effects = core.take_effects();
    let told = effects
        .iter()
        .filter(
            |e| matches!(e, Effect::Note(Note::OtherNetwork { network, .. }) if *network == other),
        )
        .count();
    assert_eq!(told, 1, "{effects:?}");
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Download(..))),
        "{effects:?}"
    );
    assert!(core.sync().peers().is_empty());
    assert_eq!(core.other_network_messages(), 5);

    let conn = 77;
    core.handle(
        Input::LinkOffered {
            conn,
            peer: addr(30),
            outbound: false,
            hello: boast,
        },
        t0,
    );
    let verdict = core.take_effects().into_iter().find_map(|e| match e {
        Effect::Link { conn: c, verdict } if c == conn => Some(verdict),
        _ => None,
    });
    assert!(
        matches!(verdict, Some(Err(Refused::OtherNetwork(n))) if n == other),
        "{verdict:?}"
    );
    assert_eq!(core.other_network_messages(), 6);
    // The same status on our network is heeded: a download starts.
    heard(
        &mut core,
        Status {
            network: PARAMS.network_id(),
            ..boast
        },
        addr(40),
        t0,
    );
    assert!(
        core.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Download(..)))
    );
}

/// Issue 22: a node far behind downloads before it mines. Its download's blocks are told of in
/// its progress, not one line a batch, and mining waits until they are in; a peer that
/// announces a chain it does not serve keeps the node from mining for the grace at most, and
/// the next such peer not at all for a while.
#[test]
fn a_node_far_behind_downloads_before_it_mines_and_a_liar_costs_only_the_grace() {
    use mvbc_node::catchup::{CATCH_UP_BLOCKS, PROOF_GRACE};
    use mvbc_node::sync::DownloadError;
    let t0 = Instant::now();
    let key = KeyPair::generate(1024).unwrap();
    let mut blocks = vec![block_on(&genesis_block().header, &key, &[])];
    for i in 1..=CATCH_UP_BLOCKS + 3 {
        let p = Payment::new_signed(&key, key.address(), Amount::from_units(1), NOW - 100 + i);
        let parent = blocks.last().unwrap().header;
        blocks.push(block_on(&parent, &key, &[&p]));
    }
    let work = |n: usize| n as u128 * (1u128 << PARAMS.difficulty);
    let status = |height: u64, work: u128| Status {
        network: PARAMS.network_id(),
        node_id: 9,
        height,
        tip: blocks[height as usize - 1].hash(),
        chain_work: work,
        block_server_port: 2607,
    };
    let mines = |effects: &[Effect]| effects.iter().any(|e| matches!(e, Effect::Mine { .. }));
    let listened = t0 + Timing::for_interval(Duration::from_secs(5)).listen;

    // The honest case: the network is 10 blocks ahead.
    let mut core = node(Chain::new(PARAMS), &key, t0);
    core.handle(Input::Start, t0);
    core.take_effects();
    let peer = addr(9);
    heard(
        &mut core,
        status(blocks.len() as u64, work(blocks.len())),
        peer,
        t0,
    );
    let effects = core.take_effects();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Download(..))),
        "{effects:?}"
    );
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Note(Note::CatchingUp { target, .. }) if *target == blocks.len() as u64)),
        "{effects:?}"
    );
    core.handle(Input::Wakeup, listened);
    assert!(
        !mines(&core.take_effects()),
        "no block below the network's tip"
    );
    let t1 = listened + Duration::from_millis(500);
    core.handle(
        Input::Downloaded {
            peer,
            blocks: blocks[..5].to_vec(),
        },
        t1,
    );
    let effects = core.take_effects();
    assert!(!mines(&effects), "{effects:?}");
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Note(Note::BlockAdopted { .. }))),
        "batches are folded into the progress: {effects:?}"
    );
    let progress = core.catch_up(t1).expect("catching up");
    assert_eq!((progress.height, progress.target), (5, blocks.len() as u64));
    // Past the grace, blocks keep coming: still not mining.
    let t2 = t1 + PROOF_GRACE + Duration::from_secs(1);
    core.handle(Input::Wakeup, t2);
    assert!(!mines(&core.take_effects()));
    core.handle(
        Input::Downloaded {
            peer,
            blocks: blocks[5..].to_vec(),
        },
        t2,
    );
    core.handle(
        Input::DownloadDone {
            peer,
            result: Ok(blocks.len() as u64),
        },
        t2,
    );
    let effects = core.take_effects();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Note(Note::CaughtUp { done: true, height, .. }) if *height == blocks.len() as u64)),
        "{effects:?}"
    );
    assert!(core.catch_up(t2).is_none());

    // A liar: announces far more than it serves. Mining waits for the grace, then goes on.
    let mut core = node(Chain::new(PARAMS), &key, t0);
    core.handle(Input::Start, t0);
    core.take_effects();
    heard(&mut core, status(1, work(1_000)), addr(66), t0);
    core.handle(Input::Wakeup, listened);
    assert!(!mines(&core.take_effects()));
    core.handle(Input::Wakeup, t0 + PROOF_GRACE);
    assert!(mines(&core.take_effects()), "the grace is over: it mines");
    // Its download fails; the next liar right after gets no pause at all.
    core.handle(
        Input::DownloadDone {
            peer: addr(66),
            result: Err(DownloadError::LightBranch {
                work: 0,
                announced: work(1_000),
            }),
        },
        t0 + PROOF_GRACE,
    );
    core.take_effects();
    heard(
        &mut core,
        status(1, work(2_000)),
        addr(67),
        t0 + PROOF_GRACE,
    );
    let effects = core.take_effects();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Download(..))),
        "{effects:?}"
    );
    assert!(
        !effects.iter().any(|e| matches!(
            e,
            Effect::StopMining | Effect::Note(Note::CatchingUp { .. })
        )),
        "{effects:?}"
    );
}

/// A node whose first download failed while a peer far ahead waits its turn (downloads from
/// one host start once a second) waits for it within its allowance, instead of mining a block
/// 1 of its own in the gap and losing it.
#[test]
fn after_a_failed_download_the_node_waits_for_the_peer_far_ahead_whose_turn_comes_next() {
    use mvbc_node::sync::DownloadError;
    let t0 = Instant::now();
    let key = KeyPair::generate(1024).unwrap();
    // Statuses every 200 ms: the node listens 400 ms, less than a host's dial interval.
    let timing = Timing::for_interval(Duration::from_millis(200));
    let chain = Arc::new(RwLock::new(Chain::new(PARAMS)));
    let mut core = Node {
        core: NodeCore::new(1, 2607, chain, Memory, key.address(), timing),
        said: Vec::new(),
    };
    core.core.set_links(Links::new(1, &[], &[], t0));
    core.handle(Input::Start, t0);
    core.take_effects();
    let work = |n: u128| n * (1u128 << PARAMS.difficulty);
    let status = |height: u64, port: u16| Status {
        network: PARAMS.network_id(),
        node_id: u64::from(port),
        height,
        tip: Hash256([port as u8; 32]),
        chain_work: work(u128::from(height)),
        block_server_port: port,
    };
    // One host, two block servers: a liar far ahead, and an honest peer 10 blocks ahead.
    let liar = SocketAddr::from(([10, 0, 0, 9], 1_000));
    let honest = SocketAddr::from(([10, 0, 0, 9], 2_000));
    heard(&mut core, status(1_000, 1_000), liar, t0);
    heard(&mut core, status(10, 2_000), honest, t0);
    let downloads = |effects: &[Effect]| -> Vec<SocketAddr> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Download(d, _) => Some(d.peer),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        downloads(&core.take_effects()),
        [liar],
        "one host, one at a time"
    );
    let listened = t0 + timing.listen;
    core.handle(Input::Wakeup, listened);
    let failed = listened + Duration::from_millis(10);
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    core.handle(
        Input::DownloadDone {
            peer: liar,
            result: Err(DownloadError::Connect {
                peer: liar,
                source: refused,
            }),
        },
        failed,
    );
    let effects = core.take_effects();
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Mine { .. })),
        "no block 1 of its own while the honest peer waits its turn: {effects:?}"
    );
    assert!(
        downloads(&effects).is_empty(),
        "not its turn yet: {effects:?}"
    );
    let progress = core.catch_up(failed).expect("waiting for the honest peer");
    assert_eq!((progress.peer, progress.target), (honest, 10));
    // Its turn comes within the second: the honest download starts, the node still waiting.
    let mut effects = Vec::new();
    while downloads(&effects).is_empty() {
        let at = core.next_wakeup().expect("a retry is due");
        assert!(
            at < failed + Duration::from_secs(2),
            "no turn for the honest peer"
        );
        core.handle(Input::Wakeup, at);
        effects.extend(core.take_effects());
    }
    assert_eq!(downloads(&effects), [honest], "{effects:?}");
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Mine { .. })),
        "{effects:?}"
    );
}
