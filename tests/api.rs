//! The miner's JSON API and explorer page, against real `mvbc-miner` processes on loopback:
//! every endpoint's shape, paging limits, clear 4xx answers to bad input, and a node that keeps
//! serving and mining through hundreds of malformed and slow requests.

use mvbc_testkit::http;
use mvbc_testkit::procs;
use mvbc_testkit::rng::TestRng;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use http::{get, get_json, read_reply, request};
use procs::*;
use serde_json::Value;
use tempfile::tempdir;

/// A miner serving its API on any free port; returns it and that port.
fn miner_with_api(dir: &Path, net: &Net) -> (Miner, u16) {
    let miner = Miner::start(dir, net);
    let api = miner.api();
    (miner, api)
}

fn is_hex64(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The answer is a 4xx with a JSON error that says something.
fn refused(port: u16, path: &str, status: u16) -> String {
    let reply = get(port, path);
    assert_eq!(reply.status, status, "GET {path}: {}", reply.body);
    let error = reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!error.is_empty(), "GET {path}: no error message");
    error
}

#[test]
fn every_endpoint_answers_in_shape_and_bad_input_gets_a_clear_4xx() {
    let net = Net::new();
    let (m, w) = (tempdir().unwrap(), tempdir().unwrap());
    let (mut miner, port) = miner_with_api(m.path(), &net);
    miner.wait_height(1);
    let alice = new_address(w.path(), &net, "alice");
    sync_once(m.path(), &net);
    let paid = send(m.path(), &net, "mining_rewards", "3", &alice);
    miner.wait_height(2);
    // A second miner: a peer to list.
    let p = tempdir().unwrap();
    let peer = Miner::start(p.path(), &net);

    // summary
    let s = get_json(port, "/api/v1/summary");
    let height = s["height"].as_u64().unwrap();
    assert!(height >= 2, "{s}");
    assert!(is_hex64(&s["tip"]), "{s}");
    assert_eq!(s["difficulty"], 12);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["chain_work"].as_str().unwrap().parse::<u128>().unwrap() > 0);
    assert!(s["mining"].is_string() && s["uptime_seconds"].is_u64());
    assert!(s["hashes_per_second"].is_number() && s["pending"].is_u64());
    assert!(s["blocks_mined"].is_u64() && s["reorgs"].is_u64(), "{s}");
    assert!(s["stale_blocks"]["rate"].is_number(), "{s}");
    let devices = s["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{s}");
    assert_eq!(devices[0]["kind"], "cpu");
    for window in ["10s", "60s", "15m"] {
        assert!(devices[0]["hashes_per_second"][window].is_number(), "{s}");
    }
    let peers = poll_until(
        &mut (),
        |_| {
            let p = get_json(port, "/api/v1/peers");
            (p["count"] == 1).then_some(p)
        },
        |_| "the second miner never showed in peers".into(),
    );
    let listed = &peers["peers"][0];
    assert_eq!(
        listed["block_server"],
        format!("127.0.0.1:{}", peer.block_port)
    );
    assert!(is_hex64(&listed["tip"]) && listed["height"].is_u64());

    // block by height and by hash
    let b1 = get_json(port, "/api/v1/block/1");
    assert_eq!(b1["height"], 1);
    assert!(is_hex64(&b1["hash"]) && is_hex64(&b1["prev_hash"]) && is_hex64(&b1["merkle_root"]));
    assert_eq!(b1["best_chain"], true);
    assert_eq!(b1["transactions"][0]["type"], "reward");
    let by_hash = get_json(
        port,
        &format!("/api/v1/block/{}", b1["hash"].as_str().unwrap()),
    );
    assert_eq!(by_hash, get_json(port, "/api/v1/block/1"));
    let genesis = get_json(port, "/api/v1/block/0");
    assert_eq!(genesis["height"], 0);

    // the payment: in block 2, in both addresses' histories
    let tx = get_json(port, &format!("/api/v1/tx/{paid}"));
    assert_eq!(tx["status"], "confirmed");
    assert_eq!(tx["block"]["height"], 2);
    assert_eq!(tx["transaction"]["type"], "payment");
    assert_eq!(tx["transaction"]["to"], alice);
    assert_eq!(tx["transaction"]["amount"], "3.000000");
    let a = get_json(port, &format!("/api/v1/address/{alice}"));
    assert_eq!(a["balance"], "3.000000");
    assert_eq!(a["history"]["total"], 1);
    assert_eq!(a["history"]["items"][0]["id"], paid.as_str());
    assert_eq!(a["history"]["items"][0]["amount"], "+3.000000");
    // Addresses are shown checksummed; the old hex form still looks one up (issue 22).
    assert!(alice.starts_with("mvbc1"), "{alice}");
    let hex = alice.parse::<mvbc_protocol::Address>().unwrap().to_hex();
    assert_eq!(get_json(port, &format!("/api/v1/address/{hex}")), a);
    let miner_address = tx["transaction"]["from"].as_str().unwrap().to_string();
    let all = get_json(port, &format!("/api/v1/address/{miner_address}?limit=100"));
    let total = all["history"]["total"].as_u64().unwrap();
    assert!(total >= 3, "two rewards and a payment: {all}");
    let page = get_json(
        port,
        &format!("/api/v1/address/{miner_address}?offset=1&limit=1"),
    );
    assert_eq!(page["history"]["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["history"]["items"][0], all["history"]["items"][1]);

    // paging of blocks: newest first, at most 100, `next_before` to go on
    let blocks = get_json(port, "/api/v1/blocks?limit=2");
    let list = blocks["blocks"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let top = list[0]["height"].as_u64().unwrap();
    assert_eq!(list[1]["height"].as_u64().unwrap(), top - 1);
    assert_eq!(blocks["next_before"].as_u64(), Some(top - 1));
    let last = get_json(port, "/api/v1/blocks?before=1&limit=100");
    assert_eq!(last["blocks"].as_array().unwrap().len(), 1, "only genesis");
    assert_eq!(last["next_before"], Value::Null);
    let capped = get_json(port, "/api/v1/blocks?limit=100");
    assert!(capped["blocks"].as_array().unwrap().len() <= 100);
    assert!(refused(port, "/api/v1/blocks?limit=101", 400).contains("limit"));
    refused(port, "/api/v1/blocks?limit=0", 400);
    refused(port, "/api/v1/blocks?before=abc", 400);
    refused(port, "/api/v1/blocks?limit=5&limit=6", 400);
    refused(port, "/api/v1/blocks?colour=red", 400);

    // pending and hash rate
    let pending = get_json(port, "/api/v1/pending?limit=5");
    assert!(pending["count"].is_u64() && pending["payments"].is_array());
    let rates = get_json(port, "/api/v1/hashrate?window=60");
    assert_eq!(rates["window_seconds"], 60);
    assert_eq!(rates["step_seconds"], 1);
    assert_eq!(rates["devices"].as_array().unwrap().len(), 1);
    assert_eq!(
        rates["devices"][0]["rates"].as_array().unwrap().len(),
        rates["ages"].as_array().unwrap().len()
    );
    refused(port, "/api/v1/hashrate?window=5", 400);
    refused(port, "/api/v1/hashrate?window=901", 400);

    // bad ids, unknown things, no files
    refused(port, "/api/v1/block/99999999", 404);
    refused(port, "/api/v1/block/99999999999999999999999", 400);
    refused(port, "/api/v1/block/tip", 400);
    refused(port, &format!("/api/v1/block/{}", "0".repeat(64)), 404);
    refused(port, "/api/v1/tx/123", 400);
    refused(port, &format!("/api/v1/tx/{}", "ab".repeat(32)), 404);
    refused(port, "/api/v1/address/alice", 400);
    let mut typo = alice.clone().into_bytes();
    typo[20] = if typo[20] == b'q' { b'p' } else { b'q' };
    let typo = String::from_utf8(typo).unwrap();
    let why = refused(port, &format!("/api/v1/address/{typo}"), 400);
    assert!(why.contains("checksum"), "{why}");
    refused(port, "/api/v1/summary?verbose=1", 400);
    for path in [
        "/api/v1/nothing",
        "/api/v2/summary",
        "/etc/passwd",
        "/../../../../etc/passwd",
        "/api/v1/../../Cargo.toml",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/blocks.dat",
        "/mining_rewards.pem",
    ] {
        let reply = get(port, path);
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
        assert!(!reply.body.contains("root:") && !reply.body.contains("PRIVATE"));
    }

    // the page, HEAD, other methods, other hosts
    let page = get(port, "/");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("mvbc explorer"));
    assert!(page.header("content-security-policy").is_some());
    assert!(page.header("access-control-allow-origin").is_none());
    let head = request(
        port,
        b"HEAD /api/v1/summary HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let raw = format!("{method} /api/v1/summary HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(
            request(port, raw.as_bytes()).unwrap().status,
            405,
            "{method}"
        );
    }
    let rebound = request(
        port,
        b"GET /api/v1/summary HTTP/1.1\r\nHost: attacker.example\r\n\r\n",
    )
    .unwrap();
    assert_eq!(rebound.status, 421, "{}", rebound.body);

    // A second miner asking for the same API port says so and mines on.
    let o = tempdir().unwrap();
    let taken = format!("127.0.0.1:{port}");
    let mut other = Miner::start_with(o.path(), &net, &["--api-listen", &taken]);
    let line = other.wait_for("the API line", |l| l.starts_with("API: "));
    assert!(
        line.contains(&format!("{taken} is taken")) && line.contains("mining on"),
        "{line}"
    );
    other.wait_height(height);
    drop(peer);
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// A connection that sends part of a head and stops: it holds a slot until the server gives
/// up on it.
fn stall(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /api/v1/summary HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    s
}

/// Malformed requests of every kind, `n` of them, made up from `seed`.
fn malformed(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let fixed: Vec<Vec<u8>> = vec![
        b"\r\n\r\n".to_vec(),
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET /api/v1/summary HTTP/9.9\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"GET http://127.0.0.1/api/v1/summary HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /api/v1/summary HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        b"GET /api/v1/summary HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"GET /api/v1/summary HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(),
        b"GET /\0 HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /api/v1/block/\xff\xfe HTTP/1.1\r\n\r\n".to_vec(),
        format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000)).into_bytes(),
        format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(9_000)).into_bytes(),
        format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            (0..40).map(|i| format!("H{i}: v\r\n")).collect::<String>()
        )
        .into_bytes(),
        format!(
            "GET /api/v1/blocks?{} HTTP/1.1\r\n\r\n",
            "limit=1&".repeat(50)
        )
        .into_bytes(),
    ];
    let mut rng = TestRng::new(seed);
    (0..n)
        .map(|i| {
            if i < fixed.len() {
                return fixed[i].clone();
            }
            match rng.next() % 3 {
                // Random bytes, ended as a head would be.
                0 => {
                    let len = (rng.next() % 300) as usize;
                    let mut b = rng.bytes(len);
                    b.extend_from_slice(b"\r\n\r\n");
                    b
                }
                // A real request with one byte changed.
                1 => {
                    let mut b =
                        b"GET /api/v1/blocks?limit=3 HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
                    let at = (rng.next() as usize) % (b.len() - 4);
                    b[at] = rng.next() as u8;
                    b
                }
                // A path of random printable text.
                _ => {
                    let path: String = (0..(rng.next() % 60))
                        .map(|_| (b'!' + (rng.next() % 94) as u8) as char)
                        .collect();
                    format!("GET /api/v1/{path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
                }
            }
        })
        .collect()
}

#[test]
fn hundreds_of_malformed_or_slow_requests_leave_the_node_serving_and_mining() {
    let mut net = Net::with_difficulty(20);
    net.block_size = 1;
    let m = tempdir().unwrap();
    let (mut miner, port) = miner_with_api(m.path(), &net);
    miner.wait_height(1);

    // As many stalled connections as the server serves at once: each newcomer takes the slot
    // of the one that waited longest for its head, and mining goes on meanwhile.
    let before = get_json(port, "/api/v1/summary")["height"]
        .as_u64()
        .unwrap();
    let stalled: Vec<TcpStream> = (0..64).map(|_| stall(port)).collect();
    thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        let r = request(
            port,
            b"GET /api/v1/summary HTTP/1.1\r\nHost: localhost\r\n\r\n",
        );
        assert_eq!(
            r.map(|r| r.status),
            Some(200),
            "an honest request turned away"
        );
    }
    // The oldest stalls made room, closed without an answer (the honest requests came one at
    // a time, so one was enough unless an evicted thread had not ended yet when the next
    // came); the others are answered 408 after the server's time limit, and their slots free.
    let started = Instant::now();
    let ends: Vec<u16> = stalled
        .into_iter()
        .map(|mut s| read_reply(&mut s).map_or(0, |r| r.status))
        .collect();
    let evicted = ends.iter().take_while(|s| **s == 0).count();
    assert!((1..=20).contains(&evicted), "{ends:?}");
    assert!(ends[evicted..].iter().all(|s| *s == 408), "{ends:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    miner.wait_height(before + 1);

    // Hundreds of malformed requests from four clients at once: each gets a 4xx or a closed
    // connection, never a 5xx.
    let requests = malformed(400, 7);
    let answers: Vec<(Vec<u8>, Option<u16>)> = thread::scope(|s| {
        let workers: Vec<_> = requests
            .chunks(100)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|raw| (raw.clone(), request(port, raw).map(|r| r.status)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut four = 0;
    for (raw, status) in &answers {
        if let Some(status) = status {
            assert!(
                (400..500).contains(status) || *status == 200,
                "{status} for {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(120)])
            );
            four += usize::from((400..500).contains(status));
        }
    }
    assert!(
        four >= 300,
        "only {four} of 400 malformed requests got a 4xx"
    );

    // Still serving, still mining, and nothing of it reached the node's own counters.
    let after = get_json(port, "/api/v1/summary");
    let height = after["height"].as_u64().unwrap();
    miner.wait_height(height + 2);
    assert_eq!(get_json(port, "/api/v1/block/1")["height"], 1);
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Issue 20, item 5: 64 connections that each hold half a request head, reopened as soon as
/// the server closes one, do not lock honest clients out.
#[test]
fn a_slow_loris_holding_every_slot_does_not_lock_honest_clients_out() {
    let net = Net::new();
    let m = tempdir().unwrap();
    let (mut miner, port) = miner_with_api(m.path(), &net);
    miner.wait_height(1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reopened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loris: Vec<_> = (0..64)
        .map(|_| {
            let (stop, reopened) = (stop.clone(), reopened.clone());
            thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut s = stall(port);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    // Hold it until the server closes it, then come back at once.
                    loop {
                        let mut b = [0u8; 256];
                        match s.read(&mut b) {
                            Ok(_) => break,
                            Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => return,
                            Err(_) => {}
                        }
                    }
                    reopened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    // Honest: 2 requests a second for 15 s, each with 2 s to be answered.
    let (mut ok, mut asked) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        asked += 1;
        let answered = TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                s.write_all(b"GET /api/v1/summary HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .ok()?;
                read_reply(&mut s)
            });
        ok += usize::from(answered.is_some_and(|r| r.status == 200));
        thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in loris {
        t.join().unwrap();
    }
    let reopened = reopened.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("slow-loris: {ok} of {asked} honest requests answered 200; {reopened} reopens");
    assert!(
        reopened >= 25,
        "the loris was never closed: {reopened} reopens"
    );
    assert!(ok * 10 >= asked * 9, "only {ok} of {asked} answered");
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");
}
