//! The API's HTTP/1.1 server: one thread accepts, one thread per connection (at most
//! [`MAX_CONNECTIONS`]) reads one request, answers it and closes.
//!
//! Request heads are parsed by `httparse` (hyper's parser); what surrounds it is small and
//! ours, so that every bound is the node's own: the head is read into a fixed buffer of
//! [`MAX_HEAD_BYTES`] within [`REQUEST_TIME`], and no request has a body. A slow or hostile
//! client holds one thread for a few seconds at most and never touches the node loop.
//!
//! **Slow-loris**: when every slot is taken, a new connection takes the slot of the connection
//! that has waited longest for its head (idle-first eviction), which is closed without an
//! answer. Honest clients send their head at once, so they are never the ones waiting; a
//! client holding 64 half-sent heads and reopening each one closed only evicts itself. Only
//! when every slot is past its head (answering) is a newcomer told 503
//! (`docs/adr/0007-api-server-threads-and-eviction.md`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Cap on a request's line and headers together.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Cap on the number of request headers (browsers send about 15).
pub const MAX_HEADERS: usize = 32;
/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its whole request head, and then to take the response.
pub const REQUEST_TIME: Duration = Duration::from_secs(5);
/// Cap on a response body. Handlers bound what they list, so none comes near it.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// A request the server accepted: a `GET` or `HEAD` without a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The path, without the query.
    pub path: &'a str,
    /// What follows `?`, or "".
    pub query: &'a str,
}

/// What a handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": message.into() }))
    }
}

/// Answers requests; called from connection threads, several at once.
pub trait Handler: Send + Sync + 'static {
    /// The response to one request.
    fn handle(&self, request: Request<'_>) -> Response;
}

/// How the server treats requests beyond the handler.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The origin whose pages may read `/api/` responses, if any.
    pub allow_origin: Option<String>,
}

/// A running server. Its threads live as long as the process (the node never stops it).
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
}

impl HttpServer {
    /// Serves `handler` on `listener` from new threads.
    pub fn start(
        listener: TcpListener,
        handler: Arc<dyn Handler>,
        options: Options,
    ) -> io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            handler,
            options,
            loopback: addr.ip().is_loopback(),
            open: AtomicUsize::new(0),
            waiting: Mutex::new(HashMap::new()),
            next_slot: AtomicU64::new(0),
        });
        thread::Builder::new()
            .name("api-accept".into())
            .spawn(move || accept(listener, shared))?;
        Ok(HttpServer { addr })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

struct Shared {
    handler: Arc<dyn Handler>,
    options: Options,
    /// Bound to loopback: a `Host` must name this host (no page elsewhere reads the API by
    /// re-pointing its own name at 127.0.0.1).
    loopback: bool,
    open: AtomicUsize,
    /// Connections still waiting for their head, by slot number: the ones a newcomer may
    /// evict when every slot is taken.
    waiting: Mutex<HashMap<u64, Waiting>>,
    next_slot: AtomicU64,
}

/// A connection that has not sent its whole head yet.
struct Waiting {
    since: Instant,
    /// A handle on its socket, to close it from the accepting thread.
    stream: TcpStream,
}

/// Counts a connection while it is served.
struct Slot(Arc<Shared>, u64);

impl Slot {
    /// Its head is in: no longer a candidate for eviction.
    fn headed(&self) {
        self.0
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.headed();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// With every slot taken: closes the connection that has waited longest for its head, if
/// one is waiting; whether it did.
fn evict_idlest(shared: &Shared) -> bool {
    let mut waiting = shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
    let Some(oldest) = waiting
        .iter()
        .min_by_key(|(n, w)| (w.since, **n))
        .map(|(n, _)| *n)
    else {
        return false;
    };
    if let Some(w) = waiting.remove(&oldest) {
        // Its thread's read ends at once; it then frees its slot.
        let _ = w.stream.shutdown(Shutdown::Both);
    }
    true
}

fn accept(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was taken: wait a
                // little rather than spin.
                tracing::debug!("API accept failed: {e}");
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if shared.open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS && !evict_idlest(&shared) {
            shared.open.fetch_sub(1, Ordering::AcqRel);
            // A fresh socket's send buffer takes this whole; never wait on the client.
            let _ = stream.set_nonblocking(true);
            let busy = Response::error(503, "too many connections; try again");
            let _ = stream.write_all(&encode(&busy, false, None));
            continue;
        }
        let number = shared.next_slot.fetch_add(1, Ordering::Relaxed);
        if let Ok(handle) = stream.try_clone() {
            let waiting = Waiting {
                since: Instant::now(),
                stream: handle,
            };
            let mut all = shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
            all.insert(number, waiting);
        }
        let slot = Slot(shared.clone(), number);
        let spawned = thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || serve(stream, slot));
        if let Err(e) = spawned {
            tracing::warn!("API: no thread for a connection: {e}");
        }
    }
}

/// Reads one request, answers it, closes.
fn serve(mut stream: TcpStream, slot: Slot) {
    let shared = &slot.0;
    let deadline = Instant::now() + REQUEST_TIME;
    let _ = stream.set_write_timeout(Some(REQUEST_TIME));
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let head = read_head(&mut stream, &mut buf, deadline);
    slot.headed();
    let (response, head_only) = match head {
        Ok(len) => answer(shared, &buf[..len]),
        Err(HeadError::Closed) => return,
        Err(HeadError::Refused(r)) => (r, false),
    };
    let origin = shared.options.allow_origin.as_deref();
    let _ = stream.write_all(&encode(&response, head_only, origin));
    let _ = stream.shutdown(Shutdown::Write);
    // Closing with unread bytes makes the kernel reset the connection, which can destroy the
    // response before the client reads it: take what is left, briefly.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.read(&mut buf);
}

enum HeadError {
    /// The client went away: nobody to answer.
    Closed,
    /// Answer this and close.
    Refused(Response),
}

/// Reads until the head is complete; returns its length.
fn read_head(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, HeadError> {
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Refused(Response::error(
                408,
                format!("the request took longer than {} s", REQUEST_TIME.as_secs()),
            )));
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Closed),
        }
        match head_so_far(&buf[..len], len == buf.len()) {
            Ok(true) => return Ok(len),
            Ok(false) => {}
            Err(refused) => return Err(HeadError::Refused(refused)),
        }
    }
}

/// Judges the bytes of a request head read so far (`full`: the buffer has no room left):
/// `Ok(true)` when the head is complete, `Ok(false)` when more may come, or the response that
/// refuses it (400 malformed, 431 too large).
pub fn head_so_far(bytes: &[u8], full: bool) -> Result<bool, Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut headers).parse(bytes) {
        Ok(httparse::Status::Complete(_)) => Ok(true),
        Ok(httparse::Status::Partial) if full => Err(too_large()),
        Ok(httparse::Status::Partial) => Ok(false),
        Err(httparse::Error::TooManyHeaders) => Err(too_large()),
        Err(e) => Err(Response::error(400, format!("malformed request: {e}"))),
    }
}

fn too_large() -> Response {
    Response::error(
        431,
        format!("request head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers"),
    )
}

/// The response to a complete head, and whether it was a `HEAD`.
fn answer(shared: &Shared, head: &[u8]) -> (Response, bool) {
    answer_head(head, shared.loopback, &*shared.handler)
}

/// The response to the complete request head `head` from a server bound to loopback or not,
/// with `handler` behind it, and whether it was a `HEAD`. Every refusal is a 4xx.
pub fn answer_head(head: &[u8], loopback: bool, handler: &dyn Handler) -> (Response, bool) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if request.parse(head).is_err() {
        return (Response::error(400, "malformed request"), false);
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return (Response::error(400, "malformed request"), false);
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (
            Response::error(
                405,
                format!("{method} is not served: the API only reads (GET)"),
            ),
            false,
        );
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_body = header("transfer-encoding").is_some()
        || header("content-length").is_some_and(|v| v.trim_ascii() != b"0");
    if has_body {
        return (Response::error(413, "requests take no body"), head_only);
    }
    if loopback
        && let Some(host) = header("host")
        && !names_loopback(host)
    {
        return (
            Response::error(
                421,
                "this API answers only requests for this host (localhost or 127.0.0.1)",
            ),
            head_only,
        );
    }
    if !target.starts_with('/') {
        return (Response::error(400, "the target must be a path"), head_only);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let response = handler.handle(Request { path, query });
    if response.body.len() > MAX_RESPONSE_BYTES {
        return (
            Response::error(503, "the response would be too large"),
            head_only,
        );
    }
    (response, head_only)
}

/// Whether a `Host` header names this host: localhost, 127.x.y.z or [::1], any port.
fn names_loopback(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The bytes of a response: every one closes its connection and is never cached.
pub fn encode(response: &Response, head_only: bool, allow_origin: Option<&str>) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
         X-Frame-Options: DENY\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    if response.content_type.starts_with("text/html") {
        // Everything the page needs is in the page: it may fetch only from this node.
        head.push_str(
            "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
             style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'\r\n",
        );
    }
    if let Some(origin) = allow_origin
        && response.content_type == "application/json"
    {
        head.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        for ok in [
            "localhost",
            "localhost:2609",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:2609",
            "127.9.8.7:80",
            "[::1]:2609",
            "[::1]",
        ] {
            assert!(names_loopback(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:2609",
            "localhost.evil.example",
            "10.0.0.1:2609",
            "[::2]:1",
            "",
            "\u{ff}",
        ] {
            assert!(!names_loopback(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn head_responses_carry_the_length_but_no_body() {
        let r = Response::error(404, "no such block");
        let full = encode(&r, false, None);
        let head = encode(&r, true, None);
        assert!(full.ends_with(&r.body));
        assert_eq!(full.len() - head.len(), r.body.len());
        let text = String::from_utf8(head).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains(&format!("Content-Length: {}\r\n", r.body.len())));
        assert!(!text.contains("Access-Control"));
    }

    #[test]
    fn an_allowed_origin_is_named_on_json_only() {
        let json = encode(
            &Response::error(404, "x"),
            false,
            Some("http://localhost:8080"),
        );
        assert!(
            String::from_utf8_lossy(&json)
                .contains("Access-Control-Allow-Origin: http://localhost:8080\r\n")
        );
        let page = Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: b"<p>".to_vec(),
        };
        let html = String::from_utf8(encode(&page, false, Some("http://localhost:8080"))).unwrap();
        assert!(!html.contains("Access-Control"));
        assert!(html.contains("Content-Security-Policy: default-src 'none'"));
    }
}
