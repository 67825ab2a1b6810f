//! The x86-64 SHA-NI kernel: several nonces interleaved per thread, with every round that does
//! not depend on the nonce done once per work unit.
//!
//! One SHA-NI stream is bound by the latency of `sha256rnds2`; independent nonces in flight
//! fill the pipeline. The second block's words 0..=5 are constant, so rounds 0..=5 run once
//! (in scalar code) in [`Prepared::new`]; the schedule's words 16..=19 do not depend on words
//! 6 and 7 either, so they are precomputed too. Each nonce then costs rounds 6..=61 and the
//! schedule from word 20: the digest's last word, the one a difficulty looks at first, is
//! E after round 60 (plus the midstate), so the last `sha256rnds2` is never issued.

use std::arch::x86_64::*;

use crate::work::{K, WorkUnit, tail_masks};

/// Nonces in flight per thread. On the project machine (AMD EPYC, 2.45 GHz) one thread did
/// 42 MH/s with 1 or 2 lanes (out-of-order execution already overlaps consecutive nonces, and
/// 29 `sha256rnds2` per nonce keep the SHA unit busy), 47 MH/s with 3 and 44 MH/s with 4.
pub const LANES: usize = 3;

/// Whether this CPU has the instructions the kernel needs.
pub fn available() -> bool {
    is_x86_feature_detected!("sha")
        && is_x86_feature_detected!("sse4.1")
        && is_x86_feature_detected!("ssse3")
}

/// What one work unit lets the kernel compute once.
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    /// State after rounds 0..=5, as (A, B, E, F) and (C, D, G, H) from the high lane down.
    abef: [u32; 4],
    cdgh: [u32; 4],
    /// Words 4 and 5 of the second block (the nonce words are 6 and 7).
    w4: u32,
    w5: u32,
    /// Message words 8..=11, 12..=15 and 16..=19, lane 0 first.
    m2: [u32; 4],
    m3: [u32; 4],
    m4: [u32; 4],
    /// The last digest word is `E + h7` after round 60.
    h7: u32,
    /// A candidate needs `(E + h7) & mask == 0`; the full difficulty is checked on the
    /// candidate.
    mask: u32,
}

impl Prepared {
    /// Runs what does not depend on the nonce.
    pub fn new(work: &WorkUnit) -> Prepared {
        let w = work.tail;
        let x = work.schedule_before_nonce();
        let [a, b, c, d, e, f, g, h] = work.state_before_nonce();
        Prepared {
            abef: [f, e, b, a],
            cdgh: [h, g, d, c],
            w4: w[4],
            w5: w[5],
            m2: [w[8], w[9], w[10], w[11]],
            m3: [w[12], w[13], w[14], w[15]],
            m4: x,
            h7: work.midstate[7],
            mask: tail_masks(work.difficulty)[0],
        }
    }
}

#[inline]
#[target_feature(enable = "sse2")]
fn load(v: [u32; 4]) -> __m128i {
    _mm_set_epi32(v[3] as i32, v[2] as i32, v[1] as i32, v[0] as i32)
}

#[inline]
#[target_feature(enable = "sse2")]
fn k4(quad: usize) -> __m128i {
    load([
        K[4 * quad],
        K[4 * quad + 1],
        K[4 * quad + 2],
        K[4 * quad + 3],
    ])
}

/// Two rounds with `wk` (word + constant) in lanes 0 and 1, for every lane.
#[inline]
#[target_feature(enable = "sha,sse2")]
fn rounds2<const N: usize>(abef: &mut [__m128i; N], cdgh: &mut [__m128i; N], wk: &[__m128i; N]) {
    for j in 0..N {
        let next = _mm_sha256rnds2_epu32(cdgh[j], abef[j], wk[j]);
        cdgh[j] = abef[j];
        abef[j] = next;
    }
}

/// Four rounds with message words `m` (lane 0 first) of `quad`, for every lane.
#[inline]
#[target_feature(enable = "sha,sse2")]
fn rounds4<const N: usize>(
    abef: &mut [__m128i; N],
    cdgh: &mut [__m128i; N],
    m: &[__m128i; N],
    quad: usize,
) {
    let k = k4(quad);
    let wk: [__m128i; N] = std::array::from_fn(|j| _mm_add_epi32(m[j], k));
    rounds2(abef, cdgh, &wk);
    let hi: [__m128i; N] = std::array::from_fn(|j| _mm_shuffle_epi32(wk[j], 0x0E));
    rounds2(abef, cdgh, &hi);
}

/// The next four schedule words from the previous sixteen (`w[0]` oldest).
#[inline]
#[target_feature(enable = "sha,ssse3")]
fn schedule(w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i) -> __m128i {
    let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
    _mm_sha256msg2_epu32(t, w3)
}

/// The last digest word for `N` consecutive nonces from `nonce`.
///
/// # Safety
/// The CPU must have SHA-NI, SSSE3 and SSE4.1 ([`available`]).
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn last_words<const N: usize>(p: &Prepared, nonce: u64) -> [u32; N] {
    let mut abef = [load(p.abef); N];
    let mut cdgh = [load(p.cdgh); N];
    // Message words 4..=7: the nonce's halves are words 6 and 7.
    let m1: [__m128i; N] = std::array::from_fn(|j| {
        let n = nonce.wrapping_add(j as u64);
        load([p.w4, p.w5, (n >> 32) as u32, n as u32])
    });
    // Rounds 6 and 7: lanes 2 and 3 of words 4..=7, plus their constants.
    let k1 = k4(1);
    let wk67: [__m128i; N] =
        std::array::from_fn(|j| _mm_shuffle_epi32(_mm_add_epi32(m1[j], k1), 0x0E));
    rounds2(&mut abef, &mut cdgh, &wk67);

    let m2 = [load(p.m2); N];
    let m3 = [load(p.m3); N];
    let m4 = [load(p.m4); N];
    rounds4(&mut abef, &mut cdgh, &m2, 2);
    rounds4(&mut abef, &mut cdgh, &m3, 3);
    rounds4(&mut abef, &mut cdgh, &m4, 4);

    // The schedule from word 20 on, a window of the last sixteen words.
    let mut win = [m1, m2, m3, m4];
    for quad in 5..15 {
        let next: [__m128i; N] =
            std::array::from_fn(|j| schedule(win[0][j], win[1][j], win[2][j], win[3][j]));
        rounds4(&mut abef, &mut cdgh, &next, quad);
        win = [win[1], win[2], win[3], next];
    }
    // Rounds 60 and 61 only: after them F is round 60's E.
    let k = k4(15);
    let wk: [__m128i; N] = std::array::from_fn(|j| {
        let next = schedule(win[0][j], win[1][j], win[2][j], win[3][j]);
        _mm_add_epi32(next, k)
    });
    rounds2(&mut abef, &mut cdgh, &wk);
    std::array::from_fn(|j| (_mm_extract_epi32(abef[j], 0) as u32).wrapping_add(p.h7))
}

/// The lowest nonce in `start..end` whose last digest word passes the prepared mask.
/// Candidates still need the full difficulty check.
///
/// # Safety
/// The CPU must have SHA-NI, SSSE3 and SSE4.1 ([`available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub unsafe fn first_candidate(p: &Prepared, start: u64, end: u64) -> Option<u64> {
    let mut n = start;
    while end - n >= LANES as u64 {
        let words = last_words::<LANES>(p, n);
        for (j, w) in words.into_iter().enumerate() {
            if w & p.mask == 0 {
                return Some(n + j as u64);
            }
        }
        n += LANES as u64;
    }
    while n < end {
        if last_words::<1>(p, n)[0] & p.mask == 0 {
            return Some(n);
        }
        n += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::synthetic_header;

    fn work(difficulty: u32) -> WorkUnit {
        WorkUnit::new(&synthetic_header(difficulty))
    }

    #[test]
    fn last_word_matches_the_reference() {
        if !available() {
            eprintln!("skipped: this CPU has no SHA-NI");
            return;
        }
        let w = work(0);
        let p = Prepared::new(&w);
        for base in [0u64, 1, 0xffff_fffe, 0x1234_5678_9abc_def0, u64::MAX - 8] {
            // SAFETY: `available()` said the CPU has the features.
            let one = unsafe { last_words::<1>(&p, base) };
            let many = unsafe { last_words::<3>(&p, base) };
            for j in 0..3u64 {
                let expect = w.hash_words(base.wrapping_add(j))[7];
                assert_eq!(many[j as usize], expect, "lane {j} at {base:#x}");
            }
            assert_eq!(one[0], w.hash_words(base)[7]);
        }
    }

    #[test]
    fn candidates_follow_the_mask() {
        if !available() {
            eprintln!("skipped: this CPU has no SHA-NI");
            return;
        }
        let w = work(6);
        let p = Prepared::new(&w);
        let expect = (1000..3000).find(|&n| w.hash_words(n)[7] & 0xfc == 0);
        // SAFETY: `available()` said the CPU has the features.
        assert_eq!(unsafe { first_candidate(&p, 1000, 3000) }, expect);
        assert!(expect.is_some());
    }
}
