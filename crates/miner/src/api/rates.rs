//! Hash rates over time: the nonces each device has tried, sampled about once a second for
//! the last [`KEEP`], from which rates over any window up to it are read.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back rates and charts reach.
pub const KEEP: Duration = Duration::from_secs(15 * 60);
/// Cap on the points of one series (one chart line).
pub const MAX_POINTS: usize = 180;
/// Cap on samples kept: one a second for [`KEEP`], and a margin for a fast sampler.
const MAX_SAMPLES: usize = 2 * 15 * 60;

/// The samples of every device's nonce counter.
#[derive(Debug)]
pub struct RateHistory {
    devices: usize,
    /// (when, each device's count then), oldest first.
    samples: VecDeque<(Instant, Vec<u64>)>,
}

/// One chart's data: rates per device at evenly spaced times, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Seconds between points.
    pub step_seconds: u64,
    /// How many seconds before the newest sample each point ends.
    pub ages: Vec<u64>,
    /// For each device, its hashes per second over each step.
    pub rates: Vec<Vec<f64>>,
}

impl RateHistory {
    /// An empty history of `devices` counters.
    pub fn new(devices: usize) -> RateHistory {
        RateHistory {
            devices,
            samples: VecDeque::new(),
        }
    }

    /// Records each device's count at `now`, forgetting samples older than [`KEEP`] (one more
    /// is kept so a full window has both ends). A sample of another length is ignored.
    pub fn record(&mut self, now: Instant, counts: Vec<u64>) {
        if counts.len() != self.devices {
            return;
        }
        if self.samples.back().is_some_and(|(t, _)| now < *t) {
            return;
        }
        self.samples.push_back((now, counts));
        while self.samples.len() > MAX_SAMPLES
            || self.samples.len() > 2
                && self
                    .samples
                    .get(1)
                    .is_some_and(|(t, _)| now.duration_since(*t) >= KEEP)
        {
            self.samples.pop_front();
        }
    }

    /// `device`'s hashes per second over the last `window` (or as much of it as was seen);
    /// zero before two samples.
    pub fn rate(&self, device: usize, window: Duration) -> f64 {
        let Some((now, newest)) = self.samples.back() else {
            return 0.0;
        };
        let Some((then, oldest)) = self
            .samples
            .iter()
            .find(|(t, _)| now.duration_since(*t) <= window)
        else {
            return 0.0;
        };
        let seconds = now.duration_since(*then).as_secs_f64();
        if seconds <= 0.0 {
            return 0.0;
        }
        let (Some(a), Some(b)) = (oldest.get(device), newest.get(device)) else {
            return 0.0;
        };
        b.saturating_sub(*a) as f64 / seconds
    }

    /// Every device's rate over `window` at up to [`MAX_POINTS`] evenly spaced steps of
    /// whole seconds. Steps before the first sample are left out.
    pub fn series(&self, window: Duration) -> Series {
        let window = window.min(KEEP).as_secs().max(1);
        let step = window.div_ceil(MAX_POINTS as u64).max(1);
        let mut series = Series {
            step_seconds: step,
            ages: Vec::new(),
            rates: vec![Vec::new(); self.devices],
        };
        let Some((now, _)) = self.samples.back() else {
            return series;
        };
        // The count at `age` seconds before the newest sample: the latest sample at or before.
        let at = |age: u64| {
            let when = now.checked_sub(Duration::from_secs(age))?;
            self.samples
                .iter()
                .rev()
                .find(|(t, _)| *t <= when)
                .map(|(t, c)| (*t, c))
        };
        let mut age = window;
        while age >= step {
            let end = age - step;
            if let (Some((t0, c0)), Some((t1, c1))) = (at(age), at(end))
                && t1 > t0
            {
                let seconds = t1.duration_since(t0).as_secs_f64();
                series.ages.push(end);
                for (device, rates) in series.rates.iter_mut().enumerate() {
                    rates.push(c1[device].saturating_sub(c0[device]) as f64 / seconds);
                }
            }
            age -= step;
        }
        series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two devices at 100 and 1000 nonces a second, sampled each second for `seconds`.
    fn steady(seconds: u64) -> (RateHistory, Instant) {
        let start = Instant::now();
        let mut h = RateHistory::new(2);
        for s in 0..=seconds {
            h.record(start + Duration::from_secs(s), vec![100 * s, 1000 * s]);
        }
        (h, start + Duration::from_secs(seconds))
    }

    #[test]
    fn rates_over_each_window() {
        let (h, _) = steady(120);
        for window in [10, 60, 900] {
            let w = Duration::from_secs(window);
            assert!((h.rate(0, w) - 100.0).abs() < 1e-9, "{window}");
            assert!((h.rate(1, w) - 1000.0).abs() < 1e-9, "{window}");
        }
        assert_eq!(h.rate(2, Duration::from_secs(10)), 0.0, "no such device");
        assert_eq!(RateHistory::new(1).rate(0, KEEP), 0.0);
    }

    #[test]
    fn a_recent_change_shows_in_the_short_window_first() {
        let start = Instant::now();
        let mut h = RateHistory::new(1);
        let mut count = 0;
        for s in 0..=100 {
            count += if s > 90 { 0 } else { 50 };
            h.record(start + Duration::from_secs(s), vec![count]);
        }
        assert_eq!(h.rate(0, Duration::from_secs(10)), 0.0);
        assert!(h.rate(0, Duration::from_secs(60)) > 30.0);
    }

    #[test]
    fn memory_stays_bounded_and_old_samples_go() {
        let (h, _) = steady(3 * 3600);
        assert!(h.samples.len() <= KEEP.as_secs() as usize + 2);
        let start = Instant::now();
        let mut fast = RateHistory::new(1);
        for ms in 0..10_000u64 {
            fast.record(start + Duration::from_millis(ms), vec![ms]);
        }
        assert!(fast.samples.len() <= MAX_SAMPLES);
        fast.record(start, vec![1]);
        assert_eq!(
            fast.samples.back().unwrap().1,
            vec![9_999],
            "time never runs back"
        );
        fast.record(start + Duration::from_secs(60), vec![1, 2]);
        assert_eq!(
            fast.samples.back().unwrap().1,
            vec![9_999],
            "wrong length ignored"
        );
    }

    #[test]
    fn series_are_capped_evenly_spaced_and_exact() {
        let (h, _) = steady(2000);
        let s = h.series(KEEP);
        assert_eq!(s.step_seconds, 5);
        assert_eq!(s.ages.len(), MAX_POINTS);
        assert_eq!(s.ages.first(), Some(&895));
        assert_eq!(s.ages.last(), Some(&0));
        assert!(s.rates[0].iter().all(|r| (r - 100.0).abs() < 1e-9));
        assert!(s.rates[1].iter().all(|r| (r - 1000.0).abs() < 1e-9));
        let short = h.series(Duration::from_secs(60));
        assert_eq!((short.step_seconds, short.ages.len()), (1, 60));
        // Young history: only the steps it has seen.
        let (young, _) = steady(30);
        let s = young.series(KEEP);
        assert_eq!(s.ages.len(), 6);
        assert!(RateHistory::new(3).series(KEEP).ages.is_empty());
    }
}
