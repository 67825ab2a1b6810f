// mvbc proof-of-work search: one nonce per invocation, one SHA-256 compression per nonce.
//
// The host (crates/miner/src/gpu.rs) has already compressed the header's first 64 bytes (the
// midstate) and run rounds 0..=5 of the second block, whose message words 0..=5 never change.
// Message words 6 and 7 are the nonce's high and low halves, so each invocation starts at
// round 6. Words 8..=15 are SHA-256 padding for a 96-byte message (fixed by the header
// layout; the host checks them), and rounds 8..=19 and schedule words 16..=19 do not see the
// nonce, so the host sums those words with their constants too.
//
// The rounds are written out rather than looped: a loop over a 16-word array indexed at run
// time kept the array in memory on lavapipe (5x slower), and straight-line code leaves no
// doubt for any driver's compiler. An invocation whose first digest words pass the masks
// records its offset with atomicMin, so the readback holds the lowest candidate of the
// dispatch; the host checks every candidate on the CPU before it is used.

struct Params {
    // Working variables a, b, c, d and e, f, g, h after round 5.
    state: array<vec4<u32>, 2>,
    // Message word plus round constant for rounds 8..=19.
    wk: array<vec4<u32>, 3>,
    // Message words 16..=19.
    w16: vec4<u32>,
    // Message words 4 and 5, then two unused words.
    w4: vec4<u32>,
    // Midstate words 0 and 1, then the masks the digest words 0 and 1 must clear.
    check: vec4<u32>,
    // Nonce of offset 0 (high, low), nonces in this dispatch, invocations per row of workgroups.
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

// One round; `kw` is the round constant plus the message word.
fn round(s: State, kw: u32) -> State {
    let ch = s.g ^ (s.e & (s.f ^ s.g));
    let maj = (s.a & s.b) | (s.c & (s.a | s.b));
    let t1 = s.h + (rotr(s.e, 6u) ^ rotr(s.e, 11u) ^ rotr(s.e, 25u)) + ch + kw;
    let t2 = (rotr(s.a, 2u) ^ rotr(s.a, 13u) ^ rotr(s.a, 22u)) + maj;
    return State(t1 + t2, s.a, s.b, s.c, s.d + t1, s.e, s.f, s.g);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let offset = id.y * params.nonce.w + id.x;
    if (offset >= params.nonce.z) {
        return;
    }
    // 64-bit nonce = base + offset, with the carry into the high word.
    let w7 = params.nonce.y + offset;
    let w6 = params.nonce.x + select(0u, 1u, w7 < offset);

    let p = params.state;
    var s = State(p[0].x, p[0].y, p[0].z, p[0].w, p[1].x, p[1].y, p[1].z, p[1].w);
    s = round(s, 0x923f82a4u + w6);
    s = round(s, 0xab1c5ed5u + w7);
    for (var i = 0u; i < 3u; i++) {
        let wk = params.wk[i];
        s = round(s, wk.x);
        s = round(s, wk.y);
        s = round(s, wk.z);
        s = round(s, wk.w);
    }

    let w4 = params.w4.x;
    let w5 = params.w4.y;
    let w8 = 0x80000000u;
    let w9 = 0u;
    let w10 = 0u;
    let w11 = 0u;
    let w12 = 0u;
    let w13 = 0u;
    let w14 = 0u;
    let w15 = 768u;
    let w16 = params.w16.x;
    let w17 = params.w16.y;
    let w18 = params.w16.z;
    let w19 = params.w16.w;
    let w20 = sigma1(w18) + w13 + sigma0(w5) + w4;
    s = round(s, 0x2de92c6fu + w20);
    let w21 = sigma1(w19) + w14 + sigma0(w6) + w5;
    s = round(s, 0x4a7484aau + w21);
    let w22 = sigma1(w20) + w15 + sigma0(w7) + w6;
    s = round(s, 0x5cb0a9dcu + w22);
    let w23 = sigma1(w21) + w16 + sigma0(w8) + w7;
    s = round(s, 0x76f988dau + w23);
    let w24 = sigma1(w22) + w17 + sigma0(w9) + w8;
    s = round(s, 0x983e5152u + w24);
    let w25 = sigma1(w23) + w18 + sigma0(w10) + w9;
    s = round(s, 0xa831c66du + w25);
    let w26 = sigma1(w24) + w19 + sigma0(w11) + w10;
    s = round(s, 0xb00327c8u + w26);
    let w27 = sigma1(w25) + w20 + sigma0(w12) + w11;
    s = round(s, 0xbf597fc7u + w27);
    let w28 = sigma1(w26) + w21 + sigma0(w13) + w12;
    s = round(s, 0xc6e00bf3u + w28);
    let w29 = sigma1(w27) + w22 + sigma0(w14) + w13;
    s = round(s, 0xd5a79147u + w29);
    let w30 = sigma1(w28) + w23 + sigma0(w15) + w14;
    s = round(s, 0x06ca6351u + w30);
    let w31 = sigma1(w29) + w24 + sigma0(w16) + w15;
    s = round(s, 0x14292967u + w31);
    let w32 = sigma1(w30) + w25 + sigma0(w17) + w16;
    s = round(s, 0x27b70a85u + w32);
    let w33 = sigma1(w31) + w26 + sigma0(w18) + w17;
    s = round(s, 0x2e1b2138u + w33);
    let w34 = sigma1(w32) + w27 + sigma0(w19) + w18;
    s = round(s, 0x4d2c6dfcu + w34);
    let w35 = sigma1(w33) + w28 + sigma0(w20) + w19;
    s = round(s, 0x53380d13u + w35);
    let w36 = sigma1(w34) + w29 + sigma0(w21) + w20;
    s = round(s, 0x650a7354u + w36);
    let w37 = sigma1(w35) + w30 + sigma0(w22) + w21;
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
    s = round(s, 0x90befffau + w60);
    let w61 = sigma1(w59) + w54 + sigma0(w46) + w45;
    s = round(s, 0xa4506cebu + w61);
    let w62 = sigma1(w60) + w55 + sigma0(w47) + w46;
    s = round(s, 0xbef9a3f7u + w62);
    let w63 = sigma1(w61) + w56 + sigma0(w48) + w47;
    s = round(s, 0xc67178f2u + w63);

    let h0 = s.a + params.check.x;
    let h1 = s.b + params.check.y;
    if ((h0 & params.check.z) == 0u && (h1 & params.check.w) == 0u) {
        atomicMin(&found, offset);
    }
}
