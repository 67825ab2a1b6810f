//! The pool port in the driver (ADR 0016): `mvbc-net`'s pool server, and one thread that owns
//! the farm (`mvbc_node::farm`), hands it each worker's lines and the node's work, and carries
//! out what it says. Shares never reach the node loop: only blocks do, on its urgent queue, so
//! a thousand workers cost the node loop nothing but their blocks.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded, select, tick, unbounded};
use mvbc_net::stratum::{PoolEvents, PoolServer, WorkerIo};
use mvbc_node::farm::{Farm, FarmEffect, WorkerInfo};
use mvbc_node::template::Template;
use mvbc_protocol::stratum::{Refused, Request};
use mvbc_protocol::{Config, unix_now};

use super::{Event, Message, StartError, spawn_thread};
use crate::api::NodeState;

/// Lines from all workers waiting for the farm; a reader waits when it is full.
const LINES_QUEUE: usize = 4_096;
/// How often the farm's timers run and the workers' table is published.
const TICK: Duration = Duration::from_secs(1);

enum FromWorkers {
    Opened(u64, SocketAddr, WorkerIo),
    Line(u64, Result<Request, Refused>),
    Closed(u64),
}

struct Events(Sender<FromWorkers>);

impl PoolEvents for Events {
    fn opened(&self, conn: u64, from: SocketAddr, io: WorkerIo) {
        let _ = self.0.send(FromWorkers::Opened(conn, from, io));
    }

    fn line(&self, conn: u64, line: Result<Request, Refused>) {
        let _ = self.0.send(FromWorkers::Line(conn, line));
    }

    fn closed(&self, conn: u64) {
        let _ = self.0.send(FromWorkers::Closed(conn));
    }
}

/// The pool port of a running node.
pub(super) struct Pool {
    /// Stops accepting and closes every worker when dropped.
    server: PoolServer,
    work: Sender<Option<Template>>,
}

impl Pool {
    /// Where it listens.
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The node's next block changed (a new tip, new payments) or there is none now: every
    /// worker gets a clean job, or is told to idle.
    pub(super) fn set_work(&self, work: Option<Template>) {
        let _ = self.work.send(work);
    }
}

/// Opens the pool port where `pool_listen` says, or says why not and goes on without it.
pub(super) fn start(
    config: &Config,
    urgent: Sender<Message>,
    published: Arc<Mutex<NodeState>>,
    say: &impl Fn(Event),
) -> Result<Option<Pool>, StartError> {
    let Some(at) = config.pool_listen else {
        return Ok(None);
    };
    let (lines, from_workers) = bounded(LINES_QUEUE);
    let started = TcpListener::bind(at)
        .and_then(|listener| PoolServer::start(listener, Arc::new(Events(lines))));
    let server = match started {
        Ok(server) => server,
        Err(error) => {
            say(Event::PoolUnavailable { at, error });
            return Ok(None);
        }
    };
    say(Event::PoolListening {
        at: server.local_addr(),
        token: config.pool_token.is_some(),
    });
    let farm = Farm::new(
        config.pool_token.as_deref(),
        config.difficulty,
        rand::random(),
    );
    let (work, work_inbox) = unbounded();
    spawn_thread("pool", move || {
        run(farm, from_workers, work_inbox, urgent, published)
    })?;
    Ok(Some(Pool { server, work }))
}

/// The farm's thread: the node's work first, whatever else waits, then workers' lines and the
/// timers. Ends when the node loop is gone.
fn run(
    mut farm: Farm,
    from_workers: Receiver<FromWorkers>,
    work: Receiver<Option<Template>>,
    urgent: Sender<Message>,
    published: Arc<Mutex<NodeState>>,
) {
    let mut workers: std::collections::HashMap<u64, WorkerIo> = Default::default();
    let timer = tick(TICK);
    loop {
        let now = Instant::now();
        match work.try_recv() {
            Ok(w) => farm.set_work(w, now, unix_now()),
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => select! {
                recv(work) -> w => match w {
                    Ok(w) => farm.set_work(w, now, unix_now()),
                    Err(_) => return,
                },
                recv(from_workers) -> m => match m {
                    Ok(FromWorkers::Opened(conn, from, io)) => {
                        if farm.connected(conn, from, now) {
                            workers.insert(conn, io);
                        } else {
                            io.close();
                        }
                    }
                    Ok(FromWorkers::Line(conn, Ok(request))) => {
                        farm.request(conn, request, now, unix_now())
                    }
                    Ok(FromWorkers::Line(conn, Err(refused))) => farm.refused(conn, refused, now),
                    Ok(FromWorkers::Closed(conn)) => {
                        workers.remove(&conn);
                        farm.closed(conn, now);
                    }
                    Err(_) => return,
                },
                recv(timer) -> _ => {
                    farm.tick(now, unix_now());
                    publish(&published, farm.workers(now), farm.connections());
                }
            },
        }
        for effect in farm.take_effects() {
            match effect {
                FarmEffect::Send(conn, message) => {
                    if let Some(io) = workers.get(&conn)
                        && io.send(&message).is_err()
                    {
                        // It does not read what it is sent: let it go rather than hold more.
                        io.close();
                    }
                }
                FarmEffect::Close(conn) => {
                    if let Some(io) = workers.get(&conn) {
                        io.close_after_queued();
                    }
                }
                FarmEffect::Block { block, worker } => {
                    let found = Message::WorkerBlock {
                        block: Box::new(block),
                        worker,
                    };
                    if urgent.send(found).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn publish(published: &Mutex<NodeState>, workers: Vec<WorkerInfo>, connections: usize) {
    let mut state = published.lock().unwrap_or_else(|e| e.into_inner());
    state.pool = Some(crate::api::PoolState {
        workers,
        connections,
    });
}
