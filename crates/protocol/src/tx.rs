//! Transactions: signed payments between addresses, and the one reward per block.

use serde::{Deserialize, Serialize};

use crate::amount::{Amount, SignedAmount};
use crate::encode::{self, Bytes, DecodeError};
use crate::hash::{Hash256, sha256, sha256_concat};
use crate::keys::{
    Address, KeyPair, MAX_PUBLIC_KEY_DER_LEN, MAX_SIGNATURE_LEN, SignatureError, verify_signature,
};

/// Cap on one encoded transaction: a payment with the largest key and signature fits.
pub const MAX_TX_BYTES: usize = 4_096;

/// Prefix of every signed message, so a payment signature can never be replayed as a signature
/// over anything else.
const PAYMENT_SIGNING_DOMAIN: &[u8] = b"mvbc payment v1\0";

/// A transaction as it appears in a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transaction {
    /// Coins moved from one address to another, signed by the sender.
    Payment(Payment),
    /// New coins paid to the block's miner; exactly one per block, first.
    Reward(Reward),
}

/// A signed payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Paying address: must be the hash of `public_key`.
    pub from: Address,
    /// Receiving address.
    pub to: Address,
    /// Coins moved; never zero.
    pub amount: Amount,
    /// Seconds since the Unix epoch when the sender signed.
    pub timestamp: u64,
    /// The sender's DER-encoded public key.
    pub public_key: Bytes<MAX_PUBLIC_KEY_DER_LEN>,
    /// RSASSA-PSS (SHA-256) signature over [`Payment::signing_message`].
    pub signature: Bytes<MAX_SIGNATURE_LEN>,
}

/// The block reward. It carries the block's height, so no two rewards share an id even when the
/// same miner is paid the same amount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reward {
    /// The miner's address.
    pub to: Address,
    /// Must equal the network's `block_reward`.
    pub amount: Amount,
    /// Height of the block that pays it.
    pub height: u64,
}

/// Why a transaction is invalid on its own, before any balance is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// A payment of zero.
    #[error("payment amount is zero")]
    ZeroAmount,
    /// The public key does not hash to the from-address.
    #[error("public key does not hash to the from-address {0}")]
    KeyMismatch(Address),
    /// The signature does not verify.
    #[error("bad signature: {0}")]
    Signature(#[from] SignatureError),
}

impl Payment {
    /// Builds and signs a payment of `amount` from `key`'s address to `to`.
    pub fn new_signed(key: &KeyPair, to: Address, amount: Amount, timestamp: u64) -> Payment {
        Payment::signed_by(key, to, amount, timestamp, |msg| key.sign(msg))
    }

    /// [`Payment::new_signed`] with the signature's salt from `rng` ([`KeyPair::sign_with_rng`]),
    /// so a simulation gets the same payment, and the same ids and block hashes, on every run.
    pub fn new_signed_with_rng<R: rand::CryptoRng + ?Sized>(
        key: &KeyPair,
        to: Address,
        amount: Amount,
        timestamp: u64,
        rng: &mut R,
    ) -> Payment {
        Payment::signed_by(key, to, amount, timestamp, |msg| {
            key.sign_with_rng(rng, msg)
        })
    }

    fn signed_by(
        key: &KeyPair,
        to: Address,
        amount: Amount,
        timestamp: u64,
        sign: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Payment {
        let public_key = Bytes::new(key.public_key_der().to_vec())
            .expect("KeyPair only holds keys within the size caps");
        let mut p = Payment {
            from: key.address(),
            to,
            amount,
            timestamp,
            public_key,
            signature: Bytes::default(),
        };
        p.signature =
            Bytes::new(sign(&p.signing_message())).expect("signature of a capped key fits the cap");
        p
    }

    /// The bytes the sender signs: a domain prefix then the canonical encoding of every field
    /// but the signature.
    pub fn signing_message(&self) -> Vec<u8> {
        let fields = (
            &self.from,
            &self.to,
            &self.amount,
            &self.timestamp,
            &self.public_key,
        );
        let mut msg = PAYMENT_SIGNING_DOMAIN.to_vec();
        msg.extend_from_slice(&encode::encode(&fields));
        msg
    }

    /// Checks what can be checked without a ledger: a positive amount, the key hashes to the
    /// from-address, the signature verifies.
    pub fn verify(&self) -> Result<(), TxError> {
        if self.amount.is_zero() {
            return Err(TxError::ZeroAmount);
        }
        if Address::of_public_key_der(self.public_key.as_slice()) != self.from {
            return Err(TxError::KeyMismatch(self.from));
        }
        verify_signature(
            self.public_key.as_slice(),
            &self.signing_message(),
            self.signature.as_slice(),
        )?;
        Ok(())
    }

    /// This payment's id (the id of `Transaction::Payment(self)`).
    pub fn id(&self) -> Hash256 {
        // Same bytes as encoding the enum: variant index 0, then the fields.
        sha256_concat(&[&[0u8], &encode::encode(self)])
    }
}

impl Payment {
    /// What this payment does to `address`'s balance: coins in, coins out, zero for a payment
    /// to itself, and zero when it does not touch the address.
    pub fn effect_on(&self, address: &Address) -> SignedAmount {
        let credit = if self.to == *address {
            SignedAmount::credit(self.amount)
        } else {
            SignedAmount::ZERO
        };
        let debit = if self.from == *address {
            SignedAmount::debit(self.amount)
        } else {
            SignedAmount::ZERO
        };
        credit + debit
    }
}

impl Transaction {
    /// How this transaction touches `address`: its effect on the balance and the other side
    /// (`None` for a block reward), or `None` when it does not touch the address.
    pub fn touches(&self, address: &Address) -> Option<(SignedAmount, Option<Address>)> {
        match self {
            Transaction::Reward(r) if r.to == *address => {
                Some((SignedAmount::credit(r.amount), None))
            }
            Transaction::Payment(p) if p.from == *address || p.to == *address => {
                let other = if p.from == *address { p.to } else { p.from };
                Some((p.effect_on(address), Some(other)))
            }
            _ => None,
        }
    }

    /// The transaction id: SHA-256 of its canonical encoding, which for a payment is the signed
    /// fields followed by the signature.
    pub fn id(&self) -> Hash256 {
        sha256(&self.encode())
    }

    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode::encode(self)
    }

    /// Decodes one canonical transaction of at most [`MAX_TX_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Transaction, DecodeError> {
        encode::decode(bytes, MAX_TX_BYTES)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::tests::test_key;
    use proptest::prelude::*;

    pub(crate) fn pay(from: usize, to: Address, units: u64, timestamp: u64) -> Payment {
        Payment::new_signed(test_key(from), to, Amount::from_units(units), timestamp)
    }

    #[test]
    fn a_signed_payment_verifies() {
        let p = pay(0, test_key(1).address(), 5, 100);
        assert_eq!(p.verify(), Ok(()));
        assert_eq!(p.id(), Transaction::Payment(p.clone()).id());
    }

    #[test]
    fn every_tampered_field_breaks_the_signature() {
        let p = pay(0, test_key(1).address(), 5, 100);
        let mut t = p.clone();
        t.to = test_key(2).address();
        assert!(matches!(t.verify(), Err(TxError::Signature(_))), "to");
        let mut t = p.clone();
        t.amount = Amount::from_units(6);
        assert!(matches!(t.verify(), Err(TxError::Signature(_))), "amount");
        let mut t = p.clone();
        t.timestamp = 101;
        assert!(
            matches!(t.verify(), Err(TxError::Signature(_))),
            "timestamp"
        );
        let mut t = p.clone();
        t.from = test_key(2).address();
        assert_eq!(
            t.verify(),
            Err(TxError::KeyMismatch(test_key(2).address())),
            "from"
        );
    }

    #[test]
    fn a_key_that_is_not_the_senders_is_refused() {
        // Signed properly by key 1, but claims to spend key 0's coins.
        let mut p = pay(1, test_key(2).address(), 5, 100);
        p.from = test_key(0).address();
        assert_eq!(p.verify(), Err(TxError::KeyMismatch(test_key(0).address())));
    }

    #[test]
    fn zero_payments_are_refused() {
        let p = pay(0, test_key(1).address(), 0, 100);
        assert_eq!(p.verify(), Err(TxError::ZeroAmount));
    }

    #[test]
    fn rewards_at_different_heights_have_different_ids() {
        let to = test_key(0).address();
        let r = |height| {
            Transaction::Reward(Reward {
                to,
                amount: Amount::from_units(1),
                height,
            })
        };
        assert_ne!(r(1).id(), r(2).id());
    }

    #[test]
    fn encoding_round_trips() {
        let t = Transaction::Payment(pay(0, test_key(1).address(), 5, 100));
        let bytes = t.encode();
        assert!(bytes.len() < MAX_TX_BYTES);
        assert_eq!(Transaction::decode(&bytes).unwrap(), t);
    }

    proptest! {
        #[test]
        fn reward_encoding_is_canonical(to: [u8; 32], units: u64, height: u64) {
            let t = Transaction::Reward(Reward { to: Address(Hash256(to)), amount: Amount::from_units(units), height });
            let bytes = t.encode();
            prop_assert_eq!(Transaction::decode(&bytes).unwrap().encode(), bytes);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(t) = Transaction::decode(&bytes) {
                prop_assert_eq!(t.encode(), bytes);
            }
        }
    }
}
