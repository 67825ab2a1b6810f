//! The node as a state machine: a miner's whole behaviour between its sockets and its mining
//! engine, with no I/O and no clock of its own.
//!
//! One door: the driver (`mvbc_miner::driver`) hands [`NodeCore::handle`] each [`Input`] (a
//! payment or a status heard, a downloaded batch, a download ended, a block found, a link
//! offered, the wake-up it asked for with [`NodeCore::next_wakeup`]) with the current time,
//! then drains [`NodeCore::take_effects`] and carries each [`Effect`] out: a datagram to
//! broadcast, a download to run, a block to mine or a search to stop, a link to keep or close,
//! a [`Note`] to show. Every timer is the core's ([`Timing`]): the driver only sleeps until
//! the next wake-up. Blocks that join the best chain go to its [`BlockSink`] before anything
//! announces them; a store that fails is [`Effect::Fatal`], after which the core takes nothing
//! more.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mvbc_protocol::chain::{STALE_WINDOW, StaleCount, read_chain};
use mvbc_protocol::pool::{Added as Pooled, PoolError};
use mvbc_protocol::wire::{Identity, LinkMessage, Status};
use mvbc_protocol::{
    Address, Amount, Block, Chain, Hash256, NetworkId, Payment, Pool, Transaction,
};

use crate::apply::{self, Added, ApplyError, BlockSink, TipMove};
use crate::catchup::{self, Allowance, CatchUp, Progress};
use crate::links::{Down, Kind, LinkId, Links, Refused};
use crate::peers::{Want, Wanted};
use crate::sync::{Download, DownloadError, Finished, ForkPoints, Role, SyncManager};
use crate::template::Template;

/// How often links are seen to (dials due, quiet links closed, addresses shared and saved) and
/// peers gone quiet forgotten.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// At start, how long a node listens for peers before it mines, at most: a node joining a
/// network downloads its chain instead of forking it at block 1.
pub const STARTUP_LISTEN: Duration = Duration::from_secs(1);

/// The node's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Peers and links silent this long are gone.
    pub quiet: Duration,
    /// How long after [`Input::Start`] it listens for peers before it mines.
    pub listen: Duration,
    /// How often it broadcasts its status when nothing changed.
    pub announce_every: Duration,
}

impl Timing {
    /// For a network whose nodes announce their status every `interval`: a peer not heard for
    /// three intervals (and a second) has gone; listen [`STARTUP_LISTEN`], or two intervals if
    /// shorter (one interval left a node whose request for statuses went unanswered racing
    /// the next broadcast, and mining a block 1 of its own when it lost).
    pub fn for_interval(interval: Duration) -> Timing {
        Timing {
            quiet: 3 * interval + Duration::from_secs(1),
            listen: STARTUP_LISTEN.min(2 * interval),
            announce_every: interval,
        }
    }
}

/// What happened, for [`NodeCore::handle`].
#[derive(Debug)]
pub enum Input {
    /// The node starts: announce, see to links, listen for peers for [`Timing::listen`], then
    /// mine.
    Start,
    /// A payment arrived (by broadcast, or submitted to the block server).
    Payment {
        /// The payment.
        payment: Payment,
        /// Who sent it.
        from: SocketAddr,
    },
    /// A status arrived from `from` at `received` (the driver may get to it later).
    Status {
        /// The status.
        status: Status,
        /// Who sent it.
        from: SocketAddr,
        /// When the datagram arrived.
        received: Instant,
    },
    /// Someone asked by broadcast for every node's status.
    StatusRequest,
    /// A connection offers to be a link: an inbound one from `peer` (the far end of the
    /// connection), or an outbound one this node dialled at `peer`; `hello` is the peer's
    /// status. `conn` is the driver's name for the connection until [`Effect::Link`] says
    /// whether it is kept.
    LinkOffered {
        /// The driver's name for the connection.
        conn: u64,
        /// The far end (inbound), or the block server dialled (outbound).
        peer: SocketAddr,
        /// Whether this node dialled it.
        outbound: bool,
        /// The peer's status.
        hello: Status,
    },
    /// A dial of this block server failed.
    DialFailed(SocketAddr),
    /// A named peer whose name resolved only now: keep it linked from now on.
    NamedPeer(SocketAddr),
    /// A link sent a message.
    LinkMessage(LinkId, LinkMessage),
    /// A link ended: it closed, failed, or sent what does not decode.
    LinkDown(LinkId, Down),
    /// The engine found this block, searching for job `job` ([`Effect::Mine`]).
    Mined {
        /// The job it was found for.
        job: u64,
        /// The block, nonce set.
        block: Block,
        /// How long the search took.
        took: Duration,
        /// Nonces tried.
        hashes: u64,
    },
    /// A worker on the pool port found this block (its proof of work checked by the farm).
    WorkerBlock {
        /// The block.
        block: Block,
        /// Who found it: `ADDRESS.worker`.
        worker: String,
    },
    /// The engine gave up on the search for this job (an error, or every nonce tried).
    MiningFailed {
        /// The job.
        job: u64,
    },
    /// A batch of the download from `peer`: [`Effect::Delivered`] says how it went.
    Downloaded {
        /// The peer's block server.
        peer: SocketAddr,
        /// The blocks, lowest first.
        blocks: Vec<Block>,
    },
    /// The download from `peer` ended.
    DownloadDone {
        /// The peer's block server.
        peer: SocketAddr,
        /// New blocks delivered, or why it stopped.
        result: Result<u64, DownloadError>,
    },
    /// The driver could not start the download from this peer (its downloaders are gone).
    DownloadAbandoned(SocketAddr),
    /// The time [`NodeCore::next_wakeup`] named has come.
    Wakeup,
    /// The node is stopping.
    Stop,
}

/// Lines of one kind shown per report interval before the rest are only counted.
pub const LOG_BURST: u32 = 20;

/// Tips heard in statuses, remembered at most, for counting stale blocks this node never
/// downloaded.
pub const MAX_HEARD_TIPS: usize = 4_096;

/// Something the node tells its user.
#[derive(Clone, Debug)]
pub enum Note {
    /// A payment joined the pool.
    PaymentPooled {
        /// Its id.
        id: Hash256,
        /// What it pays.
        amount: Amount,
        /// Payer.
        from: Address,
        /// Payee.
        to: Address,
        /// Payments pending now.
        pending: usize,
    },
    /// The pool was full and let this payment go.
    PaymentEvicted(Hash256),
    /// A payment the tip's move made unaffordable or confirmed.
    PaymentDropped(Hash256),
    /// The tip moved to another branch.
    Reorg {
        /// Blocks that left the best chain.
        depth: usize,
        /// The old tip.
        left: Hash256,
        /// Height of the old tip.
        at: u64,
        /// Payments of the blocks that left, back in the pool.
        back: usize,
    },
    /// This node found the new tip.
    BlockMined {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash256,
        /// Transactions it holds.
        transactions: usize,
        /// Nonces tried for it.
        hashes: u64,
        /// How long the search took.
        took: Duration,
    },
    /// A worker on this node's pool port found the new tip.
    WorkerBlock {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash256,
        /// Transactions it holds.
        transactions: usize,
        /// Who found it: `ADDRESS.worker`.
        worker: String,
    },
    /// This node found a block, but the tip had moved on.
    MinedTooLate {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash256,
    },
    /// Blocks from a peer moved the tip.
    BlockAdopted {
        /// Lowest height that joined.
        first: u64,
        /// The new tip's height.
        height: u64,
        /// The new tip.
        tip: Hash256,
        /// Whose block server sent them.
        peer: SocketAddr,
        /// Since the status telling of them arrived.
        since_heard: Option<Duration>,
    },
    /// A download from a peer far ahead began: the node does not mine while it brings blocks.
    CatchingUp {
        /// Whose chain.
        peer: SocketAddr,
        /// Our height.
        height: u64,
        /// The height it announced.
        target: u64,
    },
    /// How a catch-up goes, every few seconds (blocks it brings are not told of one by one).
    Downloading(Progress),
    /// A catch-up ended.
    CaughtUp {
        /// Our height now.
        height: u64,
        /// Blocks it brought.
        blocks: u64,
        /// How long it took.
        took: Duration,
        /// Whether mining goes on (false: the download ended short, and another may follow).
        done: bool,
    },
    /// A node of another network was heard (told once per network; the rest are counted in
    /// [`NodeCore::other_network_messages`]).
    OtherNetwork {
        /// Who sent it.
        from: SocketAddr,
        /// Its network.
        network: NetworkId,
        /// This node's.
        ours: NetworkId,
    },
    /// A link to a peer came up.
    LinkUp {
        /// The peer's block server.
        peer: SocketAddr,
        /// Whether this node dialled it.
        outbound: bool,
        /// Links up now.
        links: usize,
    },
    /// A link closed.
    LinkDown {
        /// The peer's block server.
        peer: SocketAddr,
        /// Why.
        why: Down,
        /// Links up now.
        links: usize,
    },
    /// A download failed and its peer is passed over.
    DownloadFailed {
        /// The peer's block server.
        peer: SocketAddr,
        /// Why.
        error: Arc<DownloadError>,
        /// For how long it is passed over.
        backoff: Duration,
    },
}

/// What the driver is to do.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Show this to the user.
    Note(Note),
    /// Broadcast this status (the tip moved, or someone asked).
    Announce(Status),
    /// Run this download from these fork points of our chain, and report its batches and
    /// its end.
    Download(Download, ForkPoints),
    /// Stop any search and search a nonce for this block, as job `job` (the core alone says
    /// which job is current).
    Mine {
        /// The job's id, for [`Input::Mined`] and [`Input::MiningFailed`].
        job: u64,
        /// The block to find a nonce for.
        block: Block,
        /// The block less its reward, for a pool's workers (each paid its own).
        template: Arc<Template>,
    },
    /// Stop the search running.
    StopMining,
    /// Open a link to this block server (report [`Input::LinkOffered`] or
    /// [`Input::DialFailed`]).
    Dial(SocketAddr),
    /// Keep the connection offered as `conn` as link `id`, or close it and why.
    Link {
        /// The driver's name for the connection.
        conn: u64,
        /// The link's id, or why it is not kept.
        verdict: Result<LinkId, Refused>,
    },
    /// How the batch downloaded from `peer` went: how many of its blocks were new, or why one
    /// could not be added (which ends that download).
    Delivered {
        /// The peer's block server.
        peer: SocketAddr,
        /// New blocks, or why not.
        result: Result<u64, ApplyError>,
    },
    /// The store failed: stop now, and build on nothing more (the chain in memory never runs
    /// ahead of the store).
    Fatal(ApplyError),
    /// Send this on a link.
    Send(LinkId, LinkMessage),
    /// Close a link (the core has already forgotten it).
    Close(LinkId),
    /// Save these addresses for the next start (`peers.dat`).
    SavePeers(Vec<SocketAddr>),
}

/// Other networks told of by [`Note::OtherNetwork`]; statuses of more are only counted.
pub const MAX_OTHER_NETWORKS_NOTED: usize = 16;

/// What a node or wallet heard of nodes of other networks (ADR 13): how many messages, and the
/// networks told of so far, each once, at most [`MAX_OTHER_NETWORKS_NOTED`].
#[derive(Clone, Debug, Default)]
pub struct OtherNetworks {
    told: HashSet<NetworkId>,
    messages: u64,
}

impl OtherNetworks {
    /// Counts a message of `network`; whether it is the first heard of that network, to be
    /// told of once.
    pub fn heard(&mut self, network: NetworkId) -> bool {
        self.messages += 1;
        self.told.len() < MAX_OTHER_NETWORKS_NOTED && self.told.insert(network)
    }

    /// Messages of other networks heard so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }
}

/// Counts lines of one kind and lets at most [`LOG_BURST`] of them through per report
/// interval, so a flood cannot flood the log: the rest are summed up once per interval.
#[derive(Clone, Debug, Default)]
pub struct Quota {
    /// Every line, shown or not, since start.
    pub total: u64,
    shown: u32,
    held: u64,
}

impl Quota {
    /// Counts one line; whether to show it.
    pub fn allow(&mut self) -> bool {
        self.total += 1;
        if self.shown < LOG_BURST {
            self.shown += 1;
            true
        } else {
            self.held += 1;
            false
        }
    }

    /// Starts the next interval; returns how many lines the last one held back.
    pub fn new_window(&mut self) -> u64 {
        self.shown = 0;
        std::mem::take(&mut self.held)
    }
}

/// Where a change of tip came from.
enum Source {
    Mined { took: Duration, hashes: u64 },
    Worker(String),
    Peer(SocketAddr),
}

/// A miner node's state: its chain and where it is stored, its pool, its peers and downloads,
/// and what it is mining.
pub struct NodeCore<S: BlockSink> {
    identity: Identity,
    chain: Arc<RwLock<Chain>>,
    store: S,
    pool: Pool,
    reward_to: Address,
    sync: SyncManager,
    /// When a status first told us of a chain with more work than ours (cleared once we have
    /// it): when the datagram arrived, not when the driver got to it.
    better_heard_at: Option<Instant>,
    /// Refused payments.
    pub refused_payments: Quota,
    /// Failed downloads.
    pub failed_downloads: Quota,
    /// Blocks this node found since it started, on time or too late.
    pub blocks_mined: u64,
    /// Blocks its pool port's workers found since it started.
    pub blocks_by_workers: u64,
    /// Times the tip moved to another branch since it started.
    pub reorgs: u64,
    /// The network of this node's chain (ADR 13).
    network: NetworkId,
    /// Statuses and link offers from nodes of other networks, ignored since start.
    other_networks: OtherNetworks,
    /// Still listening for peers after start: not mining yet.
    listening: bool,
    /// A download from a peer far ahead, during which the node does not mine.
    catch_up: Option<CatchUp>,
    /// How long catch-ups that no block proved may still pause mining.
    allowance: Allowance,
    /// The store failed: the core takes nothing more.
    failed: bool,
    /// Its timers.
    timing: Timing,
    /// When listening ends, once started.
    listen_until: Option<Instant>,
    /// When links are next seen to.
    next_upkeep: Option<Instant>,
    /// When the status is next broadcast, if nothing changes before.
    next_announce: Option<Instant>,
    /// The tip the search running builds on.
    mining_on: Option<(u64, Hash256)>,
    /// The id the next job gets.
    next_job: u64,
    /// Links to peers beyond the broadcast domain.
    links: Links,
    /// When links were last sent our status.
    statused_links_at: Option<Instant>,
    /// Tips heard in statuses whose hash meets the network's difficulty, with the height
    /// announced: real blocks (a hash that meets it cannot be made up without the work), so
    /// those not on our chain count as stale even when we never fetched them.
    heard_tips: HashMap<Hash256, u64>,
    effects: Vec<Effect>,
}

impl<S: BlockSink> NodeCore<S> {
    /// A node with `chain` (shared with its block server) stored in `store`, paying rewards to
    /// `reward_to`, on `timing`. It does nothing before [`Input::Start`], and mines once it
    /// has listened for peers or a first download ends.
    pub fn new(
        node_id: u64,
        block_server_port: u16,
        chain: Arc<RwLock<Chain>>,
        store: S,
        reward_to: Address,
        timing: Timing,
    ) -> NodeCore<S> {
        let network = read_chain(&chain).network_id();
        NodeCore {
            identity: Identity {
                node_id,
                block_server_port,
            },
            chain,
            store,
            pool: Pool::default(),
            reward_to,
            sync: SyncManager::new(Role::MINER, timing.quiet),
            better_heard_at: None,
            refused_payments: Quota::default(),
            failed_downloads: Quota::default(),
            blocks_mined: 0,
            blocks_by_workers: 0,
            reorgs: 0,
            network,
            other_networks: OtherNetworks::default(),
            listening: true,
            catch_up: None,
            allowance: Allowance::default(),
            failed: false,
            timing,
            listen_until: None,
            next_upkeep: None,
            next_announce: None,
            mining_on: None,
            next_job: 1,
            links: Links::none(node_id),
            statused_links_at: None,
            heard_tips: HashMap::new(),
            effects: Vec::new(),
        }
    }

    /// What the driver is to do now, oldest first.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Takes one input at `now` (Unix time `unix`): what to do comes out of
    /// [`NodeCore::take_effects`]. After [`Effect::Fatal`] every input is ignored.
    pub fn handle(&mut self, input: Input, now: Instant, unix: u64) {
        if self.failed {
            return;
        }
        match input {
            Input::Start => self.start(now),
            Input::Payment { payment, from } => {
                let _ = self.take_payment(payment, from, None, unix);
            }
            Input::Status {
                status,
                from,
                received,
            } => self.on_status(status, from, received, now),
            Input::StatusRequest => self.on_status_request(),
            Input::LinkOffered {
                conn,
                peer,
                outbound,
                hello,
            } => self.link_offered(conn, peer, outbound, hello, now),
            Input::DialFailed(addr) => self.links.dial_failed(addr, now),
            Input::NamedPeer(addr) => {
                self.links.add_named(addr, now);
                self.maintain_links(now);
            }
            Input::LinkMessage(id, message) => self.on_link_message(id, message, now, unix),
            Input::LinkDown(id, why) => self.link_down(id, why, now),
            Input::Mined {
                job,
                block,
                took,
                hashes,
            } => self.on_mined(job, block, took, hashes, now, unix),
            Input::WorkerBlock { block, worker } => self.on_worker_block(block, worker, now, unix),
            Input::MiningFailed { job } => {
                if self.mining_on.is_some_and(|(current, _)| current == job) {
                    self.mining_on = None;
                }
            }
            Input::Downloaded { peer, blocks } => {
                let result = self.on_downloaded(peer, blocks, now, unix);
                self.effects.push(Effect::Delivered { peer, result });
            }
            Input::DownloadDone { peer, result } => self.on_download_done(peer, result, now, unix),
            Input::DownloadAbandoned(peer) => self.sync.abandon(peer),
            Input::Wakeup => self.wake(now, unix),
            Input::Stop => self.stop(),
        }
    }

    /// When the core next wants [`Input::Wakeup`]: listening ends, links are due for upkeep,
    /// the status for its periodic broadcast, or the dial budget allows a download it held
    /// back. `None` before [`Input::Start`].
    pub fn next_wakeup(&self) -> Option<Instant> {
        let listening = self.listen_until.filter(|_| self.listening);
        [
            listening,
            self.next_upkeep,
            self.next_announce,
            self.sync.retry_at(),
            self.catch_up.as_ref().map(CatchUp::wakeup),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn start(&mut self, now: Instant) {
        self.listen_until = Some(now + self.timing.listen);
        self.next_announce = Some(now + self.timing.announce_every);
        self.announce();
        self.maintain_links(now);
        self.next_upkeep = Some(now + UPKEEP_EVERY);
    }

    /// Whatever of the timers is due at `now`.
    fn wake(&mut self, now: Instant, unix: u64) {
        if self.listening && self.listen_until.is_some_and(|t| t <= now) {
            self.listened(now, unix);
        }
        if self.next_upkeep.is_some_and(|t| t <= now) {
            self.next_upkeep = Some(now + UPKEEP_EVERY);
            self.maintain_links(now);
            self.sync.forget_quiet(now);
        }
        if self.next_announce.is_some_and(|t| t <= now) {
            self.next_announce = Some(now + self.timing.announce_every);
            let status = self.status();
            self.effects.push(Effect::Announce(status));
        }
        if self.sync.retry_at().is_some_and(|t| t <= now) {
            self.maybe_sync(now);
        }
        if let Some(progress) = self.catch_up.as_mut().and_then(|c| c.report(now)) {
            self.note(Note::Downloading(progress));
        }
        // The catch-up's pause is over (no block within its grace, or its blocks stalled).
        if self.catch_up.as_mut().is_some_and(|c| c.tick(now)) {
            // One that waited for a download which never started ends here: a later one may
            // start in its place.
            let started = |c: &CatchUp| self.sync.running().iter().any(|d| d.peer == c.peer);
            if let Some(c) = self.catch_up.take_if(|c| !c.proven() && !started(c)) {
                self.allowance.spend(&c, now);
            }
            self.maybe_mine(unix);
        }
    }

    /// Statuses and link offers from nodes of other networks ignored since start.
    pub fn other_network_messages(&self) -> u64 {
        self.other_networks.messages()
    }

    /// Where a catch-up stands, while one runs.
    pub fn catch_up(&self, now: Instant) -> Option<Progress> {
        self.catch_up.as_ref().map(|c| c.progress(now))
    }

    /// The store failed: say so once, stop mining, take nothing more.
    fn fail(&mut self, e: ApplyError) {
        if !self.failed {
            self.failed = true;
            self.stop();
            self.effects.push(Effect::Fatal(e));
        }
    }

    /// The chain, shared with the block server.
    pub fn chain(&self) -> &Arc<RwLock<Chain>> {
        &self.chain
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Payments pending.
    pub fn pending(&self) -> usize {
        self.pool.len()
    }

    /// The pending payments.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The links.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Links to keep and try: named peers and saved addresses (before the first tick).
    pub fn set_links(&mut self, links: Links) {
        self.links = links;
    }

    /// The peers and downloads.
    pub fn sync(&self) -> &SyncManager {
        &self.sync
    }

    /// Whether a search runs.
    pub fn is_mining(&self) -> bool {
        self.mining_on.is_some()
    }

    /// What this node announces.
    pub fn status(&self) -> Status {
        self.identity.status(&read_chain(&self.chain))
    }

    /// The tip moved, or the node starts: broadcast our status and send it on every link.
    fn announce(&mut self) {
        let status = self.status();
        self.effects.push(Effect::Announce(status));
        self.status_to_links(status);
    }

    /// Someone asked by broadcast for every node's status: broadcast ours. Links are not sent
    /// it, so no datagram makes this node send anything to a third party.
    fn on_status_request(&mut self) {
        let status = self.status();
        self.effects.push(Effect::Announce(status));
    }

    fn status_to_links(&mut self, status: Status) {
        self.send_to_links(None, &LinkMessage::Status(status));
    }

    /// Sends `message` on every link but `except`, in link order.
    fn send_to_links(&mut self, except: Option<LinkId>, message: &LinkMessage) {
        let mut ids: Vec<LinkId> = self
            .links
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| Some(*id) != except)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.effects.push(Effect::Send(id, message.clone()));
        }
    }

    /// Link upkeep, about once a second: dial what is due, close links gone quiet, send our
    /// status on every link each third of the quiet time, share addresses, save good ones.
    fn maintain_links(&mut self, now: Instant) {
        for addr in self.links.due(now) {
            self.effects.push(Effect::Dial(addr));
        }
        for id in self.links.quiet(now, self.timing.quiet) {
            self.drop_link(id, Down::Quiet, now);
        }
        if self
            .statused_links_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.timing.quiet / 3)
        {
            self.statused_links_at = Some(now);
            let status = self.status();
            self.status_to_links(status);
        }
        self.links.review(now);
        for id in self.links.due_shares(now) {
            let addrs = self.links.share(id);
            if !addrs.is_empty() {
                self.effects
                    .push(Effect::Send(id, LinkMessage::Addrs(addrs)));
            }
        }
        if let Some(addrs) = self.links.to_save() {
            self.effects.push(Effect::SavePeers(addrs));
        }
    }

    /// A connection offered to be a link: keep it (the far end is the peer's block server when
    /// dialled, or its IP with the port `hello` announces), or refuse it. An inbound link that
    /// brought nothing new for long may be closed to make room. The verdict goes out before
    /// anything is sent on the link.
    fn link_offered(
        &mut self,
        conn: u64,
        peer: SocketAddr,
        outbound: bool,
        hello: Status,
        now: Instant,
    ) {
        let addr = if outbound {
            peer
        } else {
            SocketAddr::new(peer.ip(), hello.block_server_port)
        };
        let admitted = if !self.same_network(hello.network, peer) {
            Err(Refused::OtherNetwork(hello.network))
        } else if outbound {
            Ok(())
        } else {
            self.admit_link(peer.ip(), &hello, now)
        };
        let up = admitted.and_then(|()| self.links.up(addr, outbound, hello.node_id, now));
        let (id, replaced) = match up {
            Ok(up) => up,
            Err(why) => {
                tracing::debug!(%peer, "link not kept: {why}");
                self.effects.push(Effect::Link {
                    conn,
                    verdict: Err(why),
                });
                return;
            }
        };
        self.effects.push(Effect::Link {
            conn,
            verdict: Ok(id),
        });
        if let Some(old) = replaced {
            self.effects.push(Effect::Close(old));
        }
        let status = self.status();
        self.effects
            .push(Effect::Send(id, LinkMessage::Status(status)));
        let links = self.links.len();
        self.note(Note::LinkUp {
            peer: addr,
            outbound,
            links,
        });
        self.link_status(addr, hello, now);
    }

    fn admit_link(&mut self, from: IpAddr, hello: &Status, now: Instant) -> Result<(), Refused> {
        if let Some(old) = self
            .links
            .admit(from, (hello.node_id, hello.block_server_port), now)?
        {
            self.drop_link(old, Down::Replaced, now);
        }
        Ok(())
    }

    /// Link `id` sent `message`.
    fn on_link_message(&mut self, id: LinkId, message: LinkMessage, now: Instant, unix: u64) {
        let Some(addr) = self.links.get(id).map(|l| l.addr) else {
            return;
        };
        match message {
            LinkMessage::Status(status) => {
                if self.links.allow(id, Kind::Status, now) {
                    self.link_status(addr, status, now);
                }
            }
            LinkMessage::Payment(payment) => {
                if !self.links.allow(id, Kind::Payment, now) {
                    return;
                }
                match self.take_payment(payment, addr, Some(id), unix) {
                    Ok(()) => self.links.useful(id, now),
                    Err(PoolError::Invalid(e)) => self.drop_link(id, Down::Invalid(e.into()), now),
                    Err(_) => {}
                }
            }
            LinkMessage::Addrs(addrs) => {
                if self.links.allow(id, Kind::Addrs, now) {
                    self.links.learn(&addrs, now);
                }
            }
        }
    }

    /// Link `id` ended: it closed, failed, or sent what does not decode.
    fn link_down(&mut self, id: LinkId, why: Down, now: Instant) {
        if let Some(link) = self.links.down(id, &why, now) {
            let links = self.links.len();
            self.note(Note::LinkDown {
                peer: link.addr,
                why,
                links,
            });
        }
    }

    fn drop_link(&mut self, id: LinkId, why: Down, now: Instant) {
        if self.links.get(id).is_some() {
            self.link_down(id, why, now);
            self.effects.push(Effect::Close(id));
        }
    }

    /// A status on a link: its block server is the link's address, whatever port it says.
    fn link_status(&mut self, addr: SocketAddr, mut status: Status, now: Instant) {
        status.block_server_port = addr.port();
        self.on_status(status, addr, now, now);
    }

    /// The start-up listening time is over: mine, unless a peer far ahead waits its turn to
    /// be downloaded from.
    fn listened(&mut self, now: Instant, unix: u64) {
        self.listening = false;
        self.wait_for_peers_ahead(now);
        self.maybe_mine(unix);
    }

    /// When no catch-up runs but a peer not passed over announces a chain far ahead, whose
    /// download waits its turn (downloads from one host start once a second, a few at a time):
    /// a catch-up that waits for it, within what is left of the allowance. Without it, a node
    /// whose first download failed mined a block 1 of its own in the gap, and lost it.
    fn wait_for_peers_ahead(&mut self, now: Instant) {
        if self.catch_up.is_some() {
            return;
        }
        let grace = self.allowance.left(now);
        if grace.is_zero() {
            return;
        }
        let chain = read_chain(&self.chain);
        let (ours, difficulty) = (chain.chain_work(), chain.params().difficulty);
        let ahead = self
            .sync
            .peers()
            .iter()
            .filter(|p| p.backoff_until.is_none_or(|t| t <= now))
            .filter(|p| catchup::far_behind(ours, p.status.chain_work, difficulty))
            .max_by_key(|p| p.status.chain_work);
        if let Some(p) = ahead {
            let c = CatchUp::new(p.block_server, p.status.height, chain.height(), now, grace);
            drop(chain);
            self.catch_up = Some(c);
        }
    }

    /// Pools a payment from `from` (over `link`, if so) and passes a new one on to every
    /// other link, once: what is pooled once is never passed on again.
    fn take_payment(
        &mut self,
        payment: Payment,
        from: SocketAddr,
        link: Option<LinkId>,
        unix: u64,
    ) -> Result<(), PoolError> {
        let result = {
            let chain = read_chain(&self.chain);
            self.pool.add(payment.clone(), chain.ledger())
        };
        match result {
            Ok(Pooled { id, evicted }) => {
                self.send_to_links(link, &LinkMessage::Payment(payment.clone()));
                if let Some(old) = evicted {
                    self.note(Note::PaymentEvicted(old));
                }
                let pending = self.pool.len();
                self.note(Note::PaymentPooled {
                    id,
                    amount: payment.amount,
                    from: payment.from,
                    to: payment.to,
                    pending,
                });
                self.maybe_mine(unix);
                Ok(())
            }
            // Seen before: nothing new to say.
            Err(e @ (PoolError::Duplicate(_) | PoolError::KnownInvalid(_))) => Err(e),
            Err(e) => {
                if self.refused_payments.allow() {
                    tracing::info!(%from, "refused a payment: {e}");
                }
                Err(e)
            }
        }
    }

    /// Stale blocks among the last `window` heights: side blocks the chain holds, and tips
    /// heard there that are real blocks ([`NodeCore`]'s `heard_tips`) the chain does not hold.
    /// Each is a block some miner found that is not on our best chain.
    pub fn stale_blocks(&self, window: u64) -> StaleCount {
        let chain = read_chain(&self.chain);
        let mut count = chain.stale_blocks(window);
        // The heights the chain counted over: its last `count.best`.
        let from = chain.height() + 1 - count.best;
        count.stale += self
            .heard_tips
            .iter()
            .filter(|(hash, height)| {
                (from..=chain.height()).contains(*height) && !chain.contains(hash)
            })
            .count() as u64;
        count
    }

    /// Remembers a tip heard, if its hash is a real block's.
    fn remember_tip(&mut self, status: &Status, ours: u64, difficulty: u32) {
        if status.height == 0 || !status.tip.meets_difficulty(difficulty) {
            return;
        }
        if self.heard_tips.len() >= MAX_HEARD_TIPS {
            let oldest = ours.saturating_sub(STALE_WINDOW);
            self.heard_tips.retain(|_, height| *height > oldest);
            if self.heard_tips.len() >= MAX_HEARD_TIPS {
                return;
            }
        }
        self.heard_tips.insert(status.tip, status.height);
    }

    /// A status from `from` arrived at `received` (the driver may get to it later, at `now`).
    fn on_status(&mut self, status: Status, from: SocketAddr, received: Instant, now: Instant) {
        if !self.same_network(status.network, from) {
            return;
        }
        self.sync.heard(status, from, now);
        let (height, difficulty, want) = {
            let chain = read_chain(&self.chain);
            (
                chain.height(),
                chain.params().difficulty,
                chain.want(&status),
            )
        };
        self.remember_tip(&status, height, difficulty);
        if want != Want::No {
            if want == Want::More {
                self.better_heard_at.get_or_insert(received);
            }
            self.maybe_sync(now);
        }
    }

    /// Whether `network` is this node's; a status or link of another one is counted, and the
    /// first from each other network is told of once.
    fn same_network(&mut self, network: NetworkId, from: SocketAddr) -> bool {
        if network == self.network {
            return true;
        }
        if self.other_networks.heard(network) {
            self.note(Note::OtherNetwork {
                from,
                network,
                ours: self.network,
            });
        }
        false
    }

    /// Starts downloads from peers whose chain ours wants (more work, or an equal-work tip
    /// that may win the tie-break), as many as the sync manager allows.
    fn maybe_sync(&mut self, now: Instant) {
        let chain = read_chain(&self.chain);
        while let Some(download) = self.sync.next(&*chain, now) {
            tracing::debug!(
                peer = %download.peer,
                height = download.announced.height,
                tie = download.tie,
                "downloading a chain with more work, or a tie"
            );
            let behind = catchup::far_behind(
                chain.chain_work(),
                download.announced.chain_work,
                chain.params().difficulty,
            );
            let grace = self.allowance.left(now);
            if behind && !grace.is_zero() && self.catch_up.is_none() {
                let c = CatchUp::new(
                    download.peer,
                    download.announced.height,
                    chain.height(),
                    now,
                    grace,
                );
                self.catch_up = Some(c);
                self.effects.push(Effect::Note(Note::CatchingUp {
                    peer: download.peer,
                    height: chain.height(),
                    target: download.announced.height,
                }));
                if self.mining_on.take().is_some() {
                    self.effects.push(Effect::StopMining);
                }
            }
            self.effects
                .push(Effect::Download(download, ForkPoints::of(&chain)));
        }
    }

    /// A batch of a download from `peer`: says how many of its blocks were new, or why one
    /// could not be added (which ends that download).
    fn on_downloaded(
        &mut self,
        peer: SocketAddr,
        blocks: Vec<Block>,
        now: Instant,
        unix: u64,
    ) -> Result<u64, ApplyError> {
        let mut chain = &*self.chain;
        let batch = apply::add_batch(&mut chain, &mut self.store, blocks, unix);
        if batch.new > 0
            && let Some(c) = self.catch_up.as_mut().filter(|c| c.peer == peer)
        {
            // Blocks after the pause ended: the chain is real, stop mining below it again.
            if c.progressed(read_chain(&self.chain).height(), now)
                && self.mining_on.take().is_some()
            {
                self.effects.push(Effect::StopMining);
            }
        }
        if !batch.moved.connected.is_empty() {
            self.on_tip_changed(batch.moved, Source::Peer(peer), now);
            self.maybe_mine(unix);
        }
        match batch.error {
            None => Ok(batch.new),
            Some(e @ ApplyError::Refused(_)) => {
                tracing::warn!(%peer, "{e}");
                Err(e)
            }
            Some(e) => {
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// The download from `peer` ended with `result`.
    fn on_download_done(
        &mut self,
        peer: SocketAddr,
        result: Result<u64, DownloadError>,
        now: Instant,
        unix: u64,
    ) {
        // A download that brought the peer's chain ends the start-up listening early; one that
        // failed (or was a status in another's name) says nothing of the network: listen on.
        if self.listening && result.is_ok() {
            self.listening = false;
            self.maybe_mine(unix);
        }
        let finished = {
            let chain = read_chain(&self.chain);
            self.sync.finished(peer, result, &*chain, now)
        };
        match finished {
            Some(Finished::Served(n)) => {
                tracing::debug!(%peer, "download done: {n} blocks");
                if n > 0 {
                    self.links.served(peer, now);
                }
            }
            Some(Finished::Ended(e @ DownloadError::Disowned { .. })) => {
                if self.failed_downloads.allow() {
                    tracing::info!(%peer, "a status in its name was not its own: {e}");
                }
            }
            Some(Finished::Ended(e)) => tracing::debug!(%peer, "download ended: {e}"),
            Some(Finished::Failed(e, until)) if self.failed_downloads.allow() => {
                self.note(Note::DownloadFailed {
                    peer,
                    error: Arc::new(e),
                    backoff: until.saturating_duration_since(now),
                });
            }
            Some(Finished::Failed(..)) | None => {}
        }
        if let Some(c) = self.catch_up.take_if(|c| c.peer == peer) {
            self.allowance.spend(&c, now);
            let height = read_chain(&self.chain).height();
            let done = height >= c.target;
            self.note(Note::CaughtUp {
                height,
                blocks: height.saturating_sub(c.start_height),
                took: c.took(now),
                done,
            });
        }
        // Still behind someone (another announcer, or this one mined on): go again.
        self.maybe_sync(now);
        self.wait_for_peers_ahead(now);
        self.maybe_mine(unix);
    }

    /// The engine found `block` after `hashes` nonces in `took`.
    fn on_mined(
        &mut self,
        job: u64,
        block: Block,
        took: Duration,
        hashes: u64,
        now: Instant,
        unix: u64,
    ) {
        if self.mining_on.is_some_and(|(current, _)| current == job) {
            self.mining_on = None;
        }
        let hash = block.hash();
        let height = block.header.height;
        self.blocks_mined += 1;
        let mut chain = &*self.chain;
        match apply::add_block(&mut chain, &mut self.store, block, unix) {
            Ok(Added::Moved(update)) => {
                self.on_tip_changed(update, Source::Mined { took, hashes }, now)
            }
            Ok(Added::Side | Added::Known) => self.note(Note::MinedTooLate { height, hash }),
            Err(ApplyError::Refused(e)) => tracing::error!("our own block {hash} was refused: {e}"),
            Err(e) => self.fail(e),
        }
        if self.failed {
            return;
        }
        self.maybe_mine(unix);
    }

    /// A worker found `block`: added like a block this node mined, and announced at once.
    fn on_worker_block(&mut self, block: Block, worker: String, now: Instant, unix: u64) {
        let hash = block.hash();
        let height = block.header.height;
        self.blocks_by_workers += 1;
        let mut chain = &*self.chain;
        match apply::add_block(&mut chain, &mut self.store, block, unix) {
            Ok(Added::Moved(update)) => self.on_tip_changed(update, Source::Worker(worker), now),
            Ok(Added::Side | Added::Known) => self.note(Note::MinedTooLate { height, hash }),
            Err(ApplyError::Refused(e)) => {
                tracing::warn!("a block from worker {worker} was refused: {e}")
            }
            Err(e) => self.fail(e),
        }
        if self.failed {
            return;
        }
        self.maybe_mine(unix);
    }

    /// The node is stopping: stop the search.
    fn stop(&mut self) {
        if self.mining_on.take().is_some() {
            self.effects.push(Effect::StopMining);
        }
    }

    fn note(&mut self, note: Note) {
        self.effects.push(Effect::Note(note));
    }

    fn on_tip_changed(&mut self, moved: TipMove, source: Source, now: Instant) {
        let TipMove {
            disconnected,
            connected,
        } = moved;
        let (height, tip, work, dropped) = {
            let chain = read_chain(&self.chain);
            let dropped = self.pool.reconcile(&disconnected, chain.ledger());
            (
                chain.height(),
                chain.tip_hash(),
                chain.chain_work(),
                dropped,
            )
        };
        for id in dropped {
            self.note(Note::PaymentDropped(id));
        }
        // Payments of blocks that left the best chain are pending again here; the nodes on the
        // winning side may never have had them: pass them on, as new ones.
        let back: Vec<Payment> = disconnected
            .iter()
            .flat_map(|b| &b.transactions)
            .filter_map(|tx| match tx {
                Transaction::Payment(p) if self.pool.contains(&tx.id()) => Some(p.clone()),
                _ => None,
            })
            .collect();
        for payment in back {
            self.send_to_links(None, &LinkMessage::Payment(payment));
        }
        if !disconnected.is_empty() {
            self.reorgs += 1;
            let left = disconnected.first().map_or(Hash256::ZERO, |b| b.hash());
            self.note(Note::Reorg {
                depth: disconnected.len(),
                left,
                at: height + disconnected.len() as u64 - connected.len() as u64,
                back: disconnected.iter().map(|b| b.transactions.len() - 1).sum(),
            });
        }
        match source {
            Source::Mined { took, hashes } => {
                let block = connected.last().expect("a mined block connected");
                self.note(Note::BlockMined {
                    height,
                    hash: tip,
                    transactions: block.transactions.len(),
                    hashes,
                    took,
                });
            }
            Source::Worker(worker) => {
                let block = connected.last().expect("a worker's block connected");
                self.note(Note::WorkerBlock {
                    height,
                    hash: tip,
                    transactions: block.transactions.len(),
                    worker,
                });
            }
            // A catch-up's blocks are told of in its progress, not one batch at a time.
            Source::Peer(peer) if self.catch_up.as_ref().is_some_and(|c| c.peer == peer) => {}
            Source::Peer(peer) => {
                let first = connected.first().map_or(height, |b| b.header.height);
                let since_heard = self
                    .better_heard_at
                    .map(|t| now.saturating_duration_since(t));
                self.note(Note::BlockAdopted {
                    first,
                    height,
                    tip,
                    peer,
                    since_heard,
                });
            }
        }
        if work >= self.sync.peers().best_work() {
            self.better_heard_at = None;
        }
        self.announce();
    }

    /// Mines on the tip when the pool has enough payments for the next block; stops a search
    /// on an old tip.
    fn maybe_mine(&mut self, unix: u64) {
        if self.listening || self.catch_up.as_ref().is_some_and(CatchUp::paused) {
            return;
        }
        let chain = read_chain(&self.chain);
        let tip = chain.tip_hash();
        if self.mining_on.is_some_and(|(_, on)| on == tip) {
            return;
        }
        let template = Template::next(&chain, &self.pool);
        drop(chain);
        match template {
            Some(template) => {
                let block = template.block(self.reward_to, template.header(self.reward_to, unix));
                tracing::debug!(height = block.header.height, "mining");
                let job = self.next_job;
                self.next_job += 1;
                self.mining_on = Some((job, tip));
                self.effects.push(Effect::Mine {
                    job,
                    block,
                    template: Arc::new(template),
                });
            }
            None => {
                if self.mining_on.take().is_some() {
                    self.effects.push(Effect::StopMining);
                }
            }
        }
    }
}
