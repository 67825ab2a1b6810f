//! What a running node tells its user, typed: the miner binary prints each [`Event`] as the
//! line its `Display` gives, a test or another program may match on the fields instead.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use mvbc_node::core::Note;
use mvbc_node::links::Down;
use mvbc_protocol::Hash256;
use mvbc_protocol::chain::StaleCount;

use crate::bench::format_rate;
use crate::engine::EngineError;

/// Something the node did or found, for its user.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Its sockets are bound.
    Listening {
        /// UDP port for payments.
        transaction_port: u16,
        /// UDP port for statuses.
        status_port: u16,
        /// TCP port of the block server.
        block_port: u16,
        /// Where statuses are broadcast; `None`: not broadcasting.
        broadcast_to: Option<SocketAddrV4>,
    },
    /// The API and explorer listen here.
    ApiListening(SocketAddr),
    /// The API could not listen where the configuration said; the node goes on without it.
    ApiUnavailable {
        /// Where it was to listen.
        at: SocketAddr,
        /// Why not.
        error: std::io::Error,
    },
    /// The pool port listens here: workers connect with `mvbc-miner --pool ADDRESS`.
    PoolListening {
        /// Where.
        at: SocketAddr,
        /// Whether workers must present a token.
        token: bool,
    },
    /// The pool port could not listen where the configuration said; the node goes on without
    /// it.
    PoolUnavailable {
        /// Where it was to listen.
        at: SocketAddr,
        /// Why not.
        error: std::io::Error,
    },
    /// A named peer's name does not resolve (yet): it is tried again every 30 s.
    PeerUnresolved {
        /// The name.
        name: String,
        /// Why not.
        error: std::io::Error,
    },
    /// A named peer's name resolved, late.
    PeerResolved {
        /// The name.
        name: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// `peers.dat` could not be read: the node starts without saved peers.
    PeersFileUnread {
        /// The file.
        path: PathBuf,
        /// Why not.
        error: std::io::Error,
    },
    /// The peers the node keeps links to from the start.
    Peers {
        /// Named in the configuration.
        named: Vec<SocketAddr>,
        /// Saved in `peers.dat`.
        saved: usize,
    },
    /// What the node core said.
    Note(Note),
    /// The engine failed; the node stops mining until the chain moves.
    MiningFailed(EngineError),
    /// The periodic report.
    Report(Report),
    /// Failed downloads not shown one by one in the last report interval.
    DownloadsNotShown {
        /// How many.
        count: u64,
        /// The interval, in seconds.
        seconds: u64,
    },
    /// Block lines held back in the last second: at most [`super::BLOCK_LINES_PER_SECOND`]
    /// are shown one by one.
    BlocksNotShown {
        /// Blocks this node found.
        mined: u64,
        /// Blocks adopted from peers (batches).
        adopted: u64,
        /// The height then.
        height: u64,
        /// The tip then.
        tip: Hash256,
    },
    /// The node stopped cleanly.
    Stopped {
        /// Its height.
        height: u64,
        /// Its tip.
        tip: Hash256,
        /// Where the chain is stored.
        store: PathBuf,
        /// Malformed messages dropped since it started.
        dropped: u64,
        /// Payments refused since it started.
        refused: u64,
    },
}

/// The periodic report: where the chain is and what the node does.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Its height.
    pub height: u64,
    /// Its tip.
    pub tip: Hash256,
    /// Whether a search runs now.
    pub mining: bool,
    /// Hashes a second of mining time over each of [`super::RATE_WINDOWS`], all devices
    /// together; `None` for a window with too little mining in it.
    pub rates: [Option<f64>; 3],
    /// Each device's name and rate over the first window, when mining on several.
    pub devices: Vec<(String, Option<f64>)>,
    /// Blocks this node found since it started.
    pub blocks_found: u64,
    /// Payments pending.
    pub pending: usize,
    /// Peers heard lately.
    pub peers: usize,
    /// Stale blocks among the last heights.
    pub stale: StaleCount,
    /// Malformed messages dropped since it started.
    pub dropped: u64,
    /// Payments refused since it started.
    pub refused: u64,
    /// Messages from nodes of other networks ignored since it started.
    pub other_network: u64,
    /// Downloading a chain far ahead, not mining.
    pub catching_up: bool,
    /// With a pool port: its connections, the rate its workers' shares prove over a minute,
    /// and the blocks they found since the node started.
    pub pool: Option<PoolReport>,
}

/// The pool port's part of the periodic report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolReport {
    /// Workers connected now.
    pub connections: usize,
    /// Hashes a second all workers' accepted shares prove, over the last minute.
    pub rate: f64,
    /// Blocks they found since the node started.
    pub blocks: u64,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Listening {
                transaction_port,
                status_port,
                block_port,
                broadcast_to,
            } => {
                write!(
                    f,
                    "Listening: payments on UDP {transaction_port}, status on UDP {status_port}, \
                     blocks on TCP {block_port}; "
                )?;
                match broadcast_to {
                    Some(to) => write!(f, "broadcasting to {to}"),
                    None => write!(f, "not broadcasting (broadcast_address is \"\")"),
                }
            }
            Event::ApiListening(at) => {
                write!(
                    f,
                    "API: explorer at http://{at}/, JSON under http://{at}/api/v1/"
                )?;
                if !at.ip().is_loopback() {
                    write!(
                        f,
                        "\nWarning: the API listens on {}, not only on this host: whoever reaches \
                         it can read the chain and this node's state (nothing can be changed \
                         through it)",
                        at.ip()
                    )?;
                }
                Ok(())
            }
            Event::PoolListening { at, token } => {
                write!(
                    f,
                    "Pool: workers connect with `mvbc-miner --pool {at} --address ADDRESS`{}",
                    if *token { " and the pool token" } else { "" }
                )?;
                if !at.ip().is_loopback() {
                    write!(
                        f,
                        "\nWarning: the pool port listens on {}, not only on this host: whoever \
                         reaches it can mine on this node{}",
                        at.ip(),
                        if *token {
                            " if they know the token"
                        } else {
                            " (set pool_token to let in only your own workers)"
                        }
                    )?;
                }
                Ok(())
            }
            Event::PoolUnavailable { at, error } => {
                write!(
                    f,
                    "Pool: cannot listen on {at} ({error}); running without the pool port"
                )
            }
            Event::ApiUnavailable { at, error } => {
                if error.kind() == std::io::ErrorKind::AddrInUse {
                    write!(
                        f,
                        "API: {at} is taken (another miner on this host? --api-listen \
                         127.0.0.1:0 takes any free port); mining on without the API"
                    )
                } else {
                    write!(
                        f,
                        "API: {at} cannot be used: {error}; mining on without the API"
                    )
                }
            }
            Event::PeerUnresolved { name, error } => {
                write!(
                    f,
                    "Peer {name} does not resolve ({error}): trying again every 30 s"
                )
            }
            Event::PeerResolved { name, addr } => write!(f, "Peer {name} resolves to {addr} now"),
            Event::PeersFileUnread { path, error } => write!(
                f,
                "{} not read ({error}): starting without saved peers",
                path.display()
            ),
            Event::Peers { named, saved } => {
                write!(f, "Peers: {} named", named.len())?;
                if !named.is_empty() {
                    let list: Vec<String> = named.iter().map(ToString::to_string).collect();
                    write!(f, " ({})", list.join(", "))?;
                }
                write!(f, ", {saved} saved in {}", mvbc_node::peerfile::PEERS_FILE)
            }
            Event::Note(note) => f.write_str(&note_line(note)),
            Event::MiningFailed(e) => write!(f, "Mining failed: {e}"),
            Event::Report(r) => r.fmt(f),
            Event::BlocksNotShown {
                mined,
                adopted,
                height,
                tip,
            } => {
                let mut what = Vec::new();
                if *mined > 0 {
                    what.push(format!("{} more mined", thousands(*mined)));
                }
                if *adopted > 0 {
                    what.push(format!("{} more adopted", thousands(*adopted)));
                }
                write!(
                    f,
                    "Blocks: {} in the last second, not shown one by one; height {}, tip {tip}",
                    what.join(" and "),
                    thousands(*height)
                )
            }
            Event::DownloadsNotShown { count, seconds } => write!(
                f,
                "Downloads failed: {count} more in the last {seconds} s, not shown one by one"
            ),
            Event::Stopped {
                height,
                tip,
                store,
                dropped,
                refused,
            } => write!(
                f,
                "Shutting down: height {height}, tip {tip}, chain stored in {}; {dropped} \
                 malformed messages dropped, {refused} payments refused",
                store.display()
            ),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |rate: Option<f64>| rate.map_or_else(|| "-".to_string(), format_rate);
        let rates = format!(
            "{} {} {} (10 s, 60 s, 15 min of mining)",
            shown(self.rates[0]),
            shown(self.rates[1]),
            shown(self.rates[2])
        );
        let mut state = if self.mining {
            format!("mining at {rates}")
        } else if self.catching_up {
            "downloading a chain far ahead, not mining".into()
        } else {
            "idle, waiting for payments".into()
        };
        if !self.mining && self.rates.iter().any(Option::is_some) {
            state += &format!(", mined at {rates}");
        }
        if !self.devices.is_empty() {
            let each: Vec<String> = self
                .devices
                .iter()
                .map(|(name, rate)| format!("{name} {}", shown(*rate)))
                .collect();
            state += &format!(" [{}]", each.join(", "));
        }
        if let Some(pool) = &self.pool {
            state += &format!(
                ", pool: {} worker{} at {} (1 min, from shares), {} block{} found by workers",
                pool.connections,
                if pool.connections == 1 { "" } else { "s" },
                format_rate(pool.rate),
                pool.blocks,
                if pool.blocks == 1 { "" } else { "s" }
            );
        }
        let found = match self.blocks_found {
            1 => "1 block found".to_string(),
            n => format!("{n} blocks found"),
        };
        let peers = match self.peers {
            1 => "1 peer".to_string(),
            n => format!("{n} peers"),
        };
        let stale = &self.stale;
        write!(
            f,
            "Status: height {}, tip {}, {state}, {found}, {} pending, {peers}, {} stale of the \
             last {} blocks ({:.1}%), {} malformed messages dropped, {} payments refused",
            self.height,
            self.tip,
            self.pending,
            stale.stale,
            stale.stale + stale.best,
            100.0 * stale.rate(),
            self.dropped,
            self.refused,
        )?;
        if self.other_network > 0 {
            write!(
                f,
                ", {} messages of other networks ignored",
                self.other_network
            )?;
        }
        if let Some(hint) = stale.hint() {
            write!(f, "\nHint: {hint}")?;
        }
        Ok(())
    }
}

/// What the user reads for a note of the core.
fn note_line(note: &Note) -> String {
    match note {
        Note::PaymentPooled {
            id,
            amount,
            from,
            to,
            pending,
        } => format!("Payment pooled: {id}, {amount} from {from} to {to} ({pending} pending)"),
        Note::PaymentEvicted(old) => format!(
            "Payment evicted: {old}, the oldest, to make room (the pool is full); \
             its wallet's re-broadcast brings it back"
        ),
        Note::PaymentDropped(id) => {
            format!("Payment dropped: {id} is no longer affordable or is already confirmed")
        }
        Note::Reorg {
            depth,
            left,
            at,
            back,
        } => format!(
            "Reorg: depth {depth}, left {left} at height {at}, {back} payments back in the pool"
        ),
        Note::BlockMined {
            height,
            hash,
            transactions,
            hashes,
            took,
        } => {
            let secs = took.as_secs_f64();
            format!(
                "Block mined: height {height}, hash {hash}, {transactions} transaction{}, {hashes} hashes in {secs:.2} s ({})",
                if *transactions == 1 { "" } else { "s" },
                format_rate(*hashes as f64 / secs.max(1e-9))
            )
        }
        Note::WorkerBlock {
            height,
            hash,
            transactions,
            worker,
        } => format!(
            "Block found by worker {worker}: height {height}, hash {hash}, {transactions} transaction{}",
            if *transactions == 1 { "" } else { "s" }
        ),
        Note::MinedTooLate { height, hash } => {
            format!("Block mined at height {height} ({hash}) but the chain moved on")
        }
        Note::BlockAdopted {
            first,
            height,
            tip,
            peer,
            since_heard,
        } => {
            let blocks = if first == height {
                format!("height {height}")
            } else {
                format!("heights {first}..={height}")
            };
            let since = since_heard
                .map(|t| format!(", {} ms after it was announced", t.as_millis()))
                .unwrap_or_default();
            format!("Block adopted: {blocks}, tip {tip}, from {peer}{since}")
        }
        Note::DownloadFailed {
            peer,
            error,
            backoff,
        } => format!("Download from {peer} failed: {error}; passing it over for {backoff:.0?}"),
        Note::CatchingUp {
            peer,
            height,
            target,
        } => format!(
            "Downloading: {peer} announces height {}, {} blocks beyond ours; not mining until \
             they are in",
            thousands(*target),
            thousands(target.saturating_sub(*height))
        ),
        Note::Downloading(p) => {
            let mut line = format!(
                "Downloading: {}/{} ({:.0}%)",
                thousands(p.height),
                thousands(p.target),
                100.0 * p.fraction()
            );
            if let Some(rate) = p.blocks_per_second {
                line += &format!(", {} blocks/s", thousands(rate.round() as u64));
            }
            if let Some(left) = p.left {
                line += &format!(", about {} left", rough_duration(left));
            }
            line + &format!(", from {}", p.peer)
        }
        Note::CaughtUp {
            height,
            blocks,
            took,
            done,
        } => {
            let then = if *done {
                "mining on"
            } else {
                "short of what was announced; trying others"
            };
            format!(
                "Downloaded {} blocks in {:.1} s: height {}; {then}",
                thousands(*blocks),
                took.as_secs_f64(),
                thousands(*height)
            )
        }
        Note::OtherNetwork {
            from,
            network,
            ours,
        } => format!(
            "Ignoring {from} and every node of network {network}: other consensus settings \
             (difficulty, block_size or block_reward) than this node's network {ours}; \
             their messages are counted, not shown"
        ),
        Note::LinkUp {
            peer,
            outbound,
            links,
        } => format!(
            "Link up: {peer} ({}), {links} link{}",
            if *outbound { "dialled" } else { "inbound" },
            if *links == 1 { "" } else { "s" }
        ),
        Note::LinkDown { peer, why, links } => {
            let why = match why {
                Down::Lost => "closed".to_string(),
                Down::Quiet => "quiet too long".to_string(),
                Down::Replaced => {
                    "replaced by a newcomer (it brought nothing new for a minute)".to_string()
                }
                Down::Invalid(e) => {
                    format!("sent invalid data ({e}); its address is refused for a while")
                }
            };
            format!(
                "Link down: {peer}, {why}; {links} link{}",
                if *links == 1 { "" } else { "s" }
            )
        }
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration as a person says it: `40 s`, `2 min`, `3 h`.
fn rough_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 90 {
        format!("{s} s")
    } else if s < 90 * 60 {
        format!("{} min", (s + 30) / 60)
    } else {
        format!("{} h", (s + 1800) / 3600)
    }
}

#[cfg(test)]
mod numbers {
    use super::*;

    #[test]
    fn counts_and_durations_read_as_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(6_500), "6,500");
        assert_eq!(thousands(279_000), "279,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rough_duration(Duration::from_secs(40)), "40 s");
        assert_eq!(rough_duration(Duration::from_secs(130)), "2 min");
        assert_eq!(rough_duration(Duration::from_secs(3 * 3600)), "3 h");
    }

    /// Issue 22: the status line gives the rate as xmrig does, over mining time, with blocks
    /// found, and says when it is idle or downloading.
    #[test]
    fn the_status_line_gives_three_windows_of_mining_time_and_blocks_found() {
        let mut report = Report {
            height: 7,
            tip: Hash256::ZERO,
            mining: true,
            rates: [Some(150.5e6), Some(150.2e6), None],
            devices: vec![
                ("cpu sha-ni x3".into(), Some(50.0e6)),
                ("gpu H100".into(), None),
            ],
            blocks_found: 3,
            pending: 0,
            peers: 1,
            stale: Default::default(),
            dropped: 0,
            refused: 0,
            other_network: 0,
            catching_up: false,
            pool: None,
        };
        let line = report.to_string();
        assert!(
            line.contains("mining at 150.5 MH/s 150.2 MH/s - (10 s, 60 s, 15 min of mining)"),
            "{line}"
        );
        assert!(
            line.contains("[cpu sha-ni x3 50.0 MH/s, gpu H100 -]"),
            "{line}"
        );
        assert!(
            line.contains("3 blocks found, 0 pending, 1 peer,"),
            "{line}"
        );
        report.pool = Some(PoolReport {
            connections: 2,
            rate: 90.0e6,
            blocks: 1,
        });
        let line = report.to_string();
        assert!(
            line.contains(", pool: 2 workers at 90.0 MH/s (1 min, from shares), 1 block found by workers, 3 blocks found"),
            "{line}"
        );
        report.pool = None;
        report.mining = false;
        report.devices.clear();
        let line = report.to_string();
        assert!(
            line.contains("idle, waiting for payments, mined at 150.5 MH/s"),
            "{line}"
        );
        report.catching_up = true;
        report.rates = [None; 3];
        report.other_network = 5;
        let line = report.to_string();
        assert!(
            line.contains("downloading a chain far ahead, not mining, 3 blocks"),
            "{line}"
        );
        assert!(
            line.contains("5 messages of other networks ignored"),
            "{line}"
        );
    }
}
