//! The CPU engine: every core, each thread on its own chunks of the range.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use mvbc_protocol::header::{HEADER_LEN, NONCE_OFFSET};
use sha2::block_api::compress256;

use crate::engine::{
    DeviceKind, EngineError, EngineInfo, MiningEngine, NonceRange, Search, SearchControl,
};
#[cfg(target_arch = "x86_64")]
use crate::shani;
use crate::work::{WorkUnit, meets_difficulty};

/// Nonces a thread takes at a time. A thread checks the stop flag between chunks, so this
/// bounds how long an abort takes: 2^16 nonces are a few milliseconds on one core.
pub const CHUNK: u64 = 1 << 16;

/// Where the nonce sits in the second SHA-256 block.
const NONCE_BYTES: std::ops::Range<usize> = NONCE_OFFSET - 64..HEADER_LEN - 64;

/// How a thread computes hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// x86-64 SHA instructions, several nonces interleaved, nonce-free rounds precomputed.
    ShaNi,
    /// `sha2`'s `compress256` from the midstate, one nonce at a time (it picks the best backend
    /// the CPU has, and software where there is none).
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if shani::available() {
            return Kernel::ShaNi;
        }
        Kernel::Portable
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi => shani::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::ShaNi => false,
            Kernel::Portable => true,
        }
    }

    /// How the kernel is named in reports.
    pub fn name(self) -> String {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi => format!("sha-ni x{}", shani::LANES),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::ShaNi => "sha-ni".to_string(),
            Kernel::Portable => "portable (sha2 compress256)".to_string(),
        }
    }
}

/// The kernel's per-work-unit state.
enum Prepared {
    #[cfg(target_arch = "x86_64")]
    ShaNi(shani::Prepared),
    Portable([u8; 64]),
}

impl Prepared {
    fn new(kernel: Kernel, work: &WorkUnit) -> Prepared {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi if shani::available() => Prepared::ShaNi(shani::Prepared::new(work)),
            _ => Prepared::Portable(work.block_bytes(0)),
        }
    }

    /// The lowest winning nonce in `start..end`.
    fn scan(&self, work: &WorkUnit, start: u64, end: u64) -> Option<u64> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Prepared::ShaNi(p) => {
                let mut from = start;
                while from < end {
                    // SAFETY: `Prepared::ShaNi` is only built after `shani::available()`.
                    let n = unsafe { shani::first_candidate(p, from, end) }?;
                    if work.is_solution(n) {
                        return Some(n);
                    }
                    from = n + 1;
                }
                None
            }
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
        for kernel in [Kernel::ShaNi, Kernel::Portable] {
            for threads in [1, 2, 3] {
                let control = SearchControl::new();
                let found = CpuEngine::with_kernel(threads, kernel)
                    .search(&w, range, &control)
                    .unwrap();
                assert_eq!(found, Search::Found(expect), "{kernel:?} x{threads}");
                assert!(control.hashes() > expect - range.start);
            }
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
