//! Hash rates over time: the nonces each device has tried, and how long the node has mined,
//! sampled about once a second for the last [`KEEP`], from which rates over any window up to it
//! are read: over the window's wall time for charts, over its mining time for what a miner
//! reads as the engine's speed (xmrig's 10 s / 60 s / 15 min), which idle spells do not drag
//! down.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back rates and charts reach.
pub const KEEP: Duration = Duration::from_secs(15 * 60);
/// Cap on the points of one series (one chart line).
pub const MAX_POINTS: usize = 180;
/// Less mining than this in a window gives no mining rate: too little to say.
pub const MIN_MINED: Duration = Duration::from_millis(500);
/// Cap on samples kept: one a second for [`KEEP`], and a margin for a fast sampler.
const MAX_SAMPLES: usize = 2 * 15 * 60;

/// The samples of every device's nonce counter.
#[derive(Debug)]
pub struct RateHistory {
    devices: usize,
    /// (when, each device's count then, time spent mining until then), oldest first.
    samples: VecDeque<(Instant, Vec<u64>, Duration)>,
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

    /// Records each device's count at `now` and the time mined so far (`mined`), forgetting
    /// samples older than [`KEEP`] (one more is kept so a full window has both ends). A sample
    /// of another length is ignored.
    pub fn record(&mut self, now: Instant, counts: Vec<u64>, mined: Duration) {
        if counts.len() != self.devices {
            return;
        }
        if self.samples.back().is_some_and(|(t, _, _)| now < *t) {
            return;
        }
        self.samples.push_back((now, counts, mined));
        while self.samples.len() > MAX_SAMPLES
            || self.samples.len() > 2
                && self
                    .samples
                    .get(1)
                    .is_some_and(|(t, _, _)| now.duration_since(*t) >= KEEP)
        {
            self.samples.pop_front();
        }
    }

    /// `device`'s hashes per second over the last `window` (or as much of it as was seen);
    /// zero before two samples.
    pub fn rate(&self, device: usize, window: Duration) -> f64 {
        self.over(device, window, |then, now, _, _| now.duration_since(then))
            .unwrap_or(0.0)
    }

    /// `device`'s hashes per second of mining over the last `window`: idle time left out.
    /// `None` when the window holds less than [`MIN_MINED`] of mining.
    pub fn mining_rate(&self, device: usize, window: Duration) -> Option<f64> {
        self.over(device, window, |_, _, before, after| {
            after.saturating_sub(before)
        })
        .filter(|_| self.mined(window) >= MIN_MINED)
    }

    /// Time mined over the last `window`.
    pub fn mined(&self, window: Duration) -> Duration {
        match (self.samples.back(), self.oldest_within(window)) {
            (Some((_, _, after)), Some((_, _, before))) => after.saturating_sub(*before),
            _ => Duration::ZERO,
        }
    }

    fn oldest_within(&self, window: Duration) -> Option<&(Instant, Vec<u64>, Duration)> {
        let (now, _, _) = self.samples.back()?;
        self.samples
            .iter()
            .find(|(t, _, _)| now.duration_since(*t) <= window)
    }

    /// `device`'s nonces over the last `window`, divided by the time `span` gives from the
    /// window's two ends (when, mined so far): `None` when that is zero.
    fn over(
        &self,
        device: usize,
        window: Duration,
        span: impl Fn(Instant, Instant, Duration, Duration) -> Duration,
    ) -> Option<f64> {
        let (now, newest, mined_now) = self.samples.back()?;
        let (then, oldest, mined_then) = self.oldest_within(window)?;
        let seconds = span(*then, *now, *mined_then, *mined_now).as_secs_f64();
        let (a, b) = (oldest.get(device)?, newest.get(device)?);
        (seconds > 0.0).then(|| b.saturating_sub(*a) as f64 / seconds)
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
        let Some((now, _, _)) = self.samples.back() else {
            return series;
        };
        // The count at `age` seconds before the newest sample: the latest sample at or before.
        let at = |age: u64| {
            let when = now.checked_sub(Duration::from_secs(age))?;
            self.samples
                .iter()
                .rev()
                .find(|(t, _, _)| *t <= when)
                .map(|(t, c, _)| (*t, c))
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
            h.record(
                start + Duration::from_secs(s),
                vec![100 * s, 1000 * s],
                Duration::from_secs(s),
            );
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
            h.record(
                start + Duration::from_secs(s),
                vec![count],
                Duration::from_secs(s),
            );
        }
        assert_eq!(h.rate(0, Duration::from_secs(10)), 0.0);
        assert!(h.rate(0, Duration::from_secs(60)) > 30.0);
    }

    /// Issue 22: `34.9 MH/s average` was printed for an engine at 150.5 MH/s, idle time
    /// included. Over mining time, a half-idle minute still reads as the engine's speed.
    #[test]
    fn the_mining_rate_leaves_idle_time_out() {
        let start = Instant::now();
        let mut h = RateHistory::new(1);
        let (mut count, mut mined) = (0, Duration::ZERO);
        for s in 0..=60 {
            // Mines at 1,000 a second in the first ten seconds of every twenty, idles after.
            if s > 0 && (s - 1) / 10 % 2 == 0 {
                count += 1_000;
                mined += Duration::from_secs(1);
            }
            h.record(start + Duration::from_secs(s), vec![count], mined);
        }
        let minute = Duration::from_secs(60);
        assert!(
            (h.rate(0, minute) - 500.0).abs() < 1e-9,
            "wall time halves it"
        );
        assert_eq!(h.mining_rate(0, minute), Some(1_000.0));
        assert_eq!(h.mined(minute), Duration::from_secs(30));
        // The last ten seconds were idle: no mining rate to give.
        assert_eq!(h.mining_rate(0, Duration::from_secs(10)), None);
        assert_eq!(RateHistory::new(1).mining_rate(0, minute), None);
    }

    #[test]
    fn memory_stays_bounded_and_old_samples_go() {
        let (h, _) = steady(3 * 3600);
        assert!(h.samples.len() <= KEEP.as_secs() as usize + 2);
        let start = Instant::now();
        let mut fast = RateHistory::new(1);
        for ms in 0..10_000u64 {
            fast.record(
                start + Duration::from_millis(ms),
                vec![ms],
                Duration::from_millis(ms),
            );
        }
        assert!(fast.samples.len() <= MAX_SAMPLES);
        fast.record(start, vec![1], Duration::ZERO);
        assert_eq!(
            fast.samples.back().unwrap().1,
            vec![9_999],
            "time never runs back"
        );
        fast.record(start + Duration::from_secs(60), vec![1, 2], Duration::ZERO);
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
