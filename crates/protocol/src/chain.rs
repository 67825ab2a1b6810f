//! The block tree and fork choice: the most-work chain as the tip with the ledger of that
//! chain, and side branches that might overtake it. A pure state machine: it takes blocks and
//! says what changed; the caller persists blocks and tells the pool.
//!
//! A block on a side branch is checked on its own (proof of work, merkle root, signatures, its
//! parent's header) and kept; it is checked against its branch's ledger only when the branch
//! becomes heavier than the best chain and the tip moves there. So a side block costs the same
//! however long the chain and however deep the fork, and a branch found invalid on the way is
//! dropped with everything built on it while the tip stays. Side blocks are bounded in number
//! and bytes: past the bound, the side branch tips with the least work go first.
//!
//! Fork choice is a strict total order on chains ([`Chain::compare_tips`]): more work wins; of
//! two chains with equal work, the one whose first block after the fork point has the lower
//! hash as shown (more leading zeros) wins. So every node holding the same blocks picks the same
//! tip, whatever order they came in and after a restart, and the choice stays put while both
//! branches grow (`docs/adr/0005-equal-work-tie-break.md`).
//!
//! Memory holds what fork choice and validation need: every header with its hash (a chain's
//! work is its height times one block's, as every block has the network's difficulty), and
//! the ledger. A body stays in memory until the store holds it ([`Chain::stored`]); from then
//! on it is read back from the store ([`BodyFile`]) when a reorg, a peer or the API asks for
//! it, so memory grows by about 155 bytes a block, whatever the blocks hold.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use hashbrown::HashTable;
use std::sync::Arc;

use crate::block::{Block, genesis_block};
use crate::hash::Hash256;
use crate::header::{BlockHeader, work_for_difficulty};
use crate::ledger::Ledger;
use crate::rules::{BlockError, ConsensusParams, Known, NetworkId, checked_size_known};
use crate::store::{BodyAt, BodyFile, StoreError};

/// Cap on remembered invalid block hashes (so a flood of bad blocks cannot grow memory).
const MAX_REMEMBERED_INVALID: usize = 10_000;
/// Side blocks kept at most: a reorg deeper than this cannot be followed (headers-first sync
/// will lift it).
pub const MAX_SIDE_BLOCKS: usize = 10_000;
/// Bytes of side blocks kept at most.
pub const MAX_SIDE_BYTES: usize = 256 << 20;
/// Stored bodies also kept in memory, the newest: a peer's or the API's usual asks.
pub const RECENT_BODIES: usize = 1_000;
/// Bytes of those at most.
pub const RECENT_BYTES: usize = 8 << 20;

/// A block of the tree: its header, the work of its chain, and its body or where it lies.
struct Entry {
    /// The block's hash: what `ids` finds it by.
    hash: Hash256,
    header: BlockHeader,
    body: Body,
}

impl Entry {
    /// Work of the chain from genesis up to and including this block. Every block after
    /// genesis has its network's one difficulty (ADR 6), so it is the height times one block's
    /// work: nothing to keep per block.
    fn chain_work(&self) -> u128 {
        work_for_difficulty(self.header.difficulty).saturating_mul(u128::from(self.header.height))
    }
}

/// A block's body: in memory until the store holds it.
enum Body {
    /// In memory, with the bytes of its encoding (a block server sizes its replies by it).
    Held { block: Arc<Block>, len: u32 },
    /// In the store only.
    Stored(BodyAt),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Held { len, .. } => *len as usize,
            Body::Stored(at) => at.len as usize,
        }
    }
}

/// What adding a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainUpdate {
    /// Already in the tree; nothing changed.
    AlreadyKnown,
    /// Kept on a side branch with no more work than the tip; the tip is unchanged. (It may be
    /// dropped later to keep side branches within their bounds.)
    SideBranch,
    /// The tip moved; a plain extension disconnects nothing.
    TipChanged(TipMove),
}

/// Blocks that left the best chain (highest first) and joined it (lowest first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TipMove {
    /// Left the best chain, highest first.
    pub disconnected: Vec<Arc<Block>>,
    /// Joined it, lowest first.
    pub connected: Vec<Arc<Block>>,
}

impl TipMove {
    /// Whether the tip moved at all.
    pub fn is_empty(&self) -> bool {
        self.disconnected.is_empty() && self.connected.is_empty()
    }

    /// Adds a later move: a block this one connected and `later` disconnects was never on the
    /// best chain as far as the sum is concerned.
    pub fn then(&mut self, later: TipMove) {
        for gone in later.disconnected {
            let hash = gone.hash();
            match self.connected.iter().position(|b| b.hash() == hash) {
                Some(i) => {
                    self.connected.remove(i);
                }
                None => self.disconnected.push(gone),
            }
        }
        self.connected.extend(later.connected);
    }
}

/// Stale blocks beside the best chain over a range of heights ([`Chain::stale_blocks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StaleCount {
    /// Blocks held off the best chain.
    pub stale: u64,
    /// Blocks of the best chain.
    pub best: u64,
}

/// Heights over which nodes report their stale-block rate.
pub const STALE_WINDOW: u64 = 1_000;
/// A stale-block rate above this gets a hint to raise the difficulty.
pub const STALE_HINT_RATE: f64 = 0.05;

impl StaleCount {
    /// What to tell the operator when the rate passes [`STALE_HINT_RATE`].
    pub fn hint(&self) -> Option<&'static str> {
        (self.rate() > STALE_HINT_RATE).then_some(
            "many blocks go stale: blocks come faster than announcements reach the other \
             miners; raise the network's difficulty (mvbc-miner --benchmark suggests one)",
        )
    }

    /// Stale blocks as a share of all blocks seen (0 with none).
    pub fn rate(&self) -> f64 {
        let all = self.stale + self.best;
        if all == 0 {
            0.0
        } else {
            self.stale as f64 / all as f64
        }
    }
}

/// Why a block was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddBlockError {
    /// Its parent is not in the tree (the caller may fetch it and retry).
    #[error("unknown parent {0}")]
    UnknownParent(Hash256),
    /// A block already found invalid.
    #[error("block {0} was already rejected as invalid")]
    KnownInvalid(Hash256),
    /// Choosing it meant reading blocks back from the store, which failed: the block is
    /// kept beside the best chain, which did not move.
    #[error("block {hash} could not be weighed against the best chain: {error}")]
    Unreadable {
        /// The block's hash.
        hash: Hash256,
        /// What reading the store said.
        error: String,
    },
    /// It breaks a rule.
    #[error("invalid block {hash}: {error}")]
    Invalid {
        /// The block's hash.
        hash: Hash256,
        /// The rule it breaks.
        error: BlockError,
    },
}

/// The best (most-work) chain and its ledger, and the side branches kept beside it.
pub struct Chain {
    params: ConsensusParams,
    /// The network `params` make, worked out once: every status the node sends carries it.
    network: NetworkId,
    /// Every block of the tree by hash: its place in `entries`. A table of places alone, keyed
    /// by the first 8 bytes of the hash and compared with the hash its entry keeps: 4 bytes a
    /// slot, where a map from hash to place took 36 (at most 7 slots in 8 are used). Block
    /// hashes are uniform in those bytes (proof of work zeroes the other end), and nobody can
    /// make many blocks that share them.
    ids: HashTable<u32>,
    /// The blocks of the tree; a place freed by a dropped side block is reused (`free`).
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// The best chain by height: `best[h]` is the place of the block at height `h`.
    best: Vec<u32>,
    /// The hash of `best`'s last block.
    tip: Hash256,
    /// Where stored bodies are read back from; none for a chain without a store.
    bodies: Option<BodyFile>,
    /// The bodies stored last, kept in memory too: peers and the API ask for the newest
    /// blocks most. At most [`RECENT_BODIES`] of them and [`RECENT_BYTES`] in all.
    /// Keyed by where they lie in the store, so finding one needs no hash.
    recent: HashMap<u64, Arc<Block>>,
    recent_order: std::collections::VecDeque<(u64, usize)>,
    recent_bytes: usize,
    recent_max: usize,
    ledger: Ledger,
    invalid: HashSet<Hash256>,
    /// Blocks in the tree that are not on the best chain, and their encoded bytes in all.
    side: HashSet<Hash256>,
    side_bytes: usize,
    /// Blocks applied to or undone from the ledger since the chain was made.
    ledger_moves: u64,
}

/// Why moving the tip failed.
enum MoveError {
    /// This block of the branch breaks a rule.
    Invalid(Hash256, BlockError),
    /// A body could not be read back from the store; nothing changed.
    Unreadable(StoreError),
}

/// What `Chain::ids` files a block under: the first 8 bytes of its hash.
fn id_key(hash: &Hash256) -> u64 {
    u64::from_le_bytes(hash.0[..8].try_into().expect("8 of 32 bytes"))
}

impl Chain {
    /// A chain holding only the genesis block.
    pub fn new(params: ConsensusParams) -> Chain {
        let genesis = genesis_block();
        let hash = genesis.hash();
        let len = genesis.encode().len() as u32;
        let entry = Entry {
            hash,
            header: genesis.header,
            body: Body::Held {
                block: Arc::new(genesis),
                len,
            },
        };
        Chain {
            params,
            network: params.network_id(),
            ids: {
                let mut ids = HashTable::new();
                ids.insert_unique(id_key(&hash), 0, |_| id_key(&hash));
                ids
            },
            entries: vec![Some(entry)],
            free: Vec::new(),
            best: vec![0],
            tip: hash,
            bodies: None,
            recent: HashMap::new(),
            recent_order: std::collections::VecDeque::new(),
            recent_bytes: 0,
            recent_max: RECENT_BODIES,
            ledger: Ledger::default(),
            invalid: HashSet::new(),
            side: HashSet::new(),
            side_bytes: 0,
            ledger_moves: 0,
        }
    }

    /// Reads bodies the store holds from `bodies` from now on ([`Chain::stored`]).
    pub fn set_bodies(&mut self, bodies: BodyFile) {
        self.bodies = Some(bodies);
    }

    /// The consensus parameters this chain enforces.
    pub fn params(&self) -> &ConsensusParams {
        &self.params
    }

    /// The network its parameters make ([`ConsensusParams::network_id`]).
    pub fn network_id(&self) -> NetworkId {
        self.network
    }

    fn entry(&self, id: u32) -> &Entry {
        self.entries[id as usize]
            .as_ref()
            .expect("ids, best and side name only blocks of the tree")
    }

    /// The place in `entries` of the block `hash`, if the tree holds it.
    fn id(&self, hash: &Hash256) -> Option<u32> {
        self.ids
            .find(id_key(hash), |&id| self.entry(id).hash == *hash)
            .copied()
    }

    fn get(&self, hash: &Hash256) -> Option<&Entry> {
        self.id(hash).map(|id| self.entry(id))
    }

    /// The entry of a hash known to be in the tree.
    fn known(&self, hash: &Hash256) -> &Entry {
        self.get(hash).expect("a block of the tree")
    }

    fn insert(&mut self, hash: Hash256, entry: Entry) -> u32 {
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = Some(entry);
                id
            }
            None => {
                self.entries.push(Some(entry));
                u32::try_from(self.entries.len() - 1).expect("fewer than 2^32 blocks")
            }
        };
        let entries = &self.entries;
        self.ids.insert_unique(id_key(&hash), id, |&id| {
            id_key(
                &entries[id as usize]
                    .as_ref()
                    .expect("a block of the tree")
                    .hash,
            )
        });
        id
    }

    fn remove(&mut self, hash: &Hash256) -> Option<Entry> {
        let entries = &self.entries;
        let (id, _) = self
            .ids
            .find_entry(id_key(hash), |&id| {
                entries[id as usize]
                    .as_ref()
                    .is_some_and(|e| e.hash == *hash)
            })
            .ok()?
            .remove();
        self.free.push(id);
        self.entries[id as usize].take()
    }

    /// Reads a body: from memory, or back from the store (checked to be the block whose
    /// header the entry holds).
    fn body(&self, entry: &Entry) -> Result<Arc<Block>, StoreError> {
        match &entry.body {
            Body::Held { block, .. } => Ok(block.clone()),
            Body::Stored(at) => {
                if let Some(block) = self.recent.get(&at.at) {
                    return Ok(block.clone());
                }
                let bodies = self.bodies.as_ref().ok_or_else(|| StoreError::Io {
                    path: "<no store>".into(),
                    source: Arc::new(std::io::Error::other("a stored body with no store")),
                })?;
                bodies.read(*at, &entry.header).map(Arc::new)
            }
        }
    }

    /// Hash of the best chain's tip.
    pub fn tip_hash(&self) -> Hash256 {
        self.tip
    }

    /// Height of the tip (genesis is 0).
    pub fn height(&self) -> u64 {
        (self.best.len() - 1) as u64
    }

    /// The tip's header.
    pub fn tip_header(&self) -> &BlockHeader {
        &self.known(&self.tip).header
    }

    /// Cumulative work of the best chain.
    pub fn chain_work(&self) -> u128 {
        self.known(&self.tip).chain_work()
    }

    /// The ledger of the best chain.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The header of the block at `height` on the best chain.
    pub fn header_at(&self, height: u64) -> Option<&BlockHeader> {
        let id = self.best.get(usize::try_from(height).ok()?)?;
        Some(&self.entry(*id).header)
    }

    /// The hash of the block at `height` on the best chain.
    pub fn hash_at(&self, height: u64) -> Option<Hash256> {
        if height == self.height() {
            return Some(self.tip);
        }
        self.header_at(height).map(BlockHeader::hash)
    }

    /// The block at `height` on the best chain, read back from the store if need be.
    pub fn block_at(&self, height: u64) -> Result<Option<Arc<Block>>, StoreError> {
        match usize::try_from(height).ok().and_then(|h| self.best.get(h)) {
            Some(id) => self.body(self.entry(*id)).map(Some),
            None => Ok(None),
        }
    }

    /// Any block in the tree by hash, read back from the store if need be.
    pub fn block(&self, hash: &Hash256) -> Result<Option<Arc<Block>>, StoreError> {
        match self.get(hash) {
            Some(entry) => self.body(entry).map(Some),
            None => Ok(None),
        }
    }

    /// Any header in the tree by hash.
    pub fn header(&self, hash: &Hash256) -> Option<&BlockHeader> {
        self.get(hash).map(|e| &e.header)
    }

    /// Whether the tree holds this block.
    pub fn contains(&self, hash: &Hash256) -> bool {
        self.id(hash).is_some()
    }

    /// Whether the store holds this block's body ([`Chain::stored`]).
    pub fn is_stored(&self, hash: &Hash256) -> bool {
        self.get(hash)
            .is_some_and(|e| matches!(e.body, Body::Stored(_)))
    }

    /// Notes that the store holds block `hash` at `at`: its body leaves memory and is read
    /// back from there. A chain without a store ([`Chain::set_bodies`]) keeps it.
    pub fn stored(&mut self, hash: &Hash256, at: BodyAt) {
        if self.bodies.is_none() {
            return;
        }
        if let Some(id) = self.id(hash)
            && let Some(entry) = self.entries[id as usize].as_mut()
            && let Body::Held { block, len } = std::mem::replace(&mut entry.body, Body::Stored(at))
        {
            self.recent.insert(at.at, block);
            self.recent_order.push_back((at.at, len as usize));
            self.recent_bytes += len as usize;
            self.evict_recent();
        }
    }

    /// Keeps at most `n` stored bodies in memory besides the store (default
    /// [`RECENT_BODIES`]); 0 reads every stored body back from the store.
    pub fn set_recent_bodies(&mut self, n: usize) {
        self.recent_max = n;
        self.evict_recent();
    }

    fn evict_recent(&mut self) {
        while self.recent_order.len() > self.recent_max || self.recent_bytes > RECENT_BYTES {
            let Some((old, len)) = self.recent_order.pop_front() else {
                break;
            };
            self.recent.remove(&old);
            self.recent_bytes -= len;
        }
    }

    /// Adds a block read from the store, which holds it at `at` ([`Chain::add_block`]).
    /// `signed`: its payments' signatures were checked when it first came, and need not be
    /// again (the store's validated mark covers it; see `store::load_chain`).
    pub fn add_stored(
        &mut self,
        block: Block,
        at: BodyAt,
        now: u64,
        signed: bool,
    ) -> Result<ChainUpdate, AddBlockError> {
        let hash = block.hash();
        // Decoded from `at.len` canonical bytes: that is its size.
        let update = self.add_hashed(block, hash, Some(at.len as usize), now, signed)?;
        self.stored(&hash, at);
        Ok(update)
    }

    /// The blocks kept on side branches, by hash.
    pub fn side_blocks(&self) -> impl Iterator<Item = &Hash256> {
        self.side.iter()
    }

    /// Number of blocks in the tree, side branches included.
    pub fn tree_len(&self) -> usize {
        self.ids.len()
    }

    /// Number of blocks kept on side branches.
    pub fn side_len(&self) -> usize {
        self.side.len()
    }

    /// Stale blocks among the last `window` heights: side blocks this node holds there (blocks
    /// that lost a tie, or were reorged out), beside the best chain's blocks there. A network
    /// whose difficulty is low for its hash rate shows it here first.
    pub fn stale_blocks(&self, window: u64) -> StaleCount {
        let height = self.height();
        let from = height.saturating_sub(window) + 1;
        let stale = self
            .side
            .iter()
            .filter(|h| (from..=height).contains(&self.known(h).header.height))
            .count() as u64;
        StaleCount {
            stale,
            best: height + 1 - from,
        }
    }

    /// How many times a block was applied to or undone from the ledger since this chain was
    /// made: the work that grows with the depth of a fork, for tests and benchmarks.
    pub fn ledger_moves(&self) -> u64 {
        self.ledger_moves
    }

    /// Whether `hash` is on the best chain.
    pub fn is_on_best_chain(&self, hash: &Hash256) -> bool {
        self.id(hash).is_some_and(|id| {
            let height = self.entry(id).header.height;
            usize::try_from(height).ok().and_then(|h| self.best.get(h)) == Some(&id)
        })
    }

    /// A block locator of the best chain: the tip and the nine blocks below it, then hashes at
    /// doubling distances, ending with genesis. A peer finds the highest one it shares with us
    /// in one look, however long the two chains are.
    pub fn locator(&self) -> Vec<Hash256> {
        crate::headers::locator_heights(self.height())
            .into_iter()
            .map(|h| self.hash_at(h).expect("a height of the best chain"))
            .collect()
    }

    /// The height of the first `locator` hash on the best chain (genesis if none is).
    fn fork_height(&self, locator: &[Hash256]) -> usize {
        locator
            .iter()
            .find(|h| self.is_on_best_chain(h))
            .map_or(0, |h| self.known(h).header.height as usize)
    }

    /// The headers of the best-chain blocks after the first `locator` hash on the best chain
    /// (after genesis if none is), lowest first, at most `max`.
    pub fn headers_after(&self, locator: &[Hash256], max: usize) -> Vec<BlockHeader> {
        let fork = self.fork_height(locator);
        self.best
            .iter()
            .skip(fork + 1)
            .take(max)
            .map(|id| self.entry(*id).header)
            .collect()
    }

    /// The header of the block `hash` and the work of the chain from genesis up to and
    /// including it, if the tree holds it: where a branch forks, for judging it by headers.
    pub fn header_and_work(&self, hash: &Hash256) -> Option<(BlockHeader, u128)> {
        self.get(hash).map(|e| (e.header, e.chain_work()))
    }

    /// The best-chain blocks after the first `locator` hash that is on the best chain (after
    /// genesis if none is), lowest first: at most `max_blocks`, and no more once `max_bytes`
    /// of encoded blocks are taken (but at least one block when there is one). Bodies the
    /// store holds are read back from it.
    pub fn blocks_after(
        &self,
        locator: &[Hash256],
        max_blocks: usize,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Block>>, StoreError> {
        let fork = self.fork_height(locator);
        let mut out = Vec::new();
        let mut bytes = 0;
        for id in self.best.iter().skip(fork + 1).take(max_blocks) {
            let entry = self.entry(*id);
            bytes += entry.body.len();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(self.body(entry)?);
        }
        Ok(out)
    }

    /// Adds a block received from anywhere. `now` is our clock in Unix seconds.
    ///
    /// A block extending the tip is checked against the ledger and applied. A block elsewhere
    /// is checked on its own and kept on its side branch; when that branch has strictly more
    /// work than the best chain, the tip moves there, checking each of its blocks against the
    /// ledger on the way. If one fails, the tip stays where it was, and that block and every
    /// block built on it are dropped and remembered as invalid. Of two chains with equal work,
    /// the one [`Chain::compare_tips`] prefers wins, whichever came first.
    pub fn add_block(&mut self, block: Block, now: u64) -> Result<ChainUpdate, AddBlockError> {
        let hash = block.hash();
        self.add_hashed(block, hash, None, now, false)
    }

    /// [`Chain::add_block`] of a block whose hash the caller worked out already, and whose
    /// encoded size it may know.
    fn add_hashed(
        &mut self,
        block: Block,
        hash: Hash256,
        size: Option<usize>,
        now: u64,
        signed: bool,
    ) -> Result<ChainUpdate, AddBlockError> {
        if self.id(&hash).is_some() {
            return Ok(ChainUpdate::AlreadyKnown);
        }
        if self.invalid.contains(&hash) {
            return Err(AddBlockError::KnownInvalid(hash));
        }
        let parent_hash = block.header.prev_hash;
        let Some(parent) = self.get(&parent_hash) else {
            return Err(AddBlockError::UnknownParent(parent_hash));
        };
        // The parent was found by the hash the block names: that is the parent's hash.
        let known = Known {
            hash,
            parent_hash,
            size,
            signed,
        };
        let encoded_len = match checked_size_known(&block, &parent.header, known, &self.params, now)
        {
            Ok(size) => size,
            Err(error) => return Err(self.reject(hash, error)),
        };
        let extends_tip = parent_hash == self.tip;
        let block = Arc::new(block);
        if extends_tip {
            if let Err(error) = self.ledger.apply_block(&block) {
                return Err(self.reject(hash, error));
            }
            self.ledger_moves += 1;
        }
        let id = self.insert(
            hash,
            Entry {
                hash,
                header: block.header,
                body: Body::Held {
                    block: block.clone(),
                    len: encoded_len as u32,
                },
            },
        );
        if extends_tip {
            self.best.push(id);
            self.tip = hash;
            return Ok(ChainUpdate::TipChanged(TipMove {
                disconnected: Vec::new(),
                connected: vec![block],
            }));
        }
        self.side.insert(hash);
        self.side_bytes += encoded_len;
        let beats_tip = self.compare_tips(&hash, &self.tip) == Some(Ordering::Greater);
        if !beats_tip {
            self.prune_side();
            return Ok(ChainUpdate::SideBranch);
        }
        match self.move_tip_to(hash) {
            Ok((disconnected, connected)) => {
                for b in &disconnected {
                    let h = b.hash();
                    self.side.insert(h);
                    self.side_bytes += self.known(&h).body.len();
                }
                for b in &connected {
                    let h = b.hash();
                    if self.side.remove(&h) {
                        self.side_bytes -= self.known(&h).body.len();
                    }
                }
                self.prune_side();
                Ok(ChainUpdate::TipChanged(TipMove {
                    disconnected,
                    connected,
                }))
            }
            Err(MoveError::Invalid(bad, error)) => {
                self.drop_side_subtree(bad);
                Err(self.reject(bad, error))
            }
            Err(MoveError::Unreadable(error)) => Err(AddBlockError::Unreadable {
                hash,
                error: crate::error_line(&error),
            }),
        }
    }

    /// Fork choice between two blocks of the tree as chain tips: `Greater` when the chain
    /// ending in `a` is preferred to the one ending in `b`, `Equal` only when they are the same
    /// block, `None` when the tree lacks either. More work wins; on equal work, the chain whose
    /// first block after the fork point has the lower hash as shown ([`Hash256::cmp_shown`]).
    /// Costs a walk from each tip to the fork point, and only on equal work.
    pub fn compare_tips(&self, a: &Hash256, b: &Hash256) -> Option<Ordering> {
        let (entry_a, entry_b) = (self.get(a)?, self.get(b)?);
        let by_work = entry_a.chain_work().cmp(&entry_b.chain_work());
        if by_work != Ordering::Equal || a == b {
            return Some(by_work);
        }
        let (first_a, first_b) = self.first_after_fork(*a, *b);
        // The lower hash is the better chain: reversed, so that better compares Greater.
        Some(first_b.cmp_shown(&first_a))
    }

    /// For two different blocks of the tree, neither an ancestor of the other: the first block
    /// after their fork point on each side. (An ancestor has less work, so equal-work tips
    /// never are one.)
    fn first_after_fork(&self, mut a: Hash256, mut b: Hash256) -> (Hash256, Hash256) {
        let height = |h: &Hash256| self.known(h).header.height;
        let parent = |h: &Hash256| self.known(h).header.prev_hash;
        while height(&a) > height(&b) {
            a = parent(&a);
        }
        while height(&b) > height(&a) {
            b = parent(&b);
        }
        loop {
            let (pa, pb) = (parent(&a), parent(&b));
            if pa == pb {
                return (a, b);
            }
            (a, b) = (pa, pb);
        }
    }

    /// Takes back the tip move [`Chain::add_block`] just reported, `disconnected` (highest
    /// first) and `connected` (lowest first): for a caller that could not store the blocks that
    /// joined, so the best chain in memory never runs ahead of the store. The blocks that had
    /// joined stay in the tree on a side branch; the caller is expected to stop.
    pub fn revert(&mut self, disconnected: &[Arc<Block>], connected: &[Arc<Block>]) {
        for block in connected.iter().rev() {
            let hash = block.hash();
            if self.tip != hash {
                return; // not the move just made: leave the chain as it is
            }
            self.best.pop();
            self.tip = block.header.prev_hash;
            self.ledger.undo_block(block);
            self.ledger_moves += 1;
            if let Some(len) = self.get(&hash).map(|e| e.body.len())
                && self.side.insert(hash)
            {
                self.side_bytes += len;
            }
        }
        for block in disconnected.iter().rev() {
            let hash = block.hash();
            let id = match self.id(&hash) {
                Some(id) => {
                    if self.side.remove(&hash) {
                        self.side_bytes -= self.entry(id).body.len();
                    }
                    id
                }
                None => {
                    // Pruned from the side branches since it left: its entry comes back.
                    let entry = Entry {
                        hash,
                        header: block.header,
                        body: Body::Held {
                            block: block.clone(),
                            len: block.encode().len() as u32,
                        },
                    };
                    self.insert(hash, entry)
                }
            };
            self.ledger
                .apply_block(block)
                .expect("blocks of the previous best chain re-apply");
            self.ledger_moves += 1;
            self.best.push(id);
            self.tip = hash;
        }
    }

    fn reject(&mut self, hash: Hash256, error: BlockError) -> AddBlockError {
        // A block from the future may be fine later: do not remember it as invalid.
        if matches!(error, BlockError::FutureTimestamp { .. }) {
            return AddBlockError::Invalid { hash, error };
        }
        if self.invalid.len() >= MAX_REMEMBERED_INVALID {
            self.invalid.clear();
        }
        self.invalid.insert(hash);
        AddBlockError::Invalid { hash, error }
    }

    /// Makes `target` (already in the tree) the tip: undoes the best chain back to the fork
    /// point and applies `target`'s branch. Every body either side needs is read first, so on
    /// failure the chain is as before, and the block that failed is named.
    #[allow(clippy::type_complexity)]
    fn move_tip_to(
        &mut self,
        target: Hash256,
    ) -> Result<(Vec<Arc<Block>>, Vec<Arc<Block>>), MoveError> {
        // The branch from the fork point (exclusive) up to target, lowest first.
        let mut branch = Vec::new();
        let mut cursor = target;
        loop {
            if self.is_on_best_chain(&cursor) {
                break;
            }
            let entry = self.known(&cursor);
            branch.push(self.body(entry).map_err(MoveError::Unreadable)?);
            cursor = entry.header.prev_hash;
        }
        branch.reverse();
        let fork_height = self.known(&cursor).header.height as usize;
        // The best chain above the fork point, highest first.
        let mut leaving = Vec::with_capacity(self.best.len() - fork_height - 1);
        for id in self.best[fork_height + 1..].iter().rev() {
            let body = self.body(self.entry(*id));
            leaving.push(body.map_err(MoveError::Unreadable)?);
        }

        let mut disconnected = Vec::new();
        for block in leaving {
            self.best.pop();
            self.ledger.undo_block(&block);
            self.ledger_moves += 1;
            disconnected.push(block);
        }
        for (applied, block) in branch.iter().enumerate() {
            self.ledger_moves += 1;
            if let Err(error) = self.ledger.apply_block(block) {
                for done in branch[..applied].iter().rev() {
                    self.ledger.undo_block(done);
                    self.best.pop();
                }
                for back in disconnected.iter().rev() {
                    self.ledger
                        .apply_block(back)
                        .expect("blocks of the previous best chain re-apply");
                    self.best
                        .push(self.id(&back.hash()).expect("a block of the tree"));
                }
                self.ledger_moves += (applied + disconnected.len()) as u64;
                return Err(MoveError::Invalid(block.hash(), error));
            }
            self.best
                .push(self.id(&block.hash()).expect("a block of the tree"));
        }
        self.tip = target;
        Ok((disconnected, branch))
    }

    /// Takes side block `root` and every side block built on it out of the tree (they will
    /// be refused as invalid if they come again).
    fn drop_side_subtree(&mut self, root: Hash256) {
        let mut doomed: HashSet<Hash256> = HashSet::from([root]);
        let mut by_height: Vec<(u64, Hash256)> = self
            .side
            .iter()
            .map(|h| (self.known(h).header.height, *h))
            .collect();
        by_height.sort_unstable();
        for (_, h) in by_height {
            if doomed.contains(&self.known(&h).header.prev_hash) {
                doomed.insert(h);
            }
        }
        for h in doomed {
            self.remove_side(&h);
            if h != root {
                self.reject(h, BlockError::InvalidAncestor(root));
            }
        }
    }

    fn remove_side(&mut self, hash: &Hash256) {
        if self.side.remove(hash)
            && let Some(entry) = self.remove(hash)
        {
            self.side_bytes -= entry.body.len();
        }
    }

    /// Keeps side branches within [`MAX_SIDE_BLOCKS`] and [`MAX_SIDE_BYTES`]: past either, drops
    /// side branch tips with the least work first (a branch shortens from its tip as its blocks
    /// go), down to nine tenths of the bound so the cost is paid once in a while.
    fn prune_side(&mut self) {
        if self.side.len() <= MAX_SIDE_BLOCKS && self.side_bytes <= MAX_SIDE_BYTES {
            return;
        }
        let (blocks, bytes) = (MAX_SIDE_BLOCKS * 9 / 10, MAX_SIDE_BYTES / 10 * 9);
        let mut children: HashMap<Hash256, usize> = HashMap::new();
        for h in &self.side {
            *children.entry(self.known(h).header.prev_hash).or_default() += 1;
        }
        // Lightest tip first.
        let mut tips: BinaryHeap<std::cmp::Reverse<(u128, Hash256)>> = self
            .side
            .iter()
            .filter(|h| !children.contains_key(h))
            .map(|h| std::cmp::Reverse((self.known(h).chain_work(), *h)))
            .collect();
        while self.side.len() > blocks || self.side_bytes > bytes {
            let Some(std::cmp::Reverse((_, tip))) = tips.pop() else {
                break;
            };
            let parent = self.known(&tip).header.prev_hash;
            self.remove_side(&tip);
            if let Some(n) = children.get_mut(&parent) {
                *n -= 1;
                if *n == 0 && self.side.contains(&parent) {
                    tips.push(std::cmp::Reverse((
                        self.known(&parent).chain_work(),
                        parent,
                    )));
                }
            }
        }
    }
}

/// Reads the chain even if a writer panicked while holding the lock: the chain's own methods
/// leave it consistent, and serving blocks must not take the node down with it.
pub fn read_chain(chain: &std::sync::RwLock<Chain>) -> std::sync::RwLockReadGuard<'_, Chain> {
    chain.read().unwrap_or_else(|e| e.into_inner())
}
