//! What one block on a side branch costs as the chain grows: `cargo bench --bench side_blocks`.
//!
//! A node must take side blocks (two miners find blocks at once; a partition heals), and a
//! peer may feed it a long valid side branch. Each line adds side blocks to a chain of 1,000 or
//! 10,000 blocks, forking at height 1, either as one-block forks or as one branch growing deeper;
//! the time per block should not grow with the chain or the depth of the fork. Blocks hold their
//! reward alone, so the figures are the chain's own work, not signature checks.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mvbc_protocol::block::GENESIS_TIMESTAMP;
use mvbc_protocol::{
    Address, Amount, Block, BlockHeader, Chain, ConsensusParams, Hash256, Reward, Transaction,
    genesis_block,
};

const PARAMS: ConsensusParams = ConsensusParams {
    difficulty: 1,
    block_size: 1,
    block_reward: Amount::from_units(10_000_000),
};
const NOW: u64 = GENESIS_TIMESTAMP + 365 * 86_400;

/// A block on `parent` paying its reward to an address made from `tag`.
fn block_on(parent: &BlockHeader, tag: u64) -> Block {
    let mut to = [0u8; 32];
    to[..8].copy_from_slice(&tag.to_le_bytes());
    let reward = Transaction::Reward(Reward {
        to: Address(Hash256(to)),
        amount: PARAMS.block_reward,
        height: parent.height + 1,
    });
    let mut block = Block::assemble(
        parent,
        vec![reward],
        parent.timestamp + 1,
        PARAMS.difficulty,
    );
    block.header.solve();
    block
}

fn chain_of(n: u64) -> Chain {
    let mut chain = Chain::new(PARAMS);
    for _ in 0..n {
        let block = block_on(chain.tip_header(), 0);
        chain.add_block(block, NOW).unwrap();
    }
    chain
}

fn side_blocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("side-block");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for n in [1_000u64, 10_000] {
        let mut chain = chain_of(n);
        let genesis = genesis_block().header;
        let mut tag = 1u64;
        group.bench_function(format!("one-block fork at height 1, chain of {n}"), |b| {
            b.iter_custom(|iters| {
                let blocks: Vec<Block> = (0..iters)
                    .map(|_| {
                        tag += 1;
                        block_on(&genesis, tag)
                    })
                    .collect();
                let start = Instant::now();
                for block in blocks {
                    black_box(chain.add_block(block, NOW).unwrap());
                }
                start.elapsed()
            })
        });
        // One branch from height 1 growing a block at a time, up to half the chain's length
        // (then a new branch): the depth of the fork grows with every block. (Past 10,000 side
        // blocks the lightest tips are dropped, the young branch's among them: it starts over.)
        let mut chain = chain_of(n);
        let mut branch_tip = genesis;
        group.bench_function(format!("branch from height 1, chain of {n}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if branch_tip.height >= n / 2 {
                        branch_tip = genesis;
                    }
                    tag += 1;
                    let block = block_on(&branch_tip, tag);
                    branch_tip = block.header;
                    let start = Instant::now();
                    let added = chain.add_block(block, NOW);
                    total += start.elapsed();
                    if black_box(added).is_err() {
                        branch_tip = genesis;
                    }
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, side_blocks);
criterion_main!(benches);
