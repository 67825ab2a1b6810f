//! `mvbc-wallet`: addresses, balances, payments, and following the miners' chain.

mod light;
mod outbox;
mod pending;
mod sync;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mvbc_net::Cancel;
use mvbc_protocol::config::DataDirArgs;
use mvbc_protocol::keyfile::{self, KeyFileError, Stored};
use mvbc_protocol::keys::address_or_name;
use mvbc_protocol::store::read_only_chain;
use mvbc_protocol::{
    Address, Amount, Chain, Config, Hash256, KeyPair, Payment, SignedAmount, Transaction, unix_now,
};

use light::Books;
use pending::{MAX_PENDING, Pending};

use mvbc_wallet::WALLET_CHAIN_FILE;
use mvbc_wallet::report::{HistoryItem, Row};

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
        /// Keep the key encrypted under a passphrase (asked for twice on the terminal, or read
        /// from --passphrase-file); `send` asks for it to sign. Its address stays readable
        /// from NAME.pub.
        #[arg(long)]
        encrypt: bool,
        /// With --encrypt: read the passphrase from the first line of FILE (for scripts).
        #[arg(long, value_name = "FILE", requires = "encrypt")]
        passphrase_file: Option<PathBuf>,
    },
    /// List local addresses with their balances.
    ListAddresses {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pay AMOUNT coins from a local address to an address (or local name); the payment is
    /// kept as pending, broadcast and submitted to any --peer, and `sync` sends it again until
    /// a block holds it.
    Send {
        /// The paying local address: its key name or its address.
        from: String,
        /// Coins, up to six decimal places, e.g. 2.5.
        amount: String,
        /// The receiving address, or the name of a local key.
        to: String,
        /// When the paying key is encrypted: read its passphrase from the first line of FILE
        /// instead of asking on the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Show every confirmed transaction of an address, then this wallet's pending ones.
    History {
        /// A local key's name, or any address.
        address: String,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download the miners' best chain (from miners heard by broadcast and any --peer) and
    /// send pending payments again, until Ctrl-C.
    Sync {
        /// Stop once synced to the best chain heard, after re-broadcasting pending payments once.
        #[arg(long)]
        once: bool,
        /// With --once: give up after this many seconds.
        #[arg(long, default_value_t = 30.0, requires = "once", value_parser = parse_timeout)]
        timeout: f64,
        /// With --once: print the final report as one JSON object.
        #[arg(long, requires = "once")]
        json: bool,
        /// Download and check every block, as a full node does, instead of the headers and
        /// this wallet's own transactions with their proofs. A wallet that synced in full
        /// once stays full.
        #[arg(long)]
        full: bool,
    },
}

/// A timeout: 0.1 s to one day.
fn parse_timeout(s: &str) -> Result<f64, String> {
    mvbc_protocol::config::parse_seconds(s, 0.1..=86_400.0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let Some(command) = cli.command else {
        eprintln!(
            "Usage: mvbc-wallet [--data-dir DIR] [--config FILE] [-s KEY=VALUE]... (new-address <address name> | list-addresses [--json] | send <from address> <amount> <to address> | history <address> [--json] | sync [--full] [--once [--timeout SECONDS] [--json]])"
        );
        eprintln!("Run `mvbc-wallet --help` for details.");
        return ExitCode::from(2);
    };
    let result = cli
        .args
        .load_config()
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            if matches!(command, Command::NewAddress { .. } | Command::Sync { .. }) {
                std::fs::create_dir_all(&cli.args.data_dir).with_context(|| {
                    format!(
                        "creating the data directory {}",
                        cli.args.data_dir.display()
                    )
                })?;
            }
            Ok(config)
        })
        .and_then(|config| match command {
            Command::NewAddress {
                name,
                encrypt,
                passphrase_file,
            } => {
                let passphrase = encrypt
                    .then(|| passphrase(passphrase_file.as_deref(), &name, true))
                    .transpose()?;
                new_address(&cli.args.data_dir, &config, &name, passphrase.as_deref())
            }
            Command::ListAddresses { json } => list_addresses(&cli.args.data_dir, &config, json),
            Command::Send {
                from,
                amount,
                to,
                passphrase_file,
            } => send(
                &cli.args.data_dir,
                &config,
                [&from, &amount, &to],
                passphrase_file.as_deref(),
            ),
            Command::History { address, json } => {
                history(&cli.args.data_dir, &config, &address, json)
            }
            Command::Sync {
                once,
                timeout,
                json,
                full,
            } => sync::sync(
                &cli.args.data_dir,
                &config,
                &sync::SyncOptions {
                    once,
                    timeout: Duration::from_secs_f64(timeout),
                    json,
                    full,
                },
            ),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Stopped short of the best chain heard: its own words, and 130 for Ctrl-C as shells
        // report SIGINT.
        Err(e) if e.downcast_ref::<sync::Unfinished>().is_some() => {
            eprintln!("{e}");
            match e.downcast_ref::<sync::Unfinished>() {
                Some(u) if u.interrupted => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            }
        }
        Err(e) => {
            eprintln!("error: {}", mvbc_protocol::error_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn new_address(dir: &Path, config: &Config, name: &str, passphrase: Option<&str>) -> Result<()> {
    keyfile::check_key_name(name)?;
    if keyfile::key_path(dir, name).exists() {
        bail!(KeyFileError::Exists(name.to_owned()));
    }
    let key = KeyPair::generate(config.key_size)?;
    let path = keyfile::save_new_key(dir, name, &key, passphrase)?;
    println!("Generated key [{name}] with address {}.", key.address());
    if passphrase.is_some() {
        println!(
            "Key saved in {}, encrypted under your passphrase (its address in {}). Back up \
             the file and remember the passphrase: without it the coins cannot be spent.",
            path.display(),
            keyfile::public_path(dir, name).display()
        );
    } else {
        println!("Key saved in {}", path.display());
    }
    Ok(())
}

/// Longest passphrase file read.
const MAX_PASSPHRASE_FILE: u64 = 4096;

/// A passphrase for key `name`: the first line of `file`, or asked on the terminal without
/// echo (twice when `confirm`, for a new key). Never empty.
fn passphrase(file: Option<&Path>, name: &str, confirm: bool) -> Result<String> {
    let phrase = match file {
        Some(file) => {
            let bytes = mvbc_protocol::fsutil::read_capped(file, MAX_PASSPHRASE_FILE)
                .with_context(|| format!("reading the passphrase from {}", file.display()))?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", file.display()))?;
            text.lines().next().unwrap_or_default().to_owned()
        }
        None if std::io::stdin().is_terminal() => {
            let phrase = rpassword::prompt_password(format!("Passphrase for key [{name}]: "))
                .context("reading the passphrase")?;
            if confirm {
                let again = rpassword::prompt_password("The same passphrase again: ")
                    .context("reading the passphrase")?;
                if again != phrase {
                    bail!("the two passphrases differ; nothing was saved");
                }
            }
            phrase
        }
        None => bail!(
            "key [{name}] needs a passphrase: run this on a terminal, or name a file holding \
             it with --passphrase-file FILE"
        ),
    };
    if phrase.is_empty() {
        bail!("an empty passphrase protects nothing; give one");
    }
    Ok(phrase)
}

fn list_addresses(dir: &Path, config: &Config, json: bool) -> Result<()> {
    let ledger = Known::load(dir, config)?;
    let pending = unconfirmed(dir, &ledger)?;
    let mut rows = Vec::new();
    for (name, key) in local_keys(dir)? {
        let address = key.address();
        let net: SignedAmount = pending.iter().map(|p| p.effect_on(&address)).sum();
        rows.push((name, address, ledger.balance(&address), net));
    }
    if json {
        let items: Vec<Row> = rows
            .into_iter()
            .map(|(name, address, balance, pending)| Row {
                name,
                address: address.to_string(),
                balance: balance.to_string(),
                pending: pending.to_string(),
            })
            .collect();
        println!("{}", serde_json::to_string(&items)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "No keys in {}: `mvbc-wallet --data-dir {} new-address NAME` makes one.",
            dir.display(),
            dir.display()
        );
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
        "-".repeat(mvbc_protocol::keys::ADDRESS_LEN)
    );
    for (name, address, balance, pending) in rows {
        println!("{name:<16} {balance:>16} {pending:>+16} {address}");
    }
    Ok(())
}

/// What the wallet knows of the chain, read without taking it from a running `sync`: the
/// whole chain when it synced in full, else a light wallet's proven books (empty before the
/// first sync).
enum Known {
    Full(Box<Chain>),
    Light(Books),
}

impl Known {
    fn load(dir: &Path, config: &Config) -> Result<Known> {
        if dir.join(WALLET_CHAIN_FILE).exists() {
            return Ok(Known::Full(Box::new(load_chain_copy(dir, config)?)));
        }
        let network = config.consensus().network_id();
        Ok(Known::Light(
            Books::read(dir, network)?.unwrap_or_else(|| Books::new(network)),
        ))
    }

    fn balance(&self, address: &Address) -> Amount {
        match self {
            Known::Full(chain) => chain.ledger().balance(address),
            Known::Light(books) => books.balance(address),
        }
    }

    fn is_confirmed(&self, id: &Hash256) -> bool {
        match self {
            Known::Full(chain) => chain.ledger().is_confirmed(id),
            Known::Light(books) => books.confirmed_at(id).is_some(),
        }
    }

    fn height(&self) -> u64 {
        match self {
            Known::Full(chain) => chain.height(),
            Known::Light(books) => books.height,
        }
    }
}

/// The wallet's chain copy, read without taking it from a running `sync`.
fn load_chain_copy(dir: &Path, config: &Config) -> Result<Chain> {
    let path = dir.join(WALLET_CHAIN_FILE);
    let (chain, refused) = read_only_chain(&path, config.consensus(), unix_now())?;
    if let Some(first) = refused.first() {
        eprintln!(
            "warning: {}: skipped {} stored block(s) the rules refuse; the first: {first}",
            path.display(),
            refused.len()
        );
    }
    Ok(chain)
}

/// `history`: every confirmed transaction that touched an address (a local name or any
/// address: the chain is public), oldest first, then this wallet's pending payments.
fn history(dir: &Path, config: &Config, who: &str, json: bool) -> Result<()> {
    // Looking up is not paying: the old hex form is read here too.
    let address = match Address::parse_lookup(who) {
        Ok(a) => a,
        Err(_) => local_keys(dir)?
            .into_iter()
            .find(|(name, _)| name == who)
            .map(|(_, key)| key.address())
            .with_context(|| format!("`{who}` is not an address nor a local key name"))?,
    };
    let known = Known::load(dir, config)?;
    let mut items = Vec::new();
    let mut note = |height, tx: &Transaction| {
        let Some((units, counterparty)) = tx.touches(&address) else {
            return;
        };
        items.push(HistoryItem {
            height,
            id: tx.id().to_string(),
            amount: format!("{units:+}"),
            counterparty: counterparty.map(|a| a.to_string()),
        });
    };
    match &known {
        Known::Full(chain) => {
            for height in 1..=chain.height() {
                let block = chain
                    .block_at(height)?
                    .context("the chain lost a block below its tip")?;
                for tx in &block.transactions {
                    note(Some(height), tx);
                }
            }
        }
        Known::Light(books) if books.follows(&address) => {
            for (height, tx) in books.history(&address) {
                note(Some(height), tx);
            }
        }
        Known::Light(_) => bail!(
            "this light wallet has not proven the history of {address}: it keeps only its own \
             addresses' (run `mvbc-wallet sync` after adding a key), or the whole chain after \
             `mvbc-wallet sync --full`"
        ),
    }
    for p in unconfirmed(dir, &known)? {
        note(None, &Transaction::Payment(p));
    }
    if json {
        println!("{}", serde_json::to_string(&items)?);
        return Ok(());
    }
    println!(
        "{:>8} {:>16} {:<64} Counterparty",
        "Height", "Amount", "Transaction"
    );
    for item in &items {
        let height = item.height.map_or("pending".to_string(), |h| h.to_string());
        let other = item.counterparty.as_deref().unwrap_or("block reward");
        println!("{height:>8} {:>16} {:<64} {other}", item.amount, item.id);
    }
    println!(
        "Balance {} at height {}",
        known.balance(&address),
        known.height()
    );
    Ok(())
}

/// Every local key, by name.
/// Every key of the data directory by name; encrypted ones by their address alone.
fn local_keys(dir: &Path) -> Result<Vec<(String, Stored)>> {
    keyfile::list_key_names(dir)?
        .into_iter()
        .map(|name| {
            let key =
                keyfile::read_key(dir, &name).with_context(|| format!("reading key {name:?}"))?;
            Ok((name, key))
        })
        .collect()
}

/// This wallet's payments that `ledger` does not hold yet.
fn unconfirmed(dir: &Path, ledger: &Known) -> Result<Vec<Payment>> {
    let mut payments = Pending::read(dir)?;
    payments.retain(|p| !ledger.is_confirmed(&p.id()));
    Ok(payments)
}

/// `send FROM AMOUNT TO`: checks, signs (asking for the paying key's passphrase when it is
/// encrypted), stores as pending (atomically, under the wallet lock), broadcasts.
fn send(
    dir: &Path,
    config: &Config,
    [from, amount, to]: [&str; 3],
    passphrase_file: Option<&Path>,
) -> Result<()> {
    let amount: Amount = amount
        .parse()
        .with_context(|| format!("bad amount `{amount}`"))?;
    if amount.is_zero() {
        bail!("the amount must be more than zero");
    }
    let keys = local_keys(dir)?;
    let (from_name, key) = keys
        .iter()
        .find(|(name, key)| name == from || key.address().to_string() == from)
        .with_context(|| {
            format!(
                "`{from}` is not a local address (see `mvbc-wallet list-addresses`); \
                 only a key in {} can pay",
                dir.display()
            )
        })?;
    let to_address = match address_or_name(to).with_context(|| format!("`{to}`"))? {
        Some(a) => a,
        None => match keys.iter().find(|(name, _)| name == to) {
            Some((_, k)) => k.address(),
            None => bail!(
                "`{to}` is neither an address (`mvbc1...`) nor a local key name \
                 (see `mvbc-wallet list-addresses`)"
            ),
        },
    };
    // Asked before the wallet's lock is taken: a person typing holds nothing up.
    let unlocked;
    let key = match key {
        Stored::Open(key) => key,
        Stored::Encrypted { address, path } => {
            let phrase = passphrase(passphrase_file, from_name, false)?;
            unlocked = keyfile::unlock(path, &phrase, *address)
                .with_context(|| format!("key [{from_name}]"))?;
            &unlocked
        }
    };
    let ledger = Known::load(dir, config)?;
    let mut pending = Pending::open(dir)?;
    if pending.payments.len() >= MAX_PENDING {
        bail!(
            "{MAX_PENDING} payments are pending or newly confirmed; run `mvbc-wallet sync` \
             until some are settled"
        );
    }
    let from_address = key.address();
    let balance = ledger.balance(&from_address);
    // Confirmed payments are in the balance already; only the others are spoken for.
    let spent = pending
        .payments
        .iter()
        .filter(|p| p.from == from_address && !ledger.is_confirmed(&p.id()))
        .try_fold(Amount::ZERO, |sum, p| sum.checked_add(p.amount))
        .context("pending payments overflow")?;
    let available = balance.checked_sub(spent).unwrap_or(Amount::ZERO);
    if amount > available {
        bail!(
            "{from_name} has {available} available (balance {balance}, pending payments {spent}); \
             cannot send {amount}"
        );
    }
    let payment = Payment::new_signed(key, to_address, amount, unix_now());
    let id = payment.id();
    pending.payments.push(payment.clone());
    pending.save()?;
    drop(pending);
    let out = outbox::Outbox::new(config)?;
    let went = out.send(&payment, &Cancel::never())?;
    println!("Payment {id}: {amount} from {from_name} to {to_address}");
    if went.is_empty() {
        println!(
            "Pending until a block holds it; no node could be reached now. `mvbc-wallet sync` \
             sends it again."
        );
    } else {
        println!(
            "Pending until a block holds it; {}. `mvbc-wallet sync` re-broadcasts it.",
            went.join(", ")
        );
    }
    Ok(())
}
