//! `mvbc-wallet`: addresses, balances and (with the network issue) payments.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mvbc_protocol::config::DataDirArgs;
use mvbc_protocol::keyfile::{self, KeyFileError};
use mvbc_protocol::store::load_chain;
use mvbc_protocol::{Amount, Config, KeyPair, Ledger, unix_now};

/// The wallet keeps its own copy of the chain here, apart from a miner's `blocks.dat`, so a
/// wallet and a miner can share a data directory (and its keys).
const WALLET_CHAIN_FILE: &str = "wallet-blocks.dat";

#[derive(Parser)]
#[command(
    name = "mvbc-wallet",
    version,
    about = "The mvbc wallet: addresses, balances, payments"
)]
struct Cli {
    #[command(flatten)]
    args: DataDirArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new address: an RSA key saved as NAME.pem (mode 0600).
    NewAddress {
        /// A local name for the address (letters, digits, '-', '_', '.').
        name: String,
    },
    /// List local addresses with their balances.
    ListAddresses {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        eprintln!(
            "Usage: mvbc-wallet [--data-dir DIR] [--config FILE] [-s KEY=VALUE]... (new-address <address name> | list-addresses [--json])"
        );
        eprintln!("Run `mvbc-wallet --help` for details.");
        return ExitCode::from(2);
    };
    let result = cli
        .args
        .load_config()
        .map_err(anyhow::Error::from)
        .and_then(|config| match command {
            Command::NewAddress { name } => new_address(&cli.args.data_dir, &config, &name),
            Command::ListAddresses { json } => list_addresses(&cli.args.data_dir, &config, json),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn new_address(dir: &Path, config: &Config, name: &str) -> Result<()> {
    keyfile::check_key_name(name)?;
    if keyfile::key_path(dir, name).exists() {
        bail!(KeyFileError::Exists(name.to_owned()));
    }
    let key = KeyPair::generate(config.key_size)?;
    let path = keyfile::save_new_key(dir, name, &key)?;
    println!("Generated key [{name}] with address {}.", key.address());
    println!("Key saved in {}", path.display());
    Ok(())
}

#[derive(serde::Serialize)]
struct Row {
    name: String,
    address: String,
    /// Confirmed balance, six decimal places.
    balance: String,
    /// Net effect of this wallet's unconfirmed payments, six decimal places, signed.
    pending: String,
}

/// A signed net amount of base units as text with six decimal places: `-1.500000`.
fn signed_amount(net_units: i128, plus: bool) -> String {
    let abs = Amount::from_units(u64::try_from(net_units.unsigned_abs()).unwrap_or(u64::MAX));
    match (net_units < 0, plus) {
        (true, _) => format!("-{abs}"),
        (false, true) => format!("+{abs}"),
        (false, false) => abs.to_string(),
    }
}

fn list_addresses(dir: &Path, config: &Config, json: bool) -> Result<()> {
    let ledger = load_ledger(dir, config)?;
    let mut rows = Vec::new();
    for name in keyfile::list_key_names(dir)? {
        let path = keyfile::key_path(dir, &name);
        let key = keyfile::load_key(&path).with_context(|| format!("reading key {name:?}"))?;
        // Pending payments arrive with `send` (the network issue): nothing is pending yet.
        let pending_units = 0;
        rows.push((
            name,
            key.address(),
            ledger.balance(&key.address()),
            pending_units,
        ));
    }
    if json {
        let items: Vec<Row> = rows
            .into_iter()
            .map(|(name, address, balance, pending)| Row {
                name,
                address: address.to_string(),
                balance: balance.to_string(),
                pending: signed_amount(pending, false),
            })
            .collect();
        println!("{}", serde_json::to_string(&items)?);
        return Ok(());
    }
    println!(
        "{:<16} {:>16} {:>16} Address",
        "Key Name", "Balance", "Pending"
    );
    println!(
        "{} {} {} {}",
        "-".repeat(16),
        "-".repeat(16),
        "-".repeat(16),
        "-".repeat(64)
    );
    for (name, address, balance, pending) in rows {
        println!(
            "{name:<16} {balance:>16} {:>16} {address}",
            signed_amount(pending, true)
        );
    }
    Ok(())
}

/// The confirmed ledger of the wallet's own chain copy.
fn load_ledger(dir: &Path, config: &Config) -> Result<Ledger> {
    let path = dir.join(WALLET_CHAIN_FILE);
    if !path.exists() {
        return Ok(Ledger::default());
    }
    let loaded = load_chain(&path, config.consensus(), unix_now())?;
    if let Some(r) = &loaded.recovery {
        eprintln!("warning: recovered {}: {r}", path.display());
    }
    for e in &loaded.refused {
        eprintln!("warning: {}: skipped a stored block: {e}", path.display());
    }
    Ok(loaded.chain.ledger().clone())
}
