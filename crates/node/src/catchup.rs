//! Catching up: while a peer whose chain is far ahead serves it, the node downloads and does not
//! mine, so that a joining miner does not spend its first minutes mining blocks below the
//! network's tip that the download then reorgs away (issue 22).
//!
//! A status alone does not stop mining: anyone may announce a huge chain. A download from a
//! peer announcing more than [`CATCH_UP_BLOCKS`] blocks of work beyond ours pauses mining until
//! its first blocks arrive for no longer than what is left of a budget of [`PROOF_GRACE`] per
//! [`UNPROVEN_PAUSE_EVERY`] ([`Allowance`]): pauses that no block proved spend it, so liars,
//! however many, cost a node a tenth of its mining at worst, while a liar found out at once (a
//! status that was not its own) spends next to nothing and leaves the honest download that
//! follows its pause. Once blocks arrive (each one real proof of work, fully validated) the
//! pause is free and lasts while they keep coming, and starts again if they come after it
//! ended: a download that brings nothing for [`STALL`] mines again. The pause is the
//! [`CatchUp`]'s own state ([`CatchUp::paused`]), moved by [`CatchUp::progressed`] and
//! [`CatchUp::tick`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Behind by more than this many blocks of work: download before mining.
pub const CATCH_UP_BLOCKS: u64 = 6;
/// How long downloads that bring no block may keep the node from mining, all told, per
/// [`UNPROVEN_PAUSE_EVERY`].
pub const PROOF_GRACE: Duration = Duration::from_secs(3);
/// The window [`PROOF_GRACE`] is a budget for.
pub const UNPROVEN_PAUSE_EVERY: Duration = Duration::from_secs(30);

/// What is left of the time unproven pauses may take: [`PROOF_GRACE`] per
/// [`UNPROVEN_PAUSE_EVERY`].
#[derive(Clone, Debug, Default)]
pub struct Allowance {
    /// When the current window began, and what pauses no block proved took in it.
    spent: Option<(Instant, Duration)>,
}

impl Allowance {
    /// The grace a catch-up starting at `now` may pause for before a block proves it.
    pub fn left(&self, now: Instant) -> Duration {
        match self.spent {
            Some((since, spent)) if now.saturating_duration_since(since) < UNPROVEN_PAUSE_EVERY => {
                PROOF_GRACE.saturating_sub(spent)
            }
            _ => PROOF_GRACE,
        }
    }

    /// A catch-up ended at `now`: what its pause took while no block proved it is spent.
    pub fn spend(&mut self, catch_up: &CatchUp, now: Instant) {
        let took = catch_up.unproven_pause(now);
        if took.is_zero() {
            return;
        }
        self.spent = match self.spent {
            Some((since, spent)) if now.saturating_duration_since(since) < UNPROVEN_PAUSE_EVERY => {
                Some((since, spent + took))
            }
            _ => Some((now, took)),
        };
    }
}
/// A download whose last block came this long ago no longer keeps the node from mining.
pub const STALL: Duration = Duration::from_secs(10);
/// How often progress is reported.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Whether a chain of `announced` work is far enough beyond ours (`ours`, blocks of
/// `difficulty` leading zero bits) to download before mining.
pub fn far_behind(ours: u128, announced: u128, difficulty: u32) -> bool {
    let block = 1u128.checked_shl(difficulty).unwrap_or(u128::MAX);
    announced.saturating_sub(ours) > block.saturating_mul(u128::from(CATCH_UP_BLOCKS))
}

/// One catch-up: a download from `peer` toward its announced height.
#[derive(Clone, Debug)]
pub struct CatchUp {
    /// Whose chain is downloaded.
    pub peer: SocketAddr,
    /// The height it announced.
    pub target: u64,
    /// Our height when it began.
    pub start_height: u64,
    /// Our height now.
    pub height: u64,
    started: Instant,
    /// How long it may pause before a block proves it.
    grace: Duration,
    /// When its first block arrived, and its last.
    first_block: Option<Instant>,
    last_block: Option<Instant>,
    next_report: Instant,
    /// Whether it keeps the node from mining now.
    paused: bool,
}

/// Where a catch-up stands, for the log and the API.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Whose chain is downloaded.
    pub peer: SocketAddr,
    /// Our height.
    pub height: u64,
    /// The height the peer announced.
    pub target: u64,
    /// Blocks a second since the first arrived; `None` before two reports' worth.
    pub blocks_per_second: Option<f64>,
    /// Time left at that rate.
    pub left: Option<Duration>,
}

impl Progress {
    /// How far, 0 to 1.
    pub fn fraction(&self) -> f64 {
        if self.target == 0 {
            1.0
        } else {
            (self.height as f64 / self.target as f64).min(1.0)
        }
    }
}

impl CatchUp {
    /// Starts catching up with `peer`, which announced `target`, from `height`, pausing mining
    /// for `grace` at most until a block proves the peer's chain.
    pub fn new(
        peer: SocketAddr,
        target: u64,
        height: u64,
        now: Instant,
        grace: Duration,
    ) -> CatchUp {
        CatchUp {
            peer,
            target,
            start_height: height,
            height,
            started: now,
            grace,
            first_block: None,
            last_block: None,
            next_report: now + PROGRESS_EVERY,
            paused: true,
        }
    }

    /// Blocks from the peer took our chain to `height`: the pause goes on, or starts again if
    /// it had ended (then `true`: a search running must stop).
    pub fn progressed(&mut self, height: u64, now: Instant) -> bool {
        self.height = height;
        self.target = self.target.max(height);
        self.first_block.get_or_insert(now);
        self.last_block = Some(now);
        !std::mem::replace(&mut self.paused, true)
    }

    /// Whether it keeps the node from mining.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Ends the pause at `now` if its grace ran out with no block, or its blocks stalled;
    /// `true` when it ends now.
    pub fn tick(&mut self, now: Instant) -> bool {
        if self.paused && !self.pauses_mining(now) {
            self.paused = false;
            return true;
        }
        false
    }

    /// Whether a block has arrived: the peer's chain is real.
    pub fn proven(&self) -> bool {
        self.first_block.is_some()
    }

    /// Whether its pause, by the clock, lasts at `now`.
    fn pauses_mining(&self, now: Instant) -> bool {
        match self.last_block {
            Some(last) => now.saturating_duration_since(last) < STALL,
            None => now.saturating_duration_since(self.started) < self.grace,
        }
    }

    /// When it next wants the clock: a report, or, while paused, the end of its pause (once
    /// that has passed and the node mines again, only reports).
    pub fn wakeup(&self) -> Instant {
        let pause_ends = match self.last_block {
            Some(last) => last + STALL,
            None => self.started + self.grace,
        };
        if self.paused {
            self.next_report.min(pause_ends)
        } else {
            self.next_report
        }
    }

    /// Where it stands at `now`.
    pub fn progress(&self, now: Instant) -> Progress {
        let rate = self.first_block.and_then(|first| {
            let secs = now.saturating_duration_since(first).as_secs_f64();
            (secs >= 1.0).then(|| (self.height - self.start_height) as f64 / secs)
        });
        let left = rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(self.target.saturating_sub(self.height) as f64 / r));
        Progress {
            peer: self.peer,
            height: self.height,
            target: self.target,
            blocks_per_second: rate,
            left,
        }
    }

    /// Its progress when a report is due at `now` and a block has arrived (before that, the
    /// line saying it began is all there is to say).
    pub fn report(&mut self, now: Instant) -> Option<Progress> {
        if now < self.next_report {
            return None;
        }
        self.next_report = now + PROGRESS_EVERY;
        self.proven().then(|| self.progress(now))
    }

    /// How long its pause kept the node from mining with no block to prove it, up to `now`.
    fn unproven_pause(&self, now: Instant) -> Duration {
        if self.proven() {
            Duration::ZERO
        } else {
            now.saturating_duration_since(self.started).min(self.grace)
        }
    }

    /// How long it has run.
    pub fn took(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], 2607))
    }

    #[test]
    fn far_behind_means_more_than_a_few_blocks_of_work() {
        let block = 1u128 << 20;
        assert!(!far_behind(0, 6 * block, 20));
        assert!(far_behind(0, 6 * block + 1, 20));
        assert!(
            !far_behind(10 * block, 5 * block, 20),
            "ahead is not behind"
        );
        assert!(far_behind(0, u128::MAX, 100));
        assert!(
            !far_behind(0, u128::MAX, 200),
            "no overflow at any difficulty"
        );
    }

    #[test]
    fn an_unproven_download_pauses_mining_only_for_its_grace() {
        let t0 = Instant::now();
        let mut c = CatchUp::new(peer(), 5_000, 0, t0, PROOF_GRACE);
        assert!(c.paused());
        assert_eq!(c.wakeup(), t0 + PROOF_GRACE);
        assert!(!c.tick(t0 + PROOF_GRACE - Duration::from_millis(1)));
        assert!(c.tick(t0 + PROOF_GRACE), "the grace ran out");
        assert!(!c.paused() && !c.tick(t0 + PROOF_GRACE));
        assert_eq!(
            c.wakeup(),
            t0 + PROGRESS_EVERY,
            "a pause that ended wants no clock"
        );
        assert!(!c.proven());
        // Blocks after all: the chain is real, the pause starts again.
        assert!(c.progressed(10, t0 + PROOF_GRACE));
        assert!(c.paused() && c.proven());
    }

    #[test]
    fn blocks_keep_the_pause_until_they_stall_and_progress_reads_as_a_user_expects() {
        let t0 = Instant::now();
        let mut c = CatchUp::new(peer(), 5_000, 100, t0, PROOF_GRACE);
        assert!(
            !c.progressed(600, t0 + Duration::from_secs(1)),
            "paused already"
        );
        let t = t0 + Duration::from_secs(11);
        c.progressed(5_100, t);
        assert!(!c.tick(t + STALL - Duration::from_millis(1)));
        assert!(c.tick(t + STALL), "the blocks stalled");
        let p = c.progress(t);
        assert_eq!(
            (p.height, p.target),
            (5_100, 5_100),
            "a longer chain raises the target"
        );
        assert_eq!(p.blocks_per_second, Some(500.0));
        assert_eq!(p.left, Some(Duration::ZERO));
        assert!((p.fraction() - 1.0).abs() < 1e-9);
    }

    /// Pauses no block proved share one budget: a liar found out at once leaves the rest of
    /// it to the next catch-up; one that ran its grace out leaves nothing for a while.
    #[test]
    fn unproven_pauses_share_a_budget_and_proven_ones_cost_nothing() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut allowance = Allowance::default();
        assert_eq!(allowance.left(t0), PROOF_GRACE);
        let quick_liar = CatchUp::new(peer(), 1_000, 0, t0, allowance.left(t0));
        allowance.spend(&quick_liar, t0 + ms(10));
        assert_eq!(allowance.left(t0 + ms(10)), PROOF_GRACE - ms(10));
        let mut honest = CatchUp::new(peer(), 30, 0, t0 + ms(10), allowance.left(t0 + ms(10)));
        honest.progressed(30, t0 + ms(500));
        allowance.spend(&honest, t0 + ms(600));
        assert_eq!(
            allowance.left(t0 + ms(600)),
            PROOF_GRACE - ms(10),
            "proven: free"
        );
        let slow_liar = CatchUp::new(peer(), 1_000, 30, t0 + ms(600), allowance.left(t0));
        allowance.spend(&slow_liar, t0 + ms(3_600));
        assert_eq!(allowance.left(t0 + ms(3_600)), Duration::ZERO, "spent");
        assert_eq!(
            allowance.left(t0 + ms(10) + UNPROVEN_PAUSE_EVERY),
            PROOF_GRACE,
            "a new window"
        );
    }

    #[test]
    fn reports_come_every_few_seconds() {
        let t0 = Instant::now();
        let mut c = CatchUp::new(peer(), 1_000, 0, t0, PROOF_GRACE);
        assert!(
            c.report(t0 + PROGRESS_EVERY).is_none(),
            "nothing to report before a block"
        );
        c.progressed(10, t0);
        assert!(c.report(t0).is_none());
        assert!(c.report(t0 + 2 * PROGRESS_EVERY).is_some());
        assert!(c.report(t0 + 2 * PROGRESS_EVERY).is_none());
        assert!(c.report(t0 + 3 * PROGRESS_EVERY).is_some());
    }
}
