//! Where a wallet's payments and status questions go: a broadcast on its LAN (unless
//! `broadcast_address` is ""), and the nodes named by `peers` or `--peer`, over TCP, wherever a
//! connection reaches them.

use std::net::SocketAddr;

use anyhow::Result;
use mvbc_net::{BlockClient, Broadcaster, Cancel};
use mvbc_protocol::wire::{Datagram, Status};
use mvbc_protocol::{Config, Payment, config};

/// The wallet's ways out.
pub struct Outbox {
    broadcast: Option<Broadcaster>,
    /// Named peers, as named and as resolved.
    peers: Vec<(String, SocketAddr)>,
}

impl Outbox {
    /// The broadcast socket and the named peers of `config`; a peer whose name does not
    /// resolve is warned about and left out.
    pub fn new(config: &Config) -> Result<Outbox> {
        let broadcast = config
            .broadcast_address
            .map(|to| Broadcaster::new(to, config.transaction_port))
            .transpose()?;
        let mut peers = Vec::new();
        for name in &config.peers {
            match config::resolve_peer(name) {
                Ok(addr) => peers.push((name.clone(), addr)),
                Err(e) => eprintln!("warning: peer {name} skipped: {e}"),
            }
        }
        Ok(Outbox { broadcast, peers })
    }

    /// The named peers.
    pub fn peers(&self) -> &[(String, SocketAddr)] {
        &self.peers
    }

    /// Whether the wallet has any way to reach a node.
    pub fn is_empty(&self) -> bool {
        self.broadcast.is_none() && self.peers.is_empty()
    }

    /// Sends `payment` every way there is; returns where it went ("broadcast to ...",
    /// "submitted to ..."). A peer that cannot be reached is warned about.
    pub fn send(&self, payment: &Payment, cancel: &Cancel) -> Result<Vec<String>> {
        let mut went = Vec::new();
        if let Some(b) = &self.broadcast {
            b.send(&Datagram::Payment(payment.clone()))
                .map_err(|e| anyhow::anyhow!("broadcasting to {}: {e}", b.target()))?;
            went.push(format!("broadcast to {}", b.target()));
        }
        for (name, addr) in &self.peers {
            match BlockClient::connect_until(*addr, cancel.clone())
                .and_then(|mut c| c.submit(payment.clone()))
            {
                Ok(()) => went.push(format!("submitted to {name}")),
                Err(e) => eprintln!("warning: could not submit to {name}: {e}"),
            }
        }
        Ok(went)
    }

    /// Asks each named peer for its status: what answered, with the address its block server
    /// was reached at.
    pub fn statuses(&self, cancel: &Cancel) -> Vec<(Status, SocketAddr)> {
        let mut heard = Vec::new();
        for (name, addr) in &self.peers {
            match BlockClient::connect_until(*addr, cancel.clone()).and_then(|mut c| c.status()) {
                Ok(mut status) => {
                    // Its block server is where we reached it, whatever port it believes.
                    status.block_server_port = addr.port();
                    heard.push((status, *addr));
                }
                Err(e) => tracing::debug!("{name}: no status: {e}"),
            }
        }
        heard
    }
}
