//! The miners a node or wallet has heard: their last status, where their block server is, and
//! whether a failed download put them aside for a while. Bounded, so a flood of made-up node
//! ids cannot grow memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::Status;

/// Peers remembered at once.
pub const MAX_PEERS: usize = 256;

/// How many blocks past a peer's announced height a download may fetch: the peer may mine
/// more while we download, but a peer that keeps sending is cut off there.
pub const DOWNLOAD_SLACK: u64 = 64;

/// Judges a finished download from a peer that announced `announced_work`: `Ok` when our
/// chain now has that much work, otherwise why the peer should be passed over (it served
/// `blocks` and then nothing more: it lied, or lost blocks).
pub fn judge_download(blocks: u64, ours: u128, announced_work: u128) -> Result<u64, String> {
    if ours < announced_work {
        Err(format!(
            "{blocks} blocks served, short of the work it announced"
        ))
    } else {
        Ok(blocks)
    }
}

/// One miner heard on the status port.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its node id.
    pub node_id: u64,
    /// Its block server: the datagram's source address with the announced port.
    pub block_server: SocketAddr,
    /// What it announced last.
    pub status: Status,
    /// When it was last heard.
    pub last_seen: Instant,
    /// Passed over until then, after a failed download.
    pub backoff_until: Option<Instant>,
}

/// The peers heard lately, by node id.
#[derive(Debug, Default)]
pub struct PeerBook {
    peers: HashMap<u64, Peer>,
}

impl PeerBook {
    /// An empty book.
    pub fn new() -> PeerBook {
        PeerBook::default()
    }

    /// Number of peers remembered.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Records a status heard from `from` at `now`. When the book is full, peers quiet for
    /// `quiet` make room; if none is, a new node is not recorded and `false` is returned.
    pub fn heard(
        &mut self,
        status: Status,
        from: SocketAddr,
        now: Instant,
        quiet: Duration,
    ) -> bool {
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&status.node_id) {
            self.forget_quiet(now, quiet);
            if self.peers.len() >= MAX_PEERS {
                return false;
            }
        }
        let block_server = SocketAddr::new(from.ip(), status.block_server_port);
        let peer = self.peers.entry(status.node_id).or_insert(Peer {
            node_id: status.node_id,
            block_server,
            status,
            last_seen: now,
            backoff_until: None,
        });
        peer.block_server = block_server;
        peer.status = status;
        peer.last_seen = now;
        true
    }

    /// Forgets peers not heard for `quiet`.
    pub fn forget_quiet(&mut self, now: Instant, quiet: Duration) {
        self.peers
            .retain(|_, p| now.saturating_duration_since(p.last_seen) < quiet);
    }

    /// The peer announcing the most work, if that is more than `ours` and it is not passed
    /// over at `now`.
    pub fn best_ahead(&self, ours: u128, now: Instant) -> Option<&Peer> {
        self.peers
            .values()
            .filter(|p| p.status.chain_work > ours)
            .filter(|p| p.backoff_until.is_none_or(|t| t <= now))
            .max_by_key(|p| p.status.chain_work)
    }

    /// The most work any peer announced (0 with none).
    pub fn best_work(&self) -> u128 {
        self.peers
            .values()
            .map(|p| p.status.chain_work)
            .max()
            .unwrap_or(0)
    }

    /// Passes `node_id` over until `until`.
    pub fn back_off(&mut self, node_id: u64, until: Instant) {
        if let Some(p) = self.peers.get_mut(&node_id) {
            p.backoff_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash256;

    fn status(node_id: u64, chain_work: u128) -> Status {
        Status {
            node_id,
            height: 1,
            tip: Hash256::ZERO,
            chain_work,
            block_server_port: 2607,
        }
    }

    const FROM: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        40000,
    ));
    const QUIET: Duration = Duration::from_secs(30);

    #[test]
    fn the_best_peer_ahead_skips_those_passed_over() {
        let now = Instant::now();
        let mut book = PeerBook::new();
        book.heard(status(1, 10), FROM, now, QUIET);
        book.heard(status(2, 20), FROM, now, QUIET);
        assert_eq!(book.best_ahead(5, now).unwrap().node_id, 2);
        assert_eq!(
            book.best_ahead(5, now).unwrap().block_server.port(),
            2607,
            "the announced port, at the sender's address"
        );
        book.back_off(2, now + QUIET);
        assert_eq!(book.best_ahead(5, now).unwrap().node_id, 1);
        assert_eq!(book.best_ahead(5, now + QUIET).unwrap().node_id, 2);
        assert!(
            book.best_ahead(20, now).is_none(),
            "nobody has more than 20"
        );
        assert_eq!(book.best_work(), 20);
    }

    #[test]
    fn a_full_book_takes_new_peers_only_in_place_of_quiet_ones() {
        let start = Instant::now();
        let mut book = PeerBook::new();
        for id in 0..MAX_PEERS as u64 {
            assert!(book.heard(status(id, 1), FROM, start, QUIET));
        }
        assert!(!book.heard(status(9999, 1), FROM, start, QUIET));
        assert!(
            book.heard(status(0, 2), FROM, start, QUIET),
            "known peers update"
        );
        let later = start + QUIET;
        book.heard(status(1, 1), FROM, later, QUIET);
        assert!(book.heard(status(9999, 1), FROM, later, QUIET));
        assert_eq!(book.len(), 2, "the quiet ones made room");
    }
}
