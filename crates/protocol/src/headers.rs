//! A light client's chain: the best chain's headers alone, each held to every rule a header
//! alone can be held to (link, height, difficulty, proof of work, time), with the same fork
//! choice as the full chain ([`crate::chain`]): more work wins, and of two chains with equal
//! work the one whose first block after the fork point has the lower hash.
//!
//! Memory holds 64 bytes a block: its hash and its merkle root, all that is asked of a header
//! once it is checked (the next header is checked against its parent's height and hash).
//! Every header of a network has the same difficulty, so a chain's work is its height times
//! one block's. A branch that forks below the tip is held apart until it carries more work
//! than the best chain, then takes its place.
//!
//! [`HeaderFile`] keeps the best chain on disk: the network's parameters, then each header's
//! 96 bytes from height 1 on. A torn or damaged tail is cut at open; a reorg cuts the file to
//! the fork point before the branch is written after it, so a crash leaves a shorter chain,
//! never a wrong one.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::block::genesis_block;
use crate::hash::Hash256;
use crate::header::{BlockHeader, HEADER_LEN};
use crate::rules::{BlockError, ConsensusParams, NetworkId, PARAMS_BYTES, check_header_on};
use crate::wire::MAX_LOCATOR_LEN;

/// Most headers of a branch held apart while it has less work than the best chain: a reorg
/// deeper than this is not followed (`sync --full` follows any).
pub const MAX_BRANCH_HEADERS: usize = 50_000;

/// Why headers were not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The first header follows no block of the best chain (nor the branch held apart).
    #[error("header of block {hash} at height {height} follows no block this chain holds")]
    Unconnected {
        /// Its hash.
        hash: Hash256,
        /// Its height.
        height: u64,
    },
    /// A header breaks a rule.
    #[error("bad header of block {hash} at height {height}: {error}")]
    Invalid {
        /// Its hash.
        hash: Hash256,
        /// Its height.
        height: u64,
        /// The rule.
        error: Box<BlockError>,
    },
    /// A branch forking deeper than [`MAX_BRANCH_HEADERS`] below the tip.
    #[error("a branch of more than {MAX_BRANCH_HEADERS} headers below the tip is not followed")]
    TooDeep,
}

/// What [`HeaderChain::add`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// Headers that joined the best chain.
    pub joined: u64,
    /// When the best chain moved to another branch: the height of the fork point (the best
    /// chain's headers above it were replaced).
    pub reorg_from: Option<u64>,
}

/// What a light client keeps of each block of its best chain once its header is checked.
#[derive(Clone, Copy, Debug)]
struct Kept {
    hash: Hash256,
    merkle_root: Hash256,
}

/// The best chain's headers, and a branch that may overtake it.
#[derive(Clone, Debug)]
pub struct HeaderChain {
    params: ConsensusParams,
    /// Of each block of the best chain, by height (genesis is 0): its hash and merkle root,
    /// 64 bytes, all that is asked of a header once it is checked.
    blocks: Vec<Kept>,
    /// A branch forking below the tip, lowest first, while it has no more work than ours.
    branch: Vec<BlockHeader>,
    /// The headers that joined the best chain in the last [`HeaderChain::add`], lowest first.
    joined: Vec<BlockHeader>,
}

impl HeaderChain {
    /// Genesis alone.
    pub fn new(params: ConsensusParams) -> HeaderChain {
        let genesis = genesis_block().header;
        HeaderChain {
            params,
            blocks: vec![Kept {
                hash: genesis.hash(),
                merkle_root: genesis.merkle_root,
            }],
            branch: Vec::new(),
            joined: Vec::new(),
        }
    }

    /// The rules its headers are held to.
    pub fn params(&self) -> &ConsensusParams {
        &self.params
    }

    /// The network it belongs to.
    pub fn network_id(&self) -> NetworkId {
        self.params.network_id()
    }

    /// The tip's height.
    pub fn height(&self) -> u64 {
        self.blocks.len() as u64 - 1
    }

    /// The tip's hash.
    pub fn tip_hash(&self) -> Hash256 {
        self.blocks.last().expect("genesis at least").hash
    }

    /// The best chain's work: every block after genesis carries the network's difficulty.
    pub fn chain_work(&self) -> u128 {
        crate::header::work_for_difficulty(self.params.difficulty)
            .saturating_mul(self.height() as u128)
    }

    fn kept(&self, height: u64) -> Option<&Kept> {
        self.blocks.get(usize::try_from(height).ok()?)
    }

    /// The best chain's block hash at `height`.
    pub fn hash_at(&self, height: u64) -> Option<Hash256> {
        self.kept(height).map(|k| k.hash)
    }

    /// The merkle root of the best chain's block at `height`.
    pub fn merkle_root_at(&self, height: u64) -> Option<Hash256> {
        self.kept(height).map(|k| k.merkle_root)
    }

    /// Whether `hash` is the best chain's block at `height`.
    pub fn holds(&self, height: u64, hash: &Hash256) -> bool {
        self.hash_at(height).as_ref() == Some(hash)
    }

    /// The headers that joined the best chain in the last [`HeaderChain::add`], lowest first:
    /// what its file appends.
    pub fn joined(&self) -> &[BlockHeader] {
        &self.joined
    }

    /// Hashes of the best chain, densest near the tip, as [`crate::Chain::locator`] gives them;
    /// first the tip of the branch held apart, if there is one, so that a server on that
    /// branch goes on with it.
    pub fn locator(&self) -> Vec<Hash256> {
        let branch = self.branch.last().map(BlockHeader::hash);
        let mut out: Vec<Hash256> = branch
            .into_iter()
            .chain(
                locator_heights(self.height())
                    .into_iter()
                    .map(|h| self.hash_at(h).expect("a height of the best chain")),
            )
            .collect();
        out.truncate(MAX_LOCATOR_LEN);
        out
    }

    /// Takes consecutive `headers`, lowest first, checked against our clock `now`: the first
    /// must follow a block of the best chain or the last header of the branch held apart.
    /// Headers that extend the tip join at once; a branch from below the tip is held apart
    /// until it wins the fork choice, and then replaces the best chain above the fork point.
    /// Nothing changes when a header is refused.
    pub fn add(&mut self, headers: &[BlockHeader], now: u64) -> Result<Added, HeaderError> {
        let Some(first) = headers.first() else {
            return Ok(Added::default());
        };
        let unconnected = || HeaderError::Unconnected {
            hash: first.hash(),
            height: first.height,
        };
        // Where the headers attach: the branch held apart, or the best chain at some height.
        let continues_branch = self
            .branch
            .last()
            .is_some_and(|last| last.hash() == first.prev_hash);
        let parent_height = first.height.checked_sub(1).ok_or_else(unconnected)?;
        if !continues_branch && !self.holds(parent_height, &first.prev_hash) {
            return Err(unconnected());
        }
        let mut hashes = Vec::with_capacity(headers.len());
        let (mut at, mut parent_hash) = (parent_height, first.prev_hash);
        for h in headers {
            check_header_on(h, at, parent_hash, &self.params, now).map_err(|error| {
                HeaderError::Invalid {
                    hash: h.hash(),
                    height: h.height,
                    error: Box::new(error),
                }
            })?;
            (at, parent_hash) = (h.height, h.hash());
            hashes.push(parent_hash);
        }
        self.joined.clear();
        if !continues_branch && parent_height == self.height() {
            self.join(headers, &hashes);
            return Ok(Added {
                joined: headers.len() as u64,
                reorg_from: None,
            });
        }
        let mut branch = if continues_branch {
            std::mem::take(&mut self.branch)
        } else {
            Vec::new()
        };
        if branch.len() + headers.len() > MAX_BRANCH_HEADERS {
            return Err(HeaderError::TooDeep);
        }
        branch.extend_from_slice(headers);
        let fork = branch[0].height - 1;
        if self.branch_wins(&branch, &parent_hash) {
            self.blocks.truncate(fork as usize + 1);
            let hashes: Vec<Hash256> = branch.iter().map(BlockHeader::hash).collect();
            self.join(&branch, &hashes);
            return Ok(Added {
                joined: branch.len() as u64,
                reorg_from: Some(fork),
            });
        }
        self.branch = branch;
        Ok(Added::default())
    }

    /// Appends checked `headers` of hashes `hashes` to the best chain.
    fn join(&mut self, headers: &[BlockHeader], hashes: &[Hash256]) {
        self.blocks
            .extend(headers.iter().zip(hashes).map(|(h, hash)| Kept {
                hash: *hash,
                merkle_root: h.merkle_root,
            }));
        self.joined.extend_from_slice(headers);
    }

    /// Whether `branch` (forking below our tip, ending in `tip`) beats the best chain.
    fn branch_wins(&self, branch: &[BlockHeader], tip: &Hash256) -> bool {
        let ends = branch.last().expect("a branch has headers").height;
        match ends.cmp(&self.height()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal if *tip == self.tip_hash() => false,
            // Equal work: the lower hash (as shown) of the first block after the fork wins.
            std::cmp::Ordering::Equal => {
                let theirs = branch[0].hash();
                let ours = self.hash_at(branch[0].height).expect("below our tip");
                theirs.cmp_shown(&ours) == std::cmp::Ordering::Less
            }
        }
    }
}

/// The heights a locator of a chain `height` high names: the last ten, then doubling steps,
/// genesis last.
pub fn locator_heights(height: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let (mut at, mut step) = (height, 1);
    loop {
        out.push(at);
        if at == 0 || out.len() == MAX_LOCATOR_LEN - 1 {
            break;
        }
        if out.len() >= 10 {
            step *= 2;
        }
        at = at.saturating_sub(step);
    }
    if at != 0 {
        out.push(0);
    }
    out
}

/// What starts a header file.
const MAGIC: &[u8; 8] = b"MVBCHDR1";
const PREAMBLE: usize = MAGIC.len() + PARAMS_BYTES;

/// Why a header file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HeaderFileError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Not a header file, or one of another network.
    #[error("{}: {why}; move it aside to start over", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
}

/// The best chain's headers on disk (see the module docs), locked while open for writing.
pub struct HeaderFile {
    file: File,
    path: PathBuf,
}

/// What opening a header file found.
pub struct OpenedHeaders {
    /// The chain it holds (genesis alone for a new file).
    pub chain: HeaderChain,
    /// Why a tail was cut: a torn last record, or a header the rules refuse.
    pub recovery: Option<String>,
}

impl HeaderFile {
    /// Opens (or creates) the file at `path` for writing, holding its lock, and reads its
    /// chain under `params`, cutting off a tail that is torn or breaks a rule at `now`.
    pub fn open(
        path: &Path,
        params: ConsensusParams,
        now: u64,
    ) -> Result<(HeaderFile, OpenedHeaders), HeaderFileError> {
        let io_err = |source| HeaderFileError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = crate::fsutil::open_for_update(path).map_err(io_err)?;
        file.try_lock().map_err(|e| {
            io_err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("another sync holds it ({e})"),
            ))
        })?;
        let len = file.metadata().map_err(io_err)?.len();
        // Empty, or torn while it was being made: it holds no header yet.
        if len < PREAMBLE as u64 {
            file.set_len(0).map_err(io_err)?;
            let mut preamble = MAGIC.to_vec();
            preamble.extend_from_slice(&params.to_bytes());
            file.write_all(&preamble).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            crate::fsutil::sync_parent_dir(path).map_err(io_err)?;
            let opened = OpenedHeaders {
                chain: HeaderChain::new(params),
                recovery: None,
            };
            return Ok((
                HeaderFile {
                    file,
                    path: path.to_owned(),
                },
                opened,
            ));
        }
        let (opened, good) = read_headers(path, &mut file, params, now)?;
        if good < len {
            file.set_len(good).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        Ok((
            HeaderFile {
                file,
                path: path.to_owned(),
            },
            opened,
        ))
    }

    /// Writes what [`HeaderChain::add`] did to `chain`: cuts the file back to a fork point,
    /// then appends the headers that joined, and syncs once.
    pub fn save(&mut self, chain: &HeaderChain, added: Added) -> Result<(), HeaderFileError> {
        if added.joined == 0 {
            return Ok(());
        }
        let io_err = |source| HeaderFileError::Io {
            path: self.path.clone(),
            source,
        };
        let from = chain.height() + 1 - added.joined;
        let at = PREAMBLE as u64 + (from - 1) * HEADER_LEN as u64;
        if added.reorg_from.is_some() {
            // Cut first and make the cut durable: a crash then leaves the common prefix.
            self.file.set_len(at).map_err(io_err)?;
            self.file.sync_data().map_err(io_err)?;
        }
        let mut bytes = Vec::with_capacity(added.joined as usize * HEADER_LEN);
        for h in chain.joined() {
            bytes.extend_from_slice(&h.to_bytes());
        }
        self.file.seek(SeekFrom::Start(at)).map_err(io_err)?;
        self.file.write_all(&bytes).map_err(io_err)?;
        self.file.sync_data().map_err(io_err)
    }
}

/// Headers read and checked at a time when a file is opened: the file is streamed, never
/// held whole beside the chain it makes.
const READ_BATCH: usize = 4096;

/// The chain in the header file `file` (read from its start) and how many of its bytes hold
/// it.
fn read_headers(
    path: &Path,
    file: &mut File,
    params: ConsensusParams,
    now: u64,
) -> Result<(OpenedHeaders, u64), HeaderFileError> {
    let io_err = |source| HeaderFileError::Io {
        path: path.to_owned(),
        source,
    };
    let foreign = |why: String| HeaderFileError::Foreign {
        path: path.to_owned(),
        why,
    };
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let mut preamble = [0u8; PREAMBLE];
    if fill(file, &mut preamble).map_err(io_err)? < PREAMBLE || &preamble[..MAGIC.len()] != MAGIC {
        return Err(foreign("not an mvbc header file".into()));
    }
    let Some(stored) = ConsensusParams::from_bytes(&preamble[MAGIC.len()..]) else {
        return Err(foreign("its network's parameters are unreadable".into()));
    };
    if stored != params {
        let (ours, theirs) = params.differences(&stored);
        return Err(foreign(format!(
            "it holds headers of another network ({}, not {})",
            theirs.join(", "),
            ours.join(", ")
        )));
    }
    let mut chain = HeaderChain::new(params);
    let mut recovery = None;
    let mut good = PREAMBLE as u64;
    let mut buf = vec![0u8; READ_BATCH * HEADER_LEN];
    let mut batch = Vec::with_capacity(READ_BATCH);
    loop {
        let got = fill(file, &mut buf).map_err(io_err)?;
        batch.clear();
        batch.extend(
            buf[..got - got % HEADER_LEN]
                .chunks_exact(HEADER_LEN)
                .map(|r| BlockHeader::from_bytes(r.try_into().expect("whole records"))),
        );
        if let Err(e) = chain.add(&batch, now) {
            recovery = Some(cut_at(&mut chain, &batch, now, &mut good, e));
            break;
        }
        good += (batch.len() * HEADER_LEN) as u64;
        if got % HEADER_LEN != 0 {
            recovery = Some(format!(
                "cut a torn last header ({} of {HEADER_LEN} bytes)",
                got % HEADER_LEN
            ));
        }
        if got < buf.len() {
            break;
        }
    }
    Ok((OpenedHeaders { chain, recovery }, good))
}

/// Reads into `buf` until it is full or the file ends; how many bytes came.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Adds the headers of `batch` one by one up to the one `chain.add` refused; says where the
/// file is cut.
fn cut_at(
    chain: &mut HeaderChain,
    batch: &[BlockHeader],
    now: u64,
    good: &mut u64,
    error: HeaderError,
) -> String {
    for h in batch {
        if chain.add(std::slice::from_ref(h), now).is_err() {
            break;
        }
        *good += HEADER_LEN as u64;
    }
    format!(
        "cut the headers from height {} on: {error}",
        chain.height() + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Amount;
    use crate::block::Block;
    use crate::keys::Address;
    use crate::tx::{Reward, Transaction};

    const PARAMS: ConsensusParams = ConsensusParams {
        difficulty: 1,
        block_size: 1,
        block_reward: Amount::from_units(50),
    };
    const NOW: u64 = crate::block::GENESIS_TIMESTAMP + 1_000_000;

    /// A valid header after `parent`, told apart from its siblings by `salt`.
    fn mine(parent: &BlockHeader, salt: u8) -> BlockHeader {
        let to = Address(crate::hash::sha256(&[salt]));
        let reward = Transaction::Reward(Reward {
            to,
            amount: PARAMS.block_reward,
            height: parent.height + 1,
        });
        let mut b = Block::assemble(
            parent,
            vec![reward],
            parent.timestamp + 1,
            PARAMS.difficulty,
        );
        b.header.solve();
        b.header
    }

    fn branch(from: &BlockHeader, n: usize, salt: u8) -> Vec<BlockHeader> {
        let mut out: Vec<BlockHeader> = Vec::new();
        for _ in 0..n {
            let parent = out.last().unwrap_or(from);
            out.push(mine(parent, salt));
        }
        out
    }

    #[test]
    fn extends_reorgs_to_more_work_and_breaks_ties_as_the_full_chain_does() {
        let mut chain = HeaderChain::new(PARAMS);
        let genesis = genesis_block().header;
        let a = branch(&genesis, 5, 1);
        assert_eq!(
            chain.add(&a, NOW).unwrap(),
            Added {
                joined: 5,
                reorg_from: None
            }
        );
        assert_eq!(chain.tip_hash(), a[4].hash());
        assert_eq!(chain.chain_work(), 5 * 2);

        // A branch from height 2, shorter, then as long: held apart, then judged by its hash.
        let b = branch(&a[1], 4, 2);
        assert_eq!(chain.add(&b[..2], NOW).unwrap(), Added::default());
        let tie = chain.add(&b[2..3], NOW).unwrap();
        let b_first_lower = b[0].hash().cmp_shown(&a[2].hash()) == std::cmp::Ordering::Less;
        if b_first_lower {
            assert_eq!(tie.reorg_from, Some(2));
            assert_eq!(chain.tip_hash(), b[2].hash());
        } else {
            assert_eq!(tie, Added::default());
            assert_eq!(chain.tip_hash(), a[4].hash());
        }
        // One more: more work wins whatever the hashes.
        let more = chain.add(&b[3..], NOW).unwrap();
        assert_eq!(chain.tip_hash(), b[3].hash());
        assert_eq!(chain.height(), 6);
        assert_eq!(more.joined, if b_first_lower { 1 } else { 4 });
        assert!(chain.holds(2, &a[1].hash()) && chain.holds(3, &b[0].hash()));
        assert_eq!(chain.locator()[0], b[3].hash());
        assert_eq!(*chain.locator().last().unwrap(), genesis.hash());
    }

    #[test]
    fn refuses_bad_work_and_unconnected_headers_and_changes_nothing() {
        let mut chain = HeaderChain::new(PARAMS);
        let genesis = genesis_block().header;
        let a = branch(&genesis, 3, 1);
        let mut bad = a.clone();
        // A header whose hash misses the difficulty.
        while bad[2].meets_own_difficulty() {
            bad[2].nonce += 1;
        }
        let refused = chain.add(&bad, NOW).unwrap_err();
        assert!(
            matches!(&refused, HeaderError::Invalid { error, height: 3, .. }
                if matches!(**error, BlockError::ProofOfWork { .. })),
            "{refused}"
        );
        assert_eq!(chain.height(), 0, "nothing of a refused batch joins");
        let mut easier = a.clone();
        easier[0].difficulty = 0;
        let refused = chain.add(&easier, NOW).unwrap_err();
        assert!(
            matches!(&refused, HeaderError::Invalid { error, .. }
                if matches!(**error, BlockError::Difficulty { .. })),
            "{refused}"
        );
        assert!(matches!(
            chain.add(&a[1..], NOW),
            Err(HeaderError::Unconnected { height: 2, .. })
        ));
        chain.add(&a, NOW).unwrap();
        assert_eq!(chain.height(), 3);
    }

    #[test]
    fn the_file_keeps_the_best_chain_through_reorgs_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("headers.dat");
        let genesis = genesis_block().header;
        let a = branch(&genesis, 6, 1);
        let b = branch(&a[2], 5, 2);
        {
            let (mut file, opened) = HeaderFile::open(&path, PARAMS, NOW).unwrap();
            let mut chain = opened.chain;
            let added = chain.add(&a, NOW).unwrap();
            file.save(&chain, added).unwrap();
            let added = chain.add(&b, NOW).unwrap();
            assert_eq!(added.reorg_from, Some(3));
            file.save(&chain, added).unwrap();
            assert!(
                HeaderFile::open(&path, PARAMS, NOW).is_err(),
                "one writer at a time"
            );
        }
        let (file, read) = HeaderFile::open(&path, PARAMS, NOW).unwrap();
        assert_eq!(read.chain.height(), 8);
        assert_eq!(read.chain.tip_hash(), b[4].hash());
        assert!(read.recovery.is_none());
        drop(file);

        // A torn last record is cut at open; the chain keeps what came before it.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 10).unwrap();
        drop(f);
        let (_, opened) = HeaderFile::open(&path, PARAMS, NOW).unwrap();
        assert_eq!(opened.chain.height(), 7);
        assert!(opened.recovery.unwrap().contains("torn"));

        // A header that breaks a rule cuts the file there.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[PREAMBLE + 4 * HEADER_LEN + 83] ^= 0xff; // the height of the header at 5
        std::fs::write(&path, &bytes).unwrap();
        let (_, opened) = HeaderFile::open(&path, PARAMS, NOW).unwrap();
        assert_eq!(opened.chain.height(), 4);
        assert!(opened.recovery.unwrap().contains("cut the headers"));

        // Another network's file is refused, not cut.
        let other = ConsensusParams {
            difficulty: 2,
            ..PARAMS
        };
        assert!(matches!(
            HeaderFile::open(&path, other, NOW),
            Err(HeaderFileError::Foreign { .. })
        ));
        std::fs::write(&path, [b'x'; PREAMBLE + HEADER_LEN]).unwrap();
        assert!(matches!(
            HeaderFile::open(&path, PARAMS, NOW),
            Err(HeaderFileError::Foreign { .. })
        ));
        // A file torn while it was made holds nothing yet: it is made again.
        std::fs::write(&path, &MAGIC[..5]).unwrap();
        let (_, opened) = HeaderFile::open(&path, PARAMS, NOW).unwrap();
        assert_eq!(opened.chain.height(), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREAMBLE as u64);
    }
}
