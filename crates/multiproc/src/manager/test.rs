//! Protocol-level tests: what a broken or hostile authenticated client can
//! send, and the decoders under random bytes.

use std::time::Duration;

use super::blob::SHARE_MIN;
use super::protocol::{Bytes, CodeRef, Init, Op, Reply, Request, Response, fuzz_request};
use super::{Manager, Proxy, serve};
use crate::{Client, Connection, wire};

const KEY: &[u8] = b"test key";
const LONG: Duration = Duration::from_secs(20);

fn raw_client(server: &Manager) -> Connection<()> {
    Client::connect(server.address(), Some(KEY)).unwrap()
}

fn ask(conn: &Connection<()>, request: &Request) -> Response {
    conn.send_bytes(&wire::encode(request).unwrap().bytes).unwrap();
    wire::decode(&conn.recv_bytes_timeout(LONG).unwrap(), Vec::new()).unwrap()
}

fn hello(conn: &Connection<()>, build_id: &str) {
    let r = ask(conn, &Request::Hello { session: 77, pid: 1, build_id: build_id.into() });
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_malformed_request_is_an_error_and_the_connection_goes_on() {
    let server = serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let conn = raw_client(&server);
    hello(&conn, crate::sys::imp::build_id::build_id());
    conn.send_bytes(b"\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01").unwrap();
    let r: Response = wire::decode(&conn.recv_bytes_timeout(LONG).unwrap(), Vec::new()).unwrap();
    assert!(matches!(r, Err(super::RemoteError::BadRequest(_))), "{r:?}");
    // The same connection still works.
    let id = match ask(&conn, &Request::Create { init: Init::Dict, type_name: "d".into(), type_hash: 1 }) {
        Ok(super::protocol::Reply::Created(id)) => id,
        other => panic!("{other:?}"),
    };
    // An object that does not exist, an operation of another kind: errors.
    let r = ask(&conn, &Request::Call { object: id.wrapping_add(1000), op: Op::Len });
    assert!(matches!(r, Err(super::RemoteError::NoSuchObject(_))), "{r:?}");
    let r = ask(&conn, &Request::Call { object: id, op: Op::Pop });
    assert!(matches!(r, Err(super::RemoteError::WrongOperation { .. })), "{r:?}");
}

#[test]
fn another_build_cannot_ship_functions() {
    let server = serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let d = server.dict::<u8, u8>().unwrap();
    let conn = raw_client(&server);
    hello(&conn, "another-build");
    // Plain operations are fine across builds…
    let r = ask(&conn, &Request::Call { object: d.object_ref().id(), op: Op::Len });
    assert!(r.is_ok(), "{r:?}");
    // …shipped code is refused before it is resolved.
    let code = CodeRef { offset: 0x1234, type_hash: 5 };
    let update = Op::Update { key: Some(Bytes::from(vec![1])), index: None, code, args: Bytes::from(vec![]) };
    let r = ask(&conn, &Request::Call { object: d.object_ref().id(), op: update });
    assert!(matches!(r, Err(super::RemoteError::BuildMismatch { .. })), "{r:?}");
    let init = Init::User { state: Bytes::from(vec![]), dispatch: code };
    let r = ask(&conn, &Request::Create { init, type_name: "u".into(), type_hash: 5 });
    assert!(matches!(r, Err(super::RemoteError::BuildMismatch { .. })), "{r:?}");
}

#[test]
fn an_oversized_request_ends_that_connection_only() {
    let server = serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let d = server.dict::<u8, u8>().unwrap();
    let conn = raw_client(&server);
    hello(&conn, crate::sys::imp::build_id::build_id());
    let big = vec![0u8; (super::protocol::MAX_REQUEST + 1) as usize];
    let _ = conn.send_bytes(&big);
    assert!(conn.recv_bytes_timeout(LONG).is_err());
    d.insert(1, 2).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(2));
}

#[test]
fn random_and_mutated_requests_never_panic_the_decoders() {
    let mut seeds: Vec<Vec<u8>> = [
        Request::Hello { session: 1, pid: 2, build_id: "b".into() },
        Request::Create { init: Init::Queue { maxsize: Some(3), joinable: true }, type_name: "q".into(), type_hash: 9 },
        Request::Call { object: 4, op: Op::Insert(Bytes::from(vec![1, 2]), Bytes::from(vec![3])) },
        Request::Call {
            object: 4,
            op: Op::Put { item: Bytes::from(vec![1]), timeout: Some(Duration::from_millis(5)) },
        },
        Request::Lookup { name: "tasks".into() },
        // Large enough to share their frame in the framed decoders.
        Request::Call { object: 4, op: Op::Put { item: Bytes::from(vec![7; SHARE_MIN + 9]), timeout: None } },
    ]
    .iter()
    .map(|r| wire::encode(r).unwrap().bytes)
    .collect();
    let answer: Response = Ok(Reply::Pairs(vec![(Bytes::from(vec![1]), Bytes::from(vec![2; SHARE_MIN + 1]))]));
    seeds.push(wire::encode(&answer).unwrap().bytes);
    let mut state = 0x9E3779B97F4A7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..20_000 {
        let mut data =
            if i % 2 == 0 { seeds[i % seeds.len()].clone() } else { (0..next() % 64).map(|_| next() as u8).collect() };
        for _ in 0..(next() % 4) {
            if !data.is_empty() {
                let at = (next() as usize) % data.len();
                data[at] = next() as u8;
            }
        }
        fuzz_request(&data);
        if i % 1000 == 0 {
            seeds.push(data);
        }
    }
}

#[test]
fn tcp_connections_of_a_manager_notice_a_vanished_peer_on_both_ends() {
    use crate::sys::imp::listen::tcp_liveness;
    use std::os::fd::AsFd;

    let server = serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let client = Manager::connect(server.address(), Some(KEY)).unwrap();
    let d = client.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    let mut seen = 0;
    super::client::for_each_idle(&client.endpoint, |conn| {
        assert_eq!(tcp_liveness(conn.as_fd()).unwrap(), Some(super::client::TCP_LIVENESS), "client side");
        seen += 1;
    });
    assert!(seen > 0, "no idle client connection");
    let super::Owned::Thread { stopper, .. } = &server.owned else { panic!("served on a thread") };
    let mut served = 0;
    stopper.for_each_live(|conn| {
        assert_eq!(tcp_liveness(conn.as_fd()).unwrap(), Some(super::client::TCP_LIVENESS), "server side");
        served += 1;
    });
    assert!(served > 0, "no live server connection");
    server.shutdown().unwrap();
}

#[test]
fn a_proxy_keeps_its_address_through_the_wire_and_names_no_host_to_look_up() {
    use super::client::Endpoint;
    for text in ["tcp:127.0.0.1:5000", "tcp:[::1]:7", "unix:/run/m.sock", "abstract:m-1"] {
        let endpoint = Endpoint::new(&text.parse().unwrap(), Some(KEY));
        let back: Endpoint = wire::decode(&wire::encode(&endpoint).unwrap().bytes, Vec::new()).unwrap();
        assert_eq!(back, endpoint);
        assert_eq!(back.address.to_string(), text);
    }
    // The address travels as its text; a host name in it (which `Display`
    // never writes) is refused instead of looked up while decoding.
    for host in ["tcp:localhost:5000", "localhost:5000"] {
        let forged = wire::encode(&(host, Some(serde_bytes::ByteBuf::from(KEY)))).unwrap();
        assert!(wire::decode::<Endpoint>(&forged.bytes, Vec::new()).is_err(), "{host}");
    }
    // An IP address without the prefix is still an address.
    let plain = wire::encode(&("127.0.0.1:5000", Some(serde_bytes::ByteBuf::from(KEY)))).unwrap();
    let back = wire::decode::<Endpoint>(&plain.bytes, Vec::new()).unwrap();
    assert_eq!(back.address.to_string(), "tcp:127.0.0.1:5000");
}

#[test]
fn a_peer_that_stalls_inside_its_lane_answer_fails_the_connect_within_its_bound() {
    use super::client::{CONNECT_TIMEOUT, Endpoint};
    use super::protocol::Reply;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    // The bytes of a whole lane answer as the wire frames it (without its
    // descriptors), read raw from the far end of a pipe.
    let (a, b) = crate::Pipe::<()>::duplex().unwrap();
    a.send_bytes(&wire::encode(&Ok::<Reply, super::RemoteError>(Reply::Lane)).unwrap().bytes).unwrap();
    let mut frame = vec![0u8; 4096];
    let n = UnixStream::from(b.as_fd().try_clone_to_owned().unwrap()).read(&mut frame).unwrap();
    frame.truncate(n - 1);

    let listener = crate::Listener::bind(format!("@multiproc-stalled-lane-{}", std::process::id()), Some(KEY)).unwrap();
    let endpoint = Endpoint::new(listener.address(), Some(KEY));
    let (release, released) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let conn: Connection<()> = listener.accept_timeout(LONG).unwrap();
        conn.recv_bytes_timeout(LONG).unwrap(); // hello
        let welcome = Ok::<Reply, super::RemoteError>(Reply::Welcome { server: 0x5EED });
        conn.send_bytes(&wire::encode(&welcome).unwrap().bytes).unwrap();
        conn.recv_bytes_timeout(LONG).unwrap(); // the lane request
        // All of the answer but its last byte, then nothing.
        UnixStream::from(conn.as_fd().try_clone_to_owned().unwrap()).write_all(&frame).unwrap();
        let _ = released.recv_timeout(4 * LONG);
    });
    let (done, outcome) = mpsc::channel();
    std::thread::spawn(move || done.send(super::client::connect(&endpoint)));
    let waited = outcome.recv_timeout(CONNECT_TIMEOUT + LONG);
    release.send(()).unwrap();
    peer.join().unwrap();
    match waited {
        Ok(Err(e)) => assert!(matches!(e, super::ManagerError::Connection(ref c) if c.is_timeout()), "{e:?}"),
        Ok(Ok(())) => panic!("connected to a peer that never finished its lane answer"),
        Err(_) => panic!("connect still waits for a lane answer that stalled {:?} ago", CONNECT_TIMEOUT + LONG),
    }
}
