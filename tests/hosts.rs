//! Miners and wallets on separate hosts: network namespaces joined by a bridge, the subnet's
//! broadcast address, one host cut off while both sides mine, then the link healed.
//!
//! The test builds its own namespaces (a switch holding the bridge, and one namespace per
//! host) and removes them when it ends, even on failure. Nothing is sent outside them.
//! It needs root; CI runs as root and sets `MVBC_REQUIRE_ROOT=1`.

use mvbc_testkit::netns;
use mvbc_testkit::procs;

use std::net::Ipv4Addr;
use std::process::Command;

use netns::ip;
use procs::*;
use tempfile::tempdir;

/// Test hosts on one subnet, 10.77.0.0/24, joined by a bridge in a namespace of its own.
/// Every namespace it made is deleted when it is dropped.
struct Lab {
    switch: String,
    hosts: Vec<String>,
    made: Vec<String>,
}

impl Lab {
    const BROADCAST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 255);

    fn build(n: usize) -> Lab {
        let prefix = format!("mvbc{}", std::process::id());
        let mut lab = Lab {
            switch: format!("{prefix}-sw"),
            hosts: Vec::new(),
            made: Vec::new(),
        };
        let sw = lab.switch.clone();
        ip(&["netns", "add", &sw]);
        lab.made.push(sw.clone());
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let host = format!("{prefix}-h{i}");
            ip(&["netns", "add", &host]);
            lab.made.push(host.clone());
            let port = format!("p{i}");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &host,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            let address = format!("10.77.0.{i}/24");
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &address,
                "broadcast",
                "10.77.0.255",
                "dev",
                "eth0",
            ]);
            ip(&["-n", &host, "link", "set", "eth0", "up"]);
            ip(&["-n", &host, "link", "set", "lo", "up"]);
            lab.hosts.push(host);
        }
        lab
    }

    /// Takes host `i` (from 1) off the bridge: its link stays up, its packets go nowhere.
    fn cut(&self, i: usize) {
        self.port(i, &["nomaster"]);
    }

    /// Puts host `i` back on the bridge.
    fn heal(&self, i: usize) {
        self.port(i, &["master", "br0"]);
    }

    fn port(&self, i: usize, what: &[&str]) {
        let port = format!("p{i}");
        let mut args = vec!["-n", &self.switch, "link", "set", &port];
        args.extend_from_slice(what);
        ip(&args);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

#[test]
fn miners_on_three_hosts_cut_apart_and_healed_converge_on_the_heavier_chain() {
    if !is_root("miners_on_three_hosts", "network namespaces") {
        return;
    }
    // Declared first, so it is dropped last: after every process in it has been killed.
    let lab = Lab::build(3);
    // Two miners race once the cut heals (both hold bob's payment: B passes it on over its
    // link to A): at 22 bits a block takes tens of ms, so a tie is decided by the next one.
    let mut net = Net::with_difficulty(22);
    net.broadcast = Lab::BROADCAST;
    let (h1, h2, h3) = (
        net.on(&lab.hosts[0]),
        net.on(&lab.hosts[1]),
        net.on(&lab.hosts[2]),
    );
    let (a, b, wa, wb) = (
        tempdir().unwrap(),
        tempdir().unwrap(),
        tempdir().unwrap(),
        tempdir().unwrap(),
    );
    let alice = new_address(wa.path(), &h3, "alice");
    let bob = new_address(wb.path(), &h2, "bob");

    // Host 1 mines alone at first; alice (host 3) and bob (host 2) get 3 coins each.
    let mut miner_a = Miner::start(a.path(), &h1);
    miner_a.wait_height(1);
    sync_once(a.path(), &h1);
    send(a.path(), &h1, "mining_rewards", "3", &alice);
    send(a.path(), &h1, "mining_rewards", "3", &bob);
    let tip3 = miner_a.wait_height(3);
    // Host 2's miner joins and downloads the chain across the bridge.
    let mut miner_b = Miner::start(b.path(), &h2);
    assert_eq!(miner_b.wait_height(3), tip3);

    // Cut host 2 off. Alice pays twice on host 1's side, bob once on his own.
    lab.cut(2);
    sync_once(wa.path(), &h3);
    send(wa.path(), &h3, "alice", "1", &bob);
    miner_a.wait_height(4);
    sync_until_confirmed(wa.path(), &h3);
    send(wa.path(), &h3, "alice", "0.5", &bob);
    miner_a.wait_height(5);
    assert!(sync_until_confirmed(wa.path(), &h3).pending.is_empty());
    sync_once(wb.path(), &h2);
    send(wb.path(), &h2, "bob", "1", &alice);
    let b4 = miner_b.wait_height(4);
    assert_ne!((4, b4), miner_a.tip(), "two branches");
    sync_until_confirmed(wb.path(), &h2);

    // Heal: host 2 hears the heavier chain, switches to it, and bob's payment is mined again
    // (by B, or by A too: B passes it on over the link it made to A's block server after
    // downloading from it; if both mine it, the tie-break settles it with no block after).
    lab.heal(2);
    miner_b.wait_api("the reorg", "summary", |s| s["reorgs"].as_u64() >= Some(1));
    let (_, b6) = agree(&mut [&mut miner_a, &mut miner_b], 6);
    assert_eq!(sync_until_confirmed(wa.path(), &h3).tip, b6);
    assert_eq!(sync_until_confirmed(wb.path(), &h2).tip, b6);
    assert_eq!(balance(wa.path(), &h3, "alice"), "2.500000");
    assert_eq!(balance(wb.path(), &h2, "bob"), "3.500000");
}
