//! A work unit: what every engine needs to search nonces for one header.
//!
//! The header layout (see `mvbc_protocol::header`) puts the first 64 bytes, which the nonce
//! never touches, in SHA-256's first block; its compression (the midstate) is done once here.
//! The second block is the 32 remaining header bytes and the padding: message words 0..=5 are
//! constant, words 6 and 7 are the nonce's high and low halves, words 8..=15 are padding.
//! Everything an engine precomputes further derives from [`WorkUnit`].

use mvbc_protocol::header::{HEADER_LEN, HEADER_VERSION, NONCE_OFFSET};
use mvbc_protocol::{BlockHeader, Hash256};
use sha2::block_api::compress256;

/// The SHA-256 initial hash value.
pub const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 round constants.
pub const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Index of the nonce's high word in the second block's message words.
pub const NONCE_HI_WORD: usize = (NONCE_OFFSET - 64) / 4;
/// Index of the nonce's low word.
pub const NONCE_LO_WORD: usize = NONCE_HI_WORD + 1;

const _: () = assert!(NONCE_HI_WORD == 6 && NONCE_LO_WORD == 7 && HEADER_LEN == 96);

/// Everything needed to try nonces for one header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkUnit {
    /// The header as given; its nonce is ignored.
    pub header: BlockHeader,
    /// SHA-256 state after compressing header bytes 0..64.
    pub midstate: [u32; 8],
    /// Message words of the second block, with both nonce words zero.
    pub tail: [u32; 16],
    /// Leading zero bits a hash must have.
    pub difficulty: u32,
}

impl WorkUnit {
    /// Prepares the search for `header` at its own difficulty.
    pub fn new(header: &BlockHeader) -> WorkUnit {
        let bytes = BlockHeader {
            nonce: 0,
            ..*header
        }
        .to_bytes();
        let mut first = [0u8; 64];
        first.copy_from_slice(&bytes[..64]);
        let mut midstate = SHA256_IV;
        compress256(&mut midstate, &[first]);

        let mut second = [0u8; 64];
        second[..HEADER_LEN - 64].copy_from_slice(&bytes[64..]);
        second[HEADER_LEN - 64] = 0x80;
        second[56..].copy_from_slice(&((HEADER_LEN as u64) * 8).to_be_bytes());
        let tail = std::array::from_fn(|i| {
            u32::from_be_bytes([
                second[4 * i],
                second[4 * i + 1],
                second[4 * i + 2],
                second[4 * i + 3],
            ])
        });
        WorkUnit {
            header: *header,
            midstate,
            tail,
            difficulty: header.difficulty,
        }
    }

    /// The second block's message words for `nonce`.
    pub fn block_words(&self, nonce: u64) -> [u32; 16] {
        let mut w = self.tail;
        w[NONCE_HI_WORD] = (nonce >> 32) as u32;
        w[NONCE_LO_WORD] = nonce as u32;
        w
    }

    /// The second block as bytes, for `nonce`: header bytes 64..96, then the padding.
    pub fn block_bytes(&self, nonce: u64) -> [u8; 64] {
        let mut block = [0u8; 64];
        for (chunk, word) in block.chunks_exact_mut(4).zip(self.block_words(nonce)) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        block
    }

    /// The header hash for `nonce` as eight big-endian words, by one compression from the
    /// midstate. The reference every engine's kernel is tested against.
    pub fn hash_words(&self, nonce: u64) -> [u32; 8] {
        let mut state = self.midstate;
        compress256(&mut state, &[self.block_bytes(nonce)]);
        state
    }

    /// The working variables `[a, b, c, d, e, f, g, h]` after rounds 0..=5 of the second
    /// block: the rounds before the first nonce word, the same for every nonce.
    pub fn state_before_nonce(&self) -> [u32; 8] {
        let mut s = self.midstate;
        for (&k, &w) in K.iter().zip(&self.tail).take(NONCE_HI_WORD) {
            round(&mut s, k, w);
        }
        s
    }

    /// Message schedule words 16..=19, which read words 0..=4, 9..=12 and 14..=17 but never
    /// the nonce's 6 and 7.
    pub fn schedule_before_nonce(&self) -> [u32; 4] {
        let mut x = [0u32; 20];
        x[..16].copy_from_slice(&self.tail);
        for t in 16..20 {
            x[t] = schedule_word(&x, t);
        }
        [x[16], x[17], x[18], x[19]]
    }

    /// Whether `nonce` solves this work unit, by the midstate path.
    pub fn is_solution(&self, nonce: u64) -> bool {
        meets_difficulty(&self.hash_words(nonce), self.difficulty)
    }

    /// The header with `nonce` filled in.
    pub fn header_with(&self, nonce: u64) -> BlockHeader {
        BlockHeader {
            nonce,
            ..self.header
        }
    }
}

/// What every nonce with one high word shares: everything but the low word (message word 7)
/// and what derives from it. Round 6 and schedule word 21 read the high word, not the low
/// one; the low word only adds to round 7's T1, so A and E after round 7 are kept less it
/// (each nonce adds its own); and each later schedule word has terms that read only shared
/// words, summed here once. The SIMD kernels build one per batch, the GPU engine one per
/// dispatch (no dispatch crosses a 2^32 boundary).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HighWord {
    /// The nonce's high word.
    pub hi: u32,
    /// A and E after round 7, less the low word.
    pub a7: u32,
    pub e7: u32,
    /// B, C, D, F, G and H after round 7.
    pub after7: [u32; 6],
    /// Word plus round constant for rounds 8..=21, which read no word derived from the low one.
    pub kw8_21: [u32; 14],
    /// For schedule word `t` (22..=63): the sum of its terms that read shared words
    /// ([`has_shared_terms`]; zero for the others).
    pub shared: [u32; 64],
}

impl HighWord {
    /// What the nonces `hi:0 ..= hi:u32::MAX` of `work` share.
    pub fn new(work: &WorkUnit, hi: u32) -> HighWord {
        let mut s = work.state_before_nonce();
        round(&mut s, K[NONCE_HI_WORD], hi);
        round(&mut s, K[NONCE_LO_WORD], 0);
        let [a7, b, c, d, e7, f, g, h] = s;
        let mut x = [0u32; 22];
        x[..16].copy_from_slice(&work.block_words(u64::from(hi) << 32));
        for t in 16..22 {
            x[t] = schedule_word(&x, t);
        }
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
        HighWord {
            hi,
            a7,
            e7,
            after7: [b, c, d, f, g, h],
            kw8_21: std::array::from_fn(|i| x[i + 8].wrapping_add(K[i + 8])),
            shared,
        }
    }
}

/// Whether schedule word `i` is the same for every nonce of one high word: words 0..=21 but
/// the low word (7).
pub(crate) const fn is_shared(i: usize) -> bool {
    i <= 21 && i != NONCE_LO_WORD
}

/// Whether schedule word `t` (22 or more) has a term that reads a shared word.
pub(crate) const fn has_shared_terms(t: usize) -> bool {
    is_shared(t - 2) || is_shared(t - 7) || is_shared(t - 15) || is_shared(t - 16)
}

/// Message schedule word `t` (16 or more) from the words before it in `x`.
pub(crate) fn schedule_word(x: &[u32], t: usize) -> u32 {
    sigma1(x[t - 2])
        .wrapping_add(x[t - 7])
        .wrapping_add(sigma0(x[t - 15]))
        .wrapping_add(x[t - 16])
}

pub(crate) fn sigma0(x: u32) -> u32 {
    x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3)
}

pub(crate) fn sigma1(x: u32) -> u32 {
    x.rotate_right(17) ^ x.rotate_right(19) ^ (x >> 10)
}

/// One scalar SHA-256 round on `s = [a, b, c, d, e, f, g, h]`.
pub(crate) fn round(s: &mut [u32; 8], k: u32, w: u32) {
    let [a, b, c, d, e, f, g, h] = *s;
    let t1 = h
        .wrapping_add(e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25))
        .wrapping_add((e & f) ^ (!e & g))
        .wrapping_add(k)
        .wrapping_add(w);
    let t2 = (a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22))
        .wrapping_add((a & b) ^ (a & c) ^ (b & c));
    *s = [t1.wrapping_add(t2), a, b, c, d.wrapping_add(t1), e, f, g];
}

/// The bits of a byte-swapped digest word that `difficulty` zero bits require to be zero.
fn swapped_mask(difficulty: u32) -> u32 {
    match difficulty {
        0 => 0,
        d if d >= 32 => u32::MAX,
        d => !(u32::MAX >> d),
    }
}

/// The bits of the digest's last two words, 7 and 6 as SHA-256's big-endian state words, that
/// `difficulty` requires to be zero. A hash is shown byte-reversed and its zeros counted from
/// the front, so the first 32 come from word 7 read byte-swapped, the next from word 6.
pub fn tail_masks(difficulty: u32) -> [u32; 2] {
    [
        swapped_mask(difficulty).swap_bytes(),
        swapped_mask(difficulty.saturating_sub(32)).swap_bytes(),
    ]
}

/// A header no chain holds, for work that must not be mistaken for a real block.
pub fn synthetic_header(difficulty: u32) -> BlockHeader {
    BlockHeader {
        version: HEADER_VERSION,
        prev_hash: Hash256([0xbe; 32]),
        merkle_root: Hash256([0xef; 32]),
        timestamp: 1_795_478_400,
        height: 1,
        difficulty,
        nonce: 0,
    }
}

/// Whether a digest, as big-endian words, starts with at least `difficulty` zero bits when it
/// is shown byte-reversed (`Hash256::leading_zero_bits`).
pub fn meets_difficulty(digest: &[u32; 8], difficulty: u32) -> bool {
    let mut zeros = 0;
    for &w in digest.iter().rev() {
        zeros += w.swap_bytes().leading_zeros();
        if w != 0 {
            break;
        }
    }
    zeros >= difficulty
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(nonce: u64, difficulty: u32) -> BlockHeader {
        BlockHeader {
            nonce,
            ..synthetic_header(difficulty)
        }
    }

    fn words_to_hash(words: [u32; 8]) -> Hash256 {
        let mut out = [0u8; 32];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        Hash256(out)
    }

    proptest! {
        #[test]
        fn midstate_hash_equals_full_hash(nonce: u64, difficulty in 0u32..300) {
            let h = header(nonce, difficulty);
            let work = WorkUnit::new(&h);
            prop_assert_eq!(words_to_hash(work.hash_words(nonce)), h.hash());
            prop_assert_eq!(work.is_solution(nonce), h.meets_own_difficulty());
        }

        #[test]
        fn word_difficulty_matches_byte_difficulty(bytes: [u8; 32], d in 0u32..260) {
            let words: [u32; 8] = std::array::from_fn(|i| {
                u32::from_be_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
            });
            prop_assert_eq!(meets_difficulty(&words, d), Hash256(bytes).meets_difficulty(d));
        }
    }

    #[test]
    fn padding_words_follow_the_layout() {
        let w = WorkUnit::new(&header(0x1122_3344_5566_7788, 8)).block_words(0x1122_3344_5566_7788);
        assert_eq!((w[6], w[7]), (0x1122_3344, 0x5566_7788));
        assert_eq!(w[8], 0x8000_0000);
        assert!(w[9..15].iter().all(|&x| x == 0));
        assert_eq!(w[15], 768, "the message is 96 bytes = 768 bits");
    }

    #[test]
    fn masks() {
        // Word 7's last byte is shown first: its top bit is the first zero a difficulty needs.
        assert_eq!(tail_masks(0), [0, 0]);
        assert_eq!(tail_masks(1), [0x0000_0080, 0]);
        assert_eq!(tail_masks(9), [0x0000_80ff, 0]);
        assert_eq!(tail_masks(31), [0xfeff_ffff, 0]);
        assert_eq!(tail_masks(32), [u32::MAX, 0]);
        assert_eq!(tail_masks(33), [u32::MAX, 0x0000_0080]);
        assert_eq!(tail_masks(200), [u32::MAX, u32::MAX]);
    }

    #[test]
    fn zero_digest_meets_every_difficulty() {
        assert!(meets_difficulty(&[0; 8], 256));
        assert!(!meets_difficulty(&[0; 8], 257));
        assert!(meets_difficulty(&[0, 0, 0, 0, 0, 0, 0x0100_0000, 0], 63));
        assert!(!meets_difficulty(&[0, 0, 0, 0, 0, 0, 0x0100_0000, 0], 64));
        assert!(meets_difficulty(&[0, 0, 0, 0, 0, 0, 0, 0x0000_8000], 8));
        assert!(!meets_difficulty(&[0, 0, 0, 0, 0, 0, 0, 0x0000_8000], 9));
    }
}
