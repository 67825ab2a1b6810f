//! The mvbc miner's engines: nonce searches on the CPU and, through `wgpu`, on the GPU, all
//! behind [`engine::MiningEngine`] and all checked on the CPU by [`engine::search_verified`].

#![warn(missing_docs)]

pub mod api;
pub mod bench;
pub mod cpu;
pub mod engine;
pub mod gpu;
pub mod multi;
pub mod select;
#[cfg(target_arch = "x86_64")]
pub mod shani;
#[cfg(target_arch = "x86_64")]
pub mod simd;
pub mod tune;
pub mod work;

pub use cpu::CpuEngine;
pub use engine::{MiningEngine, NonceRange, Search, SearchControl, search_verified};
pub use gpu::{GpuDevice, GpuEngine};
pub use multi::MultiEngine;
pub use work::WorkUnit;
