//! The test kit of the mvbc workspace (never published): what the tests of every crate share,
//! written once.
//!
//! - [`procs`]: real `mvbc-miner` and `mvbc-wallet` processes on loopback, each test on its own
//!   free ports, watched through their API and block server; made-up chains to start them on.
//! - [`rng`]: the tests' one seeded random generator.
//! - [`http`]: the test's side of the miner's HTTP API, raw, so tests can send what no
//!   well-behaved client would.
//! - [`fake`]: peers that lie, stall or replay, clients that pretend to be other hosts, and
//!   made-up keys and forged payments, as an attacker makes them.
//! - [`shares`]: shares of a pool's job found by hand, for tests that speak its protocol.
//! - [`netns`]: test hosts in network namespaces the test makes itself (root only).
//! - [`gpu`]: GPU engines for tests, skipped with a visible message where no adapter exists,
//!   a failure with `MVBC_REQUIRE_GPU=1`.
//!
//! Blocks are put together with `mvbc_protocol::Block::assemble`, as the node does.

pub mod fake;
pub mod gpu;
pub mod http;
pub mod netns;
pub mod procs;
pub mod rng;
pub mod shares;
