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

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block::{Block, MAX_BLOCK_BYTES};
use crate::chain::{AddBlockError, Chain};
use crate::encode::DecodeError;
use crate::hash::Hash256;
use crate::header::BlockHeader;
use crate::rules::{ConsensusParams, PARAMS_BYTES};
use crate::tx::Transaction;

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
    /// A block record read back on demand is not what was written there.
    #[error("{}: {damage}; the store changed under the running node", path.display())]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What is wrong with the record.
        damage: Damage,
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

/// Where a block's record lies in the store: its payload (the block's encoding) starts at
/// byte `at` and is `len` bytes long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyAt {
    /// The payload's first byte.
    pub at: u64,
    /// The payload's length.
    pub len: u32,
}

/// An open, locked block store.
pub struct BlockStore {
    file: File,
    path: PathBuf,
    /// Bytes of intact records: where the next append starts.
    len: u64,
    /// Bytes known to be on disk.
    synced: u64,
    /// Set when a failed append could not be undone: no further append is made.
    broken: bool,
}

/// A store opened and locked whose blocks are still to be read ([`BlockStore::begin_open`]).
pub struct Opening {
    file: File,
    path: PathBuf,
    /// Bytes in the file, all of them after its header still to be read.
    file_len: u64,
    /// What labelling a store of the previous format cut off.
    recovery: Option<Recovery>,
}

impl Opening {
    /// A reader of the store's bodies, for the chain the blocks are about to build. It opens
    /// the file again rather than sharing the locked one, so the lock ends with the store even
    /// where the chain lives on.
    pub fn bodies(&self) -> Result<BodyFile, StoreError> {
        BodyFile::open(&self.path)
    }

    /// Reads every intact block in the order appended, handing each to `each` with where its
    /// record lies, and cuts off a torn or corrupt tail, saying so: the store is then ready
    /// for appends.
    pub fn read_blocks(
        self,
        mut each: impl FnMut(Block, BodyAt),
    ) -> Result<(BlockStore, Option<Recovery>), StoreError> {
        let Opening {
            mut file,
            path,
            file_len,
            mut recovery,
        } = self;
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source: Arc::new(source),
        };
        file.seek(SeekFrom::Start(FIRST_RECORD_AT))
            .map_err(io_err)?;
        let end = scan_from(
            &mut BufReader::with_capacity(1 << 16, &mut file),
            &path,
            FIRST_RECORD_AT,
            file_len,
            &mut each,
        )?;
        if let Some(reason) = end.damage {
            file.set_len(end.kept).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            recovery.get_or_insert(Recovery {
                kept_bytes: end.kept,
                dropped_bytes: file_len - end.kept,
                reason,
            });
        }
        let len = file.seek(SeekFrom::End(0)).map_err(io_err)?;
        Ok((
            BlockStore {
                file,
                path,
                len,
                synced: len,
                broken: false,
            },
            recovery,
        ))
    }
}

/// A store read by position, for the bodies a chain does not keep in memory: any number of
/// threads read at once (`pread`), beside the one that appends.
pub struct BodyFile {
    file: File,
    path: PathBuf,
}

impl BodyFile {
    /// Opens the store at `path` for reading only.
    pub fn open(path: &Path) -> Result<BodyFile, StoreError> {
        let file = File::open(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        })?;
        Ok(BodyFile {
            file,
            path: path.to_owned(),
        })
    }

    /// Reads the block whose record lies at `at`, checking the record's length and checksum
    /// and that it is the block of `header` (the header names the block as its hash does,
    /// without hashing it again).
    pub fn read(&self, at: BodyAt, header: &BlockHeader) -> Result<Block, StoreError> {
        let record = at.at.saturating_sub(RECORD_HEADER_LEN as u64);
        let damaged = |damage| StoreError::Damaged {
            path: self.path.clone(),
            damage,
        };
        if at.len as usize > MAX_BLOCK_BYTES {
            return Err(damaged(Damage::Oversized {
                at: record,
                len: at.len as usize,
            }));
        }
        let mut bytes = vec![0u8; RECORD_HEADER_LEN + at.len as usize];
        self.file
            .read_exact_at(&mut bytes, record)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => damaged(Damage::TornRecord { at: record }),
                _ => StoreError::Io {
                    path: self.path.clone(),
                    source: Arc::new(e),
                },
            })?;
        let (head, payload) = bytes.split_at(RECORD_HEADER_LEN);
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len != at.len || crc32fast::hash(payload) != crc {
            return Err(damaged(Damage::Checksum { at: record }));
        }
        let block = Block::decode(payload)
            .map_err(|error| damaged(Damage::NotABlock { at: record, error }))?;
        if block.header != *header {
            return Err(damaged(Damage::OtherBlock { at: record }));
        }
        Ok(block)
    }
}

impl BlockStore {
    /// Opens (creating if needed) and verifies the store at `path`, whose chain must belong to
    /// the network of `params`, and returns every intact block with it. A node streams the
    /// blocks instead ([`BlockStore::begin_open`]); this is for tools and tests.
    pub fn open(path: &Path, params: &ConsensusParams) -> Result<Opened, StoreError> {
        let mut blocks = Vec::new();
        let (store, recovery) =
            BlockStore::begin_open(path, params)?.read_blocks(|block, _| blocks.push(block))?;
        Ok(Opened {
            store,
            blocks,
            recovery,
        })
    }

    /// Opens (creating if needed) and locks the store at `path`, whose chain must belong to
    /// the network of `params`: a store of other parameters is refused before anything is
    /// written; an unlabelled one (the previous format) is labelled once its first blocks pass.
    /// Its blocks are read next, with [`Opening::read_blocks`].
    pub fn begin_open(path: &Path, params: &ConsensusParams) -> Result<Opening, StoreError> {
        let io_err = |source| StoreError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        };
        let mut file = crate::fsutil::open_for_update(path).map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked(path.to_owned())),
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let file_len = file.metadata().map_err(io_err)?.len();
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let label = read_label(&mut BufReader::new(&mut file), path, file_len)?;
        // Every check comes before the first write: a refused store is left byte for byte.
        let (file, file_len, recovery) = match label {
            Label::Params(stored) if stored != *params => {
                return Err(StoreError::OtherNetwork {
                    path: path.to_owned(),
                    differs: stored.differences(params),
                });
            }
            Label::Params(_) => (file, file_len, None),
            Label::Fresh => {
                file.set_len(0).map_err(io_err)?;
                file.seek(SeekFrom::Start(0)).map_err(io_err)?;
                file.write_all(&labelled_start(params)).map_err(io_err)?;
                file.sync_all().map_err(io_err)?;
                let recovery = (file_len > 0).then_some(Recovery {
                    kept_bytes: 0,
                    dropped_bytes: file_len,
                    reason: Damage::TornHeader,
                });
                (file, FIRST_RECORD_AT, recovery)
            }
            Label::Unlabelled => {
                let start = UNLABELLED_STORE_MAGIC.len() as u64;
                file.seek(SeekFrom::Start(start)).map_err(io_err)?;
                let mut first = Vec::new();
                let end = scan_from(
                    &mut BufReader::new(&mut file),
                    path,
                    start,
                    file_len,
                    &mut |block, _| {
                        if first.len() < UNLABELLED_BLOCKS_CHECKED {
                            first.push(block);
                        }
                    },
                )?;
                check_unlabelled(path, params, first)?;
                let file = label_unlabelled(path, params, file, end.kept)?;
                let recovery = end.damage.map(|reason| Recovery {
                    kept_bytes: end.kept,
                    dropped_bytes: file_len - end.kept,
                    reason,
                });
                (file, FIRST_RECORD_AT + end.kept - start, recovery)
            }
        };
        Ok(Opening {
            file,
            path: path.to_owned(),
            file_len,
            recovery,
        })
    }

    /// Appends one block and syncs it to disk before returning, and says where its record
    /// lies. If the write fails (a full disk), the partial record is cut off again, so the
    /// store stays a run of intact records that later appends can follow; if even that fails,
    /// the store refuses further appends.
    pub fn append(&mut self, block: &Block) -> Result<BodyAt, StoreError> {
        let at = self.write(block)?;
        self.sync()?;
        Ok(at)
    }

    /// Writes one block's record without waiting for the disk, and says where it lies: a
    /// batch of blocks is written so and made durable by one [`BlockStore::sync`]. A failed
    /// write is cut off again as in [`BlockStore::append`].
    pub fn write(&mut self, block: &Block) -> Result<BodyAt, StoreError> {
        self.usable()?;
        let payload = block.encode();
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        if let Err(e) = self.file.write_all(&record) {
            self.cut_back(self.len);
            return Err(self.io_error(e));
        }
        let at = BodyAt {
            at: self.len + RECORD_HEADER_LEN as u64,
            len: payload.len() as u32,
        };
        self.len += record.len() as u64;
        Ok(at)
    }

    /// Waits until every record written is on disk. If that fails, the records written since
    /// the last sync are cut off (the disk may hold any part of them), and if even that fails,
    /// the store refuses further writes.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.synced == self.len {
            return Ok(());
        }
        self.usable()?;
        if let Err(e) = self.file.sync_data() {
            self.cut_back(self.synced);
            return Err(self.io_error(e));
        }
        self.synced = self.len;
        Ok(())
    }

    fn usable(&self) -> Result<(), StoreError> {
        if self.broken {
            return Err(self.io_error(io::Error::other(
                "an earlier failed append could not be undone",
            )));
        }
        Ok(())
    }

    /// Cuts the file back to `len` bytes of intact records after a failed write or sync.
    fn cut_back(&mut self, len: u64) {
        let undone = self
            .file
            .set_len(len)
            .and_then(|()| self.file.seek(SeekFrom::Start(len)).map(|_| ()))
            .and_then(|()| self.file.sync_data());
        self.broken = undone.is_err();
        self.len = len;
        self.synced = self.synced.min(len);
    }

    fn io_error(&self, source: io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source: Arc::new(source),
        }
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
    first: Vec<Block>,
) -> Result<(), StoreError> {
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
    /// An intact record, but of another block than the one looked for.
    #[error("record at byte {at} holds another block")]
    OtherBlock {
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

impl Label {
    /// Where the first block record starts in a store so labelled (none in a fresh one).
    fn first_record(self) -> Option<u64> {
        match self {
            Label::Fresh => None,
            Label::Params(_) => Some(FIRST_RECORD_AT),
            Label::Unlabelled => Some(UNLABELLED_STORE_MAGIC.len() as u64),
        }
    }
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
    let path = Path::new("<memory>");
    let file_len = bytes.len() as u64;
    let mut reader = bytes;
    let label = read_label(&mut reader, path, file_len)?;
    let mut blocks = Vec::new();
    let Some(start) = label.first_record() else {
        return Ok(Scan {
            label,
            blocks,
            kept: 0,
            damage: (file_len > 0).then_some(Damage::TornHeader),
        });
    };
    let end = scan_from(&mut reader, path, start, file_len, &mut |block, _| {
        blocks.push(block)
    })?;
    Ok(Scan {
        label,
        blocks,
        kept: end.kept,
        damage: end.damage,
    })
}

/// Reads the magic and the header from the start of a store of `file_len` bytes: which
/// network it says it belongs to. After it, `reader` is at the first record.
fn read_label(reader: &mut impl Read, path: &Path, file_len: u64) -> Result<Label, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    if file_len < STORE_MAGIC.len() as u64 {
        return Ok(Label::Fresh);
    }
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).map_err(io_err)?;
    match &magic {
        m if m == OLDER_STORE_MAGIC => Err(StoreError::OlderRules(path.to_owned())),
        m if m == UNLABELLED_STORE_MAGIC => Ok(Label::Unlabelled),
        // Torn while being created: no block was ever written after it.
        m if m == STORE_MAGIC && file_len < FIRST_RECORD_AT => Ok(Label::Fresh),
        m if m == STORE_MAGIC => {
            let mut header = [0u8; RECORD_HEADER_LEN + PARAMS_BYTES];
            reader.read_exact(&mut header).map_err(io_err)?;
            let (head, params) = header.split_at(RECORD_HEADER_LEN);
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            (len == PARAMS_BYTES && crc32fast::hash(params) == crc)
                .then(|| ConsensusParams::from_bytes(params))
                .flatten()
                .map(Label::Params)
                .ok_or_else(|| StoreError::BadHeader(path.to_owned()))
        }
        _ => Err(StoreError::NotAStore(path.to_owned())),
    }
}

/// Where the intact records end, and why the bytes after them were refused.
struct ScanEnd {
    kept: u64,
    damage: Option<Damage>,
}

/// Reads every intact record from byte `pos` of a store of `file_len` bytes (`reader` is
/// there), handing each block to `each` with where it lies.
fn scan_from(
    reader: &mut impl Read,
    path: &Path,
    mut pos: u64,
    file_len: u64,
    each: &mut dyn FnMut(Block, BodyAt),
) -> Result<ScanEnd, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    let cut = |at, damage| {
        Ok(ScanEnd {
            kept: at,
            damage: Some(damage),
        })
    };
    let mut payload = Vec::new();
    while pos < file_len {
        let remaining = file_len - pos;
        if remaining < RECORD_HEADER_LEN as u64 {
            return cut(pos, Damage::TornRecordHeader { at: pos });
        }
        let mut head = [0u8; RECORD_HEADER_LEN];
        reader.read_exact(&mut head).map_err(io_err)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_BLOCK_BYTES {
            return cut(pos, Damage::Oversized { at: pos, len });
        }
        if (len as u64) > remaining - RECORD_HEADER_LEN as u64 {
            return cut(pos, Damage::TornRecord { at: pos });
        }
        payload.resize(len, 0);
        reader.read_exact(&mut payload).map_err(io_err)?;
        if crc32fast::hash(&payload) != crc {
            return cut(pos, Damage::Checksum { at: pos });
        }
        match Block::decode(&payload) {
            Ok(block) => each(
                block,
                BodyAt {
                    at: pos + RECORD_HEADER_LEN as u64,
                    len: len as u32,
                },
            ),
            Err(error) => return cut(pos, Damage::NotABlock { at: pos, error }),
        }
        pos += (RECORD_HEADER_LEN + len) as u64;
    }
    Ok(ScanEnd {
        kept: pos,
        damage: None,
    })
}

/// A chain loaded from its store, with what loading found.
pub struct LoadedChain {
    /// The store, locked and ready for appends.
    pub store: BlockStore,
    /// The chain the stored blocks add up to; it reads their bodies from the store.
    pub chain: Chain,
    /// Set when a torn or corrupt tail was cut off.
    pub recovery: Option<Recovery>,
    /// Stored blocks the rules now refuse, with the reason.
    pub refused: Vec<AddBlockError>,
}

/// Opens the store at `path` and rebuilds its chain: what every node and wallet does at start.
/// The chain keeps headers in memory and reads bodies from the store when asked.
///
/// Beside the store, its validated mark ([`validated_path`]) names the best chain's tip at the
/// last load: every block up to it was checked in full then. Its blocks are read back without
/// checking their payments' signatures again (the costly part: a restart no longer verifies
/// every payment ever made); every other rule still holds them. The mark's hash commits to
/// every block under it (each header names its parent, each merkle root its transactions,
/// each transaction id a payment's signature), so a store changed or replaced since does not
/// match it: when the mark's block is not on the loaded best chain, or a side block under it
/// fails its signatures, the store is loaded again with every check. The loaded best chain is
/// then marked.
pub fn load_chain(
    path: &Path,
    params: ConsensusParams,
    now: u64,
) -> Result<LoadedChain, StoreError> {
    let mark_path = validated_path(path);
    let mark = read_mark(&mark_path);
    let mut loaded = load_marked(path, params, now, mark)?;
    if let Some((height, hash)) = mark
        && !mark_holds(&loaded.chain, height, &hash)
    {
        let recovery = loaded.recovery.take();
        drop(loaded);
        loaded = load_marked(path, params, now, None)?;
        loaded.recovery = loaded.recovery.or(recovery);
    }
    // A mark that cannot be written only costs the next start its checks.
    let _ = write_mark(&mark_path, loaded.chain.height(), loaded.chain.tip_hash());
    Ok(loaded)
}

/// Where the validated mark of the store at `store` is kept: beside it, `.validated` added.
pub fn validated_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".validated");
    PathBuf::from(name)
}

const MARK_MAGIC: &[u8; 8] = b"MVBCVAL1";
const MARK_LEN: usize = MARK_MAGIC.len() + 8 + 32;

/// The mark's height and hash; `None` when there is none or it is not one.
fn read_mark(path: &Path) -> Option<(u64, Hash256)> {
    let bytes = crate::fsutil::read_capped(path, MARK_LEN as u64).ok()?;
    let rest = bytes.strip_prefix(MARK_MAGIC.as_slice())?;
    let (height, hash) = rest.split_at_checked(8)?;
    Some((
        u64::from_le_bytes(height.try_into().ok()?),
        Hash256(hash.try_into().ok()?),
    ))
}

fn write_mark(path: &Path, height: u64, hash: Hash256) -> io::Result<()> {
    let mut bytes = MARK_MAGIC.to_vec();
    bytes.extend_from_slice(&height.to_le_bytes());
    bytes.extend_from_slice(&hash.0);
    crate::fsutil::write_atomic(path, &bytes)
}

/// Whether the mark at `height`, `hash` holds for `chain`, loaded under it: its block is on the
/// best chain, and every side block under it passes the signature checks it skipped.
fn mark_holds(chain: &Chain, height: u64, hash: &Hash256) -> bool {
    if chain.hash_at(height) != Some(*hash) {
        return false;
    }
    chain.side_blocks().all(|side| {
        if chain.header(side).is_none_or(|h| h.height > height) {
            return true;
        }
        match chain.block(side) {
            Ok(Some(block)) => block.transactions.iter().all(|tx| match tx {
                Transaction::Payment(p) => p.verify().is_ok(),
                Transaction::Reward(_) => true,
            }),
            _ => false,
        }
    })
}

/// [`load_chain`] with the mark `mark`: blocks up to its height skip their signature checks.
fn load_marked(
    path: &Path,
    params: ConsensusParams,
    now: u64,
    mark: Option<(u64, Hash256)>,
) -> Result<LoadedChain, StoreError> {
    let opening = BlockStore::begin_open(path, &params)?;
    let mut chain = Chain::new(params);
    chain.set_bodies(opening.bodies()?);
    let mut refused = Vec::new();
    let (store, recovery) = opening.read_blocks(|block, at| {
        let signed = mark.is_some_and(|(height, _)| block.header.height <= height);
        if let Err(e) = chain.add_stored(block, at, now, signed) {
            refused.push(e);
        }
    })?;
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
    let io_err = |source| StoreError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    let bodies = match BodyFile::open(path) {
        Ok(f) => f,
        Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok((Chain::new(params), Vec::new()));
        }
        Err(e) => return Err(e),
    };
    let mut file = bodies.file.try_clone().map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::with_capacity(1 << 16, &mut file);
    let label = read_label(&mut reader, path, file_len)?;
    if let Label::Params(stored) = label
        && stored != params
    {
        return Err(StoreError::OtherNetwork {
            path: path.to_owned(),
            differs: stored.differences(&params),
        });
    }
    let Some(start) = label.first_record() else {
        return Ok((Chain::new(params), Vec::new()));
    };
    let mut chain = Chain::new(params);
    // Positions in a store of the previous format are not where a labelled store puts
    // them: its bodies stay in memory.
    let labelled = matches!(label, Label::Params(_));
    if labelled {
        chain.set_bodies(bodies);
    }
    let mut refused = Vec::new();
    scan_from(&mut reader, path, start, file_len, &mut |block, at| {
        let added = if labelled {
            chain.add_stored(block, at, now, false)
        } else {
            chain.add_block(block, now)
        };
        if let Err(e) = added {
            refused.push(e);
        }
    })?;
    Ok((chain, refused))
}

/// Rebuilds a chain from stored blocks (parents are always stored before children), keeping
/// every body in memory. Blocks the rules now refuse (for example after a consensus parameter
/// changed) are skipped and returned with the reason.
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
