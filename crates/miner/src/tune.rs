//! The GPU engine tunes itself: on first use of an adapter it measures workgroup size, nonces
//! per invocation, dispatch time and a shader module without wgpu's runtime checks, keeps the
//! fastest whose results verify against the CPU, and caches the choice in the data directory.
//!
//! The cache is keyed by adapter, driver and shader, so a new driver or a changed shader
//! measures again. It is untrusted like any file: missing, stale or corrupt means "measure
//! and rewrite", never an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mvbc_protocol::fsutil::{read_capped, write_atomic};
use sha2::{Digest, Sha256};

use crate::bench::count_hashes;
use crate::engine::{EngineError, GpuFailure, NonceRange};
use crate::gpu::{GpuDevice, GpuEngine, MAX_DISPATCH_MS, SHADER, Tuning};
use crate::work::{WorkUnit, synthetic_header};

/// The cache's file name in the data directory.
pub const CACHE_FILE: &str = "gpu-tuning.json";
/// Largest cache file read: a few hundred bytes per adapter.
const CACHE_CAP: u64 = 1 << 20;
/// A candidate replaces the best so far only when it is this much faster: run-to-run noise
/// must not flip the choice.
const MARGIN: f64 = 1.02;

/// Where tuning results live, and whether to ignore what is there.
#[derive(Clone, Debug, Default)]
pub struct TuneCache {
    /// The cache file; `None` measures and keeps nothing.
    pub path: Option<PathBuf>,
    /// Measure again even where the cache has an entry (`--retune`).
    pub retune: bool,
}

impl TuneCache {
    /// The cache in data directory `dir`.
    pub fn in_dir(dir: &Path, retune: bool) -> TuneCache {
        TuneCache {
            path: Some(dir.join(CACHE_FILE)),
            retune,
        }
    }
}

/// One adapter's cached result.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Entry {
    tuning: Tuning,
    hashes_per_second: f64,
}

/// The cache file: one entry per adapter key.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    adapters: BTreeMap<String, Entry>,
}

/// What `engine` names the adapter, driver and shader by: a change to any measures again.
fn adapter_key(gpu: &GpuDevice) -> String {
    let i = gpu.info();
    let shader = Sha256::digest(SHADER.as_bytes());
    format!(
        "{} | {:?} | {:04x}:{:04x} | {} {} | shader {}",
        i.name,
        i.backend,
        i.vendor,
        i.device,
        i.driver,
        i.driver_info,
        shader[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// Reads the cache; a missing file is empty, an unreadable or malformed one is empty with the
/// reason.
fn read_cache(path: &Path) -> (CacheFile, Option<String>) {
    let bytes = match read_capped(path, CACHE_CAP) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (CacheFile::default(), None),
        Err(e) => return (CacheFile::default(), Some(e.to_string())),
    };
    match serde_json::from_slice::<CacheFile>(&bytes) {
        Ok(c) => (c, None),
        Err(e) => (
            CacheFile::default(),
            Some(format!("not a tuning cache: {e}")),
        ),
    }
}

/// Hashes per second of `engine` as tuned now, over `window` after a short warm-up that lets
/// the dispatch size settle.
pub fn rate(engine: &mut GpuEngine, window: Duration) -> Result<f64, EngineError> {
    let warm_up = Duration::from_millis(u64::from(MAX_DISPATCH_MS) * 3);
    let (hashes, took) = count_hashes(engine, warm_up, window, |_, _| {})?;
    Ok(hashes as f64 / took.as_secs_f64().max(1e-9))
}

/// Whether `engine` as tuned now finds exactly the nonces the CPU finds, with masks spread
/// over both digest words the shader computes, over a range that crosses a 2^32 boundary and
/// ends on a part of a workgroup.
pub fn verifies(engine: &mut GpuEngine) -> Result<bool, EngineError> {
    let work = WorkUnit::new(&synthetic_header(0));
    let range = NonceRange::new((3 << 32) - 3001, (3 << 32) + 5003);
    for masks in [[0x0101_0101, 0x0000_0004], [0x8000_0020, 0x0100_0100]] {
        let clears = |n: u64| {
            let h = work.hash_words(n);
            h[7] & masks[0] == 0 && h[6] & masks[1] == 0
        };
        let mut from = range.start;
        loop {
            let expect = (from..range.end).find(|&n| clears(n));
            let got = engine.lowest_clearing(&work, NonceRange::new(from, range.end), masks)?;
            if got != expect {
                return Ok(false);
            }
            match got {
                Some(n) => from = n + 1,
                None => break,
            }
        }
    }
    Ok(true)
}

/// What a search over tunings found.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The fastest tuning whose results verified.
    pub best: Tuning,
    /// Its rate.
    pub hashes_per_second: f64,
    /// Every tuning tried, with its rate, in the order tried.
    pub tried: Vec<(Tuning, f64)>,
}

/// Measures workgroup size, then nonces per invocation, then the unchecked module, then
/// dispatch time, each step from the best so far (a full grid would take 36 compilations; the
/// steps take 9). Leaves `engine` on the best tuning, which verifies on the CPU.
pub fn measure(engine: &mut GpuEngine, window: Duration) -> Result<Measured, EngineError> {
    let mut tried = Vec::new();
    let mut best = Tuning::DEFAULT;
    engine.retune(best)?;
    // Once unmeasured: the driver finishes compiling on first use, and the dispatch size
    // grows from its small first value.
    rate(engine, window)?;
    let mut best_rate = rate(engine, window)?;
    tried.push((best, best_rate));
    let steps: [&dyn Fn(Tuning) -> Vec<Tuning>; 4] = [
        &|t| {
            [64, 128, 256]
                .map(|workgroup| Tuning { workgroup, ..t })
                .to_vec()
        },
        &|t| {
            [1, 2, 4, 8]
                .map(|per_invocation| Tuning {
                    per_invocation,
                    ..t
                })
                .to_vec()
        },
        &|t| {
            vec![Tuning {
                unchecked: true,
                ..t
            }]
        },
        &|t| {
            [10, 25, MAX_DISPATCH_MS]
                .map(|dispatch_ms| Tuning { dispatch_ms, ..t })
                .to_vec()
        },
    ];
    for step in steps {
        for candidate in step(best) {
            if tried.iter().any(|(t, _)| *t == candidate) {
                continue;
            }
            engine.retune(candidate)?;
            // A candidate must find exactly what the CPU finds; checking first also makes the
            // driver finish compiling it (lavapipe compiles on first use) before the timing.
            if !verifies(engine)? {
                tracing::warn!("GPU tuning: {candidate} disagrees with the CPU: passed over");
                continue;
            }
            let r = rate(engine, window)?;
            tracing::debug!("GPU tuning: {candidate}: {:.1} MH/s", r / 1e6);
            tried.push((candidate, r));
            if r > best_rate * MARGIN {
                best = candidate;
                best_rate = r;
            }
        }
    }
    engine.retune(best)?;
    if !verifies(engine)? {
        return Err(GpuFailure::Disagrees(best).into());
    }
    Ok(Measured {
        best,
        hashes_per_second: best_rate,
        tried,
    })
}

/// Builds the engine on `gpu` with its cached tuning, or measures one and caches it. Returns
/// the engine and a line for the user saying what it runs with and where that came from.
pub fn tuned_engine(gpu: GpuDevice, cache: &TuneCache) -> Result<(GpuEngine, String), EngineError> {
    tune_engine(GpuEngine::new(gpu)?, cache)
}

/// [`tuned_engine`] for an engine already built.
pub fn tune_engine(
    mut engine: GpuEngine,
    cache: &TuneCache,
) -> Result<(GpuEngine, String), EngineError> {
    let key = adapter_key(engine.device());
    let (mut file, problem) = match &cache.path {
        Some(path) => read_cache(path),
        None => (CacheFile::default(), None),
    };
    let mut notes = Vec::new();
    if let (Some(p), Some(path)) = (problem, &cache.path) {
        notes.push(format!("ignored {}: {p}", path.display()));
    }
    let cached = file.adapters.get(&key).filter(|e| e.tuning.is_valid());
    if let (Some(entry), Some(path), false) = (cached, &cache.path, cache.retune) {
        engine.retune(entry.tuning)?;
        notes.insert(
            0,
            format!("{} (cached in {})", entry.tuning, path.display()),
        );
        return Ok((engine, notes.join("; ")));
    }
    let started = Instant::now();
    let measured = measure(&mut engine, Duration::from_millis(200))?;
    let default_rate = measured.tried[0].1;
    notes.insert(
        0,
        format!(
            "{} ({:.1} MH/s, default {:.1}; measured in {:.1} s)",
            measured.best,
            measured.hashes_per_second / 1e6,
            default_rate / 1e6,
            started.elapsed().as_secs_f64()
        ),
    );
    if let Some(path) = &cache.path {
        file.adapters.insert(
            key,
            Entry {
                tuning: measured.best,
                hashes_per_second: measured.hashes_per_second,
            },
        );
        let written = serde_json::to_vec_pretty(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomic(path, &bytes));
        match written {
            Ok(()) => notes.push(format!("saved in {}", path.display())),
            Err(e) => notes.push(format!("could not write {}: {e}", path.display())),
        }
    }
    Ok((engine, notes.join("; ")))
}
