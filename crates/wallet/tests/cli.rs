//! The wallet binary as a user runs it, in a temporary data directory.

use std::path::Path;
use std::process::{Command, Output};

use mvbc_protocol::store::BlockStore;
use mvbc_protocol::{Block, Reward, Transaction, genesis_block, keyfile};
use mvbc_wallet::WALLET_CHAIN_FILE;

fn wallet(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mvbc-wallet"))
        .arg("--data-dir")
        .arg(dir)
        .args(["-s", "key_size=1024", "-s", "difficulty=4"])
        .args(args)
        .output()
        .expect("run mvbc-wallet")
}

/// `new-address NAME`, which must succeed.
fn new_address(dir: &Path, name: &str) {
    let out = wallet(dir, &["new-address", name]);
    assert!(out.status.success(), "new-address {name}: {}", stderr(&out));
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn new_address_saves_a_private_key_and_prints_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = wallet(dir.path(), &["new-address", "robs-address"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let path = dir.path().join("robs-address.pem");
    let key = keyfile::load_key(&path).unwrap();
    assert!(
        text.starts_with(&format!(
            "Generated key [robs-address] with address {}.\n",
            key.address()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("Key saved in {}", path.display())),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn an_existing_or_unsafe_name_is_refused_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    new_address(dir.path(), "alice");
    let before = std::fs::read(dir.path().join("alice.pem")).unwrap();
    let again = wallet(dir.path(), &["new-address", "alice"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(dir.path().join("alice.pem")).unwrap(), before);
    for bad in ["../escape", ".hidden", "a/b", ""] {
        let out = wallet(dir.path(), &["new-address", bad]);
        assert!(!out.status.success(), "{bad:?}");
        assert!(
            stderr(&out).contains("invalid key name"),
            "{bad:?}: {}",
            stderr(&out)
        );
    }
    assert!(!dir.path().parent().unwrap().join("escape.pem").exists());
}

/// Writes a wallet chain with one block paying the reward to `key`.
fn chain_paying(dir: &Path, key: &mvbc_protocol::KeyPair) {
    let reward = Transaction::Reward(Reward {
        to: key.address(),
        amount: mvbc_protocol::Amount::from_coins(10).unwrap(),
        height: 1,
    });
    let parent = genesis_block().header;
    let mut block = Block::assemble(&parent, vec![reward], parent.timestamp + 1, 4);
    block.header.solve();
    let params = mvbc_protocol::ConsensusParams {
        difficulty: 4,
        ..mvbc_protocol::Config::default().consensus()
    };
    let mut opened = BlockStore::open(&dir.join(WALLET_CHAIN_FILE), &params).unwrap();
    opened.store.append(&block).unwrap();
}

#[test]
fn list_addresses_shows_confirmed_balances_as_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    new_address(dir.path(), "miner");
    new_address(dir.path(), "alice");
    let miner = keyfile::load_key(&dir.path().join("miner.pem")).unwrap();
    let alice = keyfile::load_key(&dir.path().join("alice.pem")).unwrap();
    chain_paying(dir.path(), &miner);

    let out = wallet(dir.path(), &["list-addresses"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("Key Name"), "{text}");
    assert!(
        lines[2].starts_with("alice") && lines[2].contains(" 0.000000 "),
        "{text}"
    );
    assert!(lines[2].ends_with(&alice.address().to_string()), "{text}");
    assert!(
        lines[3].starts_with("miner") && lines[3].contains(" 10.000000 "),
        "{text}"
    );
    assert!(lines[3].contains("+0.000000"), "{text}");

    let out = wallet(dir.path(), &["list-addresses", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[1]["name"], "miner");
    assert_eq!(v[1]["address"], miner.address().to_string());
    assert_eq!(v[1]["balance"], "10.000000");
    assert_eq!(v[1]["pending"], "0.000000");
    assert_eq!(v[0]["balance"], "0.000000");
}

#[test]
fn no_command_prints_the_usage() {
    let dir = tempfile::tempdir().unwrap();
    let out = wallet(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("new-address <address name>"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_config_key_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = wallet(dir.path(), &["-s", "dificulty=3", "list-addresses"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown config key `dificulty`"),
        "{}",
        stderr(&out)
    );
    std::fs::write(dir.path().join("mvbc.toml"), "key_size = 512\n").unwrap();
    let out = wallet(dir.path(), &["list-addresses"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bad value for `key_size`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn send_refuses_what_it_cannot_pay_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    new_address(dir.path(), "miner");
    let miner = keyfile::load_key(&dir.path().join("miner.pem")).unwrap();
    chain_paying(dir.path(), &miner);
    let to = miner.address().to_string();
    let cases: [(&[&str], &str); 6] = [
        (&["send", "miner", "ten", &to], "bad amount `ten`"),
        (&["send", "miner", "0", &to], "more than zero"),
        (&["send", "miner", "1.0000001", &to], "bad amount"),
        (&["send", "miner", "10.000001", &to], "10.000000 available"),
        (
            &["send", "nobody", "1", &to],
            "`nobody` is not a local address",
        ),
        (
            &["send", "miner", "1", "abc123"],
            "`abc123` is neither an address",
        ),
    ];
    for (args, message) in cases {
        let out = wallet(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    assert!(
        !dir.path().join("wallet-pending.dat").exists(),
        "a refused payment is never stored"
    );
}

/// Issue 22: a typo in an address is caught by its checksum, and nothing is recorded as pending.
#[test]
fn a_mistyped_address_is_refused_and_nothing_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    new_address(dir.path(), "miner");
    let miner = keyfile::load_key(&dir.path().join("miner.pem")).unwrap();
    chain_paying(dir.path(), &miner);
    let payee = mvbc_protocol::Address(mvbc_protocol::hash::sha256(b"payee"));
    let good = payee.to_string();
    let mut wrong = good.clone().into_bytes();
    let at = wrong.len() - 20;
    wrong[at] = if wrong[at] == b'q' { b'p' } else { b'q' };
    let mut swapped = good.clone().into_bytes();
    let at = (10..swapped.len() - 1)
        .find(|&i| swapped[i] != swapped[i + 1])
        .unwrap();
    swapped.swap(at, at + 1);
    let cases = [
        (String::from_utf8(wrong).unwrap(), "checksum does not match"),
        (
            String::from_utf8(swapped).unwrap(),
            "checksum does not match",
        ),
        (good[..good.len() - 1].to_owned(), "checksum does not match"),
        (payee.to_hex(), "list-addresses"),
    ];
    for (to, message) in &cases {
        let out = wallet(dir.path(), &["send", "miner", "1", to]);
        assert_eq!(out.status.code(), Some(1), "{to}: {}", stdout(&out));
        assert!(stderr(&out).contains(message), "{to}: {}", stderr(&out));
        assert!(
            !dir.path().join("wallet-pending.dat").exists(),
            "{to}: a refused payment is never stored"
        );
    }
    // The address as shown is taken, and its payment is pending.
    let out = wallet(dir.path(), &["send", "miner", "1", &good]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("to {good}")),
        "{}",
        stdout(&out)
    );
    assert!(dir.path().join("wallet-pending.dat").exists());
}

#[test]
fn history_lists_an_addresss_confirmed_transactions() {
    let dir = tempfile::tempdir().unwrap();
    new_address(dir.path(), "miner");
    let miner = keyfile::load_key(&dir.path().join("miner.pem")).unwrap();
    chain_paying(dir.path(), &miner);
    let out = wallet(dir.path(), &["history", "miner", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["height"], 1);
    assert_eq!(v[0]["amount"], "+10.000000");
    assert!(v[0]["counterparty"].is_null());
    // Any address may be looked up; one with no transactions has an empty history.
    let out = wallet(dir.path(), &["history", &"ab".repeat(32)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Balance 0.000000 at height 1"),
        "{}",
        stdout(&out)
    );
}

/// Issue 22: a key kept encrypted signs only with its passphrase; its address and balance are
/// listed without it; a wrong or missing passphrase records nothing.
#[test]
fn an_encrypted_key_signs_only_with_the_right_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("right.txt");
    let wrong = dir.path().join("wrong.txt");
    std::fs::write(&right, "correct horse battery\n").unwrap();
    std::fs::write(&wrong, "correct horse\n").unwrap();
    let args = ["new-address", "safe", "--encrypt", "--passphrase-file"];
    let out = wallet(
        dir.path(),
        &[&args[..], &[right.to_str().unwrap()]].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("encrypted under your passphrase"),
        "{}",
        stdout(&out)
    );
    let pem = std::fs::read_to_string(dir.path().join("safe.pem")).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );
    let stored = keyfile::read_key(dir.path(), "safe").unwrap();
    let address = stored.address();
    let key = keyfile::unlock(
        &dir.path().join("safe.pem"),
        "correct horse battery",
        address,
    )
    .unwrap();
    chain_paying(dir.path(), &key);
    let listed = stdout(&wallet(dir.path(), &["list-addresses", "--json"]));
    assert!(listed.contains(&address.to_string()), "{listed}");
    assert!(listed.contains("10.000000"), "{listed}");

    let to = mvbc_protocol::Address(mvbc_protocol::hash::sha256(b"payee")).to_string();
    let send = ["send", "safe", "1", &to, "--passphrase-file"];
    for (args, says) in [
        (
            [&send[..], &[wrong.to_str().unwrap()]].concat(),
            "passphrase does not open",
        ),
        (send[..4].to_vec(), "needs a passphrase"),
    ] {
        let out = wallet(dir.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!dir.path().join("wallet-pending.dat").exists());
    }
    let out = wallet(
        dir.path(),
        &[&send[..], &[right.to_str().unwrap()]].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("wallet-pending.dat").exists());
}

/// Issue 22's papercuts: `--data-dir` after the command, as `--peer` already was; an empty key
/// table says how to make a key; an OS error is said once.
#[test]
fn data_dir_after_the_command_an_empty_table_with_a_hint_and_errors_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mvbc-wallet"))
        .args(["list-addresses", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("new-address NAME` makes one"),
        "{}",
        stdout(&out)
    );
    let missing = dir.path().join("nothing.toml");
    let out = wallet(
        dir.path(),
        &["--config", missing.to_str().unwrap(), "list-addresses"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}
