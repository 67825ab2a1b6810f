//! The engines agree nonce for nonce (stopping is in `engine_abort.rs`).

use mvbc_testkit::gpu as support;

use mvbc_miner::gpu::Tuning;
use mvbc_miner::tune::{self, TuneCache};
use mvbc_miner::{
    CpuEngine, MiningEngine, NonceRange, Search, SearchControl, WorkUnit, search_verified,
};
use support::{every_device, gpu_engine, work};

/// Every winning nonce in `range`, by repeated verified searches from just past the last hit;
/// `control` counts what the CPU check refused.
fn all_hits(
    engine: &mut dyn MiningEngine,
    work: &WorkUnit,
    range: NonceRange,
    control: &SearchControl,
) -> Vec<u64> {
    let mut hits = Vec::new();
    let mut from = range.start;
    loop {
        match search_verified(engine, work, NonceRange::new(from, range.end), control).unwrap() {
            Search::Found(n) => {
                hits.push(n);
                from = n + 1;
            }
            Search::Exhausted => return hits,
            Search::Aborted => panic!("nobody stopped this search"),
        }
    }
}

/// Ranges chosen to cross the places a 64-bit nonce in two 32-bit words can go wrong.
fn ranges() -> [NonceRange; 4] {
    const LEN: u64 = 3 << 15;
    [
        NonceRange::new(0, LEN),
        // The low word wraps and the high word carries: a dispatch ends at the boundary.
        NonceRange::new((1 << 32) - LEN / 2, (1 << 32) + LEN / 2),
        NonceRange::new(0x7a3c_91d2_e5f0_1234, 0x7a3c_91d2_e5f0_1234 + LEN),
        NonceRange::new(u64::MAX - LEN, u64::MAX),
    ]
}

#[test]
fn gpu_and_cpu_find_the_same_nonces() {
    let Some(mut gpu) = gpu_engine("gpu_and_cpu_find_the_same_nonces") else {
        return;
    };
    let mut cpu = CpuEngine::new(2);
    let control = SearchControl::new();
    for (i, range) in ranges().into_iter().enumerate() {
        let w = work(i as u8 + 1, 11);
        let on_cpu = all_hits(&mut cpu, &w, range, &control);
        let on_gpu = all_hits(&mut gpu, &w, range, &control);
        let expected = range.len() >> 11;
        assert!(
            on_cpu.len() as u64 > expected / 2 && (on_cpu.len() as u64) < expected * 2,
            "{} hits in {range:?}, expected about {expected}",
            on_cpu.len()
        );
        assert_eq!(on_gpu, on_cpu, "range {range:?}");
    }
    assert_eq!(control.refused(), 0, "no engine answered wrongly");
}

#[test]
fn every_device_at_once_finds_exactly_the_nonces_the_cpu_alone_finds() {
    let Some(mut all) = every_device("every_device_at_once") else {
        return;
    };
    let mut cpu = CpuEngine::new(2);
    let control = SearchControl::new();
    for (i, range) in ranges().into_iter().enumerate() {
        let w = work(i as u8 + 11, 11);
        let alone = all_hits(&mut cpu, &w, range, &control);
        assert!(!alone.is_empty(), "hits in {range:?}");
        let together = all_hits(&mut all, &w, range, &control);
        assert_eq!(together, alone, "range {range:?}");
    }
    let meters = all.meters();
    let per_device: Vec<u64> = meters
        .iter()
        .map(|m| m.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    assert!(
        per_device.iter().all(|&n| n > 0),
        "every device took part: {per_device:?}"
    );
    assert_eq!(control.refused(), 0, "no device answered wrongly");
}

/// Masks of 10 or 11 bits spread over the digest's last two words (7 and 6, the ones the
/// shader computes); together they cover all 64 bits.
fn spread_masks() -> Vec<[u32; 2]> {
    let mut masks = Vec::new();
    for first_bit in 0..6u32 {
        let mut m = [0u32; 2];
        // Every sixth bit from `first_bit`: 10 or 11 of the 64.
        for bit in (first_bit..64).step_by(6) {
            m[(bit / 32) as usize] |= 1 << (bit % 32);
        }
        masks.push(m);
    }
    masks
}

#[test]
fn every_output_bit_of_the_shader_matches_the_cpu() {
    let Some(mut gpu) = gpu_engine("every_output_bit_of_the_shader_matches_the_cpu") else {
        return;
    };
    let w = work(77, 0);
    let range = NonceRange::new((5 << 32) - 5001, (5 << 32) + 15_003);
    // The default, and the far corner of what tuning may pick: small workgroups, several
    // nonces an invocation (the range's end falls inside one), no runtime checks.
    let corner = Tuning {
        workgroup: 64,
        per_invocation: 8,
        dispatch_ms: 10,
        unchecked: true,
    };
    let cases = spread_masks()
        .into_iter()
        .flat_map(|m| [(Tuning::DEFAULT, m), (corner, m)]);
    for (tuning, masks) in cases {
        gpu.retune(tuning).unwrap();
        let clears = |n: u64| {
            let h = w.hash_words(n);
            h[7] & masks[0] == 0 && h[6] & masks[1] == 0
        };
        let expected: Vec<u64> = (range.start..range.end).filter(|&n| clears(n)).collect();
        let mut on_gpu = Vec::new();
        let mut from = range.start;
        while let Some(n) = gpu
            .lowest_clearing(&w, NonceRange::new(from, range.end), masks)
            .unwrap()
        {
            on_gpu.push(n);
            from = n + 1;
        }
        assert!(
            expected.len() > 3,
            "{masks:x?} leaves {} nonces",
            expected.len()
        );
        assert_eq!(on_gpu, expected, "masks {masks:x?}, {tuning}");
    }
}

#[test]
fn gpu_solves_difficulties_beyond_one_digest_word() {
    let Some(mut gpu) = gpu_engine("gpu_solves_difficulties_beyond_one_digest_word") else {
        return;
    };
    // Difficulty 33 needs digest word 6 too, which the shader computes for candidates only.
    let w = work(42, 33);
    let range = NonceRange::new(0, 1 << 20);
    let control = SearchControl::new();
    let gpu_found = search_verified(&mut gpu, &w, range, &control).unwrap();
    let cpu_found = search_verified(&mut CpuEngine::new(2), &w, range, &control).unwrap();
    assert_eq!(gpu_found, cpu_found);
}

#[test]
fn gpu_reports_its_adapter() {
    let Some(gpu) = gpu_engine("gpu_reports_its_adapter") else {
        return;
    };
    let info = gpu.info();
    assert_eq!(info.device.to_string(), "gpu");
    assert!(
        info.adapter.ends_with(')'),
        "name (backend): {}",
        info.adapter
    );
    assert!(info.adapter.len() > 3, "{}", info.adapter);
}

#[test]
fn a_corrupt_tuning_cache_is_ignored_and_rewritten() {
    let Some(gpu) = gpu_engine("a_corrupt_tuning_cache_is_ignored_and_rewritten") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = TuneCache::in_dir(dir.path(), false);
    let path = dir.path().join(tune::CACHE_FILE);
    std::fs::write(&path, b"{\"adapters\": {\"x\": [1, 2").unwrap();

    let (mut gpu, line) = tune::tune_engine(gpu, &cache).unwrap();
    assert!(line.contains("ignored") && line.contains("saved"), "{line}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let adapters = written["adapters"].as_object().unwrap();
    assert_eq!(adapters.len(), 1, "{written}");
    let (_, entry) = adapters.iter().next().unwrap();
    let tuning: Tuning = serde_json::from_value(entry["tuning"].clone()).unwrap();
    assert!(tuning.is_valid(), "{tuning:?}");
    assert_eq!(gpu.tuning(), tuning, "the engine runs what was saved");
    assert!(tune::verifies(&mut gpu).unwrap());

    // The next start reads it back; values out of range are ignored like corruption.
    let (gpu, line) = tune::tune_engine(gpu, &cache).unwrap();
    assert!(line.contains("cached"), "{line}");
    assert_eq!(gpu.tuning(), tuning);
    let bad = std::fs::read_to_string(&path).unwrap().replace(
        &format!("\"workgroup\": {}", tuning.workgroup),
        "\"workgroup\": 4096",
    );
    std::fs::write(&path, bad).unwrap();
    let (gpu, line) = tune::tune_engine(gpu, &cache).unwrap();
    assert!(!line.contains("cached") && line.contains("saved"), "{line}");
    assert!(gpu.tuning().is_valid());
}
