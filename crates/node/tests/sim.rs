//! Deterministic simulation of a whole network of node cores (the same `NodeCore` the miner
//! binary drives) over a simulated network and clock, all from one seed: latency, loss, a
//! partition that heals, payments throughout, and a fake engine that finds blocks at a seeded
//! rate. Tests here are named `sim_*`; a failing run prints its seed, and
//! `MVBC_SIM_SEED=<seed> cargo test -p mvbc-node --test sim` replays it.
//!
//! Some nodes lie: they announce far more work than they have, and a download from one either
//! stalls until it times out (10 s) or brings nothing.
//!
//! What the simulation stands in for, and what it leaves to the process tests: downloads hand
//! the peer's blocks over directly (`Chain::blocks_after`, as its block server would) rather
//! than over TCP, and without the headers check the TCP client runs first; wallets are
//! payment sources that re-broadcast until their payment is confirmed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mvbc_node::apply::ApplyError;
use mvbc_node::apply::BlockSink;
use mvbc_node::core::{Effect, Input, NodeCore, Note, Timing};
use mvbc_node::sync::Download;
use mvbc_node::sync::DownloadError;
use mvbc_protocol::block::GENESIS_TIMESTAMP;
use mvbc_protocol::chain::read_chain;
use mvbc_protocol::store::{BodyAt, StoreError};
use mvbc_protocol::wire::Status;
use mvbc_protocol::{
    Amount, Block, Chain, ConsensusParams, Hash256, KeyPair, Payment, Transaction,
};

use mvbc_testkit::rng::TestRng as Rng;

/// A store that keeps what it is given.
#[derive(Default)]
struct Memory(Vec<Block>);

impl BlockSink for Memory {
    fn append(&mut self, block: &Block) -> Result<Option<BodyAt>, StoreError> {
        self.0.push(block.clone());
        Ok(None)
    }
}

/// The network the simulation runs.
#[derive(Clone, Copy, Debug)]
struct Shape {
    nodes: usize,
    /// The first `liars` nodes lie (half of them stall downloads, half serve nothing).
    liars: usize,
    /// Chance that one datagram is lost.
    loss: f64,
    /// The network splits into this many groups between these times (ms)...
    groups: u64,
    partition: (u64, u64),
    /// Payments are sent from the start until this time (ms); the run ends at `end`.
    pay_until: u64,
    end: u64,
    /// Mean time for one node to find a block while it mines (ms).
    block_time_per_node: f64,
    /// One-way latency of a datagram or download, in ms: at least the first, below the second.
    latency: (u64, u64),
    /// Time between two payments sent, in ms: at least the first, below the second.
    pay_every: (u64, u64),
    /// Payments come in bursts of this long (ms), each followed by a quiet time this long in
    /// which nobody pays: one tip everywhere is checked at the end of each quiet time. `None`:
    /// payments throughout.
    bursts: Option<(u64, u64)>,
}

/// How often every node broadcasts its status, whether its tip moved or not (ms): the miner's
/// `status_broadcast_interval`, one announcement round.
const ANNOUNCE_EVERY: u64 = 5_000;

enum Ev {
    /// A node starts.
    Start(usize),
    Status {
        to: usize,
        status: Status,
        from: usize,
    },
    Payment {
        to: usize,
        payment: Box<Payment>,
    },
    Found {
        node: usize,
        job: u64,
    },
    Download {
        node: usize,
        peer: usize,
    },
    Stalled {
        node: usize,
        peer: usize,
    },
    Announce(usize),
    /// The time a node's core asked to be woken at.
    Wakeup(usize),
    Pay,
    Rebroadcast(usize),
    /// The end of a quiet time: every honest node must be on one tip.
    Check,
}

struct SimNode {
    core: NodeCore<Memory>,
    job: Option<(u64, Block)>,
    /// The wake-up scheduled for it, in ms.
    wakeup_at: Option<u64>,
    /// How its last downloaded batch went.
    delivered: Option<Result<u64, ApplyError>>,
}

struct Sim {
    shape: Shape,
    rng: Rng,
    t: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    base: Instant,
    payers: Vec<KeyPair>,
    /// Every payment sent, and the node its wallet talks through.
    payments: Vec<(Payment, usize)>,
    dropped: u64,
    /// Tip moves to another branch, over every node.
    reorgs: u64,
    /// Downloads that failed and passed their peer over, over every node.
    failed: u64,
    /// Salts for payment signatures, from the seed.
    salts: rand::rngs::StdRng,
    /// Ground truth: every block any node found, by height.
    found: HashMap<u64, u64>,
    /// When a node last found a block (ms).
    last_found: u64,
    /// Quiet times checked, and the longest from the last block found before each to the
    /// first moment every node was on one tip (ms).
    quiet_checks: u64,
    slowest_agreement: u64,
    /// Since when every honest node has been on one tip, if they are (ms).
    agreed_since: Option<u64>,
}

const PARAMS: ConsensusParams = ConsensusParams {
    difficulty: 8,
    block_size: 2,
    block_reward: Amount::from_units(10_000_000),
};
const PORT: u16 = 2607;
/// When the first payment is sent (ms), after the nodes listened and mined block 1.
const PAY_FROM: u64 = 3_000;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, (i / 250) as u8, (i % 250) as u8 + 1, 1),
        PORT,
    ))
}

impl Sim {
    fn new(shape: Shape, seed: u64, payers: Vec<KeyPair>) -> Sim {
        let mut sim = Sim {
            shape,
            rng: Rng::new(seed),
            t: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            base: Instant::now(),
            payers,
            payments: Vec::new(),
            dropped: 0,
            reorgs: 0,
            failed: 0,
            salts: rand::SeedableRng::seed_from_u64(seed),
            found: HashMap::new(),
            last_found: 0,
            quiet_checks: 0,
            slowest_agreement: 0,
            agreed_since: None,
        };
        for i in 0..shape.nodes {
            let chain = Arc::new(RwLock::new(Chain::new(PARAMS)));
            let reward_to = sim.payers[i % sim.payers.len()].address();
            let timing = Timing {
                quiet: Duration::from_secs(16),
                listen: Duration::from_secs(1),
                announce_every: Duration::from_millis(ANNOUNCE_EVERY),
            };
            let core = NodeCore::new(
                i as u64 + 1,
                PORT,
                chain,
                Memory::default(),
                reward_to,
                timing,
            );
            sim.nodes.push(SimNode {
                core,
                job: None,
                wakeup_at: None,
                delivered: None,
            });
            sim.by_addr.insert(addr(i), i);
            if sim.is_liar(i) {
                // It only boasts, every status interval, from the start.
                let at = sim.rng.below(1_000);
                sim.at(at, Ev::Announce(i));
                continue;
            }
            // It announces at once and every status interval after, and mines once it has
            // listened for a second.
            let at = sim.rng.below(500);
            sim.at(at, Ev::Start(i));
        }
        sim.at(PAY_FROM, Ev::Pay);
        if let Some((burst, quiet)) = shape.bursts {
            let mut at = PAY_FROM + burst + quiet;
            while at <= shape.end {
                sim.at(at - 1, Ev::Check);
                at += burst + quiet;
            }
        }
        sim
    }

    fn is_liar(&self, i: usize) -> bool {
        i < self.shape.liars
    }

    /// The nodes that are not liars.
    fn honest(&self) -> std::ops::Range<usize> {
        self.shape.liars..self.shape.nodes
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.t)
    }

    fn unix(&self) -> u64 {
        GENESIS_TIMESTAMP + 86_400 + self.t / 1_000
    }

    fn group(&self, i: usize) -> u64 {
        i as u64 % self.shape.groups
    }

    /// Whether a datagram or connection from `a` reaches `b` now.
    fn reaches(&self, a: usize, b: usize) -> bool {
        let (start, end) = self.shape.partition;
        !(start <= self.t && self.t < end && self.group(a) != self.group(b))
    }

    fn latency(&mut self) -> u64 {
        let (low, high) = self.shape.latency;
        low + self.rng.below(high - low)
    }

    /// Whether payments may be sent now: always, or only during a burst.
    fn paying(&self) -> bool {
        self.shape
            .bursts
            .is_none_or(|(burst, quiet)| (self.t - PAY_FROM) % (burst + quiet) < burst)
    }

    /// The honest nodes' tips, and how many nodes are on each.
    fn tips(&self) -> HashMap<Hash256, usize> {
        self.honest().fold(HashMap::new(), |mut m, i| {
            *m.entry(read_chain(self.nodes[i].core.chain()).tip_hash())
                .or_default() += 1;
            m
        })
    }

    /// Notes when every honest node came to be on one tip (after any node's tip moved).
    fn watch_agreement(&mut self) {
        let agreed = self.tips().len() == 1;
        match (agreed, self.agreed_since) {
            (true, None) => self.agreed_since = Some(self.t),
            (false, Some(_)) => self.agreed_since = None,
            _ => {}
        }
    }

    /// Sends a datagram from `from` to every other node, losing some.
    fn broadcast(&mut self, from: usize, make: impl Fn(usize) -> Ev) {
        for to in self.honest() {
            if to == from || !self.reaches(from, to) || self.rng.chance(self.shape.loss) {
                self.dropped += 1;
                continue;
            }
            let at = self.t + self.latency();
            self.at(at, make(to));
        }
    }

    /// Carries out what node `i` asked for.
    fn effects(&mut self, i: usize) {
        let mut moved = false;
        for effect in self.nodes[i].core.take_effects() {
            if let Effect::Note(Note::BlockMined { .. } | Note::BlockAdopted { .. }) = effect {
                moved = true;
            }
            match effect {
                Effect::Note(Note::Reorg { .. }) => self.reorgs += 1,
                Effect::Note(Note::DownloadFailed { .. }) => self.failed += 1,
                Effect::Note(_) => {}
                Effect::Announce(status) => {
                    self.broadcast(i, |to| Ev::Status {
                        to,
                        status,
                        from: i,
                    });
                }
                Effect::Download(Download { peer, .. }, _) => {
                    let peer = self.by_addr[&peer];
                    let at = self.t + self.latency();
                    self.at(at, Ev::Download { node: i, peer });
                }
                Effect::Mine { job, block, .. } => {
                    self.nodes[i].job = Some((job, block));
                    let at = self.t + self.rng.exp(self.shape.block_time_per_node);
                    self.at(at, Ev::Found { node: i, job });
                }
                Effect::StopMining => self.nodes[i].job = None,
                Effect::Delivered { result, .. } => self.nodes[i].delivered = Some(result),
                Effect::Fatal(e) => panic!("node {i}: a store in memory failed: {e}"),
                // The simulated network is one broadcast domain: no node names a peer, so no
                // link is dialled (links are tested in `core` and over real sockets).
                Effect::Dial(_)
                | Effect::Link { .. }
                | Effect::Send(..)
                | Effect::Close(_)
                | Effect::SavePeers(_) => {}
            }
        }
        if let Some(at) = self.nodes[i].core.next_wakeup() {
            // Rounded up: woken before its time, a core would find nothing due and ask again.
            let t = at
                .saturating_duration_since(self.base)
                .as_micros()
                .div_ceil(1_000) as u64;
            if self.nodes[i].wakeup_at != Some(t) {
                self.nodes[i].wakeup_at = Some(t);
                self.at(t.max(self.t), Ev::Wakeup(i));
            }
        }
        if moved && self.shape.bursts.is_some() {
            self.watch_agreement();
        }
    }

    fn run(&mut self) {
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            if t > self.shape.end {
                break;
            }
            self.t = t;
            let ev = self
                .events
                .remove(&seq)
                .expect("every queued event is stored");
            let (now, unix) = (self.now(), self.unix());
            match ev {
                Ev::Start(i) => {
                    self.nodes[i].core.handle(Input::Start, now, unix);
                    self.effects(i);
                }
                Ev::Status { to, status, from } => {
                    let status = Input::Status {
                        status,
                        from: addr(from),
                        received: now,
                    };
                    self.nodes[to].core.handle(status, now, unix);
                    self.effects(to);
                }
                Ev::Payment { to, payment } => {
                    let payment = Input::Payment {
                        payment: *payment,
                        from: addr(to),
                    };
                    self.nodes[to].core.handle(payment, now, unix);
                    self.effects(to);
                }
                Ev::Found { node, job } => {
                    let Some((current, mut block)) = self.nodes[node].job.take() else {
                        continue;
                    };
                    if current != job {
                        self.nodes[node].job = Some((current, block));
                        continue;
                    }
                    block.header.solve();
                    let hashes = block.header.nonce + 1;
                    *self.found.entry(block.header.height).or_default() += 1;
                    self.last_found = self.t;
                    let took = Duration::from_millis(1);
                    let mined = Input::Mined {
                        job,
                        block,
                        took,
                        hashes,
                    };
                    self.nodes[node].core.handle(mined, now, unix);
                    self.effects(node);
                }
                Ev::Download { node, peer } => self.download(node, peer),
                Ev::Stalled { node, peer } => {
                    let timed_out = DownloadError::Connect {
                        peer: addr(peer),
                        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                    };
                    let done = Input::DownloadDone {
                        peer: addr(peer),
                        result: Err(timed_out),
                    };
                    self.nodes[node].core.handle(done, now, unix);
                    self.effects(node);
                }
                Ev::Announce(i) if self.is_liar(i) => {
                    let boast = Status {
                        network: PARAMS.network_id(),
                        node_id: i as u64 + 1,
                        height: 1_000_000,
                        tip: Hash256([7; 32]),
                        chain_work: u128::MAX / 2,
                        block_server_port: PORT,
                    };
                    self.broadcast(i, |to| Ev::Status {
                        to,
                        status: boast,
                        from: i,
                    });
                    let at = self.t + ANNOUNCE_EVERY;
                    self.at(at, Ev::Announce(i));
                }
                Ev::Announce(_) => unreachable!("only liars announce on their own"),
                Ev::Wakeup(i) => {
                    if self.nodes[i].wakeup_at != Some(self.t) {
                        // Superseded by a later or earlier wake-up.
                        continue;
                    }
                    self.nodes[i].wakeup_at = None;
                    self.nodes[i].core.handle(Input::Wakeup, now, unix);
                    self.effects(i);
                }
                Ev::Pay => {
                    if self.paying() {
                        self.pay();
                    }
                    if self.t < self.shape.pay_until {
                        let (low, high) = self.shape.pay_every;
                        let at = self.t + low + self.rng.below(high - low);
                        self.at(at, Ev::Pay);
                    }
                }
                Ev::Check => self.check_quiet(),
                Ev::Rebroadcast(k) => {
                    let (payment, home) = self.payments[k].clone();
                    let confirmed = read_chain(self.nodes[home].core.chain())
                        .ledger()
                        .is_confirmed(&payment.id());
                    if !confirmed {
                        self.broadcast_payment(home, &payment);
                        let at = self.t + 10_000;
                        self.at(at, Ev::Rebroadcast(k));
                    }
                }
            }
        }
    }

    /// The share of blocks found that are not on the first honest node's chain (the ground
    /// truth), and the stale-block rate the honest nodes report, on average.
    fn stale_rates(&self) -> (f64, f64) {
        let found: u64 = self.found.values().sum();
        let height = read_chain(self.nodes[self.shape.liars].core.chain()).height();
        let truth = found.saturating_sub(height) as f64 / found.max(1) as f64;
        let reported = self
            .honest()
            .map(|i| self.nodes[i].core.stale_blocks(u64::MAX).rate())
            .sum::<f64>()
            / self.honest().len() as f64;
        (truth, reported)
    }

    /// The end of a quiet time: every honest node is on one tip, and came to it within one
    /// announcement round of the last block found.
    fn check_quiet(&mut self) {
        let tips = self.tips();
        assert_eq!(
            tips.len(),
            1,
            "at {} ms, the end of a quiet time, {} s after the last block found: {} tips {:?}",
            self.t,
            (self.t - self.last_found) / 1_000,
            tips.len(),
            tips
        );
        let agreed = self.agreed_since.expect("one tip, so agreed");
        let took = agreed.saturating_sub(self.last_found);
        assert!(
            took <= ANNOUNCE_EVERY,
            "at {} ms: one tip only {took} ms after the last block, more than one announcement \
             round",
            self.t
        );
        self.quiet_checks += 1;
        self.slowest_agreement = self.slowest_agreement.max(took);
    }

    /// A download from `peer`'s block server: its best chain after our locator, in batches.
    fn download(&mut self, node: usize, peer: usize) {
        let (now, unix) = (self.now(), self.unix());
        let peer_addr = addr(peer);
        if self.is_liar(peer) && peer.is_multiple_of(2) {
            let at = self.t + 10_000;
            self.at(at, Ev::Stalled { node, peer });
            return;
        }
        let result = if self.is_liar(peer) {
            Ok(0)
        } else if !self.reaches(node, peer) {
            Err(DownloadError::Connect {
                peer: peer_addr,
                source: std::io::Error::other("unreachable (partition)"),
            })
        } else {
            let mut total = 0;
            loop {
                let locator = read_chain(self.nodes[node].core.chain()).locator();
                let blocks: Vec<Block> = read_chain(self.nodes[peer].core.chain())
                    .blocks_after(&locator, 500, 4 << 20)
                    .unwrap()
                    .iter()
                    .map(|b| Block::clone(b))
                    .collect();
                if blocks.is_empty() {
                    break Ok(total);
                }
                let batch = Input::Downloaded {
                    peer: peer_addr,
                    blocks,
                };
                self.nodes[node].core.handle(batch, now, unix);
                self.effects(node);
                match self.nodes[node].delivered.take() {
                    Some(Ok(0)) => break Ok(total),
                    Some(Ok(n)) => total += n,
                    Some(Err(e)) => break Err(DownloadError::Apply(e)),
                    None => panic!("node {node}: a batch without a verdict"),
                }
            }
        };
        let done = Input::DownloadDone {
            peer: peer_addr,
            result,
        };
        self.nodes[node].core.handle(done, now, unix);
        self.effects(node);
    }

    /// A wallet pays: from a payer whose coins on its home node cover what it has pending.
    fn pay(&mut self) {
        let honest = self.honest();
        let home = honest.start + self.rng.below(honest.len() as u64) as usize;
        let k = self.rng.below(self.payers.len() as u64) as usize;
        let from = self.payers[k].address();
        let spendable = {
            let chain = read_chain(self.nodes[home].core.chain());
            let pending = self
                .payments
                .iter()
                .filter(|(p, _)| p.from == from && !chain.ledger().is_confirmed(&p.id()))
                .count() as u64;
            chain.ledger().balance(&from).units() > pending
        };
        if !spendable {
            return;
        }
        let to = self.payers[(k + 1) % self.payers.len()].address();
        let stamp = self.payments.len() as u64 + 1;
        // Signed with a salt from the seed: PSS salts are random, and a payment's id goes into
        // its block's hash, which decides ties; a run must replay from its seed.
        let payment = Payment::new_signed_with_rng(
            &self.payers[k],
            to,
            Amount::from_units(1),
            stamp,
            &mut self.salts,
        );
        self.broadcast_payment(home, &payment);
        let index = self.payments.len();
        self.payments.push((payment, home));
        let at = self.t + 10_000;
        self.at(at, Ev::Rebroadcast(index));
    }

    fn broadcast_payment(&mut self, home: usize, payment: &Payment) {
        for to in self.honest() {
            if !self.reaches(home, to) || self.rng.chance(self.shape.loss) {
                continue;
            }
            let at = self.t + self.latency();
            let payment = Box::new(payment.clone());
            self.at(at, Ev::Payment { to, payment });
        }
    }
}

fn seed() -> u64 {
    std::env::var("MVBC_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0011)
}

/// Four fixed 1024-bit keys (made once with `openssl genpkey`), so every run pays the same
/// addresses.
fn payers() -> Vec<KeyPair> {
    const PEM: &str = include_str!("data/sim_keys.pem");
    let end = "-----END PRIVATE KEY-----";
    PEM.split_inclusive(end)
        .filter(|k| k.contains(end))
        .map(|k| KeyPair::from_pkcs8_pem(k.trim()).unwrap())
        .collect()
}

/// Runs `shape` from `seed` and checks the outcome: one tip everywhere, every payment sent
/// confirmed exactly once on it.
fn run_and_check(shape: Shape, seed: u64) -> Sim {
    eprintln!("sim seed {seed}: replay with MVBC_SIM_SEED={seed}");
    let started = Instant::now();
    let mut sim = Sim::new(shape, seed, payers());
    sim.run();
    let tips = sim.tips();
    let chain = read_chain(sim.nodes[shape.liars].core.chain());
    let found: u64 = sim.found.values().sum();
    let tied = sim.found.values().filter(|n| **n > 1).count();
    let (true_stale, reported) = sim.stale_rates();
    eprintln!(
        "sim seed {seed}: {found} blocks found, ties at {tied} of {} heights ({:.1}%), stale \
         {:.1}% (nodes report {:.1}% on average); {} quiet times, one tip at most {} ms after \
         the last block",
        sim.found.len(),
        100.0 * tied as f64 / sim.found.len().max(1) as f64,
        100.0 * true_stale,
        100.0 * reported,
        sim.quiet_checks,
        sim.slowest_agreement
    );
    eprintln!(
        "sim seed {seed}: {} nodes ({} lying), height {}, tip {}, {} payments, {} reorgs, {} \
         failed downloads, {} datagrams lost or cut off, {:.1} s of wall time for {} s simulated",
        shape.nodes,
        shape.liars,
        chain.height(),
        chain.tip_hash(),
        sim.payments.len(),
        sim.reorgs,
        sim.failed,
        sim.dropped,
        started.elapsed().as_secs_f64(),
        shape.end / 1_000
    );
    assert_eq!(
        tips.len(),
        1,
        "seed {seed}: nodes end on {} tips",
        tips.len()
    );
    let mut confirmed: HashMap<Hash256, usize> = HashMap::new();
    for height in 1..=chain.height() {
        for tx in &chain.block_at(height).unwrap().unwrap().transactions {
            if let Transaction::Payment(p) = tx {
                *confirmed.entry(p.id()).or_default() += 1;
            }
        }
    }
    assert!(
        sim.payments.len() >= 10,
        "seed {seed}: only {} payments",
        sim.payments.len()
    );
    for (p, _) in &sim.payments {
        assert_eq!(
            confirmed.get(&p.id()),
            Some(&1),
            "seed {seed}: payment {} confirmed {:?} times",
            p.id(),
            confirmed.get(&p.id())
        );
    }
    assert_eq!(confirmed.len(), sim.payments.len(), "seed {seed}");
    if shape.liars > 0 {
        assert!(sim.failed > 0, "seed {seed}: no liar was found out");
    }
    if shape.partition.0 < shape.partition.1 && shape.groups > 1 {
        assert!(
            sim.reorgs > 0,
            "seed {seed}: the partition left no branch to resolve"
        );
    }
    drop(chain);
    sim
}

#[test]
fn sim_200_nodes_with_loss_liars_and_a_healed_three_way_partition_agree_on_every_payment() {
    let shape = Shape {
        nodes: 200,
        liars: 6,
        loss: 0.02,
        groups: 3,
        partition: (20_000, 80_000),
        pay_until: 150_000,
        end: 240_000,
        block_time_per_node: 200.0 * 2_000.0,
        latency: (5, 50),
        pay_every: (500, 3_500),
        bursts: None,
    };
    run_and_check(shape, seed());
}

/// Blocks faster than messages, as GPUs at a low difficulty make them: 12 miners find a block
/// every 10 ms between them while a message takes 20-200 ms, so most blocks tie. Payments come
/// in bursts; after each, every node must be on one tip within one announcement round of the
/// last block, and each payment confirmed once.
#[test]
fn sim_at_gpu_speed_ties_settle_on_one_tip_within_one_announcement_round_of_each_quiet_time() {
    let shape = Shape {
        nodes: 12,
        liars: 0,
        loss: 0.02,
        groups: 1,
        partition: (0, 0),
        pay_until: 60_000,
        end: 80_000,
        block_time_per_node: 12.0 * 10.0,
        latency: (20, 200),
        pay_every: (20, 120),
        bursts: Some((2_000, 8_000)),
    };
    let sim = run_and_check(shape, seed());
    assert!(sim.quiet_checks >= 6, "{} quiet times", sim.quiet_checks);
    let tied = sim.found.values().filter(|n| **n > 1).count();
    assert!(
        tied > 10,
        "only {tied} ties: not the regime this scenario is for"
    );
    // The stale-block rate the nodes report is within 10% of the ground truth.
    let (truth, reported) = sim.stale_rates();
    assert!(
        (reported - truth).abs() <= 0.1 * truth,
        "nodes report {reported:.3} stale, truly {truth:.3}"
    );
}
