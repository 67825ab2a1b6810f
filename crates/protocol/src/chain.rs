//! The block tree and fork choice: every valid block seen, the most-work chain as the tip, and
//! the ledger of that chain. A pure state machine: it takes blocks and says what changed; the
//! caller persists blocks and tells the pool.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::block::{Block, genesis_block};
use crate::hash::Hash256;
use crate::header::BlockHeader;
use crate::ledger::Ledger;
use crate::rules::{BlockError, ConsensusParams, check_block};
use crate::wire::MAX_LOCATOR_LEN;

/// Cap on remembered invalid block hashes (so a flood of bad blocks cannot grow memory).
const MAX_REMEMBERED_INVALID: usize = 10_000;

struct Entry {
    block: Arc<Block>,
    /// Work of the chain from genesis up to and including this block.
    chain_work: u128,
    /// Bytes of its encoding, worked out once: a block server sizes its replies by it.
    encoded_len: usize,
}

/// What adding a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainUpdate {
    /// Already in the tree; nothing changed.
    AlreadyKnown,
    /// Stored on a branch with no more work than the tip; the tip is unchanged.
    SideBranch,
    /// The tip moved. `disconnected` (old tip first) left the best chain and `connected`
    /// (lowest first) joined it; a plain extension disconnects nothing.
    TipChanged {
        /// Blocks that left the best chain, highest first.
        disconnected: Vec<Arc<Block>>,
        /// Blocks that joined it, lowest first.
        connected: Vec<Arc<Block>>,
    },
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
    /// It breaks a rule.
    #[error("invalid block {hash}: {error}")]
    Invalid {
        /// The block's hash.
        hash: Hash256,
        /// The rule it breaks.
        error: BlockError,
    },
}

/// Every valid block seen, the best (most-work) chain and its ledger.
pub struct Chain {
    params: ConsensusParams,
    tree: HashMap<Hash256, Entry>,
    /// The best chain by height: `best[h]` is the hash at height `h`.
    best: Vec<Hash256>,
    ledger: Ledger,
    invalid: HashSet<Hash256>,
}

impl Chain {
    /// A chain holding only the genesis block.
    pub fn new(params: ConsensusParams) -> Chain {
        let genesis = genesis_block();
        let hash = genesis.hash();
        let mut tree = HashMap::new();
        tree.insert(
            hash,
            Entry {
                encoded_len: genesis.encode().len(),
                block: Arc::new(genesis),
                chain_work: 0,
            },
        );
        Chain {
            params,
            tree,
            best: vec![hash],
            ledger: Ledger::default(),
            invalid: HashSet::new(),
        }
    }

    /// The consensus parameters this chain enforces.
    pub fn params(&self) -> &ConsensusParams {
        &self.params
    }

    /// Hash of the best chain's tip.
    pub fn tip_hash(&self) -> Hash256 {
        *self
            .best
            .last()
            .expect("the best chain always holds genesis")
    }

    /// Height of the tip (genesis is 0).
    pub fn height(&self) -> u64 {
        (self.best.len() - 1) as u64
    }

    /// The tip's header.
    pub fn tip_header(&self) -> &BlockHeader {
        &self.tree[&self.tip_hash()].block.header
    }

    /// Cumulative work of the best chain.
    pub fn chain_work(&self) -> u128 {
        self.tree[&self.tip_hash()].chain_work
    }

    /// The ledger of the best chain.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The block at `height` on the best chain.
    pub fn block_at(&self, height: u64) -> Option<&Arc<Block>> {
        let hash = self.best.get(usize::try_from(height).ok()?)?;
        Some(&self.tree[hash].block)
    }

    /// Any block in the tree by hash.
    pub fn block(&self, hash: &Hash256) -> Option<&Arc<Block>> {
        self.tree.get(hash).map(|e| &e.block)
    }

    /// Whether the tree holds this block.
    pub fn contains(&self, hash: &Hash256) -> bool {
        self.tree.contains_key(hash)
    }

    /// Number of blocks in the tree, side branches included.
    pub fn tree_len(&self) -> usize {
        self.tree.len()
    }

    /// Whether `hash` is on the best chain.
    pub fn is_on_best_chain(&self, hash: &Hash256) -> bool {
        self.tree
            .get(hash)
            .is_some_and(|e| self.best.get(e.block.header.height as usize) == Some(hash))
    }

    /// A block locator of the best chain: the tip and the nine blocks below it, then hashes at
    /// doubling distances, ending with genesis. A peer finds the highest one it shares with us
    /// in one look, however long the two chains are.
    pub fn locator(&self) -> Vec<Hash256> {
        let mut out = Vec::new();
        let mut height = self.height();
        let mut step = 1;
        loop {
            out.push(self.best[height as usize]);
            if height == 0 || out.len() == MAX_LOCATOR_LEN - 1 {
                break;
            }
            if out.len() >= 10 {
                step *= 2;
            }
            height = height.saturating_sub(step);
        }
        if height != 0 {
            out.push(self.best[0]);
        }
        out
    }

    /// The best-chain blocks after the first `locator` hash that is on the best chain (after
    /// genesis if none is), lowest first: at most `max_blocks`, and no more once `max_bytes`
    /// of encoded blocks are taken (but at least one block when there is one).
    pub fn blocks_after(
        &self,
        locator: &[Hash256],
        max_blocks: usize,
        max_bytes: usize,
    ) -> Vec<Arc<Block>> {
        let fork = locator
            .iter()
            .find(|h| self.is_on_best_chain(h))
            .map_or(0, |h| self.tree[h].block.header.height as usize);
        let mut out = Vec::new();
        let mut bytes = 0;
        for hash in self.best.iter().skip(fork + 1).take(max_blocks) {
            let entry = &self.tree[hash];
            bytes += entry.encoded_len;
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(entry.block.clone());
        }
        out
    }

    /// Adds a block received from anywhere. `now` is our clock in Unix seconds.
    ///
    /// Every block kept in the tree is fully valid on its own branch: a block on a side branch
    /// is checked against that branch's ledger (by moving the ledger there and back), so a later
    /// switch to that branch cannot fail. The tip moves only to strictly more work, so of two
    /// equal chains the first seen stays.
    pub fn add_block(&mut self, block: Block, now: u64) -> Result<ChainUpdate, AddBlockError> {
        let hash = block.hash();
        if self.tree.contains_key(&hash) {
            return Ok(ChainUpdate::AlreadyKnown);
        }
        if self.invalid.contains(&hash) {
            return Err(AddBlockError::KnownInvalid(hash));
        }
        let parent_hash = block.header.prev_hash;
        let Some(parent) = self.tree.get(&parent_hash) else {
            return Err(AddBlockError::UnknownParent(parent_hash));
        };
        let chain_work = parent.chain_work.saturating_add(block.header.work());
        if let Err(error) = check_block(&block, &parent.block.header, &self.params, now) {
            return Err(self.reject(hash, error));
        }

        // Extending the tip is a branch of one block with nothing to undo; a block elsewhere is
        // judged against its own branch's ledger. Either way: move there, then keep the move
        // only if the new chain has strictly more work.
        let old_tip = self.tip_hash();
        self.tree.insert(
            hash,
            Entry {
                encoded_len: block.encode().len(),
                block: Arc::new(block),
                chain_work,
            },
        );
        let (disconnected, connected) = match self.move_tip_to(hash) {
            Ok(moved) => moved,
            Err(error) => {
                self.tree.remove(&hash);
                return Err(self.reject(hash, error));
            }
        };
        if chain_work > self.tree[&old_tip].chain_work {
            return Ok(ChainUpdate::TipChanged {
                disconnected,
                connected,
            });
        }
        // Not more work: go back. Every block on the old chain was valid there, so this holds.
        self.move_tip_to(old_tip)
            .expect("blocks of the previous best chain re-apply");
        Ok(ChainUpdate::SideBranch)
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
    /// point and applies `target`'s branch. On failure the chain is as before.
    #[allow(clippy::type_complexity)]
    fn move_tip_to(
        &mut self,
        target: Hash256,
    ) -> Result<(Vec<Arc<Block>>, Vec<Arc<Block>>), BlockError> {
        // The branch from the fork point (exclusive) up to target, lowest first.
        let mut branch = Vec::new();
        let mut cursor = target;
        loop {
            let block = &self.tree[&cursor].block;
            let height = block.header.height as usize;
            if self.best.get(height) == Some(&cursor) {
                break;
            }
            branch.push(block.clone());
            cursor = block.header.prev_hash;
        }
        branch.reverse();
        let fork_height = self.tree[&cursor].block.header.height as usize;

        let mut disconnected = Vec::new();
        while self.best.len() > fork_height + 1 {
            let hash = self.best.pop().expect("above the fork point");
            let block = self.tree[&hash].block.clone();
            self.ledger.undo_block(&block);
            disconnected.push(block);
        }
        for (applied, block) in branch.iter().enumerate() {
            if let Err(error) = self.ledger.apply_block(block) {
                for done in branch[..applied].iter().rev() {
                    self.ledger.undo_block(done);
                    self.best.pop();
                }
                for back in disconnected.iter().rev() {
                    self.ledger
                        .apply_block(back)
                        .expect("blocks of the previous best chain re-apply");
                    self.best.push(back.hash());
                }
                return Err(error);
            }
            self.best.push(block.hash());
        }
        Ok((disconnected, branch))
    }
}
