//! `mvbc-wallet sync`: follow the miners' best chain and re-broadcast pending payments. Miners
//! are heard by broadcast, and named ones (`peers`, `--peer`) are asked over TCP.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mvbc_net::{self as net, BlockClient, Broadcaster, Cancel, FetchError, Progress};
use mvbc_node::apply;
use mvbc_node::core::OtherNetworks;
use mvbc_node::peers::{Want, Wanted};
use mvbc_node::sync::{Download, DownloadError, Finished, ForkPoints, Role, SyncManager};
use mvbc_protocol::headers::{HeaderChain, HeaderError, HeaderFile};
use mvbc_protocol::light::{MAX_HISTORY_ADDRESSES, ProvenTx};
use mvbc_protocol::store::{BlockStore, load_chain};
use mvbc_protocol::wire::{Datagram, MAX_HEADERS_PER_REPLY, NoHistory, Status};
use mvbc_protocol::{Address, Chain, Config, Hash256, Payment, unix_now};

use crate::light::{Books, HEADERS_FILE};
use crate::outbox::Outbox;
use crate::pending::{Pending, SETTLED_DEPTH};
use mvbc_wallet::WALLET_CHAIN_FILE;
use mvbc_wallet::report::SyncReport;

/// After the first miner answers, how long `--once` listens for others before it settles.
const SETTLE: Duration = Duration::from_millis(500);
/// How often `--once` asks again while no miner has answered.
const ASK_AGAIN: Duration = Duration::from_secs(1);
/// A miner not heard for this long is forgotten when room is needed.
const PEER_QUIET: Duration = Duration::from_secs(30);
/// Downloads this long or longer get a progress line on a terminal.
const PROGRESS_FROM_BLOCKS: u64 = 50;
/// How often a download's progress is printed when stderr is not a terminal.
const PIPED_PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often `sync` looks at the data directory's keys again.
const KEYS_AGAIN: Duration = Duration::from_secs(5);
/// A light wallet asks this many block servers for its history, when it hears as many.
const HISTORY_PEERS: usize = 3;
/// After a history scan no server finished, how long before the next.
const SCAN_AGAIN: Duration = Duration::from_secs(2);
/// How many times a server may answer a history page that does not move on (its index is
/// catching up) before it is left for this scan.
const MAX_STALLS: u32 = 5;

/// How `sync` runs.
pub struct SyncOptions {
    /// Stop once synced to the best chain heard.
    pub once: bool,
    /// How long `--once` may wait for a first answer, or for progress after it.
    pub timeout: Duration,
    /// Print the final report as JSON.
    pub json: bool,
    /// Download and check every block (a full wallet), not only headers and this wallet's
    /// own transactions. A wallet that synced in full before stays full.
    pub full: bool,
}

/// `sync` stopped short of the best chain a peer announced: Ctrl-C, or `--once` waited its
/// timeout with no progress. The wallet exits non-zero (130 for Ctrl-C); what was stored stays.
#[derive(Debug, thiserror::Error)]
#[error("{} at height {height} of best heard {best}{why}", if *.interrupted { "Interrupted" } else { "Timed out" })]
pub struct Unfinished {
    /// Ctrl-C (else a timeout).
    pub interrupted: bool,
    /// Our height.
    pub height: u64,
    /// The height of the most-work chain a peer announced and was not caught lying about.
    pub best: u64,
    /// What went wrong last, if anything.
    pub why: String,
}

/// What `sync` follows: every block, or the headers and this wallet's own transactions.
enum Follow {
    Full {
        chain: Box<Chain>,
        store: BlockStore,
    },
    Light(Box<Light>),
}

/// A light wallet's chain and books.
struct Light {
    headers: HeaderChain,
    file: HeaderFile,
    books: Books,
    /// When the next history scan may start, after one that no server finished.
    next_scan: Instant,
    /// Why the last scan was not finished, if it was not.
    scan_failure: Option<String>,
}

impl Follow {
    fn height(&self) -> u64 {
        match self {
            Follow::Full { chain, .. } => chain.height(),
            Follow::Light(l) => l.headers.height(),
        }
    }

    fn tip_hash(&self) -> Hash256 {
        match self {
            Follow::Full { chain, .. } => chain.tip_hash(),
            Follow::Light(l) => l.headers.tip_hash(),
        }
    }

    fn chain_work(&self) -> u128 {
        match self {
            Follow::Full { chain, .. } => chain.chain_work(),
            Follow::Light(l) => l.headers.chain_work(),
        }
    }

    fn network_id(&self) -> mvbc_protocol::NetworkId {
        match self {
            Follow::Full { chain, .. } => chain.network_id(),
            Follow::Light(l) => l.headers.network_id(),
        }
    }

    fn is_confirmed(&self, id: &Hash256) -> bool {
        match self {
            Follow::Full { chain, .. } => chain.ledger().is_confirmed(id),
            Follow::Light(l) => l.books.confirmed_at(id).is_some(),
        }
    }

    /// Which of `payments` are confirmed at least [`SETTLED_DEPTH`] blocks deep.
    fn settled(&self, payments: &[Payment]) -> Result<HashSet<Hash256>> {
        let top = self.height();
        let deep_below = top.saturating_sub(SETTLED_DEPTH - 2);
        let ids = payments.iter().map(Payment::id);
        Ok(match self {
            Follow::Full { chain, .. } => {
                let mut recent = HashSet::new();
                for height in deep_below..=top {
                    if let Some(block) = chain.block_at(height)? {
                        recent.extend(block.transactions.iter().map(|t| t.id()));
                    }
                }
                ids.filter(|id| chain.ledger().is_confirmed(id) && !recent.contains(id))
                    .collect()
            }
            Follow::Light(l) => ids
                .filter(|id| l.books.confirmed_at(id).is_some_and(|h| h < deep_below))
                .collect(),
        })
    }

    /// A light wallet whose history is not complete at its tip for `addresses`.
    fn history_due(&self, addresses: &[Address]) -> bool {
        matches!(self, Follow::Light(l) if !l.books.complete(&l.headers, addresses))
    }
}

impl Wanted for Follow {
    fn want(&self, status: &Status) -> Want {
        match self {
            Follow::Full { chain, .. } => chain.want(status),
            Follow::Light(l) => l.headers.want(status),
        }
    }
}

struct Syncer<'a> {
    follow: Follow,
    dir: &'a Path,
    /// The miners heard, and whom to download from.
    sync: SyncManager,
    outbox: Outbox,
    /// When a download gives up: the `--once` deadline, Ctrl-C.
    cancel: Cancel,
    quiet: bool,
    /// Pending payments seen confirmed in this run (to report each change once).
    confirmed: HashSet<Hash256>,
    /// Pushed back whenever new blocks arrive (`--once` gives up when it runs out).
    progress: Progress,
    /// Block servers caught lying (a branch short of what they announced, invalid blocks):
    /// what they announce is not the best heard.
    liars: HashSet<SocketAddr>,
    /// Why the last download failed, for the final word.
    last_failure: Option<String>,
    /// Miners of networks other than ours heard, each network told of once.
    other_networks: OtherNetworks,
    /// This wallet's addresses, and when its keys were read for them.
    keys: Vec<Address>,
    keys_read: Option<Instant>,
}

/// Runs `sync`. Returns once synced (`--once`) or on Ctrl-C.
pub fn sync(dir: &Path, config: &Config, options: &SyncOptions) -> Result<()> {
    let path = dir.join(WALLET_CHAIN_FILE);
    let follow = if options.full || path.exists() {
        // The store's lock makes this the only sync on this directory.
        let loaded = load_chain(&path, config.consensus(), unix_now())?;
        if let Some(r) = &loaded.recovery {
            eprintln!("warning: recovered {}: {r}", path.display());
        }
        Follow::Full {
            chain: Box::new(loaded.chain),
            store: loaded.store,
        }
    } else {
        let path = dir.join(HEADERS_FILE);
        // The header file's lock makes this the only light sync on this directory.
        let (file, opened) = HeaderFile::open(&path, config.consensus(), unix_now())?;
        if let Some(r) = &opened.recovery {
            eprintln!("warning: recovered {}: {r}", path.display());
        }
        let network = opened.chain.network_id();
        // The books only keep what can be proven again: damaged ones are made anew.
        let books = Books::read(dir, network).unwrap_or_else(|e| {
            eprintln!("warning: {e:#}; this sync asks for the history again");
            None
        });
        Follow::Light(Box::new(Light {
            books: books.unwrap_or_else(|| Books::new(network)),
            headers: opened.chain,
            file,
            next_scan: Instant::now(),
            scan_failure: None,
        }))
    };
    let socket = net::udp_listener(config.status_broadcast_port).with_context(|| {
        format!(
            "listening for miners on UDP port {}",
            config.status_broadcast_port
        )
    })?;
    let ask = config
        .broadcast_address
        .map(|to| Broadcaster::new(to, config.status_broadcast_port))
        .transpose()?;
    let outbox = Outbox::new(config)?;
    if outbox.is_empty() {
        bail!(
            "broadcast_address is \"\" and no peer is named (--peer HOST:PORT): no way to reach \
             a miner"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;

    let started = Instant::now();
    let progress = Progress::new(options.timeout);
    let mut cancel = Cancel::never().on(stop.clone());
    if options.once {
        cancel = cancel.idle(progress.clone());
    }
    let mut s = Syncer {
        follow,
        dir,
        sync: SyncManager::new(Role::WALLET, PEER_QUIET),
        outbox,
        cancel,
        quiet: options.json,
        confirmed: HashSet::new(),
        progress: progress.clone(),
        liars: HashSet::new(),
        last_failure: None,
        other_networks: OtherNetworks::default(),
        keys: Vec::new(),
        keys_read: None,
    };
    let mut whom = vec![format!(
        "listening for miners on UDP {}",
        config.status_broadcast_port
    )];
    if !s.outbox.peers().is_empty() {
        let names: Vec<&str> = s.outbox.peers().iter().map(|(n, _)| n.as_str()).collect();
        whom.push(format!("asking {}", names.join(", ")));
    }
    let what = match &s.follow {
        Follow::Full { .. } => "",
        Follow::Light(_) => " headers",
    };
    s.say(format!(
        "Syncing{what} from height {}: {}",
        s.follow.height(),
        whom.join("; ")
    ));
    let interval = config.transaction_broadcast_interval;
    let mut next_ask = started;
    let mut next_peer_ask = started;
    let mut next_rebroadcast = started;
    let mut first_heard: Option<Instant> = None;
    let dropped = net::Dropped::default();
    loop {
        if stop.load(Ordering::Relaxed) {
            if s.short_of_best() || s.history_due()? {
                return Err(s.unfinished(true).into());
            }
            break;
        }
        let now = Instant::now();
        if options.once {
            if first_heard.is_some_and(|t| now - t >= SETTLE)
                && !s.behind()
                && !s.short_of_best()
                && !s.history_due()?
            {
                break;
            }
            if progress.expired() {
                if first_heard.is_none() {
                    let peers = if s.outbox.peers().is_empty() {
                        ""
                    } else {
                        " and no named peer answered"
                    };
                    bail!(
                        "no miner heard within {:.0} s on UDP port {}{peers} (is a miner running \
                         with the same status_broadcast_port and broadcast_address {}?)",
                        options.timeout.as_secs_f64(),
                        config.status_broadcast_port,
                        config
                            .broadcast_address
                            .map_or("\"\"".to_string(), |a| a.to_string())
                    );
                }
                return Err(s.unfinished(false).into());
            }
        } else if now >= next_rebroadcast {
            s.rebroadcast()?;
            next_rebroadcast = now + interval;
        }
        if first_heard.is_none() && now >= next_ask {
            if let Some(ask) = &ask {
                ask.send(&Datagram::StatusRequest)?;
            }
            next_ask = now + ASK_AGAIN;
        }
        if !s.outbox.peers().is_empty() && now >= next_peer_ask {
            let cancel = s.cancel.clone();
            for (status, at) in s.outbox.statuses(&cancel) {
                if s.heard(status, at) && first_heard.is_none() {
                    first_heard = Some(Instant::now());
                    progress.made();
                }
            }
            next_peer_ask = Instant::now()
                + if first_heard.is_some() {
                    config.status_broadcast_interval
                } else {
                    ASK_AGAIN
                };
        }
        if let Some((from, datagram)) = net::recv_datagram(&socket) {
            match datagram {
                Ok(Datagram::Status(status)) => {
                    if s.heard(status, from) && first_heard.is_none() {
                        first_heard = Some(Instant::now());
                        progress.made();
                    }
                }
                Ok(_) => {}
                Err(e) => dropped.note(from, "status port", &e),
            }
        }
        s.catch_up()?;
    }
    let pending = s.rebroadcast()?;
    let report = SyncReport {
        height: s.follow.height(),
        tip: s.follow.tip_hash().to_string(),
        pending,
    };
    if options.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let pending = match report.pending.len() {
            1 => "1 payment pending".to_string(),
            n => format!("{n} payments pending"),
        };
        println!(
            "Synced: height {}, tip {}, {pending}",
            report.height, report.tip
        );
    }
    Ok(())
}

impl Syncer<'_> {
    fn say(&self, line: String) {
        if !self.quiet {
            println!("{line}");
        }
    }

    /// Takes a miner's status; `false` for one of another network, which is ignored (and
    /// told of once per network).
    fn heard(&mut self, status: Status, from: SocketAddr) -> bool {
        let ours = self.follow.network_id();
        if status.network != ours {
            if self.other_networks.heard(status.network) {
                eprintln!(
                    "warning: ignoring {from} and every miner of network {}: other consensus \
                     settings (difficulty, block_size or block_reward) than this wallet's \
                     network {ours}",
                    status.network
                );
            }
            return false;
        }
        self.sync.heard(status, from, Instant::now());
        true
    }

    /// The most-work status heard from an address not caught lying.
    fn best_heard(&self) -> Option<&Status> {
        self.sync
            .peers()
            .iter()
            .filter(|p| !self.liars.contains(&p.block_server))
            .map(|p| &p.status)
            .max_by_key(|s| s.chain_work)
    }

    /// Whether a peer not caught lying announced more work than our chain has, even one passed
    /// over for now after a failed download: `--once` tries it again after its back-off.
    fn short_of_best(&self) -> bool {
        self.best_heard()
            .is_some_and(|s| s.chain_work > self.follow.chain_work())
    }

    fn unfinished(&self, interrupted: bool) -> Unfinished {
        let height = self.follow.height();
        let scan = match &self.follow {
            Follow::Light(l) => l.scan_failure.as_ref(),
            Follow::Full { .. } => None,
        };
        let why = match (&self.last_failure, scan) {
            (_, Some(scan)) => format!(" (history not complete: {scan})"),
            (Some(e), None) => format!(" (last download: {e})"),
            (None, None) => String::new(),
        };
        Unfinished {
            interrupted,
            height,
            best: self.best_heard().map_or(height, |s| s.height.max(height)),
            why,
        }
    }

    /// This wallet's addresses, as its keys said at most [`KEYS_AGAIN`] ago (a key added while
    /// `sync` runs has its history asked for then).
    fn addresses(&mut self) -> Result<Vec<Address>> {
        if self.keys_read.is_none_or(|at| at.elapsed() >= KEYS_AGAIN) {
            self.keys = crate::local_keys(self.dir)?
                .into_iter()
                .map(|(_, key)| key.address())
                .collect();
            self.keys_read = Some(Instant::now());
        }
        Ok(self.keys.clone())
    }

    /// Whether a light wallet's history is not complete at its tip for its keys.
    fn history_due(&mut self) -> Result<bool> {
        let addresses = self.addresses()?;
        Ok(self.follow.history_due(&addresses))
    }

    /// Whether some miner announced more work than our chain has.
    /// (One that was passed over after a failed download does not count: a peer that announces
    /// work it cannot serve must not keep `--once` from settling.)
    fn behind(&self) -> bool {
        self.sync.behind(&self.follow, Instant::now())
    }

    /// Downloads from the miner the peer book picks among those ahead of us, if any (a failure
    /// passes it over a while); then a light wallet proves its history when it is due.
    fn catch_up(&mut self) -> Result<()> {
        if let Some(download) = self.sync.next(&self.follow, Instant::now()) {
            self.download(download)?;
        }
        let addresses = self.addresses()?;
        let due = match &self.follow {
            Follow::Light(l) => {
                !l.books.complete(&l.headers, &addresses) && Instant::now() >= l.next_scan
            }
            Follow::Full { .. } => false,
        };
        // Headers first: while a peer announces more work, the history would soon be stale.
        if due && !self.behind() {
            self.scan_history(&addresses)?;
        }
        Ok(())
    }

    /// Runs one download and judges its peer by it.
    fn download(&mut self, download: Download) -> Result<()> {
        let (peer, height) = (download.peer, download.announced.height);
        let tip = self.follow.tip_hash();
        // On a terminal one line that counts up; piped, a line every few seconds, so a log or
        // a script sees the download move too.
        let shown = Shown {
            terminal: std::io::stderr().is_terminal(),
            on: !self.quiet && height.saturating_sub(self.follow.height()) >= PROGRESS_FROM_BLOCKS,
            last_line: Instant::now(),
        };
        let cancel = self.cancel.clone();
        let made = &self.progress;
        let (result, reorged) = match &mut self.follow {
            Follow::Full { chain, store } => {
                download_blocks(chain, store, &download, cancel, made, shown)
            }
            Follow::Light(light) => download_headers(light, &download, cancel, made, shown)?,
        };
        match self
            .sync
            .finished(peer, result, &self.follow, Instant::now())
        {
            // The store failed: stop, as the miner does; what was stored stays.
            Some(Finished::Ended(e)) if e.store_failed() => return Err(e.into()),
            // Ctrl-C or the deadline ends a download without judging the peer: the caller's
            // loop says why it stops, and what was stored stays.
            Some(Finished::Served(_) | Finished::Ended(_)) | None => {}
            Some(Finished::Failed(e, _)) => {
                self.say(format!("Download from {peer} failed: {e}"));
                if e.is_lie() {
                    self.liars.insert(peer);
                }
                self.last_failure = Some(format!("{peer}: {e}"));
            }
        }
        if self.follow.tip_hash() != tip {
            let reorg = if reorged > 0 {
                format!(" (reorg: {reorged} blocks left the chain)")
            } else {
                String::new()
            };
            self.say(format!(
                "Synced to height {}, tip {} from {peer}{reorg}",
                self.follow.height(),
                self.follow.tip_hash()
            ));
            if let Follow::Light(l) = &mut self.follow {
                // A new tip makes the history due at once.
                l.next_scan = Instant::now();
            } else {
                self.confirm_pending()?;
            }
        }
        Ok(())
    }

    /// Asks up to [`HISTORY_PEERS`] block servers for the history of `addresses` that the
    /// books lack, each transaction checked against our headers, and keeps every proven one
    /// any of them gives. The books are complete once one server answered to our tip; a server
    /// that sends a false proof is a liar.
    fn scan_history(&mut self, addresses: &[Address]) -> Result<()> {
        let Follow::Light(light) = &mut self.follow else {
            return Ok(());
        };
        let scans = light.books.scans_due(&light.headers, addresses);
        let mut peers: Vec<(u128, SocketAddr)> = self
            .sync
            .peers()
            .iter()
            .filter(|p| !self.liars.contains(&p.block_server))
            .map(|p| (p.status.chain_work, p.block_server))
            .collect();
        peers.sort_by_key(|&(work, addr)| (std::cmp::Reverse(work), addr));
        peers.dedup_by_key(|p| p.1);
        let mut found = Vec::new();
        let (mut complete, mut why) = (0, Vec::new());
        for (_, peer) in peers {
            if complete >= HISTORY_PEERS || scans.is_empty() {
                break;
            }
            let (entries, done) = history_from(peer, &scans, &light.headers, &self.cancel);
            // What it proved counts; only a complete answer makes the books complete.
            found.extend(entries);
            match done {
                Ok(()) => complete += 1,
                Err(e) => {
                    if let HistoryError::Lie(_) = e {
                        self.liars.insert(peer);
                    }
                    why.push(format!("{peer}: {e}"));
                }
            }
        }
        if complete == 0 && !scans.is_empty() {
            light.next_scan = Instant::now() + SCAN_AGAIN;
            // With nobody left to ask (the liars are not), the last reason stands.
            if !why.is_empty() || light.scan_failure.is_none() {
                light.scan_failure = Some(if why.is_empty() {
                    "no block server heard to ask".into()
                } else {
                    why.join("; ")
                });
            }
            // What was proven is asked for again at the next scan, with the rest.
            return Ok(());
        }
        let before = light.books.history_len();
        light.books.scanned(&light.headers, addresses, found);
        light.books.save(self.dir)?;
        light.scan_failure = None;
        self.progress.made();
        if scans.is_empty() {
            // Nothing was asked: no key, or nothing new to ask for.
            return self.confirm_pending();
        }
        let new = light.books.history_len() - before;
        let height = light.headers.height();
        let servers = if complete == 1 { "server" } else { "servers" };
        let txs = if new == 1 {
            "transaction"
        } else {
            "transactions"
        };
        self.say(format!(
            "History proven to height {height} by {complete} block {servers}: {new} new {txs}"
        ));
        self.confirm_pending()
    }

    /// Says which pending payments the chain now holds, and sends again those a reorg took
    /// out of it.
    fn confirm_pending(&mut self) -> Result<()> {
        let (_, reorged_out) = self.review_pending()?;
        for p in &reorged_out {
            self.outbox.send(p, &self.cancel)?;
        }
        Ok(())
    }

    /// Reads the pending file against the chain: says which payments are newly confirmed and
    /// which a reorg took out of the chain again, and forgets those buried deep enough.
    /// Returns the payments not confirmed, and those of them that were confirmed before.
    fn review_pending(&mut self) -> Result<(Vec<Payment>, Vec<Payment>)> {
        let mut pending = Pending::open(self.dir)?;
        let mut unconfirmed = Vec::new();
        let mut reorged_out = Vec::new();
        for p in &pending.payments {
            let id = p.id();
            if self.follow.is_confirmed(&id) {
                if self.confirmed.insert(id) {
                    self.say(format!("Payment confirmed: {id}"));
                }
            } else {
                if self.confirmed.remove(&id) {
                    self.say(format!(
                        "Payment {id} left the chain in a reorg: pending again, broadcasting it"
                    ));
                    reorged_out.push(p.clone());
                }
                unconfirmed.push(p.clone());
            }
        }
        let settled = self.follow.settled(&pending.payments)?;
        pending.drop_settled(&settled)?;
        Ok((unconfirmed, reorged_out))
    }

    /// Broadcasts the payments not confirmed yet; returns their ids.
    fn rebroadcast(&mut self) -> Result<Vec<String>> {
        let (unconfirmed, _) = self.review_pending()?;
        let mut went = Vec::new();
        for p in &unconfirmed {
            went = self.outbox.send(p, &self.cancel)?;
        }
        if !unconfirmed.is_empty() {
            self.say(format!(
                "Sent {} pending payments: {}",
                unconfirmed.len(),
                if went.is_empty() {
                    "no node could be reached".to_string()
                } else {
                    went.join(", ")
                }
            ));
        }
        Ok(unconfirmed.iter().map(|p| p.id().to_string()).collect())
    }
}

/// How a download's progress is shown.
struct Shown {
    terminal: bool,
    on: bool,
    last_line: Instant,
}

impl Shown {
    /// Shows that `what` is at `at` of `of`.
    fn at(&mut self, what: &str, at: u64, of: u64) {
        let percent = 100 * at / of.max(1);
        if self.on && self.terminal {
            eprint!("\r\x1b[KDownloading {what}: {at}/{of} ({percent}%)");
            let _ = std::io::stderr().flush();
        } else if self.on && self.last_line.elapsed() >= PIPED_PROGRESS_EVERY {
            self.last_line = Instant::now();
            eprintln!("Downloading {what}: {at}/{of} ({percent}%)");
        }
    }

    /// Clears the terminal's progress line.
    fn done(&self) {
        if self.on && self.terminal {
            eprint!("\r\x1b[K");
        }
    }
}

/// A full wallet's download: the peer's blocks, headers first, into the chain and its store.
/// Returns how it went and how many blocks left the best chain.
fn download_blocks(
    chain: &mut Chain,
    store: &mut BlockStore,
    download: &Download,
    cancel: Cancel,
    made: &Progress,
    mut shown: Shown,
) -> (Result<u64, DownloadError>, usize) {
    let params = *chain.params();
    // Taken now, as the download then changes the chain.
    let from = ForkPoints::of(chain);
    let mut reorged = 0;
    let result = BlockClient::connect_until(download.peer, cancel).and_then(|mut client| {
        client.fetch(
            download,
            &from,
            &params,
            unix_now(),
            |blocks, tip_height| {
                let batch = apply::add_batch(chain, store, blocks, unix_now());
                reorged += batch.moved.disconnected.len();
                if batch.new > 0 {
                    made.made();
                }
                if let Some(e) = batch.error {
                    return Err(e.into());
                }
                shown.at("blocks", chain.height(), tip_height);
                Ok(batch.new)
            },
        )
    });
    shown.done();
    (result.map_err(Into::into), reorged)
}

/// A light wallet's download: the peer's headers, each held to the rules, into the header
/// chain and its file. Returns how it went and how many headers left the best chain; an error
/// when the file could not be written.
fn download_headers(
    light: &mut Light,
    download: &Download,
    cancel: Cancel,
    made: &Progress,
    mut shown: Shown,
) -> Result<(Result<u64, DownloadError>, usize)> {
    let announced = download.announced.chain_work;
    let mut reorged = 0;
    let mut joined = 0;
    let mut not_saved = None;
    // Boxed: a download's error is large, and the happy path should not carry it.
    let failed = |e: FetchError| Box::new(DownloadError::from(e));
    let run = || -> Result<(), Box<DownloadError>> {
        let mut client = BlockClient::connect_until(download.peer, cancel).map_err(failed)?;
        // As a full download does: a status naming this server may not be its own.
        match client.status() {
            Ok(told) if told.chain_work < announced => {
                return Err(failed(FetchError::Disowned { told, announced }));
            }
            Ok(_) | Err(FetchError::WrongReply { .. }) => {}
            Err(e) => return Err(failed(e)),
        }
        loop {
            let locator = light.headers.locator();
            let (tip_height, headers) = client
                .headers(&locator, MAX_HEADERS_PER_REPLY as u32)
                .map_err(failed)?;
            let Some(last) = headers.last().map(|h| h.height) else {
                return Ok(());
            };
            let before = light.headers.height();
            let added = light
                .headers
                .add(&headers, unix_now())
                .map_err(|e| match e {
                    HeaderError::Invalid {
                        hash,
                        height,
                        error,
                    } => failed(FetchError::BadHeader {
                        hash,
                        height,
                        error,
                    }),
                    HeaderError::Unconnected { hash, height } => failed(FetchError::Unlinked {
                        block: hash,
                        height,
                        after: "any block the request named".into(),
                    }),
                    e @ HeaderError::TooDeep => Box::new(DownloadError::Transport(Box::new(e))),
                })?;
            if let Some(fork) = added.reorg_from {
                reorged += (before - fork) as usize;
            }
            if let Err(e) = light.file.save(&light.headers, added) {
                not_saved = Some(e);
                return Err(Box::new(DownloadError::Cancelled(Box::new(
                    std::io::Error::other("the header file could not be written"),
                ))));
            }
            if added.joined > 0 {
                joined += added.joined;
                made.made();
            }
            shown.at("headers", light.headers.height(), tip_height);
            if last >= tip_height {
                return Ok(());
            }
        }
    };
    let result = run();
    shown.done();
    if let Some(e) = not_saved {
        return Err(e.into());
    }
    Ok((result.map(|()| joined).map_err(|e| *e), reorged))
}

/// Why a block server's history answer did not make the books complete.
#[derive(Debug, thiserror::Error)]
enum HistoryError {
    #[error("{0}")]
    Fetch(Box<FetchError>),
    #[error("{}", match .0 {
        NoHistory::NoIndex => "it keeps no index to answer history from",
        NoHistory::UnknownTip => "its best chain does not hold our tip",
    })]
    Refused(NoHistory),
    #[error("it sent a false proof: {0}")]
    Lie(String),
    #[error("its index stays at height {0}, below ours")]
    Stalled(u64),
}

impl From<FetchError> for HistoryError {
    fn from(e: FetchError) -> HistoryError {
        HistoryError::Fetch(Box::new(e))
    }
}

/// The history of each scan's addresses from its height up to the tip of `headers`, from the
/// block server at `peer`, every transaction checked against `headers`: what it proved, and
/// whether that is complete (or why not).
fn history_from(
    peer: SocketAddr,
    scans: &[(Vec<Address>, u64)],
    headers: &HeaderChain,
    cancel: &Cancel,
) -> (Vec<ProvenTx>, Result<(), HistoryError>) {
    let (top, tip) = (headers.height(), headers.tip_hash());
    let mut found = Vec::new();
    let run = |found: &mut Vec<ProvenTx>| -> Result<(), HistoryError> {
        let mut client = BlockClient::connect_until(peer, cancel.clone())?;
        let mut stalls = 0;
        for (addresses, from) in scans {
            for asked in addresses.chunks(MAX_HISTORY_ADDRESSES) {
                let mut from = *from;
                while from <= top {
                    let (through, entries) = client
                        .history(asked, from, tip)?
                        .map_err(HistoryError::Refused)?;
                    let through = through.min(top);
                    for e in entries {
                        if e.height < from || e.height > through {
                            return Err(HistoryError::Lie(format!(
                                "a transaction of height {} in a page of heights {from} to \
                                 {through}",
                                e.height
                            )));
                        }
                        e.check(headers, asked)
                            .map_err(|e| HistoryError::Lie(e.to_string()))?;
                        found.push(e);
                    }
                    if through < from {
                        stalls += 1;
                        if stalls > MAX_STALLS {
                            return Err(HistoryError::Stalled(through));
                        }
                        cancel.check().map_err(FetchError::from)?;
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                    from = through + 1;
                }
            }
        }
        Ok(())
    };
    let done = run(&mut found);
    (found, done)
}
