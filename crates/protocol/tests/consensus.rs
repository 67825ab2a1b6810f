//! Block validity, one broken rule per block; fork choice and reorgs; the pending pool.

mod common;

use mvbc_protocol::chain::TipMove;

use common::*;
use mvbc_protocol::chain::{AddBlockError, Chain, ChainUpdate};
use mvbc_protocol::pool::{Pool, PoolError};
use mvbc_protocol::rules::{BlockError, MAX_FUTURE_BLOCK_SECS, check_block};
use mvbc_protocol::{Block, Hash256, Transaction, genesis_block};

/// A chain where key 0 mined block 1 (10 coins) and block 2 (10 more, paying 3 to key 1).
/// The same two blocks every time (signatures are randomized, so they are made once).
fn funded_chain() -> Chain {
    static BLOCKS: std::sync::OnceLock<[Block; 2]> = std::sync::OnceLock::new();
    let blocks = BLOCKS.get_or_init(|| {
        let b1 = mine_on(&genesis_block().header, vec![reward(0, 1)], 0);
        let b2 = mine_on(
            &b1.header,
            vec![reward(0, 2), pay(0, 1, 3, 1), pay(0, 2, 1, 2)],
            0,
        );
        [b1, b2]
    });
    let mut chain = Chain::new(PARAMS);
    for b in blocks {
        chain.add_block(b.clone(), NOW).unwrap();
    }
    chain
}

/// A valid next block for `chain` holding `txs` after the reward.
fn next_block(chain: &Chain, payments: Vec<Transaction>) -> Block {
    let height = chain.height() + 1;
    let mut txs = vec![reward(0, height)];
    txs.extend(payments);
    mine_on(chain.tip_header(), txs, 0)
}

/// A signed payment of `c` coins from key `from` to key `to`, as the pool takes it.
fn payment(from: usize, to: usize, c: u64, stamp: u64) -> mvbc_protocol::Payment {
    match pay(from, to, c, stamp) {
        Transaction::Payment(p) => p,
        _ => unreachable!(),
    }
}

fn refused(chain: &mut Chain, block: Block) -> BlockError {
    match chain.add_block(block, NOW) {
        Err(AddBlockError::Invalid { error, .. }) => error,
        other => panic!("expected an invalid block, got {other:?}"),
    }
}

#[test]
fn a_valid_block_extends_the_chain_and_moves_balances() {
    let chain = funded_chain();
    assert_eq!(chain.height(), 2);
    let l = chain.ledger();
    assert_eq!(l.balance(&addr(0)), coins(16));
    assert_eq!(l.balance(&addr(1)), coins(3));
    assert_eq!(l.balance(&addr(2)), coins(1));
    assert_eq!(chain.chain_work(), 2 * 16);
}

#[test]
fn first_block_needs_only_the_reward_later_ones_block_size() {
    let mut chain = Chain::new(PARAMS);
    let two = mine_on(&genesis_block().header, vec![reward(0, 1), reward(1, 1)], 0);
    assert_eq!(
        refused(&mut chain, two),
        BlockError::TxCount {
            expected: 1,
            found: 2
        }
    );
    let chain = funded_chain();
    let mut c = chain;
    let short = next_block(&c, vec![pay(1, 2, 1, 9)]);
    assert_eq!(
        refused(&mut c, short),
        BlockError::TxCount {
            expected: 3,
            found: 2
        }
    );
}

#[test]
fn each_broken_rule_is_refused_with_its_reason() {
    let base = funded_chain();
    let good = next_block(&base, vec![pay(1, 2, 1, 10), pay(2, 0, 1, 11)]);
    assert!(matches!(
        funded_chain().add_block(good.clone(), NOW),
        Ok(ChainUpdate::TipChanged(_))
    ));

    type Case = (&'static str, Block, fn(&BlockError) -> bool);
    let mut cases: Vec<Case> = Vec::new();
    let mut b = good.clone();
    b.header.version = 1;
    cases.push(("version", reseal(b), |e| {
        matches!(e, BlockError::Version(1))
    }));
    let mut b = good.clone();
    b.header.height += 1;
    cases.push(("height", reseal(b), |e| {
        matches!(e, BlockError::Height { .. })
    }));
    let mut b = good.clone();
    b.header.difficulty = PARAMS.difficulty + 1;
    cases.push(("difficulty", reseal(b), |e| {
        matches!(e, BlockError::Difficulty { .. })
    }));
    let mut b = good.clone();
    while b.header.meets_own_difficulty() {
        b.header.nonce += 1;
    }
    cases.push(("proof of work", b, |e| {
        matches!(e, BlockError::ProofOfWork { .. })
    }));
    let mut b = good.clone();
    b.header.timestamp = NOW + MAX_FUTURE_BLOCK_SECS + 1;
    cases.push(("future timestamp", reseal(b), |e| {
        matches!(e, BlockError::FutureTimestamp { .. })
    }));
    let mut b = good.clone();
    b.header.merkle_root = Hash256::ZERO;
    b.header.nonce = 0;
    b.header.solve();
    cases.push(("merkle root", b, |e| {
        matches!(e, BlockError::MerkleRoot { .. })
    }));
    let mut b = good.clone();
    b.transactions.swap(0, 1);
    cases.push(("reward not first", reseal(b), |e| {
        matches!(e, BlockError::MissingReward)
    }));
    let mut b = good.clone();
    b.transactions[2] = reward(1, 3);
    cases.push(("two rewards", reseal(b), |e| {
        matches!(e, BlockError::ExtraReward(2))
    }));
    let mut b = good.clone();
    b.transactions[0] = Transaction::Reward(mvbc_protocol::Reward {
        to: addr(0),
        amount: coins(11),
        height: 3,
    });
    cases.push(("reward amount", reseal(b), |e| {
        matches!(e, BlockError::BadReward { .. })
    }));
    let mut b = good.clone();
    b.transactions[0] = reward(0, 2);
    cases.push(("reward height", reseal(b), |e| {
        matches!(e, BlockError::BadReward { .. })
    }));
    let mut b = good.clone();
    b.transactions[2] = b.transactions[1].clone();
    cases.push(("duplicate in block", reseal(b), |e| {
        matches!(e, BlockError::DuplicateTx(_))
    }));
    let mut b = good.clone();
    if let Transaction::Payment(p) = &mut b.transactions[1] {
        p.amount = coins(2); // no longer what was signed
    }
    cases.push(("bad signature", reseal(b), |e| {
        matches!(e, BlockError::InvalidTx { .. })
    }));
    let mut b = good.clone();
    if let Transaction::Payment(p) = &mut b.transactions[1] {
        p.from = addr(0); // key 1's signature spending key 0's coins
    }
    cases.push(("key not the sender's", reseal(b), |e| {
        matches!(e, BlockError::InvalidTx { .. })
    }));
    let b = next_block(&base, vec![pay(1, 2, 1, 10), pay(2, 0, 0, 11)]);
    cases.push(("zero amount", b, |e| {
        matches!(e, BlockError::InvalidTx { .. })
    }));
    let b = next_block(&base, vec![pay(1, 2, 4, 10), pay(2, 0, 1, 11)]);
    cases.push(("overspend", b, |e| {
        matches!(e, BlockError::Overspend { .. })
    }));
    let b = next_block(&base, vec![pay(1, 2, 2, 10), pay(1, 0, 2, 11)]);
    cases.push(("double spend within a block", b, |e| {
        matches!(e, BlockError::Overspend { .. })
    }));
    let replayed = base.block_at(2).unwrap().unwrap().transactions[1].clone();
    let b = next_block(&base, vec![replayed, pay(2, 0, 1, 11)]);
    cases.push(("replay of a confirmed payment", b, |e| {
        matches!(e, BlockError::Replay(_))
    }));

    for (rule, block, expected) in cases {
        let mut chain = funded_chain();
        let before = (chain.tip_hash(), chain.ledger().clone());
        let error = refused(&mut chain, block.clone());
        assert!(expected(&error), "{rule}: got {error}");
        assert_eq!(
            (chain.tip_hash(), chain.ledger().clone()),
            before,
            "{rule}: state unchanged"
        );
        assert!(!chain.contains(&block.hash()), "{rule}: not stored");
        let hash = block.hash();
        let again = chain.add_block(block, NOW);
        if matches!(error, BlockError::FutureTimestamp { .. }) {
            // Not remembered as invalid: it may become valid as the clock moves on.
            assert!(
                matches!(again, Err(AddBlockError::Invalid { .. })),
                "{rule}"
            );
        } else {
            assert_eq!(again, Err(AddBlockError::KnownInvalid(hash)), "{rule}");
        }
    }
}
#[test]
fn double_spend_across_two_blocks_is_refused() {
    // Key 1 holds 3 coins: two different payments of 2 each, one per block.
    let mut chain = funded_chain();
    let b3 = next_block(&chain, vec![pay(1, 2, 2, 10), pay(2, 0, 1, 11)]);
    chain.add_block(b3, NOW).unwrap();
    let b4 = next_block(&chain, vec![pay(1, 0, 2, 12), pay(2, 0, 1, 13)]);
    assert!(matches!(
        refused(&mut chain, b4),
        BlockError::Overspend { .. }
    ));
}

#[test]
fn unknown_parent_and_wrong_parent_hash() {
    let mut chain = funded_chain();
    let mut orphan = next_block(&chain, vec![pay(1, 2, 1, 10), pay(2, 0, 1, 11)]);
    orphan.header.prev_hash = Hash256([7; 32]);
    let orphan = reseal(orphan);
    assert_eq!(
        chain.add_block(orphan.clone(), NOW),
        Err(AddBlockError::UnknownParent(Hash256([7; 32])))
    );
    // check_block on its own also names a parent mismatch.
    let err = check_block(&orphan, chain.tip_header(), &PARAMS, NOW).unwrap_err();
    assert!(matches!(err, BlockError::Parent { .. }));
}

#[test]
fn the_heavier_branch_wins_and_the_ledger_follows() {
    let mut chain = funded_chain();
    let fork = chain.block_at(2).unwrap().unwrap().header;
    // Main: block 3 pays key 1 -> key 2.
    let a3 = next_block(&chain, vec![pay(1, 2, 2, 20), pay(2, 0, 1, 21)]);
    let a3_payment = a3.transactions[1].id();
    chain.add_block(a3.clone(), NOW).unwrap();
    assert_eq!(chain.ledger().balance(&addr(1)), coins(1));

    // A competing branch from block 2, mined by key 2: equal work, and it loses the
    // tie-break (a higher hash), so no switch.
    let b3 = mine_losing_to(
        &fork,
        vec![reward(2, 3), pay(1, 0, 3, 30), pay(2, 1, 1, 31)],
        &a3,
    );
    assert_eq!(
        chain.add_block(b3.clone(), NOW),
        Ok(ChainUpdate::SideBranch)
    );
    assert_eq!(chain.tip_hash(), a3.hash(), "the lower hash keeps the tie");
    assert_eq!(
        chain.ledger().balance(&addr(1)),
        coins(1),
        "ledger back on the main chain"
    );

    // One more block on the side branch makes it heavier: reorg.
    let b4 = mine_on(
        &b3.header,
        vec![reward(2, 4), pay(2, 0, 1, 32), pay(0, 2, 1, 33)],
        0,
    );
    match chain.add_block(b4.clone(), NOW).unwrap() {
        ChainUpdate::TipChanged(TipMove {
            disconnected,
            connected,
        }) => {
            assert_eq!(
                disconnected.iter().map(|b| b.hash()).collect::<Vec<_>>(),
                [a3.hash()]
            );
            assert_eq!(
                connected.iter().map(|b| b.hash()).collect::<Vec<_>>(),
                [b3.hash(), b4.hash()]
            );
            // Abandoned payments return to the pool while still affordable: key 1 holds 1 coin
            // on the new branch, so a3's payment of 2 is dropped; key 2's payment comes back.
            let mut pool = Pool::default();
            let dropped = pool.reconcile(&disconnected, chain.ledger());
            assert_eq!(dropped, [a3_payment]);
            assert_eq!(pool.select(5)[0].id(), a3.transactions[2].id());
        }
        other => panic!("expected a reorg, got {other:?}"),
    }
    assert_eq!(chain.tip_hash(), b4.hash());
    assert_eq!(chain.height(), 4);
    let l = chain.ledger();
    // key 0: 20 - 3 - 1 (block 2) + 3 (b3) + 1 - 1 (b4) = 19
    assert_eq!(l.balance(&addr(0)), coins(19));
    // key 1: 3 - 3 + 1 (b3) = 1
    assert_eq!(l.balance(&addr(1)), coins(1));
    // key 2: 1 + 10 - 1 (b3) + 10 - 1 + 1 (b4) = 20
    assert_eq!(l.balance(&addr(2)), coins(20));
    assert!(!l.is_confirmed(&a3_payment));
    assert_eq!(chain.tree_len(), 6, "genesis, 1, 2, a3, b3, b4 all kept");
}

#[test]
fn abandoned_payments_that_are_still_valid_return_to_the_pool() {
    let mut chain = funded_chain();
    let fork = chain.block_at(2).unwrap().unwrap().header;
    let a3 = next_block(&chain, vec![pay(1, 2, 1, 20), pay(2, 0, 1, 21)]);
    let returned: Vec<_> = a3.transactions[1..].iter().map(Transaction::id).collect();
    chain.add_block(a3.clone(), NOW).unwrap();
    let b3 = mine_losing_to(
        &fork,
        vec![reward(0, 3), pay(0, 1, 1, 40), pay(0, 2, 1, 41)],
        &a3,
    );
    let b4 = mine_on(
        &b3.header,
        vec![reward(0, 4), pay(0, 1, 1, 42), pay(0, 2, 1, 43)],
        0,
    );
    chain.add_block(b3, NOW).unwrap();
    let ChainUpdate::TipChanged(TipMove { disconnected, .. }) = chain.add_block(b4, NOW).unwrap()
    else {
        panic!("expected a reorg");
    };
    let mut pool = Pool::default();
    assert!(pool.reconcile(&disconnected, chain.ledger()).is_empty());
    assert_eq!(
        pool.select(10).iter().map(|p| p.id()).collect::<Vec<_>>(),
        returned
    );
}

#[test]
fn a_side_branch_invalid_on_its_own_ledger_is_refused_when_it_would_take_over() {
    let mut chain = funded_chain();
    let fork = chain.block_at(2).unwrap().unwrap().header;
    let a3 = next_block(&chain, vec![pay(1, 2, 1, 20), pay(2, 0, 1, 21)]);
    chain.add_block(a3.clone(), NOW).unwrap();
    let tip = chain.tip_hash();
    // On the side branch key 1 only has its 3 coins: paying 3 then 1 overspends there. As a
    // side block of no more work than the tip, losing the tie-break, it is only checked on
    // its own, and kept.
    let bad = mine_losing_to(
        &fork,
        vec![reward(2, 3), pay(1, 0, 3, 50), pay(1, 2, 1, 51)],
        &a3,
    );
    let moves = chain.ledger_moves();
    assert_eq!(
        chain.add_block(bad.clone(), NOW),
        Ok(ChainUpdate::SideBranch)
    );
    assert_eq!(
        chain.ledger_moves(),
        moves,
        "a side block does not move the ledger"
    );
    // A block on it makes the branch heavier: the switch finds the overspend, and the tip,
    // the ledger and the tree stay as they were but for the bad branch, which is gone.
    let child = mine_on(
        &bad.header,
        vec![reward(2, 4), pay(2, 0, 1, 52), pay(0, 2, 1, 53)],
        0,
    );
    match chain.add_block(child.clone(), NOW) {
        Err(AddBlockError::Invalid { hash, error }) => {
            assert_eq!(hash, bad.hash());
            assert!(matches!(error, BlockError::Overspend { .. }), "{error}");
        }
        other => panic!("expected the switch to fail, got {other:?}"),
    }
    assert_eq!(chain.tip_hash(), tip);
    assert_eq!(chain.ledger().balance(&addr(1)), coins(2));
    assert!(!chain.contains(&bad.hash()) && !chain.contains(&child.hash()));
    assert_eq!(chain.side_len(), 0);
    // Both are remembered: neither is checked again.
    assert_eq!(
        chain.add_block(bad.clone(), NOW),
        Err(AddBlockError::KnownInvalid(bad.hash()))
    );
    assert_eq!(
        chain.add_block(child.clone(), NOW),
        Err(AddBlockError::KnownInvalid(child.hash()))
    );
}

/// A chain of `n` blocks holding rewards alone (one transaction a block), cheap to make.
fn reward_only_chain(n: u64, salt: u64) -> (Chain, Vec<Block>) {
    let params = mvbc_protocol::ConsensusParams {
        block_size: 1,
        ..PARAMS
    };
    let mut chain = Chain::new(params);
    let mut blocks = Vec::new();
    for height in 1..=n {
        let block = mine_on(chain.tip_header(), vec![reward(0, height)], salt);
        chain.add_block(block.clone(), NOW).unwrap();
        blocks.push(block);
    }
    (chain, blocks)
}

#[test]
fn a_side_block_costs_the_same_however_long_the_chain_and_deep_the_fork() {
    for length in [20, 400] {
        let (mut chain, _) = reward_only_chain(length, 0);
        let genesis = genesis_block().header;
        // A one-block fork at height 1, then a branch of ten on it.
        let mut parent = genesis;
        let moves = chain.ledger_moves();
        for height in 1..=10 {
            let block = mine_on(&parent, vec![reward(1, height)], 1);
            parent = block.header;
            assert_eq!(chain.add_block(block, NOW), Ok(ChainUpdate::SideBranch));
        }
        assert_eq!(
            chain.ledger_moves(),
            moves,
            "on a chain of {length}: side blocks moved the ledger"
        );
        assert_eq!(chain.side_len(), 10);
    }
}

#[test]
fn side_blocks_are_bounded_and_the_lightest_tips_go_first() {
    use mvbc_protocol::chain::MAX_SIDE_BLOCKS;
    let (mut chain, _) = reward_only_chain(3, 0);
    let genesis = genesis_block().header;
    // A side branch two blocks long: its tip has more work than any single block at height 1.
    let deep1 = mine_on(&genesis, vec![reward(2, 1)], 7);
    let deep2 = mine_on(&deep1.header, vec![reward(2, 2)], 7);
    chain.add_block(deep1.clone(), NOW).unwrap();
    chain.add_block(deep2.clone(), NOW).unwrap();
    // Then more one-block forks at height 1 than the bound: each paid to a different address.
    for i in 0..MAX_SIDE_BLOCKS as u64 + 10 {
        let to = mvbc_protocol::Address(Hash256({
            let mut a = [0u8; 32];
            a[..8].copy_from_slice(&i.to_le_bytes());
            a
        }));
        let reward = Transaction::Reward(mvbc_protocol::Reward {
            to,
            amount: PARAMS.block_reward,
            height: 1,
        });
        let block = mine_on(&genesis, vec![reward], 0);
        assert_eq!(chain.add_block(block, NOW), Ok(ChainUpdate::SideBranch));
        assert!(chain.side_len() <= MAX_SIDE_BLOCKS);
    }
    assert!(chain.side_len() >= MAX_SIDE_BLOCKS * 9 / 10);
    assert!(chain.contains(&deep2.hash()), "the heaviest side tip stays");
    assert!(chain.contains(&deep1.hash()), "and what it builds on");
    assert_eq!(chain.height(), 3);
}

#[test]
fn pool_checks_signature_balance_pending_and_duplicates() {
    let chain = funded_chain();
    let l = chain.ledger();
    let mut pool = Pool::default();
    let p = |t: Transaction| match t {
        Transaction::Payment(p) => p,
        _ => unreachable!(),
    };
    let first = p(pay(1, 2, 2, 60));
    pool.add(first.clone(), l).unwrap();
    assert_eq!(
        pool.add(first.clone(), l),
        Err(PoolError::Duplicate(first.id()))
    );
    // 3 coins confirmed, 2 pending: a second payment of 2 is refused.
    assert!(matches!(
        pool.add(p(pay(1, 0, 2, 61)), l),
        Err(PoolError::Insufficient { .. })
    ));
    pool.add(p(pay(1, 0, 1, 62)), l).unwrap();
    assert_eq!(pool.pending_spend(&addr(1)), coins(3));
    let confirmed = p(chain.block_at(2).unwrap().unwrap().transactions[1].clone());
    assert_eq!(
        pool.add(confirmed.clone(), l),
        Err(PoolError::Confirmed(confirmed.id()))
    );
    let mut forged = p(pay(2, 0, 1, 63));
    forged.to = addr(1);
    assert!(matches!(
        pool.add(forged.clone(), l),
        Err(PoolError::Invalid(_))
    ));
    // Its id is remembered: a replay is refused without checking the signature again.
    assert_eq!(
        pool.add(forged.clone(), l),
        Err(PoolError::KnownInvalid(forged.id()))
    );
}

#[test]
fn cheap_checks_come_before_the_signature() {
    let chain = funded_chain();
    let l = chain.ledger();
    let mut pool = Pool::default();
    // A key nobody funded, with a signature that would not verify: the balance refuses it,
    // so no signature is checked (the reason says so) and nothing is remembered.
    let mut broke = match pay(1, 0, 50, 90) {
        Transaction::Payment(p) => p,
        _ => unreachable!(),
    };
    broke.signature = mvbc_protocol::encode::Bytes::new(vec![0; 128]).unwrap();
    for _ in 0..2 {
        assert!(matches!(
            pool.add(broke.clone(), l),
            Err(PoolError::Insufficient { .. })
        ));
    }
}

#[test]
fn one_sender_holds_at_most_its_share_of_the_pool() {
    let chain = funded_chain();
    let l = chain.ledger();
    let mut pool = Pool::with_limits(100, 3);
    for stamp in 0..3 {
        pool.add(payment(0, 1, 1, 100 + stamp), l).unwrap();
    }
    assert_eq!(
        pool.add(payment(0, 1, 1, 103), l),
        Err(PoolError::SenderFull(addr(0), 3))
    );
    assert!(
        pool.add(payment(1, 0, 1, 104), l).is_ok(),
        "others still get in"
    );
}

#[test]
fn one_payer_with_many_queued_delays_another_by_one_block() {
    let mut chain = funded_chain();
    let mut pool = Pool::default();
    // Key 0 queues 10 payments (each block holds two payments here)...
    for stamp in 0..10 {
        pool.add(payment(0, 2, 1, 200 + stamp), chain.ledger())
            .unwrap();
    }
    // ...then key 1 pays once, then key 2.
    let honest = payment(1, 2, 1, 300);
    let other = payment(2, 1, 1, 301);
    pool.add(honest.clone(), chain.ledger()).unwrap();
    pool.add(other.clone(), chain.ledger()).unwrap();
    // Every payer's first payment is in round one: the next block takes key 0's oldest and
    // key 1's, the one after key 2's, ahead of key 0's second.
    let first = pool.select(2);
    assert_eq!(first[0].from, addr(0));
    assert_eq!(first[1].id(), honest.id());
    let block = next_block(
        &chain,
        first.into_iter().map(Transaction::Payment).collect(),
    );
    chain.add_block(block, NOW).unwrap();
    assert!(pool.reconcile(&[], chain.ledger()).is_empty());
    let second = pool.select(2);
    assert_eq!(second[0].id(), other.id());
    assert_eq!(second[1].from, addr(0));
    // A payer with nothing pending joins the round being served: key 1, paying again, comes
    // before key 0's third and later payments.
    let again = payment(1, 0, 1, 302);
    pool.add(again.clone(), chain.ledger()).unwrap();
    let order: Vec<_> = pool.select(4).iter().map(|p| p.from).collect();
    assert_eq!(order, [addr(2), addr(1), addr(0), addr(0)]);
}

#[test]
fn a_full_pool_drops_the_newest_payment_of_the_sender_holding_the_most() {
    let chain = funded_chain();
    let l = chain.ledger();
    let mut small = Pool::with_capacity(3);
    small.add(payment(0, 1, 1, 64), l).unwrap();
    let newest = small.add(payment(0, 1, 1, 65), l).unwrap();
    small.add(payment(1, 0, 1, 66), l).unwrap();
    // Full: key 2 takes the place of key 0's newest payment, and the coin it spent is free.
    let third = small.add(payment(2, 0, 1, 67), l).unwrap();
    assert_eq!(third.evicted, Some(newest.id));
    assert_eq!(small.len(), 3);
    assert!(!small.contains(&newest.id));
    assert_eq!(small.pending_spend(&addr(0)), coins(1));
    // Now everyone holds one: nobody holds more than the newcomer would, so it is refused.
    assert_eq!(small.add(payment(0, 1, 1, 68), l), Err(PoolError::Full(3)));
    // A payment the sender cannot afford evicts nothing.
    let before: Vec<_> = small.select(3);
    assert!(matches!(
        small.add(payment(2, 0, 50, 69), l),
        Err(PoolError::Insufficient { .. })
    ));
    assert_eq!(small.select(3), before);
    assert_eq!(
        Pool::with_capacity(0).add(payment(0, 1, 1, 70), l),
        Err(PoolError::Full(0))
    );
}

#[test]
fn pool_drops_what_a_new_block_confirms() {
    let mut chain = funded_chain();
    let mut pool = Pool::default();
    let (a, b) = (pay(1, 2, 1, 70), pay(2, 0, 1, 71));
    for t in [&a, &b] {
        if let Transaction::Payment(p) = t {
            pool.add(p.clone(), chain.ledger()).unwrap();
        }
    }
    let c = pay(0, 1, 1, 72);
    if let Transaction::Payment(p) = &c {
        pool.add(p.clone(), chain.ledger()).unwrap();
    }
    chain
        .add_block(next_block(&chain, vec![a, b]), NOW)
        .unwrap();
    assert!(pool.reconcile(&[], chain.ledger()).is_empty());
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.select(5)[0].id(), c.id());
}
