//! Well-formed attacks that fuzzing never reaches: peers that replay, stall, hog the block
//! server or flood valid-looking datagrams. Each runs against real processes on loopback (a
//! client "on another host" connects from another 127.x.y.z address) and asserts what held.

#[path = "support/fake.rs"]
mod fake;
#[path = "support/procs.rs"]
mod procs;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fake::*;
use mvbc_protocol::net::{BlockClient, Cancel, PER_SERVER, read_frame, write_frame};
use mvbc_protocol::wire::{MAX_LOCATOR_LEN, MAX_REPLY_BYTES, Request};
use mvbc_protocol::{Hash256, KeyPair, genesis_block};
use procs::*;
use tempfile::tempdir;

#[test]
fn a_peer_replaying_known_blocks_is_found_out_and_the_honest_chain_adopted_beside_it() {
    let net = Net::new();
    let (h, n, w) = (tempdir().unwrap(), tempdir().unwrap(), tempdir().unwrap());
    let key = KeyPair::generate(1024).unwrap();
    let honest_chain = build_chain(&net, &key, 30, 0);
    let honest_tip = honest_chain.last().unwrap().hash();
    store_blocks(h.path(), &honest_chain);
    // Its block server answers every request with the genesis block alone and a tip at
    // u64::MAX, which a download used to count as progress forever.
    let replayer = serve_forever(vec![genesis_block()], u64::MAX);
    announce_forever(&net, boast(66, replayer), Duration::from_millis(100));

    let mut newcomer = Miner::start(n.path(), &net);
    let refused = newcomer.wait_for("the replay to be refused", |l| {
        l.starts_with(&format!("Download from 127.0.0.1:{replayer} failed"))
    });
    assert!(refused.contains("does not follow"), "{refused}");

    let started = Instant::now();
    let _honest = Miner::start(h.path(), &net);
    assert_eq!(newcomer.wait_height(30), honest_tip, "{}", newcomer.log());
    let adopted = started.elapsed();
    assert!(
        adopted < Duration::from_secs(5),
        "adopted after {adopted:?}"
    );

    // A wallet hears both, finds the replayer out, and syncs from the honest miner.
    let started = Instant::now();
    let report = sync_once(w.path(), &net);
    assert_eq!(report.tip, honest_tip.to_string());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn sync_once_ends_within_its_timeout_and_ctrl_c_stops_a_sync_within_a_second() {
    let net = Net::new();
    // A block server that takes each request and never answers, announced as the chain with
    // the most work.
    let staller = serve_nothing();
    announce_forever(&net, boast(67, staller), Duration::from_millis(100));
    let w = tempdir().unwrap();

    let started = Instant::now();
    let out = wallet(w.path(), &net, &["sync", "--once", "--timeout", "3"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("could not download the best chain within 3 s"),
        "{stderr}"
    );
    assert!(took < Duration::from_millis(4_500), "took {took:?}");

    // A running sync, stuck in the same download, stops on Ctrl-C.
    let mut sync = Proc::spawn(&wallet_bin(), w.path(), &net, &["sync"]);
    sync.wait_for("the sync to start", |l| {
        l.starts_with("Syncing from height")
    });
    thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let (code, log) = sync.stop_with("INT");
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_millis(1_500), "took {took:?}\n{log}");
    assert!(log.contains("Synced: height 0"), "{log}");
}

/// What a hog asks for.
#[derive(Clone, Copy)]
enum Ask {
    /// No blocks at all, every 500 ms: never idle for the second that eviction waited for.
    Nothing,
    /// 500 blocks after a locator the server has never seen (so: from genesis), back to back.
    Everything,
}

/// A client that keeps one connection to `server` from `source` busy with `ask` until `stop`,
/// reconnecting whenever it is cut off; adds the reply bytes it receives to `received`.
fn hog(
    server: SocketAddr,
    source: Ipv4Addr,
    ask: Ask,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut rng = Lcg(u64::from(u32::from(source)));
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut stream) = connect_from(source, server) else {
                thread::sleep(Duration::from_millis(50));
                continue;
            };
            while !stop.load(Ordering::Relaxed) {
                let request = match ask {
                    Ask::Nothing => Request::BlocksAfter {
                        locator: vec![],
                        max_blocks: 0,
                    },
                    Ask::Everything => Request::BlocksAfter {
                        locator: (0..MAX_LOCATOR_LEN)
                            .map(|_| Hash256(rng.bytes(32).try_into().unwrap()))
                            .collect(),
                        max_blocks: 500,
                    },
                };
                if write_frame(&mut stream, &request.encode()).is_err() {
                    break;
                }
                let cancel = Cancel::never().on(stop.clone());
                match read_frame(
                    &mut stream,
                    MAX_REPLY_BYTES,
                    Duration::from_secs(30),
                    &cancel,
                ) {
                    Ok(reply) => received.fetch_add(reply.len() as u64, Ordering::Relaxed),
                    Err(_) => break,
                };
                if let Ask::Nothing = ask {
                    thread::sleep(Duration::from_millis(500));
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
    })
}

/// 32 hogs on `server`, from `sources(i)`, until the returned flag is raised.
fn hogs(
    server: SocketAddr,
    sources: impl Fn(u8) -> Ipv4Addr,
    ask: Ask,
) -> (Arc<AtomicBool>, Arc<AtomicU64>, Vec<thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let handles = (0..32)
        .map(|i| hog(server, sources(i), ask, stop.clone(), received.clone()))
        .collect();
    (stop, received, handles)
}

/// `n` honest clients from 127.0.0.1, one after the other, each connecting and asking once for
/// the blocks after genesis; how many were answered.
fn honest_requests(server: SocketAddr, n: usize) -> usize {
    (0..n)
        .filter(|_| {
            BlockClient::connect(server)
                .and_then(|mut c| {
                    c.request(&Request::BlocksAfter {
                        locator: vec![genesis_block().hash()],
                        max_blocks: 500,
                    })
                })
                .is_ok()
        })
        .count()
}

fn stop_hogs(
    (stop, received, handles): (Arc<AtomicBool>, Arc<AtomicU64>, Vec<thread::JoinHandle<()>>),
) -> u64 {
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    received.load(Ordering::Relaxed)
}

#[test]
fn busy_connections_from_one_address_or_many_do_not_lock_honest_clients_out() {
    let net = Net::new();
    let m = tempdir().unwrap();
    let key = KeyPair::generate(1024).unwrap();
    store_blocks(m.path(), &build_chain(&net, &key, 20, 0));
    let mut miner = Miner::start(m.path(), &net);
    miner.wait_height(20);
    let server: SocketAddr = ([127, 0, 0, 1], miner.block_port).into();

    for (what, sources) in [
        (
            "one address",
            (|_| Ipv4Addr::new(127, 0, 0, 2)) as fn(u8) -> Ipv4Addr,
        ),
        ("32 addresses", |i| Ipv4Addr::new(127, 0, 1, i + 1)),
    ] {
        let hogs = hogs(server, sources, Ask::Nothing);
        // Every hog connected and asking twice a second: no slot idles for a second.
        thread::sleep(Duration::from_millis(1_500));
        assert_eq!(
            honest_requests(server, 20),
            20,
            "with 32 busy connections from {what}"
        );
        let report = sync_once(m.path(), &net);
        assert_eq!(report.height, 20, "{what}");
        stop_hogs(hogs);
    }
}

#[test]
fn clients_asking_for_everything_get_no_more_than_their_allowance_and_honest_ones_are_served() {
    let net = Net::new();
    let m = tempdir().unwrap();
    let key = KeyPair::generate(1024).unwrap();
    store_blocks(m.path(), &build_chain(&net, &key, 600, 0));
    let mut miner = Miner::start(m.path(), &net);
    miner.wait_height(600);
    let server: SocketAddr = ([127, 0, 0, 1], miner.block_port).into();

    // 32 addresses asking back to back for the most a reply may hold (about 400 kB here): the
    // server as a whole sends at most its allowance, a burst then its rate.
    let started = Instant::now();
    let hogs = hogs(server, |i| Ipv4Addr::new(127, 0, 2, i + 1), Ask::Everything);
    thread::sleep(Duration::from_secs(3));
    let served = honest_requests(server, 10);
    let received = stop_hogs(hogs);
    let seconds = started.elapsed().as_secs_f64();
    let allowance = PER_SERVER.byte_burst + PER_SERVER.bytes_per_second * seconds;
    eprintln!(
        "hogs received {:.1} MiB in {seconds:.1} s (allowance {:.1} MiB); honest: {served} of 10",
        received as f64 / (1 << 20) as f64,
        allowance / (1 << 20) as f64
    );
    assert!(
        (received as f64) < allowance + 2.0 * 1024.0 * 1024.0,
        "{received} bytes in {seconds:.1} s"
    );
    assert_eq!(served, 10, "honest requests served");
    // And the node kept working: it still answers, at the same height.
    assert_eq!(miner.tip().0, 600);
}
