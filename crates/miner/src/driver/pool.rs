//! The pool port in the driver (ADR 0016): `mvbc-net`'s pool server and the farm
//! (`mvbc_node::farm`) behind one lock. Each connection's reader thread hands the farm its own
//! lines and sends the answers itself; one thread hands it the node's work and runs its timers.
//! Shares never reach the node loop: only blocks do, on its urgent queue, so a thousand
//! workers cost the node loop nothing but their blocks.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use crossbeam_channel::{Receiver, Sender, select, tick, unbounded};
use mvbc_net::stratum::{PoolEvents, PoolServer, WorkerIo};
use mvbc_node::farm::{Farm, FarmEffect, WorkerInfo};
use mvbc_node::template::Template;
use mvbc_protocol::stratum::{Refused, Request};
use mvbc_protocol::{Config, unix_now};

use super::{Event, Message, StartError, spawn_thread};
use crate::api::NodeState;

/// How often the farm's timers run and the workers' table is published.
const TICK: Duration = Duration::from_secs(1);

/// The farm and the connections it speaks to, behind one lock: each connection's reader
/// thread hands its lines in itself, so a share costs no hand-over between threads.
struct Shared {
    farm: Farm,
    workers: HashMap<u64, WorkerIo>,
    /// Where blocks go: the node loop's urgent queue.
    urgent: Sender<Message>,
}

impl Shared {
    /// Carries out what the farm asked for.
    fn carry_out(&mut self) {
        for effect in self.farm.take_effects() {
            match effect {
                FarmEffect::Send(conn, message) => {
                    if let Some(io) = self.workers.get(&conn)
                        && io.send(&message).is_err()
                    {
                        // It does not read what it is sent: let it go rather than wait.
                        io.close();
                    }
                }
                FarmEffect::Close(conn) => {
                    if let Some(io) = self.workers.get(&conn) {
                        io.close();
                    }
                }
                FarmEffect::Block { block, worker } => {
                    // The node loop is gone only when the node stops.
                    let _ = self.urgent.send(Message::WorkerBlock {
                        block: Box::new(block),
                        worker,
                    });
                }
            }
        }
    }
}

struct Events(Arc<Mutex<Shared>>);

impl Events {
    fn with(&self, f: impl FnOnce(&mut Shared)) {
        let mut shared = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut shared);
        shared.carry_out();
    }
}

impl PoolEvents for Events {
    fn opened(&self, conn: u64, from: SocketAddr, io: WorkerIo) {
        self.with(|s| {
            if s.farm.connected(conn, from, Instant::now()) {
                s.workers.insert(conn, io);
            } else {
                io.close();
            }
        });
    }

    fn line(&self, conn: u64, line: Result<Request, Refused>) {
        self.with(|s| match line {
            Ok(request) => s.farm.request(conn, request, Instant::now(), unix_now()),
            Err(refused) => s.farm.refused(conn, refused, Instant::now()),
        });
    }

    fn closed(&self, conn: u64) {
        self.with(|s| {
            s.workers.remove(&conn);
            s.farm.closed(conn, Instant::now());
        });
    }
}

/// The pool port of a running node.
pub(super) struct Pool {
    /// Stops accepting and closes every worker when dropped.
    server: PoolServer,
    work: Sender<Option<Arc<Template>>>,
}

impl Pool {
    /// Where it listens.
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The node's next block changed (a new tip, new payments) or there is none now: every
    /// worker gets a clean job, or is told to idle.
    pub(super) fn set_work(&self, work: Option<Arc<Template>>) {
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
    let farm = Farm::new(
        config.pool_token.as_deref(),
        config.difficulty,
        rand::random(),
    );
    let shared = Arc::new(Mutex::new(Shared {
        farm,
        workers: HashMap::new(),
        urgent,
    }));
    let started = TcpListener::bind(at)
        .and_then(|listener| PoolServer::start(listener, Arc::new(Events(shared.clone()))));
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
    let (work, work_inbox) = unbounded();
    spawn_thread("pool", move || run(Events(shared), work_inbox, published))?;
    Ok(Some(Pool { server, work }))
}

/// The farm's own thread: the node's work as soon as it comes, and the timers. Ends when the
/// node loop is gone.
fn run(events: Events, work: Receiver<Option<Arc<Template>>>, published: Arc<Mutex<NodeState>>) {
    let timer = tick(TICK);
    loop {
        select! {
            recv(work) -> w => match w {
                Ok(w) => events.with(|s| s.farm.set_work(w, Instant::now(), unix_now())),
                Err(_) => return,
            },
            recv(timer) -> _ => {
                let now = Instant::now();
                let mut table = None;
                events.with(|s| {
                    s.farm.tick(now, unix_now());
                    table = Some((s.farm.workers(now), s.farm.connections()));
                });
                if let Some((workers, connections)) = table {
                    publish(&published, workers, connections);
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
