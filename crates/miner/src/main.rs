//! `mvbc-miner`: the mining node (`mvbc_miner::driver`, its events printed as lines), and
//! `--benchmark`, which measures the engines.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use mvbc_miner::bench::{self, BenchReport};
use mvbc_miner::cpu::Kernel;
use mvbc_miner::driver;
use mvbc_miner::select::{self, DeviceChoice, KernelChoice};
use mvbc_miner::tune::TuneCache;
use mvbc_miner::{CpuEngine, MiningEngine};
use mvbc_protocol::config::DataDirArgs;
use mvbc_protocol::keyfile;
use mvbc_protocol::store::load_chain;
use mvbc_protocol::{Address, KeyPair, unix_now};

/// The miner's chain store in its data directory.
const CHAIN_FILE: &str = "blocks.dat";
/// The key that receives mining rewards, created on first start.
const REWARD_KEY_NAME: &str = "mining_rewards";

#[derive(Parser)]
#[command(name = "mvbc-miner", version, about = "The mvbc proof-of-work miner")]
struct Cli {
    #[command(flatten)]
    args: DataDirArgs,
    /// Where to search nonces: `auto` (every hardware GPU together, else the CPU), `all` (every
    /// GPU and the CPU together), `cpu`, `gpu` (the adapter wgpu prefers), `gpu:N` (from
    /// --list-devices), or `none` (a node that leaves mining to its pool's workers). Software adapters join `auto` and `all` only with
    /// MVBC_ALLOW_SOFTWARE_GPU=1.
    #[arg(long, default_value = "auto", value_parser = DeviceChoice::from_str)]
    device: DeviceChoice,
    /// List the GPU adapters wgpu sees (for --device gpu:N) and the CPU, then exit.
    #[arg(long, conflicts_with = "benchmark")]
    list_devices: bool,
    /// CPU engine threads [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// The CPU engine's kernel: `auto` takes the fastest on this CPU, measured on first start
    /// (each kernel's best of 5 alternating rounds, under a second) and kept in
    /// `cpu-kernel.json` per CPU model.
    #[arg(long, value_enum, default_value_t = KernelChoice::Auto)]
    cpu_kernel: KernelChoice,
    /// Pay mining rewards to this address, or to the local key of this name, instead of the
    /// `mining_rewards` key (created on first start).
    #[arg(long, value_name = "NAME|ADDRESS")]
    reward_address: Option<String>,
    /// Measure each engine's hash rate on a synthetic block instead of mining (no network; only
    /// the GPU tuning cache is read from and written to the data directory).
    #[arg(long)]
    benchmark: bool,
    /// Measure the GPU engine's tuning again (workgroup size, nonces per invocation, dispatch
    /// time, shader checks) instead of using `gpu-tuning.json` in the data directory, and the
    /// CPU kernels instead of using `cpu-kernel.json`.
    #[arg(long)]
    retune: bool,

    /// Make the index of the chain (`index.redb`: transactions and address histories, which the
    /// API and the explorer look up) anew from the stored blocks. It is also made anew by itself
    /// when it is missing, damaged or of another version
    #[arg(long)]
    reindex: bool,
    /// How long to measure each engine, after a one-second warm-up.
    #[arg(long, requires = "benchmark", default_value_t = 10.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Serve the JSON API and the explorer page on ADDRESS:PORT ("" for neither; port 0 takes
    /// any free port): the same as -s api_listen=... [config default: 127.0.0.1:2609].
    #[arg(long, value_name = "ADDRESS:PORT")]
    api_listen: Option<String>,
    /// Open a pool port on ADDRESS:PORT for workers that only hash ("" for none, the default):
    /// the same as -s pool_listen=...
    #[arg(long, value_name = "ADDRESS:PORT", conflicts_with = "pool")]
    pool_listen: Option<String>,
    /// Be a worker that only hashes, for the node whose pool port is HOST:PORT: no chain, no
    /// store, no peers; the blocks it finds pay --address.
    #[arg(long, value_name = "HOST:PORT", requires = "address", conflicts_with_all = ["benchmark", "reward_address", "reindex"])]
    pool: Option<String>,
    /// With --pool: the address the blocks this worker finds pay.
    #[arg(long, value_name = "ADDRESS", requires = "pool")]
    address: Option<String>,
    /// With --pool: this worker's name on the node (letters, digits, - and _).
    #[arg(
        long,
        value_name = "NAME",
        requires = "pool",
        default_value = "default"
    )]
    worker: String,
    /// With --pool: the node's pool token, if it has one.
    #[arg(long, value_name = "TOKEN", requires = "pool", default_value = "")]
    pool_token: String,
    /// Config overrides as the original took them (`difficulty=16`): the same as `-s KEY=VALUE`,
    /// applied after those.
    #[arg(value_name = "KEY=VALUE")]
    bare_settings: Vec<String>,
    /// Print one JSON object per engine instead of a line of text.
    #[arg(long, requires = "benchmark")]
    json: bool,
    /// For the benchmark's difficulty advice: devices like the one measured in the network.
    #[arg(long, requires = "benchmark", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    network_devices: u32,
    /// For the benchmark's difficulty advice: how long a block announcement takes to reach the
    /// other miners, in milliseconds (about 15 on a LAN, 200 across the internet).
    #[arg(long, requires = "benchmark", default_value_t = 15.0, value_parser = parse_delay)]
    delay_ms: f64,
}

/// A propagation delay: 0.1 ms to one minute.
fn parse_delay(s: &str) -> Result<f64, String> {
    let ms: f64 = s
        .parse()
        .map_err(|_| format!("not a number of milliseconds: {s:?}"))?;
    if (0.1..=60_000.0).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!("{ms} ms is outside 0.1 to 60000"))
    }
}

/// A benchmark length: 0.5 s to one hour.
fn parse_seconds(s: &str) -> Result<f64, String> {
    mvbc_protocol::config::parse_seconds(s, 0.5..=3600.0)
}

fn main() -> ExitCode {
    // Probing adapters makes Mesa's EGL ask libwayland for a display, which prints "error:
    // XDG_RUNTIME_DIR is invalid or not set" twice on a headless host: noise a newcomer reads
    // as a failure. Where the variable is missing, the temporary directory stands in.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: this is the first thing main does: no other thread exists yet to read the
        // environment while it changes.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    let mut cli = Cli::parse();
    let bare = std::mem::take(&mut cli.bare_settings);
    cli.args.settings.extend(bare);
    if let Some(listen) = cli.api_listen.take() {
        cli.args.settings.push(format!("api_listen={listen}"));
    }
    if let Some(listen) = cli.pool_listen.take() {
        cli.args.settings.push(format!("pool_listen={listen}"));
    }
    // Where Mesa is installed but the host has no GPU (no /dev/dri), EGL tries its DRI
    // platform first, fails with an ERROR line from wgpu, then finds the software one: the
    // GL adapter works, so that line only alarms. `RUST_LOG` shows it again.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wgpu_hal::gles::egl=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = if cli.list_devices {
        list_devices(&cli)
    } else if cli.benchmark {
        benchmark(&cli)
    } else if let Some(pool) = &cli.pool {
        work_for(&cli, pool)
    } else {
        run(&cli)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", mvbc_protocol::error_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let config = cli.args.load_config()?;
    let dir = &cli.args.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let path = dir.join(CHAIN_FILE);
    // The store's lock is taken first: a second miner on this directory stops here.
    let loaded = load_chain(&path, config.consensus(), unix_now())?;
    if let Some(r) = &loaded.recovery {
        println!("Recovered {}: {r}", path.display());
    }
    // One line however many: a store of these parameters holds none unless it was damaged.
    if let Some(first) = loaded.refused.first() {
        println!(
            "Skipped {} stored block(s) the rules refuse; the first: {first}",
            loaded.refused.len()
        );
    }
    let named = match &cli.reward_address {
        Some(name_or_address) => Some(resolve_address(dir, name_or_address)?),
        None => None,
    };
    // The engines before the reward key: a device that cannot be had leaves no key behind.
    let selection = select_engines(cli)?;
    let reward_to = match named {
        Some(address) => address,
        None => reward_address(dir, config.key_size)?,
    };
    println!("Mining rewards go to {reward_to}");
    let chain = loaded.chain;
    let stored = match chain.tree_len() - 1 {
        1 => "1 block stored".to_string(),
        n => format!("{n} blocks stored"),
    };
    println!(
        "Chain loaded: height {}, tip {}, {stored}",
        chain.height(),
        chain.tip_hash(),
    );
    let index = driver::open_index(dir, &chain, cli.reindex, |line| println!("{line}"));
    let (engine, meters) = combined(selection, "Mining");
    // Before anything is announced: a Ctrl-C or SIGTERM from then on stops the node cleanly,
    // however early it comes.
    let stopped = stop_on_ctrl_c()?;
    let node = driver::spawn(driver::NodeSetup {
        config,
        chain,
        store: loaded.store,
        index,
        reward_to,
        engine,
        meters,
        data_dir: dir.clone(),
        stop: Some(stopped),
    })?;
    for event in node.events() {
        println!("{event}");
    }
    node.wait()?;
    Ok(ExitCode::SUCCESS)
}

/// The engines selected, as one, after saying what was picked: `Mining on cpu: ...`.
fn combined(
    selection: select::Selection,
    doing: &str,
) -> (Box<dyn MiningEngine>, Option<select::DeviceMeters>) {
    if let Some(note) = &selection.note {
        println!("Devices: {note}");
    }
    if let Some(pick) = &selection.kernel_pick {
        println!("CPU kernel: {pick}");
    }
    let (engine, meters) = selection.combine();
    let info = engine.info();
    println!("{doing} on {}: {}", info.device, info.describe());
    (engine, meters)
}

/// A channel that hears Ctrl-C and SIGTERM.
fn stop_on_ctrl_c() -> Result<crossbeam_channel::Receiver<()>> {
    let (stop, stopped) = crossbeam_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = stop.try_send(());
    })
    .context("installing the Ctrl-C handler")?;
    Ok(stopped)
}

/// `--pool`: a worker that only hashes, for a node's pool port.
fn work_for(cli: &Cli, pool: &str) -> Result<ExitCode> {
    use mvbc_miner::worker::{self, WorkerEvent};
    let given = cli.address.as_deref().unwrap_or_default();
    let address: Address = given
        .parse()
        .with_context(|| format!("--address `{given}` is not an address"))?;
    mvbc_protocol::stratum::check_worker_name(&cli.worker)
        .map_err(|e| anyhow::anyhow!("--worker: {e}"))?;
    anyhow::ensure!(
        !matches!(cli.device, DeviceChoice::None),
        "a worker with --device none would hash nothing"
    );
    let (engine, meters) = combined(select_engines(cli)?, "Hashing");
    println!("Worker {address}.{} for the pool at {pool}", cli.worker);
    let stopped = stop_on_ctrl_c()?;
    let setup = worker::WorkerSetup {
        pool: pool.to_owned(),
        address,
        name: cli.worker.clone(),
        token: cli.pool_token.clone(),
        engine,
        meters,
        stop: stopped,
    };
    worker::run(setup, |event| match event {
        WorkerEvent::Connected { pool, extranonce } => {
            println!("Connected to the pool at {pool} (extranonce {extranonce:04x})")
        }
        WorkerEvent::Job {
            height,
            share_difficulty,
            network_difficulty,
        } => println!(
            "Job: height {height}, shares of {share_difficulty} bits, blocks of {network_difficulty}"
        ),
        WorkerEvent::Idle(why) => println!("Idle: {why}"),
        WorkerEvent::BlockFound { height } => {
            println!(
                "Block found at height {height}: a share at the network's difficulty, sent to the node"
            )
        }
        WorkerEvent::Disconnected { why, retry_in } => println!(
            "Disconnected: {why}; trying again in {} s",
            retry_in.as_secs()
        ),
        WorkerEvent::MiningFailed(why) => {
            println!("Mining failed: {why}; waiting for the next job")
        }
        WorkerEvent::Report(r) => {
            let devices: Vec<String> = r
                .devices
                .iter()
                .map(|(name, rate)| format!("{name} {}", bench::format_rate(*rate)))
                .collect();
            let each = if devices.is_empty() {
                String::new()
            } else {
                format!(" [{}]", devices.join(", "))
            };
            println!(
                "Status: hashing {}{each}, accepted shares worth {}; shares {} accepted, {} rejected, {} stale, {} unsent",
                bench::format_rate(r.hash_rate),
                bench::format_rate(r.share_rate),
                r.accepted,
                r.rejected,
                r.stale,
                r.unsent
            )
        }
    })?;
    println!("Worker stopped");
    Ok(ExitCode::SUCCESS)
}

/// An address (`mvbc1...`), or the address of the local key of that name. A mistyped address
/// or one in the old hex form is refused: rewards paid to it would be lost.
fn resolve_address(dir: &Path, name_or_address: &str) -> Result<Address> {
    if let Some(address) = mvbc_protocol::keys::address_or_name(name_or_address)
        .with_context(|| format!("--reward-address `{name_or_address}`"))?
    {
        return Ok(address);
    }
    keyfile::check_key_name(name_or_address)
        .with_context(|| format!("`{name_or_address}` is neither an address nor a key name"))?;
    let key = keyfile::read_key(dir, name_or_address).with_context(|| {
        format!(
            "`{name_or_address}` is not an address, and not a key in {}",
            dir.display()
        )
    })?;
    Ok(key.address())
}

/// The engines `--device`, `--threads` and `--cpu-kernel` name.
fn select_engines(cli: &Cli) -> Result<select::Selection> {
    let allow_software = std::env::var("MVBC_ALLOW_SOFTWARE_GPU").is_ok_and(|v| v == "1");
    let dir = &cli.args.data_dir;
    let cache = if dir.is_dir() {
        TuneCache::in_dir(dir, cli.retune)
    } else {
        TuneCache {
            path: None,
            retune: cli.retune,
        }
    };
    let selection = select::engines(
        cli.device,
        threads(cli),
        cli.cpu_kernel,
        allow_software,
        &cache,
    )?;
    for line in &selection.tuning {
        eprintln!("GPU tuning: {line}");
    }
    Ok(selection)
}

/// `--list-devices`: each GPU adapter with its `gpu:N`, then the CPU.
fn list_devices(cli: &Cli) -> Result<ExitCode> {
    for adapter in mvbc_miner::gpu::adapters() {
        let info = adapter.info();
        let software = if adapter.is_software() {
            " (software: auto and all pass it over unless MVBC_ALLOW_SOFTWARE_GPU=1)"
        } else {
            ""
        };
        println!(
            "gpu:{}  {}  backend {:?}, type {:?}{software}",
            adapter.index, info.name, info.backend, info.device_type
        );
    }
    let kernels: Vec<&str> = Kernel::available().map(Kernel::key).collect();
    println!(
        "cpu    {} threads; kernels this CPU runs: {}",
        threads(cli),
        kernels.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn threads(cli: &Cli) -> usize {
    cli.threads
        .map_or_else(CpuEngine::default_threads, usize::from)
}

/// `--benchmark`: every device `--device` names, one after the other, then, when there are
/// several, all of them together.
fn benchmark(cli: &Cli) -> Result<ExitCode> {
    anyhow::ensure!(
        !matches!(cli.device, DeviceChoice::None),
        "--device none has nothing to measure"
    );
    let difficulty = cli.args.load_config()?.difficulty;
    let advise = |report: &mut BenchReport| {
        report.blocks = Some(bench::BlockAdvice::new(
            report.hashes_per_second,
            difficulty,
            cli.network_devices,
            cli.delay_ms,
        ));
    };
    let mut selection = select_engines(cli)?;
    if let Some(note) = &selection.note {
        eprintln!("Devices: {note}");
    }
    let seconds = Duration::from_secs_f64(cli.seconds);
    let mut alone = Vec::new();
    for engine in &mut selection.engines {
        let mut report = measure_one(engine.as_mut(), seconds)?;
        advise(&mut report);
        print_report(&report, cli.json)?;
        alone.push(report);
    }
    let mut all_verified = alone.iter().all(|r| r.verified);
    if alone.len() > 1 {
        let (mut engine, meters) = selection.combine();
        let meters = meters.context("several devices have meters")?;
        let counts = |m: &select::DeviceMeters| -> Vec<u64> {
            m.counts
                .iter()
                .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                .collect()
        };
        let before = counts(&meters);
        let mut total = measure_one(engine.as_mut(), seconds)?;
        let done: Vec<u64> = counts(&meters)
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect();
        total.devices = Some(bench::shares(&alone, &done, total.hashes_per_second));
        all_verified &= total.verified;
        advise(&mut total);
        print_report(&total, cli.json)?;
    }
    if !cli.json {
        let fastest = alone
            .iter()
            .map(|r| r.hashes_per_second)
            .fold(0.0, f64::max);
        let advice = bench::Advice::new(fastest, difficulty, cli.network_devices, cli.delay_ms);
        print!("{advice}");
    }
    Ok(if all_verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(r: &BenchReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        println!("{r}");
    }
    Ok(())
}

/// One engine's benchmark, with a live rate on a terminal.
fn measure_one(engine: &mut dyn MiningEngine, seconds: Duration) -> Result<bench::BenchReport> {
    let live = std::io::stderr().is_terminal();
    let info = engine.info();
    let name = format!("{} {}", info.device, info.describe());
    let report = bench::measure(engine, Duration::from_secs(1), seconds, |hashes, took| {
        if live {
            let rate = bench::format_rate(hashes as f64 / took.as_secs_f64());
            eprint!("\r\x1b[K{name}: {rate} ({:.1} s)", took.as_secs_f64());
            let _ = std::io::stderr().flush();
        }
    })?;
    if live {
        eprint!("\r\x1b[K");
    }
    Ok(report)
}

/// Loads `mining_rewards.pem`, creating it on first start.
/// The reward key's address, the key created on first start. Only the address is needed, so
/// a key the user has since encrypted is read by its public half.
fn reward_address(dir: &Path, bits: usize) -> Result<Address> {
    let path = keyfile::key_path(dir, REWARD_KEY_NAME);
    if path.exists() {
        return Ok(keyfile::read_key(dir, REWARD_KEY_NAME)
            .context("loading the reward key")?
            .address());
    }
    let key = KeyPair::generate(bits)?;
    let path = keyfile::save_new_key(dir, REWARD_KEY_NAME, &key, None)?;
    println!(
        "Generated key [{REWARD_KEY_NAME}] with address {}. Key saved in {}",
        key.address(),
        path.display()
    );
    Ok(key.address())
}
