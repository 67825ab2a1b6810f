//! The mvbc wallet's library side: what `mvbc-wallet` prints with `--json`, as types its
//! command line fills in and anyone reading that output (scripts, the workspace's tests) can
//! parse back; and where it keeps its copy of the chain. The `mvbc-wallet` binary is the rest:
//! keys, balances, payments and `sync` on `mvbc-node` and `mvbc-net`.

#![warn(missing_docs)]

pub mod report;

/// The wallet keeps its own copy of the chain here, apart from a miner's `blocks.dat`, so a
/// wallet and a miner can share a data directory (and its keys).
pub const WALLET_CHAIN_FILE: &str = "wallet-blocks.dat";
