//! The next block to mine: the reward first, then the payments the pool offers in its order,
//! on the tip, at the network's difficulty. Built only when the pool holds what the block
//! needs (`block_size - 1` payments; none for the first block, or with `block_size = 1`).

use mvbc_protocol::{Address, Block, Chain, Pool, Reward, Transaction};

/// The block to search a nonce for on `chain`'s tip, paying its reward to `reward_to`, at Unix
/// time `now`; `None` while the pool holds fewer payments than the block needs. Its nonce is 0:
/// the engine's to find.
pub fn next_block(chain: &Chain, pool: &Pool, reward_to: Address, now: u64) -> Option<Block> {
    let params = chain.params();
    let height = chain.height() + 1;
    let needed = params.required_txs(height) - 1;
    if pool.len() < needed {
        return None;
    }
    let mut transactions = vec![Transaction::Reward(Reward {
        to: reward_to,
        amount: params.block_reward,
        height,
    })];
    transactions.extend(pool.select(needed).into_iter().map(Transaction::Payment));
    Some(Block::assemble(
        chain.tip_header(),
        transactions,
        now,
        params.difficulty,
    ))
}
