//! The index follows the best chain through reorgs, catches up after a crash, and is made anew
//! when it is deleted, damaged or of another network, with the same answers as a scan; the
//! history it proves to light clients agrees with a scan too, and a light client refuses
//! what is not proven.

mod common;

use std::collections::HashMap;

use common::*;
use mvbc_protocol::headers::HeaderChain;
use mvbc_protocol::index::{Index, Opened, Place};
use mvbc_protocol::light::{ProofError, ProvenTx};
use mvbc_protocol::{
    Address, Block, BlockHeader, Chain, ChainUpdate, Hash256, SignedAmount, genesis_block,
};

/// Blocks on `parent` with payments from key 0: `n` of them, `salt` keeping branches apart.
fn branch(parent: &Block, n: u64, salt: u64) -> Vec<Block> {
    let mut parent = parent.header;
    (0..n)
        .map(|i| {
            let height = parent.height + 1;
            let stamp = salt * 1_000 + i * 10;
            let block = mine_on(
                &parent,
                vec![
                    reward((salt % 2) as usize, height),
                    pay(0, 1, 1, stamp),
                    pay(0, 2, 1, stamp + 1),
                ],
                salt,
            );
            parent = block.header;
            block
        })
        .collect()
}

/// What a scan of `chain`'s best chain says: every transaction's place, and each address's
/// rows, newest first.
fn scanned(chain: &Chain) -> (HashMap<Hash256, Place>, HashMap<Address, Vec<Place>>) {
    let (mut txs, mut histories) = (HashMap::new(), HashMap::<Address, Vec<Place>>::new());
    for height in 0..=chain.height() {
        let block = chain.block_at(height).unwrap().unwrap();
        for (position, tx) in block.transactions.iter().enumerate() {
            let place = Place {
                height,
                position: position as u32,
            };
            txs.insert(tx.id(), place);
            for i in 0..3 {
                if tx.touches(&addr(i)).is_some() {
                    histories.entry(addr(i)).or_default().push(place);
                }
            }
        }
    }
    for rows in histories.values_mut() {
        rows.reverse();
    }
    (txs, histories)
}

/// The index answers as a scan of the chain does, and knows none of `gone`.
fn agrees(index: &Index, chain: &Chain, gone: &[Block]) {
    let (txs, histories) = scanned(chain);
    assert_eq!(
        index.tip().unwrap(),
        Some((chain.height(), chain.tip_hash()))
    );
    for (id, place) in &txs {
        assert_eq!(index.transaction(id).unwrap(), Some(*place), "{id}");
    }
    for block in gone {
        for tx in &block.transactions {
            if !txs.contains_key(&tx.id()) {
                assert_eq!(index.transaction(&tx.id()).unwrap(), None);
            }
        }
    }
    for i in 0..3 {
        let expected = histories.get(&addr(i)).cloned().unwrap_or_default();
        let (total, rows) = index.history(&addr(i), 0, 1_000).unwrap();
        assert_eq!(total, expected.len() as u64, "address {i}");
        assert_eq!(rows, expected, "address {i}");
        // A page: offset 2, three rows.
        let (_, page) = index.history(&addr(i), 2, 3).unwrap();
        let want: Vec<Place> = expected.iter().skip(2).take(3).copied().collect();
        assert_eq!(page, want, "address {i}, a page");
    }
}

/// Adds blocks to the chain and every tip move to the index, as a node does.
fn add(chain: &mut Chain, index: &Index, blocks: &[Block]) {
    for block in blocks {
        if let ChainUpdate::TipChanged(moved) = chain.add_block(block.clone(), NOW).unwrap() {
            let tip = (chain.height(), chain.tip_hash());
            index
                .apply(&moved.disconnected, &moved.connected, tip)
                .unwrap();
        }
    }
}

fn start() -> (Chain, Vec<Block>) {
    let mut chain = Chain::new(PARAMS);
    let b1 = mine_on(&genesis_block().header, vec![reward(0, 1)], 0);
    chain.add_block(b1.clone(), NOW).unwrap();
    let mut blocks = vec![b1.clone()];
    blocks.extend(branch(&b1, 4, 2));
    (chain, blocks)
}

#[test]
fn the_index_follows_the_best_chain_through_a_reorg_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let (index, opened) = Index::open(&path, PARAMS.network_id(), false).unwrap();
    assert!(matches!(opened, Opened::Rebuilt(_)));
    let (mut chain, main) = start();
    assert_eq!(index.catch_up(&chain, 10, |_, _| {}).unwrap(), 1);
    add(&mut chain, &index, &main[1..]);
    agrees(&index, &chain, &[]);

    // A heavier branch from height 3 takes over: blocks 4 and 5 leave the index.
    let fork = branch(&main[2], 3, 3);
    add(&mut chain, &index, &fork);
    assert_eq!(chain.tip_hash(), fork[2].hash());
    agrees(&index, &chain, &main[3..]);

    // And back: the first branch grows heavier again.
    let regrown = branch(&main[4], 2, 4);
    add(&mut chain, &index, &regrown);
    assert_eq!(chain.tip_hash(), regrown[1].hash());
    agrees(&index, &chain, &fork);
}

#[test]
fn after_a_crash_the_index_catches_up_and_leaves_a_branch_the_chain_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let (mut chain, main) = start();
    {
        let (index, _) = Index::open(&path, PARAMS.network_id(), false).unwrap();
        index.catch_up(&chain, 10, |_, _| {}).unwrap();
        add(&mut chain, &index, &main[1..]);
        index.flush().unwrap();
    }
    // The chain moved on without the index (a crash before its commit): a reorg and more.
    let fork = branch(&main[2], 4, 3);
    for b in &fork {
        chain.add_block(b.clone(), NOW).unwrap();
    }
    let (index, opened) = Index::open(&path, PARAMS.network_id(), false).unwrap();
    assert_eq!(opened, Opened::Kept);
    let mut told = Vec::new();
    let added = index
        .catch_up(&chain, 2, |done, total| told.push((done, total)))
        .unwrap();
    assert_eq!(added, 4);
    assert_eq!(told.last(), Some(&(4, 4)));
    agrees(&index, &chain, &main[3..]);
}

#[test]
fn a_deleted_damaged_or_foreign_index_is_made_anew_with_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let (mut chain, main) = start();
    for b in &main[1..] {
        chain.add_block(b.clone(), NOW).unwrap();
    }
    let build = |reindex| {
        let (index, opened) = Index::open(&path, PARAMS.network_id(), reindex).unwrap();
        index.catch_up(&chain, 3, |_, _| {}).unwrap();
        agrees(&index, &chain, &[]);
        opened
    };
    assert!(matches!(build(false), Opened::Rebuilt(_)));
    assert_eq!(build(false), Opened::Kept);
    assert_eq!(build(true), Opened::Rebuilt("--reindex".into()));

    // Damaged: garbage where the database was.
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![0x5a; len]).unwrap();
    let Opened::Rebuilt(why) = build(false) else {
        panic!("a damaged index was kept");
    };
    assert!(why.contains("could not"), "{why}");

    // Deleted.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(build(false), Opened::Rebuilt(_)));

    // Another network's.
    let other = mvbc_protocol::ConsensusParams {
        difficulty: PARAMS.difficulty + 1,
        ..PARAMS
    };
    drop(Index::open(&path, other.network_id(), false).unwrap());
    let Opened::Rebuilt(why) = build(false) else {
        panic!("another network's index was kept");
    };
    assert!(why.contains("another network"), "{why}");
}

/// A new index beside the chain of [`start`], caught up with its first block; the blocks of
/// [`start`] (the rest for the caller to add).
fn indexed() -> (tempfile::TempDir, Index, Chain, Vec<Block>) {
    let dir = tempfile::tempdir().unwrap();
    let (index, _) =
        Index::open(&dir.path().join("index.redb"), PARAMS.network_id(), false).unwrap();
    let (chain, main) = start();
    index.catch_up(&chain, 10, |_, _| {}).unwrap();
    (dir, index, chain, main)
}

/// The best chain's headers, as a light client holds them after checking each.
fn headers_of(chain: &Chain) -> HeaderChain {
    let mut headers = HeaderChain::new(PARAMS);
    let all: Vec<BlockHeader> = (1..=chain.height())
        .map(|h| *chain.header_at(h).unwrap())
        .collect();
    headers.add(&all, NOW).unwrap();
    headers
}

/// What a light client gets for `who` page by page, each transaction checked against
/// `headers`.
fn proven(chain: &Chain, index: &Index, headers: &HeaderChain, who: &[Address]) -> Vec<ProvenTx> {
    let (mut from, mut out) = (1, Vec::new());
    loop {
        let page = index
            .proven_history(chain, who, from, &headers.tip_hash())
            .unwrap()
            .expect("the chain holds the client's tip");
        for e in &page.entries {
            e.check(headers, who).unwrap();
            assert!(e.height >= from && e.height <= page.through);
        }
        out.extend(page.entries);
        if page.through >= headers.height() {
            return out;
        }
        assert!(page.through >= from, "a page moves on");
        from = page.through + 1;
    }
}

/// A balance by proven transactions alone.
fn balance_of(entries: &[ProvenTx], who: &Address) -> SignedAmount {
    entries
        .iter()
        .filter_map(|e| e.tx.touches(who))
        .map(|(amount, _)| amount)
        .sum()
}

/// A light client that asks for each address's proven history sees what a scan of the chain
/// sees, with the same balances, before and after a reorg; a tip the server's chain left is
/// answered with nothing.
#[test]
fn proven_history_agrees_with_a_scan_of_the_chain_through_a_reorg() {
    let (_dir, index, mut chain, main) = indexed();
    add(&mut chain, &index, &main[1..]);
    let check = |chain: &Chain, headers: &HeaderChain| {
        let (_, histories) = scanned(chain);
        for i in 0..3 {
            let entries = proven(chain, &index, headers, &[addr(i)]);
            let mut expected = histories.get(&addr(i)).cloned().unwrap_or_default();
            expected.reverse();
            let got: Vec<Place> = entries
                .iter()
                .map(|e| Place {
                    height: e.height,
                    position: e.path.index,
                })
                .collect();
            assert_eq!(got, expected, "address {i}");
            let full = SignedAmount::credit(chain.ledger().balance(&addr(i)));
            assert_eq!(balance_of(&entries, &addr(i)), full, "address {i}");
        }
        // Several addresses at once: each transaction once, by height and position.
        let all = proven(chain, &index, headers, &[addr(0), addr(1), addr(2)]);
        let total: usize = (1..=chain.height())
            .map(|h| chain.block_at(h).unwrap().unwrap().transactions.len())
            .sum();
        assert_eq!(all.len(), total);
    };
    let headers = headers_of(&chain);
    check(&chain, &headers);
    // From a height on: only what is at or above it.
    let page = index
        .proven_history(&chain, &[addr(1)], 4, &headers.tip_hash())
        .unwrap()
        .unwrap();
    assert!(!page.entries.is_empty() && page.entries.iter().all(|e| e.height >= 4));

    let fork = branch(&main[2], 3, 3);
    add(&mut chain, &index, &fork);
    assert_eq!(
        index
            .proven_history(&chain, &[addr(1)], 1, &main[4].hash())
            .unwrap(),
        None,
        "a tip the chain left"
    );
    check(&chain, &headers_of(&chain));
}

/// While the index is behind the chain, a page ends where the index does.
#[test]
fn a_page_ends_where_the_index_does() {
    let (_dir, index, mut chain, main) = indexed();
    add(&mut chain, &index, &main[1..3]);
    for block in &main[3..] {
        chain.add_block(block.clone(), NOW).unwrap();
    }
    let page = index
        .proven_history(&chain, &[addr(1)], 1, &chain.tip_hash())
        .unwrap()
        .unwrap();
    assert_eq!(page.through, 3);
    assert!(page.entries.iter().all(|e| e.height <= 3));
}

/// A light client counts nothing that is not proven against its own headers: a changed
/// transaction or path, a block it does not hold, a transaction of another address.
#[test]
fn a_light_client_refuses_what_is_not_proven() {
    let (_dir, index, mut chain, main) = indexed();
    add(&mut chain, &index, &main[1..]);
    let headers = headers_of(&chain);
    let who = [addr(1)];
    let entries = proven(&chain, &index, &headers, &who);
    let good = entries.last().unwrap().clone();
    assert_eq!(good.check(&headers, &who), Ok(()));

    let mut bad_path = good.clone();
    bad_path.path.siblings[0] = Hash256([7; 32]);
    assert!(matches!(
        bad_path.check(&headers, &who),
        Err(ProofError::BadPath { .. })
    ));
    let mut other_tx = good.clone();
    other_tx.tx = pay(0, 1, 5, 999_999);
    let refused = other_tx.check(&headers, &who).unwrap_err();
    assert!(matches!(refused, ProofError::BadPath { .. }) && refused.is_lie());
    let mut unknown = good.clone();
    unknown.block = Hash256([9; 32]);
    let refused = unknown.check(&headers, &who).unwrap_err();
    assert!(matches!(refused, ProofError::UnknownHeader { .. }) && !refused.is_lie());
    let mut moved = good.clone();
    moved.height -= 1;
    assert!(matches!(
        moved.check(&headers, &who),
        Err(ProofError::UnknownHeader { .. })
    ));
    assert!(matches!(
        good.check(&headers, &[addr(2)]),
        Err(ProofError::NotAsked { .. })
    ));
    // A client whose headers stop below the block does not count it.
    let mut shorter = HeaderChain::new(PARAMS);
    let all: Vec<BlockHeader> = (1..good.height)
        .map(|h| *chain.header_at(h).unwrap())
        .collect();
    shorter.add(&all, NOW).unwrap();
    assert!(matches!(
        good.check(&shorter, &who),
        Err(ProofError::UnknownHeader { .. })
    ));
}
