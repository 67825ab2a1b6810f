//! Shares found by hand, for tests and benchmarks that speak the pool protocol themselves.

use std::ops::Range;

use mvbc_protocol::BlockHeader;
use mvbc_protocol::stratum::share_bits;

/// The first worker nonce from `from` whose hash, under `extranonce`, has a count of leading
/// zero bits in `bits`.
pub fn find_share(header: &BlockHeader, extranonce: u16, from: u64, bits: Range<u32>) -> u64 {
    (from..)
        .find(|&part| bits.contains(&share_bits(header, extranonce, part)))
        .expect("a share within 2^64 nonces")
}
