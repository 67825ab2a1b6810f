//! Adding blocks to the chain and its store.
//!
//! A block that joins the best chain is appended to the store at once, and from then on the
//! chain reads its body back from there; a side block stays in memory only, so a restart
//! never replays a branch that lost. A block the store holds already (it left the best chain
//! and came back) is not written again. When the store cannot take a
//! block (a full disk, a read-only directory) the tip move is taken back in memory, so the
//! best chain there never runs ahead of the store, and the caller gets [`ApplyError::Store`]
//! and must stop: the store holds every block before that one, and the next start continues
//! from there.

use std::sync::{Arc, RwLock};

use mvbc_protocol::store::{BlockStore, BodyAt, StoreError};
use mvbc_protocol::{AddBlockError, Block, Chain, ChainUpdate, Hash256};

pub use mvbc_protocol::chain::TipMove;

/// What became of one block.
#[derive(Clone, Debug, PartialEq)]
pub enum Added {
    /// Already in the tree.
    Known,
    /// New, on a side branch: the tip did not move.
    Side,
    /// New, and the tip moved; every connected block is in the store.
    Moved(TipMove),
}

/// Why a block could not be added.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ApplyError {
    /// The chain refused it.
    #[error("refused a block: {0}")]
    Refused(#[from] AddBlockError),
    /// The store could not take a block that joined the best chain. The chain in memory is
    /// ahead of the store from here on: stop building on it.
    #[error(
        "cannot write the chain store: {source}. The store is intact, with every block stored \
         before this one (up to height {height} at most); free space or fix the data \
         directory and start again"
    )]
    Store {
        /// The last height the store may hold.
        height: u64,
        /// What the store said.
        source: StoreError,
    },
}

/// Somewhere a chain lives: owned by one thread (`Chain`) or shared behind a lock with readers
/// such as a block server (`&RwLock<Chain>`, locked once per block).
pub trait ChainAccess {
    /// Runs `f` with the chain to change.
    fn with<R>(&mut self, f: impl FnOnce(&mut Chain) -> R) -> R;
}

impl ChainAccess for Chain {
    fn with<R>(&mut self, f: impl FnOnce(&mut Chain) -> R) -> R {
        f(self)
    }
}

impl ChainAccess for &RwLock<Chain> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Chain) -> R) -> R {
        // A panic while holding the lock leaves a chain in a consistent state (every change
        // is one `add_block`), so a poisoned lock is used as it is.
        let mut chain = self.write().unwrap_or_else(|e| e.into_inner());
        f(&mut chain)
    }
}

/// Where blocks that join the best chain go: the block store file, or anything standing in for
/// it (a simulation's memory).
pub trait BlockSink {
    /// Appends one block, durably before it returns, and says where it lies if the chain can
    /// read it back from there (a store file can; a simulation's memory need not).
    fn append(&mut self, block: &Block) -> Result<Option<BodyAt>, StoreError>;

    /// Appends one block of a batch: durable by the next [`BlockSink::sync`] at the latest.
    fn write(&mut self, block: &Block) -> Result<Option<BodyAt>, StoreError> {
        self.append(block)
    }

    /// Makes every block written so far durable.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The best chain's tip moved to `tip` (height and hash), every block that joined now
    /// stored: for indexes that follow the best chain. Called once per block added alone and
    /// once per batch.
    fn tip_moved(&mut self, moved: &TipMove, tip: (u64, Hash256)) {
        let _ = (moved, tip);
    }
}

impl BlockSink for BlockStore {
    fn append(&mut self, block: &Block) -> Result<Option<BodyAt>, StoreError> {
        BlockStore::append(self, block).map(Some)
    }

    fn write(&mut self, block: &Block) -> Result<Option<BodyAt>, StoreError> {
        BlockStore::write(self, block).map(Some)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        BlockStore::sync(self)
    }
}

/// Adds `block` (at Unix time `now`) and appends what joined the best chain to `store`.
pub fn add_block(
    chain: &mut impl ChainAccess,
    store: &mut impl BlockSink,
    block: Block,
    now: u64,
) -> Result<Added, ApplyError> {
    let added = add_one(chain, store, block, now, true)?;
    if let Added::Moved(moved) = &added {
        let tip = chain.with(|c| (c.height(), c.tip_hash()));
        store.tip_moved(moved, tip);
    }
    Ok(added)
}

/// [`add_block`] but for telling the sink of the tip's move; a block that is not `durable`
/// waits for the sink's next sync.
fn add_one(
    chain: &mut impl ChainAccess,
    store: &mut impl BlockSink,
    block: Block,
    now: u64,
    durable: bool,
) -> Result<Added, ApplyError> {
    let update = chain.with(|c| c.add_block(block, now))?;
    let (disconnected, connected) = match update {
        ChainUpdate::AlreadyKnown => return Ok(Added::Known),
        ChainUpdate::SideBranch => return Ok(Added::Side),
        ChainUpdate::TipChanged(TipMove {
            disconnected,
            connected,
        }) => (disconnected, connected),
    };
    // One look at the chain for what the store lacks, one to say where it went: the chain's
    // lock is taken twice a move, not twice a block.
    let unstored: Vec<(Hash256, &Arc<Block>)> = chain.with(|c| {
        connected
            .iter()
            .map(|b| (b.hash(), b))
            .filter(|(hash, _)| !c.is_stored(hash))
            .collect()
    });
    let mut stored = Vec::with_capacity(unstored.len());
    let mut failed = None;
    for (hash, block) in unstored {
        let appended = if durable {
            store.append(block)
        } else {
            store.write(block)
        };
        match appended {
            Ok(Some(at)) => stored.push((hash, at)),
            Ok(None) => {}
            Err(source) => {
                failed = Some((block.header.height.saturating_sub(1), source));
                break;
            }
        }
    }
    chain.with(|c| {
        for (hash, at) in &stored {
            c.stored(hash, *at);
        }
        if failed.is_some() {
            // The best chain in memory must not run ahead of the store: the move is taken
            // back (what was appended already is the store's, and the next start reads it).
            c.revert(&disconnected, &connected);
        }
    });
    if let Some((height, source)) = failed {
        return Err(ApplyError::Store { height, source });
    }
    Ok(Added::Moved(TipMove {
        disconnected,
        connected,
    }))
}

/// What a batch of blocks did.
#[derive(Debug, Default)]
pub struct Batch {
    /// Blocks the chain did not know before.
    pub new: u64,
    /// The tip's move over the whole batch.
    pub moved: TipMove,
    /// Why the batch stopped early, if it did: the blocks before it stay added.
    pub error: Option<ApplyError>,
}

/// Adds `blocks` in order with [`add_block`], stopping at the first that fails. The store
/// waits for the disk once for the whole batch (one fsync, not one a block); if that fails,
/// the batch's move is taken back and the error says so. The sink hears of the tip's move
/// over the whole batch once.
pub fn add_batch(
    chain: &mut impl ChainAccess,
    store: &mut impl BlockSink,
    blocks: impl IntoIterator<Item = Block>,
    now: u64,
) -> Batch {
    let mut batch = add_all(chain, store, blocks, now);
    if let Err(source) = store.sync() {
        let moved = std::mem::take(&mut batch.moved);
        chain.with(|c| c.revert(&moved.disconnected, &moved.connected));
        let height = moved
            .connected
            .first()
            .map_or(0, |b| b.header.height.saturating_sub(1));
        batch.error = Some(ApplyError::Store { height, source });
        return batch;
    }
    if !batch.moved.is_empty() {
        let tip = chain.with(|c| (c.height(), c.tip_hash()));
        store.tip_moved(&batch.moved, tip);
    }
    batch
}

fn add_all(
    chain: &mut impl ChainAccess,
    store: &mut impl BlockSink,
    blocks: impl IntoIterator<Item = Block>,
    now: u64,
) -> Batch {
    let mut batch = Batch::default();
    for block in blocks {
        match add_one(chain, store, block, now, false) {
            Ok(Added::Known) => {}
            Ok(Added::Side) => batch.new += 1,
            Ok(Added::Moved(moved)) => {
                batch.new += 1;
                batch.moved.then(moved);
            }
            Err(e) => {
                batch.error = Some(e);
                break;
            }
        }
    }
    batch
}
