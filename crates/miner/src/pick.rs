//! `--cpu-kernel auto`: the kernel that measured fastest on this CPU, measured once per CPU
//! model and kept in the data directory, like the GPU tuning (`--retune` measures again).
//!
//! The cache is keyed by the CPU's model name, the kernels it runs and this build, so another
//! CPU (a machine whose CPU changed) or a new mvbc measures again. It is untrusted like any
//! file: missing, stale or damaged means "measure and rewrite", never an error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use mvbc_protocol::fsutil::{read_capped, write_atomic};

use crate::bench::format_rate;
use crate::cpu::{Kernel, MEASURE_ROUNDS};

/// The cache's file name in the data directory.
pub const CACHE_FILE: &str = "cpu-kernel.json";
/// Largest cache file read.
const CACHE_CAP: u64 = 64 << 10;
/// Most CPU models one cache keeps (a data directory moved between machines).
const MAX_ENTRIES: usize = 32;

/// The kernel picked, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Pick {
    /// The kernel.
    pub kernel: Kernel,
    /// Each kernel this CPU runs with its rate on one thread, fastest first.
    pub rates: Vec<(Kernel, f64)>,
    /// Read from the cache, not measured now.
    pub cached: bool,
    /// Why the cache was not used, when it could not be read or written.
    pub problem: Option<String>,
}

impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rates: Vec<String> = self
            .rates
            .iter()
            .map(|(k, r)| format!("{} {}", k.name(), format_rate(*r)))
            .collect();
        if self.cached {
            write!(
                f,
                "{}, as measured before on this CPU ({}; --retune measures again)",
                self.kernel.name(),
                rates.join(", ")
            )?;
        } else {
            write!(
                f,
                "{}, measured on one thread, best of {MEASURE_ROUNDS} rounds: {}",
                self.kernel.name(),
                rates.join(", ")
            )?;
        }
        if let Some(problem) = &self.problem {
            write!(f, " ({problem})")?;
        }
        Ok(())
    }
}

/// One CPU's cached pick.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    kernel: String,
    /// Hashes a second on one thread, by kernel key.
    rates: BTreeMap<String, f64>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    cpus: BTreeMap<String, Entry>,
}

/// This CPU's model name (`/proc/cpuinfo`), or the architecture where there is none: what
/// every figure is measured on, named beside it.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// What names this CPU for the cache: its model, the kernels it runs, this build.
pub fn cpu_key() -> String {
    let model = cpu_model();
    let kernels: Vec<&str> = Kernel::available().map(Kernel::key).collect();
    format!(
        "{model} | {} | mvbc {}",
        kernels.join(" "),
        env!("CARGO_PKG_VERSION")
    )
}

/// The kernel for `--cpu-kernel auto`: from the cache at `path` (in the data directory) when
/// it has this CPU and `retune` is not set, else measured and written there.
pub fn pick(path: Option<&Path>, retune: bool) -> Pick {
    pick_with(path, retune, &cpu_key(), || Kernel::measured().to_vec())
}

/// [`pick`], with the CPU's key and the measurement given.
fn pick_with(
    path: Option<&Path>,
    retune: bool,
    key: &str,
    measure: impl FnOnce() -> Vec<(Kernel, f64)>,
) -> Pick {
    let (mut file, mut problem) = match path {
        Some(p) => read_cache(p),
        None => (CacheFile::default(), None),
    };
    if !retune && let Some(pick) = file.cpus.get(key).and_then(from_entry) {
        return pick;
    }
    let rates = measure();
    let kernel = rates.first().map_or(Kernel::Portable, |(k, _)| *k);
    if let Some(p) = path {
        file.cpus.insert(
            key.to_string(),
            Entry {
                kernel: kernel.key().to_string(),
                rates: rates
                    .iter()
                    .map(|(k, r)| (k.key().to_string(), *r))
                    .collect(),
            },
        );
        while file.cpus.len() > MAX_ENTRIES {
            let other = file.cpus.keys().find(|k| *k != key).cloned();
            match other {
                Some(k) => file.cpus.remove(&k),
                None => break,
            };
        }
        if let Err(e) = write_cache(p, &file) {
            problem = Some(format!("cannot keep it in {}: {e}", p.display()));
        }
    }
    Pick {
        kernel,
        rates,
        cached: false,
        problem,
    }
}

/// A cached entry as a pick; `None` when it names a kernel this CPU does not run or has no
/// sensible rates (a damaged or hand-edited file): then it is measured again.
fn from_entry(entry: &Entry) -> Option<Pick> {
    let kernel = Kernel::from_key(&entry.kernel).filter(|k| k.is_available())?;
    let mut rates = Vec::new();
    for (key, rate) in &entry.rates {
        let k = Kernel::from_key(key)?;
        if !rate.is_finite() || *rate <= 0.0 {
            return None;
        }
        rates.push((k, *rate));
    }
    rates.sort_by(|a, b| b.1.total_cmp(&a.1));
    if rates.first().map(|(k, _)| *k) != Some(kernel) {
        return None;
    }
    Some(Pick {
        kernel,
        rates,
        cached: true,
        problem: None,
    })
}

fn read_cache(path: &Path) -> (CacheFile, Option<String>) {
    let bytes = match read_capped(path, CACHE_CAP) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (CacheFile::default(), None),
        Err(e) => {
            return (
                CacheFile::default(),
                Some(format!("{}: {e}", path.display())),
            );
        }
    };
    match serde_json::from_slice::<CacheFile>(&bytes) {
        Ok(c) => (c, None),
        Err(e) => (
            CacheFile::default(),
            Some(format!(
                "{} was not a kernel cache ({e}); measured again",
                path.display()
            )),
        ),
    }
}

fn write_cache(path: &Path, file: &CacheFile) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    write_atomic(path, &text)
}

/// The cache in data directory `dir`.
pub fn cache_in(dir: &Path) -> PathBuf {
    dir.join(CACHE_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pick_is_measured_once_per_cpu_then_read_and_retune_measures_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_in(dir.path());
        let rates = vec![(Kernel::Portable, 20.0e6)];
        let measured = std::cell::Cell::new(0);
        let measure = || {
            measured.set(measured.get() + 1);
            rates.clone()
        };
        let first = pick_with(Some(&path), false, "cpu A", measure);
        assert!(!first.cached && first.problem.is_none(), "{first}");
        assert_eq!(first.kernel, Kernel::Portable);
        let again = pick_with(Some(&path), false, "cpu A", measure);
        assert!(again.cached, "{again}");
        assert_eq!(again.rates, first.rates);
        assert!(again.to_string().contains("--retune"), "{again}");
        // Another CPU in the same directory, or --retune: measured.
        assert!(!pick_with(Some(&path), false, "cpu B", measure).cached);
        assert!(!pick_with(Some(&path), true, "cpu A", measure).cached);
        assert_eq!(measured.get(), 3);
        // Both CPUs are kept.
        assert!(pick_with(Some(&path), false, "cpu B", measure).cached);
        assert_eq!(measured.get(), 3);
    }

    #[test]
    fn a_damaged_or_lying_cache_is_measured_again_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_in(dir.path());
        let rates = vec![(Kernel::Portable, 20.0e6)];
        std::fs::write(&path, b"{not json").unwrap();
        let p = pick_with(Some(&path), false, "cpu", || rates.clone());
        assert!(!p.cached);
        assert!(
            p.problem.as_deref().unwrap().contains("not a kernel cache"),
            "{p}"
        );
        assert!(pick_with(Some(&path), false, "cpu", || rates.clone()).cached);
        // A kernel no CPU runs, or a rate that is not one: measured again.
        for entry in [
            r#"{"cpus":{"cpu":{"kernel":"quantum","rates":{"quantum":1.0}}}}"#,
            r#"{"cpus":{"cpu":{"kernel":"portable","rates":{"portable":-1.0}}}}"#,
        ] {
            std::fs::write(&path, entry).unwrap();
            assert!(
                !pick_with(Some(&path), false, "cpu", || rates.clone()).cached,
                "{entry}"
            );
        }
        // No data directory: measured, nothing kept.
        assert!(!pick_with(None, false, "cpu", || rates.clone()).cached);
    }
}
