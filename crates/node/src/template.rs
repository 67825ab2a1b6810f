//! The next block to mine: the reward first, then the payments the pool offers in its order,
//! on the tip, at the network's difficulty. Built only when the pool holds what the block
//! needs (`block_size - 1` payments; none for the first block, or with `block_size = 1`).

use mvbc_protocol::block::MerklePath;
use mvbc_protocol::header::HEADER_VERSION;
use mvbc_protocol::{
    Address, Amount, Block, BlockHeader, Chain, Hash256, Pool, Reward, Transaction,
};

/// The block to search a nonce for on `chain`'s tip, paying its reward to `reward_to`, at Unix
/// time `now`; `None` while the pool holds fewer payments than the block needs. Its nonce is 0:
/// the engine's to find.
pub fn next_block(chain: &Chain, pool: &Pool, reward_to: Address, now: u64) -> Option<Block> {
    let template = Template::next(chain, pool)?;
    let header = template.header(reward_to, now);
    Some(template.block(reward_to, header))
}

/// The next block less its reward: what every block mined on the tip shares, whoever its
/// reward pays. A pool hands each worker a header paying the worker's own address
/// ([`Template::header`]) without hashing the payments again: the reward is the merkle tree's
/// first leaf, and the path from it to the root is the same for every reward.
#[derive(Clone, Debug)]
pub struct Template {
    /// The tip it builds on.
    pub parent: BlockHeader,
    parent_hash: Hash256,
    /// The payments, in the block's order.
    payments: Vec<Transaction>,
    /// The reward's path to the merkle root.
    path: MerklePath,
    reward: Amount,
    /// The network's difficulty.
    pub difficulty: u32,
}

impl Template {
    /// The template on `chain`'s tip with the payments `pool` offers first; `None` while the
    /// pool holds fewer payments than the block needs.
    pub fn next(chain: &Chain, pool: &Pool) -> Option<Template> {
        let params = chain.params();
        let height = chain.height() + 1;
        let needed = params.required_txs(height) - 1;
        if pool.len() < needed {
            return None;
        }
        let payments: Vec<Transaction> = pool
            .select(needed)
            .into_iter()
            .map(Transaction::Payment)
            .collect();
        // Leaf 0 is the reward; its own id is not on its path.
        let ids: Vec<Hash256> = std::iter::once(Hash256::ZERO)
            .chain(payments.iter().map(Transaction::id))
            .collect();
        let path = MerklePath::of(&ids, 0)?;
        let parent = *chain.tip_header();
        Some(Template {
            parent,
            parent_hash: parent.hash(),
            payments,
            path,
            reward: params.block_reward,
            difficulty: params.difficulty,
        })
    }

    /// The height of the block.
    pub fn height(&self) -> u64 {
        self.parent.height + 1
    }

    /// The reward that pays `to`.
    pub fn reward(&self, to: Address) -> Transaction {
        Transaction::Reward(Reward {
            to,
            amount: self.reward,
            height: self.height(),
        })
    }

    /// The header of the block paying `to`, stamped `timestamp`, nonce 0.
    pub fn header(&self, to: Address, timestamp: u64) -> BlockHeader {
        let root = self
            .path
            .root(&self.reward(to).id())
            .expect("a path made from the block's own leaves");
        BlockHeader {
            version: HEADER_VERSION,
            prev_hash: self.parent_hash,
            merkle_root: root,
            timestamp,
            height: self.height(),
            difficulty: self.difficulty,
            nonce: 0,
        }
    }

    /// The block with `header` (from [`Template::header`] for `to`, its nonce found).
    pub fn block(&self, to: Address, header: BlockHeader) -> Block {
        let mut transactions = Vec::with_capacity(1 + self.payments.len());
        transactions.push(self.reward(to));
        transactions.extend(self.payments.iter().cloned());
        Block {
            header,
            transactions,
        }
    }
}
