//! Choosing engines from `--device`, `--threads` and `--cpu-kernel`.

use crate::cpu::{CpuEngine, Kernel};
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

/// The `--cpu-kernel` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    /// The kernel that measures fastest on this CPU at start.
    Auto,
    /// AVX-512, 16 nonces a vector.
    Avx512,
    /// AVX2, 8 nonces a vector.
    Avx2,
    /// x86-64 SHA instructions.
    ShaNi,
    /// `sha2`'s `compress256`, on any CPU.
    Portable,
}

impl KernelChoice {
    /// The kernel this names, `None` for `auto`; an error when this CPU cannot run it.
    pub fn kernel(self) -> Result<Option<Kernel>, SelectError> {
        let kernel = match self {
            KernelChoice::Auto => return Ok(None),
            KernelChoice::Avx512 => Kernel::Avx512,
            KernelChoice::Avx2 => Kernel::Avx2,
            KernelChoice::ShaNi => Kernel::ShaNi,
            KernelChoice::Portable => Kernel::Portable,
        };
        if !kernel.is_available() {
            return Err(SelectError::Kernel(kernel.key()));
        }
        Ok(Some(kernel))
    }
}

/// Why `--device` could not be honoured.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// `--cpu-kernel` names a kernel this CPU cannot run.
    #[error(
        "this CPU cannot run the {0} kernel (it lacks the instructions); try --cpu-kernel auto"
    )]
    Kernel(&'static str),
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
pub fn mining_engine(
    choice: DeviceChoice,
    threads: usize,
    kernel: KernelChoice,
) -> Result<Selection, SelectError> {
    let mut selection = engines(choice, threads, kernel)?;
    selection.engines.truncate(1);
    Ok(selection)
}

/// The engines `choice` names, the one to mine with first: for `auto`, any hardware GPU, then
/// the CPU engine, with `kernel` (measured when `auto`).
pub fn engines(
    choice: DeviceChoice,
    threads: usize,
    kernel: KernelChoice,
) -> Result<Selection, SelectError> {
    let kernel = kernel.kernel()?;
    let cpu = || {
        let engine = match kernel {
            Some(k) => CpuEngine::with_kernel(threads, k),
            None => CpuEngine::new(threads),
        };
        Box::new(engine) as Box<dyn MiningEngine>
    };
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
