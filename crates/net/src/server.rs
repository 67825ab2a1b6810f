//! The block server: answers `BlocksAfter`, `HeadersAfter`, `Status` and a light wallet's
//! `History` from the node's best chain, and hands the node submitted payments and connections that ask to become links
//! ([`NodeHooks`]); a thread per connection, with an admission policy so that no client, busy or idle, one address or many, can lock the
//! others out or take the machine.
//!
//! - At most [`MAX_CONNECTIONS`] connections, and [`MAX_CONNECTIONS_PER_ADDRESS`] from one
//!   address.
//! - Each connection, each address and the server as a whole has an [`Allowance`] of requests,
//!   reply bytes and time spent building replies; a client over it is answered late, not
//!   refused, so its use stays within the allowance whatever it asks, and clients on many
//!   addresses together cannot take more than the server's.
//! - When the server is full, a newcomer takes the place of the connection idle longest, if idle
//!   for [`MIN_IDLE_TO_EVICT`]; otherwise of a connection of the heaviest address (the most
//!   connection-seconds held lately, fading with a half-life of 10 s), if that address has been
//!   heavier than the newcomer's. Honest clients connect, download and go; a client that keeps
//!   slots busy grows heavy and loses them first, and cannot take an honest client's place.
//! - One address's connections take turns: beyond its [`MAX_CONNECTIONS_PER_ADDRESS`], up to
//!   [`MAX_WAITING_PER_ADDRESS`] more wait, first come first served, in the kernel's buffers
//!   with no thread of their own (at most [`MAX_WAITING`] in all, each for at most
//!   [`MAX_WAIT`]). While some wait, a connection of that address that has held its slot for a
//!   [`TURN`] is closed, idle ones first, and the slot goes to the first in line. Busy clients
//!   on the same address as an honest wallet (one machine, or one NAT) thus get their share and
//!   no more: however often they reconnect, they join the back of the line, and the wallet is
//!   served within a few turns.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::{Cancel, Dropped, FrameError, POLL_INTERVAL, read_frame, write_frame};
use mvbc_protocol::block::Block;
use mvbc_protocol::chain::{Chain, read_chain};
use mvbc_protocol::hash::Hash256;
use mvbc_protocol::header::BlockHeader;
use mvbc_protocol::index::{Index, IndexError};
use mvbc_protocol::keys::Address;
use mvbc_protocol::rate::TokenBucket;
use mvbc_protocol::store::StoreError;
use mvbc_protocol::tx::Payment;
use mvbc_protocol::wire::{
    Identity, MAX_BLOCKS_PER_REPLY, MAX_HEADERS_PER_REPLY, MAX_REQUEST_BYTES, NoHistory,
    REPLY_BLOCK_BYTES, Reply, Request, Status,
};

/// What a block server hands to the node behind it.
pub enum Inbound {
    /// A payment a client submitted ([`Request::Submit`]).
    Payment {
        /// The payment.
        payment: Payment,
        /// Who sent it.
        from: SocketAddr,
    },
    /// A connection that asked to become a link, already answered with [`Reply::Linked`]; the
    /// server no longer counts it.
    Link {
        /// The connection.
        stream: TcpStream,
        /// Who is on the other end.
        from: SocketAddr,
        /// Its status, with the port its own block server listens on.
        hello: Status,
    },
}

/// The node behind a block server: what it answers `Status` with, and where payments and
/// links go. A server without one answers only block and header requests.
#[derive(Clone)]
pub struct NodeHooks {
    /// The node's id, announced in its status.
    pub node_id: u64,
    /// Takes payments and links; called from connection threads, so it must not block.
    pub inbound: Arc<dyn Fn(Inbound) + Send + Sync>,
}

/// How long a block server keeps a connection with no request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections a block server serves at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections one address may hold at once: a quarter of the server.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = MAX_CONNECTIONS / 4;
/// How long a connection must have been idle before a newcomer may take its place for that
/// alone.
pub const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);
/// How long a connection keeps its slot while others from its address wait.
pub const TURN: Duration = Duration::from_secs(1);
/// Connections one address may have waiting for a turn; beyond them it is refused.
pub const MAX_WAITING_PER_ADDRESS: usize = 4 * MAX_CONNECTIONS_PER_ADDRESS;
/// Connections waiting for a turn, all addresses together.
pub const MAX_WAITING: usize = 4 * MAX_CONNECTIONS;
/// How long a connection waits for a turn before it is closed: about when its client, waiting
/// for the answer to its first request, gives up ([`crate::FRAME_TIMEOUT`]).
pub const MAX_WAIT: Duration = crate::FRAME_TIMEOUT;
/// How fast the connection-seconds an address held fade when the heaviest one is looked for.
const USAGE_HALF_LIFE: Duration = Duration::from_secs(10);
/// Addresses remembered with their budgets and usage; beyond that, those with no open
/// connection are forgotten.
const MAX_REMEMBERED_ADDRESSES: usize = 1_024;
/// A client whose debt would take longer than this to wait out is disconnected instead.
const MAX_THROTTLE: Duration = Duration::from_secs(10);

/// What one client may take from a block server, each as a sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Allowance {
    /// Requests answered per second.
    pub requests_per_second: f64,
    /// Requests answered at once after a quiet spell.
    pub request_burst: f64,
    /// Reply bytes per second.
    pub bytes_per_second: f64,
    /// Reply bytes at once after a quiet spell.
    pub byte_burst: f64,
    /// Share of one core spent building its replies, sustained.
    pub busy_share: f64,
    /// Seconds of reply building at once after a quiet spell.
    pub busy_burst: f64,
}

/// What each connection may take: 200 requests of 500 blocks a second, so a chain of small
/// blocks downloads at up to 100,000 blocks a second (bytes and the core's time are the
/// bounds that matter: 16 MiB a second, and a client asking for the most it can costs at most
/// a fifth of a core). At 50 requests a second, the request count alone had held a download
/// to 25,000 blocks a second with both ends mostly idle.
pub const PER_CONNECTION: Allowance = Allowance {
    requests_per_second: 200.0,
    request_burst: 400.0,
    bytes_per_second: 16.0 * 1024.0 * 1024.0,
    byte_burst: 32.0 * 1024.0 * 1024.0,
    busy_share: 0.2,
    busy_burst: 0.5,
};

/// What all the connections of one address may take together.
pub const PER_ADDRESS: Allowance = Allowance {
    requests_per_second: 400.0,
    request_burst: 800.0,
    bytes_per_second: 32.0 * 1024.0 * 1024.0,
    byte_burst: 64.0 * 1024.0 * 1024.0,
    busy_share: 0.25,
    busy_burst: 1.0,
};

/// What all clients together may take: about an eighth of a core for encoding and sending at
/// full rate, so a server under attack from many addresses leaves the node its CPU.
pub const PER_SERVER: Allowance = Allowance {
    requests_per_second: 1_000.0,
    request_burst: 2_000.0,
    bytes_per_second: 64.0 * 1024.0 * 1024.0,
    byte_burst: 128.0 * 1024.0 * 1024.0,
    busy_share: 0.5,
    busy_burst: 1.0,
};

/// What a block server reads: a node's best chain, however it is kept (nakamoto's
/// `BlockReader`). Each call is one consistent look at the chain: the tip it reports is the
/// tip the blocks or headers were taken from.
pub trait BlockReader: Send + Sync + 'static {
    /// The best chain's status, announced as `identity`.
    fn status(&self, identity: Identity) -> Status;
    /// The tip's height and hash, and up to `max` blocks of the best chain after the first
    /// hash of `locator` on it (after genesis when none is), at most `max_bytes` encoded but
    /// never none when some follow; or why the blocks could not be read.
    fn blocks_after(
        &self,
        locator: &[Hash256],
        max: usize,
        max_bytes: usize,
    ) -> Result<(u64, Hash256, Vec<Arc<Block>>), StoreError>;
    /// The tip's height and hash, and up to `max` headers of the best chain after the first
    /// hash of `locator` on it.
    fn headers_after(&self, locator: &[Hash256], max: usize) -> (u64, Hash256, Vec<BlockHeader>);
    /// A light wallet's page of history ([`Request::History`]): a [`Reply::History`], or a
    /// [`Reply::NoHistory`] from a chain kept without an index (the default).
    fn history(
        &self,
        _addresses: &[Address],
        _from_height: u64,
        _until: &Hash256,
    ) -> Result<Reply, StoreError> {
        Ok(Reply::NoHistory(NoHistory::NoIndex))
    }
}

/// A chain in memory, shared with the node that writes it.
impl BlockReader for RwLock<Chain> {
    fn status(&self, identity: Identity) -> Status {
        identity.status(&read_chain(self))
    }

    fn blocks_after(
        &self,
        locator: &[Hash256],
        max: usize,
        max_bytes: usize,
    ) -> Result<(u64, Hash256, Vec<Arc<Block>>), StoreError> {
        let chain = read_chain(self);
        let blocks = chain.blocks_after(locator, max, max_bytes)?;
        Ok((chain.height(), chain.tip_hash(), blocks))
    }

    fn headers_after(&self, locator: &[Hash256], max: usize) -> (u64, Hash256, Vec<BlockHeader>) {
        let chain = read_chain(self);
        let headers = chain.headers_after(locator, max);
        (chain.height(), chain.tip_hash(), headers)
    }
}

/// A node's best chain with the index that follows it: it answers light wallets' history too.
pub struct IndexedChain {
    /// The chain, shared with the node that writes it.
    pub chain: Arc<RwLock<Chain>>,
    /// Its index, when the node keeps one.
    pub index: Option<Arc<Index>>,
}

impl BlockReader for IndexedChain {
    fn status(&self, identity: Identity) -> Status {
        self.chain.status(identity)
    }

    fn blocks_after(
        &self,
        locator: &[Hash256],
        max: usize,
        max_bytes: usize,
    ) -> Result<(u64, Hash256, Vec<Arc<Block>>), StoreError> {
        self.chain.blocks_after(locator, max, max_bytes)
    }

    fn headers_after(&self, locator: &[Hash256], max: usize) -> (u64, Hash256, Vec<BlockHeader>) {
        self.chain.headers_after(locator, max)
    }

    fn history(
        &self,
        addresses: &[Address],
        from_height: u64,
        until: &Hash256,
    ) -> Result<Reply, StoreError> {
        // An index that stopped following the chain answers nothing it might have wrong.
        let Some(index) = self.index.as_deref().filter(|i| i.is_current()) else {
            return Ok(Reply::NoHistory(NoHistory::NoIndex));
        };
        let chain = read_chain(&self.chain);
        match index.proven_history(&chain, addresses, from_height, until) {
            Ok(Some(page)) => Ok(Reply::History {
                through: page.through,
                entries: page.entries,
            }),
            Ok(None) => Ok(Reply::NoHistory(NoHistory::UnknownTip)),
            Err(IndexError::Store(e)) => Err(e),
            Err(e) => {
                tracing::warn!("cannot answer a history request: {e}");
                Ok(Reply::NoHistory(NoHistory::NoIndex))
            }
        }
    }
}

/// A running block server.
pub struct BlockServer {
    port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl BlockServer {
    /// Listens on `port` of every interface (0: any free port) and serves `chain`'s best chain
    /// from a thread per connection, at most [`MAX_CONNECTIONS`] at once.
    pub fn start(port: u16, chain: Arc<dyn BlockReader>) -> io::Result<BlockServer> {
        BlockServer::start_counting(port, chain, Dropped::default())
    }

    /// [`BlockServer::start`], counting malformed requests in `dropped`.
    pub fn start_counting(
        port: u16,
        chain: Arc<dyn BlockReader>,
        dropped: Dropped,
    ) -> io::Result<BlockServer> {
        BlockServer::start_node(port, chain, dropped, None)
    }

    /// [`BlockServer::start_counting`] for a node: answers `Status` and hands payments and
    /// links to `hooks`.
    pub fn start_node(
        port: u16,
        chain: Arc<dyn BlockReader>,
        dropped: Dropped,
        hooks: Option<NodeHooks>,
    ) -> io::Result<BlockServer> {
        let listener = bind_every_interface(port)?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::Builder::new()
            .name("block-server".into())
            .spawn(move || accept_loop(listener, chain, flag, dropped, hooks, port))?;
        Ok(BlockServer {
            port,
            stop,
            handle: Some(handle),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for BlockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Listens on `port` of every interface, IPv6 and IPv4 alike (an IPv6 socket that takes IPv4
/// too); where the host has no IPv6, on IPv4 alone. A port already taken is an error either
/// way.
fn bind_every_interface(port: u16) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let dual = (|| -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_only_v6(false)?;
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
        socket.listen(128)?;
        Ok(socket.into())
    })();
    match dual {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
        Err(_) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)),
    }
}

/// One client's [`Allowance`] as it stands.
#[derive(Clone, Copy, Debug)]
struct Budget {
    requests: TokenBucket,
    bytes: TokenBucket,
    busy: TokenBucket,
}

impl Budget {
    fn new(a: &Allowance, now: Instant) -> Budget {
        Budget {
            requests: TokenBucket::full(a.requests_per_second, a.request_burst),
            bytes: TokenBucket::full(a.bytes_per_second, a.byte_burst),
            busy: TokenBucket::full(a.busy_share, a.busy_burst),
        }
        .since(now)
    }

    /// Counts time from `now` on.
    fn since(mut self, now: Instant) -> Budget {
        self.refill(now);
        self
    }

    fn refill(&mut self, now: Instant) {
        for b in [&mut self.requests, &mut self.bytes, &mut self.busy] {
            b.refill(now);
        }
    }

    /// How long before another request may be answered: one request in hand, no debt of
    /// bytes or building time.
    fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.requests
            .wait(1.0)
            .max(self.bytes.wait(0.0))
            .max(self.busy.wait(0.0))
    }

    fn spend(&mut self, requests: f64, bytes: usize, busy: Duration) {
        self.requests.spend(requests);
        self.bytes.spend(bytes as f64);
        self.busy.spend(busy.as_secs_f64());
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        [self.requests, self.bytes, self.busy]
            .iter()
            .all(TokenBucket::is_full)
    }
}

/// The connection-seconds an address has held, each second fading with a half-life of
/// [`USAGE_HALF_LIFE`]: about the number of connections it held over the last 14 s.
#[derive(Clone, Copy, Debug)]
struct Held {
    value: f64,
    at: Instant,
}

impl Held {
    fn new(now: Instant) -> Held {
        Held {
            value: 0.0,
            at: now,
        }
    }

    /// The value at `now`, `connections` having been held since it was last settled.
    fn at(&self, connections: usize, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let rate = std::f64::consts::LN_2 / USAGE_HALF_LIFE.as_secs_f64();
        let fade = (-rate * elapsed).exp();
        self.value * fade + connections as f64 * (1.0 - fade) / rate
    }

    /// Brings the value up to `now`; to be called before the number of connections changes.
    fn settle(&mut self, connections: usize, now: Instant) {
        self.value = self.at(connections, now);
        self.at = self.at.max(now);
    }
}

/// One address's connections, budget and the connection-seconds it held lately.
struct Client {
    connections: usize,
    budget: Budget,
    held: Held,
}

impl Client {
    fn usage(&self, now: Instant) -> f64 {
        self.held.at(self.connections, now)
    }
}

struct Slot {
    ip: IpAddr,
    last_active: Instant,
    /// When it got the slot.
    since: Instant,
    /// Told to end its turn, for a connection that waits.
    ending: bool,
}

/// A connection waiting for a turn.
struct Waiter {
    ticket: u64,
    since: Instant,
}

/// What [`Admission::rotate`] decided.
#[derive(Debug, Default, PartialEq)]
struct Rotation {
    /// Connections whose turn is over, to be closed.
    end: Vec<u64>,
    /// Waiting connections that waited too long, to be dropped.
    expired: Vec<u64>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("its address holds {MAX_CONNECTIONS_PER_ADDRESS} busy connections")]
    AddressFull,
    #[error(
        "its address has {MAX_WAITING_PER_ADDRESS} connections waiting, or the server {MAX_WAITING}"
    )]
    LineFull,
    #[error("{MAX_CONNECTIONS} connections busy, none of a heavier client")]
    Busy,
}

/// The admission policy, apart from the sockets so it can be tested alone.
struct Admission {
    next_id: u64,
    open: HashMap<u64, Slot>,
    clients: HashMap<IpAddr, Client>,
    /// Connections waiting for a turn, by address, first in line first.
    waiting: HashMap<IpAddr, VecDeque<Waiter>>,
    /// What every client together may still take.
    server: Budget,
}

impl Admission {
    fn new(now: Instant) -> Admission {
        Admission {
            next_id: 0,
            open: HashMap::new(),
            clients: HashMap::new(),
            waiting: HashMap::new(),
            server: Budget::new(&PER_SERVER, now),
        }
    }

    /// Admits a connection from `ip`, making room if needed: returns its id, and the id of
    /// the connection it replaces (to be closed), if any.
    fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(u64, Option<u64>), Refusal> {
        self.forget_quiet_clients(now);
        let client = self.client(ip, now);
        let (newcomer_usage, full) = (
            client.usage(now),
            client.connections >= MAX_CONNECTIONS_PER_ADDRESS,
        );
        let evict = if full {
            // Room only among its own, and only in place of one that idles.
            Some(
                self.idle_longest(now, |slot| slot.ip == ip)
                    .ok_or(Refusal::AddressFull)?,
            )
        } else if self.open.len() >= MAX_CONNECTIONS {
            Some(
                self.idle_longest(now, |_| true)
                    .or_else(|| self.heaviest_above(newcomer_usage, now))
                    .ok_or(Refusal::Busy)?,
            )
        } else {
            None
        };
        if let Some(victim) = evict {
            self.close(victim);
        }
        Ok((self.seat(ip, now), evict))
    }

    /// Gives `ip` a slot, which the caller made sure is free.
    fn seat(&mut self, ip: IpAddr, now: Instant) -> u64 {
        let id = self.ticket();
        self.open.insert(
            id,
            Slot {
                ip,
                last_active: now,
                since: now,
                ending: false,
            },
        );
        let client = self.client(ip, now);
        client.held.settle(client.connections, now);
        client.connections += 1;
        id
    }

    /// The address `ip`'s connections, budget and usage, remembered from `now` if new.
    fn client(&mut self, ip: IpAddr, now: Instant) -> &mut Client {
        self.clients.entry(ip).or_insert_with(|| Client {
            connections: 0,
            budget: Budget::new(&PER_ADDRESS, now),
            held: Held::new(now),
        })
    }

    fn ticket(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether connections from `ip` wait for a turn: a newcomer joins them at the back.
    fn has_line(&self, ip: &IpAddr) -> bool {
        self.waiting.get(ip).is_some_and(|w| !w.is_empty())
    }

    /// Puts a connection from `ip` in its address's line: returns its ticket.
    fn wait_in_line(&mut self, ip: IpAddr, now: Instant) -> Result<u64, Refusal> {
        let total: usize = self.waiting.values().map(VecDeque::len).sum();
        let line = self.waiting.entry(ip).or_default();
        if line.len() >= MAX_WAITING_PER_ADDRESS || total >= MAX_WAITING {
            if line.is_empty() {
                self.waiting.remove(&ip);
            }
            return Err(Refusal::LineFull);
        }
        let ticket = self.ticket();
        self.waiting
            .get_mut(&ip)
            .expect("entered above")
            .push_back(Waiter { ticket, since: now });
        Ok(ticket)
    }

    /// Ends the turns of connections whose addresses have a line, one per connection waiting,
    /// among those that held their slot for a [`TURN`], idle longest first; and gives up on
    /// connections that waited [`MAX_WAIT`].
    fn rotate(&mut self, now: Instant) -> Rotation {
        let mut rotation = Rotation::default();
        for (ip, line) in &mut self.waiting {
            while line
                .front()
                .is_some_and(|w| now.saturating_duration_since(w.since) >= MAX_WAIT)
            {
                rotation.expired.extend(line.pop_front().map(|w| w.ticket));
            }
            let ending = self
                .open
                .values()
                .filter(|s| s.ip == *ip && s.ending)
                .count();
            let mut due: Vec<(u64, Instant)> = self
                .open
                .iter()
                .filter(|(_, s)| {
                    s.ip == *ip && !s.ending && now.saturating_duration_since(s.since) >= TURN
                })
                .map(|(&id, s)| (id, s.last_active))
                .collect();
            due.sort_by_key(|&(id, last_active)| (last_active, id));
            for (id, _) in due.into_iter().take(line.len().saturating_sub(ending)) {
                if let Some(slot) = self.open.get_mut(&id) {
                    slot.ending = true;
                }
                rotation.end.push(id);
            }
        }
        self.waiting.retain(|_, line| !line.is_empty());
        rotation
    }

    /// Closes connection `id` and, if its address has a line, seats the first in it: returns
    /// that connection's ticket and its new id.
    fn hand_over(&mut self, id: u64, now: Instant) -> Option<(u64, u64)> {
        let ip = self.close(id)?;
        let line = self.waiting.get_mut(&ip)?;
        let next = line.pop_front()?;
        if line.is_empty() {
            self.waiting.remove(&ip);
        }
        Some((next.ticket, self.seat(ip, now)))
    }

    /// The connection idle longest among those `pick` accepts, if idle at least
    /// [`MIN_IDLE_TO_EVICT`].
    fn idle_longest(&self, now: Instant, pick: impl Fn(&Slot) -> bool) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, s)| pick(s))
            .min_by_key(|(_, s)| s.last_active)
            .filter(|(_, s)| now.saturating_duration_since(s.last_active) >= MIN_IDLE_TO_EVICT)
            .map(|(&id, _)| id)
    }

    /// The least recently active connection of the address with the most usage, if that is
    /// more than `than`.
    fn heaviest_above(&self, than: f64, now: Instant) -> Option<u64> {
        let usage = |ip: &IpAddr| self.clients.get(ip).map_or(0.0, |c| c.usage(now));
        self.open
            .iter()
            .map(|(&id, s)| (id, usage(&s.ip), s.last_active))
            .filter(|&(_, u, _)| u > than)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.cmp(&a.2)))
            .map(|(id, _, _)| id)
    }

    /// Forgets addresses with no connection whose budget has refilled and whose usage has
    /// faded, and, past [`MAX_REMEMBERED_ADDRESSES`], every address with no connection.
    fn forget_quiet_clients(&mut self, now: Instant) {
        if self.clients.len() < MAX_REMEMBERED_ADDRESSES {
            return;
        }
        self.clients
            .retain(|_, c| c.connections > 0 || !c.budget.is_full(now) || c.usage(now) >= 0.1);
        if self.clients.len() >= MAX_REMEMBERED_ADDRESSES {
            self.clients.retain(|_, c| c.connections > 0);
        }
    }

    /// A request arrived on connection `id`.
    fn started(&mut self, id: u64, now: Instant) {
        if let Some(slot) = self.open.get_mut(&id) {
            slot.last_active = now;
        }
    }

    /// How long the address of `ip` must wait before its next request is answered, for its
    /// own allowance and the server's.
    fn wait(&mut self, ip: &IpAddr, now: Instant) -> Duration {
        let own = self
            .clients
            .get_mut(ip)
            .map_or(Duration::ZERO, |c| c.budget.wait(now));
        own.max(self.server.wait(now))
    }

    /// Charges a reply to its connection's address and the server, and marks the connection
    /// active.
    fn answered(&mut self, id: u64, bytes: usize, busy: Duration, now: Instant) {
        self.server.spend(1.0, bytes, busy);
        if let Some(slot) = self.open.get_mut(&id) {
            slot.last_active = now;
            if let Some(c) = self.clients.get_mut(&slot.ip) {
                c.budget.spend(1.0, bytes, busy);
            }
        }
    }

    /// Closes connection `id`: returns its address, if it was open.
    fn close(&mut self, id: u64) -> Option<IpAddr> {
        let slot = self.open.remove(&id)?;
        if let Some(c) = self.clients.get_mut(&slot.ip) {
            c.held.settle(c.connections, Instant::now().max(c.held.at));
            c.connections = c.connections.saturating_sub(1);
        }
        Some(slot.ip)
    }
}

/// The admission policy, the handles to shut connections down, and the connections waiting
/// for a turn.
struct Registry {
    admission: Admission,
    streams: HashMap<u64, TcpStream>,
    waiting: HashMap<u64, (TcpStream, SocketAddr)>,
}

impl Registry {
    fn new(now: Instant) -> Registry {
        Registry {
            admission: Admission::new(now),
            streams: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// Seats a connection (returns its id, and it to serve) or puts it in its address's line
    /// (returns `None`).
    fn admit(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Option<(u64, TcpStream)>, Refusal> {
        let ip = peer.ip();
        let handle = stream.try_clone().map_err(|_| Refusal::Busy)?;
        let seated = if self.admission.has_line(&ip) {
            Err(Refusal::AddressFull)
        } else {
            self.admission.admit(ip, now)
        };
        match seated {
            Ok((id, evicted)) => {
                if let Some(victim) = evicted.and_then(|v| self.streams.remove(&v)) {
                    // Its thread's next read or write fails and it ends.
                    let _ = victim.shutdown(Shutdown::Both);
                }
                self.streams.insert(id, handle);
                Ok(Some((id, stream)))
            }
            Err(Refusal::AddressFull) => {
                let ticket = self.admission.wait_in_line(ip, now)?;
                self.waiting.insert(ticket, (stream, peer));
                Ok(None)
            }
            Err(refusal) => Err(refusal),
        }
    }

    /// Ends the turns that are over and drops connections that waited too long.
    fn rotate(&mut self, now: Instant) {
        let rotation = self.admission.rotate(now);
        for id in rotation.end {
            if let Some(stream) = self.streams.get(&id) {
                // Its thread's next read finds the stream closed; a reply being written still
                // goes out.
                let _ = stream.shutdown(Shutdown::Read);
            }
        }
        for ticket in rotation.expired {
            self.waiting.remove(&ticket);
        }
    }

    fn close(&mut self, id: u64) {
        self.admission.close(id);
        self.streams.remove(&id);
    }

    /// Closes connection `id`; returns the connection that takes its slot, if one waits.
    fn hand_over(&mut self, id: u64, now: Instant) -> Option<(u64, TcpStream, SocketAddr)> {
        self.streams.remove(&id);
        let mut closing = id;
        loop {
            let (ticket, next) = self.admission.hand_over(closing, now)?;
            if let Some((stream, peer)) = self.waiting.remove(&ticket)
                && let Ok(handle) = stream.try_clone()
            {
                self.streams.insert(next, handle);
                return Some((next, stream, peer));
            }
            closing = next;
        }
    }
}

fn lock(r: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(
    listener: TcpListener,
    chain: Arc<dyn BlockReader>,
    stop: Arc<AtomicBool>,
    dropped: Dropped,
    hooks: Option<NodeHooks>,
    port: u16,
) {
    let registry = Arc::new(Mutex::new(Registry::new(Instant::now())));
    while !stop.load(Ordering::Relaxed) {
        lock(&registry).rotate(Instant::now());
        let (stream, peer) = match listener.accept() {
            // An IPv4 client of the dual-stack socket arrives as ::ffff:a.b.c.d: one address,
            // one form, for admission and for the node.
            Ok((stream, peer)) => (
                stream,
                SocketAddr::new(peer.ip().to_canonical(), peer.port()),
            ),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                tracing::debug!("accept failed: {e}");
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let (id, stream) = match lock(&registry).admit(stream, peer, Instant::now()) {
            Ok(Some(seated)) => seated,
            Ok(None) => continue,
            Err(refusal) => {
                tracing::debug!(%peer, "refused a connection: {refusal}");
                continue;
            }
        };
        let (chain, shared, stop) = (chain.clone(), registry.clone(), stop.clone());
        let (dropped, hooks) = (dropped.clone(), hooks.clone());
        let spawned = thread::Builder::new()
            .name("block-conn".into())
            .spawn(move || {
                // Serves its connection, then those that wait for the slot it leaves.
                let mut next = Some((id, stream, peer));
                while let Some((id, stream, peer)) = next.take() {
                    let connection = Connection {
                        id,
                        peer,
                        registry: &shared,
                        cancel: Cancel::never().on(stop.clone()),
                        dropped: dropped.clone(),
                        hooks: hooks.as_ref(),
                        port,
                    };
                    let link = connection.serve(stream, &*chain);
                    let mut registry = lock(&shared);
                    if stop.load(Ordering::Relaxed) {
                        registry.close(id);
                    } else {
                        next = registry.hand_over(id, Instant::now());
                    }
                    drop(registry);
                    if let (Some((stream, hello)), Some(hooks)) = (link, &hooks) {
                        (hooks.inbound)(Inbound::Link {
                            stream,
                            from: peer,
                            hello,
                        });
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}");
            // Its address's line moves on when the next of its connections ends.
            lock(&registry).close(id);
        }
    }
}

/// One admitted connection, served on its own thread.
struct Connection<'a> {
    id: u64,
    peer: SocketAddr,
    registry: &'a Mutex<Registry>,
    cancel: Cancel,
    dropped: Dropped,
    hooks: Option<&'a NodeHooks>,
    port: u16,
}

impl Connection<'_> {
    /// Serves requests until the client goes; returns the connection when it became a link.
    fn serve(&self, mut stream: TcpStream, chain: &dyn BlockReader) -> Option<(TcpStream, Status)> {
        if stream.set_nonblocking(false).is_err() {
            return None;
        }
        let _ = stream.set_nodelay(true);
        let mut budget = Budget::new(&PER_CONNECTION, Instant::now());
        loop {
            let body = match read_frame(&mut stream, MAX_REQUEST_BYTES, IDLE_TIMEOUT, &self.cancel)
            {
                Ok(body) => body,
                Err(FrameError::Closed | FrameError::Cancelled(_)) => return None,
                Err(e) => {
                    self.dropped.note(self.peer, "request frame", &e);
                    return None;
                }
            };
            let request = match Request::decode(&body) {
                Ok(r) => r,
                Err(e) => {
                    self.dropped.note(self.peer, "request", &e);
                    return None;
                }
            };
            lock(self.registry)
                .admission
                .started(self.id, Instant::now());
            if !self.wait_for_allowance(&mut budget) {
                return None;
            }
            let started = Instant::now();
            let mut link = None;
            let reply = match request {
                Request::Status => Reply::Status(self.status(chain)).encode(),
                Request::Submit(_) | Request::Link(_) if self.hooks.is_none() => {
                    tracing::debug!(peer = %self.peer, "a payment or link offered to a server without a node");
                    return None;
                }
                Request::Submit(payment) => {
                    if let Some(hooks) = self.hooks {
                        (hooks.inbound)(Inbound::Payment {
                            payment,
                            from: self.peer,
                        });
                    }
                    Reply::Submitted.encode()
                }
                Request::Link(hello) => {
                    link = Some(hello);
                    Reply::Linked(self.status(chain)).encode()
                }
                request => match answer_bytes(chain, &request) {
                    Ok(reply) => reply,
                    Err(e) => {
                        tracing::warn!(peer = %self.peer, "cannot serve blocks: {e}");
                        return None;
                    }
                },
            };
            let busy = started.elapsed();
            budget.spend(1.0, reply.len(), busy);
            lock(self.registry)
                .admission
                .answered(self.id, reply.len(), busy, Instant::now());
            if let Err(e) = write_frame(&mut stream, &reply) {
                tracing::debug!(peer = %self.peer, "reply not sent: {e}");
                return None;
            }
            if let Some(hello) = link {
                return Some((stream, hello));
            }
        }
    }

    /// This node's status, as it announces it.
    fn status(&self, chain: &dyn BlockReader) -> Status {
        chain.status(Identity {
            node_id: self.hooks.map_or(0, |h| h.node_id),
            block_server_port: self.port,
        })
    }

    /// Waits until both this connection and its address may have another reply. `false` when
    /// the server stops, or when the wait would be too long to be worth holding the slot.
    fn wait_for_allowance(&self, budget: &mut Budget) -> bool {
        loop {
            let now = Instant::now();
            let address = lock(self.registry).admission.wait(&self.peer.ip(), now);
            let wait = budget.wait(now).max(address);
            if wait.is_zero() {
                return true;
            }
            if wait > MAX_THROTTLE {
                tracing::debug!(peer = %self.peer, "closed a connection over its allowance");
                return false;
            }
            if self.cancel.check().is_err() {
                return false;
            }
            thread::sleep(wait.min(POLL_INTERVAL));
        }
    }
}

/// What a request asks of the best chain, taken under the chain's lock: only the block
/// pointers, or any other reply; encoding happens after.
enum Taken {
    Blocks(u64, Hash256, Vec<Arc<Block>>),
    Other(Reply),
}

fn take(chain: &dyn BlockReader, request: &Request) -> Result<Taken, StoreError> {
    Ok(match request {
        // A node's requests: a server without a node knows no id, no port and no pool.
        Request::Status | Request::Submit(_) | Request::Link(_) => {
            Taken::Other(Reply::Status(chain.status(Identity::default())))
        }
        Request::BlocksAfter {
            locator,
            max_blocks,
        } => {
            let max = (*max_blocks as usize).min(MAX_BLOCKS_PER_REPLY);
            let (tip_height, tip, blocks) = chain.blocks_after(locator, max, REPLY_BLOCK_BYTES)?;
            Taken::Blocks(tip_height, tip, blocks)
        }
        Request::HeadersAfter {
            locator,
            max_headers,
        } => {
            let max = (*max_headers as usize).min(MAX_HEADERS_PER_REPLY);
            let (tip_height, tip, headers) = chain.headers_after(locator, max);
            Taken::Other(Reply::Headers {
                tip_height,
                tip,
                headers,
            })
        }
        Request::History {
            addresses,
            from_height,
            until,
        } => Taken::Other(chain.history(addresses, *from_height, until)?),
    })
}

/// What a block server without a node says to one request (a node's own requests get only
/// the chain's status), or why the blocks asked for could not be read.
pub fn answer(chain: &dyn BlockReader, request: &Request) -> Result<Reply, StoreError> {
    Ok(match take(chain, request)? {
        Taken::Blocks(tip_height, tip, blocks) => Reply::Blocks {
            tip_height,
            tip,
            blocks: blocks.iter().map(|b| Block::clone(b)).collect(),
        },
        Taken::Other(reply) => reply,
    })
}

/// [`answer`], encoded, without copying the blocks first.
fn answer_bytes(chain: &dyn BlockReader, request: &Request) -> Result<Vec<u8>, StoreError> {
    Ok(match take(chain, request)? {
        Taken::Blocks(tip_height, tip, blocks) => Reply::encode_blocks(tip_height, tip, &blocks),
        Taken::Other(reply) => reply.encode(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const HONEST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

    fn ip(i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1))
    }

    /// Every slot taken, by connections from `addresses(i)` opened at the returned instant.
    fn full_server(addresses: impl Fn(usize) -> IpAddr) -> (Admission, Instant) {
        let now = Instant::now();
        let mut a = Admission::new(now);
        for i in 0..MAX_CONNECTIONS {
            let (_, evicted) = a.admit(addresses(i), now).unwrap();
            assert_eq!(evicted, None);
        }
        (a, now)
    }

    /// Marks every connection active at `now`.
    fn all_busy(a: &mut Admission, now: Instant) {
        let ids: Vec<u64> = a.open.keys().copied().collect();
        for id in ids {
            a.started(id, now);
        }
    }

    #[test]
    fn one_address_holds_at_most_its_share() {
        let now = Instant::now();
        let mut a = Admission::new(now);
        for _ in 0..MAX_CONNECTIONS_PER_ADDRESS {
            a.admit(A, now).unwrap();
        }
        assert_eq!(a.admit(A, now), Err(Refusal::AddressFull));
        assert!(a.admit(HONEST, now).is_ok(), "others still get in");
        // An address at its cap replaces its own idle connection.
        let later = now + MIN_IDLE_TO_EVICT;
        assert!(matches!(a.admit(A, later), Ok((_, Some(_)))));
    }

    #[test]
    fn a_client_beside_busy_ones_on_its_own_address_is_served_within_a_few_turns() {
        // 8 busy connections from A hold its slots and 24 more wait; an honest client on the
        // same address joins the line; each connection whose turn ends comes straight back.
        let start = Instant::now();
        let mut a = Admission::new(start);
        for _ in 0..MAX_CONNECTIONS_PER_ADDRESS {
            a.admit(A, start).unwrap();
        }
        assert_eq!(a.admit(A, start), Err(Refusal::AddressFull));
        for _ in 0..24 {
            a.wait_in_line(A, start).unwrap();
        }
        let honest = a.wait_in_line(A, start).unwrap();
        let mut served_after = None;
        for step in 1..100 {
            let now = start + Duration::from_millis(100 * step);
            all_busy(&mut a, now);
            for id in a.rotate(now).end {
                let (ticket, _) = a.hand_over(id, now).expect("someone waits");
                if ticket == honest {
                    served_after = Some(now - start);
                }
                // The hog whose turn ended reconnects, at the back of the line.
                a.wait_in_line(A, now).unwrap();
            }
            let seated = a.open.values().filter(|s| s.ip == A).count();
            assert_eq!(seated, MAX_CONNECTIONS_PER_ADDRESS, "step {step}");
            if served_after.is_some() {
                break;
            }
        }
        // 25 in line before it, 8 turns a second.
        let served_after = served_after.expect("the honest client was never seated");
        assert!(served_after <= 4 * TURN, "{served_after:?}");
    }

    #[test]
    fn the_line_is_bounded_and_a_connection_waits_in_it_at_most_max_wait() {
        let now = Instant::now();
        let mut a = Admission::new(now);
        let first = a.wait_in_line(A, now).unwrap();
        for _ in 1..MAX_WAITING_PER_ADDRESS {
            a.wait_in_line(A, now).unwrap();
        }
        assert_eq!(a.wait_in_line(A, now), Err(Refusal::LineFull));
        assert!(
            a.wait_in_line(HONEST, now).is_ok(),
            "other addresses have their own line"
        );
        assert_eq!(a.rotate(now + MAX_WAIT / 2), Rotation::default());
        let rotation = a.rotate(now + MAX_WAIT);
        assert_eq!(rotation.expired.len(), MAX_WAITING_PER_ADDRESS + 1);
        assert!(rotation.expired.contains(&first));
        assert!(!a.has_line(&A) && !a.has_line(&HONEST));
    }

    #[test]
    fn a_turn_ends_only_for_someone_waiting_and_idle_connections_go_first() {
        let now = Instant::now();
        let mut a = Admission::new(now);
        let ids: Vec<u64> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|_| a.admit(A, now).unwrap().0)
            .collect();
        let later = now + 2 * TURN;
        assert!(a.rotate(later).end.is_empty(), "nobody waits: turns go on");
        for &id in &ids[1..] {
            a.started(id, later);
        }
        a.wait_in_line(A, later).unwrap();
        assert_eq!(a.rotate(later).end, vec![ids[0]], "the idle one ends");
        assert!(
            a.rotate(later).end.is_empty(),
            "one end per waiting connection"
        );
        // A connection seated a moment ago keeps its turn.
        let (_, seated) = a.hand_over(ids[0], later).unwrap();
        a.wait_in_line(A, later).unwrap();
        let end = a.rotate(later).end;
        assert_eq!(end.len(), 1);
        assert_ne!(end[0], seated);
    }

    #[test]
    fn a_light_newcomer_takes_the_place_of_the_heaviest_busy_client() {
        // 32 busy connections from 31 addresses: ip(7) holds two, so it is the heaviest.
        let (mut a, start) = full_server(|i| ip(if i == 31 { 7 } else { i }));
        let now = start + Duration::from_secs(5);
        all_busy(&mut a, now);
        let (_, evicted) = a.admit(HONEST, now).unwrap();
        assert!(evicted.is_some());
        assert_eq!(a.open.values().filter(|s| s.ip == ip(7)).count(), 1);
        // Evicted clients, however often they come back, push out only clients heavier than
        // themselves, never the honest newcomer: it held its slot for the shortest time.
        for round in 0..100 {
            let t = now + Duration::from_millis(50 * round);
            all_busy(&mut a, t);
            let _ = a.admit(ip(round as usize % 31), t);
            assert!(a.open.values().any(|s| s.ip == HONEST), "round {round}");
        }
    }

    #[test]
    fn one_address_busy_on_every_slot_it_may_take_leaves_room_for_others() {
        let (mut a, start) = full_server(|i| {
            if i < MAX_CONNECTIONS_PER_ADDRESS {
                A
            } else {
                ip(i)
            }
        });
        let now = start + Duration::from_secs(1);
        all_busy(&mut a, now);
        let (_, evicted) = a.admit(HONEST, now).unwrap();
        assert!(evicted.is_some());
        assert_eq!(
            a.open.values().filter(|s| s.ip == A).count(),
            MAX_CONNECTIONS_PER_ADDRESS - 1,
            "the address holding the most connections lost one"
        );
    }

    #[test]
    fn a_full_server_of_equals_refuses_a_newcomer_as_heavy_as_they_are() {
        let (mut a, start) = full_server(ip);
        let now = start + Duration::from_secs(1);
        all_busy(&mut a, now);
        // ip(0) already holds a slot as long as everyone else: nobody is heavier.
        assert_eq!(a.admit(ip(0), now), Err(Refusal::Busy));
    }

    #[test]
    fn an_idle_connection_makes_room_before_a_busy_one() {
        let (mut a, now) = full_server(ip);
        let later = now + MIN_IDLE_TO_EVICT;
        let busy: Vec<u64> = a.open.keys().copied().filter(|id| id % 2 == 0).collect();
        for id in &busy {
            a.started(*id, later);
        }
        let (_, evicted) = a.admit(HONEST, later).unwrap();
        assert!(evicted.is_some_and(|v| v % 2 == 1), "an idle one went");
    }

    #[test]
    fn a_budget_spent_waits_for_its_refill() {
        let now = Instant::now();
        let mut b = Budget::new(&PER_CONNECTION, now);
        assert_eq!(b.wait(now), Duration::ZERO);
        // A reply twice the byte burst leaves a debt of one burst: two seconds at 16 MiB/s.
        b.spend(
            1.0,
            (2.0 * PER_CONNECTION.byte_burst) as usize,
            Duration::ZERO,
        );
        let wait = b.wait(now);
        assert!((wait.as_secs_f64() - 2.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(b.wait(now + wait), Duration::ZERO);
        // Requests: a burst, then the rate.
        let mut b = Budget::new(&PER_CONNECTION, now);
        for _ in 0..PER_CONNECTION.request_burst as usize {
            assert_eq!(b.wait(now), Duration::ZERO);
            b.spend(1.0, 0, Duration::ZERO);
        }
        assert!(b.wait(now) > Duration::ZERO);
    }

    #[test]
    fn held_connection_seconds_grow_while_held_and_fade_after() {
        let now = Instant::now();
        let mut held = Held::new(now);
        // Two connections for a second: about two connection-seconds.
        let one = now + Duration::from_secs(1);
        assert!((held.at(2, one) - 2.0).abs() < 0.1, "{}", held.at(2, one));
        held.settle(2, one);
        // Then none: half of it a half-life later.
        let later = one + USAGE_HALF_LIFE;
        assert!((held.at(0, later) - held.value / 2.0).abs() < 1e-9);
        // Held for ever, it levels off at connections x the mean life of a second.
        let mean_life = USAGE_HALF_LIFE.as_secs_f64() / std::f64::consts::LN_2;
        let forever = now + 100 * USAGE_HALF_LIFE;
        assert!((Held::new(now).at(1, forever) - mean_life).abs() < 1e-6);
    }

    #[test]
    fn addresses_with_no_connection_are_forgotten_past_the_cap() {
        let now = Instant::now();
        let mut a = Admission::new(now);
        for i in 0..MAX_REMEMBERED_ADDRESSES + 10 {
            let (id, _) = a.admit(ip(i), now).unwrap();
            a.close(id);
        }
        assert!(a.clients.len() <= MAX_REMEMBERED_ADDRESSES);
    }
}
