//! A worker that only hashes (ADR 0016): `mvbc-miner --pool HOST:PORT --address ADDRESS`.
//! No chain, no store, no block server, no broadcasts: it connects to a node's pool port,
//! searches the jobs the node hands it with its engine (every device the engine holds), and
//! submits the shares it finds. When the node goes away it tries again, waiting longer each
//! time up to [`MAX_BACKOFF`], and resumes when the node is back.
//!
//! [`run`] never prints: it tells its caller [`WorkerEvent`]s, which the binary prints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select, tick, unbounded};
use mvbc_net::stratum::{FromPool, PoolConnection};
use mvbc_protocol::rate::TokenBucket;
use mvbc_protocol::stratum::{
    self, Call, EXTRANONCE_BYTES, Request, Subscribed, ToWorker, WORKER_NONCE_BYTES, code,
};
use mvbc_protocol::{Address, BlockHeader};
use serde_json::{Value, json};

use crate::engine::{MiningEngine, NonceRange, Search, SearchControl, search_verified};
use crate::select::DeviceMeters;
use crate::work::WorkUnit;

/// The longest wait between tries to reach the node.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait after a connection fails or ends.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How often the worker reports its rates.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Shares a second the worker sends at most, after a burst of [`SUBMIT_BURST`], below what a
/// node reads from one connection (`mvbc_net::stratum::LINES_PER_SECOND`): while the node's
/// difficulty for it is still too easy, the extra shares are left unsent rather than queued
/// behind the next block's. A share that is a block is always sent.
pub const SUBMITS_PER_SECOND: f64 = 8.0;
/// Shares the worker may send at once.
pub const SUBMIT_BURST: f64 = 24.0;
/// How long the node may take to answer the subscription and authorization.
const HELLO_WAIT: Duration = Duration::from_secs(10);

const SUBSCRIBE_ID: u64 = 1;
const AUTHORIZE_ID: u64 = 2;

/// Who the worker is and where it mines.
pub struct WorkerSetup {
    /// The node's pool port, `HOST:PORT` (resolved at each try).
    pub pool: String,
    /// Where the blocks it finds pay.
    pub address: Address,
    /// Its name on the node.
    pub name: String,
    /// The pool token ("" for none).
    pub token: String,
    /// The engine to hash with.
    pub engine: Box<dyn MiningEngine>,
    /// Each device's nonces, when the engine is several devices at once.
    pub meters: Option<DeviceMeters>,
    /// Stops the worker when it sends or closes.
    pub stop: Receiver<()>,
}

/// What a worker tells its user.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// Connected and authorized; its extranonce.
    Connected {
        /// The node's pool port.
        pool: SocketAddr,
        /// The nonce's first bytes, this connection's own.
        extranonce: u16,
    },
    /// A new job: the block's height, the share and network difficulties, whether it is clean.
    Job {
        /// The block's height.
        height: u64,
        /// Leading zero bits a share needs.
        share_difficulty: u32,
        /// Leading zero bits a block needs.
        network_difficulty: u32,
    },
    /// The node has no job: the worker waits.
    Idle(String),
    /// A share of it met the network's difficulty: a block, if the node takes it.
    BlockFound {
        /// Its height.
        height: u64,
    },
    /// The node could not be reached or the connection ended; the next try is in `retry_in`.
    Disconnected {
        /// Why.
        why: String,
        /// When it tries again.
        retry_in: Duration,
    },
    /// The engine failed on the job; the worker waits for the next one.
    MiningFailed(String),
    /// The periodic report.
    Report(WorkerReport),
}

/// The worker's numbers since it started.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerReport {
    /// Hashes a second its engine did over the last interval.
    pub hash_rate: f64,
    /// Hashes a second its accepted shares prove, since it started mining.
    pub share_rate: f64,
    /// Shares the node accepted.
    pub accepted: u64,
    /// Shares the node refused.
    pub rejected: u64,
    /// Shares of a job that was no longer current.
    pub stale: u64,
    /// Shares left unsent while they came faster than [`SUBMITS_PER_SECOND`].
    pub unsent: u64,
    /// Each device's name and hashing rate over the interval, when it hashes on several.
    pub devices: Vec<(String, f64)>,
}

/// Why a worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The node refused to let it mine (a wrong token).
    #[error("the node refused this worker: {0}")]
    Refused(String),
    /// A thread could not start.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A search for the mining thread: a job's work at the share difficulty, over the nonces of
/// this connection's extranonce.
struct Assignment {
    job: u64,
    work: WorkUnit,
    range: NonceRange,
    control: Arc<SearchControl>,
}

/// What the mining thread tells the worker.
enum Mined {
    /// A share.
    Share(Found),
    /// The engine failed on a job; the worker waits for the next one.
    Failed(String),
}

/// A share the mining thread found.
struct Found {
    job: u64,
    nonce: u64,
    /// It also meets the network's difficulty.
    block: bool,
    height: u64,
}

/// Runs the worker until `setup.stop`; errors only when the node refuses it.
pub fn run(setup: WorkerSetup, say: impl Fn(WorkerEvent)) -> Result<(), WorkerError> {
    let WorkerSetup {
        pool,
        address,
        name,
        token,
        engine,
        meters,
        stop,
    } = setup;
    let (assign, assignments) = unbounded::<Assignment>();
    let (found_tx, found) = unbounded::<Mined>();
    thread::Builder::new()
        .name("worker-mine".into())
        .spawn(move || mine(engine, assignments, found_tx))?;
    let mut session = Session {
        user: format!("{address}.{name}"),
        address,
        name,
        token,
        assign,
        found,
        stop,
        current: None,
        counts: Counts::default(),
        hashed: 0,
        meters,
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let outcome = match stratum_addr(&pool) {
            Ok(addr) => session.connect_and_mine(addr, &say, &mut backoff),
            Err(e) => Outcome::Lost(format!("cannot resolve {pool}: {e}")),
        };
        session.stop_search();
        match outcome {
            Outcome::Stopped => return Ok(()),
            Outcome::Refused(why) => return Err(WorkerError::Refused(why)),
            Outcome::Lost(why) => {
                say(WorkerEvent::Disconnected {
                    why,
                    retry_in: backoff,
                });
                select! {
                    recv(session.stop) -> _ => return Ok(()),
                    default(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn stratum_addr(pool: &str) -> std::io::Result<SocketAddr> {
    mvbc_protocol::config::resolve_peer(pool)
}

enum Outcome {
    Stopped,
    Refused(String),
    Lost(String),
}

#[derive(Default)]
struct Counts {
    accepted: u64,
    rejected: u64,
    stale: u64,
    unsent: u64,
    /// Work of accepted shares.
    work: f64,
    /// Mining time with a job.
    mining: Duration,
}

struct Session {
    address: Address,
    name: String,
    user: String,
    token: String,
    assign: Sender<Assignment>,
    found: Receiver<Mined>,
    stop: Receiver<()>,
    /// The job searched now, and when its search began.
    current: Option<(u64, Arc<SearchControl>, Instant)>,
    counts: Counts,
    /// Hashes of the searches that ended.
    hashed: u64,
    /// Each device's nonce counter, when hashing on several.
    meters: Option<DeviceMeters>,
}

impl Session {
    fn stop_search(&mut self) {
        if let Some((_, control, since)) = self.current.take() {
            control.stop();
            self.hashed += control.hashes();
            self.counts.mining += since.elapsed();
        }
    }

    fn connect_and_mine(
        &mut self,
        addr: SocketAddr,
        say: &impl Fn(WorkerEvent),
        backoff: &mut Duration,
    ) -> Outcome {
        let (heard_tx, heard) = unbounded::<FromPool>();
        let connection = match PoolConnection::connect(addr, move |m| {
            let _ = heard_tx.send(m);
        }) {
            Ok(c) => c,
            Err(e) => return Outcome::Lost(format!("cannot connect to {addr}: {e}")),
        };
        let user = self.user.clone();
        let send = |call: Call, id: u64| {
            connection.send(
                &Request {
                    id: json!(id),
                    call,
                }
                .to_line(&user),
            )
        };
        let hello = send(
            Call::Subscribe {
                agent: format!("mvbc-miner/{}", env!("CARGO_PKG_VERSION")),
            },
            SUBSCRIBE_ID,
        )
        .and_then(|()| {
            send(
                Call::Authorize {
                    address: self.address,
                    worker: self.name.clone(),
                    token: self.token.clone(),
                },
                AUTHORIZE_ID,
            )
        });
        if let Err(e) = hello {
            return Outcome::Lost(format!("cannot talk to {addr}: {e}"));
        }
        let mut extranonce = None;
        let mut authorized = false;
        let mut difficulty = None;
        let mut next_id = AUTHORIZE_ID + 1;
        // Submits waiting for their answer.
        let mut submitted: HashMap<u64, u32> = HashMap::new();
        let mut share_difficulty: HashMap<u64, u32> = HashMap::new();
        let hello_by = Instant::now() + HELLO_WAIT;
        let report = tick(REPORT_EVERY);
        let mut submits = TokenBucket::full(SUBMITS_PER_SECOND, SUBMIT_BURST);
        let mut last_report = (Instant::now(), self.hash_count(), self.device_counts());
        loop {
            let deadline = if authorized {
                never()
            } else {
                crossbeam_channel::at(hello_by)
            };
            select! {
                recv(self.stop) -> _ => return Outcome::Stopped,
                recv(deadline) -> _ => return Outcome::Lost("the node did not answer the subscription".into()),
                recv(report) -> _ => {
                    let now = Instant::now();
                    let count = self.hash_count();
                    let secs = now.duration_since(last_report.0).as_secs_f64().max(1e-9);
                    let hash_rate = count.saturating_sub(last_report.1) as f64 / secs;
                    let counts = self.device_counts();
                    let devices = self.meters.as_ref().map_or_else(Vec::new, |m| {
                        m.devices
                            .iter()
                            .zip(counts.iter().zip(&last_report.2))
                            .map(|(d, (now, then))| {
                                (format!("{} {}", d.device, d.adapter), now.saturating_sub(*then) as f64 / secs)
                            })
                            .collect()
                    });
                    last_report = (now, count, counts);
                    let mining = self.counts.mining
                        + self.current.as_ref().map_or(Duration::ZERO, |(_, _, t)| t.elapsed());
                    say(WorkerEvent::Report(WorkerReport {
                        hash_rate,
                        share_rate: self.counts.work / mining.as_secs_f64().max(1e-9),
                        accepted: self.counts.accepted,
                        rejected: self.counts.rejected,
                        stale: self.counts.stale,
                        unsent: self.counts.unsent,
                        devices,
                    }));
                }
                recv(self.found) -> f => {
                    let f = match f {
                        Ok(Mined::Share(f)) => f,
                        Ok(Mined::Failed(why)) => {
                            say(WorkerEvent::MiningFailed(why));
                            continue;
                        }
                        Err(_) => return Outcome::Stopped,
                    };
                    if self.current.as_ref().is_none_or(|(job, _, _)| *job != f.job) {
                        continue;
                    }
                    if f.block {
                        say(WorkerEvent::BlockFound { height: f.height });
                    } else if !submits.take(Instant::now()) {
                        self.counts.unsent += 1;
                        continue;
                    }
                    let id = next_id;
                    next_id += 1;
                    let part = f.nonce & (stratum::WORKER_NONCES - 1);
                    if let Err(e) = send(Call::Submit { job: f.job, nonce: part }, id) {
                        return Outcome::Lost(format!("cannot submit to {addr}: {e}"));
                    }
                    submitted.insert(id, share_difficulty.get(&f.job).copied().unwrap_or(0));
                }
                recv(heard) -> m => {
                    let message = match m {
                        Ok(FromPool::Message(m)) => m,
                        Ok(FromPool::Garbled(e)) => {
                            tracing::debug!("{e}");
                            continue;
                        }
                        Ok(FromPool::Closed(why)) => return Outcome::Lost(why),
                        Err(_) => return Outcome::Lost("the connection's reader ended".into()),
                    };
                    match message {
                        ToWorker::Reply { id, result } => match id.as_u64() {
                            Some(SUBSCRIBE_ID) => match result.ok().as_ref().and_then(Subscribed::from_value) {
                                Some(s) => extranonce = Some(s.extranonce),
                                None => return Outcome::Lost("the node's subscription answer is not one".into()),
                            },
                            Some(AUTHORIZE_ID) => match result {
                                Ok(Value::Bool(true)) => {
                                    authorized = true;
                                    *backoff = FIRST_BACKOFF;
                                    let Some(extranonce) = extranonce else {
                                        return Outcome::Lost("authorized before subscribed".into());
                                    };
                                    say(WorkerEvent::Connected { pool: addr, extranonce });
                                }
                                Err((code::UNAUTHORIZED, why)) => return Outcome::Refused(why),
                                other => return Outcome::Lost(format!("authorization failed: {other:?}")),
                            },
                            Some(id) => {
                                let Some(bits) = submitted.remove(&id) else { continue };
                                match result {
                                    Ok(Value::Bool(true)) => {
                                        self.counts.accepted += 1;
                                        self.counts.work += 2f64.powi(bits as i32);
                                    }
                                    Err((code::JOB_NOT_FOUND, why)) if why.contains("stale") => {
                                        self.counts.stale += 1;
                                    }
                                    Err((_, why)) => {
                                        tracing::warn!("share refused: {why}");
                                        self.counts.rejected += 1;
                                    }
                                    Ok(_) => self.counts.rejected += 1,
                                }
                            }
                            None => {}
                        },
                        ToWorker::SetDifficulty(bits) => difficulty = Some(bits),
                        ToWorker::Notify { job, header, clean: _ } => {
                            let (Some(extranonce), Some(bits)) = (extranonce, difficulty) else {
                                continue;
                            };
                            share_difficulty.insert(job, bits);
                            if share_difficulty.len() > 16 {
                                share_difficulty.retain(|j, _| *j + 16 > job);
                            }
                            self.start_search(job, &header, extranonce, bits);
                            say(WorkerEvent::Job {
                                height: header.height,
                                share_difficulty: bits,
                                network_difficulty: header.difficulty,
                            });
                        }
                        ToWorker::Idle(why) => {
                            self.stop_search();
                            say(WorkerEvent::Idle(why));
                        }
                    }
                }
            }
        }
    }

    /// Each device's nonces so far (none when hashing on one).
    fn device_counts(&self) -> Vec<u64> {
        self.meters.as_ref().map_or_else(Vec::new, |m| {
            m.counts
                .iter()
                .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                .collect()
        })
    }

    fn hash_count(&self) -> u64 {
        self.hashed + self.current.as_ref().map_or(0, |(_, c, _)| c.hashes())
    }

    /// Searches job `job` from now on: the earlier search stops at once.
    fn start_search(&mut self, job: u64, header: &BlockHeader, extranonce: u16, bits: u32) {
        self.stop_search();
        let control = Arc::new(SearchControl::new());
        let work = WorkUnit {
            difficulty: bits,
            ..WorkUnit::new(header)
        };
        let _ = self.assign.send(Assignment {
            job,
            work,
            range: extranonce_range(extranonce),
            control: control.clone(),
        });
        self.current = Some((job, control, Instant::now()));
    }
}

/// The nonces of `extranonce`: its [`WORKER_NONCE_BYTES`] below it (the last one of the last
/// extranonce aside: a range ends before `u64::MAX`).
pub fn extranonce_range(extranonce: u16) -> NonceRange {
    const SHIFT: usize = 8 * WORKER_NONCE_BYTES;
    const _: () = assert!(EXTRANONCE_BYTES == 2);
    let start = u64::from(extranonce) << SHIFT;
    NonceRange::new(start, start.saturating_add(1 << SHIFT))
}

/// The mining thread: searches each assignment from its start, handing on every share, until
/// it is stopped or its nonces run out.
fn mine(
    mut engine: Box<dyn MiningEngine>,
    assignments: Receiver<Assignment>,
    found: Sender<Mined>,
) {
    while let Ok(mut a) = assignments.recv() {
        while let Ok(newer) = assignments.try_recv() {
            a = newer;
        }
        let mut range = a.range;
        loop {
            if a.control.is_stopped() {
                break;
            }
            match search_verified(engine.as_mut(), &a.work, range, &a.control) {
                Ok(Search::Found(nonce)) => {
                    let header = a.work.header_with(nonce);
                    let share = Found {
                        job: a.job,
                        nonce,
                        block: header.meets_own_difficulty(),
                        height: header.height,
                    };
                    if found.send(Mined::Share(share)).is_err() {
                        return;
                    }
                    range.start = nonce + 1;
                }
                Ok(Search::Aborted | Search::Exhausted) => break,
                Err(e) => {
                    if found.send(Mined::Failed(e.to_string())).is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}
