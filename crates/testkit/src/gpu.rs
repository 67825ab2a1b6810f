//! Helpers shared by the integration tests.
//!
//! GPU tests need a wgpu adapter. Where none exists they print that they were skipped, unless
//! `MVBC_REQUIRE_GPU=1` (set by `.ci/run`, which installs Mesa's lavapipe), where a missing
//! adapter fails them: CI proves the shader, it never skips it.

use mvbc_miner::gpu::{self, GpuError};
use mvbc_miner::{CpuEngine, GpuDevice, GpuEngine, MiningEngine, MultiEngine, WorkUnit};
use mvbc_protocol::{BlockHeader, Hash256};

/// The GPU engine, or `None` after saying why the test is skipped.
pub fn gpu_engine(test: &str) -> Option<GpuEngine> {
    let required = std::env::var("MVBC_REQUIRE_GPU").is_ok_and(|v| v == "1");
    match GpuDevice::acquire() {
        Ok(device) => {
            eprintln!("{test}: GPU adapter {}", device.describe());
            Some(GpuEngine::new(device).expect("the shader compiles"))
        }
        Err(e @ GpuError::NoAdapter(_)) if !required => {
            eprintln!("{test}: SKIPPED, {e} (set MVBC_REQUIRE_GPU=1 to make this a failure)");
            None
        }
        Err(e) => panic!("{test}: no GPU engine and MVBC_REQUIRE_GPU=1: {e}"),
    }
}

/// Every GPU adapter wgpu sees, software ones included, and the CPU, as one engine; `None`
/// after saying why the test is skipped. With `MVBC_REQUIRE_GPU=1` (CI, where Mesa's lavapipe
/// and its GL driver are installed) fewer than two adapters is a failure.
pub fn every_device(test: &str) -> Option<MultiEngine> {
    let required = std::env::var("MVBC_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let adapters = gpu::adapters();
    let names: Vec<String> = adapters.iter().map(|a| a.describe()).collect();
    if required {
        assert!(
            adapters.len() >= 2,
            "{test}: MVBC_REQUIRE_GPU=1 and only {names:?}: CI installs lavapipe (Vulkan) and \
             Mesa's GL driver, two adapters"
        );
    } else if adapters.is_empty() {
        eprintln!(
            "{test}: SKIPPED, no GPU adapter (set MVBC_REQUIRE_GPU=1 to make this a failure)"
        );
        return None;
    }
    eprintln!("{test}: adapters {names:?} and the CPU");
    let mut engines: Vec<Box<dyn MiningEngine>> = adapters
        .into_iter()
        .map(|a| {
            let device = a
                .acquire()
                .expect("an adapter from the list gives a device");
            Box::new(GpuEngine::new(device).expect("the shader compiles")) as Box<dyn MiningEngine>
        })
        .collect();
    engines.push(Box::new(CpuEngine::new(1)));
    Some(MultiEngine::new(engines))
}

pub fn work(seed: u8, difficulty: u32) -> WorkUnit {
    WorkUnit::new(&BlockHeader {
        version: mvbc_protocol::header::HEADER_VERSION,
        prev_hash: Hash256([seed; 32]),
        merkle_root: Hash256([seed.wrapping_mul(31).wrapping_add(7); 32]),
        timestamp: 1_800_000_000 + u64::from(seed),
        height: u64::from(seed),
        difficulty,
        nonce: 0,
    })
}
