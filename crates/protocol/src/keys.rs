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

use crate::hash::{Hash256, sha256};

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

/// Where coins live: SHA-256 of a public key's DER (SubjectPublicKeyInfo) encoding.
///
/// Shown as bech32m (BIP 350) with the prefix [`ADDRESS_PREFIX`]: `mvbc1` and 58 characters, the
/// last six a checksum, so that a typed address with one wrong character, two neighbours swapped
/// or a character missing is refused rather than paid (ADR 0012). [`Address::to_hex`] gives the
/// old form (64 hex digits, no checksum), which [`Address::parse_lookup`] still reads for
/// look-ups but [`FromStr`] refuses: nothing pays an address a typo could have made.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address(pub Hash256);

/// The human-readable part of every address: `mvbc1...`.
pub const ADDRESS_PREFIX: &str = "mvbc";
/// Characters in an address: prefix, separator, 52 of data (32 bytes) and 6 of checksum.
pub const ADDRESS_LEN: usize = ADDRESS_PREFIX.len() + 1 + 52 + 6;

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseAddressError {
    /// The old form: 64 hex digits without a checksum.
    #[error(
        "this is an old-style address (64 hex digits, no checksum), which mvbc no longer pays: \
         a typo in it would go unnoticed; ask for the address in its new form (`mvbc1...`, as \
         `mvbc-wallet list-addresses` shows it)"
    )]
    OldForm,
    /// Not `mvbc1` followed by bech32 characters.
    #[error("an address starts with `{ADDRESS_PREFIX}1` and has {ADDRESS_LEN} characters")]
    Shape,
    /// The prefix of another coin or network.
    #[error(
        "an address of another kind (prefix `{0}`); mvbc addresses start with `{ADDRESS_PREFIX}1`"
    )]
    Prefix(String),
    /// The checksum does not match: some character is wrong, missing or out of place.
    #[error("the address's checksum does not match: a character is wrong, missing or swapped")]
    Checksum,
    /// Well formed, but not 32 bytes.
    #[error("the address is {0} characters long; mvbc addresses have {ADDRESS_LEN}")]
    Length(usize),
}

impl Address {
    /// The address of a DER-encoded public key.
    pub fn of_public_key_der(der: &[u8]) -> Address {
        Address(sha256(der))
    }

    /// The old form: the hash's 64 hex digits, no checksum.
    pub fn to_hex(&self) -> String {
        self.0.to_string()
    }

    /// Reads an address in either form, for looking one up (the API, `history`): never for
    /// paying, where only the checksummed form is taken.
    pub fn parse_lookup(s: &str) -> Result<Address, ParseAddressError> {
        match s.parse::<Address>() {
            Err(ParseAddressError::OldForm) => s
                .parse::<Hash256>()
                .map(Address)
                .map_err(|_| ParseAddressError::Shape),
            other => other,
        }
    }
}

/// A command-line word that names an address to pay: the address itself, or a key's name.
///
/// `Ok(Some(address))` for an address; `Ok(None)` for a word not shaped like one (the caller
/// looks it up as a key name); an error for a word that is an address gone wrong (a typo, the old
/// hex form, another coin's), so that a mistyped address is never taken for a name.
pub fn address_or_name(word: &str) -> Result<Option<Address>, ParseAddressError> {
    match word.parse::<Address>() {
        Ok(a) => Ok(Some(a)),
        Err(ParseAddressError::Shape) => Ok(None),
        Err(ParseAddressError::Prefix(_)) if word.len() < ADDRESS_LEN - 10 => Ok(None),
        Err(e) => Err(e),
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = bech32::Hrp::parse_unchecked(ADDRESS_PREFIX);
        // Writes straight into the formatter: no allocation, and no error but the formatter's.
        bech32::encode_lower_to_fmt::<bech32::Bech32m, _>(f, hrp, &self.0.0).map_err(|_| fmt::Error)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = ParseAddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use bech32::primitives::decode::{CheckedHrpstring, UncheckedHrpstring};
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseAddressError::OldForm);
        }
        // Bounded before bech32 sees it: anything longer is not an address whatever it holds.
        if s.len() > 2 * ADDRESS_LEN {
            return Err(ParseAddressError::Length(s.chars().count()));
        }
        let unchecked = UncheckedHrpstring::new(s).map_err(|_| ParseAddressError::Shape)?;
        let prefix = unchecked.hrp();
        if !prefix.as_str().eq_ignore_ascii_case(ADDRESS_PREFIX) {
            return Err(ParseAddressError::Prefix(prefix.to_lowercase()));
        }
        let checked =
            CheckedHrpstring::new::<bech32::Bech32m>(s).map_err(|_| ParseAddressError::Checksum)?;
        if s.len() != ADDRESS_LEN {
            return Err(ParseAddressError::Length(s.len()));
        }
        let mut bytes = [0u8; 32];
        let mut n = 0;
        for b in checked.byte_iter() {
            *bytes.get_mut(n).ok_or(ParseAddressError::Length(s.len()))? = b;
            n += 1;
        }
        if n != 32 {
            return Err(ParseAddressError::Length(s.len()));
        }
        Ok(Address(Hash256(bytes)))
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
    /// An encrypted key that this passphrase does not open (or a damaged one).
    #[error("the passphrase does not open this key (or the key file is damaged)")]
    Passphrase,
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

    /// Reads a PKCS#8 PEM private key encrypted under `passphrase` (`ENCRYPTED PRIVATE KEY`).
    pub fn from_pkcs8_encrypted_pem(pem: &str, passphrase: &str) -> Result<KeyPair, KeyError> {
        let key = PrivateKey::from_pkcs8_encrypted_pem(pem, passphrase.as_bytes())
            .map_err(|_| KeyError::Passphrase)?;
        Self::from_private_key(key)
    }

    /// The private key as PKCS#8 PEM text encrypted under `passphrase`: PBES2 with scrypt
    /// and AES-256-CBC, a fresh salt and IV from the operating system.
    pub fn to_pkcs8_encrypted_pem(&self, passphrase: &str) -> Result<String, KeyError> {
        let pem = self
            .signing
            .as_ref()
            .to_pkcs8_encrypted_pem(passphrase.as_bytes(), LineEnding::LF)
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        Ok(pem.as_str().to_owned())
    }

    /// The public key as SubjectPublicKeyInfo PEM: what an encrypted key's address is read
    /// from without its passphrase.
    pub fn public_key_pem(&self) -> Result<String, KeyError> {
        self.signing
            .as_ref()
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Pem(e.to_string()))
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
        let hex = k.address().to_hex();
        assert_eq!(hex, sha256(k.public_key_der()).to_string());
        assert_eq!(k.address().to_string().parse::<Address>(), Ok(k.address()));
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

    /// Addresses to try the checksum on: a few fixed patterns and a spread of real hashes.
    fn sample_addresses() -> Vec<Address> {
        let mut out = vec![Address(Hash256([0; 32])), Address(Hash256([0xff; 32]))];
        out.extend((0u8..6).map(|i| Address(sha256(&[i]))));
        out
    }

    #[test]
    fn addresses_read_back_in_either_case_and_have_one_length() {
        for a in sample_addresses() {
            let shown = a.to_string();
            assert!(shown.starts_with("mvbc1"), "{shown}");
            assert_eq!(shown.len(), ADDRESS_LEN);
            assert_eq!(shown.parse::<Address>(), Ok(a));
            assert_eq!(shown.to_uppercase().parse::<Address>(), Ok(a));
            assert_eq!(Address::parse_lookup(&shown), Ok(a));
        }
    }

    #[test]
    fn any_one_wrong_character_any_swap_and_any_truncation_is_refused() {
        const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        for a in sample_addresses() {
            let shown = a.to_string().into_bytes();
            let refused = |bytes: &[u8], what: &str| {
                let text = String::from_utf8(bytes.to_vec()).unwrap();
                assert!(text.parse::<Address>().is_err(), "{what} accepted: {text}");
                assert!(
                    Address::parse_lookup(&text).is_err(),
                    "{what} looked up: {text}"
                );
            };
            // Every position after the separator, every other character of the alphabet.
            for i in ADDRESS_PREFIX.len() + 1..shown.len() {
                for &c in CHARSET.iter().filter(|&&c| c != shown[i]) {
                    let mut typo = shown.clone();
                    typo[i] = c;
                    refused(&typo, "one wrong character");
                }
            }
            for i in 0..shown.len() - 1 {
                if shown[i] != shown[i + 1] {
                    let mut swapped = shown.clone();
                    swapped.swap(i, i + 1);
                    refused(&swapped, "a swap");
                }
            }
            for len in 0..shown.len() {
                refused(&shown[..len], "a truncation");
                let mut dropped = shown.clone();
                dropped.remove(len);
                refused(&dropped, "a dropped character");
            }
        }
    }

    #[test]
    fn the_old_hex_form_is_refused_for_paying_and_read_for_looking_up() {
        let a = Address(sha256(b"old"));
        let hex = a.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<Address>(), Err(ParseAddressError::OldForm));
        let why = ParseAddressError::OldForm.to_string();
        assert!(why.contains("list-addresses"), "{why}");
        assert_eq!(Address::parse_lookup(&hex), Ok(a));
        // Another coin's bech32m string is named as such, not as a typo.
        let other = a.to_string().replacen("mvbc1", "bc1", 1);
        assert!(matches!(other.parse::<Address>(), Err(ParseAddressError::Prefix(p)) if p == "bc"));
        assert!("x".repeat(10_000).parse::<Address>().is_err());
        assert!("mvbc1".parse::<Address>().is_err());
        assert!("".parse::<Address>().is_err());
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
