//! The mvbc miner as a library: its engines, nonce searches on the CPU and, through `wgpu`, on
//! the GPU, all behind [`engine::MiningEngine`] and all checked on the CPU by
//! [`engine::search_verified`]; and the node that mines with one ([`driver`]: [`driver::spawn`]
//! returns a handle), with its window, the JSON API and explorer ([`api`]). The `mvbc-miner`
//! binary is its command line; a received block goes from `mvbc-net`'s threads through
//! [`driver`] to `mvbc_node::core`, which decides.

#![warn(missing_docs)]

pub mod api;
pub mod bench;
pub mod cpu;
pub mod driver;
pub mod engine;
pub mod gpu;
pub mod multi;
pub mod pick;
pub mod select;
#[cfg(target_arch = "x86_64")]
pub mod shani;
#[cfg(target_arch = "x86_64")]
pub mod simd;
pub mod tune;
pub mod work;
pub mod worker;

pub use cpu::CpuEngine;
pub use engine::{MiningEngine, NonceRange, Search, SearchControl, search_verified};
pub use gpu::{GpuDevice, GpuEngine};
pub use multi::MultiEngine;
pub use work::WorkUnit;
