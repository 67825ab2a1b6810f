//! The block store survives a crash at any byte and refuses a second process; its validated
//! mark spares a restart the signature checks only for the chain it names.

mod common;

use common::*;
use mvbc_protocol::genesis_block;
use mvbc_protocol::store::{
    BlockStore, Damage, StoreError, load_chain, read_only_chain, rebuild_chain, validated_path,
};
use mvbc_protocol::{AddBlockError, Block, BlockError, ChainUpdate, Transaction};

fn three_blocks() -> Vec<mvbc_protocol::Block> {
    let b1 = mine_on(&genesis_block().header, vec![reward(0, 1)], 0);
    let b2 = mine_on(
        &b1.header,
        vec![reward(0, 2), pay(0, 1, 1, 1), pay(0, 2, 1, 2)],
        0,
    );
    let b3 = mine_on(
        &b2.header,
        vec![reward(1, 3), pay(1, 2, 1, 3), pay(0, 2, 1, 4)],
        0,
    );
    vec![b1, b2, b3]
}

fn write_store(path: &std::path::Path, blocks: &[mvbc_protocol::Block]) -> u64 {
    write_store_with(path, &PARAMS, blocks);
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn blocks_come_back_and_rebuild_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.dat");
    let blocks = three_blocks();
    write_store(&path, &blocks);
    let opened = BlockStore::open(&path, &PARAMS).unwrap();
    assert_eq!(opened.blocks, blocks);
    assert!(opened.recovery.is_none());
    let (chain, refused) = rebuild_chain(PARAMS, opened.blocks, NOW);
    assert!(refused.is_empty());
    assert_eq!(chain.height(), 3);
    assert_eq!(chain.ledger().balance(&addr(2)), coins(3));
}

#[test]
fn truncation_at_every_byte_of_the_last_record_keeps_the_earlier_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.dat");
    let blocks = three_blocks();
    let two_len = {
        let p = dir.path().join("two.dat");
        write_store(&p, &blocks[..2])
    };
    let full_len = write_store(&full, &blocks);
    let bytes = std::fs::read(&full).unwrap();
    for cut in two_len..full_len {
        let path = dir.path().join(format!("cut{cut}.dat"));
        std::fs::write(&path, &bytes[..cut as usize]).unwrap();
        let opened = BlockStore::open(&path, &PARAMS).unwrap();
        assert_eq!(opened.blocks, blocks[..2], "cut at {cut}");
        let recovery = opened.recovery.clone();
        assert_eq!(recovery.is_some(), cut > two_len, "cut at {cut}");
        if let Some(r) = recovery {
            assert_eq!((r.kept_bytes, r.dropped_bytes), (two_len, cut - two_len));
        }
        // The torn tail is gone and the store takes appends again.
        let mut store = opened.store;
        store.append(&blocks[2]).unwrap();
        drop(store);
        assert_eq!(
            BlockStore::open(&path, &PARAMS).unwrap().blocks,
            blocks,
            "cut at {cut}, re-appended"
        );
    }
}

#[test]
fn a_flipped_byte_cuts_the_store_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.dat");
    let blocks = three_blocks();
    let one_len = write_store(&dir.path().join("one.dat"), &blocks[..1]);
    write_store(&path, &blocks);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[one_len as usize + 20] ^= 0x40; // inside block 2's record
    std::fs::write(&path, &bytes).unwrap();
    let opened = BlockStore::open(&path, &PARAMS).unwrap();
    assert_eq!(opened.blocks, blocks[..1]);
    let r = opened.recovery.unwrap();
    assert_eq!(r.kept_bytes, one_len);
    assert_eq!(r.reason, Damage::Checksum { at: one_len });
    assert!(r.to_string().contains("checksum mismatch"), "{r}");
}

#[test]
fn a_torn_store_header_and_a_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let torn = dir.path().join("torn.dat");
    std::fs::write(&torn, b"MVBC").unwrap();
    let opened = BlockStore::open(&torn, &PARAMS).unwrap();
    assert!(opened.blocks.is_empty() && opened.recovery.is_some());
    let foreign = dir.path().join("foreign.dat");
    std::fs::write(&foreign, b"#!/bin/sh\necho hi\n").unwrap();
    assert!(matches!(
        BlockStore::open(&foreign, &PARAMS),
        Err(StoreError::NotAStore(_))
    ));
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        b"#!/bin/sh\necho hi\n",
        "left untouched"
    );
    // A chain written under header version 1 is named as such and kept.
    let older = dir.path().join("older.dat");
    let mut bytes = b"MVBCBLK1".to_vec();
    bytes.extend_from_slice(&[7; 100]);
    std::fs::write(&older, &bytes).unwrap();
    let Err(err) = BlockStore::open(&older, &PARAMS) else {
        panic!("a version-1 store was opened");
    };
    assert!(matches!(err, StoreError::OlderRules(_)), "{err}");
    assert!(err.to_string().contains("older mvbc"), "{err}");
    assert_eq!(std::fs::read(&older).unwrap(), bytes, "left untouched");
}

#[test]
fn a_second_open_is_refused_while_the_first_holds_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.dat");
    let first = BlockStore::open(&path, &PARAMS).unwrap();
    assert!(matches!(
        BlockStore::open(&path, &PARAMS),
        Err(StoreError::Locked(_))
    ));
    drop(first);
    assert!(BlockStore::open(&path, &PARAMS).is_ok());
}

#[test]
fn a_reader_sees_the_chain_while_a_writer_holds_it_and_skips_a_half_written_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wallet-blocks.dat");
    let (empty, _) = read_only_chain(&path, PARAMS, NOW).unwrap();
    assert_eq!(empty.height(), 0, "no file yet: an empty chain");
    let blocks = three_blocks();
    let mut writer = BlockStore::open(&path, &PARAMS).unwrap();
    for b in &blocks[..2] {
        writer.store.append(b).unwrap();
    }
    // Half of the third record, as a writer in the middle of an append leaves it.
    let full = std::fs::read(&path).unwrap();
    writer.store.append(&blocks[2]).unwrap();
    let with_third = std::fs::read(&path).unwrap();
    std::fs::write(
        &path,
        &with_third[..full.len() + (with_third.len() - full.len()) / 2],
    )
    .unwrap();
    let (chain, refused) = read_only_chain(&path, PARAMS, NOW).unwrap();
    assert!(refused.is_empty());
    assert_eq!(chain.height(), 2);
    assert!(
        std::fs::read(&path).unwrap().len() > full.len(),
        "the reader repairs nothing"
    );
}

/// Issue 22: a data directory remembers its network. Under other parameters the store is
/// refused, naming what differs, and not a byte of it changes.
#[test]
fn a_store_of_other_parameters_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.dat");
    write_store(&path, &three_blocks());
    let before = std::fs::read(&path).unwrap();
    let other = mvbc_protocol::ConsensusParams {
        block_size: PARAMS.block_size + 1,
        ..PARAMS
    };
    assert_ne!(other.network_id(), PARAMS.network_id());
    let Err(err) = BlockStore::open(&path, &other) else {
        panic!(
            "a store of block size {} opened under {}",
            PARAMS.block_size, other.block_size
        );
    };
    let text = err.to_string();
    let expected = format!(
        "holds a chain of block_size {}; the config says block_size {}",
        PARAMS.block_size, other.block_size
    );
    assert!(text.contains(&expected), "{text}");
    assert!(matches!(
        read_only_chain(&path, other, NOW),
        Err(StoreError::OtherNetwork { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before, "left byte for byte");
    // Under its own parameters it opens as before.
    assert_eq!(BlockStore::open(&path, &PARAMS).unwrap().blocks.len(), 3);
    // A damaged header is refused too: which network it is cannot be told.
    let mut damaged = before.clone();
    damaged[20] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    assert!(matches!(
        BlockStore::open(&path, &PARAMS),
        Err(StoreError::BadHeader(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), damaged);
}

/// A store of the previous format (no header) is labelled on open when its blocks follow the
/// parameters, and refused untouched when they do not.
#[test]
fn an_unlabelled_store_is_labelled_when_its_blocks_pass_and_kept_when_they_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let labelled = dir.path().join("labelled.dat");
    let blocks = three_blocks();
    write_store(&labelled, &blocks);
    let labelled = std::fs::read(&labelled).unwrap();
    // The previous format: its magic, then the same records with no header.
    let header_len = 8 + 8 + mvbc_protocol::rules::PARAMS_BYTES;
    let mut unlabelled = mvbc_protocol::store::UNLABELLED_STORE_MAGIC.to_vec();
    unlabelled.extend_from_slice(&labelled[header_len..]);
    let path = dir.path().join("blocks.dat");
    std::fs::write(&path, &unlabelled).unwrap();

    let other = mvbc_protocol::ConsensusParams {
        block_size: PARAMS.block_size + 1,
        ..PARAMS
    };
    let Err(err) = BlockStore::open(&path, &other) else {
        panic!("blocks of another block size were labelled");
    };
    assert!(matches!(err, StoreError::UnlabelledRefused { .. }), "{err}");
    assert!(err.to_string().contains("block_size"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        unlabelled,
        "left byte for byte"
    );

    let opened = BlockStore::open(&path, &PARAMS).unwrap();
    assert_eq!(opened.blocks, blocks);
    assert!(opened.recovery.is_none());
    drop(opened);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        labelled,
        "labelled as a new store is"
    );
    assert!(!dir.path().join("blocks.dat.labelling").exists());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever follows the header, opening never panics, keeps only intact records, and leaves
    /// a store that opens again cleanly with the same blocks.
    #[test]
    fn any_bytes_after_the_header_open_cleanly(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks.dat");
        drop(BlockStore::open(&path, &PARAMS).unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).unwrap();
        let first = BlockStore::open(&path, &PARAMS).unwrap();
        let blocks = first.blocks.clone();
        // The in-memory scan (what the fuzz target drives) sees exactly what opening saw.
        let scan = mvbc_protocol::store::scan(&bytes).unwrap();
        proptest::prop_assert_eq!(&scan.blocks, &blocks);
        proptest::prop_assert_eq!(scan.kept, std::fs::metadata(&path).unwrap().len());
        drop(first);
        let again = BlockStore::open(&path, &PARAMS).unwrap();
        proptest::prop_assert!(again.recovery.is_none());
        proptest::prop_assert_eq!(again.blocks, blocks);
    }
}

/// A chain of reward-only blocks on `parent`, `salt` keeping two of them apart.
fn rewards_on(parent: &mvbc_protocol::BlockHeader, n: u64, salt: u64) -> Vec<mvbc_protocol::Block> {
    let mut parent = *parent;
    (0..n)
        .map(|_| {
            let height = parent.height + 1;
            let block = mine_on(&parent, vec![reward(0, height)], salt);
            parent = block.header;
            block
        })
        .collect()
}

const REWARD_ONLY: mvbc_protocol::ConsensusParams = mvbc_protocol::ConsensusParams {
    block_size: 1,
    ..PARAMS
};

/// A store of `n` reward-only blocks in a new directory, loaded, with every body read back
/// from the store (none of the newest kept in memory).
fn stored_rewards(
    n: u64,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Vec<mvbc_protocol::Block>,
    mvbc_protocol::store::LoadedChain,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.dat");
    let blocks = rewards_on(&genesis_block().header, n, 0);
    write_store_with(&path, &REWARD_ONLY, &blocks);
    let mut loaded = load_chain(&path, REWARD_ONLY, NOW).unwrap();
    assert!(loaded.refused.is_empty() && loaded.recovery.is_none());
    loaded.chain.set_recent_bodies(0);
    (dir, path, blocks, loaded)
}

/// A loaded chain keeps headers and reads bodies back from the store: every block comes back
/// as it was stored, a reorg undoes stored blocks read from disk, and a restart finds the
/// chain the reorg left.
#[test]
fn a_loaded_chain_reads_its_bodies_back_from_the_store() {
    let (_dir, path, main, loaded) = stored_rewards(30);
    let (mut chain, mut store) = (loaded.chain, loaded.store);
    assert_eq!(chain.height(), 30);
    for b in &main {
        assert!(chain.is_stored(&b.hash()));
        let read = chain.block_at(b.header.height).unwrap().unwrap();
        assert_eq!(*read, *b);
        assert_eq!(*chain.block(&b.hash()).unwrap().unwrap(), *b);
    }
    let served = chain
        .blocks_after(&[main[9].hash()], 100, usize::MAX)
        .unwrap();
    assert_eq!(served.len(), 20);
    assert!(served.iter().zip(&main[10..]).all(|(a, b)| **a == *b));

    // A heavier branch from height 10: the 20 stored blocks above it are read back to be undone.
    let fork = rewards_on(&main[9].header, 21, 1);
    // Summed over the branch: an equal-work tie at height 30 may already take the tip.
    let mut moved = mvbc_protocol::chain::TipMove::default();
    for b in &fork {
        if let ChainUpdate::TipChanged(m) = chain.add_block(b.clone(), NOW).unwrap() {
            for joined in &m.connected {
                let at = store.append(joined).unwrap();
                chain.stored(&joined.hash(), at);
            }
            moved.then(m);
        }
    }
    assert_eq!(chain.height(), 31);
    assert_eq!(chain.tip_hash(), fork[20].hash());
    let gone: Vec<_> = moved.disconnected.iter().map(|b| b.hash()).collect();
    let expected: Vec<_> = main[10..].iter().rev().map(|b| b.hash()).collect();
    assert_eq!(gone, expected);
    // The ledger followed: 10 rewards of the old chain and 21 of the new one.
    assert_eq!(
        chain.ledger().balance(&addr(0)),
        mvbc_protocol::Amount::from_units(REWARD_ONLY.block_reward.units() * 31)
    );
    // The old branch's blocks are side blocks whose bodies are still read from the store.
    assert_eq!(*chain.block(&main[29].hash()).unwrap().unwrap(), main[29]);
    drop((chain, store));

    // After a restart the same chain comes back from the one store.
    let mut again = load_chain(&path, REWARD_ONLY, NOW).unwrap();
    again.chain.set_recent_bodies(0);
    assert_eq!(again.chain.tip_hash(), fork[20].hash());
    assert_eq!(*again.chain.block_at(5).unwrap().unwrap(), main[4]);
}

/// A store changed under a running chain gives an error naming the damage, not a panic and
/// not another block.
#[test]
fn a_store_damaged_under_the_chain_is_an_error() {
    let (_dir, path, main, loaded) = stored_rewards(3);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = loaded.chain.block_at(3).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Damaged {
                damage: Damage::Checksum { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("changed under"), "{err}");
    // Other blocks still read.
    assert_eq!(*loaded.chain.block_at(2).unwrap().unwrap(), main[1]);
}

/// A restart reads the blocks under the store's validated mark without checking their
/// payments' signatures again; a store changed since (a block under the mark made anew with a
/// payment whose signature fails, or such a side block added) does not match the mark, and is
/// loaded with every check.
#[test]
fn a_validated_mark_spares_signature_checks_only_for_the_chain_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.dat");
    let blocks = three_blocks();
    write_store(&path, &blocks);
    let mark = validated_path(&path);
    assert!(!mark.exists());
    let first = load_chain(&path, PARAMS, NOW).unwrap();
    assert!(first.refused.is_empty());
    let (tip, balance) = (
        first.chain.tip_hash(),
        first.chain.ledger().balance(&addr(2)),
    );
    drop(first);
    assert!(mark.exists());
    let again = load_chain(&path, PARAMS, NOW).unwrap();
    assert!(again.refused.is_empty());
    assert_eq!(again.chain.tip_hash(), tip);
    assert_eq!(again.chain.ledger().balance(&addr(2)), balance);
    drop(again);
    let saved_mark = std::fs::read(&mark).unwrap();
    let bad_signature = |block: &mut Block, i: usize| {
        if let Transaction::Payment(p) = &mut block.transactions[i] {
            p.timestamp += 1; // no longer what was signed
        }
    };

    // Block 2 made anew with a payment whose signature fails, and block 3 on it, with the
    // real store's mark copied beside: the mark names a block this store lacks.
    let forged_path = dir.path().join("forged.dat");
    let mut b2 = blocks[1].clone();
    bad_signature(&mut b2, 1);
    let b2 = reseal(b2);
    let b3 = mine_on(&b2.header, blocks[2].transactions.clone(), 0);
    write_store(&forged_path, &[blocks[0].clone(), b2, b3]);
    std::fs::write(validated_path(&forged_path), &saved_mark).unwrap();
    let forged = load_chain(&forged_path, PARAMS, NOW).unwrap();
    assert_eq!(forged.chain.height(), 1);
    assert!(
        matches!(
            &forged.refused[0],
            AddBlockError::Invalid {
                error: BlockError::InvalidTx { .. },
                ..
            }
        ),
        "{:?}",
        forged.refused
    );
    drop(forged);

    // A side block under the mark with a payment whose signature fails, added to the real
    // store: found after the load, and the store loaded again with every check.
    let mut side = mine_on(
        &blocks[0].header,
        vec![reward(1, 2), pay(0, 1, 1, 50), pay(0, 2, 1, 51)],
        7,
    );
    bad_signature(&mut side, 1);
    let side = reseal(side);
    BlockStore::open(&path, &PARAMS)
        .unwrap()
        .store
        .append(&side)
        .unwrap();
    std::fs::write(&mark, &saved_mark).unwrap();
    let loaded = load_chain(&path, PARAMS, NOW).unwrap();
    assert_eq!(loaded.chain.tip_hash(), tip);
    assert_eq!(loaded.refused.len(), 1, "{:?}", loaded.refused);
    assert!(!loaded.chain.contains(&side.hash()));
}

/// A new store at `path` of a chain of `params`, holding `blocks`.
fn write_store_with(
    path: &std::path::Path,
    params: &mvbc_protocol::ConsensusParams,
    blocks: &[mvbc_protocol::Block],
) {
    let mut opened = BlockStore::open(path, params).unwrap();
    assert!(opened.blocks.is_empty() && opened.recovery.is_none());
    for b in blocks {
        opened.store.append(b).unwrap();
    }
}
