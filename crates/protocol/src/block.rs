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
    let mut level = leaves(ids);
    while level.len() > 1 {
        level = level_above(&level);
    }
    level[0]
}

/// The merkle tree's leaves: `SHA-256(0x00 || id)` each.
fn leaves(ids: &[Hash256]) -> Vec<Hash256> {
    ids.iter().map(|id| sha256_concat(&[&[0], &id.0])).collect()
}

/// The level above `level`: `SHA-256(0x01 || left || right)` of each pair, an odd last node
/// carried up unchanged.
fn level_above(level: &[Hash256]) -> Vec<Hash256> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => sha256_concat(&[&[1], &l.0, &r.0]),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two"),
        })
        .collect()
}

/// Most siblings a [`MerklePath`] holds: enough for [`MAX_BLOCK_TXS`] leaves.
pub const MAX_MERKLE_DEPTH: usize = 16;
const _: () = assert!(MAX_BLOCK_TXS <= 1 << MAX_MERKLE_DEPTH);

/// Where one transaction id sits under a block's merkle root, and the hashes beside its way up:
/// with the id it gives back the root, so a client holding only the header can check that the
/// block holds the transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerklePath {
    /// The leaf's position (the transaction's in the block).
    pub index: u32,
    /// How many leaves the tree has: it says at each level whether the node has a sibling
    /// or is carried up alone.
    pub leaves: u32,
    /// The sibling at each level where there is one, lowest first.
    #[serde(deserialize_with = "encode::bounded_vec::<_, _, MAX_MERKLE_DEPTH>")]
    pub siblings: Vec<Hash256>,
}

impl MerklePath {
    /// The path of leaf `index` among `ids`; `None` when `index` is not one of them.
    pub fn of(ids: &[Hash256], index: usize) -> Option<MerklePath> {
        if index >= ids.len() {
            return None;
        }
        let mut level = leaves(ids);
        let mut at = index;
        let mut siblings = Vec::new();
        while level.len() > 1 {
            if let Some(sibling) = level.get(at ^ 1) {
                siblings.push(*sibling);
            }
            level = level_above(&level);
            at /= 2;
        }
        Some(MerklePath {
            index: u32::try_from(index).ok()?,
            leaves: u32::try_from(ids.len()).ok()?,
            siblings,
        })
    }

    /// The root that `id` at this path gives; `None` when the path cannot be one of a tree
    /// ([`merkle_root`]'s): an index past the leaves, more leaves than a block holds, or too
    /// few or too many siblings.
    pub fn root(&self, id: &Hash256) -> Option<Hash256> {
        let (mut at, mut width) = (self.index as usize, self.leaves as usize);
        if at >= width || width > MAX_BLOCK_TXS {
            return None;
        }
        let mut node = sha256_concat(&[&[0], &id.0]);
        let mut siblings = self.siblings.iter();
        while width > 1 {
            if at ^ 1 < width {
                let sibling = siblings.next()?;
                node = if at % 2 == 0 {
                    sha256_concat(&[&[1], &node.0, &sibling.0])
                } else {
                    sha256_concat(&[&[1], &sibling.0, &node.0])
                };
            }
            at /= 2;
            width = width.div_ceil(2);
        }
        siblings.next().is_none().then_some(node)
    }
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
    fn every_merkle_path_gives_back_the_root_and_nothing_else_does() {
        for n in 1..=33usize {
            let ids: Vec<Hash256> = (0..n).map(|i| sha256(&i.to_le_bytes())).collect();
            let root = merkle_root(&ids);
            for (i, id) in ids.iter().enumerate() {
                let path = MerklePath::of(&ids, i).unwrap();
                assert_eq!(path.root(id), Some(root), "{i} of {n}");
                // Another id, a changed sibling, another position or leaf count: not the root.
                assert_ne!(path.root(&sha256(b"other")), Some(root));
                if let Some(first) = path.siblings.first() {
                    let mut bad = path.clone();
                    bad.siblings[0] = sha256(&first.0);
                    assert_ne!(bad.root(id), Some(root));
                    let mut short = path.clone();
                    short.siblings.pop();
                    assert_eq!(short.root(id), None, "a missing sibling is no path");
                }
                let mut long = path.clone();
                long.siblings.push(root);
                assert_eq!(long.root(id), None, "a sibling too many is no path");
                let moved = MerklePath {
                    index: (i as u32 + 1) % n as u32,
                    ..path.clone()
                };
                if n > 1 {
                    assert_ne!(moved.root(id), Some(root));
                }
                let past = MerklePath {
                    index: n as u32,
                    ..path.clone()
                };
                assert_eq!(past.root(id), None);
            }
            assert_eq!(MerklePath::of(&ids, n), None);
        }
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
