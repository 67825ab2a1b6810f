//! The pool port under load, with real release programs on loopback (ADR 0016):
//!
//! 1. **A worker through the pool** against its own `--benchmark`, side by side on the same
//!    devices, taking turns in 4 rounds: a node that mines nothing itself (`--device none`) at
//!    the default difficulty, one `mvbc-miner --pool` worker on every core, for `--seconds`
//!    in all (default 240). It reports
//!    the worker's hashing rate while it mines for the pool, the rate its accepted shares
//!    prove (with the share count, whose Poisson noise is about 1/sqrt(shares)), and the
//!    share of stale shares.
//! 2. **Many workers**: `--workers` (default 1,000) simulated workers in this process, each a
//!    connection that submits a real share (one that is not a block) every 3 s, about 20 a
//!    minute, the vardiff target. It reports the node's CPU time over 60 s as a share of one
//!    core (from `/proc/PID/stat`), and then, 5 times, how long a new tip takes to reach every
//!    connection as a clean job: from the moment one of them submits a block to the moment
//!    the last of them has the job on it.
//!
//! ```text
//! cargo build --release -p mvbc-miner
//! cargo bench -p mvbc-tests --bench pool -- [--seconds 240] [--workers 1000] [--skip-worker]
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mvbc_protocol::stratum::{Call, Request, Subscribed, ToWorker};
use mvbc_protocol::{Address, BlockHeader};
use mvbc_testkit::procs::{Miner, Net, Proc, miner_bin};
use mvbc_testkit::shares::find_share;
use serde_json::{Value, json};

struct Args {
    seconds: u64,
    workers: usize,
    skip_worker: bool,
}

fn args() -> Args {
    let mut args = Args {
        seconds: 240,
        workers: 1_000,
        skip_worker: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                args.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N")
            }
            "--workers" => {
                args.workers = it.next().and_then(|v| v.parse().ok()).expect("--workers N")
            }
            "--skip-worker" => args.skip_worker = true,
            // What `cargo bench` passes.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// `--benchmark --device cpu` for 15 s in `dir`: hashes a second.
fn benchmark(dir: &Path) -> f64 {
    let bench = std::process::Command::new(miner_bin())
        .args([
            "--benchmark",
            "--device",
            "cpu",
            "--json",
            "--seconds",
            "15",
            "--data-dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(bench.status.success(), "{bench:?}");
    let first = bench.stdout.split(|&b| b == b'\n').next().unwrap();
    let report: Value = serde_json::from_slice(first).unwrap();
    report["hashes_per_second"].as_f64().unwrap()
}

/// Part 1: one worker through the pool, beside its own benchmark. This machine's rate drifts
/// by several percent over minutes, so the two take turns: a benchmark, the worker for a
/// while, and so on, each round side by side.
fn worker_through_pool(args: &Args) {
    const ROUNDS: u64 = 4;
    let mut net = Net::with_difficulty(28);
    net.block_size = 1;
    let (n, w) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = Miner::start_with(
        n.path(),
        &net,
        &["--device", "none", "--pool-listen", "127.0.0.1:0"],
    );
    let pool = node.pool.unwrap().to_string();
    let address = Address::of_public_key_der(b"bench worker").to_string();
    let row = |node: &Miner| -> Value { node.get("workers")["workers"][0].clone() };
    let each = Duration::from_secs(args.seconds / ROUNDS);
    let (mut alone, mut through) = (Vec::new(), Vec::new());
    let mut window = Duration::ZERO;
    // Share work, accepted, stale and rejected shares within the measured windows only.
    let network = 2f64.powi(28);
    let work = |r: &Value| r["expected_blocks"].as_f64().unwrap() * network;
    let count = |r: &Value, k: &str| r[k].as_u64().unwrap();
    let (mut proven_work, mut shares, mut stale, mut rejected) = (0.0, 0, 0, 0);
    for _ in 0..ROUNDS {
        alone.push(benchmark(w.path()));
        let mut worker = Proc::spawn(
            &miner_bin(),
            w.path(),
            &net,
            &[
                "--pool",
                &pool,
                "--address",
                &address,
                "--worker",
                "bench",
                "--device",
                "cpu",
            ],
        );
        worker.wait_for("a connection", |l| l.starts_with("Connected to the pool"));
        // The first Status line covers the start (and, the first time, vardiff settling).
        worker.wait_for("a first report", |l| l.starts_with("Status:"));
        let before = (Instant::now(), row(&node));
        thread::sleep(each);
        let lines = worker.lines(|l| l.starts_with("Status:"));
        let rates: Vec<f64> = lines[1..].iter().filter_map(|l| parse_rate(l)).collect();
        through.push(rates.iter().sum::<f64>() / rates.len().max(1) as f64);
        let after = row(&node);
        window += before.0.elapsed();
        proven_work += work(&after) - work(&before.1);
        shares += count(&after, "accepted") - count(&before.1, "accepted");
        stale += count(&after, "stale") - count(&before.1, "stale");
        rejected += count(&after, "rejected") - count(&before.1, "rejected");
        drop(worker);
        thread::sleep(Duration::from_secs(1));
    }
    let secs = window.as_secs_f64();
    let proven = proven_work / secs;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "worker through the pool, {ROUNDS} rounds of a 15 s --benchmark then {} s through the pool, \
         difficulty 28 ({} blocks in all), {}, {} cores:",
        each.as_secs(),
        node.tip().0,
        mvbc_miner::pick::cpu_model(),
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (i, (a, t)) in alone.iter().zip(&through).enumerate() {
        println!(
            "  round {}: --benchmark {:.1} MH/s, through the pool {:.1} MH/s = {:.3}x",
            i + 1,
            a / 1e6,
            t / 1e6,
            t / a
        );
    }
    println!(
        "  mean: --benchmark {:.1} MH/s, hashing through the pool {:.1} MH/s = {:.3}x",
        mean(&alone) / 1e6,
        mean(&through) / 1e6,
        mean(&through) / mean(&alone)
    );
    println!(
        "  proven by accepted shares over {secs:.0} s: {:.1} MH/s = {:.3}x the mean benchmark \
         ({shares} shares, +/- {:.0}% from their count alone)",
        proven / 1e6,
        proven / mean(&alone),
        100.0 / (shares.max(1) as f64).sqrt()
    );
    println!(
        "  stale shares: {stale} of {} ({:.2}%), rejected: {rejected}",
        shares + stale,
        100.0 * stale as f64 / (shares + stale).max(1) as f64
    );
}

/// "Status: hashing 45.9 MH/s, ..." to hashes a second.
fn parse_rate(line: &str) -> Option<f64> {
    let rest = line.strip_prefix("Status: hashing ")?;
    let mut words = rest.split_whitespace();
    let value: f64 = words.next()?.parse().ok()?;
    let unit = words.next()?.trim_end_matches(',');
    let scale = match unit {
        "H/s" => 1.0,
        "kH/s" => 1e3,
        "MH/s" => 1e6,
        "GH/s" => 1e9,
        "TH/s" => 1e12,
        _ => return None,
    };
    Some(value * scale)
}

/// What a simulated worker knows.
#[derive(Clone, Copy)]
struct Job {
    job: u64,
    header: BlockHeader,
    difficulty: u32,
    extranonce: u16,
}

struct Sim {
    stream: Mutex<TcpStream>,
    job: Mutex<Option<Job>>,
    /// When each height's clean job came.
    clean_at: Mutex<HashMap<u64, Instant>>,
    next_id: Mutex<u64>,
}

fn connect_sim(pool: SocketAddr, i: usize) -> Arc<Sim> {
    let stream = TcpStream::connect(pool).unwrap();
    stream.set_nodelay(true).unwrap();
    let reader = stream.try_clone().unwrap();
    let sim = Arc::new(Sim {
        stream: Mutex::new(stream),
        job: Mutex::new(None),
        clean_at: Mutex::new(HashMap::new()),
        next_id: Mutex::new(3),
    });
    let address: Address = Address::of_public_key_der(b"simulated workers");
    for (id, call) in [
        (
            1,
            Call::Subscribe {
                agent: "sim".into(),
            },
        ),
        (
            2,
            Call::Authorize {
                address,
                worker: format!("sim-{i}"),
                token: String::new(),
            },
        ),
    ] {
        let line = Request {
            id: json!(id),
            call,
        }
        .to_line("");
        sim.stream
            .lock()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }
    thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn({
            let sim = sim.clone();
            move || {
                let mut lines = BufReader::new(reader);
                let (mut extranonce, mut difficulty) = (0, 0);
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    match ToWorker::parse(line.trim_end().as_bytes()) {
                        Ok(ToWorker::Reply { id, result: Ok(v) }) if id == json!(1) => {
                            extranonce = Subscribed::from_value(&v).unwrap().extranonce;
                        }
                        Ok(ToWorker::SetDifficulty(d)) => difficulty = d,
                        Ok(ToWorker::Notify { job, header, clean }) => {
                            if clean {
                                sim.clean_at
                                    .lock()
                                    .unwrap()
                                    .entry(header.height)
                                    .or_insert_with(Instant::now);
                            }
                            *sim.job.lock().unwrap() = Some(Job {
                                job,
                                header,
                                difficulty,
                                extranonce,
                            });
                        }
                        _ => {}
                    }
                }
            }
        })
        .unwrap();
    sim
}

/// A share of `job` with leading zero bits in `bits`, from a worker nonce after `from`.
fn share(job: &Job, bits: std::ops::Range<u32>, from: u64) -> u64 {
    find_share(&job.header, job.extranonce, from, bits)
}

fn submit(sim: &Sim, job: &Job, nonce: u64) {
    let id = {
        let mut next = sim.next_id.lock().unwrap();
        *next += 1;
        *next
    };
    let line = Request {
        id: json!(id),
        call: Call::Submit {
            job: job.job,
            nonce,
        },
    }
    .to_line("");
    let _ = sim.stream.lock().unwrap().write_all(line.as_bytes());
}

/// CPU seconds (user and system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Part 2: many simulated workers.
fn many_workers(args: &Args) {
    const NETWORK: u32 = 14;
    let mut net = Net::with_difficulty(NETWORK);
    net.block_size = 1;
    let n = tempfile::tempdir().unwrap();
    let mut node = Miner::start_with(
        n.path(),
        &net,
        &["--device", "none", "--pool-listen", "127.0.0.1:0"],
    );
    let pool = node.pool.unwrap();
    // The node starts mining (so hands out work) once it has listened for peers.
    node.wait_api("work for the workers", "summary", |s| {
        s["mining"] == "mining"
    });
    // The node's own upkeep, with no worker: what the workers' cost is measured beside.
    let idle0 = (cpu_seconds(node.pid()), Instant::now());
    thread::sleep(Duration::from_secs(20));
    let idle = (cpu_seconds(node.pid()) - idle0.0) / idle0.1.elapsed().as_secs_f64();
    let sims: Vec<Arc<Sim>> = (0..args.workers).map(|i| connect_sim(pool, i)).collect();
    let started = Instant::now();
    while sims.iter().any(|s| s.job.lock().unwrap().is_none()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "workers without a job"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let connected = started.elapsed();
    // Each worker submits a share that is no block every 3 s, spread evenly.
    let period = Duration::from_secs(3);
    let gap = period / args.workers as u32;
    let mut from = vec![0u64; sims.len()];
    let mut run = |secs: u64| {
        let until = Instant::now() + Duration::from_secs(secs);
        let mut next = Instant::now();
        let mut sent = 0u64;
        'outer: loop {
            for (i, sim) in sims.iter().enumerate() {
                next += gap;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                if Instant::now() >= until {
                    break 'outer;
                }
                let Some(job) = *sim.job.lock().unwrap() else {
                    continue;
                };
                let nonce = share(&job, job.difficulty..NETWORK, from[i]);
                from[i] = nonce + 1;
                submit(sim, &job, nonce);
                sent += 1;
            }
        }
        sent
    };
    // Warm up, then measure.
    run(10);
    let cpu0 = cpu_seconds(node.pid());
    let t0 = Instant::now();
    let sent = run(60);
    let cpu = cpu_seconds(node.pid()) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let table = node.get("workers");
    let accepted: u64 = table["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["accepted"].as_u64().unwrap())
        .sum();
    let rejected: u64 = table["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["rejected"].as_u64().unwrap())
        .sum();
    println!(
        "{} simulated workers (all connected with a job in {:.2} s), {}, {} cores:",
        args.workers,
        connected.as_secs_f64(),
        mvbc_miner::pick::cpu_model(),
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "  {sent} shares in {wall:.0} s ({:.1} a minute each); the node's CPU time: {:.2} s = {:.2}% of one core, {:.2}% of it before any worker connected ({accepted} accepted, {rejected} rejected since they connected)",
        sent as f64 / wall * 60.0 / args.workers as f64,
        cpu,
        100.0 * cpu / wall,
        100.0 * idle
    );

    // New tips: one worker submits a block; every connection must get the clean job.
    let mut latencies = Vec::new();
    for round in 0..5 {
        let height = node.tip().0;
        let job = sims[round].job.lock().unwrap().unwrap();
        assert_eq!(job.header.height, height + 1);
        let nonce = share(&job, NETWORK..257, 1 << 40);
        let t0 = Instant::now();
        submit(&sims[round], &job, nonce);
        let deadline = t0 + Duration::from_secs(10);
        let arrivals: Vec<Duration> = sims
            .iter()
            .map(|s| {
                loop {
                    if let Some(at) = s.clean_at.lock().unwrap().get(&(height + 2)) {
                        break at.saturating_duration_since(t0);
                    }
                    assert!(
                        Instant::now() < deadline,
                        "a worker never got the new tip's job"
                    );
                    thread::sleep(Duration::from_millis(1));
                }
            })
            .collect();
        let mut sorted = arrivals.clone();
        sorted.sort();
        latencies.push((sorted[sorted.len() / 2], *sorted.last().unwrap()));
        thread::sleep(Duration::from_millis(500));
    }
    for (i, (median, last)) in latencies.iter().enumerate() {
        println!(
            "  new tip {}: clean job at the median worker after {:.1} ms, at the last of {} after {:.1} ms",
            i + 1,
            median.as_secs_f64() * 1e3,
            args.workers,
            last.as_secs_f64() * 1e3
        );
    }
    drop(node);
}

fn main() {
    let args = args();
    if !args.skip_worker {
        worker_through_pool(&args);
    }
    if args.workers > 0 {
        many_workers(&args);
    }
}
