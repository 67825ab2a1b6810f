//! Hash rates side by side, in one run on one machine: `cargo bench --bench hashrate`.
//!
//! Criterion's throughput is in nonces ("elem/s"), so each line reads as a hash rate:
//! - `naive`: a full `sha2::Sha256` of the 96-byte header per nonce (two compressions), what a
//!   miner without a midstate does;
//! - `cpu-avx512/1`, `cpu-avx2/1`, `cpu-sha-ni/1`, `cpu-portable/1`: each kernel this CPU runs,
//!   one thread (portable is `sha2`'s `compress256` from the midstate);
//! - `cpu/1` and `cpu/N`: the CPU engine with the kernel it measured fastest, on one and all
//!   threads;
//! - `gpu`: the GPU engine, when wgpu finds an adapter (a software one such as lavapipe too:
//!   its figure then measures the CPU running the shader, not a GPU).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mvbc_miner::bench::UNREACHABLE_DIFFICULTY;
use mvbc_miner::cpu::Kernel;
use mvbc_miner::work::synthetic_header;
use mvbc_miner::{
    CpuEngine, GpuDevice, GpuEngine, MiningEngine, NonceRange, Search, SearchControl, WorkUnit,
};
use sha2::{Digest, Sha256};

/// Nonces per iteration such that one iteration takes about `target`.
fn calibrate(engine: &mut dyn MiningEngine, work: &WorkUnit, target: Duration) -> u64 {
    let mut n = 1u64 << 16;
    loop {
        let start = Instant::now();
        run(engine, work, 0, n);
        let took = start.elapsed();
        if took >= target / 4 || n >= 1 << 40 {
            let scaled = n as f64 * target.as_secs_f64() / took.as_secs_f64();
            return (scaled as u64).max(1 << 16);
        }
        n *= 4;
    }
}

fn run(engine: &mut dyn MiningEngine, work: &WorkUnit, start: u64, n: u64) {
    let r = engine.search(
        work,
        NonceRange::new(start, start + n),
        &SearchControl::new(),
    );
    assert_eq!(
        r.unwrap(),
        Search::Exhausted,
        "no nonce meets the benchmark's difficulty"
    );
}

fn bench_engine(c: &mut Criterion, name: &str, mut engine: Box<dyn MiningEngine>) {
    let work = WorkUnit::new(&synthetic_header(UNREACHABLE_DIFFICULTY));
    let n = calibrate(engine.as_mut(), &work, Duration::from_millis(200));
    let mut group = c.benchmark_group("hashrate");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    let mut start = 0u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            run(engine.as_mut(), &work, start, n);
            start += n;
        })
    });
    group.finish();
}

fn naive(c: &mut Criterion) {
    const N: u64 = 1 << 14;
    let header = synthetic_header(UNREACHABLE_DIFFICULTY);
    let mut group = c.benchmark_group("hashrate");
    group.throughput(Throughput::Elements(N));
    group.bench_function("naive", |b| {
        let mut bytes = header.to_bytes();
        b.iter(|| {
            let mut best = [0xffu8; 32];
            for nonce in 0..N {
                bytes[88..].copy_from_slice(&nonce.to_be_bytes());
                let digest: [u8; 32] = Sha256::digest(bytes).into();
                best = best.min(digest);
            }
            black_box(best)
        })
    });
    group.finish();
}

fn engines(c: &mut Criterion) {
    let all = CpuEngine::default_threads();
    for kernel in Kernel::ALL {
        if kernel.is_available() {
            let name = format!("cpu-{}/1", kernel.key());
            bench_engine(c, &name, Box::new(CpuEngine::with_kernel(1, kernel)));
        } else {
            eprintln!("cpu-{}: skipped, this CPU cannot run it", kernel.key());
        }
    }
    bench_engine(c, "cpu/1", Box::new(CpuEngine::new(1)));
    bench_engine(c, &format!("cpu/{all}"), Box::new(CpuEngine::new(all)));
    match GpuDevice::acquire() {
        Ok(device) => {
            let name = format!("gpu {}", device.describe());
            let engine = GpuEngine::new(device).expect("the shader compiles");
            bench_engine(c, &name, Box::new(engine));
        }
        Err(e) => eprintln!("gpu: skipped, {e}"),
    }
}

criterion_group!(benches, naive, engines);
criterion_main!(benches);
