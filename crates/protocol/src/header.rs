//! The block header: a fixed 96-byte layout, hashed for proof of work.
//!
//! ```text
//! offset  size  field         encoding
//!      0     4  version       u32 big-endian
//!      4    32  prev_hash     raw bytes
//!     36    32  merkle_root   raw bytes
//!     68     8  timestamp     u64 big-endian, seconds since the Unix epoch
//!     76     8  height        u64 big-endian
//!     84     4  difficulty    u32 big-endian, zero bits the hash must start with
//!     88     8  nonce         u64 big-endian
//! ```
//!
//! SHA-256 works on 64-byte blocks, so the 96 header bytes plus padding make two blocks. The
//! first block (bytes 0..64) holds nothing the miner changes, so its compression, the midstate,
//! is computed once per work unit. The nonce is the header's last field: in the second block it
//! is message words 6 (high half) and 7 (low half), so words 0..=5 and every padding word are
//! constant too, and each nonce tried costs exactly one compression. Big-endian integers make
//! each nonce half one SHA-256 word as-is.

use crate::hash::{Hash256, sha256};

/// Encoded size of a header.
pub const HEADER_LEN: usize = 96;
/// Byte offset of the nonce in the encoded header.
pub const NONCE_OFFSET: usize = 88;
/// The header version this code writes and accepts. Version 2 counts the proof of work's zero
/// bits from the digest's end (version 1, before 2026-11-25, counted from its start).
pub const HEADER_VERSION: u32 = 2;

// The layout promises, checked when the crate compiles: 96 bytes + 0x80 + an 8-byte length fit
// two SHA-256 blocks; the nonce is the last field, in the second block, on a word boundary.
const _: () = assert!(HEADER_LEN + 9 <= 128 && NONCE_OFFSET >= 64);
const _: () = assert!(NONCE_OFFSET + 8 == HEADER_LEN && NONCE_OFFSET.is_multiple_of(4));

/// A block header. See the module docs for the byte layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockHeader {
    /// Layout and rules version; [`HEADER_VERSION`].
    pub version: u32,
    /// Hash of the parent block's header.
    pub prev_hash: Hash256,
    /// Merkle root of the block's transaction ids.
    pub merkle_root: Hash256,
    /// Seconds since the Unix epoch, set by the miner.
    pub timestamp: u64,
    /// Blocks between this one and genesis (genesis is 0).
    pub height: u64,
    /// Leading zero bits the hash must have.
    pub difficulty: u32,
    /// Varied by the miner until the hash meets `difficulty`.
    pub nonce: u64,
}

impl BlockHeader {
    /// The 96-byte consensus encoding.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.version.to_be_bytes());
        b[4..36].copy_from_slice(&self.prev_hash.0);
        b[36..68].copy_from_slice(&self.merkle_root.0);
        b[68..76].copy_from_slice(&self.timestamp.to_be_bytes());
        b[76..84].copy_from_slice(&self.height.to_be_bytes());
        b[84..88].copy_from_slice(&self.difficulty.to_be_bytes());
        b[NONCE_OFFSET..HEADER_LEN].copy_from_slice(&self.nonce.to_be_bytes());
        b
    }

    /// Decodes the 96-byte layout. Every byte string of the right length is a header; the
    /// rules, not the decoder, judge its fields.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> BlockHeader {
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(w)
        };
        let hash_at = |i: usize| {
            let mut h = [0u8; 32];
            h.copy_from_slice(&b[i..i + 32]);
            Hash256(h)
        };
        BlockHeader {
            version: u32_at(0),
            prev_hash: hash_at(4),
            merkle_root: hash_at(36),
            timestamp: u64_at(68),
            height: u64_at(76),
            difficulty: u32_at(84),
            nonce: u64_at(NONCE_OFFSET),
        }
    }

    /// The block hash: single SHA-256 of the encoded header.
    pub fn hash(&self) -> Hash256 {
        sha256(&self.to_bytes())
    }

    /// Whether the hash, as shown (byte-reversed), starts with at least `difficulty` zero bits.
    pub fn meets_own_difficulty(&self) -> bool {
        self.hash().meets_difficulty(self.difficulty)
    }

    /// Counts nonces up from this one until the header meets its own difficulty: the plainest
    /// search, for tests and tools at low difficulties (the miner's engines are the fast ones).
    pub fn solve(&mut self) {
        while !self.meets_own_difficulty() {
            self.nonce += 1;
        }
    }

    /// Expected hashes to find this block: 2^difficulty, saturating for absurd difficulties.
    pub fn work(&self) -> u128 {
        work_for_difficulty(self.difficulty)
    }
}

/// Expected number of hashes to meet `difficulty`: 2^difficulty (saturates at 2^127).
pub fn work_for_difficulty(difficulty: u32) -> u128 {
    1u128 << difficulty.min(127)
}

impl serde::Serialize for BlockHeader {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for BlockHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = BlockHeader;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "{HEADER_LEN} header bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<BlockHeader, E> {
                let bytes: &[u8; HEADER_LEN] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(BlockHeader::from_bytes(bytes))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_header() -> impl Strategy<Value = BlockHeader> {
        (
            any::<u32>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(|(version, p, m, timestamp, height, difficulty, nonce)| {
                BlockHeader {
                    version,
                    prev_hash: Hash256(p),
                    merkle_root: Hash256(m),
                    timestamp,
                    height,
                    difficulty,
                    nonce,
                }
            })
    }

    proptest! {
        #[test]
        fn layout_round_trips(h in arb_header()) {
            prop_assert_eq!(BlockHeader::from_bytes(&h.to_bytes()), h);
        }

        #[test]
        fn bytes_round_trip(b in proptest::collection::vec(any::<u8>(), HEADER_LEN)) {
            let arr: [u8; HEADER_LEN] = b.clone().try_into().unwrap();
            prop_assert_eq!(BlockHeader::from_bytes(&arr).to_bytes().to_vec(), b);
        }

        #[test]
        fn nonce_only_touches_the_last_sha_block(h in arb_header(), nonce: u64) {
            let a = h.to_bytes();
            let b = BlockHeader { nonce, ..h }.to_bytes();
            // The first 64-byte SHA-256 block, and the last block up to the nonce, are constant.
            prop_assert_eq!(&a[..NONCE_OFFSET], &b[..NONCE_OFFSET]);
        }
    }

    #[test]
    fn nonce_sits_in_the_last_sha256_block() {
        assert_eq!(
            (NONCE_OFFSET - 64) % 4,
            0,
            "nonce halves are whole SHA-256 words"
        );
        let h = BlockHeader {
            version: 1,
            prev_hash: Hash256([0xaa; 32]),
            merkle_root: Hash256([0xbb; 32]),
            timestamp: 0x0102030405060708,
            height: 7,
            difficulty: 20,
            nonce: 0x1122334455667788,
        };
        let b = h.to_bytes();
        assert_eq!(
            &b[88..96],
            &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(&b[68..76], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn serde_uses_the_fixed_layout() {
        let h = BlockHeader {
            version: 1,
            prev_hash: Hash256([1; 32]),
            merkle_root: Hash256([2; 32]),
            timestamp: 3,
            height: 4,
            difficulty: 5,
            nonce: 6,
        };
        let enc = postcard::to_stdvec(&h).unwrap();
        assert_eq!(enc.len(), 1 + HEADER_LEN); // varint length prefix then the layout
        assert_eq!(&enc[1..], &h.to_bytes());
        assert_eq!(postcard::from_bytes::<BlockHeader>(&enc).unwrap(), h);
        assert!(postcard::from_bytes::<BlockHeader>(&[5, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn work_doubles_per_bit() {
        assert_eq!(work_for_difficulty(0), 1);
        assert_eq!(work_for_difficulty(20), 1 << 20);
        assert_eq!(work_for_difficulty(500), 1 << 127);
    }
}
