//! Adding blocks to a chain and its store, as both programs do.

use mvbc_node::apply::{self, Added, ApplyError, TipMove};
use mvbc_protocol::block::GENESIS_TIMESTAMP;
use mvbc_protocol::store::BlockStore;
use mvbc_protocol::{
    Address, Amount, Block, BlockHeader, Chain, ConsensusParams, Hash256, Reward, Transaction,
    genesis_block,
};

const PARAMS: ConsensusParams = ConsensusParams {
    difficulty: 4,
    block_size: 1,
    block_reward: Amount::from_units(10_000_000),
};
const NOW: u64 = GENESIS_TIMESTAMP + 86_400;

/// A reward-only block on `parent`, mined at the test difficulty; `salt` tells siblings apart.
fn mine_on(parent: &BlockHeader, salt: u8) -> Block {
    let height = parent.height + 1;
    let reward = Transaction::Reward(Reward {
        to: Address(Hash256([salt; 32])),
        amount: PARAMS.block_reward,
        height,
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

/// `n` blocks on `parent`.
fn branch(parent: &BlockHeader, n: usize, salt: u8) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    for _ in 0..n {
        let tip = out.last().map_or(*parent, |b| b.header);
        out.push(mine_on(&tip, salt));
    }
    out
}

fn stored(path: &std::path::Path) -> Vec<Hash256> {
    let opened = BlockStore::open(path, &PARAMS).unwrap();
    opened.blocks.iter().map(Block::hash).collect()
}

#[test]
fn a_batch_counts_new_blocks_and_stores_what_joins_the_best_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.dat");
    let mut store = BlockStore::open(&path, &PARAMS).unwrap().store;
    let mut chain = Chain::new(PARAMS);
    let main = branch(&genesis_block().header, 3, 1);

    // The first block twice: known the second time, not new.
    let mut blocks = main.clone();
    blocks.insert(1, main[0].clone());
    let batch = apply::add_batch(&mut chain, &mut store, blocks, NOW);
    assert!(batch.error.is_none());
    assert_eq!(batch.new, 3);
    assert!(batch.moved.disconnected.is_empty());
    assert_eq!(batch.moved.connected.len(), 3);
    assert_eq!(chain.height(), 3);

    // A heavier rival from height 1: its first block is a side block (new, not stored), then
    // the rival takes over and one merged move says so.
    let rival = branch(&main[0].header, 3, 2);
    let batch = apply::add_batch(&mut chain, &mut store, rival.clone(), NOW);
    assert!(batch.error.is_none());
    assert_eq!(batch.new, 3);
    let hashes = |v: &[std::sync::Arc<Block>]| v.iter().map(|b| b.hash()).collect::<Vec<_>>();
    assert_eq!(
        hashes(&batch.moved.disconnected),
        vec![main[2].hash(), main[1].hash()]
    );
    assert_eq!(
        hashes(&batch.moved.connected),
        rival.iter().map(Block::hash).collect::<Vec<_>>()
    );
    assert_eq!(chain.tip_hash(), rival[2].hash());
    drop(store);
    let on_disk = stored(&path);
    assert_eq!(
        on_disk.len(),
        6,
        "every block that joined the best chain, in order"
    );
    assert_eq!(&on_disk[3..], &hashes(&batch.moved.connected)[..]);
}

#[test]
fn a_refused_block_ends_the_batch_and_what_came_before_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.dat");
    let mut store = BlockStore::open(&path, &PARAMS).unwrap().store;
    let mut chain = Chain::new(PARAMS);
    let mut blocks = branch(&genesis_block().header, 3, 1);
    blocks[1].header.nonce ^= 1; // no longer meets its difficulty (or links on)
    let batch = apply::add_batch(&mut chain, &mut store, blocks, NOW);
    assert!(
        matches!(batch.error, Some(ApplyError::Refused(_))),
        "{batch:?}"
    );
    assert_eq!((batch.new, chain.height()), (1, 1));
    drop(store);
    assert_eq!(stored(&path).len(), 1);
}

#[test]
fn a_lock_is_taken_per_block_and_gives_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = BlockStore::open(&dir.path().join("blocks.dat"), &PARAMS)
        .unwrap()
        .store;
    let shared = std::sync::RwLock::new(Chain::new(PARAMS));
    let blocks = branch(&genesis_block().header, 2, 1);
    let mut access = &shared;
    let first = apply::add_block(&mut access, &mut store, blocks[0].clone(), NOW).unwrap();
    assert!(matches!(first, Added::Moved(ref m) if m.connected.len() == 1));
    let again = apply::add_block(&mut access, &mut store, blocks[0].clone(), NOW).unwrap();
    assert_eq!(again, Added::Known);
    assert_eq!(shared.read().unwrap().height(), 1);
}

#[test]
fn consecutive_moves_merge_into_one() {
    let blocks = branch(&genesis_block().header, 3, 1);
    let arc = |i: usize| std::sync::Arc::new(blocks[i].clone());
    let mut sum = TipMove {
        disconnected: vec![],
        connected: vec![arc(0), arc(1)],
    };
    // A later move takes block 1 out again and adds block 2: block 1 never counts.
    sum.then(TipMove {
        disconnected: vec![arc(1)],
        connected: vec![arc(2)],
    });
    assert_eq!(sum.connected, vec![arc(0), arc(2)]);
    assert!(sum.disconnected.is_empty());
    // Taking back all it connected leaves nothing; a block from before the sum leaves for good.
    let older = std::sync::Arc::new(genesis_block());
    sum.then(TipMove {
        disconnected: vec![arc(2), arc(0), older.clone()],
        connected: vec![],
    });
    assert!(sum.connected.is_empty());
    assert_eq!(sum.disconnected, vec![older]);
}

#[test]
fn the_next_block_waits_for_the_payments_it_needs_and_then_is_valid() {
    use mvbc_node::template::next_block;
    use mvbc_protocol::{KeyPair, Payment, Pool};
    let to = Address(Hash256([5; 32]));
    // block_size 1: reward-only blocks, one after another, with nothing pooled.
    let mut chain = Chain::new(PARAMS);
    let pool = Pool::default();
    for _ in 0..2 {
        let mut block = next_block(&chain, &pool, to, NOW).expect("nothing to wait for");
        assert_eq!(block.transactions.len(), 1);
        block.header.solve();
        chain.add_block(block, NOW).unwrap();
    }
    // block_size 3: the first block holds its reward alone, the next waits for two payments.
    let params = ConsensusParams {
        block_size: 3,
        ..PARAMS
    };
    let key = KeyPair::generate(1024).unwrap();
    let mut chain = Chain::new(params);
    let mut pool = Pool::default();
    let mut first = next_block(&chain, &pool, key.address(), NOW).unwrap();
    first.header.solve();
    chain.add_block(first, NOW).unwrap();
    let pay = |stamp| Payment::new_signed(&key, to, Amount::from_units(1), stamp);
    pool.add(pay(1), chain.ledger()).unwrap();
    assert!(
        next_block(&chain, &pool, key.address(), NOW).is_none(),
        "one of two"
    );
    pool.add(pay(2), chain.ledger()).unwrap();
    let mut block = next_block(&chain, &pool, key.address(), NOW).unwrap();
    assert_eq!(block.header.prev_hash, chain.tip_hash());
    assert_eq!(block.header.height, 2);
    assert!(matches!(block.transactions[0], Transaction::Reward(_)));
    assert_eq!(block.compute_merkle_root(), block.header.merkle_root);
    block.header.solve();
    // Every rule holds: the chain takes it and the payments move coins.
    chain.add_block(block, NOW).unwrap();
    assert_eq!(chain.height(), 2);
    assert_eq!(chain.ledger().balance(&to), Amount::from_units(2));
}

/// A store that takes `room` blocks and then fails, as a full disk does.
struct Full {
    room: usize,
    taken: Vec<Hash256>,
}

impl apply::BlockSink for Full {
    fn append(
        &mut self,
        block: &Block,
    ) -> Result<Option<mvbc_protocol::store::BodyAt>, mvbc_protocol::store::StoreError> {
        if self.taken.len() == self.room {
            return Err(mvbc_protocol::store::StoreError::Io {
                path: "blocks.dat".into(),
                source: std::sync::Arc::new(std::io::Error::other("No space left on device")),
            });
        }
        self.taken.push(block.hash());
        Ok(None)
    }
}

#[test]
fn a_block_the_store_cannot_take_leaves_the_chain_in_memory_where_the_store_is() {
    let mut chain = Chain::new(PARAMS);
    let mut store = Full {
        room: 2,
        taken: Vec::new(),
    };
    let main = branch(&genesis_block().header, 3, 1);
    let batch = apply::add_batch(&mut chain, &mut store, main.clone(), NOW);
    assert!(
        matches!(batch.error, Some(ApplyError::Store { height: 2, .. })),
        "{batch:?}"
    );
    assert_eq!(batch.new, 2);
    assert_eq!((chain.height(), chain.tip_hash()), (2, main[1].hash()));
    assert_eq!(store.taken, vec![main[0].hash(), main[1].hash()]);

    // A reorg whose second block cannot be stored: the old best chain is back in memory, its
    // ledger with it.
    let mut chain = Chain::new(PARAMS);
    let mut store = Full {
        room: 3,
        taken: Vec::new(),
    };
    let batch = apply::add_batch(&mut chain, &mut store, main.clone(), NOW);
    assert!(batch.error.is_none());
    let balance = chain.ledger().balance(&Address(Hash256([1; 32])));
    let rival = branch(&main[0].header, 3, 2);
    let err = apply::add_batch(&mut chain, &mut store, rival.clone(), NOW).error;
    assert!(matches!(err, Some(ApplyError::Store { .. })), "{err:?}");
    assert_eq!(chain.tip_hash(), main[2].hash(), "the stored best chain");
    assert_eq!(chain.height(), 3);
    assert_eq!(chain.ledger().balance(&Address(Hash256([1; 32]))), balance);
    assert!(chain.contains(&rival[2].hash()), "kept on a side branch");
}
