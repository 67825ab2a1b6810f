//! The JSON the wallet prints: one type per `--json` output, serialised by the binary and
//! parsed back by whoever reads it.

use serde::{Deserialize, Serialize};

/// One row of `list-addresses --json`: a local key and its balances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The key's name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// Confirmed balance, six decimal places.
    pub balance: String,
    /// Net effect of this wallet's unconfirmed payments, six decimal places, signed.
    pub pending: String,
}

/// One line of `history --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// Height of the block holding it; `None` while pending.
    pub height: Option<u64>,
    /// The transaction's id.
    pub id: String,
    /// Signed: what it did to the address's balance.
    pub amount: String,
    /// The other side of a payment; `None` for a block reward.
    pub counterparty: Option<String>,
}

/// What `sync --once --json` reports when it has synced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// The height of the wallet's chain.
    pub height: u64,
    /// Its tip.
    pub tip: String,
    /// Ids of this wallet's payments not yet confirmed.
    pub pending: Vec<String>,
}
