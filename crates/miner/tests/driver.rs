//! The node as a library: started in-process through `driver::spawn`, watched through its
//! handle (typed events, its height), stopped through it; two nodes on loopback find each
//! other, the second downloading the first one's chain.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use mvbc_miner::CpuEngine;
use mvbc_miner::driver::{self, Event, NodeHandle};
use mvbc_node::core::Note;
use mvbc_protocol::store::load_chain;
use mvbc_protocol::{Address, Config, Hash256, unix_now};

const PATIENCE: Duration = Duration::from_secs(30);

fn free_udp_port() -> u16 {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

/// A network of its own on loopback: difficulty 12 (a block in about a millisecond), blocks of
/// the reward alone (so mining never waits for payments), any free block server and API port.
fn config(status_port: u16, transaction_port: u16) -> Config {
    Config {
        difficulty: 12,
        block_size: 1,
        status_broadcast_port: status_port,
        transaction_port,
        block_server_port: 0,
        broadcast_address: Some(Ipv4Addr::new(127, 255, 255, 255)),
        api_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        status_broadcast_interval: Duration::from_millis(500),
        ..Config::default()
    }
}

fn start(dir: &Path, config: Config) -> NodeHandle {
    let loaded = load_chain(&dir.join("blocks.dat"), config.consensus(), unix_now()).unwrap();
    let index = driver::open_index(dir, &loaded.chain, false, |_| {});
    assert!(index.is_some(), "an index in {}", dir.display());
    driver::spawn(driver::NodeSetup {
        config,
        chain: loaded.chain,
        store: loaded.store,
        index,
        reward_to: Address(Hash256([7; 32])),
        engine: Box::new(CpuEngine::new(1)),
        meters: None,
        data_dir: dir.to_path_buf(),
        stop: None,
    })
    .unwrap()
}

/// The events the node says up to the first that `pred` accepts, that one included; fails
/// after [`PATIENCE`].
fn said_until(node: &NodeHandle, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut said = Vec::new();
    loop {
        let event = node
            .events()
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("{e} before the event waited for, after {said:?}"));
        let done = pred(&event);
        said.push(event);
        if done {
            return said;
        }
    }
}

#[test]
fn a_node_started_through_its_handle_mines_says_so_in_typed_events_and_stops_with_its_chain_stored()
{
    let dir = tempfile::tempdir().unwrap();
    let config = config(free_udp_port(), free_udp_port());
    let node = start(dir.path(), config.clone());
    let height = node.wait_for_height(3, PATIENCE).unwrap();
    assert!(node.api_addr().is_some_and(|a| a.port() != 0));
    // The chain moves first, then the node says so: wait for its third block's note.
    let events = said_until(&node, |e| {
        matches!(e, Event::Note(Note::BlockMined { height: 3, .. }))
    });
    let listening = events.iter().find_map(|e| match e {
        Event::Listening { block_port, .. } => Some(*block_port),
        _ => None,
    });
    assert_eq!(listening, Some(node.block_port()));
    let mined = events
        .iter()
        .filter(|e| matches!(e, Event::Note(Note::BlockMined { .. })))
        .count();
    assert!(mined >= 3, "{events:?}");

    let events = node.events().clone();
    node.shutdown().unwrap();
    let last = events.iter().last();
    let Some(Event::Stopped {
        height: stopped, ..
    }) = last
    else {
        panic!("the last event is not Stopped: {last:?}");
    };
    assert!(stopped >= height);
    // The chain it said it had is on disk.
    let loaded = load_chain(
        &dir.path().join("blocks.dat"),
        config.consensus(),
        unix_now(),
    );
    assert_eq!(loaded.unwrap().chain.height(), stopped);
}

#[test]
fn a_second_node_in_the_same_process_downloads_the_first_ones_chain() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Tens of blocks a second, not thousands: a node catching up with a chain far ahead does
    // not mine until it is in, and must be able to get in.
    let config = Config {
        difficulty: 20,
        ..config(free_udp_port(), free_udp_port())
    };
    let a = start(a_dir.path(), config.clone());
    a.wait_for_height(5, PATIENCE).unwrap();
    // The first mines ahead; the second joins, downloads and mines on the same chain.
    let b = start(b_dir.path(), config);
    b.wait_for_height(a.height(), PATIENCE).unwrap();
    // The chain moves first, then the node says so.
    said_until(&b, |e| matches!(e, Event::Note(Note::BlockAdopted { .. })));
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

/// Issue 22: at a low difficulty a node finds thousands of blocks a second; it says a few a
/// second one by one and sums up the rest, never one line per block.
#[test]
fn thousands_of_blocks_a_second_are_told_a_few_a_second_and_the_rest_summed_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        difficulty: 8,
        ..config(free_udp_port(), free_udp_port())
    };
    let node = start(dir.path(), config);
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let events = node.events().clone();
    node.shutdown().unwrap();
    let seconds = started.elapsed().as_secs() + 1;
    let (mut shown, mut summed, mut height) = (0, 0, 0);
    for event in events.try_iter() {
        match event {
            Event::Note(Note::BlockMined { .. }) => shown += 1,
            Event::BlocksNotShown { mined, .. } => summed += mined,
            Event::Stopped { height: h, .. } => height = h,
            _ => {}
        }
    }
    assert!(height > 500, "the test needs many blocks: {height}");
    assert!(
        shown <= u64::from(driver::BLOCK_LINES_PER_SECOND) * (seconds + 1),
        "{shown} blocks told one by one in {seconds} s"
    );
    assert!(summed > 0);
    // Each block found is told or counted, those of the last second too, before it stops.
    assert_eq!(shown + summed, height, "{shown} told and {summed} counted");
}
