// mvbc proof-of-work search: one nonce per invocation, one SHA-256 compression per nonce, cut
// short where the proof of work allows.
//
// The host (crates/miner/src/gpu.rs) compresses the header's first 64 bytes (the midstate)
// once per work unit. Message words 6 and 7 of the second block are the nonce's high and low
// halves, and no dispatch crosses a 2^32 boundary of the nonce, so the high word is the same
// for every invocation: the host runs rounds 0..=7 less the low word (which only adds to round
// 7's new A and E), the words and constants of rounds 8..=21, and every term of schedule words
// 22..=37 that reads no word derived from the low one (`HighWord` in crates/miner/src/work.rs).
//
// A hash is judged byte-reversed, from the digest's last word (crates/protocol/src/hash.rs).
// That word is E after round 60 plus the midstate's, so rounds 61..=63 are never run; an
// invocation whose word 7 passes its mask (one in 2^min(difficulty, 32)) runs round 61's E for
// word 6, and records its offset with atomicMin when both pass, so the readback holds the
// lowest candidate of the dispatch. The host checks every candidate on the CPU before use.
//
// The rounds are written out rather than looped: a loop over an array indexed at run time kept
// the array in memory on lavapipe (5x slower), and straight-line code leaves no doubt for any
// driver's compiler.

struct Params {
    // A, B, C, D and E, F, G, H after round 7, with A and E less the nonce's low word.
    state: array<vec4<u32>, 2>,
    // Message word plus round constant for rounds 8..=21 (two unused).
    kw: array<vec4<u32>, 4>,
    // For schedule words 22..=37: the sum of their terms that read no word of the low one.
    sums: array<vec4<u32>, 4>,
    // Midstate words 7 and 6, then the masks digest words 7 and 6 must clear.
    check: vec4<u32>,
    // Low word of offset 0's nonce, nonces in this dispatch, invocations per row of
    // workgroups, unused.
    nonce: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// Lowest passing offset in this dispatch; the host sets it to 0xffffffff before each one.
@group(0) @binding(1) var<storage, read_write> found: atomic<u32>;

struct State {
    a: u32, b: u32, c: u32, d: u32, e: u32, f: u32, g: u32, h: u32,
}

// WGSL has no rotate; drivers that fuse this pattern into a funnel shift make it one instruction.
fn rotr(x: u32, n: u32) -> u32 {
    return (x >> n) | (x << (32u - n));
}

fn sigma0(x: u32) -> u32 {
    return rotr(x, 7u) ^ rotr(x, 18u) ^ (x >> 3u);
}

fn sigma1(x: u32) -> u32 {
    return rotr(x, 17u) ^ rotr(x, 19u) ^ (x >> 10u);
}

// T1 of a round on `s`; `kw` is the round constant plus the message word.
fn t1(s: State, kw: u32) -> u32 {
    let ch = s.g ^ (s.e & (s.f ^ s.g));
    return s.h + (rotr(s.e, 6u) ^ rotr(s.e, 11u) ^ rotr(s.e, 25u)) + ch + kw;
}

fn round(s: State, kw: u32) -> State {
    let maj = (s.a & s.b) | (s.c & (s.a | s.b));
    let temp1 = t1(s, kw);
    let temp2 = (rotr(s.a, 2u) ^ rotr(s.a, 13u) ^ rotr(s.a, 22u)) + maj;
    return State(temp1 + temp2, s.a, s.b, s.c, s.d + temp1, s.e, s.f, s.g);
}

// Invocations per workgroup and nonces per invocation: the engine measures which values are
// fastest on each adapter and sets them when it builds the pipeline (crates/miner/src/gpu.rs).
override WORKGROUP: u32 = 256u;
override PER_INVOCATION: u32 = 1u;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let first = (id.y * params.nonce.z + id.x) * PER_INVOCATION;
    for (var i = 0u; i < PER_INVOCATION; i++) {
        let offset = first + i;
        if (offset >= params.nonce.y) {
            return;
        }
        // The first passing nonce of an invocation is its lowest.
        if (passes(params.nonce.x + offset)) {
            atomicMin(&found, offset);
            return;
        }
    }
}

// Whether the nonce whose low word is `w7` passes the masks.
fn passes(w7: u32) -> bool {
    let p = params.state;
    var s = State(p[0].x + w7, p[0].y, p[0].z, p[0].w, p[1].x + w7, p[1].y, p[1].z, p[1].w);
    s = round(s, params.kw[0].x);
    s = round(s, params.kw[0].y);
    s = round(s, params.kw[0].z);
    s = round(s, params.kw[0].w);
    s = round(s, params.kw[1].x);
    s = round(s, params.kw[1].y);
    s = round(s, params.kw[1].z);
    s = round(s, params.kw[1].w);
    s = round(s, params.kw[2].x);
    s = round(s, params.kw[2].y);
    s = round(s, params.kw[2].z);
    s = round(s, params.kw[2].w);
    s = round(s, params.kw[3].x);
    s = round(s, params.kw[3].y);
    let w22 = params.sums[0].x + sigma0(w7);
    s = round(s, 0x5cb0a9dcu + w22);
    let w23 = params.sums[0].y + w7;
    s = round(s, 0x76f988dau + w23);
    let w24 = params.sums[0].z + sigma1(w22);
    s = round(s, 0x983e5152u + w24);
    let w25 = params.sums[0].w + sigma1(w23);
    s = round(s, 0xa831c66du + w25);
    let w26 = params.sums[1].x + sigma1(w24);
    s = round(s, 0xb00327c8u + w26);
    let w27 = params.sums[1].y + sigma1(w25);
    s = round(s, 0xbf597fc7u + w27);
    let w28 = params.sums[1].z + sigma1(w26);
    s = round(s, 0xc6e00bf3u + w28);
    let w29 = params.sums[1].w + sigma1(w27) + w22;
    s = round(s, 0xd5a79147u + w29);
    let w30 = params.sums[2].x + sigma1(w28) + w23;
    s = round(s, 0x06ca6351u + w30);
    let w31 = params.sums[2].y + sigma1(w29) + w24;
    s = round(s, 0x14292967u + w31);
    let w32 = params.sums[2].z + sigma1(w30) + w25;
    s = round(s, 0x27b70a85u + w32);
    let w33 = params.sums[2].w + sigma1(w31) + w26;
    s = round(s, 0x2e1b2138u + w33);
    let w34 = params.sums[3].x + sigma1(w32) + w27;
    s = round(s, 0x4d2c6dfcu + w34);
    let w35 = params.sums[3].y + sigma1(w33) + w28;
    s = round(s, 0x53380d13u + w35);
    let w36 = params.sums[3].z + sigma1(w34) + w29;
    s = round(s, 0x650a7354u + w36);
    let w37 = params.sums[3].w + sigma1(w35) + w30 + sigma0(w22);
    s = round(s, 0x766a0abbu + w37);
    let w38 = sigma1(w36) + w31 + sigma0(w23) + w22;
    s = round(s, 0x81c2c92eu + w38);
    let w39 = sigma1(w37) + w32 + sigma0(w24) + w23;
    s = round(s, 0x92722c85u + w39);
    let w40 = sigma1(w38) + w33 + sigma0(w25) + w24;
    s = round(s, 0xa2bfe8a1u + w40);
    let w41 = sigma1(w39) + w34 + sigma0(w26) + w25;
    s = round(s, 0xa81a664bu + w41);
    let w42 = sigma1(w40) + w35 + sigma0(w27) + w26;
    s = round(s, 0xc24b8b70u + w42);
    let w43 = sigma1(w41) + w36 + sigma0(w28) + w27;
    s = round(s, 0xc76c51a3u + w43);
    let w44 = sigma1(w42) + w37 + sigma0(w29) + w28;
    s = round(s, 0xd192e819u + w44);
    let w45 = sigma1(w43) + w38 + sigma0(w30) + w29;
    s = round(s, 0xd6990624u + w45);
    let w46 = sigma1(w44) + w39 + sigma0(w31) + w30;
    s = round(s, 0xf40e3585u + w46);
    let w47 = sigma1(w45) + w40 + sigma0(w32) + w31;
    s = round(s, 0x106aa070u + w47);
    let w48 = sigma1(w46) + w41 + sigma0(w33) + w32;
    s = round(s, 0x19a4c116u + w48);
    let w49 = sigma1(w47) + w42 + sigma0(w34) + w33;
    s = round(s, 0x1e376c08u + w49);
    let w50 = sigma1(w48) + w43 + sigma0(w35) + w34;
    s = round(s, 0x2748774cu + w50);
    let w51 = sigma1(w49) + w44 + sigma0(w36) + w35;
    s = round(s, 0x34b0bcb5u + w51);
    let w52 = sigma1(w50) + w45 + sigma0(w37) + w36;
    s = round(s, 0x391c0cb3u + w52);
    let w53 = sigma1(w51) + w46 + sigma0(w38) + w37;
    s = round(s, 0x4ed8aa4au + w53);
    let w54 = sigma1(w52) + w47 + sigma0(w39) + w38;
    s = round(s, 0x5b9cca4fu + w54);
    let w55 = sigma1(w53) + w48 + sigma0(w40) + w39;
    s = round(s, 0x682e6ff3u + w55);
    let w56 = sigma1(w54) + w49 + sigma0(w41) + w40;
    s = round(s, 0x748f82eeu + w56);
    let w57 = sigma1(w55) + w50 + sigma0(w42) + w41;
    s = round(s, 0x78a5636fu + w57);
    let w58 = sigma1(w56) + w51 + sigma0(w43) + w42;
    s = round(s, 0x84c87814u + w58);
    let w59 = sigma1(w57) + w52 + sigma0(w44) + w43;
    s = round(s, 0x8cc70208u + w59);
    let w60 = sigma1(w58) + w53 + sigma0(w45) + w44;
    let e60 = s.d + t1(s, 0x90befffau + w60);

    let h7 = e60 + params.check.x;
    if ((h7 & params.check.z) != 0u) {
        return false;
    }
    // A candidate (one nonce in 2^min(difficulty, 32)): the digest's word 6 is E after round 61.
    let w61 = sigma1(w59) + w54 + sigma0(w46) + w45;
    let e61 = s.c + s.g + (rotr(e60, 6u) ^ rotr(e60, 11u) ^ rotr(e60, 25u)) + (s.f ^ (e60 & (s.e ^ s.f))) + 0xa4506cebu + w61;
    let h6 = e61 + params.check.y;
    return (h6 & params.check.w) == 0u;
}
