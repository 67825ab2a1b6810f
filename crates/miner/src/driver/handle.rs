//! A running node, seen from outside: what it bound, what it says, how high its chain is, and
//! how to stop it and wait for it (nakamoto's `client::handle` is the model).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mvbc_node::apply::ApplyError;
use mvbc_protocol::Chain;
use mvbc_protocol::chain::read_chain;

use super::{Event, Message};

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A UDP port is taken or cannot be opened.
    #[error("listening for {what} on UDP port {port}: {source}")]
    Udp {
        /// "payments" or "status".
        what: &'static str,
        /// The port.
        port: u16,
        /// Why not.
        source: std::io::Error,
    },
    /// The block server's port is taken or cannot be opened.
    #[error(
        "starting the block server on TCP port {port} (another miner on this host? set -s \
         block_server_port=0 to take any free port; it is announced in status broadcasts): \
         {source}"
    )]
    BlockServer {
        /// The port.
        port: u16,
        /// Why not.
        source: std::io::Error,
    },
    /// The broadcast socket cannot be opened.
    #[error("opening the status broadcast socket ({what}): {source}")]
    Broadcast {
        /// "announcing" or "asking".
        what: &'static str,
        /// Why not.
        source: std::io::Error,
    },
    /// A thread did not start.
    #[error("starting the {name} thread: {source}")]
    Thread {
        /// Its name.
        name: &'static str,
        /// Why not.
        source: std::io::Error,
    },
}

/// Why a node stopped other than when asked.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not take a block: the chain in memory would run ahead of it.
    #[error("{0}. Stopping")]
    Store(ApplyError),
    /// The node's loop panicked.
    #[error("the node's loop panicked")]
    Panicked,
}

/// The chain did not reach a height in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("still at height {height} after {waited:?}")]
pub struct TimedOut {
    /// The height it had.
    pub height: u64,
    /// How long it was waited for.
    pub waited: Duration,
}

/// How often [`NodeHandle::wait_for_height`] looks at the chain.
const HEIGHT_POLL: Duration = Duration::from_millis(10);

/// A running node.
pub struct NodeHandle {
    events: Receiver<Event>,
    urgent: Sender<Message>,
    block_port: u16,
    api: Option<SocketAddr>,
    chain: Arc<RwLock<Chain>>,
    looped: Option<JoinHandle<Result<(), RunError>>>,
}

impl NodeHandle {
    pub(super) fn new(
        events: Receiver<Event>,
        urgent: Sender<Message>,
        block_port: u16,
        api: Option<SocketAddr>,
        chain: Arc<RwLock<Chain>>,
        looped: JoinHandle<Result<(), RunError>>,
    ) -> NodeHandle {
        NodeHandle {
            events,
            urgent,
            block_port,
            api,
            chain,
            looped: Some(looped),
        }
    }

    /// What the node says, in order; the channel ends when the node has stopped. Events nobody
    /// reads are kept up to a bound, then dropped.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// The TCP port its block server listens on.
    pub fn block_port(&self) -> u16 {
        self.block_port
    }

    /// Where its API listens, if it does.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api
    }

    /// The height of its best chain.
    pub fn height(&self) -> u64 {
        read_chain(&self.chain).height()
    }

    /// Waits until its best chain is at least `height` high, for at most `timeout`.
    pub fn wait_for_height(&self, height: u64, timeout: Duration) -> Result<u64, TimedOut> {
        let started = Instant::now();
        loop {
            let now = self.height();
            if now >= height {
                return Ok(now);
            }
            if started.elapsed() >= timeout {
                return Err(TimedOut {
                    height: now,
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(HEIGHT_POLL);
        }
    }

    /// Stops the node as Ctrl-C does (its last event is [`Event::Stopped`]) and waits for it.
    pub fn shutdown(mut self) -> Result<(), RunError> {
        let _ = self.urgent.send(Message::Shutdown);
        self.join()
    }

    /// Waits until the node stops: asked to through [`super::NodeSetup::stop`], or on an error.
    pub fn wait(mut self) -> Result<(), RunError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), RunError> {
        match self.looped.take() {
            Some(looped) => looped.join().unwrap_or(Err(RunError::Panicked)),
            None => Ok(()),
        }
    }
}

impl Drop for NodeHandle {
    /// A handle dropped stops its node: threads never outlive the handle that owns them.
    fn drop(&mut self) {
        if self.looped.is_some() {
            let _ = self.urgent.send(Message::Shutdown);
            let _ = self.join();
        }
    }
}
