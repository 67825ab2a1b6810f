//! Fake peers for the hostile tests: block servers that lie, stall or replay, statuses that
//! boast, and clients that pretend to be on other hosts (every 127.x.y.z is this host).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use mvbc_net::{Cancel, read_frame, write_frame};
use mvbc_protocol::light::ProvenTx;
use mvbc_protocol::wire::{Datagram, Reply, Request, Status};
use mvbc_protocol::{Address, Amount, Block, Hash256, Payment};

use crate::procs::Net;

/// A block server that answers every request for blocks with `blocks` and a tip at
/// `tip_height`, whatever was asked (and requests for headers with theirs).
pub fn serve_forever(blocks: Vec<Block>, tip_height: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let blocks = blocks.clone();
            thread::spawn(move || {
                while let Ok(body) =
                    read_frame(&mut stream, 4096, Duration::from_secs(5), &Cancel::never())
                {
                    let tip = Hash256([7; 32]);
                    // Whatever blocks are asked for, the same blocks; headers as a real server
                    // sends them, after the first hash of the locator it holds.
                    let reply = match Request::decode(&body) {
                        Ok(Request::HeadersAfter { locator, .. }) => Reply::Headers {
                            tip_height,
                            tip,
                            headers: blocks
                                .iter()
                                .skip(
                                    locator
                                        .iter()
                                        .find_map(|h| blocks.iter().position(|b| b.hash() == *h))
                                        .map_or(0, |i| i + 1),
                                )
                                .map(|b| b.header)
                                .collect(),
                        },
                        _ => Reply::Blocks {
                            tip_height,
                            tip,
                            blocks: blocks.clone(),
                        },
                    };
                    if write_frame(&mut stream, &reply.encode()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A block server of the chain `blocks` (genesis excluded) that announces `status` as its own
/// and answers every light wallet's history request with `forged` alone, complete up to the
/// wallet's tip: headers and blocks as an honest server sends them.
pub fn serve_false_history(blocks: Vec<Block>, status: Status, forged: ProvenTx) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let (blocks, forged) = (blocks.clone(), forged.clone());
            thread::spawn(move || {
                let after = |locator: &[Hash256]| {
                    locator
                        .iter()
                        .find_map(|h| blocks.iter().position(|b| b.hash() == *h))
                        .map_or(0, |i| i + 1)
                };
                while let Ok(body) =
                    read_frame(&mut stream, 4096, Duration::from_secs(5), &Cancel::never())
                {
                    let (tip_height, tip) = (status.height, status.tip);
                    let reply = match Request::decode(&body) {
                        Ok(Request::Status) => Reply::Status(status),
                        Ok(Request::HeadersAfter { locator, .. }) => Reply::Headers {
                            tip_height,
                            tip,
                            headers: blocks[after(&locator)..].iter().map(|b| b.header).collect(),
                        },
                        Ok(Request::BlocksAfter { locator, .. }) => Reply::Blocks {
                            tip_height,
                            tip,
                            blocks: blocks[after(&locator)..].to_vec(),
                        },
                        Ok(Request::History { .. }) => Reply::History {
                            through: tip_height,
                            entries: vec![forged.clone()],
                        },
                        _ => return,
                    };
                    if write_frame(&mut stream, &reply.encode()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A block server that takes each request and never answers (a frame would time out only
/// after 10 s).
pub fn serve_nothing() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let _ = read_frame(&mut stream, 4096, Duration::from_secs(60), &Cancel::never());
                thread::sleep(Duration::from_secs(60));
            });
        }
    });
    port
}

/// A status on `net` claiming far more work than any chain, for a block server on `port`.
pub fn boast(net: &Net, node_id: u64, port: u16) -> Status {
    Status {
        network: net.params().network_id(),
        node_id,
        height: u64::MAX,
        tip: Hash256([7; 32]),
        chain_work: u128::MAX / 2,
        block_server_port: port,
    }
}

/// Broadcasts `status` on `net`'s status port every `period`, for a minute.
pub fn announce_forever(net: &Net, status: Status, period: Duration) {
    let port = net.status_port;
    thread::spawn(move || {
        let out = UdpSocket::bind("0.0.0.0:0").unwrap();
        out.set_broadcast(true).unwrap();
        let bytes = Datagram::Status(status).encode();
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let _ = out.send_to(&bytes, (Ipv4Addr::new(127, 255, 255, 255), port));
            thread::sleep(period);
        }
    });
}

/// A TCP connection to `server` from the loopback address `source`: a stand-in for a client on
/// another host.
pub fn connect_from(source: Ipv4Addr, server: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddrV4::new(source, 0).into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(3))?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A UDP socket sending from the loopback address `source`, broadcasts allowed.
pub fn udp_from(source: Ipv4Addr) -> UdpSocket {
    let socket = UdpSocket::bind((source, 0)).unwrap();
    socket.set_broadcast(true).unwrap();
    socket
}

/// Sends `datagrams` round and round to `port` on the loopback broadcast address from
/// `source`, `per_second` of them a second, until the returned flag is raised.
pub fn flood(
    source: Ipv4Addr,
    port: u16,
    datagrams: Vec<Vec<u8>>,
    per_second: u32,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    thread::spawn(move || {
        let out = udp_from(source);
        let started = Instant::now();
        let mut sent: u64 = 0;
        for bytes in datagrams.iter().cycle() {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            let _ = out.send_to(bytes, (Ipv4Addr::new(127, 255, 255, 255), port));
            sent += 1;
            // Keep to the rate: sleep whenever ahead of it.
            let due = Duration::from_secs_f64(sent as f64 / f64::from(per_second));
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                thread::sleep(ahead);
            }
        }
    });
    stop
}

/// A public key nobody holds the private half of: a random odd 8192-bit modulus with exponent
/// `e`, as an attacker makes them by the thousand.
pub fn made_up_key(e: u64, rng: &mut crate::rng::TestRng) -> Vec<u8> {
    use pkcs8::EncodePublicKey;
    let mut n = rng.bytes(1024);
    n[0] |= 0x80;
    n[1023] |= 1;
    rsa::PublicKey::new(
        rsa::BoxedUint::from_be_slice_vartime(&n),
        rsa::BoxedUint::from(e),
    )
    .unwrap()
    .to_public_key_der()
    .unwrap()
    .into_vec()
}

/// `n` payments "from" the address of `key`, each with its own timestamp (so its own id) and a
/// random signature: a datagram each.
pub fn forged_payments(key: &[u8], n: u64, rng: &mut crate::rng::TestRng) -> Vec<Vec<u8>> {
    use mvbc_protocol::encode::Bytes;
    (0..n)
        .map(|stamp| {
            Datagram::Payment(Payment {
                from: Address::of_public_key_der(key),
                to: Address(Hash256([5; 32])),
                amount: Amount::from_units(1),
                timestamp: stamp,
                public_key: Bytes::new(key.to_vec()).unwrap(),
                signature: Bytes::new(rng.bytes(1024)).unwrap(),
            })
            .encode()
        })
        .collect()
}
