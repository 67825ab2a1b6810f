//! The pool port's sockets (ADR 0016): the server a node's workers connect to, and the client
//! a worker connects with. Lines in, lines out; what they mean is `mvbc_protocol::stratum`'s
//! business and what to do with them `mvbc_node::farm`'s.
//!
//! Bounds of the server, each against a worker that floods or stalls:
//! - at most [`MAX_POOL_CONNECTIONS`] connections; one more is closed at once;
//! - a line over [`MAX_LINE_BYTES`] ends its connection; a connection silent for
//!   [`POOL_IDLE`] ends;
//! - each connection's lines are read at most [`LINES_PER_SECOND`] a second (a burst of
//!   [`LINE_BURST`]): beyond that the reader waits, and TCP slows the sender, so a flood costs
//!   the node nothing but a full socket buffer;
//! - what the node sends is written without waiting (`MSG_DONTWAIT`): a worker that does not
//!   read fills its socket's buffer, and the first line that does not fit whole closes it, so
//!   no worker can make the node wait, and no thread or queue is kept per connection to write.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mvbc_protocol::rate::TokenBucket;
use mvbc_protocol::stratum::{
    MAX_LINE_BYTES, NotAMessage, Refused, Request, RequestError, ToWorker,
};

use crate::{CONNECT_TIMEOUT, FRAME_TIMEOUT};

/// Stack of each connection's reader thread.
const READER_STACK: usize = 256 * 1024;
/// Sockets a pool port holds at once, those being closed included: a bound on descriptors.
/// Which connections to keep is the farm's business (`mvbc_node::farm::MAX_WORKERS`).
pub const MAX_POOL_CONNECTIONS: usize = 4_096;
/// A connection that sends nothing for this long is closed (an honest worker submits shares
/// about every 3 s).
pub const POOL_IDLE: Duration = Duration::from_secs(600);
/// Lines a second read from one connection, after a burst of [`LINE_BURST`].
pub const LINES_PER_SECOND: f64 = 10.0;
/// Lines one connection may send at once before the reader slows down.
pub const LINE_BURST: f64 = 40.0;

/// Where a pool port's threads report: called from each connection's own thread, so the
/// handling of a line costs no hand-over to another thread.
pub trait PoolEvents: Send + Sync + 'static {
    /// Connection `conn` opened from `from`; `io` sends to it and closes it.
    fn opened(&self, conn: u64, from: SocketAddr, io: WorkerIo);
    /// A line came on `conn`: a request, or why it is not one. May block: the reader waits,
    /// and so does the worker (one that floods waits for its turn).
    fn line(&self, conn: u64, line: Result<Request, Refused>);
    /// Connection `conn` ended (closed, silent, or a line too long); after this, nothing
    /// more comes from it.
    fn closed(&self, conn: u64);
}

/// The node's handle on one worker's connection.
pub struct WorkerIo {
    stream: TcpStream,
}

/// The worker has not read what it was sent (its socket's buffer is full), or it is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the worker does not read what it is sent, or is gone")]
pub struct Backlogged;

impl WorkerIo {
    /// Sends `message` without waiting: all of it, or an error (then close the connection).
    pub fn send(&self, message: &ToWorker) -> Result<(), Backlogged> {
        let line = message.to_line();
        let socket = socket2::SockRef::from(&self.stream);
        loop {
            match socket.send_with_flags(line.as_bytes(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                Ok(n) if n == line.len() => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Part of a line, or none: the buffer is full.
                _ => return Err(Backlogged),
            }
        }
    }

    /// Closes the connection (what was sent before still goes); its reader reports it closed.
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A pool port: accepts workers until dropped.
pub struct PoolServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<(u64, TcpStream)>>>,
}

impl PoolServer {
    /// Serves workers on `listener`, telling `events`.
    pub fn start(listener: TcpListener, events: Arc<dyn PoolEvents>) -> io::Result<PoolServer> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        thread::Builder::new().name("pool-accept".into()).spawn({
            let (stop, open) = (stop.clone(), open.clone());
            move || accept(listener, events, stop, open)
        })?;
        Ok(PoolServer { addr, stop, open })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PoolServer {
    /// Stops accepting and closes every connection, so workers notice at once and look for
    /// the node again.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        for (_, stream) in self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept(
    listener: TcpListener,
    events: Arc<dyn PoolEvents>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<(u64, TcpStream)>>>,
) {
    let count = Arc::new(AtomicUsize::new(0));
    let next = AtomicU64::new(0);
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // Out of file descriptors, say: wait rather than spin.
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        if count.load(Ordering::Acquire) >= MAX_POOL_CONNECTIONS {
            tracing::debug!("pool port full: closed a new connection");
            continue;
        }
        let conn = next.fetch_add(1, Ordering::Relaxed);
        match serve(conn, stream, &events, &count, &open) {
            Ok(()) => {}
            Err(e) => tracing::warn!("cannot serve a worker: {e}"),
        }
    }
}

fn serve(
    conn: u64,
    stream: TcpStream,
    events: &Arc<dyn PoolEvents>,
    count: &Arc<AtomicUsize>,
    open: &Arc<Mutex<Vec<(u64, TcpStream)>>>,
) -> io::Result<()> {
    let from = stream.peer_addr()?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POOL_IDLE))?;
    let reader = stream.try_clone()?;
    let closer = stream.try_clone()?;
    count.fetch_add(1, Ordering::AcqRel);
    open.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((conn, closer));
    events.opened(conn, from, WorkerIo { stream });
    let ended = {
        let (events, count, open) = (events.clone(), count.clone(), open.clone());
        move || {
            open.lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(c, _)| *c != conn);
            count.fetch_sub(1, Ordering::AcqRel);
            events.closed(conn);
        }
    };
    let reading = {
        let events = events.clone();
        let ended = ended.clone();
        move || {
            read_requests(conn, reader, &*events);
            ended();
        }
    };
    // A reader needs little stack: a buffered line and a parsed request.
    let spawned = thread::Builder::new()
        .name("pool-read".into())
        .stack_size(READER_STACK)
        .spawn(reading);
    if let Err(e) = spawned {
        ended();
        return Err(e);
    }
    Ok(())
}

fn read_requests(conn: u64, stream: TcpStream, events: &dyn PoolEvents) {
    let mut reader = BufReader::new(stream);
    let mut bucket = TokenBucket::full(LINES_PER_SECOND, LINE_BURST);
    loop {
        let line = match read_line(&mut reader, MAX_LINE_BYTES) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(LineError::TooLong(_)) => {
                // Counted against the worker before it goes.
                let error = RequestError::TooLong;
                let id = serde_json::Value::Null;
                events.line(conn, Err(Refused { id, error }));
                break;
            }
            Err(e) => {
                tracing::debug!(conn, "pool connection ends: {e}");
                break;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let now = Instant::now();
        if !bucket.take(now) {
            thread::sleep(bucket.wait(1.0));
            bucket.take(Instant::now());
        }
        events.line(conn, Request::parse(&line));
    }
    let _ = reader.get_ref().shutdown(Shutdown::Both);
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line is longer than the cap.
    #[error("a line over {0} bytes")]
    TooLong(usize),
    /// The socket failed, or timed out.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One line of at most `cap` bytes, newline included, without its newline (and `\r`);
/// `None` at the end of the stream. A longer line is an error, read no further.
pub fn read_line(reader: &mut impl BufRead, cap: usize) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if buf.is_empty() {
            // The end: a last line without its newline is a line cut short, not a request.
            return Ok(None);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > cap {
            return Err(LineError::TooLong(cap));
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// What a worker's connection to a node hears.
#[derive(Debug)]
pub enum FromPool {
    /// A message.
    Message(ToWorker),
    /// A line that is not one: the connection goes on.
    Garbled(NotAMessage),
    /// The connection ended, and why.
    Closed(String),
}

/// A worker's connection to a node's pool port.
pub struct PoolConnection {
    stream: TcpStream,
}

impl PoolConnection {
    /// Connects to `addr`; every line the node sends goes to `heard`, on a thread of the
    /// connection's own, and the last thing it hears is [`FromPool::Closed`].
    pub fn connect(
        addr: SocketAddr,
        heard: impl Fn(FromPool) + Send + 'static,
    ) -> io::Result<PoolConnection> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(FRAME_TIMEOUT))?;
        let reader = stream.try_clone()?;
        thread::Builder::new()
            .name("pool-client".into())
            .spawn(move || {
                let mut reader = BufReader::new(reader);
                let why = loop {
                    match read_line(&mut reader, MAX_LINE_BYTES) {
                        Ok(Some(line)) if line.is_empty() => {}
                        Ok(Some(line)) => heard(match ToWorker::parse(&line) {
                            Ok(m) => FromPool::Message(m),
                            Err(e) => FromPool::Garbled(e),
                        }),
                        Ok(None) => break "the node closed the connection".to_string(),
                        Err(e) => break e.to_string(),
                    }
                };
                heard(FromPool::Closed(why));
            })?;
        Ok(PoolConnection { stream })
    }

    /// Sends one line (newline included).
    pub fn send(&self, line: &str) -> io::Result<()> {
        (&self.stream).write_all(line.as_bytes())
    }

    /// Closes the connection.
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Drop for PoolConnection {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn lines_are_read_whole_and_capped() {
        let mut r = BufReader::with_capacity(3, Cursor::new(b"ab\r\n\ncdef\nxyz".to_vec()));
        assert_eq!(read_line(&mut r, 8).unwrap(), Some(b"ab".to_vec()));
        assert_eq!(read_line(&mut r, 8).unwrap(), Some(Vec::new()));
        assert_eq!(read_line(&mut r, 8).unwrap(), Some(b"cdef".to_vec()));
        assert_eq!(read_line(&mut r, 8).unwrap(), None, "a last line cut short");
        let mut r = Cursor::new(b"0123456789\n".to_vec());
        assert!(matches!(read_line(&mut r, 10), Err(LineError::TooLong(10))));
        let mut r = Cursor::new(b"012345678\n".to_vec());
        assert_eq!(read_line(&mut r, 10).unwrap(), Some(b"012345678".to_vec()));
    }
}
