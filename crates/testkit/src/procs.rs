//! Real `mvbc-miner` and `mvbc-wallet` processes on loopback for the network tests: free ports
//! per test, a low difficulty, and a miner whose stdout can be waited on line by line.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mvbc_miner::driver::{PORTS_FILE, Ports};
use mvbc_net::BlockClient;
use mvbc_protocol::Hash256;
use mvbc_protocol::wire::{Reply, Request};

/// What the wallet prints with `--json`, parsed with its own types.
pub use mvbc_wallet::report::{Row, SyncReport};

/// How long any one wait in these tests may take before it fails with the logs.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The workspace binary `name`: Cargo builds every workspace binary into the folder above the
/// test's own executable (`target/debug/deps/..`) before any test of `cargo test --workspace`
/// runs.
fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test runs from target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// The miner binary.
pub fn miner_bin() -> PathBuf {
    workspace_bin("mvbc-miner")
}

/// The wallet binary.
pub fn wallet_bin() -> PathBuf {
    workspace_bin("mvbc-wallet")
}

/// Calls `check` on `state` every 20 ms until it gives a value; after [`PATIENCE`], fails with
/// what `failure` says of `state` then. Every wait of these tests goes through it.
pub fn poll_until<S, T>(
    state: &mut S,
    mut check: impl FnMut(&mut S) -> Option<T>,
    failure: impl Fn(&S) -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check(state) {
            return value;
        }
        assert!(start.elapsed() < PATIENCE, "{}", failure(state));
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every miner has the same tip (asked of its block server). Two miners that find
/// a block at the same moment settle on one by themselves, with no block after: the tie-break
/// picks the same block everywhere (`docs/adr/0005-equal-work-tie-break.md`).
pub fn converge(miners: &mut [&mut Miner]) -> (u64, String) {
    settle(miners, 0, |m| {
        let (height, tip) = m.tip();
        Some((height, tip.to_string()))
    })
}

/// Waits until every miner has the same tip, at least `height` (asked of its block server).
pub fn agree(miners: &mut [&mut Miner], height: u64) -> (u64, String) {
    settle(miners, height, |m| {
        let (height, tip) = m.tip();
        Some((height, tip.to_string()))
    })
}

/// Waits until `tip_of` gives every miner the same tip, at least `height`.
fn settle(
    miners: &mut [&mut Miner],
    height: u64,
    tip_of: impl Fn(&Miner) -> Option<(u64, String)>,
) -> (u64, String) {
    let start = Instant::now();
    loop {
        let tips: Vec<_> = miners.iter().map(|m| tip_of(m)).collect();
        if let Some(first) = &tips[0]
            && first.0 >= height
            && tips.iter().all(|t| t.as_ref() == Some(first))
        {
            return first.clone();
        }
        if start.elapsed() >= PATIENCE {
            let logs: Vec<String> = miners.iter().map(|m| m.log()).collect();
            panic!(
                "miners never agreed at {height}+: {tips:?}\n{}",
                logs.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The chain a miner stored in `dir`, read beside the running miner; every block must load.
pub fn stored_chain(dir: &Path, net: &Net) -> mvbc_protocol::Chain {
    let path = dir.join("blocks.dat");
    let now = mvbc_protocol::unix_now();
    let (chain, refused) = mvbc_protocol::store::read_only_chain(&path, net.params(), now).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    chain
}

/// A valid chain of `n` blocks on genesis for `net`, made in this process in moments: `key`
/// earns every reward and, from block 2 on, fills each block with payments to itself of one
/// unit. `salt` (added to the payments' timestamps and the headers') keeps two chains apart.
pub fn build_chain(
    net: &Net,
    key: &mvbc_protocol::KeyPair,
    n: u64,
    salt: u64,
) -> Vec<mvbc_protocol::Block> {
    use mvbc_protocol::{Amount, Block, Payment, Reward, Transaction};
    let params = net.params();
    let now = mvbc_protocol::unix_now();
    let mut parent = mvbc_protocol::genesis_block().header;
    let mut blocks = Vec::new();
    for height in 1..=n {
        let mut txs = vec![Transaction::Reward(Reward {
            to: key.address(),
            amount: params.block_reward,
            height,
        })];
        for i in 1..params.required_txs(height) {
            let stamp = now + salt + height * 1_000 + i as u64;
            let to = key.address();
            txs.push(Transaction::Payment(Payment::new_signed(
                key,
                to,
                Amount::from_units(1),
                stamp,
            )));
        }
        let timestamp = now.saturating_sub(n) + height + salt % 60;
        let mut block = Block::assemble(&parent, txs, timestamp, params.difficulty);
        block.header.solve();
        parent = block.header;
        blocks.push(block);
    }
    blocks
}

/// Writes `blocks` into the miner store of `dir`, as if a miner of `net` there had mined them.
pub fn store_blocks(net: &Net, dir: &Path, blocks: &[mvbc_protocol::Block]) {
    let opened =
        mvbc_protocol::store::BlockStore::open(&dir.join("blocks.dat"), &net.params()).unwrap();
    let mut store = opened.store;
    for block in blocks {
        store.append(block).unwrap();
    }
}

/// Whether this process runs as root, which `test` needs for `what`. When not, it says so
/// (NOT RUN) and the test returns early, unless `MVBC_REQUIRE_ROOT` is set (CI sets it): then
/// it fails.
pub fn is_root(test: &str, what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("MVBC_REQUIRE_ROOT").is_none(),
        "{test}: needs root for {what}, and MVBC_REQUIRE_ROOT is set"
    );
    eprintln!("{test}: NOT RUN: needs root for {what}");
    false
}

/// The UDP ports one test's network uses: its own, so tests run side by side.
#[derive(Clone, Debug)]
pub struct Net {
    pub status_port: u16,
    pub transaction_port: u16,
    pub difficulty: u32,
    /// Transactions per block, the reward included.
    pub block_size: usize,
    /// Where broadcasts go: loopback, or a test subnet's broadcast address.
    pub broadcast: std::net::Ipv4Addr,
    /// The network namespace programs run in (`ip netns exec`); `None`: this one.
    pub host: Option<String>,
}

impl Default for Net {
    fn default() -> Net {
        Net::new()
    }
}

impl Net {
    /// Two free UDP ports and difficulty 12 (a block in about a millisecond).
    pub fn new() -> Net {
        Net::with_difficulty(12)
    }

    pub fn with_difficulty(difficulty: u32) -> Net {
        let free = || {
            UdpSocket::bind("0.0.0.0:0")
                .and_then(|s| s.local_addr())
                .expect("a free UDP port")
                .port()
        };
        Net {
            status_port: free(),
            transaction_port: free(),
            difficulty,
            block_size: 2,
            broadcast: std::net::Ipv4Addr::new(127, 255, 255, 255),
            host: None,
        }
    }

    /// The consensus parameters these settings give (the reward is the default 10 coins).
    pub fn params(&self) -> mvbc_protocol::ConsensusParams {
        mvbc_protocol::ConsensusParams {
            difficulty: self.difficulty,
            block_size: self.block_size,
            block_reward: mvbc_protocol::Amount::from_coins(10).unwrap(),
        }
    }

    /// The same network, for programs run in network namespace `host`.
    pub fn on(&self, host: &str) -> Net {
        Net {
            host: Some(host.to_string()),
            ..self.clone()
        }
    }

    /// A command for `bin`, inside this network's namespace if it has one.
    pub fn command(&self, bin: &Path) -> Command {
        match &self.host {
            None => Command::new(bin),
            Some(host) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", host]).arg(bin);
                c
            }
        }
    }

    /// `-s` settings for this network: loopback broadcast, small keys, fast intervals, any
    /// free block server port.
    pub fn settings(&self) -> Vec<String> {
        [
            format!("difficulty={}", self.difficulty),
            format!("block_size={}", self.block_size),
            "key_size=1024".into(),
            format!("status_broadcast_port={}", self.status_port),
            format!("transaction_port={}", self.transaction_port),
            "block_server_port=0".into(),
            "status_broadcast_interval_seconds=0.5".into(),
            "transaction_broadcast_interval_seconds=0.5".into(),
            format!("broadcast_address={}", self.broadcast),
            // Tests run many miners side by side: none takes the API's fixed port unless the
            // test asks for an API.
            "api_listen=".into(),
        ]
        .into_iter()
        .flat_map(|s| ["-s".to_string(), s])
        .collect()
    }
}

/// Runs `f` on a thread of its own inside network namespace `host` (made by `ip netns add`):
/// the sockets it opens are that namespace's, as the programs' in it are.
pub fn in_namespace<T: Send>(host: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    thread::scope(|s| {
        s.spawn(|| {
            let path = format!("/var/run/netns/{host}");
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: `setns` takes a valid descriptor of a network namespace and moves only
            // this thread, which ends when `f` returns.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                entered,
                0,
                "entering {host}: {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// A running program whose output is collected line by line; killed when dropped.
pub struct Proc {
    child: Child,
    name: String,
    pub dir: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// A running miner.
pub struct Miner {
    proc: Proc,
    pub block_port: u16,
    /// Its API's port on 127.0.0.1 of its host, where the tests watch its state: every miner a
    /// test starts serves one, unless the test set `--api-listen` itself.
    pub api: Option<u16>,
    /// Its pool port, when it opened one (`--pool-listen`).
    pub pool: Option<std::net::SocketAddr>,
    /// The network namespace it runs in; `None`: the test's own.
    host: Option<String>,
}

impl std::ops::Deref for Miner {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for Miner {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

fn collect(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            into.lock().unwrap().push(line);
        }
    });
}

impl Miner {
    /// Starts a miner on `dir` in `net` (CPU engine, one thread) and waits until it listens.
    pub fn start(dir: &Path, net: &Net) -> Miner {
        Miner::start_with(dir, net, &[])
    }

    pub fn start_with(dir: &Path, net: &Net, extra: &[&str]) -> Miner {
        Miner::start_logging(dir, net, extra, "info")
    }

    /// Starts a miner with `RUST_LOG` set to `log`.
    pub fn start_logging(dir: &Path, net: &Net, extra: &[&str], log: &str) -> Miner {
        // One CPU thread, unless the test names the device itself.
        let mut args = if extra.contains(&"--device") {
            vec![]
        } else {
            vec!["--device", "cpu", "--threads", "1"]
        };
        // An API on any free port, unless the test set one.
        let api = !extra.contains(&"--api-listen");
        if api {
            args.extend_from_slice(&["--api-listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        // The ports it bound, from the file it writes once it has bound them (one left by an
        // earlier start goes first).
        let ports_file = dir.join(PORTS_FILE);
        let _ = std::fs::remove_file(&ports_file);
        let mut proc = Proc::spawn_logging(&miner_bin(), dir, net, &args, log);
        let ports: Ports = proc.wait_until("the ports it bound", |_| {
            let bytes = std::fs::read(&ports_file).ok()?;
            serde_json::from_slice(&bytes).ok()
        });
        assert!(!api || ports.api.is_some(), "no API\n{}", proc.log());
        Miner {
            proc,
            block_port: ports.block_server,
            api: ports.api.map(|at| at.port()),
            pool: ports.pool,
            host: net.host.clone(),
        }
    }

    /// Runs `f` where this miner's loopback is 127.0.0.1: here, or on a thread that entered
    /// its network namespace.
    fn on_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.host {
            None => f(),
            Some(host) => in_namespace(host, f),
        }
    }

    /// Its API's port.
    pub fn api(&self) -> u16 {
        self.api
            .unwrap_or_else(|| panic!("no API this test can reach\n{}", self.log()))
    }

    /// `GET /api/v1/PATH` as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let (api, path) = (self.api(), format!("/api/v1/{path}"));
        self.on_host(|| crate::http::get_json(api, &path))
    }

    /// Polls `GET /api/v1/PATH` until `pred` holds; returns that answer.
    pub fn wait_api(
        &mut self,
        what: &str,
        path: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        poll_until(
            self,
            |m| Some(m.get(path)).filter(|v| pred(v)),
            |m| {
                format!(
                    "timed out waiting for {what} ({path}: {})\n{}",
                    m.get(path),
                    m.log()
                )
            },
        )
    }

    /// Its links, as its API lists them: each peer's block server, and whether it dialled.
    pub fn links(&self) -> Vec<(String, bool)> {
        let peers = self.get("peers");
        peers["links"]
            .as_array()
            .unwrap_or_else(|| panic!("no links in {peers}"))
            .iter()
            .map(|l| {
                (
                    l["peer"].as_str().unwrap().to_string(),
                    l["dialled"] == true,
                )
            })
            .collect()
    }

    /// Waits until it has a link to `peer`: dialled by it (`Some(true)`), by the peer
    /// (`Some(false)`), or either way (`None`).
    pub fn wait_link(&mut self, peer: &str, dialled: Option<bool>) {
        poll_until(
            self,
            |m| {
                let links = m.links();
                links
                    .iter()
                    .any(|(p, d)| p == peer && dialled.is_none_or(|want| want == *d))
                    .then_some(())
            },
            |m| format!("no link to {peer} in {:?}\n{}", m.links(), m.log()),
        )
    }

    /// Whether it holds the payment `id`, pending or in its best chain.
    pub fn knows_payment(&self, id: &str) -> bool {
        let (api, path) = (self.api(), format!("/api/v1/tx/{id}"));
        self.on_host(|| crate::http::get(api, &path).status == 200)
    }

    /// Waits until it holds the payment `id`, pending or in its best chain.
    pub fn wait_payment(&mut self, id: &str) {
        poll_until(
            self,
            |m| m.knows_payment(id).then_some(()),
            |m| format!("timed out waiting for payment {id}\n{}", m.log()),
        )
    }

    /// Its best chain's height and tip, asked of its block server.
    pub fn tip(&self) -> (u64, Hash256) {
        let port = self.block_port;
        let asked = self.on_host(|| {
            let mut client = BlockClient::connect(([127, 0, 0, 1], port).into())?;
            client.request(&Request::BlocksAfter {
                locator: vec![],
                max_blocks: 0,
            })
        });
        match asked {
            Ok(Reply::Blocks {
                tip_height, tip, ..
            }) => (tip_height, tip),
            other => panic!("{other:?}\n{}", self.log()),
        }
    }

    /// Waits until its chain is at least `height` high.
    pub fn wait_height(&mut self, height: u64) -> Hash256 {
        poll_until(
            self,
            |m| {
                let (h, tip) = m.tip();
                (h >= height).then_some(tip)
            },
            |m| {
                format!(
                    "miner stuck at {:?}, waiting for height {height}\n{}",
                    m.tip(),
                    m.log()
                )
            },
        )
    }

    /// Stops it with SIGTERM and returns its exit code and log.
    pub fn stop(self) -> (Option<i32>, String) {
        self.proc.stop_with("TERM")
    }

    /// Stops it with `signal`; see [`Proc::stop_with`].
    pub fn stop_with(self, signal: &str) -> (Option<i32>, String) {
        self.proc.stop_with(signal)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(self) {
        self.proc.kill9()
    }

    /// SIGKILL, then a fresh start on the same directory.
    pub fn kill9_and_restart(&mut self, net: &Net) {
        self.proc.signal("KILL");
        let _ = self.proc.child.wait();
        let dir = self.proc.dir.clone();
        *self = Miner::start(&dir, net);
    }
}

fn matching(lines: &Mutex<Vec<String>>, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let lines = lines.lock().unwrap();
    lines.iter().filter(|l| pred(l)).cloned().collect()
}

impl Proc {
    /// Starts `bin --data-dir DIR <net settings> ARGS` with its output collected.
    pub fn spawn(bin: &Path, dir: &Path, net: &Net, args: &[&str]) -> Proc {
        Proc::spawn_logging(bin, dir, net, args, "info")
    }

    /// [`Proc::spawn`] with `RUST_LOG` set to `log`.
    pub fn spawn_logging(bin: &Path, dir: &Path, net: &Net, args: &[&str], log: &str) -> Proc {
        let mut child = net
            .command(bin)
            .arg("--data-dir")
            .arg(dir)
            .args(net.settings())
            .args(args)
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        Proc {
            child,
            name: bin.file_name().unwrap().to_string_lossy().into_owned(),
            dir: dir.to_owned(),
            stdout,
            stderr,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        format!(
            "--- stdout of {} in {} ---\n{}\n--- stderr ---\n{}",
            self.name,
            self.dir.display(),
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Lines printed to stderr (the log) so far that `pred` accepts.
    pub fn log_lines(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        matching(&self.stderr, pred)
    }

    /// Lines printed so far that `pred` accepts.
    pub fn lines(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        matching(&self.stdout, pred)
    }

    /// Waits for a stdout line `pred` accepts; fails with the log after [`PATIENCE`].
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_until(what, |p| {
            p.stdout.lock().unwrap().iter().find(|l| pred(l)).cloned()
        })
    }

    /// Waits until `check` gives a value; fails with the log if the program exits first or
    /// after [`PATIENCE`].
    pub fn wait_until<T>(&mut self, what: &str, check: impl Fn(&Proc) -> Option<T>) -> T {
        poll_until(
            self,
            |p| {
                if let Some(found) = check(p) {
                    return Some(found);
                }
                if let Ok(Some(status)) = p.child.try_wait() {
                    thread::sleep(Duration::from_millis(100));
                    panic!(
                        "{} exited ({status}) while waiting for {what}\n{}",
                        p.name,
                        p.log()
                    );
                }
                None
            },
            |p| format!("timed out waiting for {what}\n{}", p.log()),
        )
    }

    /// Sends a signal ("TERM", "INT" or "KILL").
    pub fn signal(&self, name: &str) {
        let signal = match name {
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "KILL" => libc::SIGKILL,
            other => panic!("no signal {other}"),
        };
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) takes plain integers; the pid is our own child, not yet reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill -{name} failed");
    }

    /// Waits for it to end on its own; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let status = poll_until(
            self,
            |p| p.child.try_wait().unwrap(),
            |p| format!("{} did not stop\n{}", p.name, p.log()),
        );
        // Let the output threads take the last lines.
        thread::sleep(Duration::from_millis(50));
        status.code()
    }

    /// Stops it with `signal` ("TERM" or "INT", as Ctrl-C sends) and returns its exit code and
    /// log.
    pub fn stop_with(mut self, signal: &str) -> (Option<i32>, String) {
        self.signal(signal);
        let status = poll_until(
            &mut self,
            |p| p.child.try_wait().unwrap(),
            |p| format!("{} ignored SIG{signal}\n{}", p.name, p.log()),
        );
        thread::sleep(Duration::from_millis(50));
        (status.code(), self.log())
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `mvbc-wallet` in `dir` on `net` to completion.
pub fn wallet(dir: &Path, net: &Net, args: &[&str]) -> Output {
    net.command(&wallet_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(net.settings())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mvbc-wallet")
}

/// Runs the wallet and fails the test, showing its output, unless it succeeds; returns stdout.
pub fn wallet_ok(dir: &Path, net: &Net, args: &[&str]) -> String {
    let out = wallet(dir, net, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "mvbc-wallet {args:?} failed ({})\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A new key in `dir`; returns its address.
pub fn new_address(dir: &Path, net: &Net, name: &str) -> String {
    let out = wallet_ok(dir, net, &["new-address", name]);
    out.split("with address ")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .unwrap_or_else(|| panic!("no address in {out:?}"))
        .to_string()
}

pub fn sync_once(dir: &Path, net: &Net) -> SyncReport {
    let out = wallet_ok(dir, net, &["sync", "--once", "--timeout", "20", "--json"]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// Syncs until nothing is pending (re-broadcasting each time), for at most [`PATIENCE`].
pub fn sync_until_confirmed(dir: &Path, net: &Net) -> SyncReport {
    let mut last = None;
    poll_until(
        &mut last,
        |last| {
            let report = sync_once(dir, net);
            let done = report.pending.is_empty();
            *last = Some(report);
            done.then(|| last.take().unwrap())
        },
        |last| format!("payments still pending: {last:?}"),
    )
}

/// The payment id in what `mvbc-wallet send` printed.
fn payment_id(out: &str) -> String {
    out.split_whitespace()
        .nth(1)
        .map(|id| id.trim_end_matches(':').to_string())
        .unwrap_or_else(|| panic!("no payment id in {out:?}"))
}

/// Sends `amount` from `from` to `to` with the wallet in `dir`; returns the payment id.
pub fn send(dir: &Path, net: &Net, from: &str, amount: &str, to: &str) -> String {
    payment_id(&wallet_ok(dir, net, &["send", from, amount, to]))
}

/// `args` for a wallet that reaches nodes only through `peer` (broadcasting off).
fn via<'a>(peer: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["-s", "broadcast_address=", "--peer", peer];
    all.extend_from_slice(args);
    all
}

/// `send` through the node at `peer` alone; returns the payment id.
pub fn send_via(dir: &Path, net: &Net, peer: &str, from: &str, amount: &str, to: &str) -> String {
    let out = wallet_ok(dir, net, &via(peer, &["send", from, amount, to]));
    assert!(out.contains(&format!("submitted to {peer}")), "{out}");
    payment_id(&out)
}

/// `sync --once` through the node at `peer` alone.
pub fn sync_via(dir: &Path, net: &Net, peer: &str) -> SyncReport {
    let args = ["sync", "--once", "--timeout", "20", "--json"];
    let out = wallet_ok(dir, net, &via(peer, &args));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

pub fn balances(dir: &Path, net: &Net) -> Vec<Row> {
    let out = wallet_ok(dir, net, &["list-addresses", "--json"]);
    serde_json::from_str(out.trim()).unwrap()
}

/// The confirmed balance of the key `name` in `dir`, as printed.
pub fn balance(dir: &Path, net: &Net, name: &str) -> String {
    balances(dir, net)
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no key {name} in {}", dir.display()))
        .balance
}
