//! The block store: one append-only file of checksummed, length-prefixed block records.
//!
//! ```text
//! file   = "MVBCBLK3" header record*
//! header = 52:u32 LE | crc32(params):u32 LE | params (`ConsensusParams::to_bytes`: genesis's
//!          hash, difficulty, block_size, block_reward)
//! record = len:u32 LE | crc32(payload):u32 LE | payload (the block's canonical encoding)
//! ```
//!
//! The header says which network the chain belongs to: opening the store under other
//! parameters is refused before a byte is written, naming what differs (ADR 13). A store of the
//! previous format (`MVBCBLK2`, no header) is upgraded on open, once its first blocks are shown
//! to follow the parameters it is opened with.
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
use crate::rules::{ConsensusParams, PARAMS_BYTES};

/// The first bytes of every store file. The digit is the rules generation: a store of another
/// generation holds blocks these rules refuse, and is left as it is.
pub const STORE_MAGIC: &[u8; 8] = b"MVBCBLK3";
/// The magic of stores of these rules written before stores had a header: upgraded on open.
pub const UNLABELLED_STORE_MAGIC: &[u8; 8] = b"MVBCBLK2";
/// The magic of stores written under header version 1 (proof of work at the digest's start).
const OLDER_STORE_MAGIC: &[u8; 8] = b"MVBCBLK1";
const RECORD_HEADER_LEN: usize = 8;
/// Where the first block record of a labelled store starts.
const FIRST_RECORD_AT: u64 = (STORE_MAGIC.len() + RECORD_HEADER_LEN + PARAMS_BYTES) as u64;
/// How many of an unlabelled store's first blocks are checked before it is labelled: a
/// difficulty, block size or reward other than the config's shows by block 2.
const UNLABELLED_BLOCKS_CHECKED: usize = 16;

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
    /// The store's chain was made under other consensus parameters than the config's.
    #[error(
        "{} holds a chain of {}; the config says {}. It was left as it is: start with the \
         settings it was made with, or use another data directory for a new chain",
        path.display(), .differs.0.join(", "), .differs.1.join(", ")
    )]
    OtherNetwork {
        /// The store file.
        path: PathBuf,
        /// What differs: the store's values, then the config's.
        differs: (Vec<String>, Vec<String>),
    },
    /// A store without a header whose first blocks these parameters refuse.
    #[error(
        "{} holds blocks these settings refuse ({error}); it was most likely made with another \
         difficulty, block_size or block_reward. It was left as it is: start with the settings \
         it was made with, or use another data directory for a new chain",
        path.display()
    )]
    UnlabelledRefused {
        /// The store file.
        path: PathBuf,
        /// Why the first refused block was refused.
        error: Box<AddBlockError>,
    },
    /// The header is damaged: which network the chain belongs to cannot be told.
    #[error("{0}: the store's header is damaged; it was left as it is")]
    BadHeader(PathBuf),
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
    /// Opens (creating if needed) and verifies the store at `path`, whose chain must belong to
    /// the network of `params`. A store of other parameters is refused before anything is
    /// written; an unlabelled one (the previous format) is labelled once its first blocks pass.
    pub fn open(path: &Path, params: &ConsensusParams) -> Result<Opened, StoreError> {
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
            label,
            blocks,
            kept,
            damage,
        } = read_records(&mut file, path, file_len)?;
        let recovery = damage.map(|reason| Recovery {
            kept_bytes: kept,
            dropped_bytes: file_len - kept,
            reason,
        });
        // Every check comes before the first write: a refused store is left byte for byte.
        match label {
            Label::Params(stored) if stored != *params => {
                return Err(StoreError::OtherNetwork {
                    path: path.to_owned(),
                    differs: stored.differences(params),
                });
            }
            Label::Unlabelled => check_unlabelled(path, params, &blocks)?,
            _ => {}
        }
        match label {
            Label::Fresh => {
                file.set_len(0).map_err(io_err)?;
                file.seek(SeekFrom::Start(0)).map_err(io_err)?;
                file.write_all(&labelled_start(params)).map_err(io_err)?;
            }
            Label::Unlabelled => file = label_unlabelled(path, params, file, kept)?,
            Label::Params(_) if kept < file_len => file.set_len(kept).map_err(io_err)?,
            Label::Params(_) => {}
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

/// A labelled store's first bytes: the magic and the header of `params`.
fn labelled_start(params: &ConsensusParams) -> Vec<u8> {
    let header = params.to_bytes();
    let mut out = STORE_MAGIC.to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
    out.extend_from_slice(&header);
    out
}

/// An unlabelled store may be labelled with `params` only if its first blocks follow them: a
/// chain made with another difficulty, block size or reward is refused by block 2 at the latest.
fn check_unlabelled(
    path: &Path,
    params: &ConsensusParams,
    blocks: &[Block],
) -> Result<(), StoreError> {
    let first = blocks
        .iter()
        .take(UNLABELLED_BLOCKS_CHECKED)
        .cloned()
        .collect();
    // The clock is no rule here: stored blocks were judged against it when they arrived.
    let (_, refused) = rebuild_chain(*params, first, u64::MAX);
    match refused.into_iter().next() {
        Some(error) => Err(StoreError::UnlabelledRefused {
            path: path.to_owned(),
            error: Box::new(error),
        }),
        None => Ok(()),
    }
}

/// Rewrites an unlabelled store as a labelled one: its intact records, after the magic and the
/// header, in a file beside it that is locked, synced and renamed over it. A crash leaves the
/// old store or the new one, never a mix; the lock on the old one is held until the new one
/// has its own.
fn label_unlabelled(
    path: &Path,
    params: &ConsensusParams,
    mut old: File,
    kept: u64,
) -> Result<File, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    let mut name = path.as_os_str().to_owned();
    name.push(".labelling");
    let beside = PathBuf::from(name);
    let mut new = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&beside)
        .map_err(io_err)?;
    new.try_lock()
        .map_err(|e| io_err(io::Error::other(e.to_string())))?;
    new.write_all(&labelled_start(params)).map_err(io_err)?;
    old.seek(SeekFrom::Start(UNLABELLED_STORE_MAGIC.len() as u64))
        .map_err(io_err)?;
    let records = kept.saturating_sub(UNLABELLED_STORE_MAGIC.len() as u64);
    let copied = io::copy(&mut (&mut old).take(records), &mut new).map_err(io_err)?;
    if copied != records {
        return Err(io_err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the store shrank while it was being labelled",
        )));
    }
    new.sync_all().map_err(io_err)?;
    std::fs::rename(&beside, path).map_err(io_err)?;
    crate::fsutil::sync_parent_dir(path).map_err(io_err)?;
    Ok(new)
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

/// What a store says of the network its chain belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// No store yet, or one torn while being created: it holds no block.
    Fresh,
    /// A labelled store, with the parameters its chain was made under.
    Params(ConsensusParams),
    /// A store of the previous format, which does not say.
    Unlabelled,
}

/// What a store's bytes hold.
#[derive(Debug)]
pub struct Scan {
    /// Which network the store says it belongs to.
    pub label: Label,
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
    let fresh = |file_len| {
        Ok(Scan {
            label: Label::Fresh,
            blocks: Vec::new(),
            kept: 0,
            damage: (file_len > 0).then_some(Damage::TornHeader),
        })
    };
    if file_len < STORE_MAGIC.len() as u64 {
        return fresh(file_len);
    }
    reader.read_exact(&mut magic).map_err(io_err)?;
    let (label, mut pos) = match &magic {
        m if m == OLDER_STORE_MAGIC => return Err(StoreError::OlderRules(path.to_owned())),
        m if m == UNLABELLED_STORE_MAGIC => (Label::Unlabelled, STORE_MAGIC.len() as u64),
        m if m == STORE_MAGIC => {
            if file_len < FIRST_RECORD_AT {
                // Torn while being created: no block was ever written after it.
                return fresh(file_len);
            }
            let mut header = [0u8; RECORD_HEADER_LEN + PARAMS_BYTES];
            reader.read_exact(&mut header).map_err(io_err)?;
            let (head, params) = header.split_at(RECORD_HEADER_LEN);
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let params = (len == PARAMS_BYTES && crc32fast::hash(params) == crc)
                .then(|| ConsensusParams::from_bytes(params))
                .flatten()
                .ok_or_else(|| StoreError::BadHeader(path.to_owned()))?;
            (Label::Params(params), FIRST_RECORD_AT)
        }
        _ => return Err(StoreError::NotAStore(path.to_owned())),
    };
    let mut blocks = Vec::new();
    let cut = |blocks, at, damage| {
        Ok(Scan {
            label,
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
        label,
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
    } = BlockStore::open(path, &params)?;
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
    let scan = read_records(&mut file, path, file_len)?;
    if let Label::Params(stored) = scan.label
        && stored != params
    {
        return Err(StoreError::OtherNetwork {
            path: path.to_owned(),
            differs: stored.differences(&params),
        });
    }
    Ok(rebuild_chain(params, scan.blocks, now))
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
