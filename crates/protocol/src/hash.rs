//! SHA-256 digests and the proof-of-work comparison on them.
//!
//! A digest is kept as SHA-256 produced it, but shown, parsed and judged byte-reversed, as
//! Bitcoin shows its block hashes: the zeros a block needs are at the end of the digest, in its
//! last word, which SHA-256 fixes three rounds before the end, so miners skip those rounds
//! (`docs/adr/0004-proof-of-work-at-the-digest-end.md`).

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

    /// Number of leading zero bits of the hash as it is shown: from the most significant bit of
    /// the digest's last byte (byte 31) towards its first.
    pub fn leading_zero_bits(&self) -> u32 {
        let mut bits = 0;
        for &byte in self.0.iter().rev() {
            if byte == 0 {
                bits += 8;
            } else {
                return bits + byte.leading_zeros();
            }
        }
        bits
    }

    /// Compares two hashes as numbers in the order they are shown (byte-reversed): `Less`
    /// when `self` is the lower, the one with more leading zeros. Fork choice breaks a tie
    /// between equal-work chains by this order ([`crate::chain`]).
    pub fn cmp_shown(&self, other: &Hash256) -> std::cmp::Ordering {
        self.0.iter().rev().cmp(other.0.iter().rev())
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
        let mut shown = self.0;
        shown.reverse();
        f.write_str(&hex::encode(shown))
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
        out.reverse();
        Ok(Hash256(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_compare_as_shown() {
        let mut low = [0xff; 32];
        low[31] = 0x00; // shown first: 00ff...ff
        let mut high = [0x00; 32];
        high[31] = 0x01; // shown first: 0100...00
        let (low, high) = (Hash256(low), Hash256(high));
        assert!(low.to_string() < high.to_string());
        assert_eq!(low.cmp_shown(&high), std::cmp::Ordering::Less);
        assert_eq!(high.cmp_shown(&low), std::cmp::Ordering::Greater);
        assert_eq!(low.cmp_shown(&low), std::cmp::Ordering::Equal);
        assert!(low.leading_zero_bits() > high.leading_zero_bits());
    }

    #[test]
    fn leading_zero_bits_of_hand_made_digests() {
        // Counted from the last byte, as the hash is shown.
        let mut h = [0xffu8; 32];
        assert_eq!(Hash256(h).leading_zero_bits(), 0);
        h[0] = 0x00;
        assert_eq!(
            Hash256(h).leading_zero_bits(),
            0,
            "the first byte is shown last"
        );
        h[31] = 0x7f;
        assert_eq!(Hash256(h).leading_zero_bits(), 1);
        h[31] = 0x01;
        assert_eq!(Hash256(h).leading_zero_bits(), 7);
        h[31] = 0x00;
        h[30] = 0x80;
        assert_eq!(Hash256(h).leading_zero_bits(), 8);
        h[30] = 0x00;
        h[29] = 0x0f;
        assert_eq!(Hash256(h).leading_zero_bits(), 20);
        assert!(Hash256(h).to_string().starts_with("00000f"));
        assert_eq!(Hash256::ZERO.leading_zero_bits(), 256);
        assert!(Hash256(h).meets_difficulty(20));
        assert!(!Hash256(h).meets_difficulty(21));
    }

    #[test]
    fn leading_zero_bits_of_real_digests() {
        // Digests computed independently (Python's hashlib, `digest()[::-1].hex()`): SHA-256
        // of "abc" is ba7816bf...f20015ad, shown byte-reversed. The counts read off the hex by
        // hand: 0x07 = 0000_0111, 0x0006 e1 = 13 zero bits, 0x0000 57 = 17 zero bits.
        let cases = [
            (
                "abc",
                "ad1500f261ff10b49c7a1796a36103b02322ae5dde404141eacf018fbf1678ba",
                0,
            ),
            (
                "mvbc-59",
                "07dbe07503382302ad0b3cbf3f4d11879b2f8bcc29e1b4699a48166a36e18da6",
                5,
            ),
            (
                "mvbc-7757",
                "0006e18ef7673e9fe9f4e1f4330c86d95123145861f89dfa4d7c042e743eba6e",
                13,
            ),
            (
                "mvbc-222896",
                "000057c01d8dcb12cbe4a3c0a2a763d214ed468db00b6a6584993f3736bff06f",
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
            "ad1500f261ff10b49c7a1796a36103b02322ae5dde404141eacf018fbf1678ba"
        );
        assert_eq!(h.0[0], 0xba, "kept as SHA-256 wrote it");
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
