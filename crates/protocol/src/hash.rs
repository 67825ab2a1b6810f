//! SHA-256 digests and the proof-of-work comparison on them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 digest: block hashes, transaction ids, merkle nodes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Hash256(pub [u8; 32]);

impl Hash256 {
    /// The all-zero hash: the genesis block's parent.
    pub const ZERO: Hash256 = Hash256([0; 32]);

    /// Number of leading zero bits, counting from the most significant bit of byte 0.
    pub fn leading_zero_bits(&self) -> u32 {
        let mut bits = 0;
        for byte in self.0 {
            if byte == 0 {
                bits += 8;
            } else {
                return bits + byte.leading_zeros();
            }
        }
        bits
    }

    /// Whether this hash has at least `difficulty` leading zero bits.
    pub fn meets_difficulty(&self, difficulty: u32) -> bool {
        self.leading_zero_bits() >= difficulty
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Hash256 {
    Hash256(Sha256::digest(data).into())
}

/// SHA-256 over several slices, as if they were concatenated.
pub fn sha256_concat(parts: &[&[u8]]) -> Hash256 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    Hash256(hasher.finalize().into())
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({self})")
    }
}

/// Why a string is not a 64-character hex hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHashError {
    /// The string does not have exactly 64 characters.
    #[error("expected 64 hex characters, got {0}")]
    Length(usize),
    /// The string has a character that is not a hex digit.
    #[error("not a hex string: {0}")]
    NotHex(String),
}

impl FromStr for Hash256 {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(ParseHashError::Length(s.chars().count()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseHashError::NotHex(s.to_owned()))?;
        Ok(Hash256(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zero_bits_of_hand_made_digests() {
        let mut h = [0xffu8; 32];
        assert_eq!(Hash256(h).leading_zero_bits(), 0);
        h[0] = 0x7f;
        assert_eq!(Hash256(h).leading_zero_bits(), 1);
        h[0] = 0x01;
        assert_eq!(Hash256(h).leading_zero_bits(), 7);
        h[0] = 0x00;
        h[1] = 0x80;
        assert_eq!(Hash256(h).leading_zero_bits(), 8);
        h[1] = 0x00;
        h[2] = 0x0f;
        assert_eq!(Hash256(h).leading_zero_bits(), 20);
        assert_eq!(Hash256::ZERO.leading_zero_bits(), 256);
        assert!(Hash256(h).meets_difficulty(20));
        assert!(!Hash256(h).meets_difficulty(21));
    }

    #[test]
    fn leading_zero_bits_of_real_digests() {
        // Digests computed independently (Python's hashlib); the counts read off the hex by hand:
        // 0x05 = 0000_0101, 0x0007 f4 = 13 zero bits, 0x0000 4f = 17 zero bits.
        let cases = [
            (
                "abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                0,
            ),
            (
                "mvbc-12",
                "052cb234f2998b933d5c99ea124f0a03e8f4dfe4c11971869a703e3686bb6ac6",
                5,
            ),
            (
                "mvbc-31399",
                "0007f49d4f6fa96dd6a158b945cb6b5842b7a422f1fb9d379198255a48b4b8f4",
                13,
            ),
            (
                "mvbc-219018",
                "00004f9655b3c216426596ca6ce7db01e8e41c5d38a5e31bdf1104b0a0580c0e",
                17,
            ),
        ];
        for (input, hex_digest, zeros) in cases {
            let d = sha256(input.as_bytes());
            assert_eq!(d.to_string(), hex_digest, "{input}");
            assert_eq!(d.leading_zero_bits(), zeros, "{input}");
            assert!(
                d.meets_difficulty(zeros) && !d.meets_difficulty(zeros + 1),
                "{input}"
            );
        }
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let h = sha256(b"abc");
        let s = h.to_string();
        assert_eq!(
            s,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.parse::<Hash256>().unwrap(), h);
        assert_eq!(s.to_uppercase().parse::<Hash256>().unwrap(), h);
        assert_eq!("ab".parse::<Hash256>(), Err(ParseHashError::Length(2)));
        assert!(matches!(
            "zz".repeat(32).parse::<Hash256>(),
            Err(ParseHashError::NotHex(_))
        ));
    }

    #[test]
    fn concat_equals_single_hash() {
        assert_eq!(sha256_concat(&[b"ab", b"c"]), sha256(b"abc"));
    }
}
