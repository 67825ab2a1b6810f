//! The pool side of a node, as a state machine without I/O (ADR 0016): workers that only hash
//! connect to the node's pool port, and the farm hands each its own job, checks every share,
//! tunes each connection's share difficulty, finds blocks among the shares, and keeps each
//! worker's rates from the work its shares prove.
//!
//! Each job is the node's next block with **the reward paid to the worker's own address**
//! (solo through the node, like ckpool's `--btcsolo`: no share accounting to trust, no motive
//! to withhold a block), under the connection's own extranonce, so no two connections ever
//! search the same header and nonce. A new tip, or new payments, bring every worker a clean
//! job at once; shares of earlier jobs are stale.
//!
//! Bounds, each against a worker that lies or floods:
//! - at most [`MAX_WORKERS`] connections; when they are all taken, a newcomer takes the place
//!   of the one that has waited longest without authorizing, so connections without the token
//!   cannot keep workers out;
//! - a connection must subscribe and authorize within [`HELLO_TIME`];
//! - a share must name a job of its own connection that is still kept ([`JOBS_KEPT`]), must
//!   not repeat, and must meet the job's share difficulty, never below
//!   [`MIN_SHARE_DIFFICULTY`]; [`MAX_INVALID_RUN`] invalid requests in a row end the
//!   connection;
//! - each job remembers at most [`MAX_SHARES_PER_JOB`] shares; the socket layer reads at most
//!   a few lines a second from each connection, so the farm's work is bounded by connections;
//! - workers' statistics are kept for [`MAX_WORKERS_KEPT`] names, the oldest idle ones let go.
//!
//! The farm reads no clock: every input comes with the time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctutils::CtEq;
use mvbc_protocol::stratum::{self, Call, Refused, Request, Subscribed, ToWorker, code};
use mvbc_protocol::{Address, Block, BlockHeader, Hash256};
use serde_json::Value;

use crate::template::Template;

/// The driver's name for a connection.
pub type ConnId = u64;

/// Shares a minute each connection's difficulty is tuned to.
pub const TARGET_SHARES_PER_MINUTE: f64 = 20.0;
/// The difficulty is tuned again after this long...
pub const RETARGET_AFTER: Duration = Duration::from_secs(60);
/// ...or after this many shares, whichever comes first.
pub const RETARGET_SHARES: u32 = 20;
/// At most this many bits up at one retarget (x4), and [`MAX_STEP_DOWN`] down (/2).
pub const MAX_STEP_UP: u32 = 2;
/// At most this many bits down at one retarget.
pub const MAX_STEP_DOWN: u32 = 1;
/// No share is easier than this: each share costs the node a hash and a line, and a worker
/// must not make it check shares that prove nothing.
pub const MIN_SHARE_DIFFICULTY: u32 = 8;
/// A new connection's first share difficulty is this many bits under the network's: easy
/// enough that a CPU worker shows its rate within a minute, and tuned up within seconds on a
/// GPU.
pub const START_BELOW_NETWORK: u32 = 6;
/// Jobs each connection keeps; a share for an older one is stale.
pub const JOBS_KEPT: usize = 4;
/// Shares each job remembers, to refuse duplicates; beyond them the job takes no more.
pub const MAX_SHARES_PER_JOB: usize = 4_096;
/// Invalid requests in a row (malformed, unknown job, duplicate, too easy) that end the
/// connection.
pub const MAX_INVALID_RUN: u32 = 10;
/// Time to subscribe and authorize.
pub const HELLO_TIME: Duration = Duration::from_secs(15);
/// A job older than this is made anew (a fresh timestamp, a clean nonce space).
pub const JOB_REFRESH: Duration = Duration::from_secs(300);
/// Connections the farm holds; beyond them a newcomer takes the place of one that has not
/// authorized, or is refused.
pub const MAX_WORKERS: usize = 2_048;
/// Workers (address and name) whose statistics are kept.
pub const MAX_WORKERS_KEPT: usize = 4_096;
/// The rates' buckets: [`BUCKET`] long, an hour of them.
const BUCKET: Duration = Duration::from_secs(10);
const BUCKETS: usize = 361;
/// The windows rates are given over: 1 minute, 5 minutes, an hour.
pub const RATE_WINDOWS: [Duration; 3] = [
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(3_600),
];

/// What the driver is to do.
#[derive(Clone, Debug, PartialEq)]
pub enum FarmEffect {
    /// Send this to connection `conn`.
    Send(ConnId, ToWorker),
    /// Close the connection.
    Close(ConnId),
    /// A share met the network's difficulty: a block, to check and add like a mined one.
    Block {
        /// The block.
        block: Block,
        /// Who found it: `ADDRESS.worker`.
        worker: String,
    },
}

/// A worker's name: the address its blocks pay and what it calls itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerKey {
    /// Where its rewards go.
    pub address: Address,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for WorkerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.address, self.name)
    }
}

/// What the API shows of a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerInfo {
    /// Who.
    pub key: WorkerKey,
    /// Connections open under this name now.
    pub connections: u32,
    /// Hashes a second its accepted shares prove, over each of [`RATE_WINDOWS`] (over the
    /// time since it was first seen, when shorter).
    pub rates: [f64; 3],
    /// Shares accepted.
    pub accepted: u64,
    /// Shares refused (malformed, unknown job, duplicate, too easy).
    pub rejected: u64,
    /// Shares of a job that was no longer current.
    pub stale: u64,
    /// The most leading zero bits a share of it had.
    pub best_share: u32,
    /// Blocks its shares were.
    pub blocks: u64,
    /// Blocks its accepted work was worth at the network's difficulty.
    pub expected_blocks: f64,
    /// Current share difficulty of its newest connection.
    pub difficulty: u32,
    /// Seconds since its last accepted share.
    pub last_share_seconds: Option<f64>,
}

/// A worker's statistics.
#[derive(Debug)]
struct Stats {
    accepted: u64,
    rejected: u64,
    stale: u64,
    best_share: u32,
    blocks: u64,
    expected_blocks: f64,
    first_seen: Instant,
    last_seen: Instant,
    last_share: Option<Instant>,
    connections: u32,
    difficulty: u32,
    /// Work (expected hashes) of accepted shares per [`BUCKET`], newest last, with the
    /// bucket's number (time since `first_seen` / [`BUCKET`]).
    buckets: VecDeque<(u64, f64)>,
}

impl Stats {
    fn new(now: Instant) -> Stats {
        Stats {
            accepted: 0,
            rejected: 0,
            stale: 0,
            best_share: 0,
            blocks: 0,
            expected_blocks: 0.0,
            first_seen: now,
            last_seen: now,
            last_share: None,
            connections: 0,
            difficulty: 0,
            buckets: VecDeque::new(),
        }
    }

    fn bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.first_seen).as_secs() / BUCKET.as_secs()
    }

    fn add_work(&mut self, now: Instant, work: f64) {
        let at = self.bucket(now);
        match self.buckets.back_mut() {
            Some((b, w)) if *b == at => *w += work,
            _ => self.buckets.push_back((at, work)),
        }
        while self.buckets.len() > BUCKETS {
            self.buckets.pop_front();
        }
    }

    /// Hashes a second over `window` ending `now` (over the time since first seen, when
    /// shorter): the work of the buckets the window reaches, over the time they cover.
    fn rate(&self, now: Instant, window: Duration) -> f64 {
        let seen = now.saturating_duration_since(self.first_seen);
        let n = (window.as_secs() / BUCKET.as_secs()).max(1);
        let current = self.bucket(now);
        let partial = Duration::from_secs(seen.as_secs() % BUCKET.as_secs())
            + Duration::from_nanos(u64::from(seen.subsec_nanos()));
        let span = seen.min(BUCKET * (n as u32 - 1) + partial);
        if span.is_zero() {
            return 0.0;
        }
        let work = self
            .buckets
            .iter()
            .filter(|(b, _)| b + n > current)
            .fold(0.0, |sum, (_, w)| sum + w);
        work / span.as_secs_f64()
    }
}

/// One job handed to a connection.
#[derive(Debug)]
struct Job {
    id: u64,
    /// The work it was made from (its generation), for staleness.
    generation: u64,
    template: Arc<Template>,
    header: BlockHeader,
    /// Its share difficulty.
    difficulty: u32,
    shares: HashSet<u64>,
    made: Instant,
}

/// Difficulty tuning.
#[derive(Debug)]
struct Vardiff {
    since: Instant,
    shares: u32,
}

/// A connection.
#[derive(Debug)]
struct Conn {
    from: SocketAddr,
    opened: Instant,
    subscribed: Option<Subscribed>,
    worker: Option<WorkerKey>,
    difficulty: u32,
    /// The share difficulty it was last told: `mining.set_difficulty` goes only with a job
    /// whose difficulty differs.
    told: Option<u32>,
    jobs: VecDeque<Job>,
    /// The id its next job gets: ids are the connection's own, so an id under it was one of
    /// its jobs.
    next_job: u64,
    vardiff: Vardiff,
    invalid_run: u32,
}

/// The farm: the connections, their jobs, the work they share and the workers' statistics.
pub struct Farm {
    /// SHA-256 of the token workers must present, if any.
    token: Option<Hash256>,
    /// The work on the tip now, and its generation.
    work: Option<Arc<Template>>,
    generation: u64,
    /// The network's difficulty (of the last work).
    network_difficulty: u32,
    conns: HashMap<ConnId, Conn>,
    extranonces: HashSet<u16>,
    next_extranonce: u16,
    next_session: u64,
    workers: HashMap<WorkerKey, Stats>,
    effects: Vec<FarmEffect>,
}

/// Why a share was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Stale,
    Invalid,
}

impl Farm {
    /// A farm whose workers must present `token`, if one is given, on a network of
    /// `difficulty`.
    pub fn new(token: Option<&str>, difficulty: u32, session_seed: u64) -> Farm {
        Farm {
            token: token.map(|t| mvbc_protocol::hash::sha256(t.as_bytes())),
            work: None,
            generation: 0,
            network_difficulty: difficulty,
            conns: HashMap::new(),
            extranonces: HashSet::new(),
            next_extranonce: (session_seed >> 16) as u16,
            next_session: session_seed,
            workers: HashMap::new(),
            effects: Vec::new(),
        }
    }

    /// What the driver is to do now, oldest first.
    pub fn take_effects(&mut self) -> Vec<FarmEffect> {
        std::mem::take(&mut self.effects)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether the farm has work to hand out.
    pub fn has_work(&self) -> bool {
        self.work.is_some()
    }

    /// A connection opened from `from`; `false`: close it. With [`MAX_WORKERS`] connections
    /// open, it takes the place of the one that has waited longest without authorizing (which
    /// is closed), and is refused when every one has authorized: connections that never
    /// authorize (a wrong token, say) cannot keep workers out.
    pub fn connected(&mut self, conn: ConnId, from: SocketAddr, now: Instant) -> bool {
        if self.conns.len() >= MAX_WORKERS {
            let waiting = self
                .conns
                .iter()
                .filter(|(_, c)| c.worker.is_none())
                .min_by_key(|(id, c)| (c.opened, **id))
                .map(|(id, _)| *id);
            let Some(evicted) = waiting else {
                return false;
            };
            tracing::debug!("pool port full: closed a connection that has not authorized");
            self.forget(evicted, now);
            self.effects.push(FarmEffect::Close(evicted));
        }
        self.conns.insert(
            conn,
            Conn {
                from,
                opened: now,
                subscribed: None,
                worker: None,
                difficulty: 0,
                told: None,
                jobs: VecDeque::new(),
                next_job: 1,
                vardiff: Vardiff {
                    since: now,
                    shares: 0,
                },
                invalid_run: 0,
            },
        );
        true
    }

    /// The connection closed.
    pub fn closed(&mut self, conn: ConnId, now: Instant) {
        self.forget(conn, now);
    }

    /// Drops `conn`: its extranonce is free again, its worker has one connection fewer.
    fn forget(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(s) = c.subscribed {
            self.extranonces.remove(&s.extranonce);
        }
        if let Some(stats) = c.worker.and_then(|w| self.workers.get_mut(&w)) {
            stats.connections = stats.connections.saturating_sub(1);
            stats.last_seen = now;
        }
    }

    /// New work on the tip (or none: the node waits for payments or catches up): a clean job
    /// to every worker at once, made at Unix time `unix`.
    pub fn set_work(&mut self, work: Option<Arc<Template>>, now: Instant, unix: u64) {
        self.generation += 1;
        self.work = work;
        if let Some(w) = &self.work {
            self.network_difficulty = w.difficulty;
        }
        let ready: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.worker.is_some())
            .map(|(id, _)| *id)
            .collect();
        for conn in ready {
            self.send_job(conn, true, now, unix);
        }
    }

    /// A line from `conn` that did not parse: answered with why, and counted.
    pub fn refused(&mut self, conn: ConnId, refused: Refused, now: Instant) {
        let message = refused.error.to_string();
        self.reply(conn, refused.id, Err((code::OTHER, message)));
        self.invalid(conn, now);
    }

    /// A request from `conn`, at `now` (Unix time `unix`).
    pub fn request(&mut self, conn: ConnId, request: Request, now: Instant, unix: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let id = request.id;
        match request.call {
            Call::Subscribe { agent } => {
                let subscribed = match c.subscribed {
                    Some(s) => s,
                    None => {
                        let Some(extranonce) =
                            free_extranonce(&mut self.extranonces, &mut self.next_extranonce)
                        else {
                            self.effects.push(FarmEffect::Close(conn));
                            return;
                        };
                        self.next_session = self.next_session.wrapping_add(1);
                        let s = Subscribed {
                            session: self.next_session,
                            extranonce,
                        };
                        c.subscribed = Some(s);
                        s
                    }
                };
                tracing::debug!(from = %c.from, agent, "a worker subscribed");
                self.reply(conn, id, Ok(subscribed.to_value()));
            }
            Call::Authorize {
                address,
                worker,
                token,
            } => {
                if c.subscribed.is_none() {
                    self.reply(
                        conn,
                        id,
                        Err((code::NOT_SUBSCRIBED, "subscribe first".into())),
                    );
                    self.invalid(conn, now);
                    return;
                }
                if !token_matches(self.token.as_ref(), &token) {
                    let from = c.from;
                    tracing::info!(%from, "a worker presented a wrong pool token; closed");
                    self.reply(
                        conn,
                        id,
                        Err((code::UNAUTHORIZED, "wrong or missing pool token".into())),
                    );
                    self.effects.push(FarmEffect::Close(conn));
                    return;
                }
                let key = WorkerKey {
                    address,
                    name: worker,
                };
                if c.worker.as_ref() == Some(&key) {
                    self.reply(conn, id, Ok(Value::Bool(true)));
                    return;
                }
                let old = c.worker.replace(key.clone());
                c.difficulty = self
                    .network_difficulty
                    .saturating_sub(START_BELOW_NETWORK)
                    .max(MIN_SHARE_DIFFICULTY)
                    .min(self.network_difficulty.max(MIN_SHARE_DIFFICULTY));
                c.vardiff = Vardiff {
                    since: now,
                    shares: 0,
                };
                if let Some(stats) = old.and_then(|w| self.workers.get_mut(&w)) {
                    stats.connections = stats.connections.saturating_sub(1);
                }
                self.make_room_for_worker(&key);
                let stats = self.workers.entry(key).or_insert_with(|| Stats::new(now));
                stats.connections += 1;
                stats.last_seen = now;
                self.reply(conn, id, Ok(Value::Bool(true)));
                self.send_job(conn, true, now, unix);
            }
            Call::Submit { job, nonce } => {
                let verdict = self.submit(conn, id, job, nonce, now);
                if verdict == Verdict::Invalid {
                    self.invalid(conn, now);
                } else if let Some(c) = self.conns.get_mut(&conn) {
                    c.invalid_run = 0;
                }
                if verdict == Verdict::Accepted {
                    self.maybe_retarget(conn, false, now, unix);
                }
            }
        }
    }

    /// Timers: connections that never authorized are closed, difficulties tuned after
    /// [`RETARGET_AFTER`] without enough shares, old jobs made anew.
    pub fn tick(&mut self, now: Instant, unix: u64) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            if c.worker.is_none() {
                if now.saturating_duration_since(c.opened) >= HELLO_TIME {
                    self.effects.push(FarmEffect::Close(conn));
                }
                continue;
            }
            let old_job = c
                .jobs
                .back()
                .is_some_and(|j| now.saturating_duration_since(j.made) >= JOB_REFRESH);
            if !self.maybe_retarget(conn, true, now, unix) && old_job && self.work.is_some() {
                self.send_job(conn, false, now, unix);
            }
        }
    }

    /// Every worker's statistics, by name.
    pub fn workers(&self, now: Instant) -> Vec<WorkerInfo> {
        let mut list: Vec<WorkerInfo> = self
            .workers
            .iter()
            .map(|(key, s)| WorkerInfo {
                key: key.clone(),
                connections: s.connections,
                rates: RATE_WINDOWS.map(|w| s.rate(now, w)),
                accepted: s.accepted,
                rejected: s.rejected,
                stale: s.stale,
                best_share: s.best_share,
                blocks: s.blocks,
                expected_blocks: s.expected_blocks,
                difficulty: s.difficulty,
                last_share_seconds: s
                    .last_share
                    .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            })
            .collect();
        list.sort_by(|a, b| a.key.cmp(&b.key));
        list
    }

    fn reply(&mut self, conn: ConnId, id: Value, result: Result<Value, (i64, String)>) {
        self.effects
            .push(FarmEffect::Send(conn, ToWorker::Reply { id, result }));
    }

    /// One more invalid request from `conn`; a run of them ends it.
    fn invalid(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.invalid_run += 1;
        if let Some(stats) = c.worker.as_ref().and_then(|w| self.workers.get_mut(w)) {
            stats.rejected += 1;
            stats.last_seen = now;
        }
        if c.invalid_run >= MAX_INVALID_RUN {
            tracing::info!(from = %c.from, "a worker sent {MAX_INVALID_RUN} invalid requests in a row; closed");
            self.effects.push(FarmEffect::Close(conn));
        }
    }

    /// Hands `conn` a job on the work now (or tells it to idle), at its difficulty.
    fn send_job(&mut self, conn: ConnId, clean: bool, now: Instant, unix: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(worker) = &c.worker else {
            return;
        };
        let Some(work) = &self.work else {
            c.jobs.clear();
            self.effects.push(FarmEffect::Send(
                conn,
                ToWorker::Idle("the node has no block to mine now".into()),
            ));
            return;
        };
        let id = c.next_job;
        c.next_job += 1;
        let header = work.header(worker.address, unix);
        c.jobs.push_back(Job {
            id,
            generation: self.generation,
            template: work.clone(),
            header,
            difficulty: c.difficulty,
            shares: HashSet::new(),
            made: now,
        });
        while c.jobs.len() > JOBS_KEPT {
            c.jobs.pop_front();
        }
        let difficulty = c.difficulty;
        if c.told.replace(difficulty) != Some(difficulty) {
            self.effects
                .push(FarmEffect::Send(conn, ToWorker::SetDifficulty(difficulty)));
        }
        if let Some(stats) = self.workers.get_mut(worker) {
            stats.difficulty = difficulty;
        }
        self.effects.push(FarmEffect::Send(
            conn,
            ToWorker::Notify {
                job: id,
                header,
                clean,
            },
        ));
    }

    fn submit(&mut self, conn: ConnId, id: Value, job: u64, nonce: u64, now: Instant) -> Verdict {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Verdict::Invalid;
        };
        let (Some(subscribed), Some(worker)) = (c.subscribed, c.worker.clone()) else {
            self.reply(
                conn,
                id,
                Err((code::UNAUTHORIZED, "authorize first".into())),
            );
            return Verdict::Invalid;
        };
        let generation = self.generation;
        let mut verdict = Verdict::Accepted;
        let mut found = None;
        let answer: Result<Value, (i64, String)> = match c.jobs.iter_mut().find(|j| j.id == job) {
            None if job < c.next_job => {
                verdict = Verdict::Stale;
                Err((code::JOB_NOT_FOUND, "stale job".into()))
            }
            None => {
                verdict = Verdict::Invalid;
                Err((code::JOB_NOT_FOUND, "no such job".into()))
            }
            Some(j) if j.generation != generation => {
                verdict = Verdict::Stale;
                Err((code::JOB_NOT_FOUND, "stale job".into()))
            }
            Some(j) if j.shares.contains(&nonce) => {
                verdict = Verdict::Invalid;
                Err((code::DUPLICATE, "duplicate share".into()))
            }
            Some(j) if j.shares.len() >= MAX_SHARES_PER_JOB => {
                verdict = Verdict::Invalid;
                Err((code::OTHER, "too many shares for one job".into()))
            }
            Some(j) => {
                let header = BlockHeader {
                    nonce: stratum::full_nonce(subscribed.extranonce, nonce),
                    ..j.header
                };
                let hash = header.hash();
                let bits = hash.leading_zero_bits();
                if bits < j.difficulty {
                    verdict = Verdict::Invalid;
                    Err((code::LOW_DIFFICULTY, "low difficulty share".into()))
                } else {
                    j.shares.insert(nonce);
                    c.vardiff.shares += 1;
                    if hash.meets_difficulty(header.difficulty) {
                        found = Some(j.template.block(worker.address, header));
                    }
                    let work = 2f64.powi(j.difficulty as i32);
                    let expected = 2f64.powi(j.difficulty as i32 - header.difficulty as i32);
                    if let Some(stats) = self.workers.get_mut(&worker) {
                        stats.accepted += 1;
                        stats.best_share = stats.best_share.max(bits);
                        stats.expected_blocks += expected;
                        stats.last_share = Some(now);
                        stats.last_seen = now;
                        stats.add_work(now, work);
                        stats.blocks += u64::from(found.is_some());
                    }
                    Ok(Value::Bool(true))
                }
            }
        };
        if verdict == Verdict::Stale
            && let Some(stats) = self.workers.get_mut(&worker)
        {
            stats.stale += 1;
        }
        self.reply(conn, id, answer);
        if let Some(block) = found {
            self.effects.push(FarmEffect::Block {
                block,
                worker: worker.to_string(),
            });
        }
        verdict
    }

    /// Tunes `conn`'s share difficulty when [`RETARGET_SHARES`] shares came, or (`timer`)
    /// [`RETARGET_AFTER`] passed: towards [`TARGET_SHARES_PER_MINUTE`], at most
    /// [`MAX_STEP_UP`] bits up or [`MAX_STEP_DOWN`] down. A change comes with a new job at
    /// the new difficulty (earlier jobs stay valid at theirs). Whether it changed.
    fn maybe_retarget(&mut self, conn: ConnId, timer: bool, now: Instant, unix: u64) -> bool {
        let ceiling = self.network_difficulty.max(MIN_SHARE_DIFFICULTY);
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let elapsed = now.saturating_duration_since(c.vardiff.since);
        let due = c.vardiff.shares >= RETARGET_SHARES || (timer && elapsed >= RETARGET_AFTER);
        if !due {
            return false;
        }
        let step = retarget_step(c.vardiff.shares, elapsed);
        c.vardiff = Vardiff {
            since: now,
            shares: 0,
        };
        let next = c
            .difficulty
            .saturating_add_signed(step)
            .clamp(MIN_SHARE_DIFFICULTY, ceiling);
        if next == c.difficulty {
            return false;
        }
        c.difficulty = next;
        if self.work.is_some() {
            self.send_job(conn, false, now, unix);
        }
        true
    }

    /// Before a new worker's statistics are kept: the oldest of those with no connection go
    /// when there are too many.
    fn make_room_for_worker(&mut self, key: &WorkerKey) {
        if self.workers.len() < MAX_WORKERS_KEPT || self.workers.contains_key(key) {
            return;
        }
        let oldest = self
            .workers
            .iter()
            .filter(|(_, s)| s.connections == 0)
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.workers.remove(&k);
        }
    }
}

/// The change in bits that brings `shares` in `elapsed` towards the target rate.
pub fn retarget_step(shares: u32, elapsed: Duration) -> i32 {
    if shares == 0 {
        return -(MAX_STEP_DOWN as i32);
    }
    let minutes = elapsed.as_secs_f64().max(1.0) / 60.0;
    let ratio = f64::from(shares) / minutes / TARGET_SHARES_PER_MINUTE;
    (ratio.log2().round() as i32).clamp(-(MAX_STEP_DOWN as i32), MAX_STEP_UP as i32)
}

/// Whether `token` is the one whose digest is `want` (any token, when none is wanted).
fn token_matches(want: Option<&Hash256>, token: &str) -> bool {
    match want {
        None => true,
        // Digests of equal length, compared in constant time: the time a guess takes says
        // nothing of how much of it was right.
        Some(want) => {
            let got = mvbc_protocol::hash::sha256(token.as_bytes());
            want.0.ct_eq(&got.0).into()
        }
    }
}

/// The next extranonce no connection holds.
fn free_extranonce(taken: &mut HashSet<u16>, next: &mut u16) -> Option<u16> {
    if taken.len() >= usize::from(u16::MAX) {
        return None;
    }
    loop {
        let candidate = *next;
        *next = next.wrapping_add(1);
        if taken.insert(candidate) {
            return Some(candidate);
        }
    }
}

#[cfg(test)]
mod tests;
