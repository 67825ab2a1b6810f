//! Everything the mvbc miner and wallet share, and nothing that needs a GPU: types, the one
//! consensus encoding, hashing and proof of work, keys and signatures, chain rules and fork
//! choice, the block store, the configuration and wire messages. No sockets: those are
//! `mvbc-net`'s.
//!
//! The rules (`rules`, `ledger`, `chain`, `pool`) are pure state machines: they take blocks and
//! payments and say what changed. Files live at the edges (`store`, `keyfile`, `config`,
//! `fsutil`). Library code never prints.

#![warn(missing_docs)]

pub mod amount;
pub mod block;
pub mod chain;
pub mod config;
pub mod encode;
pub mod fsutil;
pub mod hash;
pub mod header;
pub mod headers;
pub mod index;
pub mod keyfile;
pub mod keys;
pub mod ledger;
pub mod light;
pub mod pool;
pub mod rate;
pub mod rules;
pub mod store;
pub mod stratum;
pub mod tx;
pub mod wire;

pub use amount::{Amount, SignedAmount};
pub use block::{Block, genesis_block};
pub use chain::{AddBlockError, Chain, ChainUpdate};
pub use config::Config;
pub use hash::Hash256;
pub use header::BlockHeader;
pub use keys::{Address, KeyPair, ParseAddressError};
pub use ledger::Ledger;
pub use pool::Pool;
pub use rules::{BlockError, ConsensusParams, NetworkId};
pub use tx::{Payment, Reward, Transaction};

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An error and its causes on one line, each said once: a message that already holds its
/// cause's text (`path: No such file or directory (os error 2)`) is not followed by that text
/// again, as printing the whole chain would.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod error_line_tests {
    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = crate::keyfile::KeyFileError::Io {
            path: "alice.pem".into(),
            source: io,
        };
        let line = super::error_line(&e);
        assert_eq!(line.matches("not found").count(), 1, "{line}");
        assert!(line.starts_with("alice.pem: "), "{line}");
    }
}
