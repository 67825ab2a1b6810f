//! mvbc's sockets, all of them: UDP broadcasts and listeners and the frames of TCP here, the
//! block server in [`server`], the client that downloads from it in [`client`], the threads
//! that carry a link's messages in [`link`], the pool port and a worker's connection to it in
//! [`stratum`]. What the bytes
//! mean is `mvbc_protocol::wire`'s business, and what to do with them `mvbc-node`'s; this
//! crate only moves them, with a size cap and a timeout on everything it reads, and a way to
//! stop waiting ([`Cancel`]) on everything a client waits for.

#![warn(missing_docs)]

pub mod client;
pub mod link;
pub mod server;
pub mod stratum;

pub use client::{BlockClient, FetchError};
pub use server::{
    Allowance, BlockReader, BlockServer, IDLE_TIMEOUT, Inbound, IndexedChain, MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS, MIN_IDLE_TO_EVICT, NodeHooks, PER_ADDRESS, PER_CONNECTION,
    PER_SERVER, answer,
};

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use mvbc_protocol::wire::{Datagram, MAX_DATAGRAM_BYTES, WireError};

/// How long a listener blocks before looking at its stop flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a client waits for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one frame may take to arrive or leave, whole.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Receive buffer asked for on UDP listeners: about 4,000 payment datagrams.
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Datagrams and frames dropped because they did not decode: one counter per node (or wallet),
/// shared by its listeners and its block server, so two nodes in one process count apart.
#[derive(Clone, Debug, Default)]
pub struct Dropped(Arc<AtomicU64>);

impl Dropped {
    /// Counts and logs (at debug level) a message that did not decode.
    pub fn note(&self, from: SocketAddr, what: &str, error: &dyn std::fmt::Display) {
        self.0.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%from, "dropped {what}: {error}");
    }

    /// Messages dropped so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
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

/// When a waiting client gives up: at a deadline, or once a stop flag is raised (Ctrl-C). Every
/// wait of a client, for a connection or for the bytes of a frame, looks at both at least
/// every [`POLL_INTERVAL`], so `sync --once --timeout S` ends on time and Ctrl-C within a
/// second, whatever a peer does.
#[derive(Clone, Debug, Default)]
pub struct Cancel {
    deadline: Option<Instant>,
    stop: Option<Arc<AtomicBool>>,
    idle: Option<Progress>,
}

/// A deadline that progress pushes back: it passes once `window` goes by with no progress
/// made, so a wait for an answer is bounded but a download that keeps bringing blocks is not.
#[derive(Clone, Debug)]
pub struct Progress {
    base: Instant,
    window: Duration,
    /// Milliseconds after `base` of the last progress.
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Progress {
    /// Progress made now; it runs out `window` from now unless more is made.
    pub fn new(window: Duration) -> Progress {
        Progress {
            base: Instant::now(),
            window,
            last_ms: Arc::default(),
        }
    }

    /// Progress was made: the deadline moves to `window` from now.
    pub fn made(&self) {
        let ms = self.base.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When it runs out unless more progress is made.
    pub fn deadline(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + self.window
    }

    /// Whether `window` went by with no progress.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline()
    }
}

/// Why a client stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Cancelled {
    /// Its deadline passed.
    #[error("the deadline passed")]
    Deadline,
    /// Its stop flag was raised.
    #[error("stopped")]
    Stopped,
}

impl Cancel {
    /// Never gives up (but for the timeouts every frame has anyway).
    pub fn never() -> Cancel {
        Cancel::default()
    }

    /// Also gives up at `deadline`.
    pub fn until(mut self, deadline: Instant) -> Cancel {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// Also gives up once `progress` goes its window without progress.
    pub fn idle(mut self, progress: Progress) -> Cancel {
        self.idle = Some(progress);
        self
    }

    /// The earliest deadline: the fixed one or the one progress pushes back.
    fn next_deadline(&self) -> Option<Instant> {
        match (self.deadline, self.idle.as_ref().map(Progress::deadline)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Also gives up once `stop` is true.
    pub fn on(mut self, stop: Arc<AtomicBool>) -> Cancel {
        self.stop = Some(stop);
        self
    }

    /// `Err` once it is time to give up.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return Err(Cancelled::Stopped);
        }
        if self.next_deadline().is_some_and(|d| Instant::now() >= d) {
            return Err(Cancelled::Deadline);
        }
        Ok(())
    }

    /// How long one blocking wait that wants `want` may last before this is looked at again.
    fn slice(&self, want: Duration) -> Duration {
        let mut slice = want;
        if self.stop.is_some() {
            slice = slice.min(POLL_INTERVAL);
        }
        if let Some(d) = self.next_deadline() {
            slice = slice.min(d.saturating_duration_since(Instant::now()));
        }
        slice
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
    /// The reader gave up waiting.
    #[error("gave up waiting: {0}")]
    Cancelled(#[from] Cancelled),
    /// Any other I/O error.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Writes one frame: a 4-byte big-endian length, then `body`.
pub fn write_frame(stream: &mut TcpStream, body: &[u8]) -> io::Result<()> {
    stream.set_write_timeout(Some(FRAME_TIMEOUT))?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame over 4 GiB"))?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Reads one frame of at most `cap` bytes. The length is checked against the cap before any
/// buffer is allocated. The frame must begin within `first_byte` and arrive whole within
/// [`FRAME_TIMEOUT`] of its first byte, so a peer that trickles bytes cannot hold a thread
/// for longer; `cancel` may end the wait sooner.
pub fn read_frame(
    stream: &mut TcpStream,
    cap: usize,
    first_byte: Duration,
    cancel: &Cancel,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    let mut limit = Instant::now() + first_byte;
    while got < len.len() {
        match read_some(stream, &mut len[got..], limit, cancel)? {
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
        match read_some(stream, &mut body[got..], deadline, cancel)? {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            n => got += n,
        }
    }
    Ok(body)
}

/// One read that gives up at `deadline`, or when `cancel` says so.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    cancel: &Cancel,
) -> Result<usize, FrameError> {
    loop {
        cancel.check()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FrameError::TimedOut(FRAME_TIMEOUT));
        }
        let wait = cancel.slice(left);
        if wait.is_zero() {
            continue;
        }
        stream.set_read_timeout(Some(wait))?;
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

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
        let err = read_frame(&mut s, 1024, Duration::from_secs(2), &Cancel::never()).unwrap_err();
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
        assert!(read_frame(&mut s, 1024, Duration::from_secs(2), &Cancel::never()).is_err());
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
