//! The SIMD kernels: one nonce per vector lane, 16 lanes with AVX-512 and 8 with AVX2, one
//! body for both.
//!
//! A batch is `N` consecutive nonces that share the nonce's high word (a batch never crosses a
//! 2^32 boundary of the low word; the few nonces next to one take the scalar path). So per
//! batch everything but the low word is the same in every lane, and is done once in scalar
//! code: rounds 0..=5 once per work unit ([`Prepared`]), round 6 and schedule word 21 once per
//! high word (`Batch`), round 7 but for one addition of the low word, and every term of
//! schedule words 22..=36 that reads no word derived from the low one. Each lane then costs
//! rounds 8..=60 and what is left of the schedule to word 60, with AVX-512's rotate (`vprord`)
//! and three-input logic (`vpternlogd`) where the CPU has them. Round 60 sets E, which is the
//! digest's last word less the midstate after the three rounds left: the word a difficulty
//! looks at first, so rounds 61..=63 are never run (8.5% more nonces a second, measured).

use std::arch::x86_64::*;

use crate::work::{HighWord, K, WorkUnit, has_shared_terms, is_shared, tail_masks};

/// What one work unit lets a SIMD kernel compute once.
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    /// The last digest word is `E + h7` after round 60.
    h7: u32,
    /// A candidate needs `(E + h7) & mask == 0`; its full difficulty is checked after.
    mask: u32,
}

impl Prepared {
    /// Reads what the kernel's check needs from `work`.
    pub fn new(work: &WorkUnit) -> Prepared {
        Prepared {
            h7: work.midstate[7],
            mask: tail_masks(work.difficulty)[0],
        }
    }
}

/// The operations the kernel body needs on a vector of `N` 32-bit lanes.
trait Lanes: Copy {
    const N: usize;
    /// Every lane `x`.
    fn splat(x: u32) -> Self;
    /// Lane `i` is `base + i`.
    fn counting(base: u32) -> Self;
    fn add(self, b: Self) -> Self;
    /// Rotate right by `R` (`L` is `32 - R`, for vectors without a rotate: stable Rust cannot
    /// work it out from `R`).
    fn ror<const R: i32, const L: i32>(self) -> Self;
    /// Shift right by `S` (the same amount twice: the intrinsics take it as `u32` or `i32`).
    fn shr<const S: u32, const SI: i32>(self) -> Self;
    fn xor3(self, b: Self, c: Self) -> Self;
    /// `(self & f) ^ (!self & g)`.
    fn ch(self, f: Self, g: Self) -> Self;
    /// `(self & b) ^ (self & c) ^ (b & c)`.
    fn maj(self, b: Self, c: Self) -> Self;
    /// A bit per lane, set where `self & mask == 0`.
    fn zero_under(self, mask: u32) -> u32;
}

/// 16 lanes of AVX-512.
#[derive(Clone, Copy)]
struct Zmm(__m512i);

// SAFETY (for every `unsafe` block in this impl): the methods are only reached from
// `first_candidate_avx512`, whose caller has checked that the CPU has AVX-512F; they are
// inlined into it, so the intrinsics run with that feature enabled.
impl Lanes for Zmm {
    const N: usize = 16;
    #[inline(always)]
    fn splat(x: u32) -> Self {
        Zmm(unsafe { _mm512_set1_epi32(x as i32) })
    }
    #[inline(always)]
    fn counting(base: u32) -> Self {
        let steps =
            unsafe { _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0) };
        Zmm(unsafe { _mm512_add_epi32(_mm512_set1_epi32(base as i32), steps) })
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Zmm(unsafe { _mm512_add_epi32(self.0, b.0) })
    }
    #[inline(always)]
    fn ror<const R: i32, const L: i32>(self) -> Self {
        Zmm(unsafe { _mm512_ror_epi32::<R>(self.0) })
    }
    #[inline(always)]
    fn shr<const S: u32, const SI: i32>(self) -> Self {
        Zmm(unsafe { _mm512_srli_epi32::<S>(self.0) })
    }
    #[inline(always)]
    fn xor3(self, b: Self, c: Self) -> Self {
        Zmm(unsafe { _mm512_ternarylogic_epi32::<0x96>(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn ch(self, f: Self, g: Self) -> Self {
        Zmm(unsafe { _mm512_ternarylogic_epi32::<0xca>(self.0, f.0, g.0) })
    }
    #[inline(always)]
    fn maj(self, b: Self, c: Self) -> Self {
        Zmm(unsafe { _mm512_ternarylogic_epi32::<0xe8>(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn zero_under(self, mask: u32) -> u32 {
        u32::from(unsafe { _mm512_testn_epi32_mask(self.0, _mm512_set1_epi32(mask as i32)) })
    }
}

/// 8 lanes of AVX2.
#[derive(Clone, Copy)]
struct Ymm(__m256i);

// SAFETY (for every `unsafe` block in this impl): the methods are only reached from
// `first_candidate_avx2`, whose caller has checked that the CPU has AVX2; they are inlined
// into it, so the intrinsics run with that feature enabled.
impl Lanes for Ymm {
    const N: usize = 8;
    #[inline(always)]
    fn splat(x: u32) -> Self {
        Ymm(unsafe { _mm256_set1_epi32(x as i32) })
    }
    #[inline(always)]
    fn counting(base: u32) -> Self {
        let steps = unsafe { _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0) };
        Ymm(unsafe { _mm256_add_epi32(_mm256_set1_epi32(base as i32), steps) })
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Ymm(unsafe { _mm256_add_epi32(self.0, b.0) })
    }
    #[inline(always)]
    fn ror<const R: i32, const L: i32>(self) -> Self {
        Ymm(unsafe {
            _mm256_or_si256(
                _mm256_srli_epi32::<R>(self.0),
                _mm256_slli_epi32::<L>(self.0),
            )
        })
    }
    #[inline(always)]
    fn shr<const S: u32, const SI: i32>(self) -> Self {
        Ymm(unsafe { _mm256_srli_epi32::<SI>(self.0) })
    }
    #[inline(always)]
    fn xor3(self, b: Self, c: Self) -> Self {
        Ymm(unsafe { _mm256_xor_si256(_mm256_xor_si256(self.0, b.0), c.0) })
    }
    #[inline(always)]
    fn ch(self, f: Self, g: Self) -> Self {
        // g ^ (e & (f ^ g)): three operations instead of four.
        Ymm(unsafe { _mm256_xor_si256(g.0, _mm256_and_si256(self.0, _mm256_xor_si256(f.0, g.0))) })
    }
    #[inline(always)]
    fn maj(self, b: Self, c: Self) -> Self {
        // (a & b) | (c & (a | b)).
        Ymm(unsafe {
            _mm256_or_si256(
                _mm256_and_si256(self.0, b.0),
                _mm256_and_si256(c.0, _mm256_or_si256(self.0, b.0)),
            )
        })
    }
    #[inline(always)]
    fn zero_under(self, mask: u32) -> u32 {
        unsafe {
            let masked = _mm256_and_si256(self.0, _mm256_set1_epi32(mask as i32));
            let zero = _mm256_cmpeq_epi32(masked, _mm256_setzero_si256());
            _mm256_movemask_ps(_mm256_castsi256_ps(zero)) as u32
        }
    }
}

/// The last digest word of the `V::N` nonces `batch.hi:lo ..= batch.hi:lo + N - 1`, which
/// must not cross a 2^32 boundary.
#[inline(always)]
fn last_words<V: Lanes>(p: &Prepared, batch: &HighWord, lo: u32) -> V {
    let w7 = V::counting(lo);
    let [b, c, d, f, g, h] = batch.after7.map(V::splat);
    let (mut a, mut e) = (w7.add(V::splat(batch.a7)), w7.add(V::splat(batch.e7)));
    let (mut b, mut c, mut d, mut f, mut g, mut h) = (b, c, d, f, g, h);

    // Schedule words as vectors: only those that differ between lanes (7, the low word, and
    // 22..=63) are read here; the shared ones reach the lanes summed in `batch.shared`.
    let mut w = [V::splat(0); 64];
    w[7] = w7;

    macro_rules! round {
        ($kw:expr) => {{
            let kw = $kw;
            let s1 = e.ror::<6, 26>().xor3(e.ror::<11, 21>(), e.ror::<25, 7>());
            let t1 = h.add(s1).add(e.ch(f, g)).add(kw);
            let s0 = a.ror::<2, 30>().xor3(a.ror::<13, 19>(), a.ror::<22, 10>());
            let t2 = s0.add(a.maj(b, c));
            h = g;
            g = f;
            f = e;
            e = d.add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.add(t2);
        }};
    }
    // Only the terms that read a word derived from the low word are computed per lane; the
    // rest come summed from the batch (`is_shared` folds away at compile time).
    macro_rules! schedule {
        ($t:expr) => {{
            let mut sum = if has_shared_terms($t) {
                V::splat(batch.shared[$t])
            } else {
                V::splat(0)
            };
            if !is_shared($t - 2) {
                let x2 = w[$t - 2];
                sum = sum.add(
                    x2.ror::<17, 15>()
                        .xor3(x2.ror::<19, 13>(), x2.shr::<10, 10>()),
                );
            }
            if !is_shared($t - 7) {
                sum = sum.add(w[$t - 7]);
            }
            if !is_shared($t - 15) {
                let x15 = w[$t - 15];
                sum = sum.add(
                    x15.ror::<7, 25>()
                        .xor3(x15.ror::<18, 14>(), x15.shr::<3, 3>()),
                );
            }
            if !is_shared($t - 16) {
                sum = sum.add(w[$t - 16]);
            }
            w[$t] = sum;
        }};
    }
    // Rounds 8..=15 read padding words and 16..=21 the precomputed schedule: one constant
    // each, word plus round constant.
    macro_rules! constant_rounds {
        ($($t:literal)*) => {$(
            round!(V::splat(batch.kw8_21[$t - 8]));
        )*};
    }
    constant_rounds!(8 9 10 11 12 13 14 15 16 17 18 19 20 21);
    macro_rules! rounds {
        ($($t:literal)*) => {$(
            schedule!($t);
            round!(w[$t].add(V::splat(K[$t])));
        )*};
    }
    // Round 60's new A is never read: the compiler drops its T2.
    rounds!(22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49
            50 51 52 53 54 55 56 57 58 59 60);
    let _ = (a, b, c, d, f, g, h);
    e.add(V::splat(p.h7))
}

/// The lowest nonce in `start..end` whose last digest word passes the prepared mask, the
/// nonces of whole batches by `V`, the rest (next to a 2^32 boundary, or at the end) by the
/// reference path. Candidates still need the full difficulty check.
#[inline(always)]
fn first_candidate<V: Lanes>(p: &Prepared, work: &WorkUnit, start: u64, end: u64) -> Option<u64> {
    let mut n = start;
    let mut batch: Option<HighWord> = None;
    let passes = |n: u64| work.hash_words(n)[7] & p.mask == 0;
    while n < end {
        let (hi, lo) = ((n >> 32) as u32, n as u32);
        let whole = end - n >= V::N as u64 && lo <= u32::MAX - (V::N as u32 - 1);
        if !whole {
            if passes(n) {
                return Some(n);
            }
            n += 1;
            continue;
        }
        let b = match &mut batch {
            Some(b) if b.hi == hi => b,
            slot => slot.insert(HighWord::new(work, hi)),
        };
        let hits = last_words::<V>(p, b, lo).zero_under(p.mask);
        if hits != 0 {
            return Some(n + u64::from(hits.trailing_zeros()));
        }
        n += V::N as u64;
    }
    None
}

/// Whether this CPU runs [`first_candidate_avx512`].
pub fn avx512_available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Whether this CPU runs [`first_candidate_avx2`].
pub fn avx2_available() -> bool {
    is_x86_feature_detected!("avx2")
}

/// `first_candidate` 16 nonces at a time.
///
/// # Safety
/// The CPU must have AVX-512F ([`avx512_available`]).
#[target_feature(enable = "avx512f")]
pub unsafe fn first_candidate_avx512(
    p: &Prepared,
    work: &WorkUnit,
    start: u64,
    end: u64,
) -> Option<u64> {
    first_candidate::<Zmm>(p, work, start, end)
}

/// `first_candidate` 8 nonces at a time.
///
/// # Safety
/// The CPU must have AVX2 ([`avx2_available`]).
#[target_feature(enable = "avx2")]
pub unsafe fn first_candidate_avx2(
    p: &Prepared,
    work: &WorkUnit,
    start: u64,
    end: u64,
) -> Option<u64> {
    first_candidate::<Ymm>(p, work, start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::synthetic_header;

    type Kernel = unsafe fn(&Prepared, &WorkUnit, u64, u64) -> Option<u64>;

    /// The kernels this CPU runs, by name; the others are named as not testable here.
    fn kernels() -> Vec<(&'static str, Kernel)> {
        let mut out: Vec<(&'static str, Kernel)> = Vec::new();
        if avx512_available() {
            out.push(("avx512", first_candidate_avx512));
        } else {
            eprintln!("avx512: not testable here (this CPU has no AVX-512F)");
        }
        if avx2_available() {
            out.push(("avx2", first_candidate_avx2));
        } else {
            eprintln!("avx2: not testable here (this CPU has no AVX2)");
        }
        out
    }

    fn reference(work: &WorkUnit, mask: u32, start: u64, end: u64) -> Option<u64> {
        (start..end).find(|&n| work.hash_words(n)[7] & mask == 0)
    }

    #[test]
    fn every_lane_of_every_kernel_equals_the_reference() {
        // Difficulty 0: every nonce is a candidate, so each call names the first nonce of its
        // range, lane by lane.
        let work = WorkUnit::new(&synthetic_header(0));
        let p = Prepared::new(&work);
        for (name, kernel) in kernels() {
            for base in [0u64, 5, 0xffff_fff0, 0x1234_5678_9abc_def0, u64::MAX - 40] {
                for lane in 0..16 {
                    let start = base.wrapping_add(lane);
                    let end = start.saturating_add(40);
                    // SAFETY: `kernels()` lists only what this CPU runs.
                    let got = unsafe { kernel(&p, &work, start, end) };
                    let expect = reference(&work, p.mask, start, end);
                    assert_eq!(got, expect, "{name} from {start:#x}");
                }
            }
        }
    }

    #[test]
    fn candidates_match_the_reference_over_ranges_and_boundaries() {
        // Difficulty 8: about one nonce in 256 passes; every lane position gets its turn.
        for difficulty in [6, 8, 11] {
            let work = WorkUnit::new(&synthetic_header(difficulty));
            let p = Prepared::new(&work);
            for (name, kernel) in kernels() {
                for start in [
                    0u64,
                    1_000_003,
                    0xffff_f000,
                    0x7_ffff_ff00,
                    u64::MAX - 5_000,
                ] {
                    let end = start.saturating_add(5_000);
                    let mut from = start;
                    loop {
                        // SAFETY: `kernels()` lists only what this CPU runs.
                        let got = unsafe { kernel(&p, &work, from, end) };
                        let expect = reference(&work, p.mask, from, end);
                        assert_eq!(got, expect, "{name} d={difficulty} from {from:#x}");
                        match got {
                            Some(n) => from = n + 1,
                            None => break,
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_bit_of_the_word_is_compared() {
        // A difficulty's mask sees only the bits shown first; masks of 8 bits spread over
        // the word let a wrong bit anywhere show.
        let work = WorkUnit::new(&synthetic_header(0));
        let masks = [
            0x8000_0001,
            0x0101_0101,
            0x1020_4080,
            0x0000_ff00,
            0x4422_1188,
        ];
        for mask in masks {
            let p = Prepared {
                mask,
                ..Prepared::new(&work)
            };
            for (name, kernel) in kernels() {
                let (start, end) = (0xffff_e000u64, 0x1_0000_1000u64);
                // SAFETY: `kernels()` lists only what this CPU runs.
                let got = unsafe { kernel(&p, &work, start, end) };
                let expect = reference(&work, mask, start, end);
                assert!(expect.is_some(), "mask {mask:#x} finds nothing");
                assert_eq!(got, expect, "{name} mask {mask:#x}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Random headers: the last word of every lane equals `sha2`'s.
        #[test]
        fn random_headers_equal_sha2(
            prev: [u8; 32],
            merkle: [u8; 32],
            timestamp: u64,
            height: u64,
            nonce: u64,
        ) {
            let header = mvbc_protocol::BlockHeader {
                version: mvbc_protocol::header::HEADER_VERSION,
                prev_hash: mvbc_protocol::Hash256(prev),
                merkle_root: mvbc_protocol::Hash256(merkle),
                timestamp,
                height,
                difficulty: 0,
                nonce: 0,
            };
            let work = WorkUnit::new(&header);
            let p = Prepared::new(&work);
            let start = nonce.min(u64::MAX - 20);
            for (name, kernel) in kernels() {
                // Difficulty 0: the first nonce is the candidate, and its digest word is
                // checked by the full sha2 hash below.
                // SAFETY: `kernels()` lists only what this CPU runs.
                let got = unsafe { kernel(&p, &work, start, start + 20) };
                proptest::prop_assert_eq!(got, Some(start), "{}", name);
            }
            // One more round trip through sha2 for the lanes: the kernel with the mask of
            // difficulty 1 (the top bit of the digest's last byte) agrees with sha2's hash.
            let mut w = work;
            w.difficulty = 1;
            let p1 = Prepared::new(&w);
            for (name, kernel) in kernels() {
                // SAFETY: as above.
                let got = unsafe { kernel(&p1, &w, start, start + 20) };
                let expect = (start..start + 20)
                    .find(|&n| w.header_with(n).hash().0[31] & 0x80 == 0);
                proptest::prop_assert_eq!(got, expect, "{}", name);
            }
        }
    }
}
