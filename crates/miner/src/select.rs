//! Choosing engines from `--device`, `--threads` and `--cpu-kernel`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::cpu::{CpuEngine, Kernel};
use crate::engine::{EngineError, EngineInfo, MiningEngine};
use crate::gpu::{self, GpuDevice, GpuError};
use crate::multi::MultiEngine;
use crate::tune::{self, TuneCache};

/// The `--device` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// Every hardware GPU, together; the CPU when there is none.
    Auto,
    /// Every GPU adapter and the CPU, together.
    All,
    /// The GPU adapter wgpu picks, even a software one such as lavapipe; fails if none.
    Gpu,
    /// The adapter at this place in `--list-devices`, software ones too.
    GpuIndex(usize),
    /// CPU threads only.
    Cpu,
    /// No device: the node mines nothing itself and hands its work to its pool's workers.
    None,
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<DeviceChoice, String> {
        let choice = match s {
            "auto" => DeviceChoice::Auto,
            "all" => DeviceChoice::All,
            "gpu" => DeviceChoice::Gpu,
            "cpu" => DeviceChoice::Cpu,
            "none" => DeviceChoice::None,
            other => match other.strip_prefix("gpu:").map(str::parse) {
                Some(Ok(index)) => DeviceChoice::GpuIndex(index),
                _ => {
                    return Err(format!(
                        "`{s}` is not a device: auto, all, cpu, gpu, gpu:N (N from --list-devices) or none"
                    ));
                }
            },
        };
        Ok(choice)
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::All => f.write_str("all"),
            DeviceChoice::Gpu => f.write_str("gpu"),
            DeviceChoice::GpuIndex(i) => write!(f, "gpu:{i}"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::None => f.write_str("none"),
        }
    }
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

/// Why `--device` or `--cpu-kernel` could not be honoured.
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
    /// `--device gpu:N` past the end of the list.
    #[error("there is no gpu:{index}: wgpu sees {count} adapters (see --list-devices)")]
    NoSuchAdapter {
        /// The index asked for.
        index: usize,
        /// Adapters there are.
        count: usize,
    },
    /// The GPU was found but the engine could not be built on it.
    #[error("the GPU engine could not start: {0}")]
    Engine(#[from] EngineError),
}

/// The engines a run uses, and a line saying what `auto` or `all` passed over and why.
pub struct Selection {
    /// One engine per device, GPUs first.
    pub engines: Vec<Box<dyn MiningEngine>>,
    /// What was passed over, for the user.
    pub note: Option<String>,
    /// For each GPU engine: its adapter and how it is tuned, for the user.
    pub tuning: Vec<String>,
    /// How `--cpu-kernel auto` picked the CPU engine's kernel, when it did.
    pub kernel_pick: Option<crate::pick::Pick>,
}

/// Nonces each device has tried, for reporting rates while several mine together.
#[derive(Clone)]
pub struct DeviceMeters {
    /// Each device's description.
    pub devices: Vec<EngineInfo>,
    /// Nonces each has tried so far, in the same order.
    pub counts: Arc<Vec<AtomicU64>>,
}

impl Selection {
    /// The engine to mine with: the one device, or every device at once (with their meters).
    pub fn combine(mut self) -> (Box<dyn MiningEngine>, Option<DeviceMeters>) {
        if self.engines.len() == 1 {
            return (self.engines.remove(0), None);
        }
        let multi = MultiEngine::new(self.engines);
        let meters = DeviceMeters {
            devices: multi.devices(),
            counts: multi.meters(),
        };
        (Box::new(multi), Some(meters))
    }
}

/// The engines `choice` names. Software adapters (lavapipe, llvmpipe: a rasteriser on the CPU,
/// slower than the CPU engine there) join `auto` and `all` only with `allow_software`; named
/// ones (`gpu`, `gpu:N`) always run.
pub fn engines(
    choice: DeviceChoice,
    threads: usize,
    kernel: KernelChoice,
    allow_software: bool,
    cache: &TuneCache,
) -> Result<Selection, SelectError> {
    let kernel = kernel.kernel()?;
    let mut tuning = Vec::new();
    let mut gpu_engine = |device: GpuDevice| -> Result<Box<dyn MiningEngine>, SelectError> {
        let name = device.describe();
        let (engine, line) = tune::tuned_engine(device, cache)?;
        tuning.push(format!("{name}: {line}"));
        Ok(Box::new(engine))
    };
    let mut kernel_pick = None;
    let mut cpu = || {
        let kernel = kernel.unwrap_or_else(|| {
            // The kernel cache lives beside the GPU tuning cache, in the data directory.
            let path = cache.path.as_deref().and_then(std::path::Path::parent);
            let pick = crate::pick::pick(path.map(crate::pick::cache_in).as_deref(), cache.retune);
            let kernel = pick.kernel;
            kernel_pick = Some(pick);
            kernel
        });
        Box::new(CpuEngine::with_kernel(threads, kernel)) as Box<dyn MiningEngine>
    };
    let (engines, note) = match choice {
        DeviceChoice::Cpu => (vec![cpu()], None),
        DeviceChoice::None => (
            vec![Box::new(crate::engine::IdleEngine) as Box<dyn MiningEngine>],
            None,
        ),
        DeviceChoice::Gpu => (vec![gpu_engine(GpuDevice::acquire()?)?], None),
        DeviceChoice::GpuIndex(index) => {
            let mut all = gpu::adapters();
            let count = all.len();
            if index >= count {
                return Err(SelectError::NoSuchAdapter { index, count });
            }
            let device = all.swap_remove(index).acquire()?;
            (vec![gpu_engine(device)?], None)
        }
        DeviceChoice::Auto | DeviceChoice::All => {
            let (mut engines, mut software, mut failed) = (Vec::new(), Vec::new(), Vec::new());
            for adapter in gpu::adapters() {
                let name = adapter.describe();
                if adapter.is_software() && !allow_software {
                    software.push(name);
                    continue;
                }
                match adapter
                    .acquire()
                    .map_err(SelectError::from)
                    .and_then(&mut gpu_engine)
                {
                    Ok(engine) => engines.push(engine),
                    Err(e) => failed.push(format!("{name}: {e}")),
                }
            }
            let mut notes = Vec::new();
            if engines.is_empty() && software.is_empty() && failed.is_empty() {
                notes.push("no GPU adapter found".to_string());
            }
            if choice == DeviceChoice::Auto && engines.is_empty() {
                notes.push("using the CPU".to_string());
            }
            if choice == DeviceChoice::All || engines.is_empty() {
                engines.push(cpu());
            }
            if !software.is_empty() {
                notes.push(format!(
                    "passed over {} (software, slower than the CPU engine on the same cores; \
                     MVBC_ALLOW_SOFTWARE_GPU=1 lets them in, --device gpu:N names one)",
                    software.join(" and ")
                ));
            }
            if !failed.is_empty() {
                notes.push(format!("could not use {}", failed.join("; ")));
            }
            let note = (!notes.is_empty()).then(|| notes.join("; "));
            (engines, note)
        }
    };
    Ok(Selection {
        engines,
        note,
        tuning,
        kernel_pick,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse_and_print_back() {
        for text in ["auto", "all", "cpu", "gpu", "gpu:0", "gpu:12"] {
            let choice: DeviceChoice = text.parse().unwrap();
            assert_eq!(choice.to_string(), text);
        }
        assert_eq!("gpu:3".parse(), Ok(DeviceChoice::GpuIndex(3)));
        for bad in ["", "GPU", "gpu:", "gpu:-1", "gpu:x", "tpu"] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(err.contains("is not a device"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_cpu_alone_is_one_engine_with_no_meters() {
        let cache = TuneCache::default();
        let selection =
            engines(DeviceChoice::Cpu, 1, KernelChoice::Portable, false, &cache).unwrap();
        let (engine, meters) = selection.combine();
        assert_eq!(engine.info().adapter, Kernel::Portable.name());
        assert!(meters.is_none());
    }
}
