//! The mining node's driver: threads for the network and the engine, joined by channels of
//! events into a single loop around the node core (`mvbc_node::core::NodeCore`), which owns
//! the chain, the store, the pool and the peers and decides everything; this loop hands it each
//! event with the time and carries out the effects it returns.
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

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, bounded, select, tick, unbounded};
use mvbc_miner::api::{self, Api, Device, NodeState, PeerInfo, http::HttpServer};
use mvbc_miner::engine::{
    DeviceKind, EngineError, EngineInfo, MiningEngine, NonceRange, Search, SearchControl,
    search_verified,
};
use mvbc_miner::select::DeviceMeters;
use mvbc_miner::work::WorkUnit;
use mvbc_net::FetchError;
use mvbc_net::{self as net, BlockClient, BlockServer, Broadcaster};
use mvbc_net::{Inbound, NodeHooks};
use mvbc_node::apply::ApplyError;
use mvbc_node::core::{Effect, NodeCore, Note};
use mvbc_node::links::{Down, LinkId, Links};
use mvbc_node::peerfile;
use mvbc_node::sync::{Download, DownloadError, Role};
use mvbc_protocol::chain::STALE_WINDOW;
use mvbc_protocol::chain::read_chain;
use mvbc_protocol::config;
use mvbc_protocol::store::BlockStore;
use mvbc_protocol::wire::LinkMessage;
use mvbc_protocol::wire::{Datagram, Status};
use mvbc_protocol::{Address, Block, Chain, Config, Hash256, Payment, unix_now};

/// Pending payments, and pending statuses, a listener may queue before it drops datagrams (a
/// flood must not grow memory).
const EVENT_QUEUE: usize = 10_000;
/// How often the node prints its periodic status line.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// How often the node publishes its state and hash rates for the API, and sees to its links.
const SECOND: Duration = Duration::from_secs(1);
/// At start, how long the node listens for peers before it mines (at most one status
/// interval): a node joining a network downloads its chain instead of forking it at block 1.
const STARTUP_LISTEN: Duration = Duration::from_secs(1);

/// Everything the node needs to start.
pub struct NodeSetup {
    /// The configuration.
    pub config: Config,
    /// The chain loaded from the store.
    pub chain: Chain,
    /// The open store, where every accepted block is appended.
    pub store: BlockStore,
    /// Where rewards go.
    pub reward_to: Address,
    /// The engine to mine with.
    pub engine: Box<dyn MiningEngine>,
    /// Each device's nonces, when the engine is several devices at once.
    pub meters: Option<DeviceMeters>,
    /// The data directory (for `peers.dat`).
    pub data_dir: PathBuf,
}

pub(crate) enum Event {
    Payment(Box<Payment>, SocketAddr),
    /// A status, where from, and when it arrived (before any queue).
    Status(Status, SocketAddr, Instant),
    StatusRequest,
    Mined {
        block: Box<Block>,
        took: Duration,
        hashes: u64,
    },
    MiningFailed(EngineError),
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
    LinkMessage(LinkId, LinkMessage),
    LinkDown(LinkId, Down),
    Shutdown,
}

/// The three ways into the node loop.
#[derive(Clone)]
pub(crate) struct Senders {
    /// Blocks, downloads, mining results, links ending and shutdown: never dropped, handled
    /// first.
    pub(crate) urgent: Sender<Event>,
    pub(crate) statuses: Sender<Event>,
    pub(crate) payments: Sender<Event>,
}

struct Inbox {
    urgent: Receiver<Event>,
    statuses: Receiver<Event>,
    payments: Receiver<Event>,
}

struct Job {
    block: Block,
    control: Arc<SearchControl>,
}

/// Runs the node until Ctrl-C or SIGTERM.
pub fn run(setup: NodeSetup) -> Result<()> {
    let NodeSetup {
        config,
        chain,
        store,
        reward_to,
        engine,
        meters,
        data_dir,
    } = setup;
    let node_id = rand_node_id();
    let chain = Arc::new(RwLock::new(chain));
    let (urgent, urgent_inbox) = unbounded::<Event>();
    let (statuses, status_inbox) = bounded::<Event>(EVENT_QUEUE);
    let (payments, payment_inbox) = bounded::<Event>(EVENT_QUEUE);
    let events = Senders {
        urgent,
        statuses,
        payments,
    };
    let inbox = Inbox {
        urgent: urgent_inbox,
        statuses: status_inbox,
        payments: payment_inbox,
    };
    // Before anything is announced: a Ctrl-C or SIGTERM from then on waits on the urgent
    // channel and stops the node cleanly, however early it comes.
    let shutdown = events.urgent.clone();
    ctrlc::set_handler(move || {
        let _ = shutdown.send(Event::Shutdown);
    })
    .context("installing the Ctrl-C handler")?;

    let tx_socket = net::udp_listener(config.transaction_port).with_context(|| {
        format!(
            "listening for payments on UDP port {}",
            config.transaction_port
        )
    })?;
    let status_socket = net::udp_listener(config.status_broadcast_port).with_context(|| {
        format!(
            "listening for status on UDP port {}",
            config.status_broadcast_port
        )
    })?;
    let dropped = net::Dropped::default();
    let hooks = NodeHooks {
        node_id,
        inbound: Arc::new({
            let events = events.clone();
            move |inbound| {
                let (queue, event) = match inbound {
                    Inbound::Payment { payment, from } => {
                        (&events.payments, Event::Payment(Box::new(payment), from))
                    }
                    Inbound::Link {
                        stream,
                        from,
                        hello,
                    } => (
                        &events.statuses,
                        Event::LinkIn {
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
    let server = BlockServer::start_node(
        config.block_server_port,
        chain.clone(),
        dropped.clone(),
        Some(hooks),
    )
    .with_context(|| {
        format!(
            "starting the block server on TCP port {} (another miner on this host? \
             set -s block_server_port=0 to take any free port; it is announced in status broadcasts)",
            config.block_server_port
        )
    })?;
    let broadcast = |what| -> Result<Option<Broadcaster>> {
        config
            .broadcast_address
            .map(|to| Broadcaster::new(to, config.status_broadcast_port))
            .transpose()
            .with_context(|| format!("opening the status broadcast socket ({what})"))
    };
    let (broadcaster, ask) = (broadcast("announcing")?, broadcast("asking")?);
    println!(
        "Listening: payments on UDP {}, status on UDP {}, blocks on TCP {}; {}",
        config.transaction_port,
        config.status_broadcast_port,
        server.port(),
        match &broadcaster {
            Some(b) => format!("broadcasting to {}", b.target()),
            None => "not broadcasting (broadcast_address is \"\")".into(),
        }
    );
    let (links, unresolved) = named_and_saved_peers(&config, &data_dir, node_id);
    let devices = match &meters {
        Some(m) => m.devices.iter().map(device).collect(),
        None => vec![device(&engine.info())],
    };
    let published = Arc::new(Mutex::new(NodeState::new(devices)));
    let _api = start_api(&config, chain.clone(), published.clone());

    spawn("tx-listener", {
        let (events, dropped) = (events.clone(), dropped.clone());
        move || listen(tx_socket, events, node_id, "payment port", dropped)
    })?;
    spawn("status-listener", {
        let (events, dropped) = (events.clone(), dropped.clone());
        move || listen(status_socket, events, node_id, "status port", dropped)
    })?;
    let (announce, announcements) = unbounded::<Status>();
    let interval = config.status_broadcast_interval;
    if let Some(broadcaster) = broadcaster {
        spawn("status-broadcaster", move || {
            broadcast_status(broadcaster, announcements, interval)
        })?;
    }
    let (jobs, job_inbox) = unbounded::<Job>();
    let hashes_done = Arc::new(AtomicU64::new(0));
    spawn("miner", {
        let events = events.urgent.clone();
        let hashes_done = hashes_done.clone();
        move || mine(engine, job_inbox, events, hashes_done)
    })?;
    if !unresolved.is_empty() {
        let events = events.urgent.clone();
        spawn("resolver", move || resolve_later(unresolved, events))?;
    }
    let (sync_jobs, sync_inbox) = unbounded::<Download>();
    for _ in 0..Role::MINER.parallel {
        spawn("downloader", {
            let (events, chain, inbox) = (events.urgent.clone(), chain.clone(), sync_inbox.clone());
            move || download(inbox, events, chain)
        })?;
    }

    let mut core = NodeCore::new(
        node_id,
        server.port(),
        chain,
        store,
        reward_to,
        quiet(&config),
    );
    core.set_links(links);
    let mut node = Node {
        core,
        dropped,
        job: None,
        jobs,
        sync_jobs,
        announce,
        hashes_done,
        meters: meters.map(|m| {
            let last = vec![0; m.devices.len()];
            (m, last)
        }),
        published,
        events: events.clone(),
        links: HashMap::new(),
        quiet: quiet(&config),
        peers_file: data_dir.join(peerfile::PEERS_FILE),
    };
    node.core.announce();
    node.core.maintain_links(Instant::now());
    node.carry_out();
    if let Some(ask) = &ask
        && let Err(e) = ask.send(&Datagram::StatusRequest)
    {
        tracing::warn!("asking peers for their status failed: {e}");
    }
    let listen = STARTUP_LISTEN.min(interval);
    let result = node.event_loop(inbox, crossbeam_channel::after(listen));
    drop(server);
    result
}

/// The API's name for a device.
fn device(info: &EngineInfo) -> Device {
    let kind = match info.device {
        DeviceKind::Cpu => "cpu",
        DeviceKind::Gpu => "gpu",
        DeviceKind::Several => "several",
    };
    Device {
        kind: kind.into(),
        name: info.adapter.clone(),
    }
}

/// Serves the API and the explorer page where `api_listen` says, or says in one line why not
/// and goes on without them: the API is for watching, never a reason not to mine.
fn start_api(
    config: &Config,
    chain: Arc<RwLock<Chain>>,
    published: Arc<Mutex<NodeState>>,
) -> Option<HttpServer> {
    let addr = config.api_listen?;
    let started = TcpListener::bind(addr).and_then(|listener| {
        let handler = Arc::new(Api::new(chain, published));
        let options = api::http::Options {
            allow_origin: config.api_allow_origin.clone(),
        };
        HttpServer::start(listener, handler, options)
    });
    match started {
        Ok(server) => {
            let at = server.local_addr();
            println!("API: explorer at http://{at}/, JSON under http://{at}/api/v1/");
            if !at.ip().is_loopback() {
                println!(
                    "Warning: the API listens on {}, not only on this host: whoever reaches it \
                     can read the chain and this node's state (nothing can be changed through it)",
                    at.ip()
                );
            }
            Some(server)
        }
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                "is taken (another miner on this host? --api-listen 127.0.0.1:0 takes any free port)"
                    .to_string()
            } else {
                format!("cannot be used: {e}")
            };
            println!("API: {addr} {why}; mining on without the API");
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
) -> (Links, Vec<String>) {
    let mut named = Vec::new();
    let mut unresolved = Vec::new();
    for peer in &config.peers {
        match config::resolve_peer(peer) {
            Ok(addr) => named.push(addr),
            Err(e) => {
                println!("Peer {peer} does not resolve ({e}): trying again every 30 s");
                unresolved.push(peer.clone());
            }
        }
    }
    let path = dir.join(peerfile::PEERS_FILE);
    let saved = peerfile::load(&path).unwrap_or_else(|e| {
        println!(
            "{} not read ({e}): starting without saved peers",
            path.display()
        );
        Vec::new()
    });
    if !named.is_empty() || !saved.is_empty() {
        let named_list: Vec<String> = named.iter().map(ToString::to_string).collect();
        println!(
            "Peers: {} named{}, {} saved in {}",
            named.len(),
            if named.is_empty() {
                String::new()
            } else {
                format!(" ({})", named_list.join(", "))
            },
            saved.len(),
            peerfile::PEERS_FILE
        );
    }
    (
        Links::new(node_id, &named, &saved, Instant::now()),
        unresolved,
    )
}

/// Resolves each name until it does, in a thread of its own: a name server that is slow or
/// down must not hold up the node loop.
fn resolve_later(mut names: Vec<String>, events: Sender<Event>) {
    while !names.is_empty() {
        thread::sleep(RESOLVE_AGAIN);
        names.retain(|name| match config::resolve_peer(name) {
            Ok(addr) => events.send(Event::Resolved(name.clone(), addr)).is_err(),
            Err(_) => true,
        });
    }
}

/// A peer not heard for three status intervals has gone.
fn quiet(config: &Config) -> Duration {
    3 * config.status_broadcast_interval + Duration::from_secs(1)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("starting the {name} thread"))?;
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
            Ok(Datagram::Payment(p)) => (&events.payments, Event::Payment(Box::new(p), from)),
            Ok(Datagram::Status(s)) if s.node_id == own_id => continue,
            Ok(Datagram::Status(s)) => (&events.statuses, Event::Status(s, from, Instant::now())),
            Ok(Datagram::StatusRequest) => (&events.statuses, Event::StatusRequest),
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

/// Broadcasts the latest status when it changes and every `interval` otherwise.
fn broadcast_status(broadcaster: Broadcaster, updates: Receiver<Status>, interval: Duration) {
    let mut latest: Option<Status> = None;
    let timer = tick(interval);
    loop {
        select! {
            recv(updates) -> s => match s {
                Ok(s) => latest = Some(s),
                Err(_) => return,
            },
            recv(timer) -> _ => {}
        }
        if let Some(s) = &latest
            && let Err(e) = broadcaster.send(&Datagram::Status(*s))
        {
            tracing::warn!("status broadcast to {} failed: {e}", broadcaster.target());
        }
    }
}

/// The mining thread: takes the newest job, searches until found or stopped.
fn mine(
    mut engine: Box<dyn MiningEngine>,
    jobs: Receiver<Job>,
    events: Sender<Event>,
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
                Event::Mined {
                    block: Box::new(block),
                    took: started.elapsed(),
                    hashes: job.control.hashes(),
                }
            }
            Ok(Search::Aborted) => continue,
            Ok(Search::Exhausted) => {
                // Every nonce of the header tried without a solution.
                Event::MiningFailed(EngineError::EndedEarly(Search::Exhausted))
            }
            Err(e) => Event::MiningFailed(e),
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
fn download(jobs: Receiver<Download>, events: Sender<Event>, chain: Arc<RwLock<Chain>>) {
    while let Ok(job) = jobs.recv() {
        let (locator, params) = {
            let chain = read_chain(&chain);
            (chain.locator(), *chain.params())
        };
        let result = BlockClient::connect(job.peer).and_then(|mut client| {
            client.fetch(
                &job,
                &locator,
                |h| read_chain(&chain).header_and_work(h),
                &params,
                unix_now(),
                |blocks, _| {
                    let (ack, verdict) = bounded(1);
                    events
                        .send(Event::Downloaded {
                            peer: job.peer,
                            blocks,
                            ack,
                        })
                        .map_err(stopped)?;
                    Ok(verdict.recv().map_err(stopped)??)
                },
            )
        });
        let done = Event::DownloadDone {
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
    core: NodeCore<BlockStore>,
    /// Datagrams and requests dropped as malformed.
    dropped: net::Dropped,
    /// The search running now, and the tip it builds on.
    job: Option<(Hash256, Arc<SearchControl>)>,
    jobs: Sender<Job>,
    sync_jobs: Sender<Download>,
    announce: Sender<Status>,
    hashes_done: Arc<AtomicU64>,
    /// Each device's meter and its reading at the last report, when mining on several.
    meters: Option<(DeviceMeters, Vec<u64>)>,
    /// What the API shows, published every [`SECOND`].
    published: Arc<Mutex<NodeState>>,
    /// For the threads of new links and dials.
    events: Senders,
    /// The links up, by the core's id.
    links: HashMap<LinkId, crate::links::LinkIo>,
    /// A link silent this long is gone.
    quiet: Duration,
    peers_file: PathBuf,
}

impl Node {
    /// Handles events until shutdown. Mining starts once `listened` fires (or a first download
    /// ends), so a new node hears its peers before it builds on its own chain.
    fn event_loop(&mut self, inbox: Inbox, listened: Receiver<Instant>) -> Result<()> {
        let report = tick(REPORT_INTERVAL);
        let second = tick(SECOND);
        self.publish();
        let mut last_report = (Instant::now(), self.hashes());
        loop {
            // Urgent events first, whatever else waits; among the rest, select picks at random,
            // so a flood on one queue does not starve the other.
            let event = match inbox.urgent.try_recv() {
                Ok(e) => e,
                Err(_) => {
                    let retry = self
                        .core
                        .retry_at()
                        .map_or_else(crossbeam_channel::never, crossbeam_channel::at);
                    select! {
                        recv(inbox.urgent) -> e => match e {
                            Ok(e) => e,
                            Err(_) => return Ok(()),
                        },
                        recv(inbox.statuses) -> e => match e {
                            Ok(e) => e,
                            Err(_) => return Ok(()),
                        },
                        recv(inbox.payments) -> e => match e {
                            Ok(e) => e,
                            Err(_) => return Ok(()),
                        },
                        recv(listened) -> _ => {
                            self.core.listened(unix_now());
                            self.carry_out();
                            continue;
                        }
                        recv(retry) -> _ => {
                            self.core.retry_sync(Instant::now());
                            self.carry_out();
                            continue;
                        }
                        recv(report) -> _ => {
                            last_report = self.report(last_report);
                            continue;
                        }
                        recv(second) -> _ => {
                            self.publish();
                            self.core.maintain_links(Instant::now());
                            self.carry_out();
                            continue;
                        }
                    }
                }
            };
            let (now, unix) = (Instant::now(), unix_now());
            match event {
                Event::Payment(p, from) => self.core.on_payment(*p, from, unix),
                Event::Status(s, from, received) => self.core.on_status(s, from, received, now),
                Event::StatusRequest => self.core.on_status_request(),
                Event::LinkIn {
                    stream,
                    from,
                    hello,
                } => {
                    let addr = SocketAddr::new(from.ip(), hello.block_server_port);
                    let up = self
                        .core
                        .admit_link(from.ip(), &hello, now)
                        .and_then(|()| self.core.link_up(addr, false, hello, now));
                    match up {
                        Ok(id) => self.start_link(id, stream, now),
                        Err(e) => tracing::debug!(%from, "refused a link: {e}"),
                    }
                }
                Event::LinkOut {
                    stream,
                    addr,
                    hello,
                } => match self.core.link_up(addr, true, hello, now) {
                    Ok(id) => self.start_link(id, stream, now),
                    Err(e) => tracing::debug!(%addr, "link not kept: {e}"),
                },
                Event::DialFailed(addr) => self.core.dial_failed(addr, now),
                Event::Resolved(name, addr) => {
                    println!("Peer {name} resolves to {addr} now");
                    self.core.add_named_peer(addr, now);
                    self.core.maintain_links(now);
                }
                Event::LinkMessage(id, message) => {
                    self.core.on_link_message(id, message, now, unix)
                }
                Event::LinkDown(id, why) => {
                    self.links.remove(&id);
                    self.core.link_down(id, why, now);
                }
                Event::Mined {
                    block,
                    took,
                    hashes,
                } => {
                    if matches!(&self.job, Some((tip, _)) if *tip == block.header.prev_hash) {
                        self.job = None;
                    }
                    self.core.on_mined(*block, took, hashes, now, unix);
                }
                Event::MiningFailed(e) => {
                    tracing::error!("mining failed: {e}");
                    println!("Mining failed: {e}");
                    self.job = None;
                    self.core.mining_failed();
                }
                Event::Downloaded { peer, blocks, ack } => {
                    let verdict = self.core.on_downloaded(peer, blocks, now, unix);
                    let _ = ack.send(verdict);
                }
                Event::DownloadDone { peer, result } => {
                    self.core.on_download_done(peer, result, now, unix)
                }
                Event::Shutdown => {
                    self.core.stop();
                    self.carry_out();
                    self.stop_mining();
                    let status = self.core.status();
                    println!(
                        "Shutting down: height {}, tip {}, chain stored in {}; {} malformed messages dropped, {} payments refused",
                        status.height,
                        status.tip,
                        self.core.store().path().display(),
                        self.dropped.count(),
                        self.core.refused_payments.total,
                    );
                    return Ok(());
                }
            }
            if let Some(e) = self.core.take_fatal() {
                self.stop_mining();
                return Err(anyhow::anyhow!("{e}. Stopping"));
            }
            self.carry_out();
        }
    }

    /// Starts the threads of link `id`, or takes it back from the core when they cannot start.
    fn start_link(&mut self, id: LinkId, stream: TcpStream, now: Instant) {
        match crate::links::start(id, stream, self.quiet, &self.events) {
            Ok(io) => {
                self.links.insert(id, io);
            }
            Err(e) => {
                tracing::warn!("cannot start a link's threads: {e}");
                self.core.link_down(id, Down::Lost, now);
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
        {
            match effect {
                Effect::Note(note) => println!("{}", note_line(&note)),
                Effect::Announce(status) => {
                    let _ = self.announce.send(status);
                }
                Effect::Download(download) => {
                    if self.sync_jobs.send(download).is_err() {
                        // The downloaders are gone: the node is stopping.
                        self.core.download_abandoned(download.peer);
                    }
                }
                Effect::Mine(block) => {
                    self.stop_mining();
                    let tip = block.header.prev_hash;
                    let control = Arc::new(SearchControl::new());
                    let job = Job {
                        block,
                        control: control.clone(),
                    };
                    if self.jobs.send(job).is_ok() {
                        self.job = Some((tip, control));
                    } else {
                        self.core.mining_failed();
                    }
                }
                Effect::StopMining => self.stop_mining(),
                Effect::Dial(addr) => {
                    crate::links::dial(addr, self.core.status(), self.events.urgent.clone())
                }
                Effect::Send(id, message) => {
                    let full = self
                        .links
                        .get(&id)
                        .is_some_and(|io| io.tx.try_send(message).is_err());
                    if full {
                        // The peer does not read what it is sent: let it go rather than hold
                        // more for it.
                        if let Some(io) = self.links.remove(&id) {
                            io.close();
                        }
                        self.core.link_down(id, Down::Lost, Instant::now());
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
            }
        }
    }

    fn stop_mining(&mut self) {
        if let Some((_, control)) = self.job.take() {
            control.stop();
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
            Some((m, _)) => m.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
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
        state.reorgs = self.core.reorgs;
        state.rates.record(now, counts);
    }

    /// The periodic line: height, tip, hash rate since the last line, pool, peers.
    fn report(&mut self, (since, hashes_then): (Instant, u64)) -> (Instant, u64) {
        let now = Instant::now();
        let hashes = self.hashes();
        let rate = hashes.saturating_sub(hashes_then) as f64 / (now - since).as_secs_f64();
        self.core.tick(now);
        let status = self.core.status();
        let per_device = self.device_rates((now - since).as_secs_f64());
        let state = match &self.job {
            Some(_) => format!(
                "mining, {} average{per_device}",
                mvbc_miner::bench::format_rate(rate)
            ),
            None => "idle, waiting for payments".into(),
        };
        let peers = match self.core.sync().peers().len() {
            1 => "1 peer".to_string(),
            n => format!("{n} peers"),
        };
        let stale = self.core.stale_blocks(STALE_WINDOW);
        println!(
            "Status: height {}, tip {}, {state}, {} pending, {peers}, {} stale of the last {} blocks ({:.1}%), {} malformed messages dropped, {} payments refused",
            status.height,
            status.tip,
            self.core.pending(),
            stale.stale,
            stale.stale + stale.best,
            100.0 * stale.rate(),
            self.dropped.count(),
            self.core.refused_payments.total,
        );
        if let Some(hint) = stale.hint() {
            println!("Hint: {hint}");
        }
        let secs = REPORT_INTERVAL.as_secs();
        let held = self.core.refused_payments.new_window();
        if held > 0 {
            tracing::info!(
                "{held} more payments refused in the last {secs} s, not logged one by one"
            );
        }
        let held = self.core.failed_downloads.new_window();
        if held > 0 {
            println!("Downloads failed: {held} more in the last {secs} s, not shown one by one");
        }
        (now, hashes)
    }

    /// " (cpu avx512 x16 70.1 MH/s, gpu NVIDIA ... 9.8 GH/s)" since the last report, when
    /// mining on several devices; empty otherwise.
    fn device_rates(&mut self, seconds: f64) -> String {
        let Some((meters, last)) = &mut self.meters else {
            return String::new();
        };
        let rates: Vec<String> = meters
            .devices
            .iter()
            .zip(meters.counts.iter())
            .zip(last.iter_mut())
            .map(|((info, count), last)| {
                let now = count.load(Ordering::Relaxed);
                let rate = now.saturating_sub(*last) as f64 / seconds.max(1e-9);
                *last = now;
                format!(
                    "{} {} {}",
                    info.device,
                    info.adapter,
                    mvbc_miner::bench::format_rate(rate)
                )
            })
            .collect();
        format!(" ({})", rates.join(", "))
    }
}

/// What the user reads for a note of the core.
fn note_line(note: &Note) -> String {
    match note {
        Note::PaymentPooled {
            id,
            amount,
            from,
            to,
            pending,
        } => format!("Payment pooled: {id}, {amount} from {from} to {to} ({pending} pending)"),
        Note::PaymentEvicted(old) => format!(
            "Payment evicted: {old}, the oldest, to make room (the pool is full); \
             its wallet's re-broadcast brings it back"
        ),
        Note::PaymentDropped(id) => {
            format!("Payment dropped: {id} is no longer affordable or is already confirmed")
        }
        Note::Reorg {
            depth,
            left,
            at,
            back,
        } => format!(
            "Reorg: depth {depth}, left {left} at height {at}, {back} payments back in the pool"
        ),
        Note::BlockMined {
            height,
            hash,
            transactions,
            hashes,
            took,
        } => {
            let secs = took.as_secs_f64();
            format!(
                "Block mined: height {height}, hash {hash}, {transactions} transaction{}, {hashes} hashes in {secs:.2} s ({})",
                if *transactions == 1 { "" } else { "s" },
                mvbc_miner::bench::format_rate(*hashes as f64 / secs.max(1e-9))
            )
        }
        Note::MinedTooLate { height, hash } => {
            format!("Block mined at height {height} ({hash}) but the chain moved on")
        }
        Note::BlockAdopted {
            first,
            height,
            tip,
            peer,
            since_heard,
        } => {
            let blocks = if first == height {
                format!("height {height}")
            } else {
                format!("heights {first}..={height}")
            };
            let since = since_heard
                .map(|t| format!(", {} ms after it was announced", t.as_millis()))
                .unwrap_or_default();
            format!("Block adopted: {blocks}, tip {tip}, from {peer}{since}")
        }
        Note::DownloadFailed {
            peer,
            reason,
            backoff,
        } => format!("Download from {peer} failed: {reason}; passing it over for {backoff:.0?}"),
        Note::LinkUp {
            peer,
            outbound,
            links,
        } => format!(
            "Link up: {peer} ({}), {links} link{}",
            if *outbound { "dialled" } else { "inbound" },
            if *links == 1 { "" } else { "s" }
        ),
        Note::LinkDown { peer, why, links } => {
            let why = match why {
                Down::Lost => "closed".to_string(),
                Down::Quiet => "quiet too long".to_string(),
                Down::Replaced => {
                    "replaced by a newcomer (it brought nothing new for a minute)".to_string()
                }
                Down::Invalid(e) => {
                    format!("sent invalid data ({e}); its address is refused for a while")
                }
            };
            format!(
                "Link down: {peer}, {why}; {links} link{}",
                if *links == 1 { "" } else { "s" }
            )
        }
    }
}
