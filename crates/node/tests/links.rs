//! The node core's links, event by event: what a payment, a status request and invalid data
//! on a link make it send, and to whom.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mvbc_node::apply::BlockSink;
use mvbc_node::core::{Effect, NodeCore};
use mvbc_node::links::{LinkId, Links, Refused};
use mvbc_protocol::block::{GENESIS_TIMESTAMP, merkle_root};
use mvbc_protocol::header::HEADER_VERSION;
use mvbc_protocol::store::StoreError;
use mvbc_protocol::wire::{LinkMessage, Status};
use mvbc_protocol::{
    Amount, Block, BlockHeader, Chain, ConsensusParams, Hash256, KeyPair, Payment, Reward,
    Transaction, genesis_block,
};

const PARAMS: ConsensusParams = ConsensusParams {
    difficulty: 4,
    block_size: 3,
    block_reward: Amount::from_units(10_000_000),
};
const NOW: u64 = GENESIS_TIMESTAMP + 86_400;

struct Memory;

impl BlockSink for Memory {
    fn append(&mut self, _: &Block) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A chain whose block 1 pays `key`.
fn chain_paying(key: &KeyPair) -> Chain {
    let mut chain = Chain::new(PARAMS);
    let reward = Transaction::Reward(Reward {
        to: key.address(),
        amount: PARAMS.block_reward,
        height: 1,
    });
    let mut block = Block {
        header: BlockHeader {
            version: HEADER_VERSION,
            prev_hash: genesis_block().hash(),
            merkle_root: merkle_root(&[reward.id()]),
            timestamp: GENESIS_TIMESTAMP + 1,
            height: 1,
            difficulty: PARAMS.difficulty,
            nonce: 0,
        },
        transactions: vec![reward],
    };
    while !block.header.meets_own_difficulty() {
        block.header.nonce += 1;
    }
    chain.add_block(block, NOW).unwrap();
    chain
}

fn hello(node_id: u64) -> Status {
    Status {
        node_id,
        height: 0,
        tip: Hash256::ZERO,
        chain_work: 0,
        block_server_port: 2607,
    }
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 2607))
}

/// Which links were sent a payment.
fn payments_sent(effects: &[Effect]) -> Vec<LinkId> {
    let mut to: Vec<LinkId> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(id, LinkMessage::Payment(_)) => Some(*id),
            _ => None,
        })
        .collect();
    to.sort_unstable();
    to
}

#[test]
fn a_payment_goes_on_to_every_other_link_once_and_a_bad_one_closes_its_link() {
    let t0 = Instant::now();
    let key = KeyPair::generate(1024).unwrap();
    let chain = Arc::new(RwLock::new(chain_paying(&key)));
    let mut core = NodeCore::new(
        1,
        2607,
        chain,
        Memory,
        key.address(),
        Duration::from_secs(16),
    );
    core.set_links(Links::new(1, &[], &[], t0));
    let mut ids = Vec::new();
    for i in 1..=3u8 {
        core.admit_link(addr(i).ip(), &hello(10 + u64::from(i)), t0)
            .unwrap();
        ids.push(
            core.link_up(addr(i), false, hello(10 + u64::from(i)), t0)
                .unwrap(),
        );
    }
    let greeted: Vec<LinkId> = core
        .take_effects()
        .iter()
        .filter_map(|e| match e {
            Effect::Send(id, LinkMessage::Status(s)) if s.node_id == 1 => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(greeted, ids, "each new link is sent our status");

    // A payment from link 1 goes to links 2 and 3, once; the same from link 2 goes nowhere.
    let payment = Payment::new_signed(&key, key.address(), Amount::from_units(5), NOW);
    core.on_link_message(ids[0], LinkMessage::Payment(payment.clone()), t0, NOW);
    assert_eq!(payments_sent(&core.take_effects()), [ids[1], ids[2]]);
    core.on_link_message(ids[1], LinkMessage::Payment(payment), t0, NOW);
    assert_eq!(payments_sent(&core.take_effects()), Vec::<LinkId>::new());

    // A broadcast request for status is answered by broadcast only: nothing to the links.
    core.on_status_request();
    let effects = core.take_effects();
    assert!(
        matches!(effects.as_slice(), [Effect::Announce(_)]),
        "{effects:?}"
    );

    // A payment whose signature does not hold: the link closes, its address is refused.
    let mut forged = Payment::new_signed(&key, key.address(), Amount::from_units(6), NOW);
    forged.amount = Amount::from_units(7);
    core.on_link_message(ids[2], LinkMessage::Payment(forged), t0, NOW);
    let effects = core.take_effects();
    assert!(effects.contains(&Effect::Close(ids[2])), "{effects:?}");
    assert!(payments_sent(&effects).is_empty());
    assert_eq!(
        core.admit_link(addr(3).ip(), &hello(99), t0),
        Err(Refused::Banned)
    );
    assert_eq!(core.links().len(), 2);
}
