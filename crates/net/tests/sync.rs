//! Finding the fork point and downloading only what is missing: the locator, the block
//! server's answer, and a real download over loopback TCP.

#[path = "../../protocol/tests/common/mod.rs"]
mod common;

use mvbc_protocol::chain::TipMove;

use std::sync::{Arc, RwLock};

use common::*;
use mvbc_net::{BlockClient, BlockServer, FetchError, answer};
use mvbc_node::apply::ApplyError;
use mvbc_protocol::chain::{Chain, ChainUpdate};
use mvbc_protocol::wire::{MAX_LOCATOR_LEN, Reply, Request};
use mvbc_protocol::{Block, ConsensusParams, genesis_block};

const SMALL_BLOCKS: ConsensusParams = ConsensusParams {
    block_size: 2,
    ..PARAMS
};

/// Extends `chain` by `n` blocks: key 0 earns every reward and pays key `to` one coin a block
/// (`salt` keeps two chains' blocks apart).
fn grow(chain: &mut Chain, n: usize, to: usize, salt: u64) -> Vec<Block> {
    let mut out = Vec::new();
    for _ in 0..n {
        let height = chain.height() + 1;
        let mut txs = vec![reward(0, height)];
        if height > 1 {
            txs.push(pay(0, to, 1, height * 10 + salt));
        }
        let block = mine_on(chain.tip_header(), txs, salt);
        chain.add_block(block.clone(), NOW).unwrap();
        out.push(block);
    }
    out
}

/// Chain `a` of 40 blocks and chain `b` sharing its first 25, then 3 of its own.
fn forked() -> (Chain, Chain) {
    let mut a = Chain::new(SMALL_BLOCKS);
    let shared = grow(&mut a, 25, 1, 0);
    let mut b = Chain::new(SMALL_BLOCKS);
    for block in shared {
        b.add_block(block, NOW).unwrap();
    }
    grow(&mut a, 15, 1, 0);
    grow(&mut b, 3, 2, 5);
    (a, b)
}

#[test]
fn a_locator_is_short_recent_first_and_ends_at_genesis() {
    let (a, _) = forked();
    let locator = a.locator();
    assert_eq!(locator[0], a.tip_hash());
    assert_eq!(locator[9], a.block_at(31).unwrap().unwrap().hash());
    assert_eq!(*locator.last().unwrap(), genesis_block().hash());
    assert!(locator.len() < 20 && locator.len() <= MAX_LOCATOR_LEN);
    assert_eq!(
        Chain::new(SMALL_BLOCKS).locator(),
        vec![genesis_block().hash()]
    );
}

#[test]
fn the_server_sends_only_the_blocks_after_the_fork_point() {
    let (a, b) = forked();
    let a = RwLock::new(a);
    let Reply::Blocks {
        tip_height, blocks, ..
    } = answer(
        &a,
        &Request::BlocksAfter {
            locator: b.locator(),
            max_blocks: 100,
        },
    )
    .unwrap()
    else {
        panic!("blocks were asked for")
    };
    assert_eq!(tip_height, 40);
    let heights: Vec<u64> = blocks.iter().map(|b| b.header.height).collect();
    assert_eq!(heights, (26..=40).collect::<Vec<_>>());
    // A locator the server knows nothing of: everything after genesis, capped.
    let Reply::Blocks { blocks, .. } = answer(
        &a,
        &Request::BlocksAfter {
            locator: vec![mvbc_protocol::Hash256::ZERO],
            max_blocks: 7,
        },
    )
    .unwrap() else {
        panic!("blocks were asked for")
    };
    assert_eq!(blocks.first().unwrap().header.height, 1);
    assert_eq!(blocks.len(), 7);
}

#[test]
fn a_download_over_loopback_switches_to_the_heavier_branch() {
    let (a, mut b) = forked();
    let a_tip = a.tip_hash();
    let server = BlockServer::start(0, Arc::new(RwLock::new(a))).unwrap();
    let mut client = BlockClient::connect(([127, 0, 0, 1], server.port()).into()).unwrap();
    // Four blocks a request: the download goes on from the last block it received.
    client.set_batch(4);
    let mut batches = 0;
    let mut reorged = false;
    let locator = b.locator();
    let got = client
        .download(&locator, 1_000, |blocks, _| -> Result<u64, FetchError> {
            batches += 1;
            let mut new = 0;
            for block in blocks {
                match b.add_block(block, NOW).map_err(ApplyError::from)? {
                    ChainUpdate::TipChanged(TipMove { disconnected, .. }) => {
                        reorged |= !disconnected.is_empty()
                    }
                    ChainUpdate::SideBranch => {}
                    ChainUpdate::AlreadyKnown => continue,
                }
                new += 1;
            }
            Ok(new)
        })
        .unwrap();
    assert_eq!(got, 15);
    assert_eq!(batches, 4, "15 blocks in batches of 4");
    assert!(reorged, "b left its own three blocks");
    assert_eq!(b.tip_hash(), a_tip);
}

#[test]
fn a_branch_is_judged_by_its_headers_before_any_block_is_fetched() {
    let (a, b) = forked();
    let (a_work, a_tip) = (a.chain_work(), a.tip_hash());
    // The server's headers answer the same request its blocks do.
    let shared = RwLock::new(a);
    let Reply::Headers {
        tip_height,
        headers,
        ..
    } = answer(
        &shared,
        &Request::HeadersAfter {
            locator: b.locator(),
            max_headers: 100,
        },
    )
    .unwrap()
    else {
        panic!("headers were asked for")
    };
    assert_eq!(tip_height, 40);
    let heights: Vec<u64> = headers.iter().map(|h| h.height).collect();
    assert_eq!(heights, (26..=40).collect::<Vec<_>>());
    assert_eq!(headers.last().unwrap().hash(), a_tip);

    let server = BlockServer::start(0, Arc::new(shared)).unwrap();
    let mut client = BlockClient::connect(([127, 0, 0, 1], server.port()).into()).unwrap();
    let ours = |h: &mvbc_protocol::Hash256| b.header_and_work(h);
    // Its 15 headers after the fork carry the work it announces: the branch is worth a download.
    let work = client
        .check_branch(&b.locator(), ours, &SMALL_BLOCKS, NOW, a_work, 1_000)
        .unwrap();
    assert_eq!(work, a_work);
    // Announcing one more unit of work than its headers carry: refused by the headers alone.
    let err = client
        .check_branch(&b.locator(), ours, &SMALL_BLOCKS, NOW, a_work + 1, 1_000)
        .unwrap_err();
    assert!(
        matches!(err, FetchError::LightBranch { work, .. } if work == a_work),
        "{err}"
    );
    // Under another network's difficulty every header breaks a rule.
    let other = ConsensusParams {
        difficulty: SMALL_BLOCKS.difficulty + 1,
        ..SMALL_BLOCKS
    };
    let err = client
        .check_branch(&b.locator(), ours, &other, NOW, a_work, 1_000)
        .unwrap_err();
    assert!(
        matches!(err, FetchError::BadHeader { height: 26, .. }),
        "{err}"
    );
}

#[test]
fn a_server_replaying_blocks_it_was_not_asked_for_fails_the_download_at_once() {
    use mvbc_net::{Cancel, FetchError, read_frame, write_frame};
    use std::net::TcpListener;
    use std::time::Duration;
    let (a, _) = forked();
    // Answers every request with the genesis block, which follows nothing a locator names.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        while read_frame(&mut stream, 4096, Duration::from_secs(5), &Cancel::never()).is_ok() {
            let reply = Reply::Blocks {
                tip_height: u64::MAX,
                tip: mvbc_protocol::Hash256([7; 32]),
                blocks: vec![genesis_block()],
            };
            if write_frame(&mut stream, &reply.encode()).is_err() {
                return;
            }
        }
    });
    let mut client = BlockClient::connect(([127, 0, 0, 1], port).into()).unwrap();
    let mut delivered = 0;
    let err = client
        .download(
            &a.locator(),
            1_000,
            |blocks, _| -> Result<u64, FetchError> {
                delivered += blocks.len();
                Ok(blocks.len() as u64)
            },
        )
        .unwrap_err();
    assert!(matches!(err, FetchError::Unlinked { .. }), "{err}");
    assert_eq!(delivered, 0, "nothing was handed over");
}

#[test]
fn clients_holding_every_connection_idle_do_not_lock_out_an_honest_one() {
    use mvbc_net::{MAX_CONNECTIONS, MIN_IDLE_TO_EVICT};
    use socket2::{Domain, Socket, Type};
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
    use std::time::Duration;

    let (a, _) = forked();
    let server = BlockServer::start(0, Arc::new(RwLock::new(a))).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], server.port()).into();
    let ask = |client: &mut BlockClient| {
        client.request(&Request::BlocksAfter {
            locator: vec![],
            max_blocks: 1,
        })
    };
    // One connection from each of 32 loopback addresses (every 127.x.y.z is this host), so
    // the cap per address does not stop them: the server is full.
    let hogs: Vec<TcpStream> = (0..MAX_CONNECTIONS as u8)
        .map(|i| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.bind(&SocketAddrV4::new(Ipv4Addr::new(127, 0, 3, i + 1), 0).into())
                .unwrap();
            s.connect(&addr.into()).unwrap();
            s.into()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Every slot is taken. One more from the first hog's address, which has held its slot
    // longest of all, finds nobody heavier to replace: the cap holds.
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddrV4::new(Ipv4Addr::new(127, 0, 3, 1), 0).into())
        .unwrap();
    s.connect(&addr.into()).unwrap();
    let mut again = TcpStream::from(s);
    let request = Request::BlocksAfter {
        locator: vec![],
        max_blocks: 1,
    };
    mvbc_net::write_frame(&mut again, &request.encode()).unwrap();
    let cancel = mvbc_net::Cancel::never();
    assert!(
        mvbc_net::read_frame(&mut again, 1 << 20, Duration::from_secs(5), &cancel).is_err(),
        "the cap holds"
    );
    // A newcomer from an address that held nothing takes a hog's place at once...
    let mut honest = BlockClient::connect(addr).unwrap();
    let Reply::Blocks { tip_height, .. } = ask(&mut honest).unwrap() else {
        panic!("blocks were asked for")
    };
    assert_eq!(tip_height, 40);
    // ...and once the hogs have idled a second, even the heaviest takes the place of one of
    // them (the server is still full: the honest client holds the slot it took).
    std::thread::sleep(MIN_IDLE_TO_EVICT);
    let mut late = TcpStream::from({
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddrV4::new(Ipv4Addr::new(127, 0, 3, 1), 0).into())
            .unwrap();
        s.connect(&addr.into()).unwrap();
        s
    });
    mvbc_net::write_frame(&mut late, &request.encode()).unwrap();
    assert!(mvbc_net::read_frame(&mut late, 1 << 20, Duration::from_secs(5), &cancel).is_ok());
    drop((hogs, honest));
}
