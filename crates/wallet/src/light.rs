//! The light wallet's books: the transactions of its own addresses, each proven against a
//! header of its best header chain (`mvbc_protocol::light`), and how far they are complete.
//!
//! Kept in `wallet-light.dat`, written whole and atomically after each scan; the header chain
//! itself is in `wallet-headers.dat` (`mvbc_protocol::headers`). Only what was proven is
//! kept, and only while its block is on the best header chain: a balance never counts an
//! unproven transaction.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use mvbc_protocol::encode::{self, bounded_vec};
use mvbc_protocol::headers::{HeaderChain, locator_heights};
use mvbc_protocol::light::ProvenTx;
use mvbc_protocol::wire::MAX_LOCATOR_LEN;
use mvbc_protocol::{Address, Amount, Hash256, NetworkId, Transaction, fsutil};
use serde::{Deserialize, Serialize};

/// The light wallet's books.
pub const LIGHT_FILE: &str = "wallet-light.dat";
/// The light wallet's header chain.
pub const HEADERS_FILE: &str = "wallet-headers.dat";
const MAGIC: &[u8; 8] = b"MVBCLGT1";
/// Most addresses one wallet's books follow.
const MAX_ADDRESSES: usize = 10_000;
/// Most transactions the books hold.
const MAX_ENTRIES: usize = 1_000_000;
/// Cap on the file: the most transactions with room for each.
const MAX_FILE_BYTES: u64 = 512 << 20;

/// What the light wallet knows: its addresses' proven transactions on its best header chain.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Books {
    /// The network of the chain they were proven on.
    pub network: NetworkId,
    /// The header chain's tip when they were written.
    pub height: u64,
    /// Its hash.
    pub tip: Hash256,
    /// Where the history is complete through: the chain's locator, as heights and hashes,
    /// tip first. Empty before the first scan.
    #[serde(deserialize_with = "bounded_vec::<_, _, MAX_LOCATOR_LEN>")]
    scanned: Vec<(u64, Hash256)>,
    /// The addresses whose history is complete through `scanned`.
    #[serde(deserialize_with = "bounded_vec::<_, _, MAX_ADDRESSES>")]
    addresses: Vec<Address>,
    /// Their transactions, by height and position, each proven.
    #[serde(deserialize_with = "bounded_vec::<_, _, MAX_ENTRIES>")]
    entries: Vec<ProvenTx>,
    /// The payments among `entries`, by id, with their heights: worked out once whenever
    /// `entries` change, as each pending payment is looked up on every review.
    #[serde(skip)]
    payments: HashMap<Hash256, u64>,
}

impl Books {
    /// No transactions, nothing scanned, on `network`.
    pub fn new(network: NetworkId) -> Books {
        Books {
            network,
            ..Books::default()
        }
    }

    /// The books in `dir`, if a light sync wrote some.
    pub fn read(dir: &Path, network: NetworkId) -> Result<Option<Books>> {
        let path = dir.join(LIGHT_FILE);
        let bytes = match fsutil::read_capped(&path, MAX_FILE_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let damaged = |why: String| {
            anyhow::anyhow!(
                "{} is damaged ({why}); delete it and `mvbc-wallet sync` makes it again",
                path.display()
            )
        };
        let Some(body) = bytes.strip_prefix(MAGIC.as_slice()) else {
            bail!(damaged("bad magic".into()));
        };
        let mut books: Books =
            encode::decode(body, MAX_FILE_BYTES as usize).map_err(|e| damaged(e.to_string()))?;
        books.index_payments();
        if books.network != network {
            bail!(
                "{} holds the books of network {}, not this wallet's network {network}: other \
                 consensus settings; move it aside to start over",
                path.display(),
                books.network
            );
        }
        Ok(Some(books))
    }

    /// Writes the books to `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(LIGHT_FILE);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&encode::encode(self));
        fsutil::write_atomic(&path, &bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// The balance of `address` by its proven transactions.
    pub fn balance(&self, address: &Address) -> Amount {
        let mut units: i128 = 0;
        for e in &self.entries {
            match &e.tx {
                Transaction::Reward(r) if r.to == *address => units += i128::from(r.amount.units()),
                Transaction::Reward(_) => {}
                Transaction::Payment(p) => {
                    if p.from == *address {
                        units -= i128::from(p.amount.units());
                    }
                    if p.to == *address {
                        units += i128::from(p.amount.units());
                    }
                }
            }
        }
        Amount::from_units(u64::try_from(units.max(0)).unwrap_or(u64::MAX))
    }

    /// The height of the block holding payment `id`, if a proven transaction is it.
    pub fn confirmed_at(&self, id: &Hash256) -> Option<u64> {
        self.payments.get(id).copied()
    }

    /// Works out `payments` from `entries` again.
    fn index_payments(&mut self) {
        self.payments = self
            .entries
            .iter()
            .filter(|e| matches!(e.tx, Transaction::Payment(_)))
            .map(|e| (e.tx.id(), e.height))
            .collect();
    }

    /// How many proven transactions the books hold.
    pub fn history_len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the books follow `address`: their history holds all of its transactions up to
    /// where they were scanned.
    pub fn follows(&self, address: &Address) -> bool {
        self.addresses.contains(address)
    }

    /// The proven transactions touching `address`, oldest first, with their heights.
    pub fn history(&self, address: &Address) -> impl Iterator<Item = (u64, &Transaction)> {
        self.entries
            .iter()
            .filter(|e| e.tx.touches(address).is_some())
            .map(|e| (e.height, &e.tx))
    }

    /// Whether the books are complete for `addresses` at the tip of `headers`.
    pub fn complete(&self, headers: &HeaderChain, addresses: &[Address]) -> bool {
        self.scanned.first() == Some(&(headers.height(), headers.tip_hash()))
            && addresses.iter().all(|a| self.follows(a))
    }

    /// What to scan to be complete at the tip of `headers` for `addresses`, after dropping
    /// what left the best chain: the addresses already followed from above the highest point
    /// scanned that is still on it, and the others from the start.
    pub fn scans_due(
        &mut self,
        headers: &HeaderChain,
        addresses: &[Address],
    ) -> Vec<(Vec<Address>, u64)> {
        self.entries.retain(|e| headers.holds(e.height, &e.block));
        self.index_payments();
        let kept = self
            .scanned
            .iter()
            .find(|(h, hash)| headers.holds(*h, hash))
            .map_or(0, |(h, _)| *h);
        let (old, new): (Vec<Address>, Vec<Address>) =
            addresses.iter().partition(|a| self.follows(a));
        let mut scans = Vec::new();
        if !old.is_empty() && kept < headers.height() {
            scans.push((old, kept + 1));
        }
        if !new.is_empty() {
            scans.push((new, 1));
        }
        scans
    }

    /// Takes a finished scan: `found` (each proven against `headers`) is added, and the books
    /// are complete for `addresses` at `headers`'s tip.
    pub fn scanned(&mut self, headers: &HeaderChain, addresses: &[Address], found: Vec<ProvenTx>) {
        let mut seen: HashSet<(u64, u32)> = self
            .entries
            .iter()
            .map(|e| (e.height, e.path.index))
            .collect();
        for e in found {
            if seen.insert((e.height, e.path.index)) {
                self.entries.push(e);
            }
        }
        self.entries.sort_by_key(|e| (e.height, e.path.index));
        self.index_payments();
        self.addresses = addresses.to_vec();
        self.height = headers.height();
        self.tip = headers.tip_hash();
        self.scanned = locator_heights(headers.height())
            .into_iter()
            .map(|h| (h, headers.hash_at(h).expect("a height of the chain")))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mvbc_protocol::block::{Block, MerklePath, genesis_block};
    use mvbc_protocol::{BlockHeader, ConsensusParams, Reward};

    const PARAMS: ConsensusParams = ConsensusParams {
        difficulty: 1,
        block_size: 1,
        block_reward: Amount::from_units(50),
    };
    const NOW: u64 = mvbc_protocol::block::GENESIS_TIMESTAMP + 1_000_000;

    /// `n` blocks on `parent`, each paying its reward to `to`: each header, and the proof of
    /// its reward.
    fn branch(
        parent: &BlockHeader,
        n: usize,
        to: Address,
        salt: u64,
    ) -> Vec<(BlockHeader, ProvenTx)> {
        let mut parent = *parent;
        (0..n)
            .map(|_| {
                let tx = Transaction::Reward(Reward {
                    to,
                    amount: PARAMS.block_reward,
                    height: parent.height + 1,
                });
                let stamp = parent.timestamp + 1 + salt;
                let mut b = Block::assemble(&parent, vec![tx.clone()], stamp, PARAMS.difficulty);
                b.header.solve();
                parent = b.header;
                let proven = ProvenTx {
                    height: b.header.height,
                    block: b.hash(),
                    path: MerklePath::of(&[tx.id()], 0).unwrap(),
                    tx,
                };
                (b.header, proven)
            })
            .collect()
    }

    fn headers(chain: &mut HeaderChain, blocks: &[(BlockHeader, ProvenTx)]) {
        let hs: Vec<BlockHeader> = blocks.iter().map(|(h, _)| *h).collect();
        chain.add(&hs, NOW).unwrap();
    }

    #[test]
    fn after_a_reorg_the_books_drop_what_left_and_ask_again_from_the_fork() {
        let (alice, bob) = (Address(Hash256([1; 32])), Address(Hash256([2; 32])));
        let genesis = genesis_block().header;
        let a = branch(&genesis, 6, alice, 0);
        let mut chain = HeaderChain::new(PARAMS);
        headers(&mut chain, &a);
        let mut books = Books::new(PARAMS.network_id());
        assert!(!books.complete(&chain, &[alice]));
        assert_eq!(books.scans_due(&chain, &[alice]), vec![(vec![alice], 1)]);
        let proven: Vec<ProvenTx> = a.iter().map(|(_, p)| p.clone()).collect();
        books.scanned(&chain, &[alice], proven);
        assert!(books.complete(&chain, &[alice]));
        assert_eq!(books.balance(&alice), Amount::from_units(300));
        assert!(books.scans_due(&chain, &[alice]).is_empty());

        // A heavier branch from height 4: blocks 5 and 6 leave, their rewards with them.
        let b = branch(&a[3].0, 4, bob, 9);
        headers(&mut chain, &b);
        assert_eq!(chain.height(), 8);
        assert!(!books.complete(&chain, &[alice]));
        // Alice from above the highest point scanned still on the chain; a new key from 1.
        let due = books.scans_due(&chain, &[alice, bob]);
        assert_eq!(due, vec![(vec![alice], 5), (vec![bob], 1)]);
        assert_eq!(books.balance(&alice), Amount::from_units(200));
        let found: Vec<ProvenTx> = b.iter().map(|(_, p)| p.clone()).collect();
        books.scanned(&chain, &[alice, bob], found);
        assert_eq!(books.balance(&bob), Amount::from_units(200));
        assert!(books.complete(&chain, &[alice, bob]));
        assert_eq!(books.history(&alice).count(), 4);

        // Saved and read back whole; another network's books are refused.
        let dir = tempfile::tempdir().unwrap();
        books.save(dir.path()).unwrap();
        let read = Books::read(dir.path(), PARAMS.network_id())
            .unwrap()
            .unwrap();
        assert!(read.complete(&chain, &[alice, bob]));
        assert_eq!(read.balance(&bob), Amount::from_units(200));
        let other = NetworkId([9; 8]);
        assert!(Books::read(dir.path(), other).is_err());
        std::fs::write(dir.path().join(LIGHT_FILE), b"MVBCLGT1 and then garbage").unwrap();
        let err = Books::read(dir.path(), PARAMS.network_id()).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
