//! The CPU engine: every core, each thread on its own chunks of the range, with the kernel
//! that measured fastest on this CPU.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mvbc_protocol::header::{HEADER_LEN, NONCE_OFFSET};
use sha2::block_api::compress256;

use crate::engine::{
    DeviceKind, EngineError, EngineInfo, MiningEngine, NonceRange, Search, SearchControl,
};
use crate::work::{WorkUnit, meets_difficulty};
#[cfg(target_arch = "x86_64")]
use crate::{shani, simd};

/// Nonces a thread takes at a time. A thread checks the stop flag between chunks, so this
/// bounds how long an abort takes: 2^16 nonces are a few milliseconds on one core.
pub const CHUNK: u64 = 1 << 16;

/// Where the nonce sits in the second SHA-256 block.
const NONCE_BYTES: std::ops::Range<usize> = NONCE_OFFSET - 64..HEADER_LEN - 64;

/// How a thread computes hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// AVX-512: 16 nonces a vector, native rotates and three-input logic.
    Avx512,
    /// AVX2: 8 nonces a vector.
    Avx2,
    /// x86-64 SHA instructions, several nonces interleaved, nonce-free rounds precomputed.
    ShaNi,
    /// `sha2`'s `compress256` from the midstate, one nonce at a time (it picks the best backend
    /// the CPU has, and software where there is none).
    Portable,
}

/// How long each kernel runs in one round of measuring (after half as long to warm up).
pub const MEASURE_WINDOW: Duration = Duration::from_millis(30);
/// Rounds of measuring: the kernels take turns, round after round, and each keeps its best.
/// One sample at start once picked `sha-ni x3 57.4 MH/s` on a busy machine where avx512
/// measured 81.2 MH/s moments later (issue 22): a burst of load now has to hit the same kernel
/// in every round to mislead the pick. All four kernels take about 0.9 s.
pub const MEASURE_ROUNDS: usize = 5;

impl Kernel {
    /// Every kernel, those this CPU lacks included.
    pub const ALL: [Kernel; 4] = [
        Kernel::Avx512,
        Kernel::Avx2,
        Kernel::ShaNi,
        Kernel::Portable,
    ];

    /// The kernels this CPU runs, in [`Kernel::ALL`]'s order.
    pub fn available() -> impl Iterator<Item = Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.is_available())
    }

    /// The kernel that measured fastest on this CPU ([`Kernel::measured`]).
    pub fn detect() -> Kernel {
        Kernel::measured()[0].0
    }

    /// "avx512 x16 61.2 MH/s, sha-ni x3 54.0 MH/s, ...": [`Kernel::measured`], fastest first.
    pub fn measured_summary() -> String {
        Kernel::measured()
            .iter()
            .map(|(k, rate)| format!("{} {}", k.name(), crate::bench::format_rate(*rate)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every kernel this CPU runs with its hash rate on one thread, fastest first: measured once
    /// per process, the best of [`MEASURE_ROUNDS`] turns of [`MEASURE_WINDOW`] each.
    pub fn measured() -> &'static [(Kernel, f64)] {
        static MEASURED: OnceLock<Vec<(Kernel, f64)>> = OnceLock::new();
        MEASURED.get_or_init(|| {
            let kernels: Vec<Kernel> = Kernel::available().collect();
            best_of_rounds(&kernels, MEASURE_ROUNDS, |k| k.rate(MEASURE_WINDOW))
        })
    }

    /// The kernel of key `key` ([`Kernel::key`]).
    pub fn from_key(key: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.key() == key)
    }

    /// Hashes a second on one thread over about `window`, on a work unit no nonce solves.
    pub fn rate(self, window: Duration) -> f64 {
        let work = WorkUnit::new(&crate::work::synthetic_header(
            crate::bench::UNREACHABLE_DIFFICULTY,
        ));
        let prepared = Prepared::new(self, &work);
        let run = |until: Instant| {
            let (mut nonces, started) = (0u64, Instant::now());
            while Instant::now() < until {
                let start = nonces;
                std::hint::black_box(prepared.scan(&work, start, start + 4096));
                nonces += 4096;
            }
            nonces as f64 / started.elapsed().as_secs_f64()
        };
        run(Instant::now() + window / 2);
        run(Instant::now() + window)
    }

    /// The short name used in `--cpu-kernel` and in JSON reports.
    pub fn key(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::ShaNi => "sha-ni",
            Kernel::Portable => "portable",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => simd::avx512_available(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => simd::avx2_available(),
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi => shani::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 | Kernel::Avx2 | Kernel::ShaNi => false,
            Kernel::Portable => true,
        }
    }

    /// How the kernel is named in reports.
    pub fn name(self) -> String {
        match self {
            Kernel::Avx512 => "avx512 x16".to_string(),
            Kernel::Avx2 => "avx2 x8".to_string(),
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi => format!("sha-ni x{}", shani::LANES),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::ShaNi => "sha-ni".to_string(),
            Kernel::Portable => "portable (sha2 compress256)".to_string(),
        }
    }
}

/// `kernels` with the best rate `measure` gave each over `rounds` rounds in which they take
/// turns, fastest first. A kernel's best is its speed when nothing else ran: load on a busy
/// machine only ever slows a sample down.
pub fn best_of_rounds(
    kernels: &[Kernel],
    rounds: usize,
    mut measure: impl FnMut(Kernel) -> f64,
) -> Vec<(Kernel, f64)> {
    let mut rated: Vec<(Kernel, f64)> = kernels.iter().map(|&k| (k, 0.0)).collect();
    for _ in 0..rounds.max(1) {
        for (kernel, best) in &mut rated {
            *best = best.max(measure(*kernel));
        }
    }
    rated.sort_by(|a, b| b.1.total_cmp(&a.1));
    rated
}

/// The kernel's per-work-unit state.
enum Prepared {
    #[cfg(target_arch = "x86_64")]
    Avx512(simd::Prepared),
    #[cfg(target_arch = "x86_64")]
    Avx2(simd::Prepared),
    #[cfg(target_arch = "x86_64")]
    ShaNi(shani::Prepared),
    Portable([u8; 64]),
}

impl Prepared {
    fn new(kernel: Kernel, work: &WorkUnit) -> Prepared {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if simd::avx512_available() => {
                Prepared::Avx512(simd::Prepared::new(work))
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if simd::avx2_available() => Prepared::Avx2(simd::Prepared::new(work)),
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi if shani::available() => Prepared::ShaNi(shani::Prepared::new(work)),
            _ => Prepared::Portable(work.block_bytes(0)),
        }
    }

    /// The lowest winning nonce in `start..end`.
    fn scan(&self, work: &WorkUnit, start: u64, end: u64) -> Option<u64> {
        // A candidate passes the first digest word's mask; the full difficulty decides.
        let lowest = |next: &dyn Fn(u64) -> Option<u64>| {
            let mut from = start;
            while from < end {
                let n = next(from)?;
                if work.is_solution(n) {
                    return Some(n);
                }
                from = n + 1;
            }
            None
        };
        match self {
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx512(p) => lowest(&|from| {
                // SAFETY: `Prepared::Avx512` is only built after `simd::avx512_available()`.
                unsafe { simd::first_candidate_avx512(p, work, from, end) }
            }),
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx2(p) => lowest(&|from| {
                // SAFETY: `Prepared::Avx2` is only built after `simd::avx2_available()`.
                unsafe { simd::first_candidate_avx2(p, work, from, end) }
            }),
            #[cfg(target_arch = "x86_64")]
            Prepared::ShaNi(p) => lowest(&|from| {
                // SAFETY: `Prepared::ShaNi` is only built after `shani::available()`.
                unsafe { shani::first_candidate(p, from, end) }
            }),
            Prepared::Portable(block) => {
                let mut block = *block;
                (start..end).find(|&n| {
                    block[NONCE_BYTES].copy_from_slice(&n.to_be_bytes());
                    let mut state = work.midstate;
                    compress256(&mut state, &[block]);
                    meets_difficulty(&state, work.difficulty)
                })
            }
        }
    }
}

/// Searches on CPU threads.
#[derive(Clone, Debug)]
pub struct CpuEngine {
    threads: usize,
    kernel: Kernel,
}

impl CpuEngine {
    /// `threads` workers (at least one) with the fastest kernel this CPU runs.
    pub fn new(threads: usize) -> CpuEngine {
        CpuEngine::with_kernel(threads, Kernel::detect())
    }

    /// `threads` workers with `kernel`, or the portable kernel where this CPU cannot run it.
    pub fn with_kernel(threads: usize, kernel: Kernel) -> CpuEngine {
        let kernel = if kernel.is_available() {
            kernel
        } else {
            Kernel::Portable
        };
        CpuEngine {
            threads: threads.max(1),
            kernel,
        }
    }

    /// One worker per core the OS lets this process use.
    pub fn default_threads() -> usize {
        thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// The kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
}

impl MiningEngine for CpuEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            device: DeviceKind::Cpu,
            adapter: self.kernel.name(),
            backend: "cpu".into(),
            threads: self.threads,
        }
    }

    /// Threads take chunks in increasing order from a shared counter (a thread slowed by other
    /// load on its core just takes fewer), and a thread stops taking chunks once one above a
    /// found nonce would be next. Every chunk below the lowest hit is finished, so the answer
    /// is the lowest winning nonce in the range, whatever the thread count.
    fn search(
        &mut self,
        work: &WorkUnit,
        range: NonceRange,
        control: &SearchControl,
    ) -> Result<Search, EngineError> {
        let prepared = Prepared::new(self.kernel, work);
        let next_chunk = AtomicU64::new(0);
        let best = AtomicU64::new(u64::MAX);
        let worker = || {
            while !control.is_stopped() {
                let index = next_chunk.fetch_add(1, Ordering::Relaxed);
                let Some(start) = index
                    .checked_mul(CHUNK)
                    .and_then(|off| range.start.checked_add(off))
                    .filter(|&s| s < range.end && s < best.load(Ordering::Relaxed))
                else {
                    return;
                };
                let end = start.saturating_add(CHUNK).min(range.end);
                match prepared.scan(work, start, end) {
                    Some(n) => {
                        control.add_hashes(n - start + 1);
                        best.fetch_min(n, Ordering::Relaxed);
                    }
                    None => control.add_hashes(end - start),
                }
            }
        };
        let panicked = thread::scope(|s| {
            let handles: Vec<_> = (0..self.threads).map(|_| s.spawn(worker)).collect();
            // Join every handle: a panicked thread left unjoined would make `scope` panic.
            let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
            joined.iter().any(Result::is_err)
        });
        if panicked {
            return Err(EngineError::WorkerPanicked);
        }
        Ok(match best.into_inner() {
            u64::MAX if control.is_stopped() => Search::Aborted,
            u64::MAX => Search::Exhausted,
            n => Search::Found(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::synthetic_header;

    fn work(difficulty: u32) -> WorkUnit {
        WorkUnit::new(&synthetic_header(difficulty))
    }

    fn lowest(work: &WorkUnit, start: u64, end: u64) -> Option<u64> {
        (start..end).find(|&n| work.header_with(n).meets_own_difficulty())
    }

    #[test]
    fn every_kernel_and_thread_count_finds_the_lowest_hit() {
        let w = work(10);
        let range = NonceRange::new(0xffff_0000, 0xffff_0000 + 3 * CHUNK + 777);
        let expect = lowest(&w, range.start, range.end).expect("a hit in 200k nonces at d=10");
        for kernel in Kernel::ALL {
            if !kernel.is_available() {
                eprintln!(
                    "{}: not testable here (this CPU cannot run it)",
                    kernel.key()
                );
                continue;
            }
            for threads in [1, 2, 3] {
                let control = SearchControl::new();
                let mut engine = CpuEngine::with_kernel(threads, kernel);
                assert_eq!(engine.kernel(), kernel);
                let found = engine.search(&w, range, &control).unwrap();
                assert_eq!(found, Search::Found(expect), "{kernel:?} x{threads}");
                assert!(control.hashes() > expect - range.start);
            }
        }
    }

    /// Issue 22: a burst of load during one sample must not decide the pick. Here avx512
    /// is the faster kernel but the machine is busy during its first two turns.
    #[test]
    fn a_busy_moment_does_not_decide_the_pick() {
        let mut turns = 0;
        let busy_then_idle = |k: Kernel| {
            turns += 1;
            match k {
                Kernel::Avx512 if turns <= 3 => 40.0,
                Kernel::Avx512 => 81.0,
                _ => 57.0,
            }
        };
        let ranked = best_of_rounds(&[Kernel::Avx512, Kernel::ShaNi], 5, busy_then_idle);
        assert_eq!(ranked[0], (Kernel::Avx512, 81.0));
        // One round, as before: the busy sample decided it.
        let mut turns = 0;
        let once = best_of_rounds(&[Kernel::Avx512, Kernel::ShaNi], 1, |k| {
            turns += 1;
            if k == Kernel::Avx512 && turns <= 3 {
                40.0
            } else {
                57.0
            }
        });
        assert_eq!(once[0].0, Kernel::ShaNi);
        assert_eq!(Kernel::from_key("sha-ni"), Some(Kernel::ShaNi));
        assert_eq!(Kernel::from_key("none"), None);
    }

    #[test]
    fn the_measured_pick_is_the_fastest_and_a_slow_kernel_is_never_chosen() {
        // A stand-in measurement where the portable kernel is far slower than the others.
        let rates = |k: Kernel| match k {
            Kernel::Portable => 1.0,
            Kernel::ShaNi => 50.0,
            Kernel::Avx2 => 30.0,
            Kernel::Avx512 => 60.0,
        };
        let ranked = best_of_rounds(&Kernel::ALL, 1, rates);
        assert_eq!(ranked[0], (Kernel::Avx512, 60.0));
        assert_eq!(ranked.last().unwrap().0, Kernel::Portable);
        let ranked = best_of_rounds(&[Kernel::Portable, Kernel::ShaNi], 1, rates);
        assert_eq!(ranked[0].0, Kernel::ShaNi);
        // On this CPU: every kernel it runs was measured, and the pick is the first of them.
        let measured = Kernel::measured();
        assert!(
            measured
                .iter()
                .all(|(k, rate)| k.is_available() && *rate > 0.0)
        );
        assert!(measured.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(Kernel::detect(), measured[0].0);
        for k in Kernel::ALL {
            assert_eq!(
                measured.iter().any(|(m, _)| *m == k),
                k.is_available(),
                "{k:?}"
            );
        }
    }

    #[test]
    fn exhausts_a_range_without_a_hit_and_counts_it() {
        let w = work(60);
        let control = SearchControl::new();
        let range = NonceRange::new(u64::MAX - 2 * CHUNK - 5, u64::MAX);
        let r = CpuEngine::new(2).search(&w, range, &control).unwrap();
        assert_eq!(r, Search::Exhausted);
        assert_eq!(control.hashes(), range.len());
    }

    #[test]
    fn a_stopped_control_aborts() {
        let control = SearchControl::new();
        control.stop();
        let r = CpuEngine::new(2)
            .search(&work(60), NonceRange::all(), &control)
            .unwrap();
        assert_eq!(r, Search::Aborted);
        assert_eq!(control.hashes(), 0);
    }

    #[test]
    fn empty_range_is_exhausted_at_once() {
        let control = SearchControl::new();
        let r = CpuEngine::new(2)
            .search(&work(0), NonceRange::new(5, 5), &control)
            .unwrap();
        assert_eq!(r, Search::Exhausted);
    }
}
