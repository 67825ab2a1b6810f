//! Fork choice is one strict total order on chains: more work wins, and of equal-work chains
//! the one whose first block after the fork point has the lower hash as shown. Every node that
//! holds the same blocks ends on the same tip, whatever order they came in, and a store reload
//! gives that tip back (the tie-break Bitcoin Core once lost on reload, PR #29640).

mod common;

use mvbc_protocol::chain::TipMove;

use std::cmp::Ordering;

use common::*;
use mvbc_protocol::chain::{Chain, ChainUpdate};
use mvbc_protocol::store::rebuild_chain;
use mvbc_protocol::{Block, ConsensusParams, Hash256, genesis_block};
use proptest::prelude::*;

const REWARD_ONLY: ConsensusParams = ConsensusParams {
    block_size: 1,
    ..PARAMS
};

/// A tree of reward-only blocks: block `i` builds on block `parents[i]` of the tree (or on
/// genesis where that is `i` itself or later), each with its own salt. Parents come first.
fn tree(parents: &[usize], salts: &[u64]) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for (i, (&p, &salt)) in parents.iter().zip(salts).enumerate() {
        let parent = if p < i {
            blocks[p].header
        } else {
            genesis_block().header
        };
        let height = parent.height + 1;
        blocks.push(mine_on(&parent, vec![reward(0, height)], salt));
    }
    blocks
}

/// Adds `blocks` in the order given, each after its parent; returns the chain and what a node
/// would have stored: each block as it joined the best chain.
fn add_all(blocks: &[Block]) -> (Chain, Vec<Block>) {
    let mut chain = Chain::new(REWARD_ONLY);
    let mut stored = Vec::new();
    for block in blocks {
        if let Ok(ChainUpdate::TipChanged(TipMove { connected, .. })) =
            chain.add_block(block.clone(), NOW)
        {
            stored.extend(connected.iter().map(|b| Block::clone(b)));
        }
    }
    (chain, stored)
}

/// `blocks` (parents first) in another order that still puts every parent before its
/// children: at each step, the ready block that `keys` ranks first.
fn reordered(blocks: &[Block], keys: &[u64]) -> Vec<Block> {
    let mut left: Vec<usize> = (0..blocks.len()).collect();
    let mut out: Vec<Block> = Vec::new();
    while !left.is_empty() {
        let placed = |h: &Hash256| {
            *h == genesis_block().hash() || out.iter().any(|b: &Block| b.hash() == *h)
        };
        let ready = left
            .iter()
            .copied()
            .filter(|&i| placed(&blocks[i].header.prev_hash))
            .min_by_key(|&i| keys[i % keys.len()].rotate_left(i as u32))
            .expect("a parent is always placed before its children");
        left.retain(|&i| i != ready);
        out.push(blocks[ready].clone());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fork_choice_is_a_strict_total_order_whatever_the_arrival_order(
        parents in prop::collection::vec(0usize..12, 2..12),
        salts in prop::collection::vec(0u64..1_000, 12),
        keys in prop::collection::vec(any::<u64>(), 12),
    ) {
        let blocks = tree(&parents, &salts[..parents.len()]);
        let (chain, stored) = add_all(&blocks);
        let mut all: Vec<Hash256> = blocks.iter().map(Block::hash).collect();
        all.push(genesis_block().hash());
        all.sort_unstable();
        all.dedup();
        let cmp = |a: &Hash256, b: &Hash256| chain.compare_tips(a, b).unwrap();
        for a in &all {
            prop_assert_eq!(cmp(a, a), Ordering::Equal);
            for b in &all {
                // Antisymmetric, and strict: only a block equals itself.
                prop_assert_eq!(cmp(a, b), cmp(b, a).reverse());
                prop_assert_eq!(cmp(a, b) == Ordering::Equal, a == b);
                for c in &all {
                    if cmp(a, b) == Ordering::Greater && cmp(b, c) == Ordering::Greater {
                        prop_assert_eq!(cmp(a, c), Ordering::Greater, "not transitive");
                    }
                }
            }
        }
        // The tip is the greatest block of the tree.
        let best = all.iter().copied().max_by(|a, b| cmp(a, b)).unwrap();
        prop_assert_eq!(chain.tip_hash(), best);
        // Another arrival order ends on the same tip.
        let (again, _) = add_all(&reordered(&blocks, &keys));
        prop_assert_eq!(again.tip_hash(), best);
        // So does a restart from what the node stored.
        let (reloaded, refused) = rebuild_chain(REWARD_ONLY, stored, NOW);
        prop_assert!(refused.is_empty());
        prop_assert_eq!(reloaded.tip_hash(), best);
    }
}

/// Every order of `n` things, by Heap's algorithm.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, a, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    heap(n, &mut (0..n).collect(), &mut out);
    out
}

#[test]
fn every_order_of_two_to_five_rival_blocks_ends_on_the_lowest_hash() {
    let (base, _) = add_all(&tree(&[0, 0], &[0, 0]));
    let parent = base.tip_header();
    let rivals: Vec<Block> = (0..5)
        .map(|salt| mine_on(parent, vec![reward(0, parent.height + 1)], 10 + salt))
        .collect();
    for n in 2..=5 {
        let lowest = rivals[..n]
            .iter()
            .map(Block::hash)
            .min_by(|a, b| a.cmp_shown(b))
            .unwrap();
        let orders = permutations(n);
        assert_eq!(orders.len(), (1..=n).product::<usize>());
        for order in orders {
            let mut chain = Chain::new(REWARD_ONLY);
            for h in 1..=base.height() {
                let block = Block::clone(&base.block_at(h).unwrap().unwrap());
                chain.add_block(block, NOW).unwrap();
            }
            for &i in &order {
                chain.add_block(rivals[i].clone(), NOW).unwrap();
            }
            assert_eq!(chain.tip_hash(), lowest, "{n} rivals in order {order:?}");
        }
    }
}

#[test]
fn the_choice_stays_put_while_both_branches_grow() {
    // Two branches from genesis; whichever's first block has the lower hash wins each tie,
    // however high the other branch's later blocks are.
    let a1 = mine_on(&genesis_block().header, vec![reward(0, 1)], 1);
    let b1 = mine_on(&genesis_block().header, vec![reward(1, 1)], 2);
    let (win, lose) = if a1.hash().cmp_shown(&b1.hash()) == Ordering::Less {
        (a1, b1)
    } else {
        (b1, a1)
    };
    let mut chain = Chain::new(REWARD_ONLY);
    chain.add_block(lose.clone(), NOW).unwrap();
    assert_eq!(
        chain.add_block(win.clone(), NOW),
        Ok(ChainUpdate::TipChanged(TipMove {
            disconnected: vec![std::sync::Arc::new(lose.clone())],
            connected: vec![std::sync::Arc::new(win.clone())],
        })),
        "the lower hash takes the tie at once"
    );
    let (mut w, mut l) = (win.header, lose.header);
    for height in 2..6 {
        // The loser's branch grows first each round, and takes the lead for a moment...
        let next_l = mine_on(&l, vec![reward(1, height)], 0);
        chain.add_block(next_l.clone(), NOW).unwrap();
        assert_eq!(chain.tip_hash(), next_l.hash(), "more work wins");
        // ...until the winner's branch is level again.
        let next_w = mine_on(&w, vec![reward(0, height)], 0);
        chain.add_block(next_w.clone(), NOW).unwrap();
        assert_eq!(
            chain.tip_hash(),
            next_w.hash(),
            "height {height}: the tie moved"
        );
        (w, l) = (next_w.header, next_l.header);
    }
}
