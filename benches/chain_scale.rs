//! How a node and a wallet cope with a long chain: reward-only blocks (`block_size = 1`,
//! difficulty 8; `--block-size N` fills each block with N - 1 payments), made in this process and written as a miner's store, then real release
//! programs on loopback. For each set of binaries (this build's, and a reference build's side
//! by side with `--reference DIR`) it measures:
//!
//! - the miner's restart (after a first run stopped with Ctrl-C) until its API answers at the
//!   store's height;
//! - its resident memory (VmRSS) two seconds later;
//! - API lookups: a block by height, a transaction no block holds, an address page of 10;
//! - a fresh wallet's `sync --once` from that miner (with one new key): time and peak memory;
//!   for this build the default (light: headers and the key's proven history), the same
//!   again (a restart's catch-up) and `--full`; for a reference build its default.
//!
//! It also loads the store in this process with this build's `load_chain`: once with every
//! check, then best of 4 under the validated mark the first load left. That is the part of a
//! restart that grows with the chain, without a process's start around it.
//!
//! ```text
//! cargo build --release -p mvbc-miner -p mvbc-wallet
//! cargo bench -p mvbc-tests --bench chain_scale -- --blocks 300000 [--reference DIR]
//! ```
//!
//! The store is made once per length and kept in `target/chain-scale/`. The miner mines on
//! one thread while it is measured (there is no mode without mining), as users run it; both
//! builds do the same.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mvbc_testkit::http::{get, get_json};
use mvbc_testkit::procs::{Net, Proc, build_chain, store_blocks};

struct Args {
    blocks: u64,
    block_size: usize,
    bins: PathBuf,
    reference: Option<PathBuf>,
}

fn args() -> Args {
    let mut args = Args {
        blocks: 300_000,
        block_size: 1,
        bins: workspace_root().join("target/release"),
        reference: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--blocks" => args.blocks = it.next().and_then(|v| v.parse().ok()).expect("--blocks N"),
            "--block-size" => {
                args.block_size = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--block-size N")
            }
            "--bins" => args.bins = it.next().expect("--bins DIR").into(),
            "--reference" => args.reference = Some(it.next().expect("--reference DIR").into()),
            // What `cargo bench` passes.
            "--bench" => {}
            other => panic!(
                "unknown argument {other:?}: --blocks N, --block-size N, --bins DIR, --reference DIR"
            ),
        }
    }
    args
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

/// The store of `n` blocks of `net`'s block size, made once.
fn store_of(net: &Net, n: u64) -> PathBuf {
    let name = match net.block_size {
        1 => n.to_string(),
        size => format!("{n}x{size}"),
    };
    let dir = workspace_root().join(format!("target/chain-scale/{name}"));
    let path = dir.join("blocks.dat");
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let started = Instant::now();
    let key = mvbc_protocol::KeyPair::generate(1024).unwrap();
    let blocks = build_chain(net, &key, n, 0);
    let partial = dir.join("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).unwrap();
    store_blocks(net, &partial, &blocks);
    std::fs::write(dir.join("address"), key.address().to_string()).unwrap();
    std::fs::rename(partial.join("blocks.dat"), &path).unwrap();
    eprintln!("made {n} blocks in {:.1?}", started.elapsed());
    path
}

/// What one build measured.
#[derive(Default)]
struct Figures {
    start: Duration,
    rss_mib: f64,
    block_ms: f64,
    missing_tx_ms: f64,
    address_ms: f64,
    /// Each wallet sync: its arguments, time, peak memory and the height reached.
    wallets: Vec<(&'static str, Duration, f64, u64)>,
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[3]
}

fn status_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn measure(
    net: &Net,
    bins: &Path,
    store: &Path,
    address: &str,
    n: u64,
    syncs: &[&'static str],
) -> Figures {
    let (miner_bin, wallet_bin) = (bins.join("mvbc-miner"), bins.join("mvbc-wallet"));
    for bin in [&miner_bin, &wallet_bin] {
        assert!(
            bin.exists(),
            "{} is missing: cargo build --release -p mvbc-miner -p mvbc-wallet",
            bin.display()
        );
    }
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("miner");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(store, data.join("blocks.dat")).unwrap();
    // A first start makes the key, measures the CPU kernels and (this build) the index; the
    // second, after a clean stop, is the restart.
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("127.0.0.1:{api_port}");
    let args = ["--device", "cpu", "--threads", "1", "--api-listen", &api];
    let ready = || {
        std::net::TcpStream::connect(("127.0.0.1", api_port)).ok()?;
        let summary = get(api_port, "/api/v1/summary");
        (summary.status == 200 && summary.json()["height"].as_u64()? >= n).then_some(())
    };
    let wait_ready =
        |proc: &mut Proc| proc.wait_until("the API at the store's height", |_| ready());
    let first = Proc::spawn(&miner_bin, &data, net, &args);
    // The first start checks every block and builds the index: longer than a test's patience
    // on a long chain of payments.
    let first_deadline = Instant::now() + Duration::from_secs(1_800);
    while ready().is_none() {
        assert!(
            Instant::now() < first_deadline,
            "the first start never served the store's height\n{}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stopped as a user stops it (Ctrl-C): what a restart usually follows.
    let (code, log) = first.stop_with("INT");
    assert_eq!(code, Some(0), "{log}");
    let started = Instant::now();
    let mut miner = Proc::spawn(&miner_bin, &data, net, &args);
    wait_ready(&mut miner);
    let mut f = Figures {
        start: started.elapsed(),
        ..Figures::default()
    };
    std::thread::sleep(Duration::from_secs(2));
    f.rss_mib = status_kib(miner.pid(), "VmRSS:") / 1024.0;
    f.block_ms = median_ms(|| {
        get_json(api_port, &format!("/api/v1/block/{}", n / 2));
    });
    let missing = "ab".repeat(32);
    f.missing_tx_ms = median_ms(|| {
        let reply = get(api_port, &format!("/api/v1/tx/{missing}"));
        assert_eq!(reply.status, 404, "{}", reply.body);
    });
    f.address_ms = median_ms(|| {
        let page = get_json(api_port, &format!("/api/v1/address/{address}?limit=10"));
        assert_eq!(page["history"]["items"].as_array().map(Vec::len), Some(10));
    });

    for how in syncs {
        // The same arguments again sync the same wallet again: a restart's catch-up.
        let wallet_dir = work.path().join(format!("wallet{}", how.replace(' ', "")));
        if wallet_dir.exists() {
            let (took, peak, height) = sync_wallet(net, &wallet_bin, &wallet_dir, how);
            f.wallets.push((how, took, peak, height));
            continue;
        }
        std::fs::create_dir_all(&wallet_dir).unwrap();
        let made = net
            .command(&wallet_bin)
            .arg("--data-dir")
            .arg(&wallet_dir)
            .args(net.settings())
            .args(["new-address", "bench"])
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let (took, peak, height) = sync_wallet(net, &wallet_bin, &wallet_dir, how);
        f.wallets.push((how, took, peak, height));
    }
    f
}

/// One `sync --once` of the wallet in `dir` with `how` (more arguments): its time, peak
/// memory (GNU time's) and the height it reached.
fn sync_wallet(net: &Net, wallet_bin: &Path, dir: &Path, how: &str) -> (Duration, f64, u64) {
    let mut args = vec!["sync", "--once", "--timeout", "600", "--json"];
    args.extend(how.split_whitespace());
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "peak_kib=%M"])
        .arg(wallet_bin)
        .arg("--data-dir")
        .arg(dir)
        .args(net.settings())
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wallet sync failed\n{stdout}\n{stderr}"
    );
    let peak = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_kib="))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("GNU time's peak")
        / 1024.0;
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    (took, peak, report["height"].as_u64().unwrap_or(0))
}

/// This build's `load_chain` of a copy of `store`: the first load (no validated mark yet:
/// every check), and the quickest of 4 more (under the mark the first one left).
fn best_load(net: &Net, store: &Path) -> (Duration, Duration) {
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("blocks.dat");
    std::fs::copy(store, &copy).unwrap();
    let mut times = (0..5).map(|_| {
        let started = Instant::now();
        let loaded =
            mvbc_protocol::store::load_chain(&copy, net.params(), mvbc_protocol::unix_now())
                .unwrap();
        let took = started.elapsed();
        assert!(loaded.refused.is_empty());
        took
    });
    let first = times.next().unwrap();
    (first, times.min().unwrap())
}

fn main() {
    let args = args();
    let cpu = mvbc_miner::pick::cpu_model();
    let net = Net {
        block_size: args.block_size,
        ..Net::with_difficulty(8)
    };
    let store = store_of(&net, args.blocks);
    let address = std::fs::read_to_string(store.with_file_name("address")).unwrap();
    let load = best_load(&net, &store);
    let mut rows = vec![(
        "this build",
        measure(
            &net,
            &args.bins,
            &store,
            &address,
            args.blocks,
            &["", "", "--full"],
        ),
    )];
    if let Some(reference) = &args.reference {
        rows.push((
            "reference",
            measure(&net, reference, &store, &address, args.blocks, &[""]),
        ));
    }
    println!(
        "{} blocks of {} transactions ({:.0} MB store), {cpu}, {} cores",
        args.blocks,
        args.block_size,
        std::fs::metadata(&store).unwrap().len() as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "this build's load_chain in process: {:.2} s with every check, {:.2} s under the \
         validated mark (best of 4)",
        load.0.as_secs_f64(),
        load.1.as_secs_f64()
    );
    println!("| build | start to API | miner RSS | block by height | missing tx | address page |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, f) in &rows {
        println!(
            "| {name} | {:.2} s | {:.0} MiB | {:.1} ms | {:.1} ms | {:.1} ms |",
            f.start.as_secs_f64(),
            f.rss_mib,
            f.block_ms,
            f.missing_tx_ms,
            f.address_ms,
        );
    }
    println!("| build | wallet sync --once | time | blocks/s | peak RSS |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, f) in &rows {
        for (how, took, peak, height) in &f.wallets {
            println!(
                "| {name} | {} | {:.2} s | {:.0} | {peak:.0} MiB |",
                if how.is_empty() { "(default)" } else { how },
                took.as_secs_f64(),
                *height as f64 / took.as_secs_f64(),
            );
        }
    }
}
