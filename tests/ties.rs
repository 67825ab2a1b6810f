//! Ties at rest (issue 19): miners whose blocks come faster than their announcements all mine
//! the same payments, and then nobody pays. They must settle on one tip by themselves, with no
//! block after, within a few status intervals, and mine each payment once.

use mvbc_testkit::http;
use mvbc_testkit::procs;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use http::get_json;
use mvbc_net::Broadcaster;
use mvbc_protocol::wire::Datagram;
use mvbc_protocol::{Address, Amount, Hash256, Payment, Transaction, keyfile, unix_now};
use procs::*;
use tempfile::tempdir;

/// Bursts of payments, each followed by quiet.
const BURSTS: usize = 10;
/// Payments per burst, one block each (`block_size = 2`).
const PER_BURST: usize = 3;
/// How long one tip may take to appear once the payments are mined: ten status intervals of
/// the tests' 0.5 s, far more than the one round plus one download it takes.
const SETTLE_WITHIN: Duration = Duration::from_secs(5);

/// A miner with its API on a free port, and that port.
fn start(dir: &std::path::Path, net: &Net) -> (Miner, u16) {
    let miner = Miner::start(dir, net);
    let api = miner.api();
    (miner, api)
}

fn tips(miners: &[Miner]) -> Vec<(u64, Hash256)> {
    miners.iter().map(Miner::tip).collect()
}

fn settle_at_rest(count: usize) {
    // Difficulty 8: a block in well under a millisecond on one thread, while an announcement
    // takes a millisecond or more on loopback: every miner mines every payment.
    let net = Net::with_difficulty(8);
    let dirs: Vec<_> = (0..count).map(|_| tempdir().unwrap()).collect();
    let mut miners = Vec::new();
    let mut ports = Vec::new();
    for dir in &dirs {
        let (mut m, port) = start(dir.path(), &net);
        m.wait_height(1);
        miners.push(m);
        ports.push(port);
    }
    let funder = keyfile::load_key(&dirs[0].path().join("mining_rewards.pem")).unwrap();
    let out = Broadcaster::new(Ipv4Addr::new(127, 255, 255, 255), net.transaction_port).unwrap();
    let mut paid: Vec<Payment> = Vec::new();
    let mut stamp = unix_now();
    let mut slowest = Duration::ZERO;
    for burst in 0..BURSTS {
        for i in 0..PER_BURST {
            stamp += 1;
            let to = Address(Hash256([(burst * PER_BURST + i + 1) as u8; 32]));
            let p = Payment::new_signed(&funder, to, Amount::from_units(1_000), stamp);
            out.send(&Datagram::Payment(p.clone())).unwrap();
            paid.push(p);
        }
        // Every miner mines all of them; then nobody pays.
        let mined_at = poll_until(
            &mut miners,
            |ms| {
                let height = 1 + paid.len() as u64;
                ms.iter().all(|m| m.tip().0 >= height).then(Instant::now)
            },
            |ms| format!("burst {burst} was never mined: {:?}", tips(ms)),
        );
        let settled = loop {
            let now = tips(&miners);
            if now.iter().all(|t| *t == now[0]) {
                break now[0];
            }
            assert!(
                mined_at.elapsed() < SETTLE_WITHIN,
                "burst {burst}: {count} miners still on {now:?} {:?} after the payments were \
                 mined, with nobody paying\n{}",
                mined_at.elapsed(),
                miners
                    .iter()
                    .map(|m| m.log())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        };
        slowest = slowest.max(mined_at.elapsed());
        // At rest it stays settled: no block comes, and nobody moves.
        thread::sleep(Duration::from_millis(1_500));
        assert_eq!(tips(&miners), vec![settled; count], "burst {burst}");
        assert_eq!(settled.0, 1 + paid.len() as u64, "one block a payment");
    }
    // Each payment once on the agreed chain, in every miner's store.
    for dir in &dirs {
        let chain = stored_chain(dir.path(), &net);
        let mut seen: HashMap<Hash256, usize> = HashMap::new();
        for height in 1..=chain.height() {
            for tx in &chain.block_at(height).unwrap().unwrap().transactions {
                if let Transaction::Payment(p) = tx {
                    *seen.entry(p.id()).or_default() += 1;
                }
            }
        }
        for p in &paid {
            assert_eq!(seen.get(&p.id()), Some(&1), "payment {} once", p.id());
        }
    }
    // The regime this test is for, read from each node's API: blocks that tied, and lost.
    let summaries: Vec<serde_json::Value> = ports
        .iter()
        .map(|port| get_json(*port, "/api/v1/summary"))
        .collect();
    let field = |s: &serde_json::Value, key: &str| s[key].as_u64().unwrap();
    let switched: u64 = summaries.iter().map(|s| field(s, "reorgs")).sum();
    assert!(switched > 0, "no tie happened: the test proves nothing");
    // Every node counts stale blocks: those it holds off its chain, and tips it heard that are
    // real blocks not on its chain; never more than the blocks mined that are not on the
    // agreed chain.
    let mined: u64 = summaries.iter().map(|s| field(s, "blocks_mined")).sum();
    let height = 1 + paid.len() as u64;
    let truth = mined - height;
    let mut reported = Vec::new();
    for s in &summaries {
        let stale = &s["stale_blocks"];
        assert_eq!(stale["best"], height, "{s}");
        let n = stale["stale"].as_u64().unwrap();
        // A node whose tip moved to another branch holds a stale block.
        assert!(
            (field(s, "reorgs") == 0 || n > 0) && n <= truth,
            "stale {n}, truly {truth}: {s}"
        );
        reported.push(n);
    }
    eprintln!(
        "ties: {count} miners, {} payments; {switched} tip switches; one tip at most {:?} after \
         the last payment was mined; {truth} of {mined} blocks mined went stale, the nodes \
         report {reported:?}",
        paid.len(),
        slowest
    );
}

#[test]
fn two_miners_that_mine_the_same_payments_settle_on_one_tip_at_rest() {
    settle_at_rest(2);
}

#[test]
fn three_miners_that_mine_the_same_payments_settle_on_one_tip_at_rest() {
    settle_at_rest(3);
}
