//! Where a node keeps its chain: the block store, and the index that follows its best chain
//! (`mvbc_protocol::index`). The store is the truth; the index is a cache of it that the API
//! reads, so an index that fails is set aside (lookups then scan the chain) and the node goes
//! on, while a store that fails stops the node.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mvbc_node::apply::{BlockSink, TipMove};
use mvbc_protocol::index::{INDEX_FILE, Index, Opened};
use mvbc_protocol::store::{BlockStore, BodyAt, StoreError};
use mvbc_protocol::{Block, Chain, Hash256};

/// The block store and the index beside it.
pub struct Storage {
    store: BlockStore,
    index: Option<Arc<Index>>,
}

impl Storage {
    /// The store, and the index if there is one.
    pub fn new(store: BlockStore, index: Option<Arc<Index>>) -> Storage {
        Storage { store, index }
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        self.store.path()
    }
}

impl BlockSink for Storage {
    fn append(&mut self, block: &Block) -> Result<Option<BodyAt>, StoreError> {
        self.store.append(block).map(Some)
    }

    fn write(&mut self, block: &Block) -> Result<Option<BodyAt>, StoreError> {
        self.store.write(block).map(Some)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.store.sync()
    }

    fn tip_moved(&mut self, moved: &TipMove, tip: (u64, Hash256)) {
        // An index whose change failed says so itself, and is left alone from then on.
        let Some(index) = self.index.as_deref().filter(|i| i.is_current()) else {
            return;
        };
        if let Err(e) = index.apply(&moved.disconnected, &moved.connected, tip) {
            tracing::warn!(
                "the index stopped following the chain ({e}); lookups scan the chain until the \
                 next start brings the index up to date"
            );
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(index) = self.index.as_deref().filter(|i| i.is_current())
            && let Err(e) = index.flush()
        {
            tracing::warn!(
                "the index's last changes were not written ({e}); the next start adds them"
            );
        }
    }
}

/// Opens the index in `dir` for `chain` and brings it up to the chain's tip, saying what it
/// did through `say` (a progress line every 5 s while it indexes). An index that cannot be
/// had is said and left out: the node runs without it, and lookups scan the chain.
pub fn open_index(
    dir: &Path,
    chain: &Chain,
    reindex: bool,
    mut say: impl FnMut(String),
) -> Option<Arc<Index>> {
    let path = dir.join(INDEX_FILE);
    let (index, opened) = match Index::open(&path, chain.network_id(), reindex) {
        Ok(opened) => opened,
        Err(e) => {
            say(format!("Index: not used ({e}); lookups scan the chain"));
            return None;
        }
    };
    if let Opened::Rebuilt(why) = opened {
        say(format!("Index: made anew ({why})"));
    }
    let started = Instant::now();
    let mut told = started;
    let indexed = index.catch_up(chain, INDEX_BATCH, |done, total| {
        if told.elapsed() >= PROGRESS_EVERY {
            told = Instant::now();
            say(format!("Indexing: {done}/{total} blocks"));
        }
    });
    match indexed {
        Ok(0) => {}
        Ok(n) => say(format!(
            "Indexed {n} block(s) in {:.1} s",
            started.elapsed().as_secs_f64()
        )),
        Err(e) => {
            say(format!("Index: not used ({e}); lookups scan the chain"));
            return None;
        }
    }
    Some(Arc::new(index))
}

/// Blocks indexed per commit while catching up.
const INDEX_BATCH: usize = 2_000;
/// How often catching up says how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
