//! The miner's start-up on a data directory: config, reward key, chain store recovery.

use std::path::Path;
use std::process::{Command, Output};

fn miner(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mvbc-miner"))
        .arg("--data-dir")
        .arg(dir)
        .args(["-s", "key_size=1024", "--device", "cpu"])
        .args(args)
        .output()
        .expect("run mvbc-miner")
}

#[test]
fn first_start_creates_the_reward_key_and_later_starts_reuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = miner(dir.path(), &[]);
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(text.contains("Generated key [mining_rewards]"), "{text}");
    assert!(text.contains("Chain loaded: height 0"), "{text}");
    let key = mvbc_protocol::keyfile::load_key(&dir.path().join("mining_rewards.pem")).unwrap();
    assert!(
        text.contains(&format!("Mining rewards go to {}", key.address())),
        "{text}"
    );
    // It names the engine it would mine on (CPU here: the cpu device is forced).
    assert!(text.contains("Mining on cpu: "), "{text}");
    // Honest about what is missing: no node loop yet, so a non-zero status.
    assert_eq!(first.status.code(), Some(3));

    let second = miner(dir.path(), &[]);
    let text = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(!text.contains("Generated key"), "{text}");
    assert!(
        text.contains(&format!("Mining rewards go to {}", key.address())),
        "{text}"
    );
}

#[test]
fn a_torn_chain_store_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = mvbc_protocol::store::STORE_MAGIC.to_vec();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2]); // a record header torn mid-write
    std::fs::write(dir.path().join("blocks.dat"), &bytes).unwrap();
    let out = miner(dir.path(), &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("cut 6 bytes"), "{text}");
    assert_eq!(
        std::fs::metadata(dir.path().join("blocks.dat"))
            .unwrap()
            .len(),
        8
    );
}

#[test]
fn a_bad_setting_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = miner(dir.path(), &["-s", "difficulty=0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad value for `difficulty`"), "{err}");
    assert!(
        !dir.path().join("blocks.dat").exists(),
        "nothing written on a config error"
    );
}
