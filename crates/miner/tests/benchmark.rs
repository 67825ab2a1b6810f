//! `mvbc-miner --benchmark` and `--device`, driven as a user would.

use std::process::{Command, Output};

fn miner(args: &[&str], env: &[(&str, &str)]) -> Output {
    // The default data directory is the current one, where the kernel pick and GPU tuning are
    // kept: a directory of the test's own, not the source tree.
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_mvbc-miner"))
        .current_dir(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("run mvbc-miner")
}

#[test]
fn benchmark_json_has_one_object_per_engine_with_the_documented_keys() {
    let out = miner(
        &[
            "--benchmark",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--seconds",
            "0.5",
            "--json",
            "--network-devices",
            "4",
            "--delay-ms",
            "200",
            "-s",
            "difficulty=30",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    for key in [
        "device",
        "adapter",
        "threads",
        "hashes",
        "seconds",
        "hashes_per_second",
        "verified",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["threads"], 2);
    assert_eq!(v["verified"], true);
    assert!(v["hashes"].as_u64().unwrap() > 0);
    assert!(v["seconds"].as_f64().unwrap() >= 0.5);
    // What the rate means for the difficulty, from the rate just measured.
    let blocks = &v["blocks"];
    let rate = v["hashes_per_second"].as_f64().unwrap();
    assert_eq!(blocks["difficulty"], 30, "{v}");
    assert_eq!(blocks["network_devices"], 4);
    assert_eq!(blocks["delay_ms"], 200.0);
    let per_block = blocks["seconds_per_block"].as_f64().unwrap();
    assert!((per_block * rate / 2f64.powi(30) - 1.0).abs() < 1e-9, "{v}");
    let d = blocks["tie_free_difficulty"].as_u64().unwrap() as i32;
    let needed = 100.0 * 0.2 * 4.0 * rate;
    assert!(2f64.powi(d) >= needed && 2f64.powi(d - 1) < needed, "{v}");
    let tie = blocks["tie_chance"].as_f64().unwrap();
    assert!(tie > 0.0 && tie < 1.0, "{v}");
}

#[test]
fn device_gpu_without_an_adapter_fails_with_a_clear_message() {
    // No Metal on Linux (nor Vulkan, GL or DX12 on macOS): wgpu finds nothing.
    let backend = if cfg!(target_os = "macos") {
        "vulkan"
    } else {
        "metal"
    };
    let out = miner(
        &["--benchmark", "--device", "gpu", "--seconds", "0.5"],
        &[("WGPU_BACKEND", backend)],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no GPU adapter found"), "{err}");
    assert!(err.contains("--device cpu"), "{err}");
}

#[test]
fn device_auto_without_an_adapter_says_it_uses_the_cpu() {
    let backend = if cfg!(target_os = "macos") {
        "vulkan"
    } else {
        "metal"
    };
    let out = miner(
        &["--benchmark", "--seconds", "0.5", "--json"],
        &[("WGPU_BACKEND", backend)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("using the CPU"), "{err}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(r#""device":"cpu""#), "{text}");
}

#[test]
fn bad_arguments_are_refused() {
    for args in [
        &["--benchmark", "--threads", "0"][..],
        &["--benchmark", "--seconds", "-1"],
        &["--benchmark", "--seconds", "nan"],
        &["--seconds", "2"],
        &["--benchmark", "--device", "tpu"],
    ] {
        let out = miner(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}
