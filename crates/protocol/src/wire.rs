//! Wire messages: what travels in UDP datagrams and TCP frames, and their one encoding.
//!
//! ```text
//! message = "MVBC" | version:u8 | postcard body
//! frame   = len:u32 BE | message            (TCP only)
//! ```
//!
//! Over TCP a client sends [`Request`]s and reads one [`Reply`] to each. A
//! [`Request::Link`] answered with [`Reply::Linked`] turns the connection into a link: from
//! then on both sides send [`LinkMessage`]s whenever they like, and nothing else.
//!
//! Every message kind has a hard size cap, checked before anything is decoded, and decoding is
//! canonical (see [`crate::encode`]). Anything that fails to decode is the caller's to drop and
//! count: a node never answers garbage.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::block::{Block, MAX_BLOCK_BYTES};
use crate::encode::{self, DecodeError};
use crate::hash::Hash256;
use crate::header::BlockHeader;
use crate::keys::Address;
use crate::light::{MAX_HISTORY_ADDRESSES, MAX_PROVEN_PER_REPLY, ProvenTx};
use crate::rules::NetworkId;
use crate::tx::{MAX_TX_BYTES, Payment};

/// The first bytes of every message.
pub const MAGIC: [u8; 4] = *b"MVBC";
/// The protocol version this build speaks; messages of any other version are dropped.
pub const VERSION: u8 = 3;
const PREFIX_LEN: usize = MAGIC.len() + 1;

/// Cap on one UDP datagram: a payment with the largest key fits, with room to spare.
pub const MAX_DATAGRAM_BYTES: usize = 2 * MAX_TX_BYTES;
/// Cap on the hashes of one block locator.
pub const MAX_LOCATOR_LEN: usize = 64;
/// Cap on one request frame: a full locator, or a payment with the largest key, fits.
pub const MAX_REQUEST_BYTES: usize = 2 * MAX_TX_BYTES;
/// Cap on one link message: a payment, or a full list of addresses, fits.
pub const MAX_LINK_MESSAGE_BYTES: usize = 4 * MAX_TX_BYTES;
/// Cap on the addresses of one [`LinkMessage::Addrs`].
pub const MAX_ADDRS_PER_MESSAGE: usize = 100;
/// Cap on the blocks of one reply.
pub const MAX_BLOCKS_PER_REPLY: usize = 500;
/// Most headers in one reply: 2,000 headers are about 194 KB.
pub const MAX_HEADERS_PER_REPLY: usize = 2_000;
/// A server stops adding blocks to a reply once it holds this many bytes (it always sends at
/// least one block when it has one).
pub const REPLY_BLOCK_BYTES: usize = 4 << 20;
/// Cap on one reply frame: the byte budget plus one largest block.
pub const MAX_REPLY_BYTES: usize = REPLY_BLOCK_BYTES + MAX_BLOCK_BYTES + 1024;

/// A UDP broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Datagram {
    /// A signed payment for miners to pool (sent to `transaction_port`).
    Payment(Payment),
    /// A miner's chain status (sent to `status_broadcast_port`).
    Status(Status),
    /// Asks every miner to broadcast its status now (sent to `status_broadcast_port`), so a
    /// wallet need not wait a whole broadcast interval to hear who is out there.
    StatusRequest,
}

/// A miner's announcement of its best chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The network of the sender's chain: a node of another one is ignored.
    pub network: NetworkId,
    /// Random per process: lets a node recognise its own broadcasts and count distinct peers.
    pub node_id: u64,
    /// Height of the tip.
    pub height: u64,
    /// Hash of the tip.
    pub tip: Hash256,
    /// Cumulative work of the chain up to the tip.
    pub chain_work: u128,
    /// TCP port of the sender's block server, on the address the datagram came from.
    pub block_server_port: u16,
}

/// Who a node is on the network: what each status it sends says besides its chain. Every
/// [`Status`] a node sends, by broadcast, over a link or from its block server, is built here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Its node id ([`Status::node_id`]); 0 for a bare block server.
    pub node_id: u64,
    /// Its block server's port; 0 for a bare block server.
    pub block_server_port: u16,
}

impl Identity {
    /// Its status with `chain` as its best chain.
    pub fn status(&self, chain: &crate::chain::Chain) -> Status {
        Status {
            network: chain.network_id(),
            node_id: self.node_id,
            height: chain.height(),
            tip: chain.tip_hash(),
            chain_work: chain.chain_work(),
            block_server_port: self.block_server_port,
        }
    }
}

/// A request to a block server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Blocks of the server's best chain that follow the first `locator` hash on that chain
    /// (genesis if none is), lowest first, at most `max_blocks` of them.
    BlocksAfter {
        /// Hashes the client holds, most recent first (see `Chain::locator`).
        #[serde(deserialize_with = "encode::bounded_vec::<_, _, MAX_LOCATOR_LEN>")]
        locator: Vec<Hash256>,
        /// How many blocks the client wants at most.
        max_blocks: u32,
    },
    /// The headers of the same blocks [`Request::BlocksAfter`] would send: a branch's proof of
    /// work and cumulative work can be judged before any block body is fetched.
    HeadersAfter {
        /// Hashes the client holds, most recent first.
        #[serde(deserialize_with = "encode::bounded_vec::<_, _, MAX_LOCATOR_LEN>")]
        locator: Vec<Hash256>,
        /// How many headers the client wants at most.
        max_headers: u32,
    },
    /// The server's node status, as it would announce it ([`Reply::Status`]): how a node
    /// reached only over TCP (a remote wallet) learns the tip.
    Status,
    /// A payment for the node to pool and pass on ([`Reply::Submitted`]), as if broadcast.
    Submit(Payment),
    /// Turns this connection into a link ([`Reply::Linked`]); the client's status says who it
    /// is and which port its own block server listens on.
    Link(Status),
    /// The transactions of the best chain that touch `addresses`, from block `from_height` up
    /// to block `until` at most, each with its merkle path ([`Reply::History`]): what a light
    /// wallet asks ([`crate::light`]).
    History {
        /// The addresses.
        #[serde(deserialize_with = "encode::bounded_vec::<_, _, MAX_HISTORY_ADDRESSES>")]
        addresses: Vec<Address>,
        /// The first height wanted.
        from_height: u64,
        /// The client's tip: the answer covers no block above it, and none at all when the
        /// server's best chain does not hold it.
        until: Hash256,
    },
}

/// What nodes send each other over a link, in either direction, unasked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkMessage {
    /// The sender's status: at once on a new tip, and every status interval.
    Status(Status),
    /// A payment the sender pooled and passes on (each once per link).
    Payment(Payment),
    /// Nodes the sender knows: their block servers' addresses.
    Addrs(
        #[serde(deserialize_with = "encode::bounded_vec::<_, _, MAX_ADDRS_PER_MESSAGE>")]
        Vec<SocketAddr>,
    ),
}

/// A block server's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The blocks asked for, lowest first, and the server's tip when it answered.
    Blocks {
        /// The server's tip height.
        tip_height: u64,
        /// The server's tip hash.
        tip: Hash256,
        /// Consecutive blocks of the server's best chain.
        #[serde(deserialize_with = "encode::bounded_vec::<_, _, MAX_BLOCKS_PER_REPLY>")]
        blocks: Vec<Block>,
    },
    /// The headers asked for, lowest first, and the server's tip when it answered.
    Headers {
        /// The server's tip height.
        tip_height: u64,
        /// The server's tip hash.
        tip: Hash256,
        /// Headers of consecutive blocks of the server's best chain.
        #[serde(deserialize_with = "encode::bounded_vec::<_, _, MAX_HEADERS_PER_REPLY>")]
        headers: Vec<BlockHeader>,
    },
    /// The server's status.
    Status(Status),
    /// The payment was handed to the node (it is pooled or refused there, as a broadcast
    /// one would be).
    Submitted,
    /// The connection is a link from now on; the server's status.
    Linked(Status),
    /// A page of history: every transaction touching the addresses asked for in the blocks
    /// from the height asked for through `through`, lowest first, each proven.
    History {
        /// The answer is complete through this height (below the height asked for when the
        /// server cannot go on for now).
        through: u64,
        /// The transactions, by height and position.
        #[serde(deserialize_with = "encode::bounded_vec::<_, _, MAX_PROVEN_PER_REPLY>")]
        entries: Vec<ProvenTx>,
    },
    /// The server answers no history request, and why.
    NoHistory(NoHistory),
}

/// Why a block server answers no history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoHistory {
    /// It keeps no index (a bare block server, or its index failed).
    NoIndex,
    /// Its best chain does not hold the client's tip.
    UnknownTip,
}

/// Why bytes were not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Longer than the cap for its kind.
    #[error("{len} bytes exceeds the cap of {cap} bytes")]
    TooLong {
        /// Message length.
        len: usize,
        /// The cap.
        cap: usize,
    },
    /// Does not start with [`MAGIC`].
    #[error("bad magic (not an mvbc message)")]
    BadMagic,
    /// Another protocol version.
    #[error("protocol version {0}, this node speaks {VERSION}")]
    BadVersion(u8),
    /// The body does not decode.
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

/// Encodes `message` with the magic and version prefix.
fn encode_message<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&encode::encode(message));
    out
}

/// Decodes one message of at most `cap` bytes, prefix included.
fn decode_message<T: Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
    cap: usize,
) -> Result<T, WireError> {
    if bytes.len() > cap {
        return Err(WireError::TooLong {
            len: bytes.len(),
            cap,
        });
    }
    if bytes.len() < PREFIX_LEN || bytes[..MAGIC.len()] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if bytes[MAGIC.len()] != VERSION {
        return Err(WireError::BadVersion(bytes[MAGIC.len()]));
    }
    Ok(encode::decode(&bytes[PREFIX_LEN..], cap)?)
}

impl Datagram {
    /// Bytes for one datagram.
    pub fn encode(&self) -> Vec<u8> {
        encode_message(self)
    }

    /// Decodes one datagram of at most [`MAX_DATAGRAM_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Datagram, WireError> {
        decode_message(bytes, MAX_DATAGRAM_BYTES)
    }
}

impl Request {
    /// Bytes for one request frame's body.
    pub fn encode(&self) -> Vec<u8> {
        encode_message(self)
    }

    /// Decodes one request of at most [`MAX_REQUEST_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Request, WireError> {
        decode_message(bytes, MAX_REQUEST_BYTES)
    }
}

impl Reply {
    /// Bytes for one reply frame's body.
    pub fn encode(&self) -> Vec<u8> {
        encode_message(self)
    }

    /// The bytes of [`Reply::Blocks`] for blocks shared with a chain, without copying them into
    /// a `Reply` first: a block server answers from its chain's blocks as they are.
    pub fn encode_blocks(tip_height: u64, tip: Hash256, blocks: &[Arc<Block>]) -> Vec<u8> {
        /// The same shape as [`Reply`] (its first variant), borrowing its blocks: the same
        /// bytes.
        #[derive(Serialize)]
        enum BorrowedReply<'a> {
            Blocks {
                tip_height: u64,
                tip: Hash256,
                blocks: Vec<&'a Block>,
            },
        }
        encode_message(&BorrowedReply::Blocks {
            tip_height,
            tip,
            blocks: blocks.iter().map(|b| &**b).collect(),
        })
    }

    /// Decodes one reply of at most [`MAX_REPLY_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Reply, WireError> {
        decode_message(bytes, MAX_REPLY_BYTES)
    }
}

impl Reply {
    /// What kind of reply this is, for messages about a wrong one.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Blocks { .. } => "blocks",
            Reply::Headers { .. } => "headers",
            Reply::Status(_) => "status",
            Reply::Submitted => "submitted",
            Reply::Linked(_) => "linked",
            Reply::History { .. } => "history",
            Reply::NoHistory(_) => "no history",
        }
    }
}

impl LinkMessage {
    /// Bytes for one link frame's body.
    pub fn encode(&self) -> Vec<u8> {
        encode_message(self)
    }

    /// Decodes one link message of at most [`MAX_LINK_MESSAGE_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<LinkMessage, WireError> {
        decode_message(bytes, MAX_LINK_MESSAGE_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::genesis_block;
    use crate::keys::tests::test_key;
    use crate::tx::tests::pay;
    use proptest::prelude::*;

    fn status() -> Status {
        Status {
            network: NetworkId([1, 2, 3, 4, 5, 6, 7, 8]),
            node_id: 7,
            height: 3,
            tip: genesis_block().hash(),
            chain_work: u128::MAX - 1,
            block_server_port: 2607,
        }
    }

    #[test]
    fn messages_round_trip() {
        let datagrams = [
            Datagram::Payment(pay(0, test_key(1).address(), 5, 100)),
            Datagram::Status(status()),
            Datagram::StatusRequest,
        ];
        for d in datagrams {
            let bytes = d.encode();
            assert!(bytes.len() <= MAX_DATAGRAM_BYTES);
            assert_eq!(Datagram::decode(&bytes), Ok(d));
        }
        let request = Request::BlocksAfter {
            locator: vec![Hash256::ZERO; MAX_LOCATOR_LEN],
            max_blocks: 9,
        };
        let bytes = request.encode();
        assert!(bytes.len() <= MAX_REQUEST_BYTES, "a full locator fits");
        assert_eq!(Request::decode(&bytes), Ok(request));
        let reply = Reply::Blocks {
            tip_height: 0,
            tip: genesis_block().hash(),
            blocks: vec![genesis_block()],
        };
        assert_eq!(Reply::decode(&reply.encode()), Ok(reply.clone()));
        let big = pay(0, test_key(1).address(), 5, 100);
        for request in [
            Request::Status,
            Request::Submit(big.clone()),
            Request::Link(status()),
        ] {
            let bytes = request.encode();
            assert!(bytes.len() <= MAX_REQUEST_BYTES);
            assert_eq!(Request::decode(&bytes), Ok(request));
        }
        for reply in [
            Reply::Status(status()),
            Reply::Submitted,
            Reply::Linked(status()),
        ] {
            assert_eq!(Reply::decode(&reply.encode()), Ok(reply));
        }
        let addrs: Vec<SocketAddr> = (0..MAX_ADDRS_PER_MESSAGE)
            .map(|i| SocketAddr::from(([10, 0, (i / 256) as u8, i as u8], 2607)))
            .chain(["[fd00::1]:2607".parse().unwrap()])
            .skip(1)
            .collect();
        for message in [
            LinkMessage::Status(status()),
            LinkMessage::Payment(big),
            LinkMessage::Addrs(addrs),
        ] {
            let bytes = message.encode();
            assert!(bytes.len() <= MAX_LINK_MESSAGE_BYTES);
            assert_eq!(LinkMessage::decode(&bytes), Ok(message));
        }
        let too_many = LinkMessage::Addrs(vec![
            "10.0.0.1:1".parse().unwrap();
            MAX_ADDRS_PER_MESSAGE + 1
        ]);
        assert!(matches!(
            LinkMessage::decode(&too_many.encode()),
            Err(WireError::Decode(_))
        ));
        assert_eq!(
            Reply::encode_blocks(0, genesis_block().hash(), &[Arc::new(genesis_block())]),
            reply.encode(),
            "a reply of shared blocks is the same bytes"
        );
    }

    #[test]
    fn foreign_and_future_messages_are_refused() {
        let mut bytes = Datagram::StatusRequest.encode();
        bytes[0] = b'X';
        assert_eq!(Datagram::decode(&bytes), Err(WireError::BadMagic));
        let mut bytes = Datagram::StatusRequest.encode();
        bytes[4] = VERSION + 1;
        assert_eq!(
            Datagram::decode(&bytes),
            Err(WireError::BadVersion(VERSION + 1))
        );
        assert_eq!(Datagram::decode(b"MVB"), Err(WireError::BadMagic));
        let huge = vec![0u8; MAX_DATAGRAM_BYTES + 1];
        assert!(matches!(
            Datagram::decode(&huge),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn a_locator_over_the_cap_is_refused() {
        let request = Request::BlocksAfter {
            locator: vec![Hash256::ZERO; MAX_LOCATOR_LEN + 1],
            max_blocks: 1,
        };
        assert!(matches!(
            Request::decode(&request.encode()),
            Err(WireError::Decode(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = MAGIC.to_vec();
            bytes.push(VERSION);
            bytes.extend_from_slice(&body);
            if let Ok(d) = Datagram::decode(&bytes) {
                prop_assert_eq!(d.encode(), bytes.clone());
            }
            if let Ok(r) = Request::decode(&bytes) {
                prop_assert_eq!(r.encode(), bytes.clone());
            }
            if let Ok(r) = Reply::decode(&bytes) {
                prop_assert_eq!(r.encode(), bytes.clone());
            }
            if let Ok(m) = LinkMessage::decode(&bytes) {
                prop_assert_eq!(m.encode(), bytes);
            }
        }
    }
}
