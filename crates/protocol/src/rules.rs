//! Consensus rules that need no ledger: everything about a block that can be judged from the
//! block itself, its parent's header, the network's parameters and the clock.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::block::{Block, MAX_BLOCK_BYTES};
use crate::hash::Hash256;
use crate::header::{BlockHeader, HEADER_VERSION};
use crate::keys::Address;
use crate::tx::{Transaction, TxError};

/// How far ahead of our clock a block's timestamp may be.
pub const MAX_FUTURE_BLOCK_SECS: u64 = 2 * 60 * 60;

/// The parameters every node of one network must share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsensusParams {
    /// Leading zero bits every block hash must have.
    pub difficulty: u32,
    /// Transactions in every block after the first (the reward included).
    pub block_size: usize,
    /// The reward paid to each block's miner.
    pub block_reward: Amount,
}

/// What tells one mvbc network from another: the first 8 bytes of a hash of genesis and every
/// consensus parameter ([`ConsensusParams::network_id`]). Nodes of two networks cannot agree on
/// a single block after genesis, so each ignores the other's statuses and links, and a data
/// directory remembers the parameters its chain was made with (ADR 13).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct NetworkId(pub [u8; 8]);

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({self})")
    }
}

/// Bytes of [`ConsensusParams::to_bytes`]: genesis's hash, then each parameter.
pub const PARAMS_BYTES: usize = 32 + 4 + 8 + 8;

impl ConsensusParams {
    /// The network these parameters make.
    pub fn network_id(&self) -> NetworkId {
        let mut message = b"mvbc network\0".to_vec();
        message.extend_from_slice(&self.to_bytes());
        let digest = crate::hash::sha256(&message);
        let mut id = [0; 8];
        id.copy_from_slice(&digest.0[..8]);
        NetworkId(id)
    }

    /// Genesis's hash and the parameters, little-endian and fixed-width: what a store's header
    /// holds and the network id hashes.
    pub fn to_bytes(&self) -> [u8; PARAMS_BYTES] {
        let mut out = [0; PARAMS_BYTES];
        out[..32].copy_from_slice(&crate::block::genesis_block().hash().0);
        out[32..36].copy_from_slice(&self.difficulty.to_le_bytes());
        out[36..44].copy_from_slice(&(self.block_size as u64).to_le_bytes());
        out[44..].copy_from_slice(&self.block_reward.units().to_le_bytes());
        out
    }

    /// Reads [`ConsensusParams::to_bytes`]; `None` when the bytes are not that, or name another
    /// genesis (or a `block_size` this machine cannot hold).
    pub fn from_bytes(bytes: &[u8]) -> Option<ConsensusParams> {
        let bytes: &[u8; PARAMS_BYTES] = bytes.try_into().ok()?;
        if bytes[..32] != crate::block::genesis_block().hash().0 {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Some(ConsensusParams {
            difficulty: u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes")),
            block_size: usize::try_from(u64_at(36)).ok()?,
            block_reward: Amount::from_units(u64_at(44)),
        })
    }

    /// What differs from `other`, as `NAME VALUE` pairs of each side: (`["block_size 1"],
    /// ["block_size 2"]`) for a chain of block size 1 read under a config of 2.
    pub fn differences(&self, other: &ConsensusParams) -> (Vec<String>, Vec<String>) {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut note = |name: &str, a: String, b: String| {
            if a != b {
                ours.push(format!("{name} {a}"));
                theirs.push(format!("{name} {b}"));
            }
        };
        note(
            "difficulty",
            self.difficulty.to_string(),
            other.difficulty.to_string(),
        );
        note(
            "block_size",
            self.block_size.to_string(),
            other.block_size.to_string(),
        );
        note(
            "block_reward",
            self.block_reward.to_string(),
            other.block_reward.to_string(),
        );
        (ours, theirs)
    }

    /// How many transactions a block at `height` must hold: the first block after genesis holds
    /// only its reward (nobody has coins yet), every later one exactly `block_size`.
    pub fn required_txs(&self, height: u64) -> usize {
        if height <= 1 { 1 } else { self.block_size }
    }
}

/// Why a block is invalid. Each variant names one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Unknown header version.
    #[error("header version {0} is not {HEADER_VERSION}")]
    Version(u32),
    /// `prev_hash` is not the parent's hash.
    #[error("previous hash {found} is not the parent {expected}")]
    Parent {
        /// The parent's hash.
        expected: Hash256,
        /// What the header says.
        found: Hash256,
    },
    /// Height is not the parent's plus one.
    #[error("height {found} should be {expected}")]
    Height {
        /// Parent height + 1.
        expected: u64,
        /// What the header says.
        found: u64,
    },
    /// Header difficulty differs from the network's.
    #[error("difficulty {found} is not the network's {expected}")]
    Difficulty {
        /// The network's difficulty.
        expected: u32,
        /// What the header says.
        found: u32,
    },
    /// The hash does not have enough leading zero bits.
    #[error("proof of work fails: hash {hash} has {zeros} leading zero bits, {difficulty} needed")]
    ProofOfWork {
        /// The block hash.
        hash: Hash256,
        /// Its leading zero bits.
        zeros: u32,
        /// Bits required.
        difficulty: u32,
    },
    /// Timestamp too far ahead of our clock.
    #[error("timestamp {timestamp} is more than {MAX_FUTURE_BLOCK_SECS} s after now ({now})")]
    FutureTimestamp {
        /// The header's timestamp.
        timestamp: u64,
        /// Our clock.
        now: u64,
    },
    /// Wrong number of transactions for this height.
    #[error("{found} transactions where {expected} are required")]
    TxCount {
        /// Required by `block_size`.
        expected: usize,
        /// In the block.
        found: usize,
    },
    /// Encoded block over the cap.
    #[error("encoded block is {0} bytes, over the cap of {MAX_BLOCK_BYTES}")]
    TooLarge(usize),
    /// The merkle root does not match the transactions.
    #[error("merkle root {found} does not match the transactions ({expected})")]
    MerkleRoot {
        /// Computed from the transactions.
        expected: Hash256,
        /// What the header says.
        found: Hash256,
    },
    /// The first transaction is not a reward.
    #[error("the first transaction is not the reward")]
    MissingReward,
    /// A second reward after the first.
    #[error("transaction {0} is a second reward")]
    ExtraReward(usize),
    /// The reward pays the wrong amount or names the wrong height.
    #[error("reward of {amount} at height {height}: expected {expected} at height {block_height}")]
    BadReward {
        /// Paid.
        amount: Amount,
        /// The network's `block_reward`.
        expected: Amount,
        /// Height named in the reward.
        height: u64,
        /// The block's height.
        block_height: u64,
    },
    /// The same transaction id twice in one block.
    #[error("transaction {0} appears twice in the block")]
    DuplicateTx(Hash256),
    /// A payment invalid on its own.
    #[error("transaction {id}: {error}")]
    InvalidTx {
        /// Its id.
        id: Hash256,
        /// What is wrong.
        error: TxError,
    },
    /// A transaction already confirmed in this chain (replay).
    #[error("transaction {0} is already in the chain")]
    Replay(Hash256),
    /// A sender spends more than it holds at that point of the block.
    #[error("transaction {id}: {from} spends {amount} but holds {balance}")]
    Overspend {
        /// The payment's id.
        id: Hash256,
        /// The sender.
        from: Address,
        /// The amount.
        amount: Amount,
        /// The sender's balance at that point.
        balance: Amount,
    },
    /// Crediting an address would overflow.
    #[error("transaction {0} overflows a balance")]
    Overflow(Hash256),
    /// A block further down its branch broke a rule.
    #[error("it builds on invalid block {0}")]
    InvalidAncestor(Hash256),
}

/// Checks every rule that needs no ledger. `now` is our clock in Unix seconds.
pub fn check_block(
    block: &Block,
    parent: &BlockHeader,
    params: &ConsensusParams,
    now: u64,
) -> Result<(), BlockError> {
    checked_size(block, parent, params, now).map(|_| ())
}

/// Every rule a header alone can be held to, given its parent's: version, link, height,
/// difficulty, proof of work and timestamp. What a client checks of a branch's headers before
/// it fetches any block body.
pub fn check_header(
    h: &BlockHeader,
    parent: &BlockHeader,
    params: &ConsensusParams,
    now: u64,
) -> Result<(), BlockError> {
    check_header_known(h, h.hash(), parent.height, parent.hash(), params, now)
}

/// [`check_header`] against a parent known only by its height and hash: what a light client
/// keeps of a block below its tip.
pub fn check_header_on(
    h: &BlockHeader,
    parent_height: u64,
    parent_hash: Hash256,
    params: &ConsensusParams,
    now: u64,
) -> Result<(), BlockError> {
    check_header_known(h, h.hash(), parent_height, parent_hash, params, now)
}

/// What a caller already worked out about a block it checks, so the checks need not work it
/// out again: its hash, its parent's, its encoded size when the block was just decoded from
/// its canonical bytes (decoding checks they are canonical, so their length is the size), and
/// whether its payments' signatures were checked already (a block this node validated before,
/// read back from its own store under its validated mark).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Known {
    pub hash: Hash256,
    pub parent_hash: Hash256,
    pub size: Option<usize>,
    pub signed: bool,
}

/// [`check_header`] of a header whose hash, parent's height and parent's hash are known.
fn check_header_known(
    h: &BlockHeader,
    hash: Hash256,
    parent_height: u64,
    parent_hash: Hash256,
    params: &ConsensusParams,
    now: u64,
) -> Result<(), BlockError> {
    if h.version != HEADER_VERSION {
        return Err(BlockError::Version(h.version));
    }
    if h.prev_hash != parent_hash {
        return Err(BlockError::Parent {
            expected: parent_hash,
            found: h.prev_hash,
        });
    }
    let expected_height = parent_height.saturating_add(1);
    if h.height != expected_height {
        return Err(BlockError::Height {
            expected: expected_height,
            found: h.height,
        });
    }
    if h.difficulty != params.difficulty {
        return Err(BlockError::Difficulty {
            expected: params.difficulty,
            found: h.difficulty,
        });
    }
    if !hash.meets_difficulty(h.difficulty) {
        return Err(BlockError::ProofOfWork {
            hash,
            zeros: hash.leading_zero_bits(),
            difficulty: h.difficulty,
        });
    }
    if h.timestamp > now.saturating_add(MAX_FUTURE_BLOCK_SECS) {
        return Err(BlockError::FutureTimestamp {
            timestamp: h.timestamp,
            now,
        });
    }
    Ok(())
}

/// [`check_block`], giving back the block's encoded size it measured on the way.
pub(crate) fn checked_size(
    block: &Block,
    parent: &BlockHeader,
    params: &ConsensusParams,
    now: u64,
) -> Result<usize, BlockError> {
    let known = Known {
        hash: block.header.hash(),
        parent_hash: parent.hash(),
        size: None,
        signed: false,
    };
    checked_size_known(block, parent, known, params, now)
}

/// [`checked_size`] of a block of which `known` is worked out already.
pub(crate) fn checked_size_known(
    block: &Block,
    parent: &BlockHeader,
    known: Known,
    params: &ConsensusParams,
    now: u64,
) -> Result<usize, BlockError> {
    let h = &block.header;
    check_header_known(h, known.hash, parent.height, known.parent_hash, params, now)?;
    let expected = params.required_txs(h.height);
    if block.transactions.len() != expected {
        return Err(BlockError::TxCount {
            expected,
            found: block.transactions.len(),
        });
    }
    let size = known.size.unwrap_or_else(|| block.encode().len());
    if size > MAX_BLOCK_BYTES {
        return Err(BlockError::TooLarge(size));
    }
    let ids: Vec<Hash256> = block.transactions.iter().map(Transaction::id).collect();
    let root = crate::block::merkle_root(&ids);
    if root != h.merkle_root {
        return Err(BlockError::MerkleRoot {
            expected: root,
            found: h.merkle_root,
        });
    }
    check_reward(block, params)?;
    let mut seen = HashSet::with_capacity(ids.len());
    for (tx, id) in block.transactions.iter().zip(&ids) {
        if !seen.insert(*id) {
            return Err(BlockError::DuplicateTx(*id));
        }
        if let Transaction::Payment(p) = tx
            && !known.signed
        {
            p.verify()
                .map_err(|error| BlockError::InvalidTx { id: *id, error })?;
        }
    }
    Ok(size)
}

fn check_reward(block: &Block, params: &ConsensusParams) -> Result<(), BlockError> {
    let Some(Transaction::Reward(reward)) = block.transactions.first() else {
        return Err(BlockError::MissingReward);
    };
    if let Some(i) = block
        .transactions
        .iter()
        .skip(1)
        .position(|t| matches!(t, Transaction::Reward(_)))
    {
        return Err(BlockError::ExtraReward(i + 1));
    }
    if reward.amount != params.block_reward || reward.height != block.header.height {
        return Err(BlockError::BadReward {
            amount: reward.amount,
            expected: params.block_reward,
            height: reward.height,
            block_height: block.header.height,
        });
    }
    Ok(())
}
