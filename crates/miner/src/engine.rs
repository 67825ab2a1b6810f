//! The engine interface every nonce search goes through, and the CPU check of every result.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::work::WorkUnit;

/// A half-open range of nonces, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonceRange {
    /// First nonce to try.
    pub start: u64,
    /// One past the last nonce to try.
    pub end: u64,
}

impl NonceRange {
    /// `start..end`; empty when `end <= start`.
    pub fn new(start: u64, end: u64) -> NonceRange {
        NonceRange { start, end }
    }

    /// Every nonce but `u64::MAX`.
    pub fn all() -> NonceRange {
        NonceRange::new(0, u64::MAX)
    }

    /// Number of nonces in the range.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no nonce.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// The lowest winning nonce in the range.
    Found(u64),
    /// No nonce in the range wins.
    Exhausted,
    /// [`SearchControl::stop`] was called before the range was done.
    Aborted,
}

/// Shared between a search and whoever watches it: a stop flag, a hash counter, and a count
/// of answers the CPU check refused.
#[derive(Debug, Default)]
pub struct SearchControl {
    stop: AtomicBool,
    hashes: AtomicU64,
    refused: AtomicU64,
}

impl SearchControl {
    /// A fresh control: not stopped, no hashes counted.
    pub fn new() -> SearchControl {
        SearchControl::default()
    }

    /// Asks the running search to return [`Search::Aborted`] soon.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`SearchControl::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Clears the stop flag, so the control can serve the next search.
    pub fn resume(&self) {
        self.stop.store(false, Ordering::Relaxed);
    }

    /// Nonces tried so far, across every search that used this control.
    pub fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    /// Engines call this as they finish batches of nonces.
    pub fn add_hashes(&self, n: u64) {
        self.hashes.fetch_add(n, Ordering::Relaxed);
    }

    /// "Winning" nonces an engine returned that [`search_verified`] refused, across every
    /// search that used this control: zero unless an engine is wrong.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// What kind of hardware an engine runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// CPU threads.
    Cpu,
    /// A GPU through wgpu.
    Gpu,
    /// Several devices at once ([`crate::MultiEngine`]).
    Several,
    /// No device: a node that leaves the mining to its pool's workers ([`IdleEngine`]).
    None,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
            DeviceKind::Several => "all",
            DeviceKind::None => "none",
        })
    }
}

/// What an engine reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    /// CPU or GPU.
    pub device: DeviceKind,
    /// The GPU adapter and backend, or the CPU kernel ("sha-ni x2", "portable").
    pub adapter: String,
    /// The GPU's backend ("Vulkan", "Gl", ...), or "cpu".
    pub backend: String,
    /// Worker threads (1 for the GPU engine's host side).
    pub threads: usize,
}

impl EngineInfo {
    /// "sha-ni x3, 2 threads" for the CPU; the adapter and backend for a GPU; every device for
    /// several.
    pub fn describe(&self) -> String {
        match self.device {
            DeviceKind::Cpu if self.threads == 1 => format!("{}, 1 thread", self.adapter),
            DeviceKind::Cpu => format!("{}, {} threads", self.adapter, self.threads),
            DeviceKind::Gpu | DeviceKind::Several | DeviceKind::None => self.adapter.clone(),
        }
    }
}

/// What went wrong on a GPU, as wgpu said it or as the engine found it.
#[derive(Debug, thiserror::Error)]
pub enum GpuFailure {
    /// The device reported an error of its own (lost, out of memory, a validation error).
    #[error("{0}")]
    Device(wgpu::Error),
    /// Waiting for the device failed.
    #[error("{0}")]
    Poll(#[from] wgpu::PollError),
    /// A result buffer would not map.
    #[error("{0}")]
    Map(#[from] wgpu::BufferAsyncError),
    /// A mapped result buffer could not be read.
    #[error("{0}")]
    MapRange(#[from] wgpu::MapRangeError),
    /// The device said a result buffer was mapped, then it was not.
    #[error("readback was not mapped")]
    NotMapped,
    /// A tuning this engine cannot run.
    #[error("unsupported tuning: {0}")]
    UnsupportedTuning(crate::gpu::Tuning),
    /// At the tuning the search picked, the GPU's results differ from the CPU's.
    #[error("the GPU's results disagree with the CPU's ({0})")]
    Disagrees(crate::gpu::Tuning),
}

/// Why an engine could not search.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The GPU device failed, or could not be used as asked.
    #[error("GPU error: {0}")]
    Gpu(#[from] GpuFailure),
    /// The engine answered a nonce outside the range it was given.
    #[error("the engine answered nonce {nonce}, outside the range it was asked to search")]
    OutOfRange {
        /// The nonce it answered.
        nonce: u64,
    },
    /// A search that should have run until stopped ended by itself.
    #[error("the search ended by itself ({0:?}) before it was stopped")]
    EndedEarly(Search),
    /// A worker thread panicked.
    #[error("a CPU mining thread panicked")]
    WorkerPanicked,
}

/// A nonce search over a [`WorkUnit`].
pub trait MiningEngine: Send {
    /// The device this engine runs on.
    fn info(&self) -> EngineInfo;

    /// Searches `range` for the lowest nonce that meets `work.difficulty`. Returns
    /// [`Search::Aborted`] promptly once `control` is stopped, and counts tried nonces in it.
    ///
    /// Callers use [`search_verified`], which checks what this returns.
    fn search(
        &mut self,
        work: &WorkUnit,
        range: NonceRange,
        control: &SearchControl,
    ) -> Result<Search, EngineError>;
}

/// The engine of `--device none`: it hashes nothing and waits to be stopped, so a node whose
/// pool's workers do the mining keeps its own search (and so its jobs for them) without
/// spending a core on it.
#[derive(Debug, Default)]
pub struct IdleEngine;

/// How often an idle search looks whether it was stopped.
const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl MiningEngine for IdleEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            device: DeviceKind::None,
            adapter: "no device: the pool's workers mine".into(),
            backend: "none".into(),
            threads: 0,
        }
    }

    fn search(
        &mut self,
        _: &WorkUnit,
        _: NonceRange,
        control: &SearchControl,
    ) -> Result<Search, EngineError> {
        while !control.is_stopped() {
            std::thread::sleep(IDLE_POLL);
        }
        Ok(Search::Aborted)
    }
}

/// Searches with `engine` and checks every nonce it finds with a full `sha2::Sha256` of the
/// header before returning it. A nonce that fails the check is logged as an error, counted in
/// [`SearchControl::refused`], and never returned: the search goes on after it.
pub fn search_verified(
    engine: &mut dyn MiningEngine,
    work: &WorkUnit,
    range: NonceRange,
    control: &SearchControl,
) -> Result<Search, EngineError> {
    let mut range = range;
    loop {
        match engine.search(work, range, control)? {
            Search::Found(nonce) => {
                let hash = work.header_with(nonce).hash();
                if range.start <= nonce
                    && nonce < range.end
                    && hash.meets_difficulty(work.difficulty)
                {
                    return Ok(Search::Found(nonce));
                }
                control.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    engine = %engine.info().adapter,
                    nonce,
                    %hash,
                    difficulty = work.difficulty,
                    "engine returned a nonce that fails the CPU check; ignoring it"
                );
                if nonce < range.start || nonce >= range.end {
                    return Err(EngineError::OutOfRange { nonce });
                }
                range.start = nonce + 1;
            }
            other => return Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::synthetic_header;

    /// An engine that answers whatever it was told to, like a broken GPU driver might.
    struct Liar(Vec<u64>);

    impl MiningEngine for Liar {
        fn info(&self) -> EngineInfo {
            EngineInfo {
                device: DeviceKind::Gpu,
                adapter: "liar".into(),
                backend: "none".into(),
                threads: 1,
            }
        }

        fn search(
            &mut self,
            _: &WorkUnit,
            _: NonceRange,
            _: &SearchControl,
        ) -> Result<Search, EngineError> {
            Ok(self.0.pop().map_or(Search::Exhausted, Search::Found))
        }
    }

    fn work() -> WorkUnit {
        WorkUnit::new(&synthetic_header(16))
    }

    #[test]
    fn a_wrong_nonce_is_counted_and_never_returned() {
        let w = work();
        let good = (0..)
            .find(|&n| w.header_with(n).meets_own_difficulty())
            .unwrap();
        let bad = good - 1; // `good` is the lowest winner, so the nonce before it loses
        let mut liar = Liar(vec![good, bad]); // answers `bad` first
        let control = SearchControl::new();
        let r = search_verified(&mut liar, &w, NonceRange::all(), &control);
        assert_eq!(r.unwrap(), Search::Found(good));
        assert_eq!(control.refused(), 1);

        let mut liar = Liar(vec![bad]);
        let r = search_verified(&mut liar, &w, NonceRange::all(), &SearchControl::new());
        assert_eq!(r.unwrap(), Search::Exhausted);
    }

    #[test]
    fn a_nonce_outside_the_range_is_an_error() {
        let w = work();
        let good = (0..)
            .find(|&n| w.header_with(n).meets_own_difficulty())
            .unwrap();
        let mut liar = Liar(vec![good]);
        let range = NonceRange::new(good + 1, good + 100);
        let r = search_verified(&mut liar, &w, range, &SearchControl::new());
        assert!(matches!(r, Err(EngineError::OutOfRange { nonce }) if nonce == good));
    }
}
