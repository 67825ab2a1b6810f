//! The client side of the block service: one connection to a peer's block server, and the
//! download of its best chain batch after batch.

use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use crate::{
    CONNECT_TIMEOUT, Cancel, Cancelled, FRAME_TIMEOUT, FrameError, read_frame, write_frame,
};
use mvbc_node::apply::ApplyError;
use mvbc_node::sync::{Download, DownloadError, ForkPoints};
use mvbc_protocol::block::Block;
use mvbc_protocol::hash::Hash256;
use mvbc_protocol::header::BlockHeader;
use mvbc_protocol::keys::Address;
use mvbc_protocol::light::ProvenTx;
use mvbc_protocol::rules::{ConsensusParams, check_header};
use mvbc_protocol::tx::Payment;
use mvbc_protocol::wire::{
    MAX_BLOCKS_PER_REPLY, MAX_HEADERS_PER_REPLY, MAX_LOCATOR_LEN, MAX_REPLY_BYTES, NoHistory,
    Reply, Request, Status, WireError,
};

/// Why a download from a block server failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No connection.
    #[error("cannot connect to {peer}: {source}")]
    Connect {
        /// The server.
        peer: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A frame failed.
    #[error("{0}")]
    Frame(FrameError),
    /// The reply did not decode.
    #[error("bad reply: {0}")]
    Wire(#[from] WireError),
    /// More blocks or headers than were asked for.
    #[error("bad reply: {got} {what} where at most {asked} were asked for")]
    TooMany {
        /// "blocks" or "headers".
        what: &'static str,
        /// How many the reply holds.
        got: usize,
        /// How many were asked for.
        asked: u32,
    },
    /// A block that does not follow the one before it, or, first in a reply, none of the
    /// blocks the request named: a server that replays what it has instead of what was asked.
    #[error("bad reply: block {block} at height {height} does not follow {after}")]
    Unlinked {
        /// The block.
        block: Hash256,
        /// Its height.
        height: u64,
        /// What it should have followed.
        after: String,
    },
    /// A reply of another kind than the request asked for.
    #[error("bad reply: {got} where {asked} were asked for")]
    WrongReply {
        /// What came.
        got: &'static str,
        /// What was asked for.
        asked: &'static str,
    },
    /// A header of the branch breaks a rule a header alone can be held to.
    #[error("bad header of block {hash} at height {height}: {error}")]
    BadHeader {
        /// The block's hash.
        hash: Hash256,
        /// Its height.
        height: u64,
        /// The rule.
        error: Box<mvbc_protocol::rules::BlockError>,
    },
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
        told: mvbc_protocol::wire::Status,
        /// The work the status we heard claimed.
        announced: u128,
    },
    /// The caller refused a block, or could not keep it (a refused block blames the peer, a
    /// full disk does not).
    #[error(transparent)]
    Refused(Box<ApplyError>),
    /// The caller gave up waiting.
    #[error("gave up waiting: {0}")]
    Cancelled(#[from] Cancelled),
}

impl From<FetchError> for DownloadError {
    /// What the node judges a peer by; the transport's details ride along for the message.
    fn from(e: FetchError) -> DownloadError {
        match e {
            FetchError::Connect { peer, source } => DownloadError::Connect { peer, source },
            FetchError::Frame(_) | FetchError::Wire(_) => DownloadError::Transport(Box::new(e)),
            FetchError::TooMany { .. }
            | FetchError::Unlinked { .. }
            | FetchError::WrongReply { .. }
            | FetchError::BadHeader { .. } => DownloadError::BadReply(Box::new(e)),
            FetchError::LightBranch { work, announced } => {
                DownloadError::LightBranch { work, announced }
            }
            FetchError::Disowned { told, announced } => DownloadError::Disowned { told, announced },
            FetchError::Refused(e) => DownloadError::Apply(*e),
            FetchError::Cancelled(c) => DownloadError::Cancelled(Box::new(c)),
        }
    }
}

impl From<ApplyError> for FetchError {
    fn from(e: ApplyError) -> FetchError {
        FetchError::Refused(Box::new(e))
    }
}

impl From<FrameError> for FetchError {
    fn from(e: FrameError) -> FetchError {
        match e {
            // One way to say it, wherever the wait was.
            FrameError::Cancelled(c) => FetchError::Cancelled(c),
            e => FetchError::Frame(e),
        }
    }
}

/// A connection to one peer's block server.
pub struct BlockClient {
    stream: TcpStream,
    peer: SocketAddr,
    batch: u32,
    cancel: Cancel,
}

impl BlockClient {
    /// Connects within [`CONNECT_TIMEOUT`].
    pub fn connect(peer: SocketAddr) -> Result<BlockClient, FetchError> {
        BlockClient::connect_until(peer, Cancel::never())
    }

    /// Connects within [`CONNECT_TIMEOUT`], giving up sooner when `cancel` says so; every later
    /// wait on this connection gives up then too.
    pub fn connect_until(peer: SocketAddr, cancel: Cancel) -> Result<BlockClient, FetchError> {
        let stream = connect_cancellable(peer, &cancel)?;
        stream
            .set_nodelay(true)
            .map_err(|source| FetchError::Connect { peer, source })?;
        Ok(BlockClient {
            stream,
            peer,
            batch: MAX_BLOCKS_PER_REPLY as u32,
            cancel,
        })
    }

    /// Asks for at most `blocks` blocks per request in [`BlockClient::download`] (at least
    /// one; the server caps it at [`MAX_BLOCKS_PER_REPLY`] whatever is asked).
    pub fn set_batch(&mut self, blocks: u32) {
        self.batch = blocks.max(1);
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// One request, one reply.
    pub fn request(&mut self, request: &Request) -> Result<Reply, FetchError> {
        self.cancel.check()?;
        write_frame(&mut self.stream, &request.encode()).map_err(FrameError::from)?;
        let body = read_frame(
            &mut self.stream,
            MAX_REPLY_BYTES,
            FRAME_TIMEOUT,
            &self.cancel,
        )?;
        Ok(Reply::decode(&body)?)
    }

    /// The node's status, as it would announce it.
    pub fn status(&mut self) -> Result<Status, FetchError> {
        match self.request(&Request::Status)? {
            Reply::Status(status) => Ok(status),
            other => Err(FetchError::WrongReply {
                got: other.kind(),
                asked: "status",
            }),
        }
    }

    /// Hands a payment to the node, as a broadcast would.
    pub fn submit(&mut self, payment: Payment) -> Result<(), FetchError> {
        match self.request(&Request::Submit(payment))? {
            Reply::Submitted => Ok(()),
            other => Err(FetchError::WrongReply {
                got: other.kind(),
                asked: "submitted",
            }),
        }
    }

    /// Turns the connection into a link, introducing this node by `ours`: returns the stream
    /// and the server's status.
    pub fn link(mut self, ours: Status) -> Result<(TcpStream, Status), FetchError> {
        match self.request(&Request::Link(ours))? {
            Reply::Linked(status) => Ok((self.stream, status)),
            other => Err(FetchError::WrongReply {
                got: other.kind(),
                asked: "linked",
            }),
        }
    }

    /// Up to `max` headers of the server's best chain after the first hash of `locator` it
    /// holds, lowest first, and its tip's height.
    pub fn headers(
        &mut self,
        locator: &[Hash256],
        max: u32,
    ) -> Result<(u64, Vec<BlockHeader>), FetchError> {
        let locator = locator.iter().take(MAX_LOCATOR_LEN).copied().collect();
        match self.request(&Request::HeadersAfter {
            locator,
            max_headers: max,
        })? {
            Reply::Headers { headers, .. } if headers.len() > max as usize => {
                Err(FetchError::TooMany {
                    what: "headers",
                    got: headers.len(),
                    asked: max,
                })
            }
            Reply::Headers {
                tip_height,
                headers,
                ..
            } => Ok((tip_height, headers)),
            other => Err(FetchError::WrongReply {
                got: other.kind(),
                asked: "headers",
            }),
        }
    }

    /// One page of the history of `addresses` from `from_height` on, up to our tip `until`
    /// ([`Request::History`]): how far the page is complete, and its transactions, unchecked.
    /// `None` when the server answers no history ([`NoHistory`]).
    pub fn history(
        &mut self,
        addresses: &[Address],
        from_height: u64,
        until: Hash256,
    ) -> Result<Result<(u64, Vec<ProvenTx>), NoHistory>, FetchError> {
        match self.request(&Request::History {
            addresses: addresses.to_vec(),
            from_height,
            until,
        })? {
            Reply::History { through, entries } => Ok(Ok((through, entries))),
            Reply::NoHistory(why) => Ok(Err(why)),
            other => Err(FetchError::WrongReply {
                got: other.kind(),
                asked: "history",
            }),
        }
    }

    /// Downloads the server's best chain beyond `locator`, batch after batch, handing each
    /// batch (consecutive blocks, lowest first) and the server's tip height to `deliver`,
    /// which says how many of them were new, or why it takes no more ([`FetchError::Refused`]
    /// for a block it could not add, [`FetchError::Cancelled`] when it stopped).
    ///
    /// Only new blocks are progress: the download ends when a batch brings nothing new (the
    /// caller judges whether it got what the peer announced), when the server has nothing
    /// more, after `limit` new blocks, or when `deliver` refuses a batch. A batch must follow
    /// the request: its first block must follow a hash the request named and every block the
    /// one before it, so a server replaying blocks it was not asked for fails at once.
    /// Returns how many new blocks were delivered.
    pub fn download(
        &mut self,
        locator: &[Hash256],
        limit: u64,
        mut deliver: impl FnMut(Vec<Block>, u64) -> Result<u64, FetchError>,
    ) -> Result<u64, FetchError> {
        let mut delivered = 0u64;
        let mut next: Vec<Hash256> = locator.iter().take(MAX_LOCATOR_LEN).copied().collect();
        while delivered < limit {
            let want = (limit - delivered).min(u64::from(self.batch)) as u32;
            let (tip_height, blocks) = match self.request(&Request::BlocksAfter {
                locator: next.clone(),
                max_blocks: want,
            })? {
                Reply::Blocks {
                    tip_height, blocks, ..
                } => (tip_height, blocks),
                other => {
                    return Err(FetchError::WrongReply {
                        got: other.kind(),
                        asked: "blocks",
                    });
                }
            };
            let Some(last) = blocks.last().map(|b| (b.hash(), b.header.height)) else {
                break;
            };
            if blocks.len() > want as usize {
                return Err(FetchError::TooMany {
                    what: "blocks",
                    got: blocks.len(),
                    asked: want,
                });
            }
            check_linked(&blocks, &next)?;
            let new = deliver(blocks, tip_height)?;
            delivered += new;
            if new == 0 || last.1 >= tip_height {
                break;
            }
            // Go on after the last block received, whatever our own chain did meanwhile.
            next = std::iter::once(last.0)
                .chain(locator.iter().take(MAX_LOCATOR_LEN - 1).copied())
                .collect();
        }
        Ok(delivered)
    }

    /// Runs `download`, headers first: the server's own status must back the claim that
    /// sent us to it, then the branch after our fork points `from` is judged by its headers
    /// ([`BlockClient::check_branch`]; `params` the rules, `now` our Unix time), so a branch
    /// lighter than announced costs no block body; then its blocks come batch by batch to
    /// `deliver`. Returns the new blocks delivered.
    pub fn fetch(
        &mut self,
        download: &Download,
        from: &ForkPoints,
        params: &ConsensusParams,
        now: u64,
        deliver: impl FnMut(Vec<Block>, u64) -> Result<u64, FetchError>,
    ) -> Result<u64, FetchError> {
        // First ask the server what it says of itself: a status naming its address may not be
        // its own, and it must not be blamed for someone else's claim. (A server that answers
        // no status, such as a bare block server, is judged by its headers alone.)
        match self.status() {
            Ok(told) if told.chain_work < download.announced.chain_work => {
                return Err(FetchError::Disowned {
                    told,
                    announced: download.announced.chain_work,
                });
            }
            Ok(_) | Err(FetchError::WrongReply { .. }) => {}
            Err(e) => return Err(e),
        }
        let locator = from.locator();
        self.check_branch(
            locator,
            |h| from.ours(h),
            params,
            now,
            download.announced.chain_work,
            download.limit(),
        )?;
        self.download(locator, download.limit(), deliver)
    }

    /// Judges the server's branch by its headers before any block body is fetched: asks for
    /// the headers after `locator` until they carry the `announced` work (at most `limit`
    /// headers), checks that they link, each to its parent, with every rule a header alone can
    /// be held to (`params`, our clock `now`), and adds up their work from the fork point.
    /// `ours` gives our header and chain work at a hash of the locator. Returns the branch's
    /// work, or [`FetchError::LightBranch`] when it is short of what the peer announced.
    pub fn check_branch(
        &mut self,
        locator: &[Hash256],
        ours: impl Fn(&Hash256) -> Option<(BlockHeader, u128)>,
        params: &ConsensusParams,
        now: u64,
        announced: u128,
        limit: u64,
    ) -> Result<u128, FetchError> {
        let mut asked: Vec<Hash256> = locator.iter().take(MAX_LOCATOR_LEN).copied().collect();
        let mut parent: Option<BlockHeader> = None;
        let mut work = 0u128;
        let mut seen = 0u64;
        while work < announced && seen < limit {
            let want = (limit - seen).min(MAX_HEADERS_PER_REPLY as u64) as u32;
            let headers = match self.request(&Request::HeadersAfter {
                locator: asked.clone(),
                max_headers: want,
            })? {
                Reply::Headers { headers, .. } => headers,
                other => {
                    return Err(FetchError::WrongReply {
                        got: other.kind(),
                        asked: "headers",
                    });
                }
            };
            if headers.len() > want as usize {
                return Err(FetchError::TooMany {
                    what: "headers",
                    got: headers.len(),
                    asked: want,
                });
            }
            let Some(last) = headers.last().map(BlockHeader::hash) else {
                break;
            };
            for h in &headers {
                let p = match parent {
                    Some(p) => p,
                    // The first header must follow a block of ours the request named.
                    None => {
                        let known = asked.contains(&h.prev_hash).then(|| ours(&h.prev_hash));
                        let Some((p, fork_work)) = known.flatten() else {
                            return Err(FetchError::Unlinked {
                                block: h.hash(),
                                height: h.height,
                                after: "any block the request named".into(),
                            });
                        };
                        work = fork_work;
                        p
                    }
                };
                check_header(h, &p, params, now).map_err(|error| FetchError::BadHeader {
                    hash: h.hash(),
                    height: h.height,
                    error: Box::new(error),
                })?;
                work = work.saturating_add(h.work());
                parent = Some(*h);
            }
            seen += headers.len() as u64;
            asked = vec![last];
        }
        if work < announced {
            return Err(FetchError::LightBranch { work, announced });
        }
        Ok(work)
    }
}

/// Checks that `blocks` start after one of the `asked` hashes and each follows the one before.
fn check_linked(blocks: &[Block], asked: &[Hash256]) -> Result<(), FetchError> {
    let unlinked = |block: &Block, after: String| FetchError::Unlinked {
        block: block.hash(),
        height: block.header.height,
        after,
    };
    if let Some(first) = blocks.first()
        && !asked.contains(&first.header.prev_hash)
    {
        return Err(unlinked(first, "any block the request named".into()));
    }
    match blocks
        .windows(2)
        .find(|w| w[1].header.prev_hash != w[0].hash())
    {
        Some(w) => Err(unlinked(&w[1], w[0].hash().to_string())),
        None => Ok(()),
    }
}

/// Connects within [`CONNECT_TIMEOUT`]. With a stop flag or a deadline, the connect runs on a
/// helper thread so the wait can end sooner (the thread ends by itself within the timeout).
fn connect_cancellable(peer: SocketAddr, cancel: &Cancel) -> Result<TcpStream, FetchError> {
    let connect_err = |source| FetchError::Connect { peer, source };
    cancel.check()?;
    if cancel.slice(CONNECT_TIMEOUT) == CONNECT_TIMEOUT {
        return TcpStream::connect_timeout(&peer, CONNECT_TIMEOUT).map_err(connect_err);
    }
    let (done, result) = mpsc::sync_channel(1);
    thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            let _ = done.send(TcpStream::connect_timeout(&peer, CONNECT_TIMEOUT));
        })
        .map_err(connect_err)?;
    let give_up = Instant::now() + CONNECT_TIMEOUT;
    loop {
        cancel.check()?;
        let wait = cancel.slice(give_up.saturating_duration_since(Instant::now()));
        match result.recv_timeout(wait) {
            Ok(connected) => return connected.map_err(connect_err),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(connect_err(std::io::Error::other(
                    "the connect thread ended",
                )));
            }
        }
    }
}
