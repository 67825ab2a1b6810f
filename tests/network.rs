//! The network end to end: real `mvbc-miner` and `mvbc-wallet` processes on loopback, each test
//! on its own UDP ports, at a low difficulty.

use mvbc_testkit::procs;

use std::path::Path;
use std::thread;
use std::time::Duration;

use procs::*;
use tempfile::tempdir;

#[test]
fn one_miner_and_one_wallet_confirm_a_payment_with_balances_right() {
    let net = Net::new();
    let (m, w) = (tempdir().unwrap(), tempdir().unwrap());
    let mut miner = Miner::start(m.path(), &net);
    miner.wait_height(1);
    let alice = new_address(w.path(), &net, "alice");
    // The wallet in the miner's directory spends the miner's rewards, as in the original.
    assert_eq!(sync_once(m.path(), &net).height, 1);
    assert_eq!(balance(m.path(), &net, "mining_rewards"), "10.000000");

    let id = send(m.path(), &net, "mining_rewards", "3", &alice);
    let row = balances(m.path(), &net)
        .into_iter()
        .find(|r| r.name == "mining_rewards")
        .unwrap();
    assert_eq!(row.pending, "-3.000000");
    // What is pending is spoken for: 7 left, not 10.
    let over = wallet(m.path(), &net, &["send", "mining_rewards", "7.5", &alice]);
    assert!(!over.status.success());
    let err = String::from_utf8_lossy(&over.stderr);
    assert!(err.contains("7.000000 available"), "{err}");

    miner.wait_height(2);
    let report = sync_until_confirmed(m.path(), &net);
    assert_eq!(report.height, 2);
    assert_eq!(balance(m.path(), &net, "mining_rewards"), "17.000000");
    assert_eq!(sync_once(w.path(), &net).tip, report.tip);
    assert_eq!(balance(w.path(), &net, "alice"), "3.000000");
    assert_eq!(
        miner
            .lines(|l| l.starts_with(&format!("Payment pooled: {id}")))
            .len(),
        1,
        "{}",
        miner.log()
    );
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("Shutting down: height 2"), "{log}");
}

#[test]
fn two_miners_and_two_wallets_pay_both_ways_and_end_on_one_chain() {
    // About 0.1 s a block on one thread: long against the milliseconds a block takes to
    // spread, so the two miners seldom find one at the same moment (and `converge` copes when
    // they do).
    let net = Net::with_difficulty(22);
    let (a, b, w) = (tempdir().unwrap(), tempdir().unwrap(), tempdir().unwrap());
    let mut miner_a = Miner::start(a.path(), &net);
    miner_a.wait_height(1);
    let mut miner_b = Miner::start(b.path(), &net);
    // B listens before it mines, so it adopts A's block 1 instead of forking at once.
    miner_b.wait_height(1);
    assert_eq!(miner_a.tip(), miner_b.tip());
    let bob = new_address(w.path(), &net, "bob");
    let a_rewards = wallet_ok(a.path(), &net, &["list-addresses", "--json"]);
    let a_rewards: Vec<Row> = serde_json::from_str(a_rewards.trim()).unwrap();
    let a_rewards = a_rewards[0].address.clone();

    sync_once(a.path(), &net);
    send(a.path(), &net, "mining_rewards", "4", &bob);
    miner_a.wait_height(2);
    let (before, _) = converge(&mut [&mut miner_a, &mut miner_b]);
    sync_until_confirmed(w.path(), &net);
    assert_eq!(balance(w.path(), &net, "bob"), "4.000000");

    send(w.path(), &net, "bob", "1.5", &a_rewards);
    miner_b.wait_height(before + 1);
    let (height, tip) = converge(&mut [&mut miner_a, &mut miner_b]);
    let report = sync_until_confirmed(w.path(), &net);
    assert_eq!(balance(w.path(), &net, "bob"), "2.500000");

    // Every coin is a reward: what the two miners hold is all the rest.
    sync_until_confirmed(a.path(), &net);
    sync_until_confirmed(b.path(), &net);
    let units = |dir: &Path| -> u64 {
        let text = balance(dir, &net, "mining_rewards");
        let (whole, frac) = text.split_once('.').unwrap();
        whole.parse::<u64>().unwrap() * 1_000_000 + frac.parse::<u64>().unwrap()
    };
    let (final_height, final_tip) = converge(&mut [&mut miner_a, &mut miner_b]);
    assert_eq!(
        (final_height, final_tip),
        (height, tip),
        "nothing mined at rest"
    );
    assert!(report.height >= height);
    assert_eq!(
        units(a.path()) + units(b.path()) + 2_500_000,
        final_height * 10_000_000
    );
}

/// Where both fork tests start: on `net1`, A mines and pays alice (wallet `wa`) and bob
/// (wallet `wb`) 3 coins each; B downloads that chain, then restarts on `net2`, cut off from A.
/// Then alice pays bob 1 on A's side (`lost`, one block deep in A's branch, height 4) and bob
/// pays alice 1 and 0.5 on B's side (a heavier branch, height 5).
struct Split {
    net2: Net,
    /// The miners' data directories.
    dirs: [tempfile::TempDir; 2],
    wa: tempfile::TempDir,
    wb: tempfile::TempDir,
    miner_a: Miner,
    miner_b: Miner,
    lost: String,
}

fn split() -> Split {
    let (net1, net2) = (Net::new(), Net::new());
    let (a, b) = (tempdir().unwrap(), tempdir().unwrap());
    let (wa, wb) = (tempdir().unwrap(), tempdir().unwrap());
    let alice = new_address(wa.path(), &net1, "alice");
    let bob = new_address(wb.path(), &net1, "bob");
    let mut miner_a = Miner::start(a.path(), &net1);
    miner_a.wait_height(1);
    sync_once(a.path(), &net1);
    send(a.path(), &net1, "mining_rewards", "3", &alice);
    send(a.path(), &net1, "mining_rewards", "3", &bob);
    miner_a.wait_height(3);
    let mut miner_b = Miner::start(b.path(), &net1);
    miner_b.wait_height(3);
    assert_eq!(miner_a.tip(), miner_b.tip());

    // Cut: B leaves and comes back on its own network. Each side mines on its own.
    let (code, log) = miner_b.stop();
    assert_eq!(code, Some(0), "{log}");
    let mut miner_b = Miner::start(b.path(), &net2);
    sync_once(wa.path(), &net1);
    let lost = send(wa.path(), &net1, "alice", "1", &bob);
    miner_a.wait_height(4);
    assert!(sync_until_confirmed(wa.path(), &net1).pending.is_empty());

    sync_once(wb.path(), &net2);
    send(wb.path(), &net2, "bob", "1", &alice);
    miner_b.wait_height(4);
    sync_until_confirmed(wb.path(), &net2);
    send(wb.path(), &net2, "bob", "0.5", &alice);
    miner_b.wait_height(5);
    sync_until_confirmed(wb.path(), &net2);
    let (_, a_branch) = miner_a.tip();
    assert_ne!(a_branch, miner_b.tip().1, "two branches");
    Split {
        net2,
        dirs: [a, b],
        wa,
        wb,
        miner_a,
        miner_b,
        lost,
    }
}

#[test]
fn a_fork_resolves_to_the_heavier_chain_and_the_losers_payments_are_mined_again() {
    let Split {
        net2,
        dirs: [a, _b],
        wa,
        wb,
        miner_a,
        mut miner_b,
        lost,
        ..
    } = split();

    // Heal: A joins B's network. B's branch has more work: A reorgs to it, and alice's payment,
    // which only A's lost block held, goes back to A's pool and into a block on B's chain.
    let (code, log) = miner_a.stop();
    assert_eq!(code, Some(0), "{log}");
    let mut miner_a = Miner::start(a.path(), &net2);
    miner_a.wait_api("the reorg", "summary", |s| s["reorgs"].as_u64() >= Some(1));
    miner_a.wait_height(6);
    miner_b.wait_height(6);
    converge(&mut [&mut miner_a, &mut miner_b]);
    let pooled_again = miner_a.lines(|l| l.starts_with(&format!("Payment pooled: {lost}")));
    assert!(
        pooled_again.is_empty(),
        "it came back by the reorg, not the wallet"
    );

    let report = sync_until_confirmed(wa.path(), &net2);
    assert!(report.height >= 6);
    assert_eq!(balance(wa.path(), &net2, "alice"), "3.500000");
    sync_until_confirmed(wb.path(), &net2);
    assert_eq!(balance(wb.path(), &net2, "bob"), "2.500000");
}

#[test]
fn a_wallet_that_joins_late_downloads_the_whole_chain() {
    let net = Net::new();
    let (m, late) = (tempdir().unwrap(), tempdir().unwrap());
    let mut miner = Miner::start(m.path(), &net);
    miner.wait_height(1);
    sync_once(m.path(), &net);
    // Five payments pending at once: each block holds one, so the chain grows to 6.
    for _ in 0..5 {
        send(m.path(), &net, "mining_rewards", "1", "mining_rewards");
    }
    let tip = miner.wait_height(6);
    let report = sync_once(late.path(), &net);
    assert_eq!((report.height, report.tip), (6, tip.to_string()));
}

/// The default wallet is light (headers, and its own transactions with proofs); one that
/// downloads every block (`--full`) shows the same balances and history on the same chain.
#[test]
fn a_light_and_a_full_wallet_show_the_same_balances_and_history() {
    let net = Net::new();
    let (m, light, full) = (tempdir().unwrap(), tempdir().unwrap(), tempdir().unwrap());
    let mut miner = Miner::start(m.path(), &net);
    miner.wait_height(1);
    let alice = new_address(light.path(), &net, "alice");
    std::fs::copy(
        light.path().join("alice.pem"),
        full.path().join("alice.pem"),
    )
    .unwrap();
    sync_once(m.path(), &net);
    for amount in ["1", "2.5", "0.25"] {
        send(m.path(), &net, "mining_rewards", amount, &alice);
    }
    miner.wait_height(4);
    sync_once(light.path(), &net);
    // Alice pays back from the light wallet, and the full one sees it too.
    let miner_address = balances(m.path(), &net)
        .into_iter()
        .find(|r| r.name == "mining_rewards")
        .unwrap()
        .address;
    send(light.path(), &net, "alice", "0.75", &miner_address);
    let tip = miner.wait_height(5).to_string();
    let report = sync_until_confirmed(light.path(), &net);
    assert_eq!(report.tip, tip);
    let out = wallet_ok(full.path(), &net, &["sync", "--once", "--full", "--json"]);
    let full_report: SyncReport = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(full_report.tip, tip);
    // A wallet that synced in full once stays full, without being told again.
    let again = wallet_ok(full.path(), &net, &["sync", "--once"]);
    assert!(again.starts_with("Syncing from height 5"), "{again}");

    assert_eq!(balance(light.path(), &net, "alice"), "3.000000");
    assert_eq!(balances(light.path(), &net), balances(full.path(), &net));
    let history = |dir: &Path| wallet_ok(dir, &net, &["history", "alice", "--json"]);
    assert_eq!(history(light.path()), history(full.path()));
    assert!(light.path().join("wallet-headers.dat").exists());
    assert!(!light.path().join("wallet-blocks.dat").exists());
    assert!(full.path().join("wallet-blocks.dat").exists());
    // The light wallet knows its own addresses' history only, and says so.
    let other = wallet(light.path(), &net, &["history", &miner_address]);
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("sync --full"), "{err}");
    wallet_ok(full.path(), &net, &["history", &miner_address]);
}

#[test]
fn a_payment_made_while_no_miner_runs_is_confirmed_once_one_starts() {
    let net = Net::new();
    let (m, w) = (tempdir().unwrap(), tempdir().unwrap());
    let alice = new_address(w.path(), &net, "alice");
    let mut miner = Miner::start(m.path(), &net);
    miner.wait_height(1);
    sync_once(m.path(), &net);
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");

    let id = send(m.path(), &net, "mining_rewards", "2", &alice);
    let alone = wallet(m.path(), &net, &["sync", "--once", "--timeout", "1.5"]);
    assert!(!alone.status.success());
    let err = String::from_utf8_lossy(&alone.stderr);
    assert!(err.contains("no miner heard"), "{err}");

    // A running sync keeps broadcasting the payment; a miner that starts later mines it.
    let mut sync = Proc::spawn(&wallet_bin(), m.path(), &net, &["sync"]);
    sync.wait_for("a re-broadcast", |l| l.starts_with("Sent 1 pending"));
    let mut miner = Miner::start(m.path(), &net);
    let confirmed = format!("Payment confirmed: {id}");
    sync.wait_for("the confirmation", |l| l == confirmed);
    let (code, log) = sync.stop_with("INT");
    assert_eq!(code, Some(0), "Ctrl-C ends a sync cleanly\n{log}");
    assert!(log.contains("Synced: height 2"), "{log}");
    miner.wait_height(2);
    sync_once(w.path(), &net);
    assert_eq!(balance(w.path(), &net, "alice"), "2.000000");
}

#[test]
fn a_miner_killed_with_sigkill_restarts_with_its_chain_intact() {
    let net = Net::new();
    let m = tempdir().unwrap();
    let mut miner = Miner::start(m.path(), &net);
    miner.wait_height(1);
    sync_once(m.path(), &net);
    for _ in 0..3 {
        send(m.path(), &net, "mining_rewards", "1", "mining_rewards");
    }
    let tip4 = miner.wait_height(4);
    // One more payment, and the kill lands while it is pooled or mined.
    send(m.path(), &net, "mining_rewards", "1", "mining_rewards");
    miner.kill9();

    let mut miner = Miner::start(m.path(), &net);
    let loaded = miner.wait_for("the chain", |l| l.starts_with("Chain loaded:"));
    let (height, tip) = miner.tip();
    assert!(height >= 4, "{loaded}");
    if height == 4 {
        assert_eq!(tip, tip4);
    }
    // The wallet still holds the last payment if the kill lost it: it goes through now.
    let report = sync_until_confirmed(m.path(), &net);
    assert_eq!(report.height, 5);
    assert_eq!(balance(m.path(), &net, "mining_rewards"), "50.000000");
}

/// A status claims a huge chain for a block server that holds only genesis and says so of
/// itself: the claim is not the server's (anyone can send one naming it), so nobody is blamed,
/// and the server's own word is believed for a while: it is asked once, not once a status.
#[test]
fn a_claim_a_block_server_disowns_is_asked_about_once_and_blames_nobody() {
    use mvbc_net::{BlockServer, Broadcaster};
    use mvbc_protocol::wire::{Datagram, Status};
    use mvbc_protocol::{Amount, Chain, ConsensusParams};
    use std::sync::{Arc, RwLock};

    let net = Net::new();
    let m = tempdir().unwrap();
    let mut miner = Miner::start(m.path(), &net);
    miner.wait_height(1);
    // A liar: claims a huge chain, serves a block server that holds only genesis.
    let empty = Chain::new(ConsensusParams {
        difficulty: net.difficulty,
        block_size: 2,
        block_reward: Amount::from_coins(10).unwrap(),
    });
    let server = BlockServer::start(0, Arc::new(RwLock::new(empty))).unwrap();
    let lie = Datagram::Status(Status {
        network: net.params().network_id(),
        node_id: 42,
        height: 1_000_000,
        tip: mvbc_protocol::Hash256([7; 32]),
        chain_work: u128::MAX / 2,
        block_server_port: server.port(),
    });
    let out = Broadcaster::new([127, 255, 255, 255].into(), net.status_port).unwrap();
    for _ in 0..20 {
        out.send(&lie).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    let disowned = miner.log_lines(|l| l.contains("a status in its name was not its own"));
    assert_eq!(disowned.len(), 1, "asked once\n{}", miner.log());
    assert!(
        disowned[0].contains("its own status announces 0 work"),
        "{disowned:?}"
    );
    assert!(miner.lines(|l| l.starts_with("Download from")).is_empty());
    // And it goes on with its work.
    sync_once(m.path(), &net);
    send(m.path(), &net, "mining_rewards", "1", "mining_rewards");
    miner.wait_height(2);
}

#[test]
fn a_payment_a_reorg_takes_out_of_the_chain_is_broadcast_again_by_its_wallet() {
    let Split {
        net2,
        wa,
        miner_a,
        mut miner_b,
        lost,
        ..
    } = split();
    // A dies for good, with its pool: only alice's wallet still has her payment.
    miner_a.kill9();

    // Alice's wallet follows the heavier chain: her payment is pending again, and the wallet
    // broadcasts it, so the surviving miner mines it.
    let report = sync_once(wa.path(), &net2);
    assert_eq!(report.pending, vec![lost.clone()]);
    miner_b.wait_height(6);
    assert!(sync_until_confirmed(wa.path(), &net2).pending.is_empty());
    assert_eq!(balance(wa.path(), &net2, "alice"), "3.500000");
}

#[test]
fn block_size_one_mines_reward_only_blocks_continuously_and_bare_settings_work() {
    // As the original: `difficulty=16`-style arguments, and blocks of the reward alone, mined
    // with no payment waiting (with block_size 2 the miner would stop at height 1).
    let net = Net::new();
    let m = tempdir().unwrap();
    let mut miner = Miner::start_with(m.path(), &net, &["block_size=1"]);
    miner.wait_height(4);
}

/// Issue 22: a fresh miner joining a chain thousands of blocks ahead downloads it before it
/// mines: it mines no block below the network's tip, says so in its log (one line to begin, one
/// to end, no `Block adopted` line per batch) and shows its progress in the API meanwhile.
#[test]
fn a_miner_joining_a_long_chain_downloads_it_before_mining_and_shows_its_progress() {
    const HEIGHT: u64 = 3_000;
    let net = Net::new();
    let (a, b) = (tempdir().unwrap(), tempdir().unwrap());
    let key = mvbc_protocol::KeyPair::generate(1024).unwrap();
    store_blocks(&net, a.path(), &build_chain(&net, &key, HEIGHT, 0));
    // A holds the network's chain; with no payment to mine, it stays at its tip.
    let mut miner_a = Miner::start(a.path(), &net);
    let tip = miner_a.wait_height(HEIGHT);
    let mut miner_b = Miner::start(b.path(), &net);
    let mut seen = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let summary = miner_b.get("summary");
        let height = summary["height"].as_u64().unwrap();
        if !summary["initial_download"].is_null() {
            seen = Some(summary);
        }
        if height >= HEIGHT {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B is at {height}\n{}",
            miner_b.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(miner_b.wait_height(HEIGHT), tip);
    // The line that ends the download comes once the last batch is in, which the API may show
    // first.
    miner_b.wait_for("the end of the download", |l| {
        l.contains("Downloaded 3,000 blocks")
    });
    let log = miner_b.log();
    let summary = miner_b.get("summary");
    assert_eq!(
        summary["blocks_mined"], 0,
        "nothing mined below the network's tip\n{log}"
    );
    assert_eq!(summary["reorgs"], 0, "{log}");
    let began = format!("announces height {}", "3,000");
    assert!(log.contains(&began), "{log}");
    assert!(log.contains("Downloaded 3,000 blocks"), "{log}");
    let seen = seen.unwrap_or_else(|| panic!("the API never showed the download\n{log}"));
    assert_eq!(seen["mining"], "downloading", "{seen}");
    assert_eq!(seen["initial_download"]["target_height"], HEIGHT, "{seen}");
    let progress = seen["initial_download"]["progress"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&progress), "{seen}");
}

/// Issue 22: two networks on one LAN (other consensus settings, the same ports) ignore each
/// other: one line each, the rest counted, no download of a chain that would be refused.
#[test]
fn miners_of_two_networks_on_one_lan_ignore_each_other_with_one_line() {
    let net = Net::new();
    let (a, b) = (tempdir().unwrap(), tempdir().unwrap());
    let mut miner_a = Miner::start(a.path(), &net);
    let other = format!("block_size={}", net.block_size + 1);
    let mut miner_b = Miner::start_with(b.path(), &net, &["-s", &other]);
    let tip_a = miner_a.wait_height(1);
    let tip_b = miner_b.wait_height(1);
    assert_ne!(tip_a, tip_b, "each mined its own block 1");
    for (miner, tip) in [(&mut miner_a, tip_a), (&mut miner_b, tip_b)] {
        let summary = miner.wait_api("statuses of the other network counted", "summary", |s| {
            s["other_network_messages"].as_u64() > Some(1) && s["peers"] == 0
        });
        // Neither took the other's block 1 by the tie-break.
        assert_eq!(summary["tip"], tip.to_string(), "{summary}");
        assert_eq!(summary["reorgs"], 0, "{summary}");
    }
    let (_, log_a) = miner_a.stop();
    let (_, log_b) = miner_b.stop();
    for log in [&log_a, &log_b] {
        assert_eq!(log.matches("and every node of network").count(), 1, "{log}");
        assert!(!log.contains("Download from"), "{log}");
    }
}
