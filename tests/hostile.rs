//! A node under hostile input: whatever arrives on its UDP ports and its block server, it drops
//! what does not decode (logged at debug level and counted), keeps serving and keeps mining.

use mvbc_testkit::fake;
use mvbc_testkit::procs;
use mvbc_testkit::rng::TestRng;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use fake::*;
use mvbc_net::{Cancel, read_frame};
use mvbc_protocol::block::merkle_root;
use mvbc_protocol::wire::{Datagram, MAX_DATAGRAM_BYTES, Status, VERSION};
use mvbc_protocol::{
    Address, Amount, Block, BlockHeader, Hash256, KeyPair, Payment, Reward, Transaction,
    genesis_block, unix_now,
};
use procs::*;
use tempfile::tempdir;

/// Every kind of bad datagram, each with the reason the node's log must give for it.
fn bad_datagrams() -> Vec<(Vec<u8>, String)> {
    let mut rng = TestRng::new(0x5eed);
    let mut out = Vec::new();
    for _ in 0..40 {
        let len = (rng.next() % 300) as usize;
        out.push((rng.bytes(len), "dropped".to_owned()));
    }
    let key = KeyPair::generate(1024).unwrap();
    let payment = Datagram::Payment(Payment::new_signed(
        &key,
        key.address(),
        Amount::from_units(1),
        1,
    ))
    .encode();
    let mut wrong_version = payment.clone();
    wrong_version[4] = VERSION + 1;
    let mut oversized = payment.clone();
    oversized.resize(MAX_DATAGRAM_BYTES + 1, 0);
    // A payment whose public key declares a 2^40-byte length: refused before allocating.
    let mut huge = b"MVBC".to_vec();
    huge.extend_from_slice(&[VERSION, 0]);
    huge.extend_from_slice(&[0; 64]);
    huge.extend_from_slice(&[1, 1]);
    huge.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
    out.extend([
        (b"XXXX\x01\x02".to_vec(), "bad magic".to_owned()),
        (wrong_version, format!("protocol version {}", VERSION + 1)),
        (oversized, "exceeds the cap".to_owned()),
        (
            payment[..payment.len() / 2].to_vec(),
            "malformed encoding".to_owned(),
        ),
        (huge, "malformed encoding".to_owned()),
        (Vec::new(), "bad magic".to_owned()),
    ]);
    out
}

#[test]
fn garbage_on_every_port_is_dropped_and_the_node_keeps_mining_and_serving() {
    let net = Net::new();
    let m = tempdir().unwrap();
    let mut miner = Miner::start_logging(m.path(), &net, &[], "info,mvbc_net=debug");
    miner.wait_height(1);

    let sender = UdpSocket::bind("0.0.0.0:0").unwrap();
    sender.set_broadcast(true).unwrap();
    let datagrams = bad_datagrams();
    for port in [net.status_port, net.transaction_port] {
        for (bytes, _) in &datagrams {
            sender
                .send_to(bytes, (Ipv4Addr::new(127, 255, 255, 255), port))
                .unwrap();
            thread::sleep(Duration::from_millis(2));
        }
    }

    let server = ("127.0.0.1", miner.block_port);
    // A frame that declares 4 GiB.
    let mut huge = TcpStream::connect(server).unwrap();
    huge.write_all(&u32::MAX.to_be_bytes()).unwrap();
    // A frame of garbage.
    let mut garbage = TcpStream::connect(server).unwrap();
    garbage.write_all(&[0, 0, 0, 4, 1, 2, 3, 4]).unwrap();
    // Half a frame, then gone.
    let mut half = TcpStream::connect(server).unwrap();
    half.write_all(&[0, 0, 0, 100, 1, 2]).unwrap();
    drop(half);
    // Two bytes, then silence: it must not hold up anyone else.
    let mut slow = TcpStream::connect(server).unwrap();
    slow.write_all(&[0, 0]).unwrap();

    // Still serving, still mining.
    let (height, _) = miner.tip();
    assert_eq!(height, 1);
    sync_once(m.path(), &net);
    wallet_ok(
        m.path(),
        &net,
        &["send", "mining_rewards", "1", "mining_rewards"],
    );
    miner.wait_height(2);

    for (_, reason) in &datagrams {
        assert!(
            !miner.log_lines(|l| l.contains(reason)).is_empty(),
            "no log line says {reason:?}\n{}",
            miner.log()
        );
    }
    for reason in [
        "frame declares 4294967295 bytes",
        "dropped request: bad magic",
    ] {
        assert!(
            !miner.log_lines(|l| l.contains(reason)).is_empty(),
            "no log line says {reason:?}\n{}",
            miner.log()
        );
    }
    drop((huge, garbage, slow));
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");
    let dropped: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("Shutting down: "))
        .and_then(|l| l.split("; ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of dropped messages\n{log}"));
    // Every bad datagram on both ports, and the two bad frames; the half frame counts too.
    assert!(
        dropped >= 2 * datagrams.len() + 2,
        "{dropped} dropped, {} sent\n{log}",
        2 * datagrams.len() + 2
    );
}

/// A block of a would-be rival chain on `parent`, paying its reward to `key` and, after the
/// first block, spending one coin of the reward before it (the test network's blocks hold two
/// transactions): valid but for what `spoil` does to it.
fn rival_block(
    net: &Net,
    parent: &BlockHeader,
    key: &KeyPair,
    spoil: impl FnOnce(&mut Block),
) -> Block {
    let height = parent.height + 1;
    let mut transactions = vec![Transaction::Reward(Reward {
        to: key.address(),
        amount: Amount::from_coins(10).unwrap(),
        height,
    })];
    if height > 1 {
        transactions.push(Transaction::Payment(Payment::new_signed(
            key,
            Address(Hash256([9; 32])),
            Amount::from_coins(1).unwrap(),
            height,
        )));
    }
    let mut block = Block::assemble(parent, transactions, unix_now(), net.difficulty);
    spoil(&mut block);
    block.header.solve();
    block
}

#[test]
fn invalid_blocks_from_a_peer_are_refused_with_their_reason_never_stored_and_the_peer_passed_over()
{
    let net = Net::new();
    let m = tempdir().unwrap();
    let mut miner = Miner::start(m.path(), &net);
    let own = miner.wait_height(1);
    let future = unix_now() + 3 * 60 * 60;
    // Each rival branch is a valid block and then one that breaks a rule: two blocks, more
    // work than the miner's one, so its headers back what it announces and the bad block is
    // judged (by its header where a header shows the fault, else with its body).
    let key = KeyPair::generate(1024).unwrap();
    let base = rival_block(&net, &genesis_block().header, &key, |_| {});
    let cases: Vec<(Block, &str)> = vec![
        (
            rival_block(&net, &base.header, &key, |b| {
                b.header.merkle_root = Hash256::ZERO
            }),
            "merkle root",
        ),
        (
            rival_block(&net, &base.header, &key, |b| {
                b.header.difficulty = net.difficulty - 1
            }),
            "is not the network's",
        ),
        (
            rival_block(&net, &base.header, &key, |b| b.header.timestamp = future),
            "after now",
        ),
        (
            rival_block(&net, &base.header, &key, |b| {
                if let Transaction::Reward(r) = &mut b.transactions[0] {
                    r.amount = Amount::from_coins(11).unwrap();
                }
                let ids: Vec<Hash256> = b.transactions.iter().map(Transaction::id).collect();
                b.header.merkle_root = merkle_root(&ids);
            }),
            "reward of 11.000000",
        ),
        (
            {
                // Solved, then changed: the proof of work no longer holds.
                let mut b = rival_block(&net, &base.header, &key, |_| {});
                while b.header.meets_own_difficulty() {
                    b.header.nonce += 1;
                }
                b
            },
            "proof of work fails",
        ),
    ];
    let out = UdpSocket::bind("0.0.0.0:0").unwrap();
    out.set_broadcast(true).unwrap();
    for (i, (block, reason)) in cases.iter().enumerate() {
        let port = serve_forever(vec![base.clone(), block.clone()], 2);
        let lie = Datagram::Status(Status {
            network: net.params().network_id(),
            node_id: 1_000 + i as u64,
            height: 2,
            tip: block.hash(),
            chain_work: 2 * mvbc_protocol::header::work_for_difficulty(net.difficulty),
            block_server_port: port,
        });
        // Said again and again: the node asks once, then passes the peer over.
        for _ in 0..5 {
            out.send_to(
                &lie.encode(),
                (Ipv4Addr::new(127, 255, 255, 255), net.status_port),
            )
            .unwrap();
            thread::sleep(Duration::from_millis(50));
        }
        let refusal = miner.wait_for(reason, |l| {
            l.starts_with("Download from") && l.contains(reason)
        });
        assert!(refusal.contains("passing it over"), "{refusal}");
        let hash = block.hash().to_string();
        assert_eq!(
            miner
                .lines(|l| l.starts_with("Download from") && l.contains(&hash))
                .len(),
            1,
            "asked once\n{}",
            miner.log()
        );
    }
    // The valid rival block 1 ties with the miner's own: the lower hash is the tip.
    let winner = if base.hash().cmp_shown(&own) == std::cmp::Ordering::Less {
        base.hash()
    } else {
        own
    };
    assert_eq!(miner.tip(), (1, winner));
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");
    // Nothing refused was stored: the store holds the miner's own block, and the rival block 1
    // only if it took the tip.
    let restarted = Miner::start(m.path(), &net);
    let loaded = restarted.lines(|l| l.starts_with("Chain loaded:"));
    let stored = if winner == own {
        "1 block stored"
    } else {
        "2 blocks stored"
    };
    assert!(loaded[0].contains(stored), "{loaded:?}");
    assert!(loaded[0].contains(&winner.to_string()), "{loaded:?}");
}

#[test]
fn a_block_server_that_stalls_mid_frame_is_timed_out_and_an_honest_peer_takes_over() {
    let net = Net::new();
    let (a, n) = (tempdir().unwrap(), tempdir().unwrap());
    let mut honest = Miner::start(a.path(), &net);
    honest.wait_height(1);
    sync_once(a.path(), &net);
    for _ in 0..2 {
        wallet_ok(
            a.path(),
            &net,
            &["send", "mining_rewards", "1", "mining_rewards"],
        );
    }
    let tip = honest.wait_height(3);
    let (code, log) = honest.stop();
    assert_eq!(code, Some(0), "{log}");

    // A server that answers with the start of a frame and then nothing, for a minute.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stall_port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let _ = read_frame(&mut stream, 4096, Duration::from_secs(5), &Cancel::never());
                let _ = stream.write_all(&[0, 0, 4, 0, 1, 2, 3]);
                thread::sleep(Duration::from_secs(60));
            });
        }
    });
    let lie = Datagram::Status(Status {
        network: net.params().network_id(),
        node_id: 77,
        height: 1_000,
        tip: Hash256([7; 32]),
        chain_work: u128::MAX / 2,
        block_server_port: stall_port,
    })
    .encode();
    let status_port = net.status_port;
    thread::spawn(move || {
        let out = UdpSocket::bind("0.0.0.0:0").unwrap();
        out.set_broadcast(true).unwrap();
        for _ in 0..300 {
            let _ = out.send_to(&lie, (Ipv4Addr::new(127, 255, 255, 255), status_port));
            thread::sleep(Duration::from_millis(100));
        }
    });

    // A newcomer hears only the liar, and its download hangs on it...
    let mut newcomer = Miner::start(n.path(), &net);
    // ...but the node goes on: it mines on its own chain meanwhile, and serves it.
    newcomer.wait_api("its own block", "summary", |s| {
        s["blocks_mined"].as_u64() >= Some(1)
    });
    assert_eq!(newcomer.tip().0, 1);
    // The honest miner comes back: the newcomer downloads from it beside the hung download
    // (several run at once, each from another peer) and takes the honest chain, which has
    // more work than its own, without waiting for the stall to time out.
    let honest = Miner::start(a.path(), &net);
    let started = std::time::Instant::now();
    assert_eq!(newcomer.wait_height(3), tip, "the honest peer's chain");
    let adopted = started.elapsed();
    let stall_failed = format!("Download from 127.0.0.1:{stall_port} failed");
    assert!(
        newcomer.lines(|l| l.starts_with(&stall_failed)).is_empty(),
        "the honest chain came only after the stall timed out ({adopted:?})\n{}",
        newcomer.log()
    );
    // The stalled download still times out, and its peer is passed over.
    let failed = newcomer.wait_for("the stalled download to fail", |l| {
        l.starts_with(&stall_failed)
    });
    assert!(failed.contains("timed out"), "{failed}");
    // It left its own block 1 (the API publishes once a second).
    newcomer.wait_api("the reorg", "summary", |s| s["reorgs"].as_u64() >= Some(1));
    drop(honest);
}

#[test]
fn invalid_payments_are_refused_with_their_reason_and_never_mined() {
    let net = Net::new();
    let m = tempdir().unwrap();
    let mut miner = Miner::start(m.path(), &net);
    miner.wait_height(1);
    let rich = mvbc_protocol::keyfile::load_key(&m.path().join("mining_rewards.pem")).unwrap();
    let poor = KeyPair::generate(1024).unwrap();
    let now = unix_now();
    let pay = |key: &KeyPair, units: u64, stamp: u64| {
        Payment::new_signed(key, poor.address(), Amount::from_units(units), stamp)
    };
    // One good payment, mined, then replayed.
    let good = pay(&rich, 5, now);
    let out = UdpSocket::bind("0.0.0.0:0").unwrap();
    out.set_broadcast(true).unwrap();
    let send = |p: &Payment| {
        let bytes = Datagram::Payment(p.clone()).encode();
        out.send_to(
            &bytes,
            (Ipv4Addr::new(127, 255, 255, 255), net.transaction_port),
        )
        .unwrap();
        thread::sleep(Duration::from_millis(20));
    };
    send(&good);
    miner.wait_height(2);

    let mut tampered = pay(&rich, 5, now + 1);
    tampered.amount = Amount::from_units(6);
    let mut stolen = pay(&poor, 5, now + 2);
    stolen.from = rich.address();
    let cases = [
        (tampered, "bad signature"),
        (stolen, "does not hash to the from-address"),
        (pay(&rich, 0, now + 3), "amount is zero"),
        (pay(&poor, 6, now + 4), "but has 0.000005 available"),
        (good.clone(), "is already confirmed"),
    ];
    for (payment, reason) in &cases {
        send(payment);
        // Refusals are log lines (stderr, info level).
        let start = std::time::Instant::now();
        while miner
            .log_lines(|l| l.contains("refused a payment") && l.contains(reason))
            .is_empty()
        {
            assert!(
                start.elapsed() < PATIENCE,
                "no refusal saying {reason:?}\n{}",
                miner.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
    // The good one is mined; none of the others was pooled.
    // The API publishes once a second: one round, then the pool as it is.
    thread::sleep(Duration::from_millis(1_200));
    let pending = miner.get("pending");
    assert_eq!(
        pending["count"], 0,
        "a refused payment was pooled: {pending}"
    );
    assert_eq!(miner.tip().0, 2, "nothing else was mined");
}
