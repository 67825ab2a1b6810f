//! Links on real sockets: dialling a peer's block server and turning the connection into a
//! link, then one reader and one writer thread per link. The node core
//! (`mvbc_node::links`) decides everything; these threads only move frames.
//!
//! A reader hands each message to [`LinkEvents::message`], which must not block (the driver
//! queues it in bounded queues and drops it when they are full, so a link that floods is
//! dropped like a flood of datagrams); a frame that does not decode ends the link as invalid.
//! A writer takes from a bounded queue of [`LINK_QUEUE`]: a peer that does not read fills it
//! and the node closes the link rather than hold more for it.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use mvbc_node::links::{Down, Invalid, LinkId};
use mvbc_protocol::wire::{LinkMessage, MAX_LINK_MESSAGE_BYTES, Status};

use crate::{BlockClient, Cancel, FRAME_TIMEOUT, FetchError, FrameError, read_frame, write_frame};

/// Where a link's reader reports: called from the link's own thread.
pub trait LinkEvents: Send + 'static {
    /// A message came on link `id`; must not block (drop it rather than wait).
    fn message(&self, id: LinkId, message: LinkMessage);
    /// Link `id` ended, and why; must be delivered.
    fn down(&self, id: LinkId, why: Down);
}

/// Messages queued for one link before the node gives up on it: at most 1 MiB of payments
/// with 4 KiB keys, whatever a peer that stops reading leaves behind.
pub const LINK_QUEUE: usize = 256;

/// The driver's handle on a link.
pub struct LinkIo {
    tx: SyncSender<LinkMessage>,
    stream: TcpStream,
}

/// The peer has not read the [`LINK_QUEUE`] messages queued for it (or the link is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link's queue is full or closed")]
pub struct Backlogged;

impl LinkIo {
    /// Queues `message` for the peer, without waiting.
    pub fn send(&self, message: LinkMessage) -> Result<(), Backlogged> {
        self.tx.try_send(message).map_err(|_| Backlogged)
    }

    /// Closes the connection; its threads end and report it down.
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Dials `addr` and asks for a link, introducing this node by `ours`, on a thread of its own
/// that hands `done` the connection and the peer's status, or why not. An error: the thread
/// did not start, and `done` will never be called.
pub fn dial(
    addr: SocketAddr,
    ours: Status,
    done: impl FnOnce(Result<(TcpStream, Status), FetchError>) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("link-dial".into())
        .spawn(move || {
            let result = BlockClient::connect(addr).and_then(|c| c.link(ours));
            if let Err(e) = &result {
                tracing::debug!(%addr, "dial failed: {e}");
            }
            done(result);
        })?;
    Ok(())
}

/// Starts link `id`'s threads on `stream`; a link silent for `quiet` ends.
pub fn start(
    id: LinkId,
    stream: TcpStream,
    quiet: Duration,
    events: impl LinkEvents,
) -> std::io::Result<LinkIo> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(FRAME_TIMEOUT))?;
    let (tx, rx) = sync_channel::<LinkMessage>(LINK_QUEUE);
    let writer = stream.try_clone()?;
    let reader = stream.try_clone()?;
    std::thread::Builder::new()
        .name("link-write".into())
        .spawn(move || write(writer, rx))?;
    std::thread::Builder::new()
        .name("link-read".into())
        .spawn(move || read(id, reader, quiet, events))?;
    Ok(LinkIo { tx, stream })
}

fn write(mut stream: TcpStream, messages: Receiver<LinkMessage>) {
    while let Ok(message) = messages.recv() {
        if let Err(e) = write_frame(&mut stream, &message.encode()) {
            tracing::debug!("link write failed: {e}");
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn read(id: LinkId, mut stream: TcpStream, quiet: Duration, events: impl LinkEvents) {
    let why = loop {
        let body = match read_frame(&mut stream, MAX_LINK_MESSAGE_BYTES, quiet, &Cancel::never()) {
            Ok(body) => body,
            Err(FrameError::TooLong { len, cap }) => {
                break Down::Invalid(Invalid::TooLong { len, cap });
            }
            Err(FrameError::TimedOut(_)) => break Down::Quiet,
            Err(_) => break Down::Lost,
        };
        let message = match LinkMessage::decode(&body) {
            Ok(m) => m,
            Err(e) => break Down::Invalid(e.into()),
        };
        events.message(id, message);
    };
    let _ = stream.shutdown(Shutdown::Both);
    events.down(id, why);
}
