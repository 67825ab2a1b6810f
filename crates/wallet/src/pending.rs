//! Payments this wallet made that its chain does not hold yet. One file, always replaced
//! atomically, and read-modify-written only under the wallet's lock file, so a `send` racing a
//! `sync` in the same directory never loses a payment.
//!
//! ```text
//! wallet-pending.dat = "MVBCPND1" | postcard Vec<Payment>
//! ```

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mvbc_protocol::encode::{self, bounded_vec};
use mvbc_protocol::fsutil;
use mvbc_protocol::tx::MAX_TX_BYTES;
use mvbc_protocol::{Hash256, Payment};
use serde::{Deserialize, Serialize};

const PENDING_FILE: &str = "wallet-pending.dat";
const LOCK_FILE: &str = "wallet.lock";
const MAGIC: &[u8; 8] = b"MVBCPND1";
/// Cap on the payments the file holds; `send` refuses more until some settle.
pub const MAX_PENDING: usize = 1_000;
/// Blocks deep a payment must be before the wallet forgets it: 6, as Bitcoin wallets count.
pub const SETTLED_DEPTH: u64 = 6;
const MAX_PENDING_BYTES: usize = MAGIC.len() + 8 + MAX_PENDING * MAX_TX_BYTES;

#[derive(Serialize, Deserialize)]
struct PendingFile {
    #[serde(deserialize_with = "bounded_vec::<_, _, MAX_PENDING>")]
    payments: Vec<Payment>,
}

/// The wallet's pending payments, read under its lock; [`Pending::save`] writes them back.
pub struct Pending {
    /// Unconfirmed payments, oldest first.
    pub payments: Vec<Payment>,
    path: PathBuf,
    _lock: File,
}

impl Pending {
    /// Takes the wallet's lock (waiting for another command that holds it) and reads the file.
    pub fn open(dir: &Path) -> Result<Pending> {
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let path = dir.join(PENDING_FILE);
        let payments = read(&path)?;
        Ok(Pending {
            payments,
            path,
            _lock: lock,
        })
    }

    /// The pending payments, read without the lock: the file is only ever replaced whole, so
    /// a reader sees one complete version.
    pub fn read(dir: &Path) -> Result<Vec<Payment>> {
        read(&dir.join(PENDING_FILE))
    }

    /// Writes the payments back, atomically.
    pub fn save(&self) -> Result<()> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&encode::encode(&PendingFile {
            payments: self.payments.clone(),
        }));
        fsutil::write_atomic(&self.path, &bytes)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Drops the payments whose ids `settled` holds (confirmed at least [`SETTLED_DEPTH`]
    /// blocks deep), saving if any went. A payment confirmed less deep stays: if a reorg takes
    /// it out of the chain again, the wallet sees it unconfirmed and broadcasts it again.
    pub fn drop_settled(&mut self, settled: &HashSet<Hash256>) -> Result<()> {
        let before = self.payments.len();
        self.payments.retain(|p| !settled.contains(&p.id()));
        if self.payments.len() != before {
            self.save()?;
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<Vec<Payment>> {
    let bytes = match fsutil::read_capped(path, MAX_PENDING_BYTES as u64) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let corrupt = |why: String| {
        anyhow::anyhow!(
            "{} is damaged ({why}); move it aside to go on (its payments may still be confirmed)",
            path.display()
        )
    };
    let Some(body) = bytes.strip_prefix(MAGIC.as_slice()) else {
        bail!(corrupt("bad magic".into()));
    };
    let file: PendingFile =
        encode::decode(body, MAX_PENDING_BYTES).map_err(|e| corrupt(e.to_string()))?;
    Ok(file.payments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mvbc_protocol::{Amount, KeyPair};

    #[test]
    fn payments_survive_a_round_trip_and_garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate(1024).unwrap();
        let p = Payment::new_signed(&key, key.address(), Amount::from_units(5), 1);
        {
            let mut pending = Pending::open(dir.path()).unwrap();
            assert!(pending.payments.is_empty());
            pending.payments.push(p.clone());
            pending.save().unwrap();
        }
        assert_eq!(Pending::open(dir.path()).unwrap().payments, vec![p]);
        std::fs::write(dir.path().join(PENDING_FILE), b"MVBCPND1\xff\xff").unwrap();
        let err = Pending::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("is damaged"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the pending file holds, reading it gives payments or a clear error.
        #[test]
        fn any_pending_file_reads_or_is_refused(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&body);
            std::fs::write(dir.path().join(PENDING_FILE), &bytes).unwrap();
            if let Ok(payments) = Pending::read(dir.path()) {
                proptest::prop_assert!(payments.len() <= MAX_PENDING);
            }
        }
    }
}
