//! Load: bursts of payments from several payers to two miners. Every payment is confirmed
//! exactly once, and the balances on both miners' chains equal a ledger this test keeps on
//! its own from the payments it made.

use mvbc_testkit::procs;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use mvbc_net::Broadcaster;
use mvbc_protocol::wire::Datagram;
use mvbc_protocol::{Address, Amount, Chain, Hash256, KeyPair, Payment, keyfile, unix_now};
use procs::*;
use tempfile::tempdir;

const PAYERS: usize = 5;
/// Payments per block: the miners mine only full blocks, so every batch is a multiple of it.
const PER_BLOCK: usize = 50;
const BURSTS: usize = 8;
/// Each burst: every payer pays this many times.
const PER_PAYER_PER_BURST: usize = 100;

/// How many times each transaction id appears on the best chain.
fn confirmations(chain: &Chain) -> HashMap<Hash256, usize> {
    let mut seen = HashMap::new();
    for height in 1..=chain.height() {
        for tx in &chain.block_at(height).unwrap().unwrap().transactions {
            *seen.entry(tx.id()).or_insert(0) += 1;
        }
    }
    seen
}

struct Ledger {
    balances: HashMap<Address, i128>,
    payments: Vec<Payment>,
}

impl Ledger {
    fn pay(&mut self, from: &KeyPair, to: Address, units: u64, stamp: u64) -> Payment {
        let p = Payment::new_signed(from, to, Amount::from_units(units), stamp);
        *self.balances.entry(from.address()).or_insert(0) -= i128::from(units);
        *self.balances.entry(to).or_insert(0) += i128::from(units);
        self.payments.push(p.clone());
        p
    }
}

#[test]
fn bursts_of_payments_from_several_payers_are_each_confirmed_once_with_balances_right() {
    let mut net = Net::with_difficulty(20);
    net.block_size = PER_BLOCK + 1;
    let (a, b) = (tempdir().unwrap(), tempdir().unwrap());
    let mut miner_a = Miner::start(a.path(), &net);
    miner_a.wait_height(1);
    let mut miner_b = Miner::start(b.path(), &net);
    miner_b.wait_height(1);
    let funder = keyfile::load_key(&a.path().join("mining_rewards.pem")).unwrap();
    let payers: Vec<KeyPair> = (0..PAYERS)
        .map(|_| KeyPair::generate(1024).unwrap())
        .collect();
    let outsiders: Vec<Address> = (0..3u8).map(|i| Address(Hash256([i + 1; 32]))).collect();
    let out = Broadcaster::new(Ipv4Addr::new(127, 255, 255, 255), net.transaction_port).unwrap();
    let mut ledger = Ledger {
        balances: HashMap::new(),
        payments: Vec::new(),
    };
    let mut stamp = unix_now();
    let mut next_stamp = || {
        stamp += 1;
        stamp
    };

    // Funding: one block's worth, 0.1 coin at a time, from the miner's first reward.
    for i in 0..PER_BLOCK {
        let p = ledger.pay(&funder, payers[i % PAYERS].address(), 100_000, next_stamp());
        out.send(&Datagram::Payment(p)).unwrap();
    }
    miner_a.wait_height(2);

    // Bursts: every payer pays the others and some outsiders, as fast as it can sign.
    let mut pick = 0usize;
    for _ in 0..BURSTS {
        for _ in 0..PER_PAYER_PER_BURST {
            for payer in &payers {
                pick = pick.wrapping_mul(31).wrapping_add(7);
                let to = if pick.is_multiple_of(3) {
                    outsiders[pick % outsiders.len()]
                } else {
                    payers[pick % PAYERS].address()
                };
                let p = ledger.pay(payer, to, 1 + (pick % 100) as u64, next_stamp());
                out.send(&Datagram::Payment(p)).unwrap();
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    let total = ledger.payments.len();
    assert!(total.is_multiple_of(PER_BLOCK));

    // Like wallets, re-broadcast what is not confirmed yet, until everything is.
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        let (chain_a, chain_b) = (stored_chain(a.path(), &net), stored_chain(b.path(), &net));
        let unconfirmed: Vec<&Payment> = ledger
            .payments
            .iter()
            .filter(|p| !chain_a.ledger().is_confirmed(&p.id()))
            .collect();
        if unconfirmed.is_empty() && chain_a.tip_hash() == chain_b.tip_hash() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} of {total} payments unconfirmed, heights {} and {}\n{}\n{}",
            unconfirmed.len(),
            chain_a.height(),
            chain_b.height(),
            miner_a.log(),
            miner_b.log()
        );
        if !unconfirmed.is_empty() {
            rounds += 1;
        }
        for p in &unconfirmed {
            out.send(&Datagram::Payment(Payment::clone(p))).unwrap();
        }
        thread::sleep(Duration::from_millis(500));
    }

    eprintln!(
        "load: {} payments from {PAYERS} payers confirmed {:.1} s after the last burst, \
         {rounds} re-broadcast rounds",
        ledger.payments.len(),
        start.elapsed().as_secs_f64()
    );
    for dir in [a.path(), b.path()] {
        let chain = stored_chain(dir, &net);
        let seen = confirmations(&chain);
        let ids: HashSet<Hash256> = ledger.payments.iter().map(Payment::id).collect();
        assert_eq!(ids.len(), ledger.payments.len(), "every payment distinct");
        for id in &ids {
            assert_eq!(seen.get(id), Some(&1), "payment {id} confirmed once");
        }
        for payer in &payers {
            let expected = ledger.balances[&payer.address()];
            assert_eq!(
                i128::from(chain.ledger().balance(&payer.address()).units()),
                expected
            );
        }
        for outsider in &outsiders {
            let expected = ledger.balances.get(outsider).copied().unwrap_or(0);
            assert_eq!(
                i128::from(chain.ledger().balance(outsider).units()),
                expected
            );
        }
        // The rest is the two miners' rewards, less what the funder paid out.
        let rewards: u64 = chain
            .ledger()
            .balances()
            .filter(|(addr, _)| {
                !payers.iter().any(|p| p.address() == **addr) && !outsiders.contains(addr)
            })
            .map(|(_, amount)| amount.units())
            .sum();
        assert_eq!(
            i128::from(rewards),
            i128::from(chain.height() * 10_000_000) + ledger.balances[&funder.address()]
        );
        let blocks_of_payments = chain.height() - 1;
        assert_eq!(
            blocks_of_payments as usize * PER_BLOCK,
            ledger.payments.len()
        );
    }
}
