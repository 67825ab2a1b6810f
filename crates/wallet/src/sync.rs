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
use mvbc_net::{self as net, BlockClient, Broadcaster, Cancel, Progress};
use mvbc_node::apply;
use mvbc_node::core::OtherNetworks;
use mvbc_node::sync::{Finished, ForkPoints, Role, SyncManager};
use mvbc_protocol::store::{BlockStore, load_chain};
use mvbc_protocol::wire::{Datagram, Status};
use mvbc_protocol::{Chain, Config, Hash256, Payment, unix_now};

use crate::outbox::Outbox;
use crate::pending::Pending;
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

/// How `sync` runs.
pub struct SyncOptions {
    /// Stop once synced to the best chain heard.
    pub once: bool,
    /// How long `--once` may wait for a first answer, or for progress after it.
    pub timeout: Duration,
    /// Print the final report as JSON.
    pub json: bool,
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

struct Syncer<'a> {
    chain: Chain,
    store: BlockStore,
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
}

/// Runs `sync`. Returns once synced (`--once`) or on Ctrl-C.
pub fn sync(dir: &Path, config: &Config, options: &SyncOptions) -> Result<()> {
    let path = dir.join(WALLET_CHAIN_FILE);
    // The store's lock makes this the only sync on this directory.
    let loaded = load_chain(&path, config.consensus(), unix_now())?;
    if let Some(r) = &loaded.recovery {
        eprintln!("warning: recovered {}: {r}", path.display());
    }
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
        chain: loaded.chain,
        store: loaded.store,
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
    };
    let mut whom = vec![format!(
        "listening for miners on UDP {}",
        config.status_broadcast_port
    )];
    if !s.outbox.peers().is_empty() {
        let names: Vec<&str> = s.outbox.peers().iter().map(|(n, _)| n.as_str()).collect();
        whom.push(format!("asking {}", names.join(", ")));
    }
    s.say(format!(
        "Syncing from height {}: {}",
        s.chain.height(),
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
            if s.short_of_best() {
                return Err(s.unfinished(true).into());
            }
            break;
        }
        let now = Instant::now();
        if options.once {
            if first_heard.is_some_and(|t| now - t >= SETTLE) && !s.behind() && !s.short_of_best() {
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
        height: s.chain.height(),
        tip: s.chain.tip_hash().to_string(),
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
        let ours = self.chain.network_id();
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
            .is_some_and(|s| s.chain_work > self.chain.chain_work())
    }

    fn unfinished(&self, interrupted: bool) -> Unfinished {
        Unfinished {
            interrupted,
            height: self.chain.height(),
            best: self
                .best_heard()
                .map_or(self.chain.height(), |s| s.height.max(self.chain.height())),
            why: self
                .last_failure
                .as_ref()
                .map_or(String::new(), |e| format!(" (last download: {e})")),
        }
    }

    /// Whether some miner announced more work than our chain has.
    /// (One that was passed over after a failed download does not count: a peer that announces
    /// work it cannot serve must not keep `--once` from settling.)
    fn behind(&self) -> bool {
        self.sync.behind(&self.chain, Instant::now())
    }

    /// Downloads from the miner the peer book picks among those ahead of us, if any; a failure
    /// passes it over a while.
    fn catch_up(&mut self) -> Result<()> {
        let Some(download) = self.sync.next(&self.chain, Instant::now()) else {
            return Ok(());
        };
        let (peer, height) = (download.peer, download.announced.height);
        let start = self.chain.height();
        let tip = self.chain.tip_hash();
        // On a terminal one line that counts up; piped, a line every few seconds, so a log or
        // a script sees the download move too.
        let terminal = std::io::stderr().is_terminal();
        let progress = !self.quiet && height.saturating_sub(start) >= PROGRESS_FROM_BLOCKS;
        let mut last_line = Instant::now();
        let params = *self.chain.params();
        // Taken now, as the download then changes the chain.
        let from = ForkPoints::of(&self.chain);
        let (chain, store) = (&mut self.chain, &mut self.store);
        let made = &self.progress;
        let mut reorged = 0;
        let result =
            BlockClient::connect_until(peer, self.cancel.clone()).and_then(|mut client| {
                client.fetch(
                    &download,
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
                        let at = chain.height();
                        let percent = 100 * at / tip_height.max(1);
                        if progress && terminal {
                            eprint!("\r\x1b[KDownloading blocks: {at}/{tip_height} ({percent}%)");
                            let _ = std::io::stderr().flush();
                        } else if progress && last_line.elapsed() >= PIPED_PROGRESS_EVERY {
                            last_line = Instant::now();
                            eprintln!("Downloading blocks: {at}/{tip_height} ({percent}%)");
                        }
                        Ok(batch.new)
                    },
                )
            });
        if progress && terminal {
            eprint!("\r\x1b[K");
        }
        match self.sync.finished(
            peer,
            result.map_err(Into::into),
            &self.chain,
            Instant::now(),
        ) {
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
        if self.chain.tip_hash() != tip {
            let reorg = if reorged > 0 {
                format!(" (reorg: {reorged} blocks left the chain)")
            } else {
                String::new()
            };
            self.say(format!(
                "Synced to height {}, tip {} from {peer}{reorg}",
                self.chain.height(),
                self.chain.tip_hash()
            ));
            let (_, reorged_out) = self.review_pending()?;
            for p in &reorged_out {
                self.outbox.send(p, &self.cancel)?;
            }
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
            if self.chain.ledger().is_confirmed(&id) {
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
        pending.drop_settled(&self.chain)?;
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
