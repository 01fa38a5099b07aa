//! Peers that connect to a manager and then say nothing: one that never
//! completes the handshake, or authenticates and never sends its hello, is
//! closed within the connect timeout (10 s), and meanwhile the manager
//! serves everyone else; a flood of them costs the manager a bounded number
//! of threads, and a new client still gets through it (the oldest silent
//! peer makes room). Every wait is bounded.

use std::io::Read;
use std::time::{Duration, Instant};

use multiproc::manager::Manager;
use multiproc::{Address, Client, Connection};

/// How long the manager may leave a silent peer connected: its 10 s bound,
/// with room for a loaded machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(25);

const KEY: &[u8] = b"silent";

fn tcp_manager() -> (Manager, std::net::SocketAddr) {
    let m = Manager::builder().address("tcp:127.0.0.1:0").authkey(KEY).start().unwrap();
    let Address::Tcp(at) = m.address().clone() else { panic!("not TCP") };
    (m, at)
}

/// Waits (bounded) for the manager to close `conn`; how long it took.
fn closed_after(conn: &Connection<()>, since: Instant) -> Duration {
    match conn.recv_bytes_timeout(CLOSED_WITHIN) {
        Err(e) if e.is_closed() => since.elapsed(),
        other => panic!("the manager left a silent peer connected: {other:?} after {:?}", since.elapsed()),
    }
}

/// The manager's thread count.
fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

/// The manager's thread count once it is at most `bound`, or after a
/// bounded wait for that.
fn settled_threads(pid: i32, bound: usize) -> usize {
    let deadline = Instant::now() + CLOSED_WITHIN;
    while threads(pid) > bound && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    threads(pid)
}

#[test]
fn a_peer_silent_after_authenticating_is_closed_and_others_are_served_meanwhile() {
    let (m, at) = tcp_manager();
    let d = m.dict::<u8, u8>().unwrap();
    let start = Instant::now();
    let silent: Connection<()> = Client::connect(m.address(), Some(KEY)).unwrap();
    let mut unauthenticated = std::net::TcpStream::connect(at).unwrap();
    // The manager serves its clients, old and new, while both peers sit.
    d.insert(1, 1).unwrap();
    let other = Manager::connect(m.address(), Some(KEY)).unwrap();
    let e = other.dict::<u8, u8>().unwrap();
    e.insert(2, 2).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(1));
    closed_after(&silent, start);
    unauthenticated.set_read_timeout(Some(CLOSED_WITHIN)).unwrap();
    let mut rest = Vec::new();
    // Its first read takes the handshake's challenge; it ends at EOF.
    let read = unauthenticated.read_to_end(&mut rest);
    assert!(read.is_ok(), "the manager left an unauthenticated peer connected: {read:?}");
    // And it goes on serving.
    assert_eq!(e.get(&2).unwrap(), Some(2));
    m.shutdown().unwrap();
}

#[test]
fn a_flood_of_silent_authenticated_peers_costs_a_bounded_number_of_threads() {
    let (m, _) = tcp_manager();
    let d = m.dict::<u8, u8>().unwrap();
    let pid = m.pid().unwrap();
    let before = threads(pid);
    let start = Instant::now();
    // More than the manager lets sit in their setup at once: the extra ones
    // are refused (their connect fails), the rest hold a thread each.
    let silent: Vec<Connection<()>> = (0..300).filter_map(|_| Client::connect(m.address(), Some(KEY)).ok()).collect();
    let during = settled_threads(pid, before + 256);
    assert!(during <= before + 256, "{} silent peers hold {} manager threads", silent.len(), during - before);
    for conn in &silent {
        closed_after(conn, start);
    }
    // Their threads are gone and the manager serves on.
    let after = settled_threads(pid, before);
    assert!(after <= before, "{} threads left from the silent peers", after - before);
    d.insert(1, 1).unwrap();
    Manager::connect(m.address(), Some(KEY)).unwrap().dict::<u8, u8>().unwrap();
    m.shutdown().unwrap();
}

#[test]
fn a_new_client_gets_through_a_flood_of_silent_peers() {
    let (m, at) = tcp_manager();
    // More silent peers than the manager lets sit in their handshake; each
    // read waits until the manager took the peer (its challenge came) or
    // refused it (end of stream).
    let silent: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut peer = std::net::TcpStream::connect(at).unwrap();
            peer.set_read_timeout(Some(CLOSED_WITHIN)).unwrap();
            let _ = peer.read(&mut [0; 64]);
            peer
        })
        .collect();
    let start = Instant::now();
    let joined = Manager::connect(m.address(), Some(KEY)).and_then(|c| c.dict::<u8, u8>());
    let d = match joined {
        Ok(d) => d,
        Err(e) => panic!("a new client was shut out by {} silent peers: {e}", silent.len()),
    };
    d.insert(1, 1).unwrap();
    assert!(start.elapsed() < CLOSED_WITHIN / 2, "joining took {:?}", start.elapsed());
    drop(silent);
    m.shutdown().unwrap();
}

#[test]
fn a_served_manager_shut_down_closes_its_silent_peers_at_once() {
    let m = multiproc::manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let Address::Tcp(at) = m.address().clone() else { panic!("not TCP") };
    let silent: Connection<()> = Client::connect(m.address(), Some(KEY)).unwrap();
    let mut unauthenticated = std::net::TcpStream::connect(at).unwrap();
    unauthenticated.set_read_timeout(Some(CLOSED_WITHIN)).unwrap();
    let _ = unauthenticated.read(&mut [0; 64]); // the challenge: it is in its handshake
    let start = Instant::now();
    m.shutdown().unwrap();
    let mut rest = Vec::new();
    let read = unauthenticated.read_to_end(&mut rest);
    assert!(read.is_ok(), "a peer in its handshake outlived the manager: {read:?}");
    let after = closed_after(&silent, start);
    assert!(after < Duration::from_secs(5), "silent peers were closed {after:?} after the shutdown");
}
