//! The mvbc node core: what the miner and the wallet's `sync` both do with a chain and its
//! peers, written once. It does no I/O of its own, owns no socket and never depends on a GPU
//! stack. A block received from a peer comes from `mvbc-net`'s client, through the miner's
//! driver (`mvbc_miner::driver`) as [`core::Input::Downloaded`], to [`apply`], which adds it
//! to the chain and the store; the limits on links are the constants of [`links`].
//!
//! - [`core`]: the miner node as a state machine, one door (`NodeCore::handle`): inputs in
//!   with the time, effects out (announce, download, mine, stop, keep a link, notes for the
//!   user); `mvbc_miner::driver` is its driver.
//!
//! Its parts, each usable alone:
//! - [`apply`]: one way to add blocks, mined or downloaded, to the chain and its store: what
//!   joins the best chain is appended, a store that cannot take it stops the caller the same
//!   way in both programs, and a batch reports its new blocks and one merged tip move;
//! - [`sync`]: whom to download from, several peers at once, and judging each download, with
//!   the values that differ between the miner and the wallet named in one place
//!   ([`sync::Role`]);
//! - [`template`]: the next block to mine from the chain and the pool;
//! - [`farm`]: the pool side of a node: workers that only hash, their jobs, shares and rates;
//! - [`links`]: TCP links to peers beyond the broadcast domain: whom to dial, whom to admit,
//!   what each link may send, which addresses to remember, share and save;
//! - [`peers`]: the peers heard, by block server address: their claims, back-offs and whom to
//!   download from next; [`peerfile`]: the addresses saved in `peers.dat`.

#![warn(missing_docs)]

pub mod apply;
pub mod catchup;
pub mod core;
pub mod farm;
pub mod links;
pub mod peerfile;
pub mod peers;
pub mod sync;
pub mod template;
