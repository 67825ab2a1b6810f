//! The node as a state machine: a miner's whole behaviour between its sockets and its mining
//! engine, with no I/O and no clock of its own.
//!
//! The driver (the miner binary) calls one method per event (a payment or a status heard, a
//! downloaded batch, a download ended, a block found, a timer) with the current time, then
//! drains [`NodeCore::take_effects`] and carries each [`Effect`] out: a datagram to broadcast,
//! a download to run, a block to mine or a search to stop, a [`Note`] to show. Blocks that join
//! the best chain go to its [`BlockSink`] before anything announces them.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mvbc_protocol::net::{FetchError, read_chain};
use mvbc_protocol::pool::{Added as Pooled, PoolError};
use mvbc_protocol::wire::Status;
use mvbc_protocol::{Address, Amount, Block, Chain, Hash256, Payment, Pool};

use crate::apply::{self, Added, ApplyError, BlockSink, TipMove};
use crate::sync::{Download, Finished, Role, SyncManager};
use crate::template::next_block;

/// Lines of one kind shown per report interval before the rest are only counted.
pub const LOG_BURST: u32 = 20;

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
    /// Still listening for peers after start: not mining yet.
    listening: bool,
    /// Why the node must stop (the store failed).
    fatal: Option<ApplyError>,
    /// The tip the search running builds on.
    mining_on: Option<Hash256>,
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
            listening: true,
            fatal: None,
            mining_on: None,
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

    /// Someone asked every node to announce.
    pub fn announce(&mut self) {
        let status = self.status();
        self.effects.push(Effect::Announce(status));
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

    /// A payment arrived from `from`.
    pub fn on_payment(&mut self, payment: Payment, from: SocketAddr, unix: u64) {
        let result = {
            let chain = read_chain(&self.chain);
            self.pool.add(payment.clone(), chain.ledger())
        };
        match result {
            Ok(Pooled { id, evicted }) => {
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
            }
            // Seen before: nothing new to say.
            Err(PoolError::Duplicate(_) | PoolError::KnownInvalid(_)) => {}
            Err(e) => {
                if self.refused_payments.allow() {
                    tracing::info!(%from, "refused a payment: {e}");
                }
            }
        }
    }

    /// A status from `from` arrived at `received` (the driver may get to it later, at `now`).
    pub fn on_status(&mut self, status: Status, from: SocketAddr, received: Instant, now: Instant) {
        self.sync.heard(status, from, now);
        let ours = read_chain(&self.chain).chain_work();
        if status.chain_work > ours {
            self.better_heard_at.get_or_insert(received);
            self.maybe_sync(now);
        }
    }

    /// Starts downloads from peers ahead of us, as many as the sync manager allows.
    fn maybe_sync(&mut self, now: Instant) {
        let ours = read_chain(&self.chain).chain_work();
        while let Some(download) = self.sync.next(ours, now) {
            tracing::debug!(
                peer = %download.peer,
                height = download.announced_height,
                "downloading a chain with more work"
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
        result: Result<u64, FetchError>,
        now: Instant,
        unix: u64,
    ) {
        if self.listening {
            self.listening = false;
            self.maybe_mine(unix);
        }
        let ours = read_chain(&self.chain).chain_work();
        match self.sync.finished(peer, result, ours, now) {
            Some(Finished::Served(n)) => tracing::debug!(%peer, "download done: {n} blocks"),
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
        if !disconnected.is_empty() {
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
