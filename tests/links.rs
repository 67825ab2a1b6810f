//! Links between nodes that hear no broadcast of each other's, on loopback: named peers,
//! addresses learned by gossip, payments relayed over links, a wallet that reaches a node
//! only over TCP, and a peer that floods a link and then sends garbage.
//! (Across routed subnets, in network namespaces: `tests/routed.rs`.)

use mvbc_testkit::fake;
use mvbc_testkit::http;
use mvbc_testkit::procs;
use mvbc_testkit::rng::TestRng;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mvbc_net::{Cancel, read_frame, write_frame};
use mvbc_protocol::wire::{LinkMessage, MAX_ADDRS_PER_MESSAGE, Reply, Request, Status};
use mvbc_protocol::{Amount, Hash256, KeyPair, Payment, unix_now};
use procs::*;
use tempfile::tempdir;

/// Broadcasting off: these nodes meet only through the peers they are given.
const NO_BROADCAST: [&str; 2] = ["-s", "broadcast_address="];

fn miner(dir: &std::path::Path, net: &Net, extra: &[&str]) -> Miner {
    let mut args = NO_BROADCAST.to_vec();
    args.extend_from_slice(extra);
    Miner::start_with(dir, net, &args)
}

fn at(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn named_peers_link_gossip_finds_the_third_and_payments_cross_links_without_broadcast() {
    // Three miners race for each block: at 22 bits (tens of ms a block) a tie is rare.
    let net = Net::with_difficulty(22);
    let (a, b, c, w) = (
        tempdir().unwrap(),
        tempdir().unwrap(),
        tempdir().unwrap(),
        tempdir().unwrap(),
    );
    let mut ma = miner(a.path(), &net, &[]);
    let mut mb = miner(b.path(), &net, &["--peer", &at(ma.block_port)]);
    let mut mc = miner(c.path(), &net, &["--peer", &at(mb.block_port)]);
    // C names only B, and learns A from B (or A, naming nobody, learns C from B and dials
    // first: either way the link comes from gossip).
    let a_addr = at(ma.block_port);
    mc.wait_link(&a_addr, None);
    ma.wait_height(1);
    // Each may have mined a block 1 at start; the tie-break picks one everywhere.
    converge(&mut [&mut ma, &mut mb, &mut mc]);

    // A wallet that reaches nodes only by --peer: spend block 1's reward through B, see it
    // from C.
    let alice = new_address(w.path(), &net, "alice");
    let funder = [
        (a.path(), ma.block_port),
        (b.path(), mb.block_port),
        (c.path(), mc.block_port),
    ]
    .into_iter()
    .find(|(dir, port)| {
        assert!(sync_via(dir, &net, &at(*port)).height >= 1);
        balance(dir, &net, "mining_rewards") == "10.000000"
    })
    .expect("one miner holds block 1's reward")
    .0;
    let paid = send_via(
        funder,
        &net,
        &at(mb.block_port),
        "mining_rewards",
        "3",
        &alice,
    );
    // Relayed over links.
    for m in [&mut ma, &mut mb, &mut mc] {
        m.wait_payment(&paid);
    }
    // Three miners pool the payment at once and may each mine block 2: the tie-break settles
    // it, over links alone, with no block after.
    ma.wait_height(2);
    let (height, tip) = converge(&mut [&mut ma, &mut mb, &mut mc]);
    assert!(height >= 2);
    let seen = sync_via(w.path(), &net, &at(mc.block_port));
    assert_eq!(seen.tip, tip);
    assert_eq!(balance(w.path(), &net, "alice"), "3.000000");
    let links = ma.links();
    assert!(links.len() >= 2, "A was linked by B and by C: {links:?}");

    // B goes; C and A stay linked and keep one chain.
    let b_addr = at(mb.block_port);
    let (code, _) = mb.stop();
    assert_eq!(code, Some(0));
    let again = send_via(w.path(), &net, &at(mc.block_port), "alice", "1", &alice);
    // From C's side.
    ma.wait_payment(&again);
    ma.wait_height(height + 1);
    let (after, _) = converge(&mut [&mut ma, &mut mc]);
    assert!(after > height);
    let links = mc.links();
    assert!(links.iter().any(|(peer, _)| *peer == a_addr), "{links:?}");
    // What served well is remembered for the next start.
    let saved = std::fs::read_to_string(c.path().join("peers.dat")).unwrap();
    assert!(saved.lines().any(|l| l == a_addr || l == b_addr), "{saved}");
}

/// A link to `server` from the loopback address `source`, introduced by `hello`, as a peer on
/// another host would open it.
fn link_from(source: Ipv4Addr, server: SocketAddr, hello: Status) -> TcpStream {
    let mut stream = fake::connect_from(source, server).unwrap();
    write_frame(&mut stream, &Request::Link(hello).encode()).unwrap();
    let reply = read_frame(
        &mut stream,
        1 << 20,
        Duration::from_secs(10),
        &Cancel::never(),
    )
    .unwrap();
    assert!(matches!(Reply::decode(&reply), Ok(Reply::Linked(_))));
    stream
}

/// Reads a link's frames and counts their bytes until it closes.
fn count_incoming(mut stream: TcpStream) -> Arc<AtomicU64> {
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    thread::spawn(move || {
        while let Ok(body) = read_frame(
            &mut stream,
            1 << 20,
            Duration::from_secs(30),
            &Cancel::never(),
        ) {
            counted.fetch_add(body.len() as u64 + 4, Ordering::Relaxed);
        }
    });
    bytes
}

#[test]
fn a_peer_flooding_a_link_stays_within_its_caps_and_garbage_closes_the_link() {
    let net = Net::new();
    let a = tempdir().unwrap();
    let mut ma = miner(a.path(), &net, &[]);
    let api = ma.api();
    let server: SocketAddr = ([127, 0, 0, 1], ma.block_port).into();
    let hostile = Ipv4Addr::new(127, 0, 0, 66);

    // A link from "another host", by the book.
    let hello = Status {
        network: net.params().network_id(),
        node_id: 0xbad,
        height: 0,
        tip: Hash256::ZERO,
        chain_work: 0,
        block_server_port: 2607,
    };
    let mut link = link_from(hostile, server, hello);
    let received = count_incoming(link.try_clone().unwrap());
    ma.wait_link("127.0.0.66:2607", Some(false));

    // 60 lists of 100 addresses, and 2,000 payments nobody can afford, as fast as it can.
    let key = KeyPair::generate(1024).unwrap();
    let started = Instant::now();
    let mut rng = TestRng::new(66);
    let mut sent = 0u64;
    for i in 0..60u32 {
        let addrs: Vec<SocketAddr> = (0..MAX_ADDRS_PER_MESSAGE as u32)
            .map(|j| {
                SocketAddr::from((
                    [10, (i % 200) as u8, (j / 250) as u8, (j % 250) as u8 + 1],
                    2607 + (rng.next() % 100) as u16,
                ))
            })
            .collect();
        let bytes = LinkMessage::Addrs(addrs).encode();
        sent += bytes.len() as u64 + 4;
        write_frame(&mut link, &bytes).unwrap();
    }
    for i in 0..2_000u64 {
        let p = Payment::new_signed(&key, key.address(), Amount::from_units(1 + i), unix_now());
        let bytes = LinkMessage::Payment(p).encode();
        sent += bytes.len() as u64 + 4;
        write_frame(&mut link, &bytes).unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(2));
    let summary = http::get_json(api, "/api/v1/summary");
    let known = summary["known_addresses"].as_u64().unwrap();
    // Three lists (the burst) at most, of the 60: about 300 addresses, not 6,000.
    assert!(known <= 3 * MAX_ADDRS_PER_MESSAGE as u64 + 2, "{summary}");
    assert!(
        known >= MAX_ADDRS_PER_MESSAGE as u64,
        "some were learned: {summary}"
    );
    // Payments over 200 at once and 50 a second are dropped before the pool sees them.
    let refused = summary["refused_payments"].as_u64().unwrap();
    let allowed = 200.0 + 50.0 * (took + 3.0);
    assert!(
        (refused as f64) <= allowed,
        "{refused} refused in {took:.1} s: {summary}"
    );
    assert_eq!(summary["pending"], 0);
    // Nothing it sent made the node send it more than a trickle back (its status, our addresses).
    let back = received.load(Ordering::Relaxed);
    assert!(back * 20 < sent, "sent {sent} bytes, got {back} back");

    // Garbage: the link closes and the address is refused a while.
    write_frame(&mut link, b"MVBC\x02\xff\xff\xff\xff").unwrap();
    ma.wait_for("the link closed as invalid", |l| {
        l.starts_with("Link down: 127.0.0.66:2607, sent invalid data")
    });
    let mut relink = link_from(hostile, server, hello);
    // The server answered, but the node does not keep a link from a refused address.
    let closed = read_frame(
        &mut relink,
        1 << 20,
        Duration::from_secs(10),
        &Cancel::never(),
    );
    assert!(closed.is_err(), "a refused link is closed");
    // The API publishes once a second: one round, then the links as they are.
    thread::sleep(Duration::from_millis(1_200));
    let links = ma.links();
    assert!(
        !links
            .iter()
            .any(|(peer, _)| peer.starts_with("127.0.0.66:")),
        "{links:?}"
    );
    // And the node mines on.
    ma.wait_height(1);
}

#[test]
fn a_peer_named_by_an_ipv6_address_links_and_serves() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("a_peer_named_by_an_ipv6_address: NOT RUN: this host has no IPv6 loopback");
        return;
    }
    let net = Net::new();
    let (a, b) = (tempdir().unwrap(), tempdir().unwrap());
    let mut ma = miner(a.path(), &net, &[]);
    let a_at = format!("[::1]:{}", ma.block_port);
    let mut mb = miner(b.path(), &net, &["--peer", &a_at]);
    mb.wait_link(&a_at, Some(true));
    ma.wait_link(&format!("[::1]:{}", mb.block_port), Some(false));
    let tip = ma.wait_height(1);
    assert_eq!(mb.wait_height(1), tip, "B downloaded A's block over IPv6");
    // The same block servers still answer IPv4.
    assert_eq!(ma.tip().1, tip);
}
