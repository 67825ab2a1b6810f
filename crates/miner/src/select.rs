//! Choosing engines from `--device` and `--threads`.

use crate::cpu::CpuEngine;
use crate::engine::{EngineError, MiningEngine};
use crate::gpu::{GpuDevice, GpuEngine, GpuError};

/// The `--device` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// A hardware GPU when wgpu finds one, else the CPU.
    Auto,
    /// The GPU adapter wgpu picks, even a software one such as lavapipe; fails if none.
    Gpu,
    /// CPU threads only.
    Cpu,
}

/// Why `--device` could not be honoured.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// `--device gpu` and no adapter, or no device from it.
    #[error(transparent)]
    NoGpu(#[from] GpuError),
    /// The GPU was found but the engine could not be built on it.
    #[error("the GPU engine could not start: {0}")]
    Engine(#[from] EngineError),
}

/// The engines a run uses, and a line saying why when `auto` passed over a GPU.
pub struct Selection {
    /// Engines, the one to mine with first.
    pub engines: Vec<Box<dyn MiningEngine>>,
    /// Why `auto` chose what it chose, for the user.
    pub note: Option<String>,
}

/// The engine to mine with: the first of [`engines`].
pub fn mining_engine(choice: DeviceChoice, threads: usize) -> Result<Selection, SelectError> {
    let mut selection = engines(choice, threads)?;
    selection.engines.truncate(1);
    Ok(selection)
}

/// The engines `choice` names, the one to mine with first: for `auto`, any hardware GPU, then
/// the CPU engine.
pub fn engines(choice: DeviceChoice, threads: usize) -> Result<Selection, SelectError> {
    let cpu = || Box::new(CpuEngine::new(threads)) as Box<dyn MiningEngine>;
    match choice {
        DeviceChoice::Cpu => Ok(Selection {
            engines: vec![cpu()],
            note: None,
        }),
        DeviceChoice::Gpu => {
            let gpu = GpuEngine::new(GpuDevice::acquire()?)?;
            Ok(Selection {
                engines: vec![Box::new(gpu)],
                note: None,
            })
        }
        DeviceChoice::Auto => {
            let (gpu, note) = match GpuDevice::acquire() {
                Ok(device) if device.info().device_type == wgpu::DeviceType::Cpu => (
                    None,
                    Some(format!(
                        "the only GPU adapter, {}, is a software rasteriser slower than the \
                         CPU engine; using the CPU (--device gpu forces it)",
                        device.describe()
                    )),
                ),
                Ok(device) => (Some(GpuEngine::new(device)?), None),
                Err(e) => (None, Some(format!("{e}; using the CPU"))),
            };
            let mut engines: Vec<Box<dyn MiningEngine>> = Vec::new();
            engines.extend(gpu.map(|g| Box::new(g) as Box<dyn MiningEngine>));
            engines.push(cpu());
            Ok(Selection { engines, note })
        }
    }
}
