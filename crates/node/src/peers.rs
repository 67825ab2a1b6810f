//! The miners a node or wallet has heard: their last status, where their block server is, and
//! whether a failed download put them aside for a while. Bounded, so a flood of made-up node
//! ids cannot grow memory, and careful whom it dials: a status names any address and port (a
//! source address on a LAN can be spoofed), so a flood of statuses must not turn a node into a
//! reflector that connects wherever it is told.
//!
//! - One host holds at most [`MAX_PEERS_PER_HOST`] entries, and a full book makes room by
//!   forgetting a peer heard only once (the least recently heard first) before one heard again
//!   and again: a flood of statuses from fresh node ids can neither fill the book nor push out
//!   the peers that keep announcing, and a newcomer always gets in.
//! - Peers are kept **by block server address** (the status's source IP with the port it
//!   names), never by node id alone: node ids are public, so anyone can announce under one. A
//!   status under an honest node's id from another address is another entry; a failed download
//!   passes over the address that failed, never an id another address used.
//! - An address that served new blocks lately is "proven" and comes first; the others are
//!   dialled at most [`DIAL_RATE`] a second in all (after a burst of [`DIAL_BURST`]), at most
//!   once per [`IP_DIAL_INTERVAL`] per host, hosts with fewer recent failures first.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mvbc_protocol::rate::TokenBucket;
use mvbc_protocol::wire::Status;

/// Peers remembered at once.
pub const MAX_PEERS: usize = 256;
/// Peers remembered at once from one host (the source address of their statuses).
pub const MAX_PEERS_PER_HOST: usize = 32;

/// How many blocks past a peer's announced height a download may fetch: the peer may mine
/// more while we download, but a peer that keeps sending is cut off there.
pub const DOWNLOAD_SLACK: u64 = 64;

/// Dials a second of block servers not proven lately, sustained.
pub const DIAL_RATE: f64 = 2.0;
/// Dials of block servers not proven lately at once, after a quiet spell.
pub const DIAL_BURST: f64 = 4.0;
/// How soon the same host may be dialled again, unless the address dialled is proven.
pub const IP_DIAL_INTERVAL: Duration = Duration::from_secs(1);
/// How long an address that served new blocks stays proven.
pub const PROVEN_FOR: Duration = Duration::from_secs(600);

/// What our chain makes of a peer's announced chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Nothing to fetch: less work, or a tip we hold.
    No,
    /// As much work as ours, on a tip we have not seen: it may win the tie-break, so fetch it
    /// and let fork choice decide.
    Tie,
    /// More work than ours.
    More,
}

/// Our chain, as the judge of what a peer's status offers.
pub trait Wanted {
    /// Whether to fetch the chain `status` announces.
    fn want(&self, status: &Status) -> Want;
}

/// Only the work counts: a peer with more is wanted, a tie never.
impl Wanted for u128 {
    fn want(&self, status: &Status) -> Want {
        if status.chain_work > *self {
            Want::More
        } else {
            Want::No
        }
    }
}

/// More work is wanted; equal work on a tip the tree lacks is a tie to look at.
impl Wanted for mvbc_protocol::Chain {
    fn want(&self, status: &Status) -> Want {
        match status.chain_work.cmp(&self.chain_work()) {
            std::cmp::Ordering::Greater => Want::More,
            std::cmp::Ordering::Equal if !self.contains(&status.tip) => Want::Tie,
            _ => Want::No,
        }
    }
}

/// A light client's headers: more work is wanted; equal work on another tip is a tie to look
/// at (a header chain keeps no side branches to know it by).
impl Wanted for mvbc_protocol::headers::HeaderChain {
    fn want(&self, status: &Status) -> Want {
        match status.chain_work.cmp(&self.chain_work()) {
            std::cmp::Ordering::Greater => Want::More,
            std::cmp::Ordering::Equal if status.tip != self.tip_hash() => Want::Tie,
            _ => Want::No,
        }
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
    /// How many statuses it has sent (up to `u32::MAX`).
    pub times_heard: u32,
    /// Passed over until then, after a failed download.
    pub backoff_until: Option<Instant>,
    /// Until then, statuses in its name claiming more work than its own word are ignored: its
    /// server said less of itself than one of them claimed.
    pub disowned_until: Option<Instant>,
}

/// What to download from next.
#[derive(Clone, Debug)]
pub enum Pick {
    /// This peer: dial it now (the dial is counted).
    Dial(Peer),
    /// Someone is ahead, but may be dialled only from then on.
    Wait(Instant),
    /// Nobody we may dial is ahead.
    Nothing,
}

/// The peers heard lately, by block server address, and what their addresses did.
#[derive(Debug)]
pub struct PeerBook {
    peers: HashMap<SocketAddr, Peer>,
    /// Block servers passed over after a failed download, until when.
    failed: HashMap<SocketAddr, Instant>,
    /// Block servers that served new blocks, and when they last did.
    proven: HashMap<SocketAddr, Instant>,
    /// When each host was last dialled for an address not proven.
    dialled: HashMap<IpAddr, Instant>,
    /// Dials of addresses not proven that may start now (a token bucket).
    dial_tokens: TokenBucket,
}

impl Default for PeerBook {
    fn default() -> Self {
        PeerBook {
            peers: HashMap::new(),
            failed: HashMap::new(),
            proven: HashMap::new(),
            dialled: HashMap::new(),
            dial_tokens: TokenBucket::full(DIAL_RATE, DIAL_BURST),
        }
    }
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

    /// Every peer remembered, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Records a status heard from `from` at `now`, under the block server it names (`from`'s
    /// IP, the status's port). A new address makes room if needed: in place of its host's least
    /// recently heard peer when the host has [`MAX_PEERS_PER_HOST`]; when the book is full, of
    /// peers quiet for `quiet`, or else of the peer heard only once least recently, or else of
    /// the peer heard least recently.
    pub fn heard(&mut self, status: Status, from: SocketAddr, now: Instant, quiet: Duration) {
        let block_server = SocketAddr::new(from.ip(), status.block_server_port);
        if !self.peers.contains_key(&block_server) {
            let host = from.ip();
            let same_host = self
                .peers
                .values()
                .filter(|p| p.block_server.ip() == host)
                .count();
            if same_host >= MAX_PEERS_PER_HOST {
                self.forget_one(|p| p.block_server.ip() == host);
            } else if self.peers.len() >= MAX_PEERS {
                self.forget_quiet(now, quiet);
                if self.peers.len() >= MAX_PEERS && !self.forget_one(|p| p.times_heard <= 1) {
                    self.forget_one(|_| true);
                }
            }
        }
        let peer = self.peers.entry(block_server).or_insert(Peer {
            node_id: status.node_id,
            block_server,
            status,
            last_seen: now,
            times_heard: 0,
            backoff_until: None,
            disowned_until: None,
        });
        let capped = peer.disowned_until.is_some_and(|t| t > now)
            && status.chain_work > peer.status.chain_work;
        if !capped {
            peer.node_id = status.node_id;
            peer.status = status;
        }
        peer.last_seen = now;
        peer.times_heard = peer.times_heard.saturating_add(1);
    }

    /// Forgets the least recently heard peer that `pick` accepts; whether there was one.
    fn forget_one(&mut self, pick: impl Fn(&Peer) -> bool) -> bool {
        let oldest = self
            .peers
            .values()
            .filter(|p| pick(p))
            .min_by_key(|p| (p.last_seen, p.block_server))
            .map(|p| p.block_server);
        oldest.is_some_and(|addr| self.peers.remove(&addr).is_some())
    }

    /// Forgets peers not heard for `quiet`, and what expired about addresses.
    pub fn forget_quiet(&mut self, now: Instant, quiet: Duration) {
        self.peers
            .retain(|_, p| now.saturating_duration_since(p.last_seen) < quiet);
        self.failed.retain(|_, until| *until > now);
        self.proven
            .retain(|_, at| now.saturating_duration_since(*at) < PROVEN_FOR);
        self.dialled
            .retain(|_, at| now.saturating_duration_since(*at) < IP_DIAL_INTERVAL);
    }

    /// Whether this peer may be downloaded from at `now`: neither it nor its address passed
    /// over.
    fn eligible(&self, p: &Peer, now: Instant) -> bool {
        p.backoff_until.is_none_or(|t| t <= now)
            && self.failed.get(&p.block_server).is_none_or(|t| *t <= now)
    }

    /// The peers whose chain `ours` wants that may be downloaded from at `now`.
    fn ahead(&self, ours: &impl Wanted, now: Instant) -> Vec<&Peer> {
        self.peers
            .values()
            .filter(|p| ours.want(&p.status) != Want::No && self.eligible(p, now))
            .collect()
    }

    /// Of the peers whose chain `ours` wants and that are not passed over at `now` (neither
    /// they nor their address), the one announcing the most work.
    pub fn best_ahead(&self, ours: &impl Wanted, now: Instant) -> Option<&Peer> {
        // Ties go to the lowest address: the same choice whatever the map's order.
        self.ahead(ours, now)
            .into_iter()
            .max_by_key(|p| (p.status.chain_work, std::cmp::Reverse(p.block_server)))
    }

    /// Whom to download from, of the peers whose chain `ours` wants: a proven address first,
    /// then the others by how few of their host's addresses failed lately and by the work
    /// announced, within the dial budget. A `Dial` is counted against the budget.
    pub fn pick(&mut self, ours: &impl Wanted, now: Instant) -> Pick {
        self.pick_except(ours, now, &[])
    }

    /// [`PeerBook::pick`], passing over the block servers in `busy` (downloads already running
    /// from them).
    pub fn pick_except(&mut self, ours: &impl Wanted, now: Instant, busy: &[SocketAddr]) -> Pick {
        self.refill(now);
        let mut failures: HashMap<IpAddr, usize> = HashMap::new();
        for (addr, until) in &self.failed {
            if *until > now {
                *failures.entry(addr.ip()).or_default() += 1;
            }
        }
        let mut ahead: Vec<&Peer> = self
            .ahead(ours, now)
            .into_iter()
            .filter(|p| !busy.contains(&p.block_server))
            .collect();
        ahead.sort_by_key(|p| {
            (
                !self.is_proven(&p.block_server, now),
                failures.get(&p.block_server.ip()).copied().unwrap_or(0),
                std::cmp::Reverse(p.status.chain_work),
                p.block_server,
            )
        });
        // When the dial budget next has a dial for an address not proven.
        let token_free = now + self.dial_tokens.wait(1.0);
        let mut soonest: Option<Instant> = None;
        for p in ahead {
            if self.is_proven(&p.block_server, now) {
                return Pick::Dial(p.clone());
            }
            let ip_free = self
                .dialled
                .get(&p.block_server.ip())
                .map_or(now, |t| *t + IP_DIAL_INTERVAL);
            let free = ip_free.max(token_free);
            if free <= now {
                let peer = p.clone();
                self.dial_tokens.spend(1.0);
                self.dialled.insert(peer.block_server.ip(), now);
                return Pick::Dial(peer);
            }
            soonest = Some(soonest.map_or(free, |s| s.min(free)));
        }
        soonest.map_or(Pick::Nothing, Pick::Wait)
    }

    fn refill(&mut self, now: Instant) {
        self.dial_tokens.refill(now);
    }

    fn is_proven(&self, addr: &SocketAddr, now: Instant) -> bool {
        self.proven
            .get(addr)
            .is_some_and(|at| now.saturating_duration_since(*at) < PROVEN_FOR)
    }

    /// The most work any peer announced (0 with none).
    pub fn best_work(&self) -> u128 {
        self.peers
            .values()
            .map(|p| p.status.chain_work)
            .max()
            .unwrap_or(0)
    }

    /// A download from `block_server` failed: that address is passed over until `until`,
    /// whatever node id names it next. The node id is not blamed: anyone may announce under it.
    pub fn failed(&mut self, block_server: SocketAddr, until: Instant) {
        if let Some(p) = self.peers.get_mut(&block_server) {
            p.backoff_until = Some(until);
        }
        bounded_insert(&mut self.failed, block_server, until);
        self.proven.remove(&block_server);
    }

    /// The server at `block_server` said `told` of itself, less than a status heard in its name
    /// claimed: its entry holds its own word, and until `until` no claim of more work in its name
    /// is believed (its own next block may wait that long to be fetched).
    pub fn disowned(&mut self, block_server: SocketAddr, mut told: Status, until: Instant) {
        if let Some(p) = self.peers.get_mut(&block_server) {
            told.block_server_port = block_server.port();
            p.node_id = told.node_id;
            p.status = told;
            p.disowned_until = Some(until);
        }
    }

    /// `block_server` served new blocks at `now`: it is dialled first, and freely, for
    /// [`PROVEN_FOR`].
    pub fn served(&mut self, block_server: SocketAddr, now: Instant) {
        bounded_insert(&mut self.proven, block_server, now);
    }
}

/// Inserts into a map of at most [`MAX_PEERS`] entries, dropping the one with the earliest
/// time to make room.
fn bounded_insert(map: &mut HashMap<SocketAddr, Instant>, key: SocketAddr, at: Instant) {
    if map.len() >= MAX_PEERS
        && !map.contains_key(&key)
        && let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
    {
        map.remove(&oldest);
    }
    map.insert(key, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use mvbc_protocol::hash::Hash256;

    /// A status of `node_id`, whose block server listens on port 2600 + `node_id` (cut to 16
    /// bits).
    fn status(node_id: u64, chain_work: u128) -> Status {
        Status {
            network: mvbc_protocol::NetworkId::default(),
            node_id,
            height: 1,
            tip: Hash256::ZERO,
            chain_work,
            block_server_port: 2600u16.wrapping_add(node_id as u16),
        }
    }

    fn from_host(host: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, host], 40000))
    }

    fn has(book: &PeerBook, node_id: u64) -> bool {
        book.iter().any(|p| p.node_id == node_id)
    }

    fn server_of(book: &PeerBook, node_id: u64) -> SocketAddr {
        book.iter()
            .find(|p| p.node_id == node_id)
            .map(|p| p.block_server)
            .unwrap()
    }

    #[test]
    fn a_status_under_a_borrowed_node_id_neither_replaces_nor_blames_the_honest_peer() {
        let now = Instant::now();
        let mut book = PeerBook::new();
        // The honest miner, node id 1, serves on 10.0.0.1:2601.
        book.heard(status(1, 10), from_host(1), now, QUIET);
        let honest = server_of(&book, 1);
        // An attacker announces under id 1, more work, a port where nothing listens.
        let mut forged = status(1, 1_000);
        forged.block_server_port = 9;
        for _ in 0..20 {
            book.heard(forged, from_host(66), now, QUIET);
        }
        assert_eq!(book.len(), 2, "two addresses, two entries");
        let first = book.best_ahead(&0u128, now).unwrap().block_server;
        assert_eq!(first, SocketAddr::new(from_host(66).ip(), 9));
        // Its download fails: that address is passed over, the honest one is next at once.
        book.failed(first, now + QUIET);
        let next = book.best_ahead(&0u128, now).unwrap();
        assert_eq!(next.block_server, honest);
        assert_eq!(next.status.chain_work, 10);
        // More forged statuses change nothing for the honest entry.
        book.heard(forged, from_host(66), now, QUIET);
        assert_eq!(book.best_ahead(&0u128, now).unwrap().block_server, honest);
    }

    #[test]
    fn a_servers_own_word_caps_what_statuses_in_its_name_claim_for_a_while() {
        let now = Instant::now();
        let mut book = PeerBook::new();
        book.heard(status(1, 1_000), from_host(1), now, QUIET);
        let server = server_of(&book, 1);
        // Its server says it has 10: claims of more in its name are not believed...
        book.disowned(server, status(1, 10), now + QUIET);
        assert_eq!(book.best_ahead(&5u128, now).unwrap().status.chain_work, 10);
        book.heard(status(1, 1_000), from_host(1), now, QUIET);
        assert_eq!(book.best_ahead(&5u128, now).unwrap().status.chain_work, 10);
        assert!(
            book.best_ahead(&10u128, now).is_none(),
            "the claim came back"
        );
        // ...until the cap ends; and it was never passed over.
        let later = now + QUIET;
        book.heard(status(1, 12), from_host(1), later, QUIET);
        assert_eq!(
            book.best_ahead(&10u128, later).unwrap().status.chain_work,
            12
        );
    }

    fn dial(book: &mut PeerBook, ours: u128, now: Instant) -> Option<u64> {
        match book.pick(&ours, now) {
            Pick::Dial(p) => Some(p.node_id),
            _ => None,
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
        assert_eq!(book.best_ahead(&5u128, now).unwrap().node_id, 2);
        let server = book.best_ahead(&5u128, now).unwrap().block_server;
        assert_eq!(
            server,
            SocketAddr::new(FROM.ip(), 2602),
            "the announced port, at the sender's address"
        );
        book.failed(server, now + QUIET);
        assert_eq!(book.best_ahead(&5u128, now).unwrap().node_id, 1);
        assert_eq!(book.best_ahead(&5u128, now + QUIET).unwrap().node_id, 2);
        assert!(
            book.best_ahead(&20u128, now).is_none(),
            "nobody has more than 20"
        );
        assert_eq!(book.best_work(), 20);
    }

    #[test]
    fn a_full_book_makes_room_from_peers_heard_once_and_never_fills_from_one_host() {
        let start = Instant::now();
        let mut book = PeerBook::new();
        // Ten honest peers on their own hosts, each heard twice.
        for id in 0..10u64 {
            for _ in 0..2 {
                book.heard(status(id, 1), from_host(id as u8 + 1), start, QUIET);
            }
        }
        // A flood of fresh node ids from one host: it holds its share, no more.
        for id in 1_000..2_000u64 {
            book.heard(status(id, 9), from_host(200), start, QUIET);
        }
        assert_eq!(book.len(), 10 + MAX_PEERS_PER_HOST);
        // The same flood from many hosts (spoofed sources) fills the book, but pushes out
        // only peers heard once, never the ten that keep announcing.
        for id in 2_000..4_000u64 {
            let later = start + Duration::from_millis(id);
            book.heard(
                status(id, 9),
                from_host((id % 150) as u8 + 20),
                later,
                QUIET,
            );
        }
        assert_eq!(book.len(), MAX_PEERS);
        assert!((0..10).all(|id| has(&book, id)));
        // A newcomer still gets in, in place of the flood's oldest.
        let now = start + Duration::from_secs(5);
        book.heard(status(9_999, 1), from_host(250), now, QUIET);
        assert!(has(&book, 9_999));
        assert_eq!(book.len(), MAX_PEERS);
    }

    #[test]
    fn a_failed_address_is_passed_over_whatever_node_id_names_it() {
        let now = Instant::now();
        let mut book = PeerBook::new();
        book.heard(status(1, 10), FROM, now, QUIET);
        let server = book.best_ahead(&0u128, now).unwrap().block_server;
        book.failed(server, now + QUIET);
        // Fresh node ids naming the same block server: still passed over.
        for id in [1 + 65_536, 1 + 2 * 65_536] {
            book.heard(status(id, 10 + id as u128), FROM, now, QUIET);
            assert_eq!(SocketAddr::new(FROM.ip(), 2601), server);
        }
        assert!(book.best_ahead(&0u128, now).is_none());
        assert!(matches!(book.pick(&0u128, now), Pick::Nothing));
        assert!(
            book.best_ahead(&0u128, now + QUIET).is_some(),
            "until the back-off ends"
        );
    }

    #[test]
    fn dials_of_addresses_not_proven_are_rate_limited_in_all_and_per_host() {
        let start = Instant::now();
        let mut book = PeerBook::new();
        // 100 made-up peers on 100 hosts, each announcing more work than us.
        for id in 0..100u64 {
            book.heard(status(id, 10), from_host(id as u8 + 1), start, QUIET);
        }
        let mut dials = 0;
        let mut now = start;
        while now < start + Duration::from_secs(10) {
            while let Some(id) = dial(&mut book, 0, now) {
                dials += 1;
                let server = server_of(&book, id);
                book.failed(server, now + QUIET);
            }
            now += Duration::from_millis(10);
        }
        // A burst, then the rate: 4 + 2 a second over (just under) 10 s.
        let most = (DIAL_BURST + DIAL_RATE * 10.0) as usize;
        assert!((most - 1..=most).contains(&dials), "{dials} dials");
        // One host with many ports: once a second.
        let mut book = PeerBook::new();
        for id in 0..10u64 {
            book.heard(status(id, 10), FROM, start, QUIET);
        }
        assert!(dial(&mut book, 0, start).is_some());
        assert!(matches!(book.pick(&0u128, start), Pick::Wait(t) if t == start + IP_DIAL_INTERVAL));
        assert!(dial(&mut book, 0, start + IP_DIAL_INTERVAL).is_some());
    }

    #[test]
    fn a_proven_address_comes_first_and_freely_then_hosts_that_failed_least() {
        let now = Instant::now();
        let mut book = PeerBook::new();
        book.heard(status(1, 100), from_host(1), now, QUIET);
        book.heard(status(2, 100), from_host(1), now, QUIET);
        book.heard(status(3, 50), from_host(2), now, QUIET);
        book.heard(status(4, 20), from_host(3), now, QUIET);
        let host1 = server_of(&book, 1);
        book.failed(host1, now + QUIET);
        // Host 1 failed once: host 2 comes before it, though node 2 announces more work.
        assert_eq!(dial(&mut book, 0, now), Some(3));
        // Node 4 served us before: it comes first, and as often as needed.
        let host3 = server_of(&book, 4);
        book.served(host3, now);
        for _ in 0..10 {
            assert_eq!(dial(&mut book, 0, now), Some(4));
        }
        // Once it fails, it is no longer proven.
        book.failed(host3, now + QUIET);
        assert_ne!(dial(&mut book, 0, now), Some(4));
    }
}
