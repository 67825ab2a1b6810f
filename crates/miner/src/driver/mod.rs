//! The mining node's driver: threads for the network and the engine, joined by channels of
//! events into a single loop around the node core (`mvbc_node::core::NodeCore`), which owns
//! the chain, the store, the pool and the peers and decides everything; this loop hands it each
//! event with the time and carries out the effects it returns.
//!
//! [`spawn`] starts a node and returns a [`NodeHandle`]: the ports it bound, its [`Event`]s
//! (what the binary prints as lines), its height, and a way to stop it and wait. The sockets
//! are `mvbc-net`'s, the API and explorer this crate's [`crate::api`]; this module only
//! wires them to the core. It never prints.
//!
//! ```text
//! tx listener ─────┬──> payments ─┐                ┌──> status broadcaster (UDP)
//! status listener ─┤              │                ├──> mining thread (engine)
//! link readers ────┼──> statuses ─┤                ├──> downloader (TCP client)
//! block server ────┘              ├──> node loop ──┼──> link writers, dialler (TCP)
//! mining thread ───┐              │                └──  block server, API read the chain
//! downloader ──────┼──> urgent ───┘
//! Ctrl-C/SIGTERM ──┘
//! ```
//!
//! Only the core writes the chain, so every change is appended to the store and reflected in
//! the pool in one place, in order. Blocks, downloads and shutdown travel on their own
//! channel and are handled before anything else waiting, so no flood of payments or statuses
//! (each bounded, dropped when full) can delay a block or a Ctrl-C.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded, select, tick, unbounded};

use crate::api::{self, Api, Device, NodeState, PeerInfo, http::HttpServer};
use crate::engine::{
    DeviceKind, EngineError, EngineInfo, MiningEngine, NonceRange, Search, SearchControl,
    search_verified,
};
use crate::select::DeviceMeters;
use crate::work::WorkUnit;
use mvbc_net::link::{self, LinkEvents, LinkIo};
use mvbc_net::{self as net, BlockClient, BlockServer, Broadcaster, FetchError};
use mvbc_net::{Inbound, IndexedChain, NodeHooks};
use mvbc_node::apply::ApplyError;
use mvbc_node::core::{Effect, Input, NodeCore, Note, Timing};
use mvbc_node::links::{Down, LinkId, Links};
use mvbc_node::peerfile;
use mvbc_node::sync::{Download, DownloadError, ForkPoints, Role};
use mvbc_node::template::Template;
use mvbc_protocol::chain::STALE_WINDOW;
use mvbc_protocol::config;
use mvbc_protocol::index::Index;
use mvbc_protocol::store::BlockStore;
use mvbc_protocol::wire::LinkMessage;
use mvbc_protocol::wire::{Datagram, Status};
use mvbc_protocol::{Address, Block, Chain, Config, ConsensusParams, Payment, unix_now};

/// Pending payments, and pending statuses, a listener may queue before it drops datagrams (a
/// flood must not grow memory).
const EVENT_QUEUE: usize = 10_000;
/// How often the node prints its periodic status line.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// How often the node publishes its state and hash rates for the API.
const SECOND: Duration = Duration::from_secs(1);
/// At most this many `Block mined` and `Block adopted` lines a second; the rest are summed up
/// in one line ([`Event::BlocksNotShown`]): at a low difficulty a node finds thousands a second.
pub const BLOCK_LINES_PER_SECOND: u32 = 4;
/// The windows the `Status:` line gives the hash rate over, as xmrig does: 10 s, 60 s, 15 min
/// of mining time.
pub const RATE_WINDOWS: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(15 * 60),
];

mod event;
mod handle;
mod pool;
mod storage;

pub use self::storage::{Storage, open_index};

pub use event::{Event, PoolReport, Report};
pub use handle::{NodeHandle, RunError, StartError, TimedOut};

/// Where a node writes the ports it bound, once it has bound them: for scripts and tests that
/// start it with any free port (`block_server_port = 0`, `--api-listen 127.0.0.1:0`).
pub const PORTS_FILE: &str = "ports.json";

/// What [`PORTS_FILE`] holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    /// The block server's TCP port.
    pub block_server: u16,
    /// Where the API listens, if it does.
    pub api: Option<SocketAddr>,
    /// Where the pool port listens, if it does.
    #[serde(default)]
    pub pool: Option<SocketAddr>,
    /// The UDP port for payments.
    pub transactions: u16,
    /// The UDP port for statuses.
    pub status: u16,
}

/// Events kept for a reader who is slow or absent; beyond them new ones are dropped.
const EVENTS_KEPT: usize = 4_096;

/// Everything the node needs to start.
pub struct NodeSetup {
    /// The configuration.
    pub config: Config,
    /// The chain loaded from the store.
    pub chain: Chain,
    /// The open store, where every accepted block is appended.
    pub store: BlockStore,
    /// The index of the best chain, brought up to the chain's tip, if there is one: the node
    /// keeps it following the tip and the API reads it.
    pub index: Option<Arc<Index>>,
    /// Where rewards go.
    pub reward_to: Address,
    /// The engine to mine with.
    pub engine: Box<dyn MiningEngine>,
    /// Each device's nonces, when the engine is several devices at once.
    pub meters: Option<DeviceMeters>,
    /// The data directory (for `peers.dat`).
    pub data_dir: PathBuf,
    /// Stops the node when it sends or closes, beside [`NodeHandle::shutdown`]: for a Ctrl-C
    /// handler installed before the node starts, so that no signal finds it half started.
    pub stop: Option<Receiver<()>>,
}

/// What the threads tell the node loop.
enum Message {
    Payment(Box<Payment>, SocketAddr),
    /// A status, where from, and when it arrived (before any queue).
    Status(Status, SocketAddr, Instant),
    StatusRequest,
    Mined {
        job: u64,
        block: Box<Block>,
        took: Duration,
        hashes: u64,
    },
    MiningFailed(u64, EngineError),
    /// A worker on the pool port found a block.
    WorkerBlock {
        block: Box<Block>,
        worker: String,
    },
    Downloaded {
        peer: SocketAddr,
        blocks: Vec<Block>,
        /// How many of the blocks were new, or why one could not be added.
        ack: Sender<Result<u64, ApplyError>>,
    },
    DownloadDone {
        peer: SocketAddr,
        result: Result<u64, DownloadError>,
    },
    /// A peer asked the block server for a link (already answered).
    LinkIn {
        stream: TcpStream,
        from: SocketAddr,
        hello: Status,
    },
    /// A dialled peer took our link.
    LinkOut {
        stream: TcpStream,
        addr: SocketAddr,
        hello: Status,
    },
    DialFailed(SocketAddr),
    /// A named peer's name resolved, late.
    Resolved(String, SocketAddr),
    FromLink(LinkId, LinkMessage),
    LinkDown(LinkId, Down),
    Shutdown,
}

/// The three ways into the node loop.
#[derive(Clone)]
struct Senders {
    /// Blocks, downloads, mining results, links ending and shutdown: never dropped, handled
    /// first.
    urgent: Sender<Message>,
    statuses: Sender<Message>,
    payments: Sender<Message>,
}

impl LinkEvents for Senders {
    fn message(&self, id: LinkId, message: LinkMessage) {
        let queue = match message {
            LinkMessage::Payment(_) => &self.payments,
            LinkMessage::Status(_) | LinkMessage::Addrs(_) => &self.statuses,
        };
        if queue.try_send(Message::FromLink(id, message)).is_err() {
            tracing::debug!(id, "event queue full: dropped a link message");
        }
    }

    fn down(&self, id: LinkId, why: Down) {
        let _ = self.urgent.send(Message::LinkDown(id, why));
    }
}

struct Inbox {
    urgent: Receiver<Message>,
    statuses: Receiver<Message>,
    payments: Receiver<Message>,
    stop: Receiver<()>,
}

/// A search the core asked for ([`Effect::Mine`]).
struct Job {
    id: u64,
    block: Block,
    control: Arc<SearchControl>,
}

/// Starts a node: binds its sockets (an error if one is taken), starts its threads and its
/// loop, and returns its handle. The node runs until [`NodeHandle::shutdown`], a message on
/// [`NodeSetup::stop`], or a store failure.
pub fn spawn(setup: NodeSetup) -> Result<NodeHandle, StartError> {
    let NodeSetup {
        config,
        chain,
        store,
        index,
        reward_to,
        engine,
        meters,
        data_dir,
        stop,
    } = setup;
    let node_id = rand_node_id();
    let chain = Arc::new(RwLock::new(chain));
    let (urgent, urgent_inbox) = unbounded::<Message>();
    let (statuses, status_inbox) = bounded::<Message>(EVENT_QUEUE);
    let (payments, payment_inbox) = bounded::<Message>(EVENT_QUEUE);
    let (said, events) = bounded::<Event>(EVENTS_KEPT);
    let say = move |event: Event| {
        let _ = said.try_send(event);
    };
    let senders = Senders {
        urgent,
        statuses,
        payments,
    };
    let inbox = Inbox {
        urgent: urgent_inbox,
        statuses: status_inbox,
        payments: payment_inbox,
        stop: stop.unwrap_or_else(crossbeam_channel::never),
    };

    let udp = |what, port| {
        net::udp_listener(port).map_err(|source| StartError::Udp { what, port, source })
    };
    let tx_socket = udp("payments", config.transaction_port)?;
    let status_socket = udp("status", config.status_broadcast_port)?;
    let dropped = net::Dropped::default();
    let hooks = NodeHooks {
        node_id,
        inbound: Arc::new({
            let events = senders.clone();
            move |inbound| {
                let (queue, event) = match inbound {
                    Inbound::Payment { payment, from } => {
                        (&events.payments, Message::Payment(Box::new(payment), from))
                    }
                    Inbound::Link {
                        stream,
                        from,
                        hello,
                    } => (
                        &events.statuses,
                        Message::LinkIn {
                            stream,
                            from,
                            hello,
                        },
                    ),
                };
                if queue.try_send(event).is_err() {
                    tracing::debug!("event queue full: dropped a submitted payment or link");
                }
            }
        }),
    };
    let served = Arc::new(IndexedChain {
        chain: chain.clone(),
        index: index.clone(),
    });
    let server = BlockServer::start_node(
        config.block_server_port,
        served,
        dropped.clone(),
        Some(hooks),
    )
    .map_err(|source| StartError::BlockServer {
        port: config.block_server_port,
        source,
    })?;
    let broadcast = |what| {
        config
            .broadcast_address
            .map(|to| Broadcaster::new(to, config.status_broadcast_port))
            .transpose()
            .map_err(|source| StartError::Broadcast { what, source })
    };
    let (broadcaster, ask) = (broadcast("announcing")?, broadcast("asking")?);
    say(Event::Listening {
        transaction_port: config.transaction_port,
        status_port: config.status_broadcast_port,
        block_port: server.port(),
        broadcast_to: broadcaster.as_ref().map(Broadcaster::target),
    });
    let (links, unresolved) = named_and_saved_peers(&config, &data_dir, node_id, &say);
    let devices = match &meters {
        Some(m) => m.devices.iter().map(device).collect(),
        None => vec![device(&engine.info())],
    };
    let published = Arc::new(Mutex::new(NodeState::new(devices)));
    let api = start_api(
        &config,
        chain.clone(),
        index.clone(),
        published.clone(),
        &say,
    );
    let api_addr = api.as_ref().map(HttpServer::local_addr);
    let pool = pool::start(&config, senders.urgent.clone(), published.clone(), &say)?;
    let pool_addr = pool.as_ref().map(pool::Pool::local_addr);
    let ports = Ports {
        block_server: server.port(),
        api: api_addr,
        pool: pool_addr,
        transactions: config.transaction_port,
        status: config.status_broadcast_port,
    };
    let written = serde_json::to_vec(&ports)
        .map_err(std::io::Error::other)
        .and_then(|bytes| mvbc_protocol::fsutil::write_atomic(&data_dir.join(PORTS_FILE), &bytes));
    if let Err(e) = written {
        // Only for scripts that look for it: the node runs on without it.
        tracing::warn!("cannot write {PORTS_FILE}: {e}");
    }

    spawn_thread("tx-listener", {
        let (events, dropped) = (senders.clone(), dropped.clone());
        move || listen(tx_socket, events, node_id, "payment port", dropped)
    })?;
    spawn_thread("status-listener", {
        let (events, dropped) = (senders.clone(), dropped.clone());
        move || listen(status_socket, events, node_id, "status port", dropped)
    })?;
    let (announce, announcements) = unbounded::<Status>();
    if let Some(broadcaster) = broadcaster {
        spawn_thread("status-broadcaster", move || {
            broadcast_status(broadcaster, announcements)
        })?;
    }
    let (jobs, job_inbox) = unbounded::<Job>();
    let hashes_done = Arc::new(AtomicU64::new(0));
    spawn_thread("miner", {
        let events = senders.urgent.clone();
        let hashes_done = hashes_done.clone();
        move || mine(engine, job_inbox, events, hashes_done)
    })?;
    if !unresolved.is_empty() {
        let events = senders.urgent.clone();
        spawn_thread("resolver", move || resolve_later(unresolved, events))?;
    }
    let (sync_jobs, sync_inbox) = unbounded::<(Download, ForkPoints)>();
    let params = config.consensus();
    for _ in 0..Role::MINER.parallel {
        spawn_thread("downloader", {
            let (events, inbox) = (senders.urgent.clone(), sync_inbox.clone());
            move || download(inbox, events, params)
        })?;
    }

    let block_port = server.port();
    let timing = Timing::for_interval(config.status_broadcast_interval);
    let store = Storage::new(store, index);
    let mut core = NodeCore::new(node_id, block_port, chain.clone(), store, reward_to, timing);
    core.set_links(links);
    let mut node = Node {
        core,
        dropped,
        job: None,
        mining_clock: MiningClock::default(),
        block_lines: BlockLines::new(Instant::now()),
        jobs,
        sync_jobs,
        announce,
        hashes_done,
        meters,
        published,
        events: senders.clone(),
        links: HashMap::new(),
        quiet: timing.quiet,
        acks: HashMap::new(),
        offered: HashMap::new(),
        next_conn: 0,
        fatal: None,
        peers_file: data_dir.join(peerfile::PEERS_FILE),
        pool,
        say: Box::new(say),
    };
    let looped = thread::Builder::new()
        .name("node".into())
        .spawn(move || {
            node.input(Input::Start);
            node.carry_out();
            if let Some(ask) = &ask
                && let Err(e) = ask.send(&Datagram::StatusRequest)
            {
                tracing::warn!("asking peers for their status failed: {e}");
            }
            let result = node.event_loop(inbox);
            // The block server and the API stop with the loop, before the handle hears it.
            drop((server, api));
            result
        })
        .map_err(|source| StartError::Thread {
            name: "node",
            source,
        })?;
    Ok(NodeHandle::new(
        events,
        senders.urgent,
        block_port,
        api_addr,
        chain,
        looped,
    ))
}

/// The API's name for a device.
fn device(info: &EngineInfo) -> Device {
    let kind = match info.device {
        DeviceKind::Cpu => "cpu",
        DeviceKind::Gpu => "gpu",
        DeviceKind::Several => "several",
        DeviceKind::None => "none",
    };
    Device {
        kind: kind.into(),
        name: info.adapter.clone(),
    }
}

/// Serves the API and the explorer page where `api_listen` says, or says why not and goes on
/// without them: the API is for watching, never a reason not to mine.
fn start_api(
    config: &Config,
    chain: Arc<RwLock<Chain>>,
    index: Option<Arc<Index>>,
    published: Arc<Mutex<NodeState>>,
    say: &impl Fn(Event),
) -> Option<HttpServer> {
    let addr = config.api_listen?;
    let started = TcpListener::bind(addr).and_then(|listener| {
        let handler = Arc::new(Api::new(chain, index, published));
        let options = api::http::Options {
            allow_origin: config.api_allow_origin.clone(),
        };
        HttpServer::start(listener, handler, options)
    });
    match started {
        Ok(server) => {
            say(Event::ApiListening(server.local_addr()));
            Some(server)
        }
        Err(error) => {
            say(Event::ApiUnavailable { at: addr, error });
            None
        }
    }
}

/// How often a named peer whose name does not resolve is tried again.
const RESOLVE_AGAIN: Duration = Duration::from_secs(30);

/// The links to keep: each named peer and the addresses `peers.dat` saved; and the names that
/// do not resolve yet (said, and tried again every [`RESOLVE_AGAIN`]).
fn named_and_saved_peers(
    config: &Config,
    dir: &std::path::Path,
    node_id: u64,
    say: &impl Fn(Event),
) -> (Links, Vec<String>) {
    let mut named = Vec::new();
    let mut unresolved = Vec::new();
    for peer in &config.peers {
        match config::resolve_peer(peer) {
            Ok(addr) => named.push(addr),
            Err(error) => {
                say(Event::PeerUnresolved {
                    name: peer.clone(),
                    error,
                });
                unresolved.push(peer.clone());
            }
        }
    }
    let path = dir.join(peerfile::PEERS_FILE);
    let saved = peerfile::load(&path).unwrap_or_else(|error| {
        say(Event::PeersFileUnread { path, error });
        Vec::new()
    });
    if !named.is_empty() || !saved.is_empty() {
        say(Event::Peers {
            named: named.clone(),
            saved: saved.len(),
        });
    }
    (
        Links::new(node_id, &named, &saved, Instant::now()),
        unresolved,
    )
}

/// Resolves each name until it does, in a thread of its own: a name server that is slow or
/// down must not hold up the node loop.
fn resolve_later(mut names: Vec<String>, events: Sender<Message>) {
    while !names.is_empty() {
        thread::sleep(RESOLVE_AGAIN);
        names.retain(|name| match config::resolve_peer(name) {
            Ok(addr) => events.send(Message::Resolved(name.clone(), addr)).is_err(),
            Err(_) => true,
        });
    }
}

fn spawn_thread(name: &'static str, f: impl FnOnce() + Send + 'static) -> Result<(), StartError> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|source| StartError::Thread { name, source })?;
    Ok(())
}

/// A node id nobody can predict: a peer that could guess it could send statuses in its name
/// before it starts.
fn rand_node_id() -> u64 {
    rand::random()
}

/// Receives datagrams and forwards the ones that decode, payments and statuses each to their
/// own queue; a full queue drops them.
fn listen(
    socket: std::net::UdpSocket,
    events: Senders,
    own_id: u64,
    port: &str,
    dropped: net::Dropped,
) {
    loop {
        let Some((from, datagram)) = net::recv_datagram(&socket) else {
            continue;
        };
        let (queue, event) = match datagram {
            Ok(Datagram::Payment(p)) => (&events.payments, Message::Payment(Box::new(p), from)),
            Ok(Datagram::Status(s)) if s.node_id == own_id => continue,
            Ok(Datagram::Status(s)) => (&events.statuses, Message::Status(s, from, Instant::now())),
            Ok(Datagram::StatusRequest) => (&events.statuses, Message::StatusRequest),
            Err(e) => {
                dropped.note(from, port, &e);
                continue;
            }
        };
        if queue.try_send(event).is_err() {
            tracing::debug!(%from, "event queue full: dropped a datagram");
        }
    }
}

/// Broadcasts each status the node loop hands it: when the tip moves, when asked, and every
/// status interval (the core's timer).
fn broadcast_status(broadcaster: Broadcaster, statuses: Receiver<Status>) {
    for status in statuses {
        if let Err(e) = broadcaster.send(&Datagram::Status(status)) {
            tracing::warn!("status broadcast to {} failed: {e}", broadcaster.target());
        }
    }
}

/// The mining thread: takes the newest job, searches until found or stopped.
fn mine(
    mut engine: Box<dyn MiningEngine>,
    jobs: Receiver<Job>,
    events: Sender<Message>,
    hashes_done: Arc<AtomicU64>,
) {
    while let Ok(mut job) = jobs.recv() {
        // Jobs queued while the last search ran are stale but for the newest.
        while let Ok(newer) = jobs.try_recv() {
            job = newer;
        }
        if job.control.is_stopped() {
            continue;
        }
        let started = Instant::now();
        let work = WorkUnit::new(&job.block.header);
        let result = search_verified(engine.as_mut(), &work, NonceRange::all(), &job.control);
        hashes_done.fetch_add(job.control.hashes(), Ordering::Relaxed);
        let event = match result {
            Ok(Search::Found(nonce)) => {
                let mut block = job.block;
                block.header.nonce = nonce;
                Message::Mined {
                    job: job.id,
                    block: Box::new(block),
                    took: started.elapsed(),
                    hashes: job.control.hashes(),
                }
            }
            Ok(Search::Aborted) => continue,
            Ok(Search::Exhausted) => {
                // Every nonce of the header tried without a solution.
                Message::MiningFailed(job.id, EngineError::EndedEarly(Search::Exhausted))
            }
            Err(e) => Message::MiningFailed(job.id, e),
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// The node loop is gone: a download stops there.
fn stopped<E>(_: E) -> FetchError {
    FetchError::Cancelled(net::Cancelled::Stopped)
}

/// A downloader thread (there are [`Role::parallel`] of them, so a peer that stalls holds only
/// one): runs the downloads the node loop sends, handing each batch to the loop and waiting for
/// its verdict before asking for more.
fn download(
    jobs: Receiver<(Download, ForkPoints)>,
    events: Sender<Message>,
    params: ConsensusParams,
) {
    while let Ok((job, from)) = jobs.recv() {
        let result = BlockClient::connect(job.peer).and_then(|mut client| {
            client.fetch(&job, &from, &params, unix_now(), |blocks, _| {
                let (ack, verdict) = bounded(1);
                events
                    .send(Message::Downloaded {
                        peer: job.peer,
                        blocks,
                        ack,
                    })
                    .map_err(stopped)?;
                Ok(verdict.recv().map_err(stopped)??)
            })
        });
        let done = Message::DownloadDone {
            peer: job.peer,
            result: result.map_err(DownloadError::from),
        };
        if events.send(done).is_err() {
            return;
        }
    }
}

/// The driver: the node core, and the channels to the threads that carry out its effects.
struct Node {
    core: NodeCore<Storage>,
    /// Datagrams and requests dropped as malformed.
    dropped: net::Dropped,
    /// The search running now: the core's job id, and the control that stops it.
    job: Option<(u64, Arc<SearchControl>)>,
    /// How long a search has run, all told: rates over mining time leave idle spells out.
    mining_clock: MiningClock,
    /// Block lines shown this second, and those held back.
    block_lines: BlockLines,
    jobs: Sender<Job>,
    sync_jobs: Sender<(Download, ForkPoints)>,
    announce: Sender<Status>,
    hashes_done: Arc<AtomicU64>,
    /// Each device's meter and its reading at the last report, when mining on several.
    meters: Option<DeviceMeters>,
    /// What the API shows, published every [`SECOND`].
    published: Arc<Mutex<NodeState>>,
    /// For the threads of new links and dials.
    events: Senders,
    /// The links up, by the core's id.
    links: HashMap<LinkId, LinkIo>,
    /// A link silent this long is gone.
    quiet: Duration,
    /// Downloaders waiting to hear how their batch went, by peer.
    acks: HashMap<SocketAddr, Sender<Result<u64, ApplyError>>>,
    /// Connections offered as links, until the core says whether to keep them.
    offered: HashMap<u64, TcpStream>,
    next_conn: u64,
    /// Why the node must stop (the store failed).
    fatal: Option<ApplyError>,
    peers_file: PathBuf,
    /// The pool port, when it is open: told of each new job the core starts.
    pool: Option<pool::Pool>,
    /// Tells the user.
    say: Box<dyn Fn(Event) + Send>,
}

impl Node {
    /// Handles events until shutdown. Timers are the core's: the loop sleeps until
    /// [`NodeCore::next_wakeup`] when nothing else comes.
    fn event_loop(&mut self, inbox: Inbox) -> Result<(), RunError> {
        let report = tick(REPORT_INTERVAL);
        let second = tick(SECOND);
        self.publish();
        loop {
            if let Some(e) = self.fatal.take() {
                self.stop_mining();
                return Err(RunError::Store(e));
            }
            // Urgent events first, whatever else waits; among the rest, select picks at random,
            // so a flood on one queue does not starve the other.
            let message = match inbox.urgent.try_recv() {
                Ok(m) => m,
                Err(_) if inbox.stop.try_recv() != Err(TryRecvError::Empty) => Message::Shutdown,
                Err(_) => {
                    let wakeup = self
                        .core
                        .next_wakeup()
                        .map_or_else(crossbeam_channel::never, crossbeam_channel::at);
                    select! {
                        recv(inbox.urgent) -> m => match m {
                            Ok(m) => m,
                            Err(_) => return Ok(()),
                        },
                        recv(inbox.statuses) -> m => match m {
                            Ok(m) => m,
                            Err(_) => return Ok(()),
                        },
                        recv(inbox.payments) -> m => match m {
                            Ok(m) => m,
                            Err(_) => return Ok(()),
                        },
                        recv(inbox.stop) -> _ => Message::Shutdown,
                        recv(wakeup) -> _ => {
                            self.input(Input::Wakeup);
                            self.carry_out();
                            continue;
                        }
                        recv(report) -> _ => {
                            self.report();
                            continue;
                        }
                        recv(second) -> _ => {
                            self.publish();
                            self.flush_block_lines(Instant::now());
                            continue;
                        }
                    }
                }
            };
            if let Message::Shutdown = message {
                self.input(Input::Stop);
                self.carry_out();
                self.stop_mining();
                // Block lines still held are counted before the last word.
                self.flush_block_lines(Instant::now() + SECOND);
                let status = self.core.status();
                (self.say)(Event::Stopped {
                    height: status.height,
                    tip: status.tip,
                    store: self.core.store().path().to_path_buf(),
                    dropped: self.dropped.count(),
                    refused: self.core.refused_payments.total,
                });
                return Ok(());
            }
            if let Some(input) = self.take(message) {
                self.input(input);
            }
            self.carry_out();
        }
    }

    /// Hands the core one input, now.
    fn input(&mut self, input: Input) {
        self.core.handle(input, Instant::now(), unix_now());
    }

    /// What a thread's message means for the core, after what the driver itself keeps of it
    /// (a connection offered as a link, a downloader waiting for its verdict, the search).
    fn take(&mut self, message: Message) -> Option<Input> {
        Some(match message {
            Message::Payment(payment, from) => Input::Payment {
                payment: *payment,
                from,
            },
            Message::Status(status, from, received) => Input::Status {
                status,
                from,
                received,
            },
            Message::StatusRequest => Input::StatusRequest,
            Message::LinkIn {
                stream,
                from,
                hello,
            } => self.offer(stream, from, false, hello),
            Message::LinkOut {
                stream,
                addr,
                hello,
            } => self.offer(stream, addr, true, hello),
            Message::DialFailed(addr) => Input::DialFailed(addr),
            Message::Resolved(name, addr) => {
                (self.say)(Event::PeerResolved { name, addr });
                Input::NamedPeer(addr)
            }
            Message::FromLink(id, message) => Input::LinkMessage(id, message),
            Message::LinkDown(id, why) => {
                self.links.remove(&id);
                Input::LinkDown(id, why)
            }
            Message::Mined {
                job,
                block,
                took,
                hashes,
            } => {
                self.search_ended(job);
                Input::Mined {
                    job,
                    block: *block,
                    took,
                    hashes,
                }
            }
            Message::WorkerBlock { block, worker } => Input::WorkerBlock {
                block: *block,
                worker,
            },
            Message::MiningFailed(job, e) => {
                tracing::error!("mining failed: {e}");
                (self.say)(Event::MiningFailed(e));
                self.search_ended(job);
                Input::MiningFailed { job }
            }
            Message::Downloaded { peer, blocks, ack } => {
                self.acks.insert(peer, ack);
                Input::Downloaded { peer, blocks }
            }
            Message::DownloadDone { peer, result } => Input::DownloadDone { peer, result },
            Message::Shutdown => return None,
        })
    }

    /// Holds a connection offered as a link until the core's verdict.
    fn offer(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        outbound: bool,
        hello: Status,
    ) -> Input {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.offered.insert(conn, stream);
        Input::LinkOffered {
            conn,
            peer,
            outbound,
            hello,
        }
    }

    /// Starts the threads of link `id`, or takes it back from the core when they cannot start.
    fn start_link(&mut self, id: LinkId, stream: TcpStream) {
        match link::start(id, stream, self.quiet, self.events.clone()) {
            Ok(io) => {
                self.links.insert(id, io);
            }
            Err(e) => {
                tracing::warn!("cannot start a link's threads: {e}");
                self.input(Input::LinkDown(id, Down::Lost));
            }
        }
    }

    /// Carries out what the core asked for, in order, until it asks nothing more.
    fn carry_out(&mut self) {
        loop {
            let effects = self.core.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                self.carry_out_one(effect);
            }
        }
    }

    fn carry_out_one(&mut self, effect: Effect) {
        match effect {
            Effect::Note(note) => {
                // A catch-up's start and end show in the API at once, not up to a second late.
                let catch_up = matches!(note, Note::CatchingUp { .. } | Note::CaughtUp { .. });
                let block = match note {
                    Note::BlockMined { .. } => Some(true),
                    Note::BlockAdopted { .. } => Some(false),
                    _ => None,
                };
                if let Some(mined) = block {
                    self.flush_block_lines(Instant::now());
                    if !self.block_lines.allow(mined) {
                        return;
                    }
                }
                (self.say)(Event::Note(note));
                if catch_up {
                    self.publish();
                }
            }
            Effect::Announce(status) => {
                let _ = self.announce.send(status);
            }
            Effect::Download(download, from) => {
                let peer = download.peer;
                if self.sync_jobs.send((download, from)).is_err() {
                    // The downloaders are gone: the node is stopping.
                    self.input(Input::DownloadAbandoned(peer));
                }
            }
            Effect::Delivered { peer, result } => {
                if let Some(ack) = self.acks.remove(&peer) {
                    let _ = ack.send(result);
                }
            }
            Effect::Mine {
                job,
                block,
                template,
            } => {
                self.share_work(Some(template));
                self.stop_mining();
                let control = Arc::new(SearchControl::new());
                let search = Job {
                    id: job,
                    block,
                    control: control.clone(),
                };
                if self.jobs.send(search).is_ok() {
                    self.job = Some((job, control));
                    self.mining_clock.start(Instant::now());
                } else {
                    self.input(Input::MiningFailed { job });
                }
            }
            Effect::StopMining => {
                self.share_work(None);
                self.stop_mining();
            }
            Effect::Dial(addr) => {
                let events = self.events.urgent.clone();
                let dialled = link::dial(addr, self.core.status(), move |result| {
                    let _ = events.send(match result {
                        Ok((stream, hello)) => Message::LinkOut {
                            stream,
                            addr,
                            hello,
                        },
                        Err(_) => Message::DialFailed(addr),
                    });
                });
                if dialled.is_err() {
                    self.input(Input::DialFailed(addr));
                }
            }
            Effect::Link { conn, verdict } => {
                let Some(stream) = self.offered.remove(&conn) else {
                    return;
                };
                match verdict {
                    Ok(id) => self.start_link(id, stream),
                    // Dropped: closed.
                    Err(_) => drop(stream),
                }
            }
            Effect::Send(id, message) => {
                let full = self
                    .links
                    .get(&id)
                    .is_some_and(|io| io.send(message).is_err());
                if full {
                    // The peer does not read what it is sent: let it go rather than hold more
                    // for it.
                    if let Some(io) = self.links.remove(&id) {
                        io.close();
                    }
                    self.input(Input::LinkDown(id, Down::Lost));
                }
            }
            Effect::Close(id) => {
                if let Some(io) = self.links.remove(&id) {
                    io.close();
                }
            }
            Effect::SavePeers(addrs) => {
                if let Err(e) = peerfile::save(&self.peers_file, &addrs) {
                    tracing::warn!("cannot save {}: {e}", self.peers_file.display());
                }
            }
            Effect::Fatal(e) => {
                self.stop_mining();
                self.fatal.get_or_insert(e);
            }
        }
    }

    /// Tells the pool port's workers what the node mines now: the block on the tip (each
    /// worker's paying the worker), or nothing.
    fn share_work(&self, work: Option<Arc<Template>>) {
        if let Some(pool) = &self.pool {
            pool.set_work(work);
        }
    }

    /// The mining thread is done with `job`: if it is the search running, none runs now.
    fn search_ended(&mut self, job: u64) {
        if self.job.as_ref().is_some_and(|(id, _)| *id == job) {
            self.job = None;
            self.mining_clock.stop(Instant::now());
        }
    }

    fn stop_mining(&mut self) {
        if let Some((_, control)) = self.job.take() {
            control.stop();
            self.mining_clock.stop(Instant::now());
        }
    }

    /// Once a second has passed since the block lines' window began: the count of those held
    /// back, in one line, and a new window.
    fn flush_block_lines(&mut self, now: Instant) {
        if let Some((mined, adopted)) = self.block_lines.next_window(now) {
            let status = self.core.status();
            (self.say)(Event::BlocksNotShown {
                mined,
                adopted,
                height: status.height,
                tip: status.tip,
            });
        }
    }

    fn hashes(&self) -> u64 {
        let running = self.job.as_ref().map_or(0, |(_, c)| c.hashes());
        self.hashes_done.load(Ordering::Relaxed) + running
    }

    /// Publishes what the API shows: the pool's first payments, the peers, whether it mines,
    /// and a sample of each device's nonce counter.
    fn publish(&mut self) {
        let now = Instant::now();
        let counts = match &self.meters {
            Some(m) => m.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            None => vec![self.hashes()],
        };
        let pending = self.core.pool().select(api::MAX_PENDING_LISTED);
        let peers = self
            .core
            .sync()
            .peers()
            .iter()
            .map(|p| PeerInfo {
                node_id: p.node_id,
                block_server: p.block_server,
                height: p.status.height,
                tip: p.status.tip,
                chain_work: p.status.chain_work,
                last_seen_seconds: now.saturating_duration_since(p.last_seen).as_secs_f64(),
                passed_over_seconds: p
                    .backoff_until
                    .filter(|until| *until > now)
                    .map(|until| until.saturating_duration_since(now).as_secs_f64()),
            })
            .collect();
        let mut state = self.published.lock().unwrap_or_else(|e| e.into_inner());
        state.mining = self.job.is_some();
        state.downloads = self.core.sync().running().len();
        state.catch_up = self.core.catch_up(now);
        state.pending_count = self.core.pending();
        state.stale = self.core.stale_blocks(STALE_WINDOW);
        state.pending = pending;
        state.peers = peers;
        let mut links: Vec<(SocketAddr, bool)> = self
            .core
            .links()
            .iter()
            .map(|(_, l)| (l.addr, l.outbound))
            .collect();
        links.sort();
        state.links = links;
        state.known_addresses = self.core.links().known_len();
        state.dropped = self.dropped.count();
        state.refused = self.core.refused_payments.total;
        state.blocks_mined = self.core.blocks_mined;
        state.blocks_by_workers = self.core.blocks_by_workers;
        state.reorgs = self.core.reorgs;
        state.other_network = self.core.other_network_messages();
        state
            .rates
            .record(now, counts, self.mining_clock.total(now));
    }

    /// The periodic report: height, tip, hash rate since the last one, pool, peers.
    fn report(&mut self) {
        let now = Instant::now();
        // A fresh sample first: the rates end now.
        self.publish();
        let (rates, devices, pool) = {
            let state = self.published.lock().unwrap_or_else(|e| e.into_inner());
            let n = state.devices.len();
            let total = |window| -> Option<f64> {
                (0..n).map(|i| state.rates.mining_rate(i, window)).sum()
            };
            let rates = RATE_WINDOWS.map(total);
            let devices = if n > 1 {
                state
                    .devices
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let rate = state.rates.mining_rate(i, RATE_WINDOWS[0]);
                        (format!("{} {}", d.kind, d.name), rate)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let pool = state.pool.as_ref().map(|p| PoolReport {
                connections: p.connections,
                rate: p.workers.iter().map(|w| w.rates[0]).sum(),
                blocks: self.core.blocks_by_workers,
            });
            (rates, devices, pool)
        };
        let status = self.core.status();
        (self.say)(Event::Report(Report {
            height: status.height,
            tip: status.tip,
            mining: self.job.is_some(),
            rates,
            devices,
            blocks_found: self.core.blocks_mined,
            pending: self.core.pending(),
            peers: self.core.sync().peers().len(),
            stale: self.core.stale_blocks(STALE_WINDOW),
            dropped: self.dropped.count(),
            refused: self.core.refused_payments.total,
            other_network: self.core.other_network_messages(),
            catching_up: self.core.catch_up(now).is_some(),
            pool,
        }));
        let seconds = REPORT_INTERVAL.as_secs();
        let held = self.core.refused_payments.new_window();
        if held > 0 {
            tracing::info!(
                "{held} more payments refused in the last {seconds} s, not logged one by one"
            );
        }
        let count = self.core.failed_downloads.new_window();
        if count > 0 {
            (self.say)(Event::DownloadsNotShown { count, seconds });
        }
    }
}

/// Time spent mining: what a search has run, summed over searches.
#[derive(Debug, Default)]
struct MiningClock {
    before: Duration,
    since: Option<Instant>,
}

impl MiningClock {
    /// A search runs from `now` (one running already goes on).
    fn start(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// No search runs from `now`.
    fn stop(&mut self, now: Instant) {
        if let Some(since) = self.since.take() {
            self.before += now.saturating_duration_since(since);
        }
    }

    /// Mining time up to `now`.
    fn total(&self, now: Instant) -> Duration {
        self.before
            + self
                .since
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

/// Block lines in the current second: at most [`BLOCK_LINES_PER_SECOND`] shown, the rest
/// counted.
#[derive(Debug)]
struct BlockLines {
    window: Instant,
    shown: u32,
    mined: u64,
    adopted: u64,
}

impl BlockLines {
    fn new(now: Instant) -> BlockLines {
        BlockLines {
            window: now,
            shown: 0,
            mined: 0,
            adopted: 0,
        }
    }

    /// Whether a block line (of a block `mined` here, or adopted) is shown.
    fn allow(&mut self, mined: bool) -> bool {
        if self.shown < BLOCK_LINES_PER_SECOND {
            self.shown += 1;
            return true;
        }
        if mined {
            self.mined += 1;
        } else {
            self.adopted += 1;
        }
        false
    }

    /// Starts a new window once a second has passed; the counts held back in the last one,
    /// if any were.
    fn next_window(&mut self, now: Instant) -> Option<(u64, u64)> {
        if now.saturating_duration_since(self.window) < SECOND {
            return None;
        }
        let held = (self.mined, self.adopted);
        *self = BlockLines::new(now);
        (held != (0, 0)).then_some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lines_are_a_few_a_second_and_the_rest_are_counted() {
        let t0 = Instant::now();
        let mut lines = BlockLines::new(t0);
        let shown = (0..1_000).filter(|i| lines.allow(i % 3 != 0)).count();
        assert_eq!(shown, BLOCK_LINES_PER_SECOND as usize);
        assert_eq!(
            lines.next_window(t0 + SECOND / 2),
            None,
            "within the second"
        );
        // The 996 held back: 664 mined (i % 3 != 0), 332 adopted.
        assert_eq!(lines.next_window(t0 + SECOND), Some((664, 332)));
        assert_eq!(lines.next_window(t0 + 2 * SECOND), None, "nothing held");
        assert!(lines.allow(true));
    }

    #[test]
    fn the_mining_clock_counts_only_searches() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut clock = MiningClock::default();
        clock.start(t0);
        clock.start(t0 + s(1));
        clock.stop(t0 + s(2));
        clock.stop(t0 + s(5));
        clock.start(t0 + s(10));
        assert_eq!(clock.total(t0 + s(13)), s(5));
    }
}
