//! `peers.dat`: the addresses of nodes that served a node well, saved for its next start.
//!
//! Text, one `address:port` a line, replaced atomically; at most [`MAX_SAVED_PEERS`] lines and
//! [`MAX_PEERS_FILE_BYTES`] bytes are read, and lines that are not an address are skipped, so
//! a damaged or hostile file costs nothing but the addresses it lost.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use mvbc_protocol::fsutil;

/// The file's name in the data directory.
pub const PEERS_FILE: &str = "peers.dat";
/// Addresses saved and read at most.
pub const MAX_SAVED_PEERS: usize = 100;
/// Cap on the bytes read.
pub const MAX_PEERS_FILE_BYTES: u64 = 16 * 1024;

const HEADER: &str = "# mvbc peers.dat: nodes that served this one well, dialled again at start\n";

/// Replaces the file with `addrs` (the first [`MAX_SAVED_PEERS`]).
pub fn save(path: &Path, addrs: &[SocketAddr]) -> io::Result<()> {
    let mut text = String::from(HEADER);
    for addr in addrs.iter().take(MAX_SAVED_PEERS) {
        text.push_str(&addr.to_string());
        text.push('\n');
    }
    fsutil::write_atomic(path, text.as_bytes())
}

/// The addresses in the file: none when it is missing; lines that are not an address skipped.
pub fn load(path: &Path) -> io::Result<Vec<SocketAddr>> {
    let bytes = match fsutil::read_capped(path, MAX_PEERS_FILE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        if let Ok(addr) = line.trim().parse::<SocketAddr>()
            && !addrs.contains(&addr)
        {
            addrs.push(addr);
        }
        if addrs.len() == MAX_SAVED_PEERS {
            break;
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_caps_and_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PEERS_FILE);
        assert_eq!(
            load(&path).unwrap(),
            Vec::<SocketAddr>::new(),
            "missing: none"
        );
        let addrs: Vec<SocketAddr> = (0..150u16)
            .map(|i| SocketAddr::from(([10, 0, (i / 200) as u8, (i % 200) as u8], 2607)))
            .chain(["[fd00::7]:2607".parse().unwrap()])
            .collect();
        save(&path, &addrs).unwrap();
        assert_eq!(load(&path).unwrap(), addrs[..MAX_SAVED_PEERS]);
        std::fs::write(
            &path,
            "junk\n10.0.0.1:2607\n\u{0}\u{ff}\n10.0.0.1:2607\n[fd00::7]:1\n999.1.1.1:1\n",
        )
        .unwrap();
        assert_eq!(
            load(&path).unwrap(),
            [
                "10.0.0.1:2607".parse().unwrap(),
                "[fd00::7]:1".parse().unwrap()
            ]
        );
        std::fs::write(&path, vec![b'1'; 1 << 20]).unwrap();
        assert!(load(&path).is_err(), "over the cap: refused, not read");
    }
}
