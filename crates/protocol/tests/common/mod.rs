//! Helpers for the protocol's integration tests: small keys, a low difficulty, a tiny miner.
#![allow(dead_code)]

use std::sync::OnceLock;

use mvbc_protocol::{
    Address, Amount, Block, BlockHeader, ConsensusParams, KeyPair, Payment, Reward, Transaction,
};

pub const PARAMS: ConsensusParams = ConsensusParams {
    difficulty: 4,
    block_size: 3,
    block_reward: Amount::from_units(10_000_000),
};

/// Now, as far as these tests are concerned: a day after genesis.
pub const NOW: u64 = mvbc_protocol::block::GENESIS_TIMESTAMP + 86_400;

/// Three shared 1024-bit keys (key generation is the slow part of these tests).
pub fn key(i: usize) -> &'static KeyPair {
    static KEYS: OnceLock<Vec<KeyPair>> = OnceLock::new();
    &KEYS.get_or_init(|| (0..3).map(|_| KeyPair::generate(1024).unwrap()).collect())[i]
}

pub fn addr(i: usize) -> Address {
    key(i).address()
}

pub fn coins(c: u64) -> Amount {
    Amount::from_coins(c).unwrap()
}

pub fn reward(to: usize, height: u64) -> Transaction {
    Transaction::Reward(Reward {
        to: addr(to),
        amount: PARAMS.block_reward,
        height,
    })
}

pub fn pay(from: usize, to: usize, c: u64, stamp: u64) -> Transaction {
    Transaction::Payment(Payment::new_signed(key(from), addr(to), coins(c), stamp))
}

/// A valid block on `parent` with `txs`, mined at the test difficulty. `salt` varies the
/// timestamp so sibling blocks differ.
pub fn mine_on(parent: &BlockHeader, txs: Vec<Transaction>, salt: u64) -> Block {
    let mut block = Block::assemble(parent, txs, parent.timestamp + 1 + salt, PARAMS.difficulty);
    block.header.solve();
    block
}

/// Recomputes the merkle root and proof of work after a test changed a block on purpose.
pub fn reseal(mut block: Block) -> Block {
    block.header.merkle_root = block.compute_merkle_root();
    block.header.nonce = 0;
    block.header.solve();
    block
}

/// A block on `parent` with `txs` that loses the equal-work tie-break to `rival` (its hash,
/// as shown, is higher): a side block that must not take the tip on its own.
pub fn mine_losing_to(parent: &BlockHeader, txs: Vec<Transaction>, rival: &Block) -> Block {
    (0..)
        .map(|salt| mine_on(parent, txs.clone(), salt))
        .find(|b| b.hash().cmp_shown(&rival.hash()) == std::cmp::Ordering::Greater)
        .expect("half of all blocks lose")
}
