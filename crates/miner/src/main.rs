//! `mvbc-miner`: the mining node. This step opens and checks its data directory; the mining
//! engines (issue 3) and the network (issue 4) build on it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use mvbc_protocol::config::DataDirArgs;
use mvbc_protocol::keyfile;
use mvbc_protocol::store::load_chain;
use mvbc_protocol::{KeyPair, unix_now};

/// The miner's chain store in its data directory.
const CHAIN_FILE: &str = "blocks.dat";
/// The key that receives mining rewards, created on first start.
const REWARD_KEY_NAME: &str = "mining_rewards";

#[derive(Parser)]
#[command(name = "mvbc-miner", version, about = "The mvbc proof-of-work miner")]
struct Cli {
    #[command(flatten)]
    args: DataDirArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let config = cli.args.load_config()?;
    let path = cli.args.data_dir.join(CHAIN_FILE);
    let loaded = load_chain(&path, config.consensus(), unix_now())?;
    if let Some(r) = &loaded.recovery {
        println!("Recovered {}: {r}", path.display());
    }
    let chain = &loaded.chain;
    for e in &loaded.refused {
        println!("Skipped a stored block the rules refuse: {e}");
    }
    let reward_key = reward_key(&cli.args.data_dir, config.key_size)?;
    println!("Mining rewards go to {}", reward_key.address());
    println!(
        "Chain loaded: height {}, tip {}, {} blocks stored",
        chain.height(),
        chain.tip_hash(),
        chain.tree_len() - 1
    );
    eprintln!(
        "mvbc-miner: the mining engines are not built yet (issue 3); stopping after the checks above."
    );
    Ok(ExitCode::from(3))
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
