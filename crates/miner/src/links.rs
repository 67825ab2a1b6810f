//! The node's links on real sockets: dialling a peer's block server and turning the
//! connection into a link, then one reader and one writer thread per link. The node core
//! decides everything; these threads only move frames.
//!
//! A reader hands each message to the node loop's bounded queues (payments with payments,
//! the rest with statuses), so a link that floods is dropped like a flood of datagrams; a frame
//! that does not decode ends the link as invalid. A writer takes from a bounded queue: a peer
//! that does not read fills it and the node closes the link rather than hold more for it.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use mvbc_net::{BlockClient, Cancel, FRAME_TIMEOUT, FrameError, read_frame, write_frame};
use mvbc_node::links::{Down, LinkId};
use mvbc_protocol::wire::{LinkMessage, MAX_LINK_MESSAGE_BYTES, Status};

use crate::node::{Event, Senders};

/// Messages queued for one link before the node gives up on it: at most 1 MiB of payments
/// with 4 KiB keys, whatever a peer that stops reading leaves behind.
pub const LINK_QUEUE: usize = 256;

/// The node loop's handle on a link.
pub struct LinkIo {
    /// Where messages for the peer go.
    pub tx: Sender<LinkMessage>,
    stream: TcpStream,
}

impl LinkIo {
    /// Closes the connection; its threads end and report it down.
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Dials `addr` and asks for a link, introducing this node by `ours`; reports
/// [`Event::LinkOut`] or [`Event::DialFailed`] on `events`.
pub fn dial(addr: SocketAddr, ours: Status, events: Sender<Event>) {
    let spawned = std::thread::Builder::new().name("link-dial".into()).spawn({
        let events = events.clone();
        move || {
            let event = match BlockClient::connect(addr).and_then(|c| c.link(ours)) {
                Ok((stream, hello)) => Event::LinkOut {
                    stream,
                    addr,
                    hello,
                },
                Err(e) => {
                    tracing::debug!(%addr, "dial failed: {e}");
                    Event::DialFailed(addr)
                }
            };
            let _ = events.send(event);
        }
    });
    if spawned.is_err() {
        let _ = events.send(Event::DialFailed(addr));
    }
}

/// Starts link `id`'s threads on `stream`; a link silent for `quiet` ends.
pub fn start(
    id: LinkId,
    stream: TcpStream,
    quiet: Duration,
    events: &Senders,
) -> std::io::Result<LinkIo> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(FRAME_TIMEOUT))?;
    let (tx, rx) = bounded::<LinkMessage>(LINK_QUEUE);
    let writer = stream.try_clone()?;
    let reader = stream.try_clone()?;
    std::thread::Builder::new()
        .name("link-write".into())
        .spawn(move || write(writer, rx))?;
    let events = events.clone();
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

fn read(id: LinkId, mut stream: TcpStream, quiet: Duration, events: Senders) {
    let why = loop {
        let body = match read_frame(&mut stream, MAX_LINK_MESSAGE_BYTES, quiet, &Cancel::never()) {
            Ok(body) => body,
            Err(e @ FrameError::TooLong { .. }) => break Down::Invalid(e.to_string()),
            Err(FrameError::TimedOut(_)) => break Down::Quiet,
            Err(_) => break Down::Lost,
        };
        let message = match LinkMessage::decode(&body) {
            Ok(m) => m,
            Err(e) => break Down::Invalid(e.to_string()),
        };
        let queue = match message {
            LinkMessage::Payment(_) => &events.payments,
            LinkMessage::Status(_) | LinkMessage::Addrs(_) => &events.statuses,
        };
        if queue.try_send(Event::LinkMessage(id, message)).is_err() {
            tracing::debug!(id, "event queue full: dropped a link message");
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    let _ = events.urgent.send(Event::LinkDown(id, why));
}
