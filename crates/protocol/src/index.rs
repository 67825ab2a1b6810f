//! Indexes of the best chain in an embedded database (`redb`, ADR 14): where each transaction
//! is, and each address's transactions in order, so the API answers a lookup by reading one
//! or a few blocks instead of scanning the chain.
//!
//! ```text
//! txs        transaction id            -> (height, position in its block)
//! history    (address, n)              -> (height, position)   n = 0, 1, ... per address
//! counts     address                   -> how many history rows it has
//! meta       "version", "network"      -> what the index was built for
//!            "tip"                     -> (height, hash) of the last block indexed
//! ```
//!
//! The index follows the best chain: blocks that join are added, blocks that leave are taken
//! out (an address's rows are a stack, so a reorg pops its newest). It is a cache of the store:
//! commits are made without waiting for the disk except about once a second, so a crash may
//! cost the last second, and the next start indexes what the index lacks from the chain. An
//! index of another version or network, or one that cannot be read, is rebuilt from the chain.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::block::{Block, MAX_BLOCK_TXS, MerklePath};
use crate::chain::Chain;
use crate::hash::Hash256;
use crate::keys::Address;
use crate::light::{HISTORY_REPLY_BYTES, ProvenTx};
use crate::rules::NetworkId;
use crate::store::StoreError;
use crate::tx::Transaction;

/// The index's file in a node's data directory.
pub const INDEX_FILE: &str = "index.redb";
/// The layout of the tables: an index of another version is rebuilt.
const VERSION: u64 = 1;
/// The database's page cache.
const CACHE_BYTES: usize = 8 << 20;
/// At most this long between commits the disk holds.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

const TXS: TableDefinition<[u8; 32], (u64, u32)> = TableDefinition::new("txs");
const HISTORY: TableDefinition<([u8; 32], u64), (u64, u32)> = TableDefinition::new("history");
const COUNTS: TableDefinition<[u8; 32], u64> = TableDefinition::new("counts");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Where a transaction is in the best chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The block's height.
    pub height: u64,
    /// The transaction's position in the block (the reward is 0).
    pub position: u32,
}

/// What went wrong with the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The database failed.
    #[error("{}: {source}", path.display())]
    Database {
        /// The index file.
        path: PathBuf,
        /// What the database said.
        source: Box<redb::Error>,
    },
    /// A block to index could not be read from the chain's store.
    #[error("a block to index could not be read: {0}")]
    Store(#[from] StoreError),
    /// The index names a transaction the best chain lacks: it is out of step with the chain.
    #[error("the index names transaction {position} of block {height}, which the best chain lacks")]
    Stale {
        /// The block's height.
        height: u64,
        /// The transaction's position.
        position: u32,
    },
}

/// How opening found the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// As the last run left it.
    Kept,
    /// Made anew, and why.
    Rebuilt(String),
}

/// The indexes of one node's best chain; shared by the thread that moves the tip and those
/// that answer lookups.
pub struct Index {
    db: Database,
    path: PathBuf,
    last_durable: Mutex<Instant>,
    /// Set when a change could not be made: the index no longer follows the chain.
    failed: AtomicBool,
}

impl Index {
    /// Opens the index at `path` for the chain of `network`, or makes it anew when it is
    /// missing, damaged, of another version or of another network ([`Opened`] says which).
    /// `reindex` makes it anew in any case.
    pub fn open(
        path: &Path,
        network: NetworkId,
        reindex: bool,
    ) -> Result<(Index, Opened), IndexError> {
        let fresh = |why: String| -> Result<(Index, Opened), IndexError> {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(index_error(path, redb::Error::Io(e))),
            }
            let index = Index::create(path, network)?;
            Ok((index, Opened::Rebuilt(why)))
        };
        if reindex {
            return fresh("--reindex".into());
        }
        if !path.exists() {
            return fresh("there was none".into());
        }
        let index = match open_database(path) {
            Ok(db) => Index::on(db, path),
            Err(e @ redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(index_error(path, e.into()));
            }
            Err(e) => return fresh(format!("it could not be opened ({e})")),
        };
        match index.made_for(network) {
            Ok(()) => Ok((index, Opened::Kept)),
            Err(why) => {
                drop(index);
                fresh(why)
            }
        }
    }

    fn on(db: Database, path: &Path) -> Index {
        Index {
            db,
            path: path.to_owned(),
            last_durable: Mutex::new(Instant::now()),
            failed: AtomicBool::new(false),
        }
    }

    /// Whether the index is one of this version for `network`; if not, why not.
    fn made_for(&self, network: NetworkId) -> Result<(), String> {
        match self.meta_u64("version") {
            Ok(Some(VERSION)) => {}
            Ok(Some(v)) => {
                return Err(format!("it was of version {v}, this mvbc writes {VERSION}"));
            }
            Ok(None) => return Err("it was incomplete".into()),
            Err(e) => return Err(format!("it could not be read ({e})")),
        }
        match self.meta_bytes("network") {
            Ok(Some(id)) if id == network.0 => Ok(()),
            _ => Err("it was made for another network".into()),
        }
    }

    fn create(path: &Path, network: NetworkId) -> Result<Index, IndexError> {
        let db = open_database(path).map_err(|e| index_error(path, e.into()))?;
        let index = Index::on(db, path);
        index.write(Durability::Immediate, |tx| {
            tx.open_table(TXS)?;
            tx.open_table(HISTORY)?;
            tx.open_table(COUNTS)?;
            let mut meta = tx.open_table(META)?;
            meta.insert("network", network.0.as_slice())?;
            meta.insert("version", VERSION.to_le_bytes().as_slice())?;
            Ok(())
        })?;
        Ok(index)
    }

    fn err(&self, e: impl Into<redb::Error>) -> IndexError {
        index_error(&self.path, e.into())
    }

    fn meta_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.err(e))?;
        let value = meta.get(key).map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>, IndexError> {
        Ok(self
            .meta_bytes(key)?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes))
    }

    /// The last block indexed: its height and hash (`None` before the first).
    pub fn tip(&self) -> Result<Option<(u64, Hash256)>, IndexError> {
        Ok(self.meta_bytes("tip")?.and_then(|b| {
            let (height, hash) = b.split_at_checked(8)?;
            Some((
                u64::from_le_bytes(height.try_into().ok()?),
                Hash256(hash.try_into().ok()?),
            ))
        }))
    }

    /// Runs `f` in one write transaction and commits it.
    fn write(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), IndexError> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(durability).map_err(|e| self.err(e))?;
        // A commit the disk holds also holds the allocator's state, so opening after a crash
        // does not walk the whole database to rebuild it.
        tx.set_quick_repair(matches!(durability, Durability::Immediate));
        f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Whether the index follows the chain: no change to it has failed.
    pub fn is_current(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }

    /// Takes `disconnected` (highest first) out of the index and adds `connected` (lowest
    /// first): one move of the best chain's tip to `tip`. When it fails, the index stops
    /// claiming to follow the chain ([`Index::is_current`]).
    pub fn apply(
        &self,
        disconnected: &[Arc<Block>],
        connected: &[Arc<Block>],
        tip: (u64, Hash256),
    ) -> Result<(), IndexError> {
        let durability = {
            let mut last = self.last_durable.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= DURABLE_EVERY {
                *last = Instant::now();
                Durability::Immediate
            } else {
                Durability::None
            }
        };
        let written = self.write(durability, |tx| {
            let mut tables = Tables {
                txs: tx.open_table(TXS)?,
                history: tx.open_table(HISTORY)?,
                counts: tx.open_table(COUNTS)?,
            };
            for block in disconnected {
                tables.undo(block)?;
            }
            for block in connected {
                tables.add(block)?;
            }
            let mut meta = tx.open_table(META)?;
            let mut value = tip.0.to_le_bytes().to_vec();
            value.extend_from_slice(&tip.1.0);
            meta.insert("tip", value.as_slice())?;
            Ok(())
        });
        if written.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        written
    }

    /// Commits whatever is not yet on disk (at a clean stop).
    pub fn flush(&self) -> Result<(), IndexError> {
        self.write(Durability::Immediate, |_| Ok(()))
    }

    /// Brings the index to `chain`'s best chain: takes out blocks of a branch the chain left
    /// and adds the blocks it lacks, `batch` blocks a commit, calling `progress(done, total)`
    /// after each. A branch whose blocks the chain no longer holds means starting over.
    /// Returns how many blocks were added.
    pub fn catch_up(
        &self,
        chain: &Chain,
        batch: usize,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, IndexError> {
        let mut undo = Vec::new();
        let mut from = 1;
        if let Some((height, mut hash)) = self.tip()? {
            from = height + 1;
            while !chain.is_on_best_chain(&hash) {
                let Some(block) = chain.block(&hash).ok().flatten() else {
                    // The branch is gone: everything is indexed again.
                    self.clear()?;
                    undo.clear();
                    from = 1;
                    break;
                };
                hash = block.header.prev_hash;
                from = block.header.height;
                undo.push(block);
            }
        }
        let total = (chain.height() + 1).saturating_sub(from);
        let mut done = 0;
        let mut height = from;
        loop {
            let mut blocks = Vec::with_capacity(batch);
            while height <= chain.height() && blocks.len() < batch {
                let block = chain.block_at(height)?.expect("a height of the best chain");
                blocks.push(block);
                height += 1;
            }
            if blocks.is_empty() && undo.is_empty() {
                return Ok(done);
            }
            let top = height - 1;
            let tip = (top, chain.hash_at(top).expect("a height of the best chain"));
            self.apply(&undo, &blocks, tip)?;
            undo.clear();
            done += blocks.len() as u64;
            progress(done, total);
        }
    }

    /// Empties every table but the version and the network.
    fn clear(&self) -> Result<(), IndexError> {
        self.write(Durability::Immediate, |tx| {
            tx.delete_table(TXS)?;
            tx.delete_table(HISTORY)?;
            tx.delete_table(COUNTS)?;
            tx.open_table(META)?.remove("tip")?;
            Ok(())
        })
    }

    /// Where transaction `id` is in the best chain, as far as the index knows.
    pub fn transaction(&self, id: &Hash256) -> Result<Option<Place>, IndexError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let txs = tx.open_table(TXS).map_err(|e| self.err(e))?;
        let place = txs.get(id.0).map_err(|e| self.err(e))?;
        Ok(place.map(|p| {
            let (height, position) = p.value();
            Place { height, position }
        }))
    }

    /// How many transactions touch `address`, and where those of one page are: newest first,
    /// after skipping `offset`, at most `limit`.
    pub fn history(
        &self,
        address: &Address,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Place>), IndexError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let counts = tx.open_table(COUNTS).map_err(|e| self.err(e))?;
        let total = counts
            .get(address.0.0)
            .map_err(|e| self.err(e))?
            .map_or(0, |c| c.value());
        let end = total.saturating_sub(offset);
        let start = end.saturating_sub(limit);
        let history = tx.open_table(HISTORY).map_err(|e| self.err(e))?;
        let mut places = Vec::new();
        if start < end {
            let rows = history
                .range((address.0.0, start)..(address.0.0, end))
                .map_err(|e| self.err(e))?;
            for row in rows.rev() {
                let (height, position) = row.map_err(|e| self.err(e))?.1.value();
                places.push(Place { height, position });
            }
        }
        Ok((total, places))
    }
}

/// One page of proven history: what a block server answers a light wallet
/// ([`crate::wire::Reply::History`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// Complete through this height.
    pub through: u64,
    /// The transactions, by height and position.
    pub entries: Vec<ProvenTx>,
}

impl Index {
    /// The page of `addresses`' history in `chain`'s best chain from height `from` on, up to
    /// block `until` at most, each transaction with its merkle path: whole blocks, lowest
    /// first, until a block passes [`MAX_BLOCK_TXS`] transactions or [`HISTORY_REPLY_BYTES`]
    /// bytes. `None` when the best chain does not hold `until`. While the index is not on the
    /// best chain (the tip is moving), or behind it, the page ends where the index does.
    pub fn proven_history(
        &self,
        chain: &Chain,
        addresses: &[Address],
        from: u64,
        until: &Hash256,
    ) -> Result<Option<HistoryPage>, IndexError> {
        let Some(until_height) = chain.header(until).map(|h| h.height) else {
            return Ok(None);
        };
        if !chain.is_on_best_chain(until) {
            return Ok(None);
        }
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.err(e))?;
        let indexed = meta.get("tip").map_err(|e| self.err(e))?.and_then(|v| {
            let (height, hash) = v.value().split_at_checked(8)?;
            Some((
                u64::from_le_bytes(height.try_into().ok()?),
                Hash256(hash.try_into().ok()?),
            ))
        });
        let stalled = HistoryPage {
            through: from.saturating_sub(1),
            entries: Vec::new(),
        };
        let Some((indexed, indexed_hash)) = indexed else {
            return Ok(Some(stalled));
        };
        if chain.hash_at(indexed) != Some(indexed_hash) {
            return Ok(Some(stalled));
        }
        let mut limit = indexed.min(until_height);
        let counts = tx.open_table(COUNTS).map_err(|e| self.err(e))?;
        let history = tx.open_table(HISTORY).map_err(|e| self.err(e))?;
        let mut places = Vec::new();
        for address in addresses {
            let key = address.0.0;
            let total = counts
                .get(key)
                .map_err(|e| self.err(e))?
                .map_or(0, |c| c.value());
            // The first row at `from` or above: rows are numbered in chain order.
            let (mut lo, mut hi) = (0u64, total);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let height = history
                    .get((key, mid))
                    .map_err(|e| self.err(e))?
                    .map_or(u64::MAX, |v| v.value().0);
                if height < from {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            // At most one block more than a page takes: a block holds at most MAX_BLOCK_TXS.
            let end = total.min(lo + MAX_BLOCK_TXS as u64 + 1);
            let mut last = None;
            for row in history
                .range((key, lo)..(key, end))
                .map_err(|e| self.err(e))?
            {
                let (height, position) = row.map_err(|e| self.err(e))?.1.value();
                places.push((height, position));
                last = Some(height);
            }
            // Rows left unread: the page is complete only below the last block read.
            if end < total
                && let Some(last) = last
            {
                limit = limit.min(last.saturating_sub(1));
            }
        }
        places.retain(|&(height, _)| height <= limit);
        places.sort_unstable();
        places.dedup();
        let mut page = HistoryPage {
            through: limit,
            entries: Vec::new(),
        };
        let mut bytes = 0;
        let mut at = 0;
        while at < places.len() {
            let height = places[at].0;
            let stale = |position| IndexError::Stale { height, position };
            let block = chain.block_at(height)?.ok_or(stale(0))?;
            let ids: Vec<Hash256> = block.transactions.iter().map(Transaction::id).collect();
            let hash = block.hash();
            while let Some(&(h, position)) = places.get(at)
                && h == height
            {
                let (Some(tx), Some(path)) = (
                    block.transactions.get(position as usize),
                    MerklePath::of(&ids, position as usize),
                ) else {
                    return Err(stale(position));
                };
                bytes += tx.encode().len();
                page.entries.push(ProvenTx {
                    height,
                    block: hash,
                    tx: tx.clone(),
                    path,
                });
                at += 1;
            }
            if at < places.len()
                && (page.entries.len() >= MAX_BLOCK_TXS || bytes >= HISTORY_REPLY_BYTES)
            {
                page.through = height;
                break;
            }
        }
        Ok(Some(page))
    }
}

/// Opens or creates the database with a small cache: the index is read a few pages a lookup,
/// and redb's default cache (1 GiB) would grow the node by what it ever read.
fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

fn index_error(path: &Path, source: redb::Error) -> IndexError {
    IndexError::Database {
        path: path.to_owned(),
        source: Box::new(source),
    }
}

/// The tables one write changes.
struct Tables<'t> {
    txs: redb::Table<'t, [u8; 32], (u64, u32)>,
    history: redb::Table<'t, ([u8; 32], u64), (u64, u32)>,
    counts: redb::Table<'t, [u8; 32], u64>,
}

impl Tables<'_> {
    fn add(&mut self, block: &Block) -> Result<(), redb::Error> {
        let height = block.header.height;
        for (position, tx) in block.transactions.iter().enumerate() {
            let place = (height, position as u32);
            self.txs.insert(tx.id().0, place)?;
            for address in touched(tx) {
                let n = self.counts.get(address.0.0)?.map_or(0, |c| c.value());
                self.history.insert((address.0.0, n), place)?;
                self.counts.insert(address.0.0, n + 1)?;
            }
        }
        Ok(())
    }

    fn undo(&mut self, block: &Block) -> Result<(), redb::Error> {
        for tx in block.transactions.iter().rev() {
            self.txs.remove(tx.id().0)?;
            for address in touched(tx) {
                let n = self.counts.get(address.0.0)?.map_or(0, |c| c.value());
                if n == 0 {
                    continue;
                }
                self.history.remove((address.0.0, n - 1))?;
                if n == 1 {
                    self.counts.remove(address.0.0)?;
                } else {
                    self.counts.insert(address.0.0, n - 1)?;
                }
            }
        }
        Ok(())
    }
}

/// The addresses a transaction touches, each once.
fn touched(tx: &Transaction) -> impl Iterator<Item = Address> {
    let (first, second) = match tx {
        Transaction::Reward(r) => (r.to, None),
        Transaction::Payment(p) => (p.from, (p.to != p.from).then_some(p.to)),
    };
    std::iter::once(first).chain(second)
}
