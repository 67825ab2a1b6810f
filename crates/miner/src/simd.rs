//! The SIMD kernels: one nonce per vector lane, 16 lanes with AVX-512 and 8 with AVX2, one
//! body for both.
//!
//! A batch is `N` consecutive nonces that share the nonce's high word (a batch never crosses a
//! 2^32 boundary of the low word; the few nonces next to one take the scalar path). So per
//! batch everything but the low word is the same in every lane, and is done once in scalar
//! code: rounds 0..=5 once per work unit ([`Prepared`]), round 6 and schedule word 21 once per
//! high word ([`Batch`]), round 7 but for one addition of the low word, and every term of
//! schedule words 22..=36 that reads no word derived from the low one. Each lane then costs
//! rounds 8..=63 and what is left of the schedule, with AVX-512's rotate (`vprord`) and
//! three-input logic (`vpternlogd`) where the CPU has them.

use std::arch::x86_64::*;

use crate::work::{K, WorkUnit, round, schedule_word, sigma0, sigma1, word_mask};

/// What one work unit lets a SIMD kernel compute once.
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    /// Working variables after rounds 0..=5 (the nonce is words 6 and 7).
    before_nonce: [u32; 8],
    /// The second block's message words, with both nonce words zero.
    tail: [u32; 16],
    /// Schedule words 16..=20, which never read the nonce.
    x16_20: [u32; 5],
    /// The first digest word is `A + h0` after the last round.
    h0: u32,
    /// A candidate needs `(A + h0) & mask == 0`; its full difficulty is checked after.
    mask: u32,
}

impl Prepared {
    /// Runs what does not depend on the nonce.
    pub fn new(work: &WorkUnit) -> Prepared {
        // Word 20 reads words 18, 13, 5 and 4: none is the nonce.
        let mut x = [0u32; 21];
        x[..16].copy_from_slice(&work.tail);
        x[16..20].copy_from_slice(&work.schedule_before_nonce());
        x[20] = schedule_word(&x, 20);
        Prepared {
            before_nonce: work.state_before_nonce(),
            tail: work.tail,
            x16_20: [x[16], x[17], x[18], x[19], x[20]],
            h0: work.midstate[0],
            mask: word_mask(work.difficulty),
        }
    }

    /// What every nonce with high word `hi` shares.
    fn batch(&self, hi: u32) -> Batch {
        let mut s = self.before_nonce;
        round(&mut s, K[6], hi);
        // Round 7 with a zero low word: the low word only adds to its T1, so each lane adds
        // its own to the new A and E, and the rest is the same in every lane.
        round(&mut s, K[7], 0);
        let [a7, b, c, d, e7, f, g, h] = s;
        // Word 21 reads words 19, 14, 6 and 5: the high word, not the low one.
        let mut x = [0u32; 22];
        x[..16].copy_from_slice(&self.tail);
        x[6] = hi;
        x[16..21].copy_from_slice(&self.x16_20);
        x[21] = schedule_word(&x, 21);
        // The terms of each later schedule word that every lane shares.
        let mut shared = [0u32; 64];
        for (t, sum) in shared.iter_mut().enumerate().skip(22) {
            let mut add = |i: usize, f: fn(u32) -> u32| {
                if is_shared(i) {
                    *sum = sum.wrapping_add(f(x[i]));
                }
            };
            add(t - 2, sigma1);
            add(t - 7, |v| v);
            add(t - 15, sigma0);
            add(t - 16, |v| v);
        }
        Batch {
            hi,
            a7,
            e7,
            after7: [b, c, d, f, g, h],
            x21: x[21],
            shared,
        }
    }
}

/// What a batch of nonces with one high word shares.
#[derive(Clone, Copy, Debug)]
struct Batch {
    hi: u32,
    /// A and E after round 7, less the low word (each lane adds its own).
    a7: u32,
    e7: u32,
    /// B, C, D, F, G and H after round 7 (every lane's the same).
    after7: [u32; 6],
    x21: u32,
    /// For schedule word `t` (22..=63): the sum of its terms that read shared words.
    shared: [u32; 64],
}

/// Whether schedule word `i` is the same in every lane of a batch: words 0..=21 but the low
/// word of the nonce (7).
const fn is_shared(i: usize) -> bool {
    i <= 21 && i != 7
}

/// Whether schedule word `t` has a term that reads a shared word.
const fn has_shared_terms(t: usize) -> bool {
    is_shared(t - 2) || is_shared(t - 7) || is_shared(t - 15) || is_shared(t - 16)
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

/// The first digest word of the `V::N` nonces `batch.hi:lo ..= batch.hi:lo + N - 1`, which
/// must not cross a 2^32 boundary.
#[inline(always)]
fn first_words<V: Lanes>(p: &Prepared, batch: &Batch, lo: u32) -> V {
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
    let word = |t: usize| match t {
        0..=15 => p.tail[t],
        16..=20 => p.x16_20[t - 16],
        _ => batch.x21,
    };
    macro_rules! constant_rounds {
        ($($t:literal)*) => {$(
            round!(V::splat(word($t).wrapping_add(K[$t])));
        )*};
    }
    constant_rounds!(8 9 10 11 12 13 14 15 16 17 18 19 20 21);
    macro_rules! rounds {
        ($($t:literal)*) => {$(
            schedule!($t);
            round!(w[$t].add(V::splat(K[$t])));
        )*};
    }
    rounds!(22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49
            50 51 52 53 54 55 56 57 58 59 60 61 62 63);
    let _ = (b, c, d, e, f, g, h);
    a.add(V::splat(p.h0))
}

/// The lowest nonce in `start..end` whose first digest word passes the prepared mask, the
/// nonces of whole batches by `V`, the rest (next to a 2^32 boundary, or at the end) by the
/// reference path. Candidates still need the full difficulty check.
#[inline(always)]
fn first_candidate<V: Lanes>(p: &Prepared, work: &WorkUnit, start: u64, end: u64) -> Option<u64> {
    let mut n = start;
    let mut batch: Option<Batch> = None;
    let passes = |n: u64| work.hash_words(n)[0] & p.mask == 0;
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
            slot => slot.insert(p.batch(hi)),
        };
        let hits = first_words::<V>(p, b, lo).zero_under(p.mask);
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

/// [`first_candidate`] 16 nonces at a time.
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

/// [`first_candidate`] 8 nonces at a time.
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

    fn reference(work: &WorkUnit, start: u64, end: u64) -> Option<u64> {
        let mask = word_mask(work.difficulty);
        (start..end).find(|&n| work.hash_words(n)[0] & mask == 0)
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
                    assert_eq!(got, reference(&work, start, end), "{name} from {start:#x}");
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
                        let expect = reference(&work, from, end);
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Random headers: the first word of every lane equals `sha2`'s.
        #[test]
        fn random_headers_equal_sha2(
            prev: [u8; 32],
            merkle: [u8; 32],
            timestamp: u64,
            height: u64,
            nonce: u64,
        ) {
            let header = mvbc_protocol::BlockHeader {
                version: 1,
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
            // One more round trip through sha2 for the lanes: the kernel with a mask on the
            // first word's top bit agrees with sha2's hash.
            let mut w = work;
            w.difficulty = 1;
            let p1 = Prepared::new(&w);
            for (name, kernel) in kernels() {
                // SAFETY: as above.
                let got = unsafe { kernel(&p1, &w, start, start + 20) };
                let expect = (start..start + 20)
                    .find(|&n| w.header_with(n).hash().0[0] & 0x80 == 0);
                proptest::prop_assert_eq!(got, expect, "{}", name);
            }
        }
    }
}
