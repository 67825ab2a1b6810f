//! What a light wallet is told of its addresses, and how it checks what it is told.
//!
//! A block server with an index answers [`crate::wire::Request::History`]: every transaction
//! of the best chain that touches the addresses asked for, from a height on, each with the
//! block it is in and its [`MerklePath`] there ([`ProvenTx`]). The wallet holds the
//! proof-of-work-checked headers ([`crate::headers`]) and counts a transaction only when its
//! path leads to the merkle root of a header of its own best chain ([`ProvenTx::check`]).
//!
//! So a lying server cannot make up a payment, move one to another block, or count one from a
//! branch the wallet does not follow. What it can still do is leave transactions out: the
//! wallet asks more than one server and keeps every proven transaction any of them gives.

use serde::{Deserialize, Serialize};

use crate::block::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS, MAX_MERKLE_DEPTH, MerklePath};
use crate::hash::Hash256;
use crate::headers::HeaderChain;
use crate::keys::Address;
use crate::tx::{Transaction, TxError};

/// Most addresses one history request names.
pub const MAX_HISTORY_ADDRESSES: usize = 64;
/// Most transactions in one history reply: a page stops after the block that passes
/// [`MAX_BLOCK_TXS`], and a block holds at most that many.
pub const MAX_PROVEN_PER_REPLY: usize = 2 * MAX_BLOCK_TXS;
/// A page stops after the block that passes this many bytes of transactions: with one
/// largest block after it, a reply stays under [`crate::wire::MAX_REPLY_BYTES`].
pub const HISTORY_REPLY_BYTES: usize = 2 << 20;
/// Bytes of one [`ProvenTx`] besides its transaction, at most: height, block hash, index and
/// leaf count, the siblings.
const PROOF_BYTES: usize = 10 + 32 + 5 + 5 + 1 + MAX_MERKLE_DEPTH * 32;
const _: () = assert!(
    HISTORY_REPLY_BYTES + MAX_BLOCK_BYTES + MAX_PROVEN_PER_REPLY * PROOF_BYTES + 64
        < crate::wire::MAX_REPLY_BYTES
);

/// One transaction of the best chain, with what proves it is there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenTx {
    /// The height of its block.
    pub height: u64,
    /// Its block's hash.
    pub block: Hash256,
    /// The transaction.
    pub tx: Transaction,
    /// Its path to the block's merkle root.
    pub path: MerklePath,
}

/// Why a proven transaction is not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Its block is not the wallet's best chain's at its height: of another branch, or made
    /// up. (Not a lie in itself: the server may follow another branch for now.)
    #[error("block {block} at height {height} is not on this wallet's chain")]
    UnknownHeader {
        /// The block named.
        block: Hash256,
        /// The height named.
        height: u64,
    },
    /// The path does not lead from the transaction to the block's merkle root.
    #[error("transaction {id} is not in block {block}: its merkle path leads elsewhere")]
    BadPath {
        /// The transaction's id.
        id: Hash256,
        /// The block named.
        block: Hash256,
    },
    /// A payment whose signature does not hold.
    #[error("transaction {id}: {error}")]
    BadTx {
        /// The transaction's id.
        id: Hash256,
        /// Why.
        error: TxError,
    },
    /// It touches none of the addresses asked for.
    #[error("transaction {id} touches none of the addresses asked for")]
    NotAsked {
        /// The transaction's id.
        id: Hash256,
    },
}

impl ProofError {
    /// Whether only a lying server sends this: every other error but
    /// [`ProofError::UnknownHeader`].
    pub fn is_lie(&self) -> bool {
        !matches!(self, ProofError::UnknownHeader { .. })
    }
}

impl ProvenTx {
    /// Checks that the transaction is in the block of `headers`'s best chain it names, and
    /// touches one of `asked`.
    pub fn check(&self, headers: &HeaderChain, asked: &[Address]) -> Result<(), ProofError> {
        let id = self.tx.id();
        let merkle_root = headers
            .merkle_root_at(self.height)
            .filter(|_| headers.holds(self.height, &self.block))
            .ok_or(ProofError::UnknownHeader {
                block: self.block,
                height: self.height,
            })?;
        if self.path.root(&id) != Some(merkle_root) {
            return Err(ProofError::BadPath {
                id,
                block: self.block,
            });
        }
        if !asked.iter().any(|a| self.tx.touches(a).is_some()) {
            return Err(ProofError::NotAsked { id });
        }
        if let Transaction::Payment(p) = &self.tx {
            p.verify()
                .map_err(|error| ProofError::BadTx { id, error })?;
        }
        Ok(())
    }
}
