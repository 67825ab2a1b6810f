// mvbc proof-of-work search: one nonce per invocation, one SHA-256 compression per nonce.
//
// The host (crates/miner/src/gpu.rs) has already compressed the header's first 64 bytes (the
// midstate) and run rounds 0..=5 of the second block, whose message words 0..=5 never change.
// Message words 6 and 7 are the nonce's high and low halves, so each invocation starts at
// round 6. An invocation whose first digest words pass the masks records its offset with
// atomicMin, so the readback holds the lowest candidate of the dispatch; the host checks every
// candidate on the CPU before it is used.

struct Params {
    // Working variables a, b, c, d and e, f, g, h after round 5.
    state: array<vec4<u32>, 2>,
    // Message words 0..=15 of the second block; 6 and 7 (the nonce) are zero here.
    words: array<vec4<u32>, 4>,
    // Midstate words 0 and 1, then the masks the digest words 0 and 1 must clear.
    check: vec4<u32>,
    // Nonce of offset 0 (high, low), nonces in this dispatch, invocations per row of workgroups.
    nonce: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// Lowest passing offset in this dispatch; the host sets it to 0xffffffff before each one.
@group(0) @binding(1) var<storage, read_write> found: atomic<u32>;

const K = array<u32, 64>(
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
);

// WGSL has no rotate; drivers that fuse this pattern into a funnel shift make it one instruction.
fn rotr(x: u32, n: u32) -> u32 {
    return (x >> n) | (x << (32u - n));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let offset = id.y * params.nonce.w + id.x;
    if (offset >= params.nonce.z) {
        return;
    }
    // 64-bit nonce = base + offset, with the carry into the high word.
    let lo = params.nonce.y + offset;
    let hi = params.nonce.x + select(0u, 1u, lo < offset);

    var w: array<u32, 16>;
    for (var i = 0u; i < 16u; i++) {
        w[i] = params.words[i / 4u][i % 4u];
    }
    w[6] = hi;
    w[7] = lo;

    var a = params.state[0].x;
    var b = params.state[0].y;
    var c = params.state[0].z;
    var d = params.state[0].w;
    var e = params.state[1].x;
    var f = params.state[1].y;
    var g = params.state[1].z;
    var h = params.state[1].w;

    for (var t = 6u; t < 64u; t++) {
        var wt = w[t & 15u];
        if (t >= 16u) {
            let w15 = w[(t - 15u) & 15u];
            let w2 = w[(t - 2u) & 15u];
            let s0 = rotr(w15, 7u) ^ rotr(w15, 18u) ^ (w15 >> 3u);
            let s1 = rotr(w2, 17u) ^ rotr(w2, 19u) ^ (w2 >> 10u);
            wt = wt + s0 + w[(t - 7u) & 15u] + s1;
            w[t & 15u] = wt;
        }
        let t1 = h + (rotr(e, 6u) ^ rotr(e, 11u) ^ rotr(e, 25u)) + ((e & f) ^ (~e & g)) + K[t] + wt;
        let t2 = (rotr(a, 2u) ^ rotr(a, 13u) ^ rotr(a, 22u)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }

    let h0 = a + params.check.x;
    let h1 = b + params.check.y;
    if ((h0 & params.check.z) == 0u && (h1 & params.check.w) == 0u) {
        atomicMin(&found, offset);
    }
}
