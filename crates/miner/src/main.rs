//! `mvbc-miner`: the mining node (see `node`), and `--benchmark`, which measures the engines.

mod node;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use mvbc_miner::CpuEngine;
use mvbc_miner::bench::{self, BenchReport};
use mvbc_miner::cpu::Kernel;
use mvbc_miner::engine::{DeviceKind, EngineInfo};
use mvbc_miner::select::{self, DeviceChoice, KernelChoice};
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
    /// Where to search nonces: `auto` takes a hardware GPU when wgpu finds one, else the CPU.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// CPU engine threads [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// The CPU engine's kernel: `auto` measures each one this CPU runs at start (0.3 s) and
    /// takes the fastest.
    #[arg(long, value_enum, default_value_t = KernelChoice::Auto)]
    cpu_kernel: KernelChoice,
    /// Pay mining rewards to this address, or to the local key of this name, instead of the
    /// `mining_rewards` key (created on first start).
    #[arg(long, value_name = "NAME|ADDRESS")]
    reward_address: Option<String>,
    /// Measure each engine's hash rate on a synthetic block instead of mining (no network, no
    /// data directory).
    #[arg(long)]
    benchmark: bool,
    /// How long to measure each engine, after a one-second warm-up.
    #[arg(long, requires = "benchmark", default_value_t = 10.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Print one JSON object per engine instead of a line of text.
    #[arg(long, requires = "benchmark")]
    json: bool,
}

/// A benchmark length: 0.5 s to one hour.
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.5..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds from 0.5 to 3600")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = if cli.benchmark {
        benchmark(&cli)
    } else {
        run(&cli)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
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
    for e in &loaded.refused {
        println!("Skipped a stored block the rules refuse: {e}");
    }
    let reward_to = match &cli.reward_address {
        Some(name_or_address) => resolve_address(dir, name_or_address)?,
        None => reward_key(dir, config.key_size)?.address(),
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
    let mut selection = select::mining_engine(cli.device, threads(cli), cli.cpu_kernel)?;
    if let Some(note) = &selection.note {
        println!("Device auto: {note}");
    }
    let engine = selection
        .engines
        .pop()
        .context("no mining engine available")?;
    let info = engine.info();
    if info.device == DeviceKind::Cpu && cli.cpu_kernel == KernelChoice::Auto {
        println!("CPU kernels measured on one thread: {}", measured_kernels());
    }
    println!("Mining on {}: {}", info.device, describe(&info));
    node::run(node::NodeSetup {
        config,
        chain,
        store: loaded.store,
        reward_to,
        engine,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// An address given as 64 hex digits, or the address of the local key of that name.
fn resolve_address(dir: &Path, name_or_address: &str) -> Result<Address> {
    if let Ok(address) = name_or_address.parse::<Address>() {
        return Ok(address);
    }
    keyfile::check_key_name(name_or_address)
        .with_context(|| format!("`{name_or_address}` is neither an address nor a key name"))?;
    let path = keyfile::key_path(dir, name_or_address);
    let key = keyfile::load_key(&path).with_context(|| {
        format!(
            "`{name_or_address}` is not an address, and not a key in {}",
            dir.display()
        )
    })?;
    Ok(key.address())
}

/// "sha-ni x3, 2 threads" for the CPU; the adapter and backend for a GPU.
fn describe(info: &EngineInfo) -> String {
    match info.device {
        DeviceKind::Cpu if info.threads == 1 => format!("{}, 1 thread", info.adapter),
        DeviceKind::Cpu => format!("{}, {} threads", info.adapter, info.threads),
        DeviceKind::Gpu => info.adapter.clone(),
    }
}

fn threads(cli: &Cli) -> usize {
    cli.threads
        .map_or_else(CpuEngine::default_threads, usize::from)
}

/// "avx512 x16 61.2 MH/s, sha-ni x3 54.0 MH/s, ...", fastest first.
fn measured_kernels() -> String {
    Kernel::measured()
        .iter()
        .map(|(k, rate)| format!("{} {}", k.name(), bench::format_rate(*rate)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--benchmark`: every engine `--device` names, one after the other.
fn benchmark(cli: &Cli) -> Result<ExitCode> {
    let mut selection = select::engines(cli.device, threads(cli), cli.cpu_kernel)?;
    if let Some(note) = &selection.note {
        eprintln!("Device auto: {note}");
    }
    let seconds = Duration::from_secs_f64(cli.seconds);
    let live = std::io::stderr().is_terminal();
    let mut all_verified = true;
    for engine in &mut selection.engines {
        let info = engine.info();
        let name = format!("{} {}", info.device, describe(&info));
        let report = bench::measure(
            engine.as_mut(),
            Duration::from_secs(1),
            seconds,
            |hashes, took| {
                if live {
                    let rate = bench::format_rate(hashes as f64 / took.as_secs_f64());
                    eprint!("\r\x1b[K{name}: {rate} ({:.1} s)", took.as_secs_f64());
                    let _ = std::io::stderr().flush();
                }
            },
        )?;
        if live {
            eprint!("\r\x1b[K");
        }
        all_verified &= report.verified;
        print_report(&report, cli.json)?;
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
        let info = EngineInfo {
            device: r.device,
            adapter: r.adapter.clone(),
            threads: r.threads,
        };
        println!(
            "{} {}: {} hashes in {:.2} s = {}, solved block {}",
            r.device,
            describe(&info),
            r.hashes,
            r.seconds,
            bench::format_rate(r.hashes_per_second),
            if r.verified {
                "verified on the CPU"
            } else {
                "FAILED the CPU check"
            }
        );
    }
    Ok(())
}

/// Loads `mining_rewards.pem`, creating it on first start.
fn reward_key(dir: &Path, bits: usize) -> Result<KeyPair> {
    let path = keyfile::key_path(dir, REWARD_KEY_NAME);
    if path.exists() {
        return keyfile::load_key(&path).context("loading the reward key");
    }
    let key = KeyPair::generate(bits)?;
    let path = keyfile::save_new_key(dir, REWARD_KEY_NAME, &key)?;
    println!(
        "Generated key [{REWARD_KEY_NAME}] with address {}. Key saved in {}",
        key.address(),
        path.display()
    );
    Ok(key)
}
