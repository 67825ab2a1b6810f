//! An engine told to stop returns within its bound.
//!
//! Its own test binary, and one test, so that nothing else competes for the cores while the
//! time to stop is measured: cargo runs test binaries one at a time.

use mvbc_testkit::gpu as support;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mvbc_miner::{CpuEngine, MiningEngine, NonceRange, Search, SearchControl};
use support::{every_device, gpu_engine, work};

/// The designed bound is 100 ms (GPU: two dispatches of 25 ms in flight; CPU: one 64 Ki-nonce
/// chunk, about 2 ms). The assertion allows 2.5 times that for a loaded two-core CI runner.
const ABORT_LIMIT: Duration = Duration::from_millis(250);

/// Starts an endless search, stops it, and returns how long the engine took to return.
fn time_abort(mut engine: Box<dyn MiningEngine>) -> Duration {
    let control = Arc::new(SearchControl::new());
    let remote = Arc::clone(&control);
    let worker = thread::spawn(move || {
        let r = engine.search(&work(9, 250), NonceRange::all(), &remote);
        (r.unwrap(), Instant::now())
    });
    // Let it settle into its stride, with dispatch sizes already tuned.
    thread::sleep(Duration::from_millis(500));
    assert!(control.hashes() > 0, "the engine is hashing");
    let asked = Instant::now();
    control.stop();
    let (outcome, returned) = worker.join().unwrap();
    assert_eq!(outcome, Search::Aborted);
    returned.duration_since(asked)
}

#[test]
fn engines_stop_when_told() {
    let took = time_abort(Box::new(CpuEngine::new(2)));
    eprintln!("CPU engine returned {took:?} after the stop");
    assert!(took < ABORT_LIMIT, "CPU engine took {took:?}");

    if let Some(gpu) = gpu_engine("engines_stop_when_told") {
        let took = time_abort(Box::new(gpu));
        eprintln!("GPU engine returned {took:?} after the stop");
        assert!(took < ABORT_LIMIT, "GPU engine took {took:?}");
    }

    if let Some(all) = every_device("engines_stop_when_told") {
        let took = time_abort(Box::new(all));
        eprintln!("every device at once returned {took:?} after the stop");
        assert!(took < ABORT_LIMIT, "every device at once took {took:?}");
    }
}
