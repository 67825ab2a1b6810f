//! The miner's start-up on a data directory: config, reward key, chain store recovery, the
//! data directory's lock, and a clean stop on SIGTERM.

use mvbc_testkit::procs;

use std::path::Path;
use std::process::{Command, Output};

use procs::{Miner, Net};

/// Runs the miner to completion (for start-ups that fail).
fn miner(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mvbc-miner"))
        .arg("--data-dir")
        .arg(dir)
        .args(Net::new().settings())
        .args(["--device", "cpu"])
        .args(args)
        .output()
        .expect("run mvbc-miner")
}

#[test]
fn first_start_creates_the_reward_key_and_later_starts_reuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new();
    let first = Miner::start(dir.path(), &net);
    let key = mvbc_protocol::keyfile::load_key(&dir.path().join("mining_rewards.pem")).unwrap();
    let (code, text) = first.stop();
    assert_eq!(code, Some(0), "SIGTERM is a clean stop\n{text}");
    assert!(text.contains("Generated key [mining_rewards]"), "{text}");
    assert!(text.contains("Chain loaded: height 0"), "{text}");
    assert!(
        text.contains(&format!("Mining rewards go to {}", key.address())),
        "{text}"
    );
    assert!(text.contains("Mining on cpu: "), "{text}");
    // The kernel was picked by measurement, and every kernel this CPU runs was measured.
    let measured = text
        .lines()
        .find(|l| l.starts_with("CPU kernel: "))
        .unwrap_or_else(|| panic!("no kernel figures\n{text}"));
    assert!(measured.contains("best of 5 rounds"), "{measured}");
    assert!(measured.contains("portable"), "{measured}");
    assert!(text.contains("Shutting down: height "), "{text}");
    assert!(dir.path().join("cpu-kernel.json").exists());

    let second = Miner::start(dir.path(), &net);
    let (code, text) = second.stop_with("INT");
    assert_eq!(code, Some(0), "Ctrl-C is a clean stop\n{text}");
    assert!(!text.contains("Generated key"), "{text}");
    // The second start reads the pick this CPU measured: no new measurement.
    assert!(text.contains("as measured before on this CPU"), "{text}");
    assert!(
        text.contains(&format!("Mining rewards go to {}", key.address())),
        "{text}"
    );
}

#[test]
fn rewards_can_go_to_a_named_key_or_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new();
    let address = mvbc_protocol::Address(mvbc_protocol::Hash256([0xab; 32])).to_string();
    let running = Miner::start_with(dir.path(), &net, &["--reward-address", &address]);
    let (_, text) = running.stop();
    assert!(
        text.contains(&format!("Mining rewards go to {address}")),
        "{text}"
    );
    assert!(!dir.path().join("mining_rewards.pem").exists());
    let out = miner(dir.path(), &["--reward-address", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`nobody` is not an address"), "{err}");
    // A mistyped address, or one in the old hex form, would lose every reward: refused.
    let mut typo = address.clone().into_bytes();
    typo[30] = if typo[30] == b'q' { b'p' } else { b'q' };
    let typo = String::from_utf8(typo).unwrap();
    for (bad, says) in [
        (typo.as_str(), "checksum does not match"),
        (&"ab".repeat(32), "old-style address"),
    ] {
        let out = miner(dir.path(), &["--reward-address", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn a_second_miner_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new();
    let first = Miner::start(dir.path(), &net);
    let second = miner(dir.path(), &[]);
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    let (code, log) = first.stop();
    assert_eq!(code, Some(0), "the first one is unharmed\n{log}");
}

#[test]
fn a_torn_chain_store_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new();
    procs::store_blocks(&net, dir.path(), &[]);
    let path = dir.path().join("blocks.dat");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2]); // a record header torn mid-write
    std::fs::write(&path, &bytes).unwrap();
    let miner = Miner::start(dir.path(), &net);
    let (_, text) = miner.stop();
    assert!(text.contains("cut 6 bytes"), "{text}");
}

/// Issue 22: a data directory of other rules is refused in a line that names what differs,
/// with a non-zero exit and the store byte for byte as it was; its own rules open it.
#[test]
fn a_data_directory_of_other_rules_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new();
    let key = mvbc_protocol::KeyPair::generate(1024).unwrap();
    procs::store_blocks(&net, dir.path(), &procs::build_chain(&net, &key, 5, 0));
    let path = dir.path().join("blocks.dat");
    let before = mvbc_protocol::hash::sha256(&std::fs::read(&path).unwrap());
    let other = format!("block_size={}", net.block_size + 1);
    let out = miner(dir.path(), &["-s", &other]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let says = format!(
        "holds a chain of block_size {}; the config says block_size {}",
        net.block_size,
        net.block_size + 1
    );
    assert!(err.contains(&says), "{err}");
    assert!(err.lines().count() <= 2, "{err}");
    let after = mvbc_protocol::hash::sha256(&std::fs::read(&path).unwrap());
    assert_eq!(before, after, "the store is untouched");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Skipped"));
    // Under the rules it was made with, the same directory loads its 5 blocks.
    let miner = Miner::start(dir.path(), &net);
    let (_, text) = miner.stop();
    assert!(text.contains("Chain loaded: height 5"), "{text}");
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

#[test]
fn devices_are_listed_without_noise_and_bad_choices_are_named() {
    // As on a headless host: no XDG_RUNTIME_DIR, where Mesa used to print errors.
    let out = Command::new(env!("CARGO_BIN_EXE_mvbc-miner"))
        .arg("--list-devices")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run mvbc-miner");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    let cpu = stdout.lines().last().unwrap_or_default();
    assert!(
        cpu.starts_with("cpu ") && cpu.contains("portable"),
        "{stdout}"
    );
    for line in stdout.lines().filter(|l| l.starts_with("gpu:")) {
        assert!(line.contains("backend"), "{line}");
    }

    let refused = |device: &str| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mvbc-miner"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(Net::new().settings())
            .args(["--device", device])
            .output()
            .expect("run mvbc-miner");
        assert!(!out.status.success(), "--device {device} was taken");
        let key = dir.path().join("mining_rewards.pem");
        assert!(
            !key.exists(),
            "--device {device} was refused after a key was made"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused("tpu");
    assert!(err.contains("`tpu` is not a device"), "{err}");
    let err = refused("gpu:99");
    assert!(err.contains("there is no gpu:99"), "{err}");
}
