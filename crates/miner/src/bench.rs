//! `mvbc-miner --benchmark`: each engine's hash rate on a synthetic work unit, and a solved
//! block checked on the CPU.

use std::thread;
use std::time::{Duration, Instant};

use crate::engine::{
    DeviceKind, EngineError, EngineInfo, MiningEngine, NonceRange, Search, SearchControl,
    search_verified,
};
use crate::work::{WorkUnit, synthetic_header};

/// Difficulty of the timed run: no nonce meets it, so the search never stops early.
pub const UNREACHABLE_DIFFICULTY: u32 = 250;
/// Difficulty of the block each engine must solve for `verified`: 2^18 hashes expected, well
/// under a second even on a software rasteriser.
pub const CHECK_DIFFICULTY: u32 = 18;

/// One engine's figures.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// "cpu" or "gpu".
    #[serde(serialize_with = "display")]
    pub device: DeviceKind,
    /// GPU adapter and backend, or the CPU kernel.
    pub adapter: String,
    /// The GPU's backend, or "cpu".
    pub backend: String,
    /// Worker threads.
    pub threads: usize,
    /// Nonces tried in the measured window.
    pub hashes: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// `hashes / seconds`.
    pub hashes_per_second: f64,
    /// Whether the engine solved a block that a full `sha2::Sha256` of its header confirmed.
    pub verified: bool,
    /// For the CPU: each kernel this CPU runs, by `--cpu-kernel` name, with its hash rate on
    /// one thread as measured at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<std::collections::BTreeMap<String, f64>>,
    /// For several devices measured together: each device's part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceReport>>,
    /// What this rate means for the network's difficulty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<BlockAdvice>,
}

/// What a measured hash rate means for a network's difficulty
/// (`docs/adr/0006-fixed-difficulty-per-network.md`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BlockAdvice {
    /// The configured difficulty.
    pub difficulty: u32,
    /// Expected seconds per block at it, on this device alone.
    pub seconds_per_block: f64,
    /// Devices like this one in the network.
    pub network_devices: u32,
    /// Propagation delay of a block announcement, in milliseconds.
    pub delay_ms: f64,
    /// The chance that a block ties with a rival's at the configured difficulty.
    pub tie_chance: f64,
    /// The lowest difficulty that keeps ties under 1% for that network.
    pub tie_free_difficulty: u32,
}

/// Expected seconds for `rate` hashes a second to find a block at `difficulty` (2^D hashes).
pub fn seconds_per_block(difficulty: u32, rate: f64) -> f64 {
    2f64.powi(difficulty.min(255) as i32) / rate.max(f64::MIN_POSITIVE)
}

/// The chance that a rival hashing at `rival_rate` also finds a block while one is being
/// announced (`delay` seconds): 1 - e^(-delay x rival rate / 2^D).
pub fn tie_chance(difficulty: u32, delay: f64, rival_rate: f64) -> f64 {
    1.0 - (-delay * rival_rate / 2f64.powi(difficulty.min(255) as i32)).exp()
}

/// The lowest difficulty D with 2^D >= 100 x `delay` x `total_rate`: ties under about 1%.
pub fn tie_free_difficulty(delay: f64, total_rate: f64) -> u32 {
    let needed = (100.0 * delay * total_rate).max(1.0);
    needed.log2().ceil() as u32
}

impl BlockAdvice {
    /// The advice for a device hashing at `rate`, at `difficulty`, in a network of
    /// `network_devices` such devices whose announcements take `delay_ms`.
    pub fn new(rate: f64, difficulty: u32, network_devices: u32, delay_ms: f64) -> BlockAdvice {
        let delay = delay_ms / 1_000.0;
        let total = rate * f64::from(network_devices.max(1));
        BlockAdvice {
            difficulty,
            seconds_per_block: seconds_per_block(difficulty, rate),
            network_devices,
            delay_ms,
            tie_chance: tie_chance(difficulty, delay, total - rate),
            tie_free_difficulty: tie_free_difficulty(delay, total),
        }
    }
}

/// One device's part of a run of several devices together.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DeviceReport {
    /// "cpu" or "gpu".
    pub device: String,
    /// GPU adapter, or the CPU kernel.
    pub adapter: String,
    /// The GPU's backend, or "cpu".
    pub backend: String,
    /// Its share of the hashes of the run together, per second.
    pub hashes_per_second: f64,
    /// Whether it solved a block alone that the CPU confirmed.
    pub verified: bool,
}

fn display<S: serde::Serializer>(d: &DeviceKind, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}

/// Solves a [`CHECK_DIFFICULTY`] block with `engine`; true when [`search_verified`] accepted
/// the nonce (it re-hashes the whole header with `sha2`).
pub fn solves_a_block(engine: &mut dyn MiningEngine) -> Result<bool, EngineError> {
    let work = WorkUnit::new(&synthetic_header(CHECK_DIFFICULTY));
    let found = search_verified(engine, &work, NonceRange::all(), &SearchControl::new())?;
    Ok(matches!(found, Search::Found(n) if work.header_with(n).meets_own_difficulty()))
}

/// Runs `engine` for `warm_up` (not counted: GPU dispatch sizes settle, CPU clocks ramp) and
/// then `seconds`, calling `progress` with the hashes and time of the measured window every
/// quarter second.
pub fn measure(
    engine: &mut dyn MiningEngine,
    warm_up: Duration,
    seconds: Duration,
    mut progress: impl FnMut(u64, Duration),
) -> Result<BenchReport, EngineError> {
    let verified = solves_a_block(engine)?;
    let info = engine.info();
    let (hashes, elapsed) = count_hashes(engine, warm_up, seconds, &mut progress)?;
    let seconds = elapsed.as_secs_f64();
    Ok(BenchReport {
        device: info.device,
        adapter: info.adapter,
        backend: info.backend,
        threads: info.threads,
        hashes,
        seconds,
        hashes_per_second: hashes as f64 / seconds,
        verified,
        kernels: (info.device == DeviceKind::Cpu).then(|| {
            crate::cpu::Kernel::measured()
                .iter()
                .map(|(k, rate)| (k.key().to_string(), *rate))
                .collect()
        }),
        devices: None,
        blocks: None,
    })
}

/// Nonces `engine` tries in `seconds` after `warm_up` on a work unit no nonce solves, and the
/// measured time; `progress` sees the window's hashes and time every quarter second.
pub fn count_hashes(
    engine: &mut dyn MiningEngine,
    warm_up: Duration,
    seconds: Duration,
    mut progress: impl FnMut(u64, Duration),
) -> Result<(u64, Duration), EngineError> {
    let work = WorkUnit::new(&synthetic_header(UNREACHABLE_DIFFICULTY));
    let control = SearchControl::new();
    let (hashes, elapsed, outcome) = thread::scope(|s| {
        let search = s.spawn(|| engine.search(&work, NonceRange::all(), &control));
        thread::sleep(warm_up);
        let (start_hashes, start) = (control.hashes(), Instant::now());
        let tick = Duration::from_millis(250);
        while start.elapsed() + tick < seconds && !search.is_finished() {
            thread::sleep(tick);
            progress(control.hashes() - start_hashes, start.elapsed());
        }
        if !search.is_finished() {
            thread::sleep(seconds.saturating_sub(start.elapsed()));
        }
        let (end_hashes, elapsed) = (control.hashes(), start.elapsed());
        control.stop();
        let outcome = search.join().unwrap_or(Err(EngineError::WorkerPanicked));
        (end_hashes - start_hashes, elapsed, outcome)
    });
    match outcome? {
        Search::Aborted => {}
        other => return Err(EngineError::EndedEarly(other)),
    }
    Ok((hashes, elapsed))
}

/// A hash rate with an SI prefix: "94.1 MH/s".
pub fn format_rate(hashes_per_second: f64) -> String {
    let (value, unit) = match hashes_per_second {
        r if r >= 1e9 => (r / 1e9, "GH/s"),
        r if r >= 1e6 => (r / 1e6, "MH/s"),
        r if r >= 1e3 => (r / 1e3, "kH/s"),
        r => (r, "H/s"),
    };
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuEngine;

    #[test]
    fn measures_a_short_cpu_run() {
        let mut engine = CpuEngine::new(1);
        let mut ticks = 0;
        let r = measure(
            &mut engine,
            Duration::from_millis(50),
            Duration::from_millis(600),
            |_, _| ticks += 1,
        )
        .unwrap();
        assert!(r.verified);
        assert_eq!(r.device, DeviceKind::Cpu);
        assert!(r.hashes > 0 && r.seconds >= 0.6, "{r:?}");
        assert!(ticks >= 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["device"], "cpu");
        assert_eq!(json["threads"], 1);
        // Every kernel this CPU runs, with its measured rate.
        let kernels = json["kernels"].as_object().unwrap();
        assert!(kernels["portable"].as_f64().unwrap() > 0.0);
        for k in crate::cpu::Kernel::ALL {
            assert_eq!(kernels.contains_key(k.key()), k.is_available(), "{k:?}");
        }
    }

    #[test]
    fn difficulty_advice_follows_the_tie_formula() {
        // One 10 GH/s GPU at difficulty 28: 2^28 / 1e10 = 26.8 ms a block.
        let one = BlockAdvice::new(1e10, 28, 1, 15.0);
        assert!((one.seconds_per_block - 0.026_843_5).abs() < 1e-6);
        assert_eq!(one.tie_chance, 0.0, "no rival");
        // 100 x 15 ms x 10 GH/s = 1.5e10 hashes: 2^34 = 1.7e10 is the first power above.
        assert_eq!(one.tie_free_difficulty, 34);
        // Two such GPUs: a rival at 10 GH/s ties about 43% of blocks (issue 19).
        let two = BlockAdvice::new(1e10, 28, 2, 15.0);
        assert!((two.tie_chance - 0.4278).abs() < 1e-3, "{}", two.tie_chance);
        assert_eq!(two.tie_free_difficulty, 35);
        // At the lowest difficulty it names, ties stay under 1%.
        let d = two.tie_free_difficulty;
        assert!(tie_chance(d, 0.015, 2e10) < 0.01);
        assert!(tie_chance(d - 1, 0.015, 2e10) > tie_chance(d, 0.015, 2e10));
        assert_eq!(tie_free_difficulty(0.0, 0.0), 0);
    }

    #[test]
    fn rates_read_well() {
        assert_eq!(format_rate(94_100_000.0), "94.1 MH/s");
        assert_eq!(format_rate(16.2e9), "16.2 GH/s");
        assert_eq!(format_rate(12.0), "12.0 H/s");
    }
}

impl std::fmt::Display for BenchReport {
    /// "cpu sha-ni x3, 2 threads: N hashes in S s = R, solved block verified on the CPU".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = EngineInfo {
            device: self.device,
            adapter: self.adapter.clone(),
            backend: self.backend.clone(),
            threads: self.threads,
        };
        write!(
            f,
            "{} {}: {} hashes in {:.2} s = {}, solved block {}",
            self.device,
            info.describe(),
            self.hashes,
            self.seconds,
            format_rate(self.hashes_per_second),
            if self.verified {
                "verified on the CPU"
            } else {
                "FAILED the CPU check"
            }
        )
    }
}

/// What a measured rate means for the network's difficulty, as `--benchmark` prints it: time
/// per block, the tie chance, and the lowest difficulty that keeps ties under 1% for a few
/// networks of such devices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Advice {
    rate: f64,
    difficulty: u32,
    devices: u32,
    delay_ms: f64,
}

impl Advice {
    /// For `rate` hashes a second at `difficulty`, on a network of `devices` such devices
    /// whose announcements take `delay_ms`.
    pub fn new(rate: f64, difficulty: u32, devices: u32, delay_ms: f64) -> Advice {
        Advice {
            rate,
            difficulty,
            devices,
            delay_ms,
        }
    }
}

impl std::fmt::Display for Advice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Advice {
            rate,
            difficulty,
            devices,
            delay_ms,
        } = *self;
        let here = BlockAdvice::new(rate, difficulty, devices, delay_ms);
        let time = |d: u32| {
            let s = seconds_per_block(d, rate);
            if s < 1.0 {
                format!("{:.1} ms", s * 1_000.0)
            } else {
                format!("{s:.1} s")
            }
        };
        writeln!(
            f,
            "At difficulty {difficulty} (this configuration): a block every {} on this device \
             alone; with {devices} such device{} and {delay_ms} ms announcements, {:.1}% of \
             blocks tie",
            time(difficulty),
            if devices == 1 { "" } else { "s" },
            100.0 * here.tie_chance
        )?;
        writeln!(
            f,
            "Lowest difficulty for ties under 1% (2^D >= 100 x delay x total rate):"
        )?;
        let mut rows = vec![
            (1, 15.0, "1 device, LAN"),
            (4, 15.0, "4 devices, LAN"),
            (1, 200.0, "1 device, internet"),
        ];
        if !rows.iter().any(|(n, d, _)| *n == devices && *d == delay_ms) {
            rows.insert(0, (devices, delay_ms, "as given"));
        }
        for (n, d, label) in rows {
            let at = BlockAdvice::new(rate, difficulty, n, d).tie_free_difficulty;
            writeln!(
                f,
                "  {label:<20} {n:>4} x {d:>6} ms: difficulty {at} (a block every {} on one \
                 device)",
                time(at)
            )?;
        }
        Ok(())
    }
}

/// Each device's part of a run of several together: its share of the `done` hashes at
/// `total_rate`, beside its report alone.
pub fn shares(alone: &[BenchReport], done: &[u64], total_rate: f64) -> Vec<DeviceReport> {
    let sum = done.iter().sum::<u64>().max(1) as f64;
    alone
        .iter()
        .zip(done)
        .map(|(r, &d)| DeviceReport {
            device: r.device.to_string(),
            adapter: r.adapter.clone(),
            backend: r.backend.clone(),
            hashes_per_second: total_rate * d as f64 / sum,
            verified: r.verified,
        })
        .collect()
}
