//! Keys, addresses and RSASSA-PSS (SHA-256) signatures.

use std::fmt;
use std::str::FromStr;

use pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pss::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::hash::{Hash256, ParseHashError, sha256};

/// Smallest RSA key size accepted for new keys and in transactions.
pub const MIN_KEY_BITS: usize = 1024;
/// Largest RSA key size accepted (rsa's own limit; the largest `key_size`).
pub const MAX_KEY_BITS: usize = 8192;
/// The one public exponent accepted, in keys and in transactions: 65537, what every RSA
/// library makes. A consensus rule: with it and the cap on the modulus, the cost of checking
/// any signature off the network is bounded by that of an 8192-bit key (1.1 ms measured,
/// `cargo bench --bench payments`; a made-up exponent of 2^33 - 1 cost 1.33 ms before).
pub const PUBLIC_EXPONENT: u32 = 65_537;
/// Cap on a DER-encoded public key in a transaction: an 8192-bit key is about 1,070 bytes.
pub const MAX_PUBLIC_KEY_DER_LEN: usize = 1_100;
/// Cap on a signature in a transaction: one modulus length at [`MAX_KEY_BITS`].
pub const MAX_SIGNATURE_LEN: usize = MAX_KEY_BITS / 8;

/// Where coins live: SHA-256 of a public key's DER (SubjectPublicKeyInfo) encoding, shown as 64
/// lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address(pub Hash256);

impl Address {
    /// The address of a DER-encoded public key.
    pub fn of_public_key_der(der: &[u8]) -> Address {
        Address(sha256(der))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.0)
    }
}

impl FromStr for Address {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Address)
    }
}

/// What went wrong with a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The requested size is outside what mvbc accepts.
    #[error("key size {0} bits is outside {MIN_KEY_BITS}..={MAX_KEY_BITS}")]
    Size(usize),
    /// RSA key generation failed.
    #[error("key generation failed: {0}")]
    Generate(rsa::Error),
    /// The key's public exponent is not [`PUBLIC_EXPONENT`]: its payments would be refused.
    #[error("public exponent is not {PUBLIC_EXPONENT}")]
    Exponent,
    /// Not a PKCS#8 PEM RSA private key.
    #[error("not a PKCS#8 PEM RSA private key: {0}")]
    Pem(String),
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key bytes are not a DER RSA public key mvbc accepts.
    #[error("malformed public key: {0}")]
    PublicKey(String),
    /// The signature bytes are not a signature for that key, or do not match the message.
    #[error("signature does not verify")]
    Mismatch,
}

/// A private key with its public half, DER encoding and address worked out once.
pub struct KeyPair {
    signing: SigningKey<Sha256>,
    public_der: Vec<u8>,
    address: Address,
}

impl KeyPair {
    /// Generates a fresh key of `bits` bits from the operating system's randomness.
    pub fn generate(bits: usize) -> Result<KeyPair, KeyError> {
        if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
            return Err(KeyError::Size(bits));
        }
        let key = PrivateKey::new(&mut rand::rng(), bits).map_err(KeyError::Generate)?;
        Self::from_private_key(key)
    }

    fn from_private_key(key: PrivateKey) -> Result<KeyPair, KeyError> {
        let bits = key.as_public_key().size() * 8;
        if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
            return Err(KeyError::Size(bits));
        }
        if !has_standard_exponent(key.as_public_key()) {
            return Err(KeyError::Exponent);
        }
        let public_der = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| KeyError::Pem(e.to_string()))?
            .into_vec();
        let address = Address::of_public_key_der(&public_der);
        Ok(KeyPair {
            signing: SigningKey::new(key),
            public_der,
            address,
        })
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<KeyPair, KeyError> {
        let key = PrivateKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Pem(e.to_string()))?;
        Self::from_private_key(key)
    }

    /// The private key as PKCS#8 PEM text.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let pem = self
            .signing
            .as_ref()
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        Ok(pem.as_str().to_owned())
    }

    /// The public key's DER (SubjectPublicKeyInfo) encoding.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    /// The address this key controls.
    pub fn address(&self) -> Address {
        self.address
    }

    /// A randomized RSASSA-PSS signature of `msg` with SHA-256.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.signing.sign(msg).to_vec()
    }

    /// An RSASSA-PSS signature of `msg` whose salt comes from `rng`: the same bytes for the
    /// same state of `rng`, for a simulation that must replay from its seed.
    pub fn sign_with_rng<R: rand::CryptoRng + ?Sized>(&self, rng: &mut R, msg: &[u8]) -> Vec<u8> {
        use rsa::signature::RandomizedSigner;
        self.signing.sign_with_rng(rng, msg).to_vec()
    }
}

/// Whether the key's public exponent is [`PUBLIC_EXPONENT`].
fn has_standard_exponent(key: &impl PublicKeyParts) -> bool {
    *key.e_bytes() == PUBLIC_EXPONENT.to_be_bytes()[1..]
}

/// Checks an RSASSA-PSS (SHA-256) signature of `msg` by the DER-encoded public key: a key of
/// [`MIN_KEY_BITS`] to [`MAX_KEY_BITS`] with exponent [`PUBLIC_EXPONENT`], or it is refused
/// before any arithmetic.
pub fn verify_signature(public_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
    if public_der.len() > MAX_PUBLIC_KEY_DER_LEN {
        return Err(SignatureError::PublicKey(format!(
            "{} bytes is too long",
            public_der.len()
        )));
    }
    let key = PublicKey::from_public_key_der(public_der)
        .map_err(|e| SignatureError::PublicKey(e.to_string()))?;
    let bits = key.size() * 8;
    if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
        return Err(SignatureError::PublicKey(format!(
            "{bits} bits is outside {MIN_KEY_BITS}..={MAX_KEY_BITS}"
        )));
    }
    if !has_standard_exponent(&key) {
        return Err(SignatureError::PublicKey(format!(
            "public exponent is not {PUBLIC_EXPONENT}"
        )));
    }
    let sig = Signature::try_from(sig).map_err(|_| SignatureError::Mismatch)?;
    VerifyingKey::<Sha256>::new(key)
        .verify(msg, &sig)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Test keys are slow to make in debug builds: share a few small ones.
    pub(crate) fn test_key(i: usize) -> &'static KeyPair {
        static KEYS: OnceLock<Vec<KeyPair>> = OnceLock::new();
        &KEYS.get_or_init(|| {
            (0..3)
                .map(|_| KeyPair::generate(MIN_KEY_BITS).unwrap())
                .collect()
        })[i]
    }

    #[test]
    fn sign_and_verify() {
        let k = test_key(0);
        let sig = k.sign(b"pay 10");
        assert_eq!(
            verify_signature(k.public_key_der(), b"pay 10", &sig),
            Ok(())
        );
        assert_eq!(
            verify_signature(k.public_key_der(), b"pay 11", &sig),
            Err(SignatureError::Mismatch),
            "tampered message"
        );
        assert_eq!(
            verify_signature(test_key(1).public_key_der(), b"pay 10", &sig),
            Err(SignatureError::Mismatch),
            "wrong key"
        );
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert_eq!(
            verify_signature(k.public_key_der(), b"pay 10", &bad),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(k.public_key_der(), b"pay 10", &[]),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_signature(b"not a key", b"pay 10", &sig),
            Err(SignatureError::PublicKey(_))
        ));
    }

    /// The DER of a public key with modulus `n` (big-endian) and exponent `e`, built by hand
    /// as an attacker would.
    pub(crate) fn made_up_key_der(n: &[u8], e: u64) -> Vec<u8> {
        use rsa::BoxedUint;
        let n = BoxedUint::from_be_slice_vartime(n);
        let e = BoxedUint::from(e);
        PublicKey::new(n, e)
            .unwrap()
            .to_public_key_der()
            .unwrap()
            .into_vec()
    }

    #[test]
    fn only_the_standard_exponent_is_accepted() {
        // An odd 1024-bit modulus: the key is well formed, its exponent is what is refused.
        let mut n = vec![0xc5u8; 128];
        n[127] |= 1;
        for e in [3, (1 << 33) - 1] {
            let der = made_up_key_der(&n, e);
            assert_eq!(
                verify_signature(&der, b"m", &[1; 128]),
                Err(SignatureError::PublicKey(
                    "public exponent is not 65537".into()
                )),
                "e = {e}"
            );
        }
        let der = made_up_key_der(&n, 65_537);
        assert_eq!(
            verify_signature(&der, b"m", &[1; 128]),
            Err(SignatureError::Mismatch),
            "the standard exponent gets as far as the arithmetic"
        );
    }

    #[test]
    fn address_is_sha256_of_der() {
        let k = test_key(0);
        assert_eq!(k.address(), Address(sha256(k.public_key_der())));
        let text = k.address().to_string();
        assert_eq!(text.len(), 64);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(text.parse::<Address>().unwrap(), k.address());
    }

    #[test]
    fn pem_round_trip() {
        let k = test_key(1);
        let pem = k.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = KeyPair::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.address(), k.address());
        assert!(matches!(
            KeyPair::from_pkcs8_pem("garbage"),
            Err(KeyError::Pem(_))
        ));
    }

    #[test]
    fn refuses_small_keys() {
        assert!(matches!(KeyPair::generate(512), Err(KeyError::Size(512))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// A public key and signature off the network are arbitrary bytes: checking them is an
        /// error, never a panic.
        #[test]
        fn arbitrary_keys_and_signatures_are_refused_without_panic(
            der in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            sig in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            proptest::prop_assert!(verify_signature(&der, b"message", &sig).is_err());
            // A real key with a random signature, too.
            let real = test_key(0).public_key_der();
            proptest::prop_assert!(verify_signature(real, b"message", &sig).is_err());
        }
    }
}
