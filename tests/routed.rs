//! Nodes on three subnets joined by a router (network namespaces made by the test): no
//! broadcast crosses, so they meet only through named peers and gossip. Needs root; CI runs as
//! root and sets `MVBC_REQUIRE_ROOT=1`.

use mvbc_testkit::netns;
use mvbc_testkit::procs;

use std::time::Duration;

use netns::Routed;
use procs::*;
use tempfile::tempdir;

/// Each miner's block server port; the namespaces keep them apart.
const PORT: &str = "2607";

#[test]
fn miners_on_three_routed_subnets_meet_by_name_and_gossip_and_a_remote_wallet_pays() {
    if !is_root("miners_on_three_routed_subnets", "network namespaces") {
        return;
    }
    // Declared first, so it is dropped last: after every process in it has been killed.
    let lab = Routed::build(&[1, 1, 2]);
    // Two miners race for each block: at 24 bits (a fifth of a second a block) ties are rare.
    let net = Net::with_difficulty(24);
    let on = |i: usize| {
        let (host, _, broadcast) = &lab.hosts[i];
        let mut n = net.on(host);
        n.broadcast = *broadcast;
        n
    };
    let (n1, n2, n3, n4) = (on(0), on(1), on(2), on(3));
    let addr = |i: usize| format!("{}:{PORT}", lab.hosts[i].1);
    let (a_at, b_at, c_at) = (addr(0), addr(1), addr(2));
    let dirs: Vec<_> = (0..4).map(|_| tempdir().unwrap()).collect();
    let (a, b, c, w) = (
        dirs[0].path(),
        dirs[1].path(),
        dirs[2].path(),
        dirs[3].path(),
    );
    let port = ["-s", "block_server_port=2607"];

    // A names nobody, B names A, C names only B.
    let mut ma = Miner::start_with(a, &n1, &port);
    let mb = Miner::start_with(b, &n2, &[&port[..], &["--peer", &a_at]].concat());
    let mut mc = Miner::start_with(c, &n3, &[&port[..], &["--peer", &b_at]].concat());
    // A link to A, learned by gossip (C dials A, or A, told of C by B, dials first).
    mc.wait_link(&a_at, None);

    // Block 1 may be any miner's: each may mine one at start, and the tie-break picks the
    // same one everywhere. Whoever's it is pays alice.
    ma.wait_height(1);
    agree(&mut [&mut ma, &mut mc], 1);
    let alice = new_address(w, &n4, "alice");
    let funder = [(a, &n1), (b, &n2), (c, &n3)]
        .into_iter()
        .find(|(dir, n)| {
            sync_once(dir, n);
            balance(dir, n, "mining_rewards") == "10.000000"
        })
        .expect("one miner holds block 1's reward");
    wallet_ok(funder.0, funder.1, &["send", "mining_rewards", "3", &alice]);
    ma.wait_height(2);
    poll_until(
        &mut (),
        |_| {
            sync_via(w, &n4, &c_at);
            (balance(w, &n4, "alice") == "3.000000").then_some(())
        },
        |_| format!("alice never saw her 3 coins through C\n{}", mc.log()),
    );

    // B goes. The wallet pays A directly, across the router; A pools it and C follows A.
    let (code, _) = mb.stop();
    assert_eq!(code, Some(0));
    let a_rewards = ma
        .lines(|l| l.starts_with("Mining rewards go to "))
        .pop()
        .and_then(|l| l.split_whitespace().last().map(str::to_string))
        .unwrap();
    let paid = send_via(w, &n4, &a_at, "alice", "1", &a_rewards);
    // From subnet 3.
    ma.wait_payment(&paid);
    let (height, _) = agree(&mut [&mut ma, &mut mc], 3);
    assert!(sync_via(w, &n4, &a_at).pending.is_empty());
    assert_eq!(balance(w, &n4, "alice"), "2.000000");

    // The router stops forwarding: A mines two blocks, C one, each alone.
    lab.forward(false);
    std::thread::sleep(Duration::from_secs(3));
    for (i, amount) in ["0.5", "0.25"].iter().enumerate() {
        sync_once(a, &n1);
        wallet_ok(a, &n1, &["send", "mining_rewards", amount, &alice]);
        ma.wait_height(height + 1 + i as u64);
    }
    let lost = send_via(w, &n4, &c_at, "alice", "0.125", &a_rewards);
    mc.wait_height(height + 1);
    // Forwarding again: one tip, A's heavier branch; C takes it, mines its payment again.
    lab.forward(true);
    let (healed, tip) = agree(&mut [&mut ma, &mut mc], height + 2);
    // C left its branch (the API publishes once a second).
    mc.wait_api("the reorg", "summary", |s| s["reorgs"].as_u64() >= Some(1));
    // The payment C had mined alone is pending again at C, which passes it on to A.
    // C's payment, passed on after the reorg.
    ma.wait_payment(&lost);
    let report = poll_until(
        &mut (),
        |_| {
            let r = sync_via(w, &n4, &c_at);
            r.pending.is_empty().then_some(r)
        },
        |_| {
            format!(
                "the payment lost in the partition was never mined again\n{}",
                mc.log()
            )
        },
    );
    // Mined in the block after the heal, or already in the agreed tip when C's payment went
    // into a block that tied with A's.
    assert!(report.height >= healed, "{report:?} after {tip}");
    assert!(!mc.log().contains("panicked") && !ma.log().contains("panicked"));
    assert_eq!(balance(w, &n4, "alice"), "2.625000");
}
