//! The one consensus encoding: every transaction, block and wire message is turned into bytes
//! and back here, and nowhere else. Header bytes have their own fixed layout (`header`);
//! everything else is postcard, decoded only from a length-checked slice.
//!
//! Decoding is canonical: a value is accepted only if encoding it again gives back exactly the
//! input, so one value has one byte string and ids cannot be malleated (postcard alone would
//! accept, for example, an over-long varint).

use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// Why bytes were not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Input longer than the cap for this kind of value; nothing was decoded.
    #[error("{len} bytes exceeds the cap of {cap} bytes")]
    TooLong {
        /// Input length.
        len: usize,
        /// The cap that applies.
        cap: usize,
    },
    /// Postcard could not decode the bytes (truncated, bad tag, bad length, ...).
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// Bytes left after a complete value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    /// A value that decodes but is not in its one canonical form.
    #[error("non-canonical encoding")]
    NonCanonical,
}

/// Encodes a value. Our types only hold integers, byte strings, sequences and enums, which
/// postcard always encodes; an error here is a bug in a type, not bad input.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("mvbc types always encode")
}

/// Decodes exactly one canonical value from `bytes`, refusing input over `cap` bytes before
/// looking at it.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8], cap: usize) -> Result<T, DecodeError> {
    if bytes.len() > cap {
        return Err(DecodeError::TooLong {
            len: bytes.len(),
            cap,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// A byte string of at most `MAX` bytes; longer ones are refused before they are copied.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Bytes<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> Bytes<MAX> {
    /// Wraps `bytes`, or `None` if longer than `MAX`.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() <= MAX).then_some(Bytes(bytes))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for Bytes<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes[{}]", self.0.len())
    }
}

impl<const MAX: usize> Serialize for Bytes<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Bytes<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const MAX: usize>;
        impl<const MAX: usize> Visitor<'_> for V<MAX> {
            type Value = Bytes<MAX>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "at most {MAX} bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes<MAX>, E> {
                if v.len() > MAX {
                    return Err(E::invalid_length(v.len(), &self));
                }
                Ok(Bytes(v.to_vec()))
            }
        }
        d.deserialize_bytes(V::<MAX>)
    }
}

/// `deserialize_with` for a `Vec<T>` of at most `MAX` elements: a declared length over the cap
/// is refused before anything is allocated.
pub fn bounded_vec<'de, D, T, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T, const MAX: usize>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for V<T, MAX> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a sequence of at most {MAX} elements")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let declared = seq.size_hint().unwrap_or(0);
            if declared > MAX {
                return Err(de::Error::invalid_length(declared, &self));
            }
            let mut out = Vec::with_capacity(declared);
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(de::Error::invalid_length(MAX + 1, &self));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V::<T, MAX>(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Sample {
        n: u64,
        b: Bytes<4>,
        #[serde(deserialize_with = "bounded_vec::<_, _, 3>")]
        v: Vec<u16>,
    }

    #[test]
    fn caps_are_enforced() {
        assert_eq!(
            decode::<u64>(&[0; 20], 10),
            Err(DecodeError::TooLong { len: 20, cap: 10 })
        );
        // A byte string declaring 5 bytes against a cap of 4.
        let bad = [1, 5, 1, 2, 3, 4, 5, 0];
        assert!(matches!(
            decode::<Sample>(&bad, 100),
            Err(DecodeError::Malformed(_))
        ));
        // A vector declaring 2^40 elements: refused, not allocated.
        let mut huge = vec![1, 0];
        huge.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
        assert!(matches!(
            decode::<Sample>(&huge, 100),
            Err(DecodeError::Malformed(_))
        ));
        let four = [1, 0, 4, 1, 2, 3, 4];
        assert!(matches!(
            decode::<Sample>(&four, 100),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_and_non_canonical_bytes_are_refused() {
        let good = encode(&Sample {
            n: 1,
            b: Bytes::new(vec![9]).unwrap(),
            v: vec![7],
        });
        assert!(decode::<Sample>(&good, 100).is_ok());
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            decode::<Sample>(&trailing, 100),
            Err(DecodeError::Trailing(1))
        );
        // n = 1 written as an over-long varint (0x81 0x00).
        let mut overlong = vec![0x81, 0x00];
        overlong.extend_from_slice(&good[1..]);
        assert_eq!(
            decode::<Sample>(&overlong, 100),
            Err(DecodeError::NonCanonical)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(v) = decode::<Sample>(&bytes, 64) {
                prop_assert_eq!(encode(&v), bytes);
            }
        }
    }
}
