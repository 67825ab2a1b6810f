//! A test's side of the miner's HTTP API: raw requests over TCP, so tests can send what no
//! well-behaved client would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The body as JSON, or a failure that shows it.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.head, self.body))
    }

    /// Whether a header has this value (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `raw` and reads until the server closes; `None` when it closed without a status line.
pub fn request(port: u16, raw: &[u8]) -> Option<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // The server may answer and close before it has read everything (a head over its cap).
    let _ = stream.write_all(raw);
    read_reply(&mut stream)
}

/// Reads a whole response from a connection the server closes.
pub fn read_reply(stream: &mut TcpStream) -> Option<Reply> {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// `GET path` as a browser on this host sends it.
pub fn get(port: u16, path: &str) -> Reply {
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    request(port, raw.as_bytes()).unwrap_or_else(|| panic!("no reply to GET {path}"))
}

/// `GET path`, which must answer 200 with JSON.
pub fn get_json(port: u16, path: &str) -> serde_json::Value {
    let reply = get(port, path);
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}
