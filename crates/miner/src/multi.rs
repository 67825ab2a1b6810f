//! Every device at once: several engines on one work unit, each on its own chunks of the range.
//!
//! Chunks are handed out in increasing order from one counter, each sized to take its engine
//! about [`CHUNK_TIME`], so a fast GPU and a CPU each stay busy. Once an engine finds a nonce,
//! no chunk above it is handed out and the engines working above it are stopped, while those
//! below it finish theirs: the answer is the lowest winning nonce of the whole range, exactly
//! what one engine alone returns. A stop reaches every engine within its own abort bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::engine::{
    DeviceKind, EngineError, EngineInfo, MiningEngine, NonceRange, Search, SearchControl,
};
use crate::work::WorkUnit;

/// How long an engine's chunk should take: short enough that engines below a find finish
/// soon, long enough that handing out chunks costs nothing.
pub const CHUNK_TIME: Duration = Duration::from_millis(50);
/// An engine's first chunk, before its speed is known: a few milliseconds on one CPU core.
const FIRST_CHUNK: u64 = 1 << 18;
/// Bounds on a chunk, in nonces.
const MIN_CHUNK: u64 = 1 << 16;
const MAX_CHUNK: u64 = 1 << 36;
/// How often the search looks at the caller's stop flag and passes hash counts on.
const WATCH: Duration = Duration::from_millis(2);

/// Several engines as one.
pub struct MultiEngine {
    engines: Vec<Box<dyn MiningEngine>>,
    /// Nonces tried by each engine, over every search; shared with whoever reports rates.
    meters: Arc<Vec<AtomicU64>>,
}

impl MultiEngine {
    /// The engines, the first being the one whose name leads reports.
    pub fn new(engines: Vec<Box<dyn MiningEngine>>) -> MultiEngine {
        let meters = Arc::new(engines.iter().map(|_| AtomicU64::new(0)).collect());
        MultiEngine { engines, meters }
    }

    /// Each engine's description.
    pub fn devices(&self) -> Vec<EngineInfo> {
        self.engines.iter().map(|e| e.info()).collect()
    }

    /// Nonces each engine has tried, in the order of [`MultiEngine::devices`]: a handle that
    /// stays valid while the engine searches on another thread.
    pub fn meters(&self) -> Arc<Vec<AtomicU64>> {
        Arc::clone(&self.meters)
    }
}

/// Where each engine stands during one search.
struct Shared<'a> {
    range: NonceRange,
    /// The first nonce not handed out yet.
    next: Mutex<u64>,
    /// The lowest winning nonce found so far (`u64::MAX`: none).
    best: AtomicU64,
    /// The first nonce of the chunk each engine works on (`u64::MAX`: none).
    working_on: Vec<AtomicU64>,
    /// Each engine's own control: stopped when its chunk lies above a find, or on a stop.
    controls: Vec<SearchControl>,
    caller: &'a SearchControl,
}

impl Shared<'_> {
    /// The next chunk of `size` nonces, if any lies below the best find.
    fn take(&self, size: u64) -> Option<NonceRange> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let start = *next;
        if start >= self.range.end || start >= self.best.load(Ordering::Relaxed) {
            return None;
        }
        let end = start.saturating_add(size).min(self.range.end);
        *next = end;
        Some(NonceRange::new(start, end))
    }

    /// Records a find and stops the engines whose chunks lie above it.
    fn found(&self, nonce: u64) {
        self.best.fetch_min(nonce, Ordering::Relaxed);
        for (working, control) in self.working_on.iter().zip(&self.controls) {
            if working.load(Ordering::Relaxed) > nonce {
                control.stop();
            }
        }
    }

    /// One engine's loop: chunks until none is left below the best find.
    fn run(
        &self,
        i: usize,
        engine: &mut dyn MiningEngine,
        work: &WorkUnit,
    ) -> Result<(), EngineError> {
        let mut size = FIRST_CHUNK;
        while !self.caller.is_stopped() {
            let Some(chunk) = self.take(size) else {
                break;
            };
            self.working_on[i].store(chunk.start, Ordering::Relaxed);
            let started = Instant::now();
            let outcome = engine.search(work, chunk, &self.controls[i]);
            self.working_on[i].store(u64::MAX, Ordering::Relaxed);
            match outcome? {
                Search::Found(nonce) => {
                    self.found(nonce);
                    // Every later chunk lies above this nonce.
                    break;
                }
                Search::Exhausted => {
                    let rate = chunk.len() as f64 / started.elapsed().as_secs_f64().max(1e-6);
                    let next = (rate * CHUNK_TIME.as_secs_f64()) as u64;
                    size = next
                        .clamp(size / 2, size.saturating_mul(2))
                        .clamp(MIN_CHUNK, MAX_CHUNK);
                }
                // Stopped: by the caller, or because its chunk lies above a find.
                Search::Aborted => break,
            }
        }
        Ok(())
    }
}

impl MiningEngine for MultiEngine {
    fn info(&self) -> EngineInfo {
        let threads = self.engines.iter().map(|e| e.info().threads).sum();
        let names: Vec<String> = self
            .engines
            .iter()
            .map(|e| {
                let info = e.info();
                format!("{} {}", info.device, info.adapter)
            })
            .collect();
        EngineInfo {
            device: DeviceKind::Several,
            adapter: names.join(" + "),
            backend: "several".into(),
            threads,
        }
    }

    fn search(
        &mut self,
        work: &WorkUnit,
        range: NonceRange,
        control: &SearchControl,
    ) -> Result<Search, EngineError> {
        let n = self.engines.len();
        let shared = Shared {
            range,
            next: Mutex::new(range.start),
            best: AtomicU64::new(u64::MAX),
            working_on: (0..n).map(|_| AtomicU64::new(u64::MAX)).collect(),
            controls: (0..n).map(|_| SearchControl::new()).collect(),
            caller: control,
        };
        let meters = &self.meters;
        // What each engine's count stood at when last passed on to the caller and the meters.
        let mut reported = vec![0u64; n];
        let mut pass_on = |shared: &Shared<'_>| {
            for (i, c) in shared.controls.iter().enumerate() {
                let now = c.hashes();
                let delta = now - reported[i];
                reported[i] = now;
                control.add_hashes(delta);
                meters[i].fetch_add(delta, Ordering::Relaxed);
            }
        };
        let results: Vec<Result<(), EngineError>> = thread::scope(|s| {
            let handles: Vec<_> = self
                .engines
                .iter_mut()
                .enumerate()
                .map(|(i, engine)| {
                    let shared = &shared;
                    s.spawn(move || shared.run(i, engine.as_mut(), work))
                })
                .collect();
            while !handles.iter().all(|h| h.is_finished()) {
                if control.is_stopped() {
                    shared.controls.iter().for_each(SearchControl::stop);
                }
                pass_on(&shared);
                thread::sleep(WATCH);
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(EngineError::WorkerPanicked)))
                .collect()
        });
        pass_on(&shared);
        results.into_iter().collect::<Result<(), EngineError>>()?;
        Ok(match shared.best.into_inner() {
            u64::MAX if control.is_stopped() => Search::Aborted,
            u64::MAX => Search::Exhausted,
            nonce => Search::Found(nonce),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{CpuEngine, Kernel};
    use crate::work::synthetic_header;

    /// An engine that searches like the CPU engine but `slowdown` times slower, by sleeping.
    struct Slow {
        inner: CpuEngine,
        slowdown: u32,
    }

    impl MiningEngine for Slow {
        fn info(&self) -> EngineInfo {
            EngineInfo {
                device: DeviceKind::Gpu,
                adapter: "slow".into(),
                backend: "cpu".into(),
                threads: 1,
            }
        }

        fn search(
            &mut self,
            work: &WorkUnit,
            range: NonceRange,
            control: &SearchControl,
        ) -> Result<Search, EngineError> {
            let started = Instant::now();
            let r = self.inner.search(work, range, control);
            thread::sleep(started.elapsed() * (self.slowdown - 1));
            r
        }
    }

    fn several() -> MultiEngine {
        MultiEngine::new(vec![
            Box::new(CpuEngine::with_kernel(1, Kernel::Portable)),
            Box::new(CpuEngine::new(1)),
            Box::new(Slow {
                inner: CpuEngine::new(1),
                slowdown: 5,
            }),
        ])
    }

    #[test]
    fn several_engines_find_exactly_the_lowest_nonce_one_engine_finds() {
        let mut multi = several();
        let mut alone = CpuEngine::new(1);
        for (difficulty, start) in [
            (14, 0u64),
            (16, (1 << 32) - 300_000),
            (18, u64::MAX - (3 << 20)),
        ] {
            let work = WorkUnit::new(&synthetic_header(difficulty));
            let range = NonceRange::new(start, start.saturating_add(3 << 20));
            let expect = alone.search(&work, range, &SearchControl::new()).unwrap();
            let control = SearchControl::new();
            let got = multi.search(&work, range, &control).unwrap();
            assert_eq!(got, expect, "d={difficulty} from {start:#x}");
            if let Search::Found(n) = got {
                assert!(
                    control.hashes() > n - start,
                    "every nonce below it was tried"
                );
            }
        }
        // A range with no winner is exhausted, and every nonce of it counted once.
        let work = WorkUnit::new(&synthetic_header(60));
        let range = NonceRange::new(1000, 1000 + (1 << 21));
        let control = SearchControl::new();
        assert_eq!(
            multi.search(&work, range, &control).unwrap(),
            Search::Exhausted
        );
        assert_eq!(control.hashes(), range.len());
        let meters = multi.meters();
        let per_device: Vec<u64> = meters.iter().map(|m| m.load(Ordering::Relaxed)).collect();
        assert!(
            per_device.iter().all(|&h| h > 0),
            "every engine took chunks: {per_device:?}"
        );
    }

    #[test]
    fn a_stop_reaches_every_engine() {
        let mut multi = several();
        let control = Arc::new(SearchControl::new());
        let remote = Arc::clone(&control);
        let worker = thread::spawn(move || {
            let work = WorkUnit::new(&synthetic_header(250));
            (
                multi.search(&work, NonceRange::all(), &remote),
                Instant::now(),
            )
        });
        thread::sleep(Duration::from_millis(300));
        let asked = Instant::now();
        control.stop();
        let (outcome, returned) = worker.join().unwrap();
        assert_eq!(outcome.unwrap(), Search::Aborted);
        // The slow engine's chunk takes five times its CPU time: at most a few hundred ms.
        let took = returned.duration_since(asked);
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(control.hashes() > 0);
    }
}
