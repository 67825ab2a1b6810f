//! What each fuzz target checks, and the stand-in `main` of a stable build.
//!
//! Every check holds for any input: a decoder either refuses the bytes with an error or
//! returns a value whose encoding gives back exactly those bytes. A panic, an abort or a hang
//! is a finding.

use mvbc_protocol::block::Block;
use mvbc_protocol::tx::Transaction;
use mvbc_protocol::wire::{Datagram, Reply, Request};
use mvbc_protocol::{Config, KeyPair, store};

/// UDP datagrams and TCP frame bodies.
pub fn wire(data: &[u8]) {
    if let Ok(d) = Datagram::decode(data) {
        assert_eq!(d.encode(), data);
        if let Datagram::Payment(p) = d {
            let _ = p.verify();
        }
    }
    if let Ok(r) = Request::decode(data) {
        assert_eq!(r.encode(), data);
    }
    if let Ok(r) = Reply::decode(data) {
        assert_eq!(r.encode(), data);
    }
}

/// Request heads as the API's HTTP server reads them: judged as they arrive (complete, more to
/// come, or refused with a 4xx), then answered by a handler that echoes the path; nothing
/// panics, every refusal is a 4xx, and the encoded response says the status it carries.
pub fn http_head(data: &[u8]) {
    use mvbc_miner::api::http::{self, Handler, Request, Response};
    struct Echo;
    impl Handler for Echo {
        fn handle(&self, request: Request<'_>) -> Response {
            Response::json(200, &serde_json::json!({ "path": request.path }))
        }
    }
    let refusal = |r: &Response| (400..500).contains(&r.status);
    match http::head_so_far(data, data.len() >= http::MAX_HEAD_BYTES) {
        Err(r) => assert!(refusal(&r), "{r:?}"),
        Ok(false) => {}
        Ok(true) => {
            for loopback in [false, true] {
                let (response, head_only) = http::answer_head(data, loopback, &Echo);
                assert!(response.status == 200 || refusal(&response), "{response:?}");
                let bytes = http::encode(&response, head_only, None);
                let status = format!("HTTP/1.1 {} ", response.status);
                assert!(bytes.starts_with(status.as_bytes()));
            }
        }
    }
}

/// Lines as the pool port reads them from a worker, and as a worker reads them from a node:
/// nothing panics; a request that parses, written out again, parses to the same request; a
/// node's message that parses, written out again, parses to the same message.
pub fn stratum(data: &[u8]) {
    use mvbc_protocol::stratum::{Request, ToWorker};
    if let Ok(request) = Request::parse(data) {
        let line = request.to_line("x");
        let again = Request::parse(line.trim_end().as_bytes()).expect("our own line parses");
        assert_eq!(again, request);
    }
    if let Ok(message) = ToWorker::parse(data) {
        let line = message.to_line();
        let again = ToWorker::parse(line.trim_end().as_bytes()).expect("our own line parses");
        assert_eq!(again, message);
    }
}

/// Blocks as they arrive from a block server or a store record.
pub fn block(data: &[u8]) {
    if let Ok(b) = Block::decode(data) {
        assert_eq!(b.encode(), data);
        let _ = b.compute_merkle_root();
    }
}

/// Transactions, with their signature checked as a node checks one off the wire.
pub fn transaction(data: &[u8]) {
    if let Ok(t) = Transaction::decode(data) {
        assert_eq!(t.encode(), data);
        if let Transaction::Payment(p) = &t {
            let _ = p.verify();
        }
    }
}

/// A whole block store file.
pub fn store(data: &[u8]) {
    if let Ok(scan) = store::scan(data) {
        assert!(scan.kept <= data.len() as u64);
        assert_eq!(
            scan.damage.is_none(),
            scan.kept == data.len() as u64 || data.is_empty()
        );
        drop(scan.blocks);
    }
}

/// A key file's text.
pub fn key_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = KeyPair::from_pkcs8_pem(text);
    }
}

/// A config file's text.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut c = Config::default();
        let _ = c.apply_toml(text);
    }
}

/// The stable build's `main`: runs `check` once over each file (or each file of each folder)
/// named on the command line, and says how many it ran.
pub fn run_files(check: fn(&[u8])) {
    let mut ran = 0;
    for arg in std::env::args_os().skip(1) {
        let path = std::path::PathBuf::from(arg);
        let files: Vec<_> = if path.is_dir() {
            std::fs::read_dir(&path)
                .expect("read the folder")
                .map(|e| e.expect("a folder entry").path())
                .collect()
        } else {
            vec![path]
        };
        for file in files {
            let data = std::fs::read(&file).expect("read the input");
            check(&data);
            ran += 1;
        }
    }
    println!("{ran} inputs checked");
}

/// The body of a target file: under `cargo fuzz` (`--cfg fuzzing`) a libFuzzer target over
/// `$check`, otherwise a `main` that replays the files it is given.
#[macro_export]
macro_rules! target {
    ($check:path) => {
        #[cfg(fuzzing)]
        libfuzzer_sys::fuzz_target!(|data: &[u8]| $check(data));

        #[cfg(not(fuzzing))]
        fn main() {
            $crate::run_files($check);
        }
    };
}
