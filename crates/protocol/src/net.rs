//! UDP broadcasts and the TCP block service: sockets, frames, the block server and the client
//! that downloads from it. What the bytes mean is `wire`'s business; this module only moves
//! them, with a size cap and a timeout on everything it reads.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::block::Block;
use crate::chain::Chain;
use crate::hash::Hash256;
use crate::wire::{
    Datagram, MAX_BLOCKS_PER_REPLY, MAX_DATAGRAM_BYTES, MAX_LOCATOR_LEN, MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES, REPLY_BLOCK_BYTES, Reply, Request, WireError,
};

/// How long a listener blocks before looking at its stop flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a client waits for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one frame may take to arrive or leave, whole.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a block server keeps a connection with no request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections a block server serves at once; beyond that a new one replaces the one idle
/// longest, or is closed at once if all are busy.
pub const MAX_CONNECTIONS: usize = 32;

/// Receive buffer asked for on UDP listeners: about 4,000 payment datagrams.
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Messages dropped because they did not decode, over the life of the process.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Number of datagrams and frames dropped as malformed so far.
pub fn dropped_messages() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Counts and logs (at debug level) a message that did not decode.
pub fn note_dropped(from: SocketAddr, what: &str, error: &dyn std::fmt::Display) {
    DROPPED.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%from, "dropped {what}: {error}");
}

/// A UDP socket that receives every broadcast to `port`, beside any other process on this host
/// listening on the same port (SO_REUSEADDR and SO_REUSEPORT). Reads time out after
/// [`POLL_INTERVAL`] so the owner can stop.
pub fn udp_listener(port: u16) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Room for a burst of payments while the node is busy: the kernel caps this at
    // net.core.rmem_max, and a smaller buffer is no error.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    let address = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    socket.bind(&address.into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(POLL_INTERVAL))?;
    Ok(socket)
}

/// Waits up to [`POLL_INTERVAL`] for one datagram. `None` when none came; otherwise the sender
/// and the decoded datagram or why it did not decode (a datagram over the cap is refused
/// whole, never truncated into something else).
pub fn recv_datagram(socket: &UdpSocket) -> Option<(SocketAddr, Result<Datagram, WireError>)> {
    let mut buf = [0u8; MAX_DATAGRAM_BYTES + 1];
    match socket.recv_from(&mut buf) {
        Ok((len, from)) => Some((from, Datagram::decode(&buf[..len]))),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => {
            tracing::debug!("receive failed: {e}");
            None
        }
    }
}

/// Sends datagrams to one broadcast address and port.
pub struct Broadcaster {
    socket: UdpSocket,
    target: SocketAddrV4,
}

impl Broadcaster {
    /// A sender with SO_BROADCAST set, aimed at `address:port`.
    pub fn new(address: Ipv4Addr, port: u16) -> io::Result<Broadcaster> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        socket.set_broadcast(true)?;
        Ok(Broadcaster {
            socket,
            target: SocketAddrV4::new(address, port),
        })
    }

    /// Broadcasts one datagram.
    pub fn send(&self, datagram: &Datagram) -> io::Result<()> {
        self.socket.send_to(&datagram.encode(), self.target)?;
        Ok(())
    }

    /// Where datagrams go.
    pub fn target(&self) -> SocketAddrV4 {
        self.target
    }
}

/// Why a frame was not read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The frame declares more bytes than its kind may have; nothing was read past the length.
    #[error("frame declares {len} bytes, over the cap of {cap}")]
    TooLong {
        /// Declared length.
        len: usize,
        /// The cap.
        cap: usize,
    },
    /// The frame did not arrive whole in time.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// Any other I/O error.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Writes one frame: a 4-byte big-endian length, then `body`.
pub fn write_frame(stream: &mut TcpStream, body: &[u8]) -> io::Result<()> {
    stream.set_write_timeout(Some(FRAME_TIMEOUT))?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame over 4 GiB"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame)?;
    stream.flush()
}

/// Reads one frame of at most `cap` bytes. The length is checked against the cap before any
/// buffer is allocated. The frame must begin within `first_byte` and arrive whole within
/// [`FRAME_TIMEOUT`] of its first byte, so a peer that trickles bytes cannot hold a thread
/// for longer.
pub fn read_frame(
    stream: &mut TcpStream,
    cap: usize,
    first_byte: Duration,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    let mut limit = Instant::now() + first_byte;
    while got < len.len() {
        match read_some(stream, &mut len[got..], limit)? {
            0 if got == 0 => return Err(FrameError::Closed),
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            n if got == 0 => {
                got = n;
                // From its first byte, the whole frame has FRAME_TIMEOUT to arrive.
                limit = Instant::now() + FRAME_TIMEOUT;
            }
            n => got += n,
        }
    }
    let deadline = limit;
    let len = u32::from_be_bytes(len) as usize;
    if len > cap {
        return Err(FrameError::TooLong { len, cap });
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match read_some(stream, &mut body[got..], deadline)? {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            n => got += n,
        }
    }
    Ok(body)
}

/// One read that gives up at `deadline`.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, FrameError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FrameError::TimedOut(FRAME_TIMEOUT));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads the chain even if a writer panicked while holding the lock: the chain's own methods
/// leave it consistent, and serving blocks must not take the node down with it.
pub fn read_chain(chain: &RwLock<Chain>) -> std::sync::RwLockReadGuard<'_, Chain> {
    chain.read().unwrap_or_else(|e| e.into_inner())
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
    pub fn start(port: u16, chain: Arc<RwLock<Chain>>) -> io::Result<BlockServer> {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::Builder::new()
            .name("block-server".into())
            .spawn(move || accept_loop(listener, chain, flag))?;
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

/// The open connections of a block server. When it is full, a new connection takes the place
/// of the one idle longest (if idle at least [`MIN_IDLE_TO_EVICT`]), so a client that holds
/// many idle connections cannot lock honest ones out.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, (TcpStream, Instant)>,
}

/// How long a connection must have been idle before a new one may take its place.
pub const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);

impl Connections {
    /// Registers `stream`, making room if needed; `None` when every slot is busy.
    fn admit(&mut self, stream: &TcpStream, now: Instant) -> Option<u64> {
        if self.open.len() >= MAX_CONNECTIONS {
            let (&oldest, &(_, since)) = self.open.iter().min_by_key(|(_, (_, t))| *t)?;
            if now.saturating_duration_since(since) < MIN_IDLE_TO_EVICT {
                return None;
            }
            if let Some((idle, _)) = self.open.remove(&oldest) {
                // Its thread's next read fails and it ends.
                let _ = idle.shutdown(std::net::Shutdown::Both);
            }
        }
        let handle = stream.try_clone().ok()?;
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(id, (handle, now));
        Some(id)
    }

    fn touch(&mut self, id: u64) {
        if let Some((_, t)) = self.open.get_mut(&id) {
            *t = Instant::now();
        }
    }

    fn close(&mut self, id: u64) {
        self.open.remove(&id);
    }
}

fn lock(c: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, chain: Arc<RwLock<Chain>>, stop: Arc<AtomicBool>) {
    let connections = Arc::new(Mutex::new(Connections::default()));
    while !stop.load(Ordering::Relaxed) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
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
        let Some(id) = lock(&connections).admit(&stream, Instant::now()) else {
            tracing::debug!(%peer, "refused a connection: {MAX_CONNECTIONS} busy");
            continue;
        };
        let (chain, registry, stop) = (chain.clone(), connections.clone(), stop.clone());
        let spawned = thread::Builder::new()
            .name("block-conn".into())
            .spawn(move || {
                serve_connection(stream, peer, &chain, &stop, || lock(&registry).touch(id));
                lock(&registry).close(id);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}");
            lock(&connections).close(id);
        }
    }
}

fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    chain: &RwLock<Chain>,
    stop: &AtomicBool,
    touch: impl Fn(),
) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    while !stop.load(Ordering::Relaxed) {
        let body = match read_frame(&mut stream, MAX_REQUEST_BYTES, IDLE_TIMEOUT) {
            Ok(body) => body,
            Err(FrameError::Closed) => return,
            Err(e) => {
                note_dropped(peer, "request frame", &e);
                return;
            }
        };
        let request = match Request::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                note_dropped(peer, "request", &e);
                return;
            }
        };
        touch();
        let reply = answer(chain, &request);
        if let Err(e) = write_frame(&mut stream, &reply.encode()) {
            tracing::debug!(%peer, "reply not sent: {e}");
            return;
        }
        touch();
    }
}

/// What a block server says to one request.
pub fn answer(chain: &RwLock<Chain>, request: &Request) -> Reply {
    match request {
        Request::BlocksAfter {
            locator,
            max_blocks,
        } => {
            let max = (*max_blocks as usize).min(MAX_BLOCKS_PER_REPLY);
            let chain = read_chain(chain);
            let blocks = chain
                .blocks_after(locator, max, REPLY_BLOCK_BYTES)
                .iter()
                .map(|b| Block::clone(b))
                .collect();
            Reply::Blocks {
                tip_height: chain.height(),
                tip: chain.tip_hash(),
                blocks,
            }
        }
    }
}

/// Why a download from a block server failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No connection.
    #[error("cannot connect to {peer}: {source}")]
    Connect {
        /// The server.
        peer: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// A frame failed.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The reply did not decode.
    #[error("bad reply: {0}")]
    Wire(#[from] WireError),
    /// The reply decoded but is not what was asked for.
    #[error("bad reply: {0}")]
    Protocol(String),
    /// The caller refused a block.
    #[error("{0}")]
    Refused(String),
}

/// A connection to one peer's block server.
pub struct BlockClient {
    stream: TcpStream,
    peer: SocketAddr,
    batch: u32,
}

impl BlockClient {
    /// Connects within [`CONNECT_TIMEOUT`].
    pub fn connect(peer: SocketAddr) -> Result<BlockClient, FetchError> {
        let connect = |peer: SocketAddr| -> io::Result<TcpStream> {
            let stream = TcpStream::connect_timeout(&peer, CONNECT_TIMEOUT)?;
            stream.set_nodelay(true)?;
            Ok(stream)
        };
        let stream = connect(peer).map_err(|source| FetchError::Connect { peer, source })?;
        Ok(BlockClient {
            stream,
            peer,
            batch: MAX_BLOCKS_PER_REPLY as u32,
        })
    }

    /// Asks for at most `blocks` blocks per request in [`BlockClient::download`] (at least
    /// one; the server caps it at [`MAX_BLOCKS_PER_REPLY`] whatever is asked).
    pub fn set_batch(&mut self, blocks: u32) {
        self.batch = blocks.max(1);
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// One request, one reply.
    pub fn request(&mut self, request: &Request) -> Result<Reply, FetchError> {
        write_frame(&mut self.stream, &request.encode()).map_err(FrameError::from)?;
        let body = read_frame(&mut self.stream, MAX_REPLY_BYTES, FRAME_TIMEOUT)?;
        Ok(Reply::decode(&body)?)
    }

    /// Downloads the server's best chain beyond `locator`, batch after batch, handing each
    /// batch (consecutive blocks, lowest first) and the server's tip height to `deliver`.
    /// Stops when the server has nothing more, after `limit` blocks, or when `deliver` refuses
    /// a batch. Returns how many blocks were delivered.
    pub fn download(
        &mut self,
        locator: &[Hash256],
        limit: u64,
        mut deliver: impl FnMut(Vec<Block>, u64) -> Result<(), String>,
    ) -> Result<u64, FetchError> {
        let mut delivered = 0u64;
        let mut next: Vec<Hash256> = locator.iter().take(MAX_LOCATOR_LEN).copied().collect();
        while delivered < limit {
            let want = (limit - delivered).min(u64::from(self.batch)) as u32;
            let Reply::Blocks {
                tip_height, blocks, ..
            } = self.request(&Request::BlocksAfter {
                locator: next.clone(),
                max_blocks: want,
            })?;
            let Some(last) = blocks.last().map(|b| (b.hash(), b.header.height)) else {
                break;
            };
            if blocks.len() > want as usize {
                return Err(FetchError::Protocol(format!(
                    "{} blocks where at most {want} were asked for",
                    blocks.len()
                )));
            }
            if let Some(w) = blocks
                .windows(2)
                .find(|w| w[1].header.prev_hash != w[0].hash())
            {
                return Err(FetchError::Protocol(format!(
                    "block {} does not follow {}",
                    w[1].hash(),
                    w[0].hash()
                )));
            }
            delivered += blocks.len() as u64;
            deliver(blocks, tip_height).map_err(FetchError::Refused)?;
            if last.1 >= tip_height {
                break;
            }
            // Go on after the last block received, whatever our own chain did meanwhile.
            next = std::iter::once(last.0)
                .chain(locator.iter().take(MAX_LOCATOR_LEN - 1).copied())
                .collect();
        }
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_declaring_too_much_is_refused_before_reading_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&u32::MAX.to_be_bytes()).unwrap();
            thread::sleep(Duration::from_millis(200));
        });
        let (mut s, _) = listener.accept().unwrap();
        let err = read_frame(&mut s, 1024, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, FrameError::TooLong { len, cap: 1024 } if len == u32::MAX as usize));
        writer.join().unwrap();
    }

    #[test]
    fn a_frame_that_stops_midway_times_out_instead_of_hanging() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&[0, 0]).unwrap();
            thread::sleep(Duration::from_millis(400));
        });
        let (mut s, _) = listener.accept().unwrap();
        // A peer that goes quiet mid-frame: the read ends with an error, not a hang (the writer
        // closes after 400 ms, well before the frame timeout).
        assert!(read_frame(&mut s, 1024, Duration::from_secs(2)).is_err());
        writer.join().unwrap();
    }

    #[test]
    fn every_listener_on_a_port_hears_a_loopback_broadcast() {
        let a = udp_listener(0).unwrap();
        let port = a.local_addr().unwrap().port();
        let b = udp_listener(port).unwrap();
        let sender = Broadcaster::new(Ipv4Addr::new(127, 255, 255, 255), port).unwrap();
        sender.send(&Datagram::StatusRequest).unwrap();
        for socket in [&a, &b] {
            let (_, d) = recv_datagram(socket).expect("datagram arrives");
            assert_eq!(d.unwrap(), Datagram::StatusRequest);
        }
    }
}
