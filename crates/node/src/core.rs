//! The node as a state machine: a miner's whole behaviour between its sockets and its mining
//! engine, with no I/O and no clock of its own.
//!
//! The driver (the miner binary) calls one method per event (a payment or a status heard, a
//! downloaded batch, a download ended, a block found, a timer) with the current time, then
//! drains [`NodeCore::take_effects`] and carries each [`Effect`] out: a datagram to broadcast,
//! a download to run, a block to mine or a search to stop, a [`Note`] to show. Blocks that join
//! the best chain go to its [`BlockSink`] before anything announces them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mvbc_protocol::chain::{STALE_WINDOW, StaleCount, read_chain};
use mvbc_protocol::pool::{Added as Pooled, PoolError};
use mvbc_protocol::wire::{LinkMessage, Status};
use mvbc_protocol::{Address, Amount, Block, Chain, Hash256, Payment, Pool, Transaction};

use crate::apply::{self, Added, ApplyError, BlockSink, TipMove};
use crate::links::{Down, Kind, LinkId, Links, Refused};
use crate::peers::{Want, Wanted};
use crate::sync::{Download, DownloadError, Finished, Role, SyncManager};
use crate::template::next_block;

/// Lines of one kind shown per report interval before the rest are only counted.
pub const LOG_BURST: u32 = 20;

/// Tips heard in statuses, remembered at most, for counting stale blocks this node never
/// downloaded.
pub const MAX_HEARD_TIPS: usize = 4_096;

/// Something the node tells its user.
#[derive(Clone, Debug, PartialEq)]
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
        reason: String,
        /// For how long it is passed over.
        backoff: Duration,
    },
}

/// What the driver is to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Show this to the user.
    Note(Note),
    /// Broadcast this status (the tip moved, or someone asked).
    Announce(Status),
    /// Run this download and report its batches and its end.
    Download(Download),
    /// Stop any search and search a nonce for this block.
    Mine(Block),
    /// Stop the search running.
    StopMining,
    /// Open a link to this block server (report [`NodeCore::link_up`] or
    /// [`NodeCore::dial_failed`]).
    Dial(SocketAddr),
    /// Send this on a link.
    Send(LinkId, LinkMessage),
    /// Close a link (the core has already forgotten it).
    Close(LinkId),
    /// Save these addresses for the next start (`peers.dat`).
    SavePeers(Vec<SocketAddr>),
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
    Peer(SocketAddr),
}

/// A miner node's state: its chain and where it is stored, its pool, its peers and downloads,
/// and what it is mining.
pub struct NodeCore<S: BlockSink> {
    node_id: u64,
    block_server_port: u16,
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
    /// Times the tip moved to another branch since it started.
    pub reorgs: u64,
    /// Still listening for peers after start: not mining yet.
    listening: bool,
    /// Why the node must stop (the store failed).
    fatal: Option<ApplyError>,
    /// The tip the search running builds on.
    mining_on: Option<Hash256>,
    /// Links to peers beyond the broadcast domain.
    links: Links,
    /// A link quiet this long is closed; links are sent our status a third as often.
    quiet: Duration,
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
    /// `reward_to`; peers not heard for `quiet` are forgotten. It mines once
    /// [`NodeCore::listened`] is called or a first download ends.
    pub fn new(
        node_id: u64,
        block_server_port: u16,
        chain: Arc<RwLock<Chain>>,
        store: S,
        reward_to: Address,
        quiet: Duration,
    ) -> NodeCore<S> {
        NodeCore {
            node_id,
            block_server_port,
            chain,
            store,
            pool: Pool::default(),
            reward_to,
            sync: SyncManager::new(Role::MINER, quiet),
            better_heard_at: None,
            refused_payments: Quota::default(),
            failed_downloads: Quota::default(),
            blocks_mined: 0,
            reorgs: 0,
            listening: true,
            fatal: None,
            mining_on: None,
            links: Links::none(node_id),
            quiet,
            statused_links_at: None,
            heard_tips: HashMap::new(),
            effects: Vec::new(),
        }
    }

    /// What the driver is to do now, oldest first.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Why the node must stop, once (the store failed: it must not announce or build on what
    /// it could lose).
    pub fn take_fatal(&mut self) -> Option<ApplyError> {
        self.fatal.take()
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
        let chain = read_chain(&self.chain);
        Status {
            node_id: self.node_id,
            height: chain.height(),
            tip: chain.tip_hash(),
            chain_work: chain.chain_work(),
            block_server_port: self.block_server_port,
        }
    }

    /// The tip moved, or the node starts: broadcast our status and send it on every link.
    pub fn announce(&mut self) {
        let status = self.status();
        self.effects.push(Effect::Announce(status));
        self.status_to_links(status);
    }

    /// Someone asked by broadcast for every node's status: broadcast ours. Links are not sent
    /// it, so no datagram makes this node send anything to a third party.
    pub fn on_status_request(&mut self) {
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
    pub fn maintain_links(&mut self, now: Instant) {
        for addr in self.links.due(now) {
            self.effects.push(Effect::Dial(addr));
        }
        for id in self.links.quiet(now, self.quiet) {
            self.drop_link(id, Down::Quiet, now);
        }
        if self
            .statused_links_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.quiet / 3)
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

    /// A named peer whose name resolved only now: keep it linked from now on.
    pub fn add_named_peer(&mut self, addr: SocketAddr, now: Instant) {
        self.links.add_named(addr, now);
    }

    /// A dial of `addr` failed.
    pub fn dial_failed(&mut self, addr: SocketAddr, now: Instant) {
        self.links.dial_failed(addr, now);
    }

    /// Whether an inbound link from `from`, introducing itself with `hello`, may come up; an
    /// inbound link that brought nothing new for long may be closed to make room for it.
    pub fn admit_link(
        &mut self,
        from: IpAddr,
        hello: &Status,
        now: Instant,
    ) -> Result<(), Refused> {
        if let Some(old) = self
            .links
            .admit(from, (hello.node_id, hello.block_server_port), now)?
        {
            self.drop_link(old, Down::Replaced, now);
        }
        Ok(())
    }

    /// A link came up: `addr` is the peer's block server (dialled, or its IP with the port
    /// `hello` announced). Returns its id, or why it is not kept (the driver closes it).
    pub fn link_up(
        &mut self,
        addr: SocketAddr,
        outbound: bool,
        hello: Status,
        now: Instant,
    ) -> Result<LinkId, Refused> {
        let (id, replaced) = self.links.up(addr, outbound, hello.node_id, now)?;
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
        Ok(id)
    }

    /// Link `id` sent `message`.
    pub fn on_link_message(&mut self, id: LinkId, message: LinkMessage, now: Instant, unix: u64) {
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
                    Err(PoolError::Invalid(e)) => {
                        self.drop_link(id, Down::Invalid(format!("invalid payment: {e}")), now)
                    }
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
    pub fn link_down(&mut self, id: LinkId, why: Down, now: Instant) {
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

    /// The start-up listening time is over: mine.
    pub fn listened(&mut self, unix: u64) {
        self.listening = false;
        self.maybe_mine(unix);
    }

    /// A periodic tick: forget peers gone quiet.
    pub fn tick(&mut self, now: Instant) {
        self.sync.forget_quiet(now);
    }

    /// When to call [`NodeCore::retry_sync`]: a peer is ahead, but the dial budget said not
    /// yet.
    pub fn retry_at(&self) -> Option<Instant> {
        self.sync.retry_at()
    }

    /// The dial budget allows another download now.
    pub fn retry_sync(&mut self, now: Instant) {
        self.maybe_sync(now);
    }

    /// A payment arrived from `from` (by broadcast, or submitted to the block server).
    pub fn on_payment(&mut self, payment: Payment, from: SocketAddr, unix: u64) {
        let _ = self.take_payment(payment, from, None, unix);
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
    pub fn on_status(&mut self, status: Status, from: SocketAddr, received: Instant, now: Instant) {
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
            self.effects.push(Effect::Download(download));
        }
    }

    /// The driver could not start the download from `peer` (its downloaders are gone).
    pub fn download_abandoned(&mut self, peer: SocketAddr) {
        self.sync.abandon(peer);
    }

    /// A batch of a download from `peer`: says how many of its blocks were new, or why one
    /// could not be added (which ends that download).
    pub fn on_downloaded(
        &mut self,
        peer: SocketAddr,
        blocks: Vec<Block>,
        now: Instant,
        unix: u64,
    ) -> Result<u64, ApplyError> {
        let mut chain = &*self.chain;
        let batch = apply::add_batch(&mut chain, &mut self.store, blocks, unix);
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
                self.fatal.get_or_insert(e.clone());
                Err(e)
            }
        }
    }

    /// The download from `peer` ended with `result`.
    pub fn on_download_done(
        &mut self,
        peer: SocketAddr,
        result: Result<u64, DownloadError>,
        now: Instant,
        unix: u64,
    ) {
        if self.listening {
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
                    reason: e.to_string(),
                    backoff: until.saturating_duration_since(now),
                });
            }
            Some(Finished::Failed(..)) | None => {}
        }
        // Still behind someone (another announcer, or this one mined on): go again.
        self.maybe_sync(now);
    }

    /// The engine found `block` after `hashes` nonces in `took`.
    pub fn on_mined(&mut self, block: Block, took: Duration, hashes: u64, now: Instant, unix: u64) {
        if self.mining_on == Some(block.header.prev_hash) {
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
            Err(e) => {
                self.fatal.get_or_insert(e);
            }
        }
        if self.fatal.is_some() {
            return;
        }
        self.maybe_mine(unix);
    }

    /// The engine gave up on the search (an error, or every nonce tried).
    pub fn mining_failed(&mut self) {
        self.mining_on = None;
    }

    /// The node is stopping: stop the search.
    pub fn stop(&mut self) {
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
        if self.listening {
            return;
        }
        let chain = read_chain(&self.chain);
        let tip = chain.tip_hash();
        if self.mining_on == Some(tip) {
            return;
        }
        let block = next_block(&chain, &self.pool, self.reward_to, unix);
        drop(chain);
        match block {
            Some(block) => {
                tracing::debug!(height = block.header.height, "mining");
                self.mining_on = Some(tip);
                self.effects.push(Effect::Mine(block));
            }
            None => {
                if self.mining_on.take().is_some() {
                    self.effects.push(Effect::StopMining);
                }
            }
        }
    }
}
