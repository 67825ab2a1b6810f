//! A farm on loopback: one node with a pool port, workers that only hash (`mvbc-miner --pool`),
//! and the node's view of them (`/api/v1/workers`). Workers that lie are refused and counted,
//! and the honest ones mine on; a worker without the token is refused; workers come back when
//! the node does.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use mvbc_protocol::stratum::{Call, Request, Subscribed, ToWorker, share_bits};
use mvbc_protocol::{Address, BlockHeader};
use mvbc_testkit::procs::*;
use mvbc_testkit::shares::find_share;
use serde_json::{Value, json};
use tempfile::tempdir;

/// A worker for the pool at `pool`, paying `address`, on `device`.
fn worker(
    dir: &Path,
    net: &Net,
    pool: SocketAddr,
    address: &str,
    name: &str,
    device: &[&str],
) -> Proc {
    let pool = pool.to_string();
    let mut args = vec!["--pool", &pool, "--address", address, "--worker", name];
    args.extend_from_slice(device);
    Proc::spawn(&miner_bin(), dir, net, &args)
}

/// `--device gpu` where an adapter exists (lavapipe in CI, where `MVBC_REQUIRE_GPU=1` makes a
/// missing one a failure); otherwise one CPU thread, after saying the GPU part is skipped.
fn second_device(test: &str) -> Vec<&'static str> {
    let required = std::env::var("MVBC_REQUIRE_GPU").is_ok_and(|v| v == "1");
    if !mvbc_miner::gpu::adapters().is_empty() {
        return vec!["--device", "gpu"];
    }
    assert!(!required, "{test}: MVBC_REQUIRE_GPU=1 and no GPU adapter");
    eprintln!(
        "{test}: SKIPPED the GPU worker, no adapter (set MVBC_REQUIRE_GPU=1 to make this a failure); a second CPU worker stands in"
    );
    vec!["--device", "cpu", "--threads", "1"]
}

const CPU: [&str; 4] = ["--device", "cpu", "--threads", "1"];

/// The node's view of the worker named `name`.
fn worker_row(node: &Miner, name: &str) -> Option<Value> {
    node.get("workers")["workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)
        .cloned()
}

fn wait_worker(node: &mut Miner, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let path = "workers";
    node.wait_api(what, path, |v| {
        v["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["name"] == name && pred(w)))
    });
    worker_row(node, name).unwrap()
}

#[test]
fn two_workers_mine_a_run_of_payments_for_a_node_that_mines_nothing_itself() {
    let test = "two_workers_mine_a_run_of_payments_for_a_node_that_mines_nothing_itself";
    // About 0.4 s a block on one CPU thread: long enough for a GPU's dispatches, even
    // lavapipe's, to come back with shares before the next block.
    let net = Net::with_difficulty(24);
    let (n, w, k1, k2) = (
        tempdir().unwrap(),
        tempdir().unwrap(),
        tempdir().unwrap(),
        tempdir().unwrap(),
    );
    let mut node = Miner::start_with(
        n.path(),
        &net,
        &["--device", "none", "--pool-listen", "127.0.0.1:0"],
    );
    let pool = node.pool.expect("a pool port");
    let first = new_address(w.path(), &net, "first");
    let second = new_address(w.path(), &net, "second");
    let mut one = worker(k1.path(), &net, pool, &first, "cpu", &CPU);
    let mut two = worker(
        k2.path(),
        &net,
        pool,
        &second,
        "other",
        &second_device(test),
    );
    one.wait_for("a connection", |l| l.starts_with("Connected to the pool"));
    two.wait_for("a connection", |l| l.starts_with("Connected to the pool"));

    // The node mines nothing itself: the first block is a worker's, and pays it.
    node.wait_height(1);
    assert_eq!(sync_once(w.path(), &net).height, node.tip().0);
    let funded = balances(w.path(), &net)
        .into_iter()
        .find(|r| r.balance != "0.000000")
        .expect("a worker's reward");
    let to = if funded.name == "first" {
        &second
    } else {
        &first
    };
    let start = node.tip().0;
    for _ in 0..3 {
        send(w.path(), &net, &funded.name, "1", to);
    }
    // Each block of 2 holds one payment: three more blocks, all the workers'.
    node.wait_height(start + 3);
    // A slow GPU (lavapipe) may have had no share in yet: the node only hands out jobs while
    // payments wait, so keep paying, one block at a time, until both workers have shares.
    for _ in 0..20 {
        let both = ["cpu", "other"]
            .iter()
            .all(|name| worker_row(&node, name).is_some_and(|w| w["accepted"].as_u64() > Some(0)));
        if both {
            break;
        }
        let height = node.tip().0;
        send(w.path(), &net, &funded.name, "0.1", to);
        node.wait_height(height + 1);
    }
    let report = sync_until_confirmed(w.path(), &net);
    assert!(report.height >= start + 3);
    for height in 1..=report.height {
        let block = node.get(&format!("block/{height}"));
        let paid = block["transactions"][0]["to"].as_str().unwrap().to_owned();
        assert!(
            paid == first || paid == second,
            "block {height} pays {paid}, no worker"
        );
    }
    // The explorer's table: both workers, each with a rate from its shares.
    for name in ["cpu", "other"] {
        let row = wait_worker(&mut node, name, "a rate from shares", |w| {
            w["rate_5m"].as_f64().is_some_and(|r| r > 0.0) && w["accepted"].as_u64() > Some(0)
        });
        assert_eq!(row["connections"], 1, "{row}");
    }
    // The summary counts the workers' rate beside the node's own (none: `--device none`).
    let summary = node.get("summary");
    assert_eq!(summary["pool"]["connections"], 2, "{summary}");
    assert!(
        summary["pool"]["hashes_per_second"].as_f64() > Some(0.0),
        "{summary}"
    );
    // Every block but genesis was a worker's, as the node counts them (published each second).
    let height = report.height;
    node.wait_api("every block counted as a worker's", "workers", |v| {
        let blocks = v["workers"].as_array().map_or(0, |ws| {
            ws.iter().map(|w| w["blocks"].as_u64().unwrap_or(0)).sum()
        });
        blocks >= height
    });
    let (code, log) = one.stop_with("INT");
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("Status:") || log.contains("Worker stopped"),
        "{log}"
    );
}

/// A raw worker connection that speaks the protocol by hand, to lie with.
struct Liar {
    stream: TcpStream,
    lines: BufReader<TcpStream>,
    extranonce: u16,
    job: u64,
    header: BlockHeader,
    difficulty: u32,
}

impl Liar {
    fn connect(pool: SocketAddr, address: &str) -> Liar {
        let stream = TcpStream::connect(pool).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let lines = BufReader::new(stream.try_clone().unwrap());
        let mut liar = Liar {
            stream,
            lines,
            extranonce: 0,
            job: 0,
            header: mvbc_protocol::genesis_block().header,
            difficulty: 0,
        };
        liar.send_call(
            1,
            Call::Subscribe {
                agent: "liar".into(),
            },
        );
        let address: Address = address.parse().unwrap();
        liar.send_call(
            2,
            Call::Authorize {
                address,
                worker: "liar".into(),
                token: String::new(),
            },
        );
        // The subscription's answer, the authorization's, then a difficulty and a job.
        loop {
            match liar.next() {
                ToWorker::Reply { id, result: Ok(v) } if id == json!(1) => {
                    liar.extranonce = Subscribed::from_value(&v).unwrap().extranonce;
                }
                ToWorker::SetDifficulty(d) => liar.difficulty = d,
                ToWorker::Notify { job, header, .. } => {
                    liar.job = job;
                    liar.header = header;
                    return liar;
                }
                _ => {}
            }
        }
    }

    fn next(&mut self) -> ToWorker {
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the node closed the connection");
        ToWorker::parse(line.trim_end().as_bytes()).unwrap()
    }

    fn send_call(&mut self, id: u64, call: Call) {
        let line = Request {
            id: json!(id),
            call,
        }
        .to_line("x");
        self.stream.write_all(line.as_bytes()).unwrap();
    }

    /// The answer to request `id` (other messages passed over).
    fn answer(&mut self, id: u64) -> Result<Value, (i64, String)> {
        loop {
            if let ToWorker::Reply { id: got, result } = self.next()
                && got == json!(id)
            {
                return result;
            }
        }
    }

    /// A worker nonce whose hash has `bits` in `range` under this connection's extranonce.
    fn nonce(&self, range: std::ops::Range<u32>) -> u64 {
        find_share(&self.header, self.extranonce, 0, range)
    }
}

#[test]
fn a_worker_that_lies_is_refused_and_counted_and_the_honest_one_mines_on() {
    // Blocks take long enough that the liar's job mostly stays current while it lies.
    let mut net = Net::with_difficulty(26);
    net.block_size = 1;
    let (n, w, k) = (tempdir().unwrap(), tempdir().unwrap(), tempdir().unwrap());
    let mut node = Miner::start_with(
        n.path(),
        &net,
        &["--device", "none", "--pool-listen", "127.0.0.1:0"],
    );
    let pool = node.pool.unwrap();
    let honest_address = new_address(w.path(), &net, "honest");
    let mut honest = worker(k.path(), &net, pool, &honest_address, "honest", &CPU);
    honest.wait_for("a connection", |l| l.starts_with("Connected to the pool"));
    node.wait_height(1);

    let mut liar = Liar::connect(pool, &honest_address);
    // Garbage: answered with why, counted.
    liar.stream.write_all(b"this is not json\n").unwrap();
    let garbage = liar.answer_null();
    assert!(garbage.1.contains("not a JSON object"), "{garbage:?}");
    // A share, then the same share again.
    let good = liar.nonce(liar.difficulty..257);
    let job = liar.job;
    liar.send_call(10, Call::Submit { job, nonce: good });
    let first = liar.answer(10);
    // The tip may have moved on in between: a stale answer is honest too.
    assert!(
        first == Ok(json!(true)) || first.as_ref().is_err_and(|e| e.0 == 21),
        "{first:?}"
    );
    liar.send_call(11, Call::Submit { job, nonce: good });
    let replay = liar.answer(11).unwrap_err();
    assert!(replay.0 == 22 || replay.0 == 21, "{replay:?}");
    // A share too easy for its difficulty.
    let easy = liar.nonce(0..liar.difficulty);
    liar.send_call(12, Call::Submit { job, nonce: easy });
    let low = liar.answer(12).unwrap_err();
    assert!(low.0 == 23 || low.0 == 21, "{low:?}");
    // A share for another connection's extranonce: too easy under this one.
    let other = Liar::connect(pool, &honest_address);
    let theirs = other.nonce(other.difficulty..257);
    if share_bits(&liar.header, liar.extranonce, theirs) < liar.difficulty {
        liar.send_call(13, Call::Submit { job, nonce: theirs });
        let stolen = liar.answer(13).unwrap_err();
        assert!(stolen.0 == 23 || stolen.0 == 21, "{stolen:?}");
    }
    // An oversized line ends the connection.
    liar.stream.write_all(&vec![b'x'; 5_000]).unwrap();
    liar.stream.write_all(b"\n").unwrap();
    let mut rest = String::new();
    let closed = loop {
        rest.clear();
        match liar.lines.read_line(&mut rest) {
            Ok(0) | Err(_) => break true,
            Ok(_) => {}
        }
    };
    assert!(closed);
    // The garbage and the oversized line at least; the replayed and easy shares too, unless
    // the tip moved on first (then they are stale).
    let row = wait_worker(&mut node, "liar", "the lies counted", |w| {
        w["rejected"].as_u64().unwrap_or(0) + w["stale"].as_u64().unwrap_or(0) >= 4
            && w["rejected"].as_u64() >= Some(2)
    });
    assert_eq!(row["blocks"], 0, "{row}");

    // The honest worker mines on: more blocks, more shares.
    let before = worker_row(&node, "honest").unwrap()["accepted"]
        .as_u64()
        .unwrap();
    let height = node.tip().0;
    node.wait_height(height + 1);
    wait_worker(&mut node, "honest", "more shares", |w| {
        w["accepted"].as_u64() > Some(before)
    });
    drop(other);
}

impl Liar {
    /// The answer to a line without an id.
    fn answer_null(&mut self) -> (i64, String) {
        loop {
            if let ToWorker::Reply { id, result: Err(e) } = self.next()
                && id.is_null()
            {
                return e;
            }
        }
    }
}

#[test]
fn a_worker_without_the_right_token_is_refused() {
    let mut net = Net::with_difficulty(20);
    net.block_size = 1;
    let (n, k) = (tempdir().unwrap(), tempdir().unwrap());
    let mut node = Miner::start_with(
        n.path(),
        &net,
        &[
            "--device",
            "none",
            "--pool-listen",
            "127.0.0.1:0",
            "-s",
            "pool_token=farm-secret",
        ],
    );
    let pool = node.pool.unwrap();
    node.wait_for("the pool port", |l| l.starts_with("Pool:"));
    assert!(
        node.lines(|l| l.contains("and the pool token")).len() == 1,
        "{}",
        node.log()
    );
    let address = new_address(k.path(), &net, "me");
    let with_token = |token: &str| {
        let args = ["--device", "cpu", "--threads", "1", "--pool-token", token];
        worker(k.path(), &net, pool, &address, "w", &args)
    };
    let mut wrong = with_token("farm-secreT");
    assert_ne!(wrong.wait_exit(), Some(0));
    assert!(wrong.log().contains("refused"), "{}", wrong.log());
    let mut right = with_token("farm-secret");
    right.wait_for("a connection", |l| l.starts_with("Connected to the pool"));
    node.wait_height(1);
}

#[test]
fn workers_reconnect_when_the_node_is_killed_and_restarted_and_mine_on() {
    let mut net = Net::with_difficulty(20);
    net.block_size = 1;
    let (n, w, k) = (tempdir().unwrap(), tempdir().unwrap(), tempdir().unwrap());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let listen = port.to_string();
    let args = ["--device", "none", "--pool-listen", listen.as_str()];
    let mut node = Miner::start_with(n.path(), &net, &args);
    let address = new_address(w.path(), &net, "me");
    let mut one = worker(k.path(), &net, port, &address, "rig", &CPU);
    one.wait_for("a connection", |l| l.starts_with("Connected to the pool"));
    node.wait_height(1);
    // Killed, not stopped: no chance to say goodbye.
    node.kill9();
    one.wait_for("the node gone", |l| l.starts_with("Disconnected"));

    let mut node = Miner::start_with(n.path(), &net, &args);
    one.wait_until("a second connection", |p| {
        (p.lines(|l| l.starts_with("Connected to the pool")).len() >= 2).then_some(())
    });
    let height = node.tip().0;
    node.wait_height(height + 1);
    wait_worker(&mut node, "rig", "shares after the restart", |w| {
        w["accepted"].as_u64() > Some(0)
    });
}
