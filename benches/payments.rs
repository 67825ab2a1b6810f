//! What a node spends on one payment off the wire, refused or taken: `cargo bench --bench
//! payments`.
//!
//! - `refused, no coins`: a payment signed by a made-up 8192-bit key whose address holds
//!   nothing: the balance refuses it before the signature is looked at;
//! - `refused, exponent`: the same key with exponent 2^33 - 1 from a funded address: refused by
//!   the exponent rule before any arithmetic;
//! - `refused, bad signature`: a made-up 8192-bit key with exponent 65537 from a funded address
//!   and a random signature: the worst case the rules allow, one full verification;
//! - `refused again`: that payment replayed: its id is remembered;
//! - `taken, 2048-bit`: an honest payment with a 2048-bit key (`key_size`'s default).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mvbc_protocol::encode::Bytes;
use mvbc_protocol::{
    Address, Amount, Block, Chain, ConsensusParams, Hash256, KeyPair, Payment, Pool, Reward,
    Transaction, genesis_block,
};
use pkcs8::EncodePublicKey;
use rand::RngExt;

const PARAMS: ConsensusParams = ConsensusParams {
    difficulty: 1,
    block_size: 1,
    block_reward: Amount::from_units(10_000_000),
};

fn made_up_key(e: u64) -> Vec<u8> {
    let mut n = [0u8; 1024];
    rand::rng().fill(&mut n[..]);
    n[0] |= 0x80;
    n[1023] |= 1;
    rsa::PublicKey::new(
        rsa::BoxedUint::from_be_slice_vartime(&n),
        rsa::BoxedUint::from(e),
    )
    .unwrap()
    .to_public_key_der()
    .unwrap()
    .into_vec()
}

fn forged(key: &[u8], stamp: u64) -> Payment {
    let mut sig = vec![0u8; 1024];
    rand::rng().fill(&mut sig[..]);
    // Below the modulus, as an attacker would send it: a larger one is refused at once.
    sig[0] = 0;
    Payment {
        from: Address::of_public_key_der(key),
        to: Address(Hash256([5; 32])),
        amount: Amount::from_units(1),
        timestamp: stamp,
        public_key: Bytes::new(key.to_vec()).unwrap(),
        signature: Bytes::new(sig).unwrap(),
    }
}

/// A chain of one block per address in `funded`, each paying its reward there.
fn funding(funded: &[Address]) -> Chain {
    let mut chain = Chain::new(PARAMS);
    for (i, to) in funded.iter().enumerate() {
        let reward = Transaction::Reward(Reward {
            to: *to,
            amount: PARAMS.block_reward,
            height: i as u64 + 1,
        });
        let timestamp = genesis_block().header.timestamp + 1 + i as u64;
        let parent = *chain.tip_header();
        let mut block = Block::assemble(&parent, vec![reward], timestamp, PARAMS.difficulty);
        block.header.solve();
        chain.add_block(block, u64::MAX / 2).unwrap();
    }
    chain
}

/// Times adding each of `payments` to a fresh pool (made outside the timing).
fn add_all(
    chain: &Chain,
    iters: u64,
    make: &mut dyn FnMut(u64) -> Payment,
    expect_ok: bool,
) -> Duration {
    let payments: Vec<Payment> = (0..iters).map(&mut *make).collect();
    let room = iters as usize + 1;
    let mut pool = Pool::with_limits(room, room);
    let start = Instant::now();
    for p in payments {
        assert_eq!(pool.add(p, chain.ledger()).is_ok(), expect_ok);
    }
    start.elapsed()
}

fn payments(c: &mut Criterion) {
    let wild = made_up_key((1 << 33) - 1);
    let tame = made_up_key(65_537);
    let honest = KeyPair::generate(2048).unwrap();
    let broke = made_up_key(65_537);
    let chain = funding(&[
        Address::of_public_key_der(&wild),
        Address::of_public_key_der(&tame),
        honest.address(),
    ]);
    let mut group = c.benchmark_group("payment");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    let mut stamp = 0u64;
    group.bench_function("refused, no coins (8192-bit)", |b| {
        b.iter_custom(|n| add_all(&chain, n, &mut |i| forged(&broke, stamp + i), false))
    });
    group.bench_function("refused, exponent 2^33-1 (8192-bit)", |b| {
        b.iter_custom(|n| add_all(&chain, n, &mut |i| forged(&wild, stamp + i), false))
    });
    group.bench_function("refused, bad signature (8192-bit, 65537)", |b| {
        b.iter_custom(|n| {
            stamp += n;
            add_all(&chain, n, &mut |i| forged(&tame, stamp + i), false)
        })
    });
    let replayed = forged(&tame, 0);
    let mut pool = Pool::default();
    assert!(pool.add(replayed.clone(), chain.ledger()).is_err());
    group.bench_function("refused again (remembered id)", |b| {
        b.iter(|| assert!(pool.add(replayed.clone(), chain.ledger()).is_err()))
    });
    group.bench_function("taken (2048-bit key)", |b| {
        b.iter_custom(|n| {
            stamp += n;
            add_all(
                &chain,
                n,
                &mut |i| {
                    Payment::new_signed(
                        &honest,
                        Address(Hash256([6; 32])),
                        Amount::from_units(1),
                        stamp + i,
                    )
                },
                true,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, payments);
criterion_main!(benches);
