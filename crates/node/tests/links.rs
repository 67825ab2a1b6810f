//! The node core's links, event by event: what a payment, a status request and invalid data
//! on a link make it send, and to whom.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mvbc_node::apply::BlockSink;
use mvbc_node::core::{Effect, NodeCore};
use mvbc_node::links::{LinkId, Links, Refused};
use mvbc_protocol::block::{GENESIS_TIMESTAMP, merkle_root};
use mvbc_protocol::header::HEADER_VERSION;
use mvbc_protocol::store::StoreError;
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
    fn append(&mut self, _: &Block) -> Result<(), StoreError> {
        Ok(())
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
    let ids: Vec<Hash256> = transactions.iter().map(Transaction::id).collect();
    let mut block = Block {
        header: BlockHeader {
            version: HEADER_VERSION,
            prev_hash: parent.hash(),
            merkle_root: merkle_root(&ids),
            timestamp: parent.timestamp + 1,
            height,
            difficulty: PARAMS.difficulty,
            nonce: 0,
        },
        transactions,
    };
    while !block.header.meets_own_difficulty() {
        block.header.nonce += 1;
    }
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
fn node(chain: Chain, key: &KeyPair, t0: Instant) -> NodeCore<Memory> {
    let chain = Arc::new(RwLock::new(chain));
    let quiet = Duration::from_secs(16);
    let mut core = NodeCore::new(1, 2607, chain, Memory, key.address(), quiet);
    core.set_links(Links::new(1, &[], &[], t0));
    core
}

/// Brings up an inbound link from node `id` at 10.0.0.`i`.
fn link_in(core: &mut NodeCore<Memory>, i: u8, id: u64, t0: Instant) -> LinkId {
    core.admit_link(addr(i).ip(), &hello(id), t0).unwrap();
    core.link_up(addr(i), false, hello(id), t0).unwrap()
}

fn hello(node_id: u64) -> Status {
    Status {
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
    core.on_link_message(ids[0], LinkMessage::Payment(payment.clone()), t0, NOW);
    assert_eq!(payments_sent(&core.take_effects()), [ids[1], ids[2]]);
    core.on_link_message(ids[1], LinkMessage::Payment(payment), t0, NOW);
    assert_eq!(payments_sent(&core.take_effects()), Vec::<LinkId>::new());

    // A broadcast request for status is answered by broadcast only: nothing to the links.
    core.on_status_request();
    let effects = core.take_effects();
    assert!(
        matches!(effects.as_slice(), [Effect::Announce(_)]),
        "{effects:?}"
    );

    // A payment whose signature does not hold: the link closes, its address is refused.
    let mut forged = Payment::new_signed(&key, key.address(), Amount::from_units(6), NOW);
    forged.amount = Amount::from_units(7);
    core.on_link_message(ids[2], LinkMessage::Payment(forged), t0, NOW);
    let effects = core.take_effects();
    assert!(effects.contains(&Effect::Close(ids[2])), "{effects:?}");
    assert!(payments_sent(&effects).is_empty());
    assert_eq!(
        core.admit_link(addr(3).ip(), &hello(99), t0),
        Err(Refused::Banned)
    );
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
    core.on_mined(ours, Duration::from_millis(1), 1, t0, NOW);
    let (q, r) = (pay(6), pay(7));
    let theirs_2 = block_on(&first.header, &key, &[&q]);
    let theirs_3 = block_on(&theirs_2.header, &key, &[&r]);
    core.take_effects();
    core.on_downloaded(addr(1), vec![theirs_2, theirs_3], t0, NOW)
        .unwrap();
    let effects = core.take_effects();
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
        node_id: 9,
        height,
        tip,
        chain_work: 1,
        block_server_port: 2607,
    };
    // Made up: a hash that misses the difficulty. Ignored.
    let mut fake = Hash256([0xff; 32]);
    fake.0[0] = 1;
    core.on_status(status(fake, 1), addr(9), t0, t0);
    assert_eq!(core.stale_blocks(10).stale, 0);
    // Our own tip, said again: not stale.
    core.on_status(status(b1.hash(), 1), addr(9), t0, t0);
    assert_eq!(core.stale_blocks(10).stale, 0);
    // A real rival block 1, never fetched, heard twice: one stale block beside block 1.
    core.on_status(status(rival.hash(), 1), addr(9), t0, t0);
    core.on_status(status(rival.hash(), 1), addr(8), t0, t0);
    let count = core.stale_blocks(10);
    assert_eq!((count.stale, count.best), (1, 1));
}
