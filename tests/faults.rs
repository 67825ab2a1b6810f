//! Faults at the edges: a disk that fills up under a running miner, a data directory that
//! turns read-only. Each gives a clear error and leaves the chain store whole.
//!
//! These mount small tmpfs filesystems, which needs root (CI runs as root and sets
//! `MVBC_REQUIRE_ROOT=1`, which turns "not root" into a failure).

use mvbc_testkit::procs;
use mvbc_testkit::rng::TestRng;

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use mvbc_net::Broadcaster;
use mvbc_protocol::store::{BlockStore, rebuild_chain};
use mvbc_protocol::wire::Datagram;
use mvbc_protocol::{Amount, Payment, keyfile, unix_now};
use procs::*;
use tempfile::tempdir;

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// A tmpfs of `bytes` mounted on `path`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, bytes: usize) -> Tmpfs {
        let options = CString::new(format!("size={bytes}")).unwrap();
        let fstype = CString::new("tmpfs").unwrap();
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                c_path(path).as_ptr(),
                fstype.as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Tmpfs(path.to_owned())
    }

    fn remount_read_only(&self) {
        // SAFETY: as above; source and type are ignored on a remount.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                c_path(&self.0).as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "remount: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: a valid path; MNT_DETACH unmounts even if something still holds a file.
        unsafe { libc::umount2(c_path(&self.0).as_ptr(), libc::MNT_DETACH) };
    }
}

/// A miner whose data directory is a fresh tmpfs of `bytes`, once it has mined block 1. The
/// temporary folder holding the mount point is returned to be kept until the end.
fn miner_on_tmpfs(bytes: usize) -> (tempfile::TempDir, PathBuf, Tmpfs, Net, Miner) {
    let top = tempdir().unwrap();
    let data = top.path().join("data");
    fs::create_dir(&data).unwrap();
    let disk = Tmpfs::mount(&data, bytes);
    let net = Net::new();
    let mut miner = Miner::start(&data, &net);
    miner.wait_height(1);
    (top, data, disk, net, miner)
}

/// Fills the filesystem holding `dir`, then frees one page: room for a few more blocks.
fn fill_but_a_page(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&filler)
        .unwrap();
    while f.write_all(&[0xaa; 4096]).is_ok() {}
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(4096)).unwrap();
    filler
}

#[test]
fn a_full_disk_stops_the_miner_with_a_clear_error_and_leaves_its_store_whole() {
    if !is_root("a_full_disk_stops_the_miner", "mounting a tmpfs") {
        return;
    }
    let (_top, data, _disk, net, mut miner) = miner_on_tmpfs(64 * 1024);
    let filler = fill_but_a_page(&data);

    // Far more payments than the disk has room for blocks.
    let key = keyfile::load_key(&data.join("mining_rewards.pem")).unwrap();
    let out = Broadcaster::new(Ipv4Addr::new(127, 255, 255, 255), net.transaction_port).unwrap();
    for i in 0..60 {
        let p = Payment::new_signed(&key, key.address(), Amount::from_units(1), unix_now() + i);
        out.send(&Datagram::Payment(p)).unwrap();
    }
    assert_eq!(miner.wait_exit(), Some(1), "{}", miner.log());
    let log = miner.log();
    assert!(log.contains("cannot write the chain store"), "{log}");
    assert!(log.contains("No space left on device"), "{log}");

    // The store holds whole records only, and they make a valid chain.
    let opened = BlockStore::open(&data.join("blocks.dat"), &net.params()).unwrap();
    assert!(opened.recovery.is_none(), "{:?}", opened.recovery);
    let stored = opened.blocks.len();
    assert!(stored >= 2, "it mined on until the disk was full");
    let (chain, refused) = rebuild_chain(net.params(), opened.blocks, unix_now());
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(chain.height() as usize, stored);
    drop(opened.store);

    // With room again, it starts from there.
    fs::remove_file(filler).unwrap();
    let miner = Miner::start(&data, &net);
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains(&format!("Chain loaded: height {stored},")),
        "{log}"
    );
}

#[test]
fn a_read_only_data_directory_is_a_clear_error_and_the_wallet_still_reads_it() {
    if !is_root("a_read_only_data_directory", "mounting a tmpfs") {
        return;
    }
    let (_top, data, disk, net, miner) = miner_on_tmpfs(1024 * 1024);
    let (code, log) = miner.stop();
    assert_eq!(code, Some(0), "{log}");
    disk.remount_read_only();

    let out = std::process::Command::new(miner_bin())
        .arg("--data-dir")
        .arg(&data)
        .args(net.settings())
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(err.contains("blocks.dat"), "names the file: {err}");

    // Looking needs no writing: the wallet lists the directory's keys.
    let rows = balances(&data, &net);
    assert_eq!(rows[0].name, "mining_rewards");
    let refused = wallet(&data, &net, &["new-address", "bob"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn sigkill_at_random_moments_loses_no_stored_block_and_no_pending_payment() {
    let seed = 0x00c0_ffee;
    let mut rng = TestRng::new(seed);
    let net = Net::with_difficulty(16);
    let (a, b) = (tempdir().unwrap(), tempdir().unwrap());
    let mut miner_a = Miner::start(a.path(), &net);
    miner_a.wait_height(1);
    let mut miner_b = Miner::start(b.path(), &net);
    miner_b.wait_height(1);
    sync_once(a.path(), &net);
    let mut sent = Vec::new();
    let mut kills = (0, 0);
    for _ in 0..12 {
        // A payment, and one send in three killed part-way.
        let args = ["send", "mining_rewards", "0.000001", "mining_rewards"];
        let mut send = Proc::spawn(&wallet_bin(), a.path(), &net, &args);
        if rng.next().is_multiple_of(3) {
            thread::sleep(Duration::from_millis(rng.next() % 40));
            send.signal("KILL");
            kills.0 += 1;
        }
        if send.wait_exit() == Some(0) {
            let line = send.lines(|l| l.starts_with("Payment "));
            sent.push(
                line[0]
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .trim_end_matches(':')
                    .to_string(),
            );
        }
        // A miner killed at a random moment: mining, storing, announcing, downloading or
        // switching branches, whatever it was doing.
        thread::sleep(Duration::from_millis(rng.next() % 30));
        let (dir, miner) = if rng.next().is_multiple_of(2) {
            (a.path(), &mut miner_a)
        } else {
            (b.path(), &mut miner_b)
        };
        let before = stored_chain(dir, &net).height();
        miner.kill9_and_restart(&net);
        kills.1 += 1;
        let loaded = miner.lines(|l| l.starts_with("Chain loaded:"));
        assert_eq!(loaded.len(), 1, "it starts again");
        assert!(
            stored_chain(dir, &net).height() >= before,
            "seed {seed:#x}: a stored block was lost\n{}",
            miner.log()
        );
    }
    // Every payment `send` finished is still pending or confirmed: the wallet's re-broadcasts
    // get each one mined, once.
    let report = sync_until_confirmed(a.path(), &net);
    assert!(report.pending.is_empty());
    converge(&mut [&mut miner_a, &mut miner_b]);
    sync_until_confirmed(a.path(), &net);
    let history = wallet_ok(a.path(), &net, &["history", "mining_rewards", "--json"]);
    let history: Vec<serde_json::Value> = serde_json::from_str(history.trim()).unwrap();
    for id in &sent {
        let times = history.iter().filter(|h| h["id"] == id.as_str()).count();
        assert_eq!(
            times, 1,
            "seed {seed:#x}: payment {id} confirmed {times} times"
        );
    }
    eprintln!(
        "chaos: {} sends killed, {} miners killed, {} payments confirmed once each",
        kills.0,
        kills.1,
        sent.len()
    );
}

/// The index of the chain survives a SIGKILL, a damaged file and a deleted one: each time the
/// next start brings it up to the stored chain (or makes it anew), and the API finds every
/// reward where the chain has it.
#[test]
fn after_sigkill_or_a_damaged_or_deleted_index_lookups_answer_as_the_chain_does() {
    let net = Net {
        block_size: 1,
        ..Net::with_difficulty(12)
    };
    let dir = tempdir().unwrap();
    let index = dir.path().join(mvbc_protocol::index::INDEX_FILE);
    let mut miner = Miner::start(dir.path(), &net);
    miner.wait_height(25);
    for harm in ["SIGKILL while mining", "damaged", "deleted"] {
        miner.signal("KILL");
        let _ = miner.wait_exit();
        match harm {
            "damaged" => fs::write(&index, vec![0x5a; 64 << 10]).unwrap(),
            "deleted" => fs::remove_file(&index).unwrap(),
            _ => {}
        }
        let chain = stored_chain(dir.path(), &net);
        miner = Miner::start(dir.path(), &net);
        if harm != "SIGKILL while mining" {
            assert_eq!(
                miner.lines(|l| l.starts_with("Index: made anew")).len(),
                1,
                "{harm}\n{}",
                miner.log()
            );
        }
        let mut rewarded = None;
        for height in 1..=chain.height() {
            let block = chain.block_at(height).unwrap().unwrap();
            let reward = &block.transactions[0];
            let found = miner.get(&format!("tx/{}", reward.id()));
            assert_eq!(found["status"], "confirmed", "{harm}: {found}");
            assert_eq!(found["block"]["height"], height, "{harm}: {found}");
            if let mvbc_protocol::Transaction::Reward(r) = reward {
                rewarded = Some(r.to);
            }
        }
        let page = miner.get(&format!("address/{}?limit=3", rewarded.unwrap()));
        assert!(
            page["history"]["total"].as_u64().unwrap() >= chain.height(),
            "{harm}: {page}"
        );
        let newest = page["history"]["items"][0]["height"].as_u64().unwrap();
        assert!(newest >= chain.height(), "{harm}: {page}");
    }
}
