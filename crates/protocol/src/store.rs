//! The block store: one append-only file of checksummed, length-prefixed block records.
//!
//! ```text
//! file   = "MVBCBLK1" record*
//! record = len:u32 LE | crc32(payload):u32 LE | payload (the block's canonical encoding)
//! ```
//!
//! Each append is one write followed by `fsync`, so a crash can only leave a torn last record.
//! Opening reads and verifies every record and truncates at the first one that is torn or
//! corrupt, saying so: an earlier block is never lost and the store always loads. The open
//! store holds an exclusive lock on the file, so a second process is refused.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block::{Block, MAX_BLOCK_BYTES};
use crate::chain::{AddBlockError, Chain};
use crate::encode::DecodeError;
use crate::hash::Hash256;
use crate::rules::ConsensusParams;

/// The first bytes of every store file. The digit is the rules generation: a store of another
/// generation holds blocks these rules refuse, and is left as it is.
pub const STORE_MAGIC: &[u8; 8] = b"MVBCBLK2";
/// The magic of stores written under header version 1 (proof of work at the digest's start).
const OLDER_STORE_MAGIC: &[u8; 8] = b"MVBCBLK1";
const RECORD_HEADER_LEN: usize = 8;

/// What went wrong with the store.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store.
    #[error("{0} is in use by another process (is another node running on this data directory?)")]
    Locked(PathBuf),
    /// The file is not a block store.
    #[error("{0} is not an mvbc block store (bad magic)")]
    NotAStore(PathBuf),
    /// The file holds a chain under an older mvbc's rules, which these rules refuse.
    #[error(
        "{0} holds a chain of an older mvbc (proof of work counted from the digest's first byte); \
         it was left as it is: move it away, or use another data directory, to start a new chain"
    )]
    OlderRules(PathBuf),
    /// An I/O error, with the file.
    #[error("{path}: {source}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// The error.
        source: Arc<io::Error>,
    },
}

/// What opening found at the end of the file and cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes kept.
    pub kept_bytes: u64,
    /// Bytes cut off.
    pub dropped_bytes: u64,
    /// Why the first dropped record was refused.
    pub reason: Damage,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kept {} bytes, cut {} bytes of a torn or corrupt tail ({})",
            self.kept_bytes, self.dropped_bytes, self.reason
        )
    }
}

/// An open store and what it held.
pub struct Opened {
    /// The store, ready for appends.
    pub store: BlockStore,
    /// Every intact block, in the order appended.
    pub blocks: Vec<Block>,
    /// Set when a torn or corrupt tail was cut off.
    pub recovery: Option<Recovery>,
}

/// An open, locked block store.
pub struct BlockStore {
    file: File,
    path: PathBuf,
    /// Bytes of intact records: where the next append starts.
    len: u64,
    /// Set when a failed append could not be undone: no further append is made.
    broken: bool,
    /// Every block in the file, so appending one again writes nothing.
    stored: HashSet<Hash256>,
}

impl BlockStore {
    /// Opens (creating if needed) and verifies the store at `path`.
    pub fn open(path: &Path) -> Result<Opened, StoreError> {
        let io_err = |source| StoreError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked(path.to_owned())),
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let file_len = file.metadata().map_err(io_err)?.len();
        let Scan {
            blocks,
            kept,
            damage,
        } = read_records(&mut file, path, file_len)?;
        let recovery = damage.map(|reason| Recovery {
            kept_bytes: kept,
            dropped_bytes: file_len - kept,
            reason,
        });
        if kept < STORE_MAGIC.len() as u64 {
            // New, or torn while being created: start it afresh.
            file.set_len(0).map_err(io_err)?;
            file.seek(SeekFrom::Start(0)).map_err(io_err)?;
            file.write_all(STORE_MAGIC).map_err(io_err)?;
        } else if kept < file_len {
            file.set_len(kept).map_err(io_err)?;
        }
        file.sync_all().map_err(io_err)?;
        let len = file.seek(SeekFrom::End(0)).map_err(io_err)?;
        let stored = blocks.iter().map(Block::hash).collect();
        Ok(Opened {
            store: BlockStore {
                file,
                path: path.to_owned(),
                len,
                broken: false,
                stored,
            },
            blocks,
            recovery,
        })
    }

    /// Appends one block and syncs it to disk before returning; a block already in the store
    /// is not written again. If the write fails (a full disk), the partial record is cut off
    /// again, so the store stays a run of intact records that later appends can follow; if
    /// even that fails, the store refuses further appends.
    pub fn append(&mut self, block: &Block) -> Result<(), StoreError> {
        let hash = block.hash();
        if self.stored.contains(&hash) {
            return Ok(());
        }
        if self.broken {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: Arc::new(io::Error::other(
                    "an earlier failed append could not be undone",
                )),
            });
        }
        let payload = block.encode();
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let io_err = |source| StoreError::Io {
            path: self.path.clone(),
            source: Arc::new(source),
        };
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let undone = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()))
                .and_then(|()| self.file.sync_data());
            self.broken = undone.is_err();
            return Err(io_err(e));
        }
        self.len += record.len() as u64;
        self.stored.insert(hash);
        Ok(())
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why a store's bytes stop being intact records at some point (a crash while appending, or
/// damage): everything from there on is cut off when the store opens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// Fewer bytes than the magic.
    #[error("torn store header")]
    TornHeader,
    /// Fewer bytes than a record header.
    #[error("torn record header at byte {at}")]
    TornRecordHeader {
        /// Where the record starts.
        at: u64,
    },
    /// A record longer than any block may be.
    #[error("record at byte {at} declares {len} bytes")]
    Oversized {
        /// Where the record starts.
        at: u64,
        /// The length it declares.
        len: usize,
    },
    /// Fewer bytes than the record declares.
    #[error("torn record at byte {at}")]
    TornRecord {
        /// Where the record starts.
        at: u64,
    },
    /// The bytes do not match the record's CRC-32.
    #[error("checksum mismatch in record at byte {at}")]
    Checksum {
        /// Where the record starts.
        at: u64,
    },
    /// The checksum matches but the bytes are not a block.
    #[error("record at byte {at}: {error}")]
    NotABlock {
        /// Where the record starts.
        at: u64,
        /// What decoding said.
        error: DecodeError,
    },
}

/// What a store's bytes hold.
#[derive(Debug)]
pub struct Scan {
    /// Every intact block, in order.
    pub blocks: Vec<Block>,
    /// Length of the intact prefix.
    pub kept: u64,
    /// If the bytes go on past it, why the rest was refused.
    pub damage: Option<Damage>,
}

/// Checks a whole store image held in memory exactly as opening a store file does. Nothing is
/// written; for tools, tests and fuzzing.
pub fn scan(bytes: &[u8]) -> Result<Scan, StoreError> {
    scan_records(bytes, Path::new("<memory>"), bytes.len() as u64)
}

/// Reads every intact record of the file from its start.
fn read_records(file: &mut File, path: &Path, file_len: u64) -> Result<Scan, StoreError> {
    file.seek(SeekFrom::Start(0))
        .map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        })?;
    scan_records(BufReader::new(file), path, file_len)
}

/// Reads every intact record of `file_len` bytes from `reader`.
fn scan_records(mut reader: impl Read, path: &Path, file_len: u64) -> Result<Scan, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    let mut magic = [0u8; 8];
    if file_len < STORE_MAGIC.len() as u64 {
        let damage = (file_len > 0).then_some(Damage::TornHeader);
        return Ok(Scan {
            blocks: Vec::new(),
            kept: 0,
            damage,
        });
    }
    reader.read_exact(&mut magic).map_err(io_err)?;
    if &magic == OLDER_STORE_MAGIC {
        return Err(StoreError::OlderRules(path.to_owned()));
    }
    if &magic != STORE_MAGIC {
        return Err(StoreError::NotAStore(path.to_owned()));
    }
    let mut pos = STORE_MAGIC.len() as u64;
    let mut blocks = Vec::new();
    let cut = |blocks, at, damage| {
        Ok(Scan {
            blocks,
            kept: at,
            damage: Some(damage),
        })
    };
    while pos < file_len {
        let remaining = file_len - pos;
        if remaining < RECORD_HEADER_LEN as u64 {
            return cut(blocks, pos, Damage::TornRecordHeader { at: pos });
        }
        let mut head = [0u8; RECORD_HEADER_LEN];
        reader.read_exact(&mut head).map_err(io_err)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_BLOCK_BYTES {
            return cut(blocks, pos, Damage::Oversized { at: pos, len });
        }
        if (len as u64) > remaining - RECORD_HEADER_LEN as u64 {
            return cut(blocks, pos, Damage::TornRecord { at: pos });
        }
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload).map_err(io_err)?;
        if crc32fast::hash(&payload) != crc {
            return cut(blocks, pos, Damage::Checksum { at: pos });
        }
        match Block::decode(&payload) {
            Ok(block) => blocks.push(block),
            Err(error) => return cut(blocks, pos, Damage::NotABlock { at: pos, error }),
        }
        pos += (RECORD_HEADER_LEN + len) as u64;
    }
    Ok(Scan {
        blocks,
        kept: pos,
        damage: None,
    })
}

/// A chain loaded from its store, with what loading found.
pub struct LoadedChain {
    /// The store, locked and ready for appends.
    pub store: BlockStore,
    /// The chain the stored blocks add up to.
    pub chain: Chain,
    /// Set when a torn or corrupt tail was cut off.
    pub recovery: Option<Recovery>,
    /// Stored blocks the rules now refuse, with the reason.
    pub refused: Vec<AddBlockError>,
}

/// Opens the store at `path` and rebuilds its chain: what every node and wallet does at start.
pub fn load_chain(
    path: &Path,
    params: ConsensusParams,
    now: u64,
) -> Result<LoadedChain, StoreError> {
    let Opened {
        store,
        blocks,
        recovery,
    } = BlockStore::open(path)?;
    let (chain, refused) = rebuild_chain(params, blocks, now);
    Ok(LoadedChain {
        store,
        chain,
        recovery,
        refused,
    })
}

/// Reads the chain in the store at `path` without locking or repairing it, for a process that
/// only looks (a wallet listing balances while its `sync` runs). A missing file is an empty
/// chain; a torn tail, as a writer may be appending, is left out.
pub fn read_only_chain(
    path: &Path,
    params: ConsensusParams,
    now: u64,
) -> Result<(Chain, Vec<AddBlockError>), StoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((Chain::new(params), Vec::new()));
        }
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source: Arc::new(source),
            });
        }
    };
    let file_len = file
        .metadata()
        .map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        })?
        .len();
    let blocks = read_records(&mut file, path, file_len)?.blocks;
    Ok(rebuild_chain(params, blocks, now))
}

/// Rebuilds a chain from stored blocks (parents are always stored before children). Blocks the
/// rules now refuse (for example after a consensus parameter changed) are skipped and returned
/// with the reason.
pub fn rebuild_chain(
    params: ConsensusParams,
    blocks: Vec<Block>,
    now: u64,
) -> (Chain, Vec<AddBlockError>) {
    let mut chain = Chain::new(params);
    let mut refused = Vec::new();
    for block in blocks {
        if let Err(e) = chain.add_block(block, now) {
            refused.push(e);
        }
    }
    (chain, refused)
}
