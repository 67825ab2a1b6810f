//! Blocks, the merkle root of their transaction ids, and the genesis block.

use serde::{Deserialize, Serialize};

use crate::encode::{self, DecodeError};
use crate::hash::{Hash256, sha256_concat};
use crate::header::{BlockHeader, HEADER_VERSION};
use crate::tx::Transaction;

/// Cap on one encoded block, checked before decoding and by the rules.
pub const MAX_BLOCK_BYTES: usize = 4 << 20;
/// Cap on the transactions in one block (and so on `block_size`).
pub const MAX_BLOCK_TXS: usize = 1_000;

/// A header and its transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header, whose hash is the block's id.
    pub header: BlockHeader,
    /// The reward first, then payments.
    #[serde(deserialize_with = "encode::bounded_vec::<_, _, MAX_BLOCK_TXS>")]
    pub transactions: Vec<Transaction>,
}

impl Block {
    /// The block hash (of the header).
    pub fn hash(&self) -> Hash256 {
        self.header.hash()
    }

    /// The block after `parent` holding `transactions` (the reward first), stamped `timestamp`
    /// at `difficulty`, with its merkle root computed and nonce 0: what a miner searches a
    /// nonce for. The one way blocks are put together, by the node and by tests alike.
    pub fn assemble(
        parent: &BlockHeader,
        transactions: Vec<Transaction>,
        timestamp: u64,
        difficulty: u32,
    ) -> Block {
        let ids: Vec<Hash256> = transactions.iter().map(Transaction::id).collect();
        Block {
            header: BlockHeader {
                version: HEADER_VERSION,
                prev_hash: parent.hash(),
                merkle_root: merkle_root(&ids),
                timestamp,
                height: parent.height + 1,
                difficulty,
                nonce: 0,
            },
            transactions,
        }
    }

    /// Merkle root of this block's transaction ids.
    pub fn compute_merkle_root(&self) -> Hash256 {
        let ids: Vec<Hash256> = self.transactions.iter().map(Transaction::id).collect();
        merkle_root(&ids)
    }

    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode::encode(self)
    }

    /// Decodes one canonical block of at most [`MAX_BLOCK_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Block, DecodeError> {
        encode::decode(bytes, MAX_BLOCK_BYTES)
    }
}

/// Merkle root of `ids`: leaves are `SHA-256(0x00 || id)`, inner nodes
/// `SHA-256(0x01 || left || right)`, and an odd node is carried up unchanged. The prefixes keep
/// leaves and inner nodes apart, and carrying (rather than duplicating, as Bitcoin does) means
/// two different id lists never share a root. No ids give the zero hash.
pub fn merkle_root(ids: &[Hash256]) -> Hash256 {
    if ids.is_empty() {
        return Hash256::ZERO;
    }
    let mut level: Vec<Hash256> = ids.iter().map(|id| sha256_concat(&[&[0], &id.0])).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => sha256_concat(&[&[1], &l.0, &r.0]),
                [single] => *single,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
    }
    level[0]
}

/// Genesis timestamp: 2026-11-24T00:00:00Z.
pub const GENESIS_TIMESTAMP: u64 = 1_795_478_400;

/// The one genesis block, identical on every node: no transactions, no proof of work (it is not
/// mined, it is agreed), height 0.
pub fn genesis_block() -> Block {
    Block {
        header: BlockHeader {
            version: HEADER_VERSION,
            prev_hash: Hash256::ZERO,
            merkle_root: Hash256::ZERO,
            timestamp: GENESIS_TIMESTAMP,
            height: 0,
            difficulty: 0,
            nonce: 0,
        },
        transactions: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256;
    use proptest::prelude::*;

    #[test]
    fn merkle_root_by_hand() {
        let [a, b, c] = [sha256(b"a"), sha256(b"b"), sha256(b"c")];
        let leaf = |h: Hash256| sha256_concat(&[&[0], &h.0]);
        let node = |l: Hash256, r: Hash256| sha256_concat(&[&[1], &l.0, &r.0]);
        assert_eq!(merkle_root(&[a]), leaf(a));
        assert_eq!(merkle_root(&[a, b]), node(leaf(a), leaf(b)));
        assert_eq!(
            merkle_root(&[a, b, c]),
            node(node(leaf(a), leaf(b)), leaf(c))
        );
        // Bitcoin's duplication weakness: [a, b, c] and [a, b, c, c] must differ.
        assert_ne!(merkle_root(&[a, b, c]), merkle_root(&[a, b, c, c]));
        assert_ne!(merkle_root(&[a, b]), merkle_root(&[b, a]));
    }

    #[test]
    fn genesis_is_constant() {
        let g = genesis_block();
        assert_eq!(g.hash(), genesis_block().hash());
        assert_eq!(g.compute_merkle_root(), g.header.merkle_root);
        // Pinned: a change to genesis or to the header layout splits the network. Computed
        // independently (Python: SHA-256 of the 96 header bytes, shown byte-reversed); re-pinned
        // for header version 2 (proof of work counted from the digest's end).
        assert_eq!(
            g.hash().to_string(),
            "dcc60049cd50ef547319f324e47d497bc71d8a422d5404b5147b4cf908e6501e"
        );
    }

    #[test]
    fn oversized_blocks_are_refused_before_decoding() {
        let big = vec![0u8; MAX_BLOCK_BYTES + 1];
        assert!(matches!(
            Block::decode(&big),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn block_declaring_too_many_transactions_is_refused() {
        let mut bytes = genesis_block().encode();
        // Replace the empty-vector length (last byte, 0) with MAX_BLOCK_TXS + 1 as a varint.
        bytes.pop();
        bytes.extend_from_slice(&[0xe9, 0x07]); // 1001
        assert!(matches!(
            Block::decode(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(b) = Block::decode(&bytes) {
                prop_assert_eq!(b.encode(), bytes);
            }
        }
    }
}
