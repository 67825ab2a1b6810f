//! The token bucket: the one rate limit every part of a node uses (the block server's
//! allowances, the dial budget, what each link may send).

use std::time::{Duration, Instant};

/// Tokens that grow at `rate` a second up to `burst`. Spending may take the level below zero,
/// a debt that is waited out before the level is positive again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenBucket {
    level: f64,
    rate: f64,
    burst: f64,
    /// When it was last refilled (`None`: never, so nothing has grown yet).
    at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket: `burst` tokens at once, then `rate` a second.
    pub fn full(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            level: burst,
            rate,
            burst,
            at: None,
        }
    }

    /// Adds what the rate gave since the last refill, up to the burst. Time never runs back: an
    /// earlier `now` adds nothing.
    pub fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let seconds = now.saturating_duration_since(at).as_secs_f64();
            self.level = (self.level + self.rate * seconds).min(self.burst);
        }
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    /// Takes one token, if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.level >= 1.0 {
            self.level -= 1.0;
            true
        } else {
            false
        }
    }

    /// Spends `amount` tokens, into debt if need be.
    pub fn spend(&mut self, amount: f64) {
        self.level -= amount;
    }

    /// How long after the last refill until the level reaches `need` (zero if it has).
    pub fn wait(&self, need: f64) -> Duration {
        if self.level >= need {
            Duration::ZERO
        } else if self.rate > 0.0 {
            Duration::from_secs_f64((need - self.level) / self.rate)
        } else {
            Duration::MAX
        }
    }

    /// Whether it is as full as it gets (as of the last refill).
    pub fn is_full(&self) -> bool {
        self.level >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_debt_is_waited_out() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(2.0, 3.0);
        assert_eq!((0..10).filter(|_| b.take(t0)).count(), 3);
        assert_eq!(b.wait(1.0), Duration::from_millis(500));
        assert!(b.take(t0 + Duration::from_millis(500)));
        assert!(!b.take(t0 + Duration::from_millis(500)));
        b.spend(4.0);
        assert_eq!(b.wait(0.0), Duration::from_secs(2));
        b.refill(t0 + Duration::from_millis(2500));
        assert_eq!(b.wait(0.0), Duration::ZERO);
        b.refill(t0);
        assert_eq!(b.wait(0.0), Duration::ZERO, "time never runs back");
        b.refill(t0 + Duration::from_secs(60));
        assert!(b.is_full());
        assert_eq!(TokenBucket::full(0.0, 0.0).wait(1.0), Duration::MAX);
    }
}
