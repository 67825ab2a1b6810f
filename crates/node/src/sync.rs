//! Sync: whom to download from, and what a finished download says about that peer. One
//! [`SyncManager`] serves both roles; the values that differ are named in [`Role`]. It does no
//! I/O and reads no clock: the caller runs the download and passes the time in.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mvbc_protocol::wire::Status;
use mvbc_protocol::{BlockHeader, Chain, Hash256};

use crate::apply::ApplyError;
use crate::peers::{DOWNLOAD_SLACK, PeerBook, Pick, Want, Wanted};

/// The sync values that differ between a miner and a wallet, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    /// For log lines: "miner" or "wallet".
    pub name: &'static str,
    /// How long a peer whose download failed is passed over.
    pub peer_backoff: Duration,
    /// Downloads at once, each from another peer: a peer that stalls holds one of them, not
    /// the node's sync.
    pub parallel: usize,
}

impl Role {
    /// A miner runs for days and hears every peer every few seconds: a peer that failed it
    /// may wait half a minute, so a liar costs it one download per 30 s.
    pub const MINER: Role = Role {
        name: "miner",
        peer_backoff: Duration::from_secs(30),
        parallel: 3,
    };
    /// A wallet syncs for seconds (`sync --once`) and must try the next miner soon.
    pub const WALLET: Role = Role {
        name: "wallet",
        peer_backoff: Duration::from_secs(2),
        parallel: 1,
    };
}

/// A transport's error, kept for its message: what the node decides never depends on it.
pub type Detail = Box<dyn std::error::Error + Send + Sync>;

/// Why a download from a peer failed, in the terms the peer is judged by; the socket crate
/// turns its own errors into these and keeps its details in [`Detail`]s.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No connection to its block server.
    #[error("cannot connect to {peer}: {source}")]
    Connect {
        /// The block server.
        peer: SocketAddr,
        /// Why: `ConnectionRefused` says nothing listens there.
        source: std::io::Error,
    },
    /// The connection broke, timed out, or carried bytes that did not decode: it proves
    /// nothing (the peer may only be busy, or the path lossy).
    #[error("{0}")]
    Transport(Detail),
    /// The peer broke the protocol: a reply of the wrong kind or size, blocks that do not
    /// follow what was asked, a header that breaks a rule a header alone can be held to.
    #[error("{0}")]
    BadReply(Detail),
    /// The branch's headers carry less work than the peer announced: it lied, or lost blocks,
    /// and not one block body was fetched.
    #[error("its headers carry {work} work, short of the {announced} it announced")]
    LightBranch {
        /// The work of the chain its headers describe.
        work: u128,
        /// The work it announced.
        announced: u128,
    },
    /// The server's own status announces less work than the status that sent us to it: that
    /// status was not its own (anyone may send one naming its address and node id).
    #[error("its own status announces {} work, not the {announced} a status claimed for it", .told.chain_work)]
    Disowned {
        /// What the server says of itself.
        told: Status,
        /// The work the status we heard claimed.
        announced: u128,
    },
    /// A block it sent could not be added: refused by the rules (the peer's fault), or not
    /// stored (ours).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// We gave up waiting (Ctrl-C, a deadline): nobody's fault.
    #[error("gave up waiting: {0}")]
    Cancelled(Detail),
    /// It stopped sending before our chain had the work it announced: it lied, or lost blocks.
    #[error("{blocks} blocks served, short of the work it announced")]
    ShortOfWork {
        /// New blocks it did serve.
        blocks: u64,
    },
}

impl DownloadError {
    /// The error adding a delivered block, if that is what ended the download.
    pub fn apply_error(&self) -> Option<&ApplyError> {
        match self {
            DownloadError::Apply(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the claim that led to this download is found false: the peer answered with a
    /// branch short of the work it announced, a bad header or block, or a reply of the wrong
    /// shape; or nothing listens at the block server the status named (a status under someone
    /// else's node id names any port). A connection that timed out proves nothing: the peer
    /// may only be busy.
    pub fn is_lie(&self) -> bool {
        match self {
            DownloadError::ShortOfWork { .. }
            | DownloadError::LightBranch { .. }
            | DownloadError::BadReply(_) => true,
            DownloadError::Connect { source, .. } => {
                source.kind() == std::io::ErrorKind::ConnectionRefused
            }
            DownloadError::Apply(e) => matches!(e, ApplyError::Refused(_)),
            DownloadError::Transport(_)
            | DownloadError::Disowned { .. }
            | DownloadError::Cancelled(_) => false,
        }
    }

    /// Whether our own store failed to take a block (the caller must stop).
    pub fn store_failed(&self) -> bool {
        matches!(self.apply_error(), Some(ApplyError::Store { .. }))
    }

    /// Whether the peer is to blame (and should be passed over): not when we stopped the
    /// download (Ctrl-C, a deadline), nor when our own store failed.
    pub fn blames_peer(&self) -> bool {
        !self.store_failed() && !matches!(self, DownloadError::Cancelled(_))
    }
}

/// Judges a finished download that served `blocks` new blocks, by what our chain still makes
/// of the status that asked for it: short of the work announced blames the peer. A tie it did
/// not bring does not: the peer may have moved to our tip in the meantime, as ties settle.
pub fn judge(blocks: u64, still: Want) -> Result<u64, DownloadError> {
    match still {
        Want::More => Err(DownloadError::ShortOfWork { blocks }),
        Want::Tie | Want::No => Ok(blocks),
    }
}

/// How long a block server's own word caps what statuses heard in its name may claim, after
/// one claimed more than it says of itself (the role's back-off, if shorter).
pub const DISOWNED_FOR: Duration = Duration::from_secs(5);

/// Equal-work tips looked at and remembered, at most: a peer is not asked twice for the same
/// tie, and a flood of made-up tips cannot grow memory.
pub const MAX_TRIED_TIES: usize = 1024;

/// A download the caller should run: from `peer`, up to `limit` new blocks after the locator
/// of its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Download {
    /// Its block server.
    pub peer: SocketAddr,
    /// The status heard in its name that asked for this download.
    pub announced: Status,
    /// Whether it announced as much work as ours, on another tip (a tie to settle).
    pub tie: bool,
}

impl Download {
    /// At most this many new blocks: the peer may mine more while we download, but one that
    /// keeps sending is cut off.
    pub fn limit(&self) -> u64 {
        self.announced.height.saturating_add(DOWNLOAD_SLACK)
    }
}

/// Where our chain may fork from a peer's, taken from our chain when a download is asked for:
/// its locator, and our header and chain work at each hash of it. A download judges the
/// peer's branch against this snapshot, never against the chain that it is changing meanwhile,
/// so the miner and the wallet download the same way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForkPoints {
    locator: Vec<Hash256>,
    ours: HashMap<Hash256, (BlockHeader, u128)>,
}

impl ForkPoints {
    /// The fork points of `chain` as it is now.
    pub fn of(chain: &Chain) -> ForkPoints {
        let locator = chain.locator();
        let ours = locator
            .iter()
            .filter_map(|h| Some((*h, chain.header_and_work(h)?)))
            .collect();
        ForkPoints { locator, ours }
    }

    /// The locator: hashes of our best chain, densest near the tip.
    pub fn locator(&self) -> &[Hash256] {
        &self.locator
    }

    /// Our header and chain work at `hash`, if it is one of the locator's.
    pub fn ours(&self, hash: &Hash256) -> Option<(BlockHeader, u128)> {
        self.ours.get(hash).copied()
    }
}

/// What a finished download came to.
#[derive(Debug)]
pub enum Finished {
    /// Our chain has the work the peer announced; it served this many new blocks.
    Served(u64),
    /// The peer failed us and is passed over until the time given.
    Failed(DownloadError, Instant),
    /// It ended for a reason that is not the peer's (a cancel, our own store).
    Ended(DownloadError),
}

/// The peers heard and the downloads running (at most [`Role::parallel`], each from another
/// peer), for either role.
#[derive(Debug)]
pub struct SyncManager {
    role: Role,
    /// How long a peer not heard from stays eligible.
    quiet: Duration,
    peers: PeerBook,
    running: Vec<Download>,
    retry_at: Option<Instant>,
    /// Equal-work tips already downloaded or asked for.
    tried_ties: HashSet<Hash256>,
}

/// Our chain, less the ties already tried.
struct Untried<'a, W> {
    ours: &'a W,
    tried: &'a HashSet<Hash256>,
}

impl<W: Wanted> Wanted for Untried<'_, W> {
    fn want(&self, status: &Status) -> Want {
        match self.ours.want(status) {
            Want::Tie if self.tried.contains(&status.tip) => Want::No,
            want => want,
        }
    }
}

impl SyncManager {
    /// No peers yet; peers not heard for `quiet` are forgotten when room is needed.
    pub fn new(role: Role, quiet: Duration) -> SyncManager {
        SyncManager {
            role,
            quiet,
            peers: PeerBook::new(),
            running: Vec::new(),
            retry_at: None,
            tried_ties: HashSet::new(),
        }
    }

    fn untried<'a, W: Wanted>(&'a self, ours: &'a W) -> Untried<'a, W> {
        Untried {
            ours,
            tried: &self.tried_ties,
        }
    }

    /// The peers heard so far.
    pub fn peers(&self) -> &PeerBook {
        &self.peers
    }

    /// Forgets peers not heard for the quiet time.
    pub fn forget_quiet(&mut self, now: Instant) {
        self.peers.forget_quiet(now, self.quiet);
    }

    /// A status from `from` arrived at `now`.
    pub fn heard(&mut self, status: Status, from: SocketAddr, now: Instant) {
        self.peers.heard(status, from, now, self.quiet);
    }

    /// Whether some peer not passed over announced a chain `ours` wants: more work, or a tie
    /// not looked at yet.
    pub fn behind(&self, ours: &impl Wanted, now: Instant) -> bool {
        self.peers.best_ahead(&self.untried(ours), now).is_some()
    }

    /// The downloads running.
    pub fn running(&self) -> &[Download] {
        &self.running
    }

    /// When to ask [`SyncManager::next`] again: a peer is ahead, but the dial budget said
    /// not yet.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// A download to start now, if fewer than the role's limit run and a peer whose chain
    /// `ours` wants, that none of them uses, may be dialled. The caller runs it and reports with
    /// [`SyncManager::finished`]; call again for more.
    pub fn next(&mut self, ours: &impl Wanted, now: Instant) -> Option<Download> {
        if self.running.len() >= self.role.parallel {
            return None;
        }
        self.retry_at = None;
        let busy: Vec<SocketAddr> = self.running.iter().map(|d| d.peer).collect();
        let untried = Untried {
            ours,
            tried: &self.tried_ties,
        };
        match self.peers.pick_except(&untried, now, &busy) {
            Pick::Dial(peer) => {
                let tie = ours.want(&peer.status) == Want::Tie;
                let download = Download {
                    peer: peer.block_server,
                    announced: peer.status,
                    tie,
                };
                if tie {
                    if self.tried_ties.len() >= MAX_TRIED_TIES {
                        self.tried_ties.clear();
                    }
                    self.tried_ties.insert(download.announced.tip);
                }
                self.running.push(download);
                Some(download)
            }
            Pick::Wait(at) => {
                self.retry_at = Some(at);
                None
            }
            Pick::Nothing => None,
        }
    }

    /// Forgets the download from `peer` without judging anyone (its runner is gone).
    pub fn abandon(&mut self, peer: SocketAddr) {
        self.running.retain(|d| d.peer != peer);
    }

    /// The download from `peer` ended with `result` (new blocks delivered, or why it
    /// stopped); our chain is now `ours`. Judges the peer: served, or passed over for the
    /// role's back-off unless it was not its fault. A download that ended short of the work
    /// announced while others still run is not held against its peer: they may have brought
    /// its blocks first, and the rest of its chain may still come.
    pub fn finished(
        &mut self,
        peer: SocketAddr,
        result: Result<u64, DownloadError>,
        ours: &impl Wanted,
        now: Instant,
    ) -> Option<Finished> {
        let i = self.running.iter().position(|d| d.peer == peer)?;
        let download = self.running.remove(i);
        let result = match result {
            // The tie was settled before we asked: the peer took our tip (or one that beats
            // both) and has nothing after our locator. Not a lie.
            Err(DownloadError::LightBranch { .. }) if download.tie => Ok(0),
            // Someone else's claim in its name: believe what it says of itself, for a while.
            Err(DownloadError::Disowned { told, .. }) => {
                let until = now + DISOWNED_FOR.min(self.role.peer_backoff);
                self.peers.disowned(download.peer, told, until);
                return Some(Finished::Ended(DownloadError::Disowned {
                    told,
                    announced: download.announced.chain_work,
                }));
            }
            result => result,
        };
        if download.tie && result.is_err() {
            // Not looked at after all: another peer announcing that tip may be asked.
            self.tried_ties.remove(&download.announced.tip);
        }
        let judged = result.and_then(|n| judge(n, ours.want(&download.announced)));
        let others_running = !self.running.is_empty();
        Some(match judged {
            Ok(n) => {
                if n > 0 {
                    self.peers.served(download.peer, now);
                }
                Finished::Served(n)
            }
            Err(e) if !e.blames_peer() => Finished::Ended(e),
            Err(e @ DownloadError::ShortOfWork { .. }) if others_running => Finished::Ended(e),
            Err(e) => {
                let until = now + self.role.peer_backoff;
                self.peers.failed(download.peer, until);
                Finished::Failed(e, until)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_short_of_the_announced_work_blames_the_peer() {
        assert_eq!(judge(3, Want::No).unwrap(), 3);
        assert_eq!(
            judge(0, Want::Tie).unwrap(),
            0,
            "a tie not brought is no lie"
        );
        let err = judge(2, Want::More).unwrap_err();
        assert!(err.blames_peer());
        assert_eq!(
            err.to_string(),
            "2 blocks served, short of the work it announced"
        );
    }

    #[test]
    fn the_roles_differ_only_where_named() {
        assert!(Role::MINER.peer_backoff > Role::WALLET.peer_backoff);
    }

    fn status(node_id: u64, height: u64, work: u128) -> Status {
        Status {
            network: mvbc_protocol::NetworkId::default(),
            node_id,
            height,
            tip: mvbc_protocol::Hash256([height as u8; 32]),
            chain_work: work,
            block_server_port: 2607,
        }
    }

    fn host(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 2606))
    }

    #[test]
    fn one_download_per_peer_ahead() {
        let t0 = Instant::now();
        let mut sync = SyncManager::new(Role::MINER, Duration::from_secs(16));
        assert_eq!(sync.next(&10u128, t0), None, "nobody heard");
        sync.heard(status(1, 5, 10), host(1), t0);
        assert!(!sync.behind(&10u128, t0), "equal work is not ahead");
        sync.heard(status(2, 7, 14), host(2), t0);
        assert!(sync.behind(&10u128, t0));
        let d = sync.next(&10u128, t0).expect("a peer ahead");
        assert_eq!((d.announced.node_id, d.peer.port()), (2, 2607));
        assert_eq!(d.limit(), 7 + DOWNLOAD_SLACK);
        assert_eq!(sync.next(&10u128, t0), None, "one download per peer");
        assert!(matches!(
            sync.finished(d.peer, Ok(4), &14u128, t0),
            Some(Finished::Served(4))
        ));
        assert!(sync.running().is_empty());
        let nothing = sync.finished(d.peer, Ok(0), &14u128, t0);
        assert!(nothing.is_none(), "nothing was running");
    }

    #[test]
    fn a_peer_short_of_its_word_is_passed_over_for_the_role_back_off() {
        for role in [Role::MINER, Role::WALLET] {
            let t0 = Instant::now();
            let mut sync = SyncManager::new(role, Duration::from_secs(600));
            sync.heard(status(2, 7, 14), host(2), t0);
            let d = sync.next(&10u128, t0).unwrap();
            let Some(Finished::Failed(e, until)) = sync.finished(d.peer, Ok(1), &11u128, t0) else {
                panic!("{}: the liar is not blamed", role.name);
            };
            assert!(matches!(e, DownloadError::ShortOfWork { blocks: 1 }));
            assert_eq!(until, t0 + role.peer_backoff);
            assert!(
                !sync.behind(&11u128, t0),
                "{}: still counted as ahead",
                role.name
            );
            let later = until + Duration::from_millis(1);
            assert!(sync.behind(&11u128, later), "{}: never forgiven", role.name);
        }
    }

    #[test]
    fn a_cancelled_download_does_not_blame_the_peer() {
        let t0 = Instant::now();
        let mut sync = SyncManager::new(Role::WALLET, Duration::from_secs(600));
        sync.heard(status(2, 7, 14), host(2), t0);
        let d = sync.next(&10u128, t0).unwrap();
        let cancelled = DownloadError::Cancelled("Ctrl-C".into());
        assert!(matches!(
            sync.finished(d.peer, Err(cancelled), &10u128, t0),
            Some(Finished::Ended(_))
        ));
        assert!(sync.behind(&10u128, t0), "still a candidate");
    }

    #[test]
    fn a_stalled_download_holds_one_slot_and_the_next_peer_is_dialled() {
        let t0 = Instant::now();
        let mut sync = SyncManager::new(Role::MINER, Duration::from_secs(600));
        // The liar announces the most work and is dialled first...
        sync.heard(status(9, 1_000, 1 << 40), host(9), t0);
        let stalled = sync.next(&10u128, t0).unwrap();
        assert_eq!(stalled.announced.node_id, 9);
        // ...and while it stalls, an honest peer heard a second later is dialled beside it.
        let t1 = t0 + Duration::from_secs(1);
        sync.heard(status(2, 7, 14), host(2), t1);
        let honest = sync.next(&10u128, t1).expect("a second download");
        assert_eq!(honest.announced.node_id, 2);
        assert_eq!(sync.running().len(), 2);
        assert!(matches!(
            sync.finished(honest.peer, Ok(5), &14u128, t1),
            Some(Finished::Served(5))
        ));
        // The liar's short download, ended while nothing else runs, is held against it.
        let timed_out = sync.finished(stalled.peer, Ok(0), &14u128, t1 + Duration::from_secs(9));
        assert!(
            matches!(timed_out, Some(Finished::Failed(..))),
            "{timed_out:?}"
        );
    }

    #[test]
    fn short_of_work_while_another_download_runs_blames_nobody() {
        let t0 = Instant::now();
        let mut sync = SyncManager::new(Role::MINER, Duration::from_secs(600));
        sync.heard(status(2, 7, 14), host(2), t0);
        let a = sync.next(&10u128, t0).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        sync.heard(status(3, 7, 14), host(3), t1);
        let b = sync.next(&10u128, t1).unwrap();
        // `b` brought the blocks first; `a` ends with nothing new, the work not there yet.
        let ended = sync.finished(a.peer, Ok(0), &12u128, t1);
        assert!(matches!(ended, Some(Finished::Ended(_))), "{ended:?}");
        assert!(matches!(
            sync.finished(b.peer, Ok(4), &14u128, t1),
            Some(Finished::Served(4))
        ));
    }

    /// A chain that holds only its own tip, of this much work.
    struct Tip(u128, Hash256);

    impl Wanted for Tip {
        fn want(&self, status: &Status) -> Want {
            match status.chain_work.cmp(&self.0) {
                std::cmp::Ordering::Greater => Want::More,
                std::cmp::Ordering::Equal if status.tip != self.1 => Want::Tie,
                _ => Want::No,
            }
        }
    }

    #[test]
    fn an_equal_work_tip_is_fetched_once_and_not_bringing_it_blames_nobody() {
        let t0 = Instant::now();
        let mut sync = SyncManager::new(Role::MINER, Duration::from_secs(600));
        // Our tip is [10; 32]; peer 2 announces the same work on another tip.
        let ours = Tip(14, Hash256([10; 32]));
        sync.heard(status(2, 7, 14), host(2), t0);
        assert!(sync.behind(&ours, t0), "a tie is worth a look");
        let d = sync.next(&ours, t0).expect("a tie download");
        assert!(d.tie);
        assert_eq!(d.announced.tip, Hash256([7; 32]));
        // The peer moved to our tip meanwhile and brought nothing: no blame...
        let done = sync.finished(d.peer, Ok(0), &ours, t0);
        assert!(matches!(done, Some(Finished::Served(0))), "{done:?}");
        // ...and that tip is not asked for again, from this peer or another.
        sync.heard(status(3, 7, 14), host(3), t0);
        assert!(!sync.behind(&ours, t0));
        assert!(sync.next(&ours, t0 + Duration::from_secs(5)).is_none());
        // More work is still fetched as ever.
        sync.heard(status(3, 8, 16), host(3), t0);
        assert!(sync.next(&ours, t0 + Duration::from_secs(5)).is_some());
    }

    #[test]
    fn a_tie_settled_before_the_download_blames_nobody() {
        let t0 = Instant::now();
        let mut sync = SyncManager::new(Role::MINER, Duration::from_secs(600));
        let ours = Tip(14, Hash256([10; 32]));
        sync.heard(status(2, 7, 14), host(2), t0);
        let d = sync.next(&ours, t0).unwrap();
        // It moved to our tip: its headers after our locator carry no work.
        let light = DownloadError::LightBranch {
            work: 14,
            announced: 14,
        };
        let done = sync.finished(d.peer, Err(light), &ours, t0);
        assert!(matches!(done, Some(Finished::Served(0))), "{done:?}");
        // Its next chain with more work is fetched at once.
        let t1 = t0 + Duration::from_secs(2);
        sync.heard(status(2, 8, 16), host(2), t1);
        assert!(sync.next(&ours, t1).is_some(), "the peer was passed over");
    }

    #[test]
    fn a_claim_the_server_disowns_blames_nobody_and_is_not_believed_again_at_once() {
        let t0 = Instant::now();
        let mut sync = SyncManager::new(Role::WALLET, Duration::from_secs(600));
        // Someone claims work 1,000 in the name of host(2)'s server, which says 14 of itself.
        sync.heard(status(2, 100, 1_000), host(2), t0);
        let d = sync.next(&10u128, t0).unwrap();
        let disowned = DownloadError::Disowned {
            told: status(2, 7, 14),
            announced: 1_000,
        };
        let done = sync.finished(d.peer, Err(disowned), &10u128, t0);
        assert!(matches!(done, Some(Finished::Ended(_))), "{done:?}");
        // The forger goes on; its claims are not believed, the server's own word is fetched.
        sync.heard(status(2, 100, 1_000), host(2), t0);
        let t1 = t0 + Duration::from_secs(1);
        let again = sync
            .next(&10u128, t1)
            .expect("its own chain is still worth fetching");
        assert_eq!(again.announced.chain_work, 14);
    }

    #[test]
    fn a_tie_whose_download_failed_may_be_fetched_from_another_peer() {
        let t0 = Instant::now();
        let mut sync = SyncManager::new(Role::MINER, Duration::from_secs(600));
        let ours = Tip(14, Hash256([10; 32]));
        sync.heard(status(2, 7, 14), host(2), t0);
        let d = sync.next(&ours, t0).unwrap();
        let refused = DownloadError::Connect {
            peer: d.peer,
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let done = sync.finished(d.peer, Err(refused), &ours, t0);
        assert!(matches!(done, Some(Finished::Failed(..))), "{done:?}");
        sync.heard(status(3, 7, 14), host(3), t0);
        let again = sync
            .next(&ours, t0 + Duration::from_secs(2))
            .expect("asked again");
        assert_eq!(again.announced.node_id, 3);
    }

    #[test]
    fn a_wallet_downloads_one_at_a_time() {
        let t0 = Instant::now();
        let mut sync = SyncManager::new(Role::WALLET, Duration::from_secs(600));
        sync.heard(status(2, 7, 14), host(2), t0);
        sync.heard(status(3, 7, 14), host(3), t0);
        assert!(sync.next(&10u128, t0).is_some());
        assert!(sync.next(&10u128, t0 + Duration::from_secs(2)).is_none());
    }
}
#[cfg(test)]
mod lie_tests {
    use super::*;

    #[test]
    fn nothing_listening_at_the_named_block_server_is_a_lie_a_busy_one_is_not() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let source = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = DownloadError::Connect { peer, source };
        assert!(e.is_lie());
        let source = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let e = DownloadError::Connect { peer, source };
        assert!(!e.is_lie());
        assert!(DownloadError::ShortOfWork { blocks: 0 }.is_lie());
    }
}
