//! The GPU engine: `shaders/sha256_search.wgsl` through `wgpu`, on whatever backend the
//! platform offers (Vulkan, Metal, DX12, GL).
//!
//! Acquiring a device ([`GpuDevice::acquire`]) is separate from running the kernel
//! ([`GpuEngine::new`]) so tests and the benchmark can share one device. Dispatches go through
//! a ring of [`SLOTS`] buffer sets, so the GPU runs the next dispatch while the host reads the
//! last one back. The dispatch size adapts so that each takes about the time [`Tuning`] sets:
//! an abort waits for at most the dispatches in flight.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};

use crate::engine::{
    DeviceKind, EngineError, EngineInfo, GpuFailure, MiningEngine, NonceRange, Search,
    SearchControl,
};
use crate::work::{HighWord, WorkUnit, tail_masks};

/// The WGSL source of the nonce search.
pub const SHADER: &str = include_str!("../../../shaders/sha256_search.wgsl");

/// Buffer sets in the ring: one being read back while the other runs.
pub const SLOTS: usize = 2;
/// Longest wall time a dispatch may be tuned to take: two in flight keep an abort under 100 ms.
pub const MAX_DISPATCH_MS: u32 = 40;
/// Largest dispatch, in nonces. The shader's offsets are `u32`.
const MAX_BATCH: u64 = 1 << 31;
/// First dispatch size: about 16 ms on a CPU rasteriser (lavapipe), well under 1 ms on a GPU.
const FIRST_BATCH: u64 = 1 << 16;
/// What the shader's `found` holds when no invocation passed.
const NONE_FOUND: u32 = u32::MAX;

/// Why no GPU could be used.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// wgpu found no adapter on any backend.
    #[error(
        "no GPU adapter found ({0}); install a Vulkan, Metal, DX12 or GL driver, or use --device cpu"
    )]
    NoAdapter(wgpu::RequestAdapterError),
    /// The adapter would not give a device.
    #[error("the GPU adapter {adapter} refused a device: {source}")]
    Device {
        /// Adapter name and backend.
        adapter: String,
        /// What wgpu said.
        source: wgpu::RequestDeviceError,
    },
}

/// An acquired GPU: the adapter's description and its device and queue.
pub struct GpuDevice {
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// The last validation or out-of-memory error wgpu reported outside an error scope.
    error: Arc<Mutex<Option<wgpu::Error>>>,
}

/// A GPU adapter wgpu sees, by its place in [`adapters`].
pub struct Adapter {
    /// Its place in the list: `--device gpu:N`.
    pub index: usize,
    adapter: wgpu::Adapter,
    info: wgpu::AdapterInfo,
}

impl Adapter {
    /// wgpu's description of the adapter.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Adapter name and backend.
    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// Whether it is a rasteriser running on the CPU (lavapipe, llvmpipe, WARP): slower than
    /// the CPU engine on the same cores.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Opens a device on this adapter.
    pub fn acquire(self) -> Result<GpuDevice, GpuError> {
        GpuDevice::open(self.adapter)
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter on every backend wgpu has (`WGPU_BACKEND` narrows them): hardware first, a
/// physical GPU seen through several backends once, under its best (Vulkan, Metal, DX12, GL).
pub fn adapters() -> Vec<Adapter> {
    let instance = instance();
    let mut found: Vec<(wgpu::Adapter, wgpu::AdapterInfo)> =
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .into_iter()
            .map(|a| {
                let info = a.get_info();
                (a, info)
            })
            .collect();
    let backend_rank = |b: wgpu::Backend| match b {
        wgpu::Backend::Vulkan => 0,
        wgpu::Backend::Metal => 1,
        wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 3,
        _ => 4,
    };
    let type_rank = |t: wgpu::DeviceType| match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    found.sort_by_key(|(_, i)| (type_rank(i.device_type), backend_rank(i.backend)));
    let mut seen = std::collections::HashSet::new();
    found.retain(|(_, i)| {
        // Software rasterisers have no PCI identity: each backend's is its own adapter.
        i.device_type == wgpu::DeviceType::Cpu || i.device == 0 || seen.insert((i.vendor, i.device))
    });
    found
        .into_iter()
        .enumerate()
        .map(|(index, (adapter, info))| Adapter {
            index,
            adapter,
            info,
        })
        .collect()
}

impl GpuDevice {
    /// Takes the high-performance adapter wgpu finds (`WGPU_BACKEND` and the other `WGPU_*`
    /// variables narrow the choice).
    pub fn acquire() -> Result<GpuDevice, GpuError> {
        let adapter =
            pollster::block_on(instance().request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            }))
            .map_err(GpuError::NoAdapter)?;
        GpuDevice::open(adapter)
    }

    /// Opens a device on `adapter`.
    fn open(adapter: wgpu::Adapter) -> Result<GpuDevice, GpuError> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("mvbc miner"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|source| GpuError::Device {
            adapter: describe(&info),
            source,
        })?;
        let error = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&error);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                *slot = Some(e);
            }
        }));
        Ok(GpuDevice {
            info,
            limits,
            device,
            queue,
            error,
        })
    }

    /// Adapter name and backend, e.g. "NVIDIA H100 80GB HBM3 (Vulkan)".
    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// wgpu's description of the adapter.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    fn take_error(&self) -> Result<(), EngineError> {
        match self.error.lock().ok().and_then(|mut e| e.take()) {
            Some(e) => Err(GpuFailure::Device(e).into()),
            None => Ok(()),
        }
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?})", info.name, info.backend)
}

/// The shader's `Params`, laid out as WGSL lays out the uniform (16-byte vectors).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    state: [u32; 8],
    kw: [u32; 16],
    sums: [u32; 16],
    check: [u32; 4],
    nonce: [u32; 4],
}

impl Params {
    /// The uniform for `count` nonces from `start`, all of `high`'s high word; `check` is the
    /// midstate's words 7 and 6 and the masks the digest's words 7 and 6 must clear.
    fn new(high: &HighWord, check: [u32; 4], start: u64, count: u64, row: u32) -> Params {
        debug_assert_eq!(start >> 32, u64::from(high.hi));
        debug_assert!(
            (start & 0xffff_ffff) + count <= 1 << 32,
            "crosses a 2^32 boundary"
        );
        let [b, c, d, f, g, h] = high.after7;
        let mut kw = [0; 16];
        kw[..14].copy_from_slice(&high.kw8_21);
        let mut sums = [0; 16];
        sums.copy_from_slice(&high.shared[22..38]);
        Params {
            state: [high.a7, b, c, d, high.e7, f, g, h],
            kw,
            sums,
            check,
            nonce: [start as u32, count as u32, row, 0],
        }
    }
}

// The shader reads the shared terms of schedule words 22..=37 and no others.
const _: () = assert!(
    crate::work::has_shared_terms(37) && !crate::work::has_shared_terms(38) && MAX_BATCH <= 1 << 32
);

/// One ring entry: the uniform, the result the shader writes, and its mappable copy.
struct Slot {
    params: wgpu::Buffer,
    found: wgpu::Buffer,
    readback: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

/// A dispatch submitted and not yet read back.
struct InFlight {
    slot: usize,
    start: u64,
    count: u64,
    submission: wgpu::SubmissionIndex,
    mapped: mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

/// How the engine runs the shader on one adapter: what [`crate::tune`] measures and caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tuning {
    /// Invocations per workgroup: 64, 128 or 256.
    pub workgroup: u32,
    /// Consecutive nonces each invocation tries: 1, 2, 4 or 8.
    pub per_invocation: u32,
    /// Wall time each dispatch is sized to take, in milliseconds (at most [`MAX_DISPATCH_MS`]).
    pub dispatch_ms: u32,
    /// Whether the shader module is built without wgpu's runtime checks (bounds checks and
    /// loop bounding).
    pub unchecked: bool,
}

impl Tuning {
    /// What the engine runs before any measurement.
    pub const DEFAULT: Tuning = Tuning {
        workgroup: 256,
        per_invocation: 1,
        dispatch_ms: 25,
        unchecked: false,
    };

    /// Whether every value is one the engine supports (a cache file is untrusted).
    pub fn is_valid(&self) -> bool {
        [64, 128, 256].contains(&self.workgroup)
            && [1, 2, 4, 8].contains(&self.per_invocation)
            && (5..=MAX_DISPATCH_MS).contains(&self.dispatch_ms)
    }

    /// Nonces one workgroup covers.
    fn group_nonces(&self) -> u64 {
        u64::from(self.workgroup) * u64::from(self.per_invocation)
    }
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning::DEFAULT
    }
}

impl std::fmt::Display for Tuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "workgroups of {}, {} nonce{} an invocation, {} ms dispatches, {} shader",
            self.workgroup,
            self.per_invocation,
            if self.per_invocation == 1 { "" } else { "s" },
            self.dispatch_ms,
            if self.unchecked {
                "unchecked"
            } else {
                "checked"
            }
        )
    }
}

/// Searches nonces with the WGSL kernel.
pub struct GpuEngine {
    gpu: GpuDevice,
    layout: wgpu::PipelineLayout,
    pipeline: wgpu::ComputePipeline,
    tuning: Tuning,
    slots: Vec<Slot>,
    next_slot: usize,
    /// Nonces per dispatch, adapted to the tuning's dispatch time as dispatches complete.
    batch: u64,
}

/// The shader's one bind group: the uniform and the result.
fn bind_group_layout(device: &wgpu::Device) -> wgpu::BindGroupLayout {
    let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("nonce search"),
        entries: &[
            entry(0, wgpu::BufferBindingType::Uniform),
            entry(1, wgpu::BufferBindingType::Storage { read_only: false }),
        ],
    })
}

/// Compiles the shader with `tuning`'s workgroup size, nonces per invocation and checks.
fn build_pipeline(
    device: &wgpu::Device,
    layout: &wgpu::PipelineLayout,
    tuning: &Tuning,
) -> wgpu::ComputePipeline {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some("sha256_search.wgsl"),
        source: wgpu::ShaderSource::Wgsl(SHADER.into()),
    };
    let module = if tuning.unchecked {
        // SAFETY: wgpu's checks guard against out-of-bounds accesses and unbounded loops. The
        // shader indexes only the uniform's arrays, with constant indices, and touches the
        // storage buffer as one whole `atomic<u32>`; its one loop runs `PER_INVOCATION`
        // (at most 8) times. Tuning keeps this module only where its results verify.
        unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    } else {
        device.create_shader_module(desc)
    };
    let constants = [
        ("WORKGROUP", f64::from(tuning.workgroup)),
        ("PER_INVOCATION", f64::from(tuning.per_invocation)),
    ];
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("nonce search"),
        layout: Some(layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            ..Default::default()
        },
        cache: None,
    })
}

impl GpuEngine {
    /// Compiles the shader on `gpu` with the default [`Tuning`] and allocates the ring.
    pub fn new(gpu: GpuDevice) -> Result<GpuEngine, EngineError> {
        GpuEngine::with_tuning(gpu, Tuning::DEFAULT)
    }

    /// Compiles the shader on `gpu` with `tuning` and allocates the ring.
    pub fn with_tuning(gpu: GpuDevice, tuning: Tuning) -> Result<GpuEngine, EngineError> {
        if !tuning.is_valid() {
            return Err(GpuFailure::UnsupportedTuning(tuning).into());
        }
        let device = &gpu.device;
        let group_layout = bind_group_layout(device);
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("nonce search"),
            bind_group_layouts: &[Some(&group_layout)],
            immediate_size: 0,
        });
        let pipeline = build_pipeline(device, &layout, &tuning);
        let slots = (0..SLOTS)
            .map(|i| {
                let buffer = |label: &str, size: usize, usage| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(label),
                        size: size as u64,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                use wgpu::BufferUsages as U;
                let params = buffer("params", size_of::<Params>(), U::UNIFORM | U::COPY_DST);
                let found = buffer("found", 4, U::STORAGE | U::COPY_SRC | U::COPY_DST);
                let readback = buffer("readback", 4, U::MAP_READ | U::COPY_DST);
                let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&format!("slot {i}")),
                    layout: &group_layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: params.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: found.as_entire_binding(),
                        },
                    ],
                });
                Slot {
                    params,
                    found,
                    readback,
                    bind_group,
                }
            })
            .collect();
        gpu.take_error()?;
        Ok(GpuEngine {
            gpu,
            layout,
            pipeline,
            tuning,
            slots,
            next_slot: 0,
            batch: FIRST_BATCH,
        })
    }

    /// Rebuilds the pipeline for `tuning` (the ring stays).
    pub fn retune(&mut self, tuning: Tuning) -> Result<(), EngineError> {
        if !tuning.is_valid() {
            return Err(GpuFailure::UnsupportedTuning(tuning).into());
        }
        self.pipeline = build_pipeline(&self.gpu.device, &self.layout, &tuning);
        self.gpu.take_error()?;
        self.tuning = tuning;
        self.batch = self.batch.clamp(self.min_batch(), MAX_BATCH);
        Ok(())
    }

    /// The tuning this engine runs with.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    fn min_batch(&self) -> u64 {
        self.tuning.group_nonces() * 16
    }

    /// The device this engine runs on.
    pub fn device(&self) -> &GpuDevice {
        &self.gpu
    }

    /// Nonces the next dispatch will cover.
    pub fn batch(&self) -> u64 {
        self.batch
    }

    fn submit(&mut self, high: &HighWord, check: [u32; 4], start: u64, count: u64) -> InFlight {
        let slot = self.next_slot;
        self.next_slot = (slot + 1) % SLOTS;
        let s = &self.slots[slot];
        let groups = count.div_ceil(self.tuning.group_nonces()) as u32;
        let x = groups.clamp(1, self.gpu.limits.max_compute_workgroups_per_dimension);
        let y = groups.div_ceil(x);
        let params = Params::new(high, check, start, count, x * self.tuning.workgroup);
        let queue = &self.gpu.queue;
        queue.write_buffer(&s.params, 0, bytemuck::bytes_of(&params));
        queue.write_buffer(&s.found, 0, &NONE_FOUND.to_le_bytes());
        let mut encoder = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("nonce search"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &s.bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        encoder.copy_buffer_to_buffer(&s.found, 0, &s.readback, 0, 4);
        let submission = queue.submit([encoder.finish()]);
        let (tx, mapped) = mpsc::channel();
        s.readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        InFlight {
            slot,
            start,
            count,
            submission,
            mapped,
        }
    }

    /// Waits for a dispatch and returns the lowest passing offset, if any.
    fn finish(&self, job: InFlight) -> Result<Option<u32>, EngineError> {
        self.gpu
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(job.submission),
                timeout: None,
            })
            .map_err(GpuFailure::from)?;
        self.gpu.take_error()?;
        match job.mapped.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuFailure::from(e).into()),
            Err(_) => return Err(GpuFailure::NotMapped.into()),
        }
        let readback = &self.slots[job.slot].readback;
        let offset = {
            let view = readback.get_mapped_range(..).map_err(GpuFailure::from)?;
            u32::from_le_bytes([view[0], view[1], view[2], view[3]])
        };
        readback.unmap();
        Ok((offset != NONE_FOUND).then_some(offset))
    }

    /// Scales the dispatch towards the tuning's dispatch time, at most doubling or halving
    /// per step.
    fn adapt(&mut self, count: u64, took: Duration) {
        if count < self.batch {
            return; // a short tail of the range says little about speed
        }
        let target = f64::from(self.tuning.dispatch_ms) / 1000.0;
        let ratio = target / took.as_secs_f64().max(1e-6);
        let next = (self.batch as f64 * ratio.clamp(0.5, 2.0)) as u64;
        let group = self.tuning.group_nonces();
        self.batch = (next / group * group).clamp(self.min_batch(), MAX_BATCH);
    }
}

const _: () = assert!(crate::work::NONCE_LO_WORD == 7);

impl GpuEngine {
    /// The lowest nonce in `range` whose last two digest words (7 and 6), as the shader
    /// computes them, have no bit of `masks[0]` and `masks[1]` set. Mining uses the masks of a
    /// difficulty ([`tail_masks`]); tests use masks spread over all 64 bits, so that every
    /// output bit of the kernel is compared with the CPU, not only the ones a difficulty
    /// looks at.
    pub fn lowest_clearing(
        &mut self,
        work: &WorkUnit,
        range: NonceRange,
        masks: [u32; 2],
    ) -> Result<Option<u64>, EngineError> {
        let check = [work.midstate[7], work.midstate[6], masks[0], masks[1]];
        Ok(
            match self.scan(work, check, range, &SearchControl::new(), |_| true)? {
                Search::Found(n) => Some(n),
                _ => None,
            },
        )
    }

    /// Dispatches go out in nonce order and come back in that order, and each reports its
    /// lowest candidate, so the first candidate read back is the lowest in the range. A
    /// candidate `accept` refuses (the masks see only two digest words, so for difficulties
    /// above 64 some are not solutions) is skipped and the scan resumes after it.
    ///
    /// A dispatch never crosses a 2^32 boundary of the nonce, so its high word is uniform and
    /// what derives from it is computed here ([`HighWord`]), once per high word.
    fn scan(
        &mut self,
        work: &WorkUnit,
        check: [u32; 4],
        range: NonceRange,
        control: &SearchControl,
        accept: impl Fn(u64) -> bool,
    ) -> Result<Search, EngineError> {
        let mut queue: VecDeque<InFlight> = VecDeque::new();
        let mut next = range.start;
        let mut last = Instant::now();
        let mut high: Option<HighWord> = None;
        let outcome = loop {
            while queue.len() < SLOTS && next < range.end && !control.is_stopped() {
                let to_boundary = (1 << 32) - (next & 0xffff_ffff);
                let count = self.batch.min(range.end - next).min(to_boundary);
                let hi = (next >> 32) as u32;
                let h = match &mut high {
                    Some(h) if h.hi == hi => h,
                    slot => slot.insert(HighWord::new(work, hi)),
                };
                let h = *h;
                queue.push_back(self.submit(&h, check, next, count));
                next += count;
            }
            let Some(job) = queue.pop_front() else {
                break if control.is_stopped() {
                    Search::Aborted
                } else {
                    Search::Exhausted
                };
            };
            let (start, count) = (job.start, job.count);
            let found = match self.finish(job) {
                Ok(found) => found,
                Err(e) => {
                    drain(self, queue);
                    return Err(e);
                }
            };
            self.adapt(count, last.elapsed());
            last = Instant::now();
            match found {
                Some(offset) => {
                    control.add_hashes(u64::from(offset) + 1);
                    let nonce = start + u64::from(offset);
                    if accept(nonce) {
                        break Search::Found(nonce);
                    }
                    drain(self, std::mem::take(&mut queue));
                    next = nonce + 1;
                }
                None => control.add_hashes(count),
            }
            if control.is_stopped() {
                break Search::Aborted;
            }
        };
        drain(self, queue);
        Ok(outcome)
    }
}

/// What the shader's check needs for mining `work`: midstate words 7 and 6 and the masks of
/// its difficulty.
fn mining_check(work: &WorkUnit) -> [u32; 4] {
    let [m7, m6] = tail_masks(work.difficulty);
    [work.midstate[7], work.midstate[6], m7, m6]
}

impl MiningEngine for GpuEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            device: DeviceKind::Gpu,
            adapter: self.gpu.describe(),
            backend: format!("{:?}", self.gpu.info.backend),
            threads: 1,
        }
    }

    /// See `GpuEngine::scan`; a nonce is found when the full check on the CPU accepts it.
    fn search(
        &mut self,
        work: &WorkUnit,
        range: NonceRange,
        control: &SearchControl,
    ) -> Result<Search, EngineError> {
        self.scan(work, mining_check(work), range, control, |n| {
            work.is_solution(n)
        })
    }
}

/// Waits out dispatches whose results are no longer wanted, so their buffers are unmapped
/// before the ring is used again.
fn drain(engine: &GpuEngine, queue: VecDeque<InFlight>) {
    for job in queue {
        let _ = engine.finish(job);
    }
}
