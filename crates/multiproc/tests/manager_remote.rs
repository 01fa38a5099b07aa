//! Remote managers (issue 9, items 5 and 6): serving on TCP and Unix
//! addresses with an auth key, connecting by address and key, fetching
//! objects by name and type; wrong keys, garbage before authentication and
//! stalled peers are refused while good clients keep working.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use multiproc::manager::{self, Dict, Manager, ManagerError, Queue, RemoteError};
use multiproc::{Address, Client, Connection};
use sync_support::{Kid, LONG};

const KEY: &[u8] = b"remote manager key";

fn worker(address: String, key: Vec<u8>) -> u32 {
    let remote = Manager::connect(&address, Some(&key)).unwrap();
    let tasks: Queue<u32> = remote.get("tasks").unwrap();
    let results: Queue<(u32, u32)> = remote.get("results").unwrap();
    let mut done = 0;
    loop {
        match tasks.get_timeout(LONG).unwrap() {
            0 => return done,
            n => {
                results.put((n, n * n)).unwrap();
                done += 1;
            }
        }
    }
}

fn master_and_workers(address: &str) {
    let server = manager::serve(address, Some(KEY)).unwrap();
    let tasks = server.queue::<u32>().unwrap();
    let results = server.queue::<(u32, u32)>().unwrap();
    server.publish("tasks", &tasks).unwrap();
    server.publish("results", &results).unwrap();
    let addr = server.address().to_string();
    let workers: Vec<Kid<u32>> = (0..2).map(|_| Kid::spawn(worker, (addr.clone(), KEY.to_vec()))).collect();
    for n in 1..=50 {
        tasks.put(n).unwrap();
    }
    let mut got: Vec<(u32, u32)> = (0..50).map(|_| results.get_timeout(LONG).unwrap()).collect();
    tasks.put(0).unwrap();
    tasks.put(0).unwrap();
    let done: u32 = workers.into_iter().map(Kid::join).sum();
    assert_eq!(done, 50);
    got.sort();
    assert_eq!(got, (1..=50).map(|n| (n, n * n)).collect::<Vec<_>>());
    assert!(results.get_nowait().is_err());
    server.shutdown().unwrap();
}

#[test]
fn workers_knowing_only_address_and_key_serve_a_tcp_master() {
    master_and_workers("tcp:127.0.0.1:0");
}

#[test]
fn workers_knowing_only_address_and_key_serve_a_unix_master() {
    let path = std::env::temp_dir().join(format!("multiproc-manager-test-{}.sock", std::process::id()));
    master_and_workers(&format!("unix:{}", path.display()));
    assert!(!path.exists(), "the socket file outlived the server");
}

#[test]
fn a_started_manager_is_reachable_by_address_and_key() {
    let m = Manager::builder().address("tcp:127.0.0.1:0").authkey(KEY).start().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    m.publish("d", &d).unwrap();
    let remote = Manager::connect(m.address(), Some(KEY)).unwrap();
    let d2: Dict<String, u32> = remote.get("d").unwrap();
    d2.insert("x".into(), 1).unwrap();
    assert_eq!(d.get("x").unwrap(), Some(1));
    remote.shutdown().unwrap(); // a connected handle does not stop the manager
    assert_eq!(d.get("x").unwrap(), Some(1));
    m.shutdown().unwrap();
    assert!(d2.get("x").unwrap_err().is_connection());
}

#[test]
fn names_and_types_are_checked() {
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let q = server.queue::<String>().unwrap();
    server.publish("q", &q).unwrap();
    assert!(matches!(server.publish("q", &q), Err(ManagerError::Remote(RemoteError::NameTaken(_)))));
    let remote = Manager::connect(server.address(), Some(KEY)).unwrap();
    match remote.get::<Queue<u64>>("q") {
        Err(e @ ManagerError::TypeMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("String") && msg.contains("u64"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(remote.get::<Dict<String, String>>("q"), Err(ManagerError::TypeMismatch { .. })));
    assert!(matches!(remote.get::<Queue<String>>("nope"), Err(ManagerError::Remote(RemoteError::NoSuchName(_)))));
    let q2: Queue<String> = remote.get("q").unwrap();
    q2.put("ok".into()).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), "ok");
    // A proxy of another manager can be neither published nor removed
    // here, and the error says so (no answer was involved).
    let other = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let foreign = other.event().unwrap();
    for e in [server.publish("foreign", &foreign).unwrap_err(), server.remove(&foreign).unwrap_err()] {
        let msg = e.to_string();
        assert!(msg.starts_with("the proxy belongs to the manager at"), "{msg}");
    }
}

/// A good client doing round trips while the test attacks the server.
fn keep_working(d: Dict<u32, u32>, rounds: u32) -> u32 {
    for i in 0..rounds {
        d.insert(i, i).unwrap();
        assert_eq!(d.get(&i).unwrap(), Some(i));
    }
    rounds
}

#[test]
fn a_wrong_key_is_refused_on_both_sides_and_good_clients_go_on() {
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let d = server.dict::<u32, u32>().unwrap();
    let good = Kid::spawn(keep_working, (d.clone(), 200));
    let err = Manager::connect(server.address(), Some(b"wrong key")).unwrap_err();
    assert!(err.is_authentication_failed(), "{err}");
    assert!(err.to_string().contains("rejected our auth key"), "the server's refusal reached us: {err}");
    assert!(Manager::connect(server.address(), None).unwrap_err().is_authentication_failed());
    // A manager client meeting a listener with another key fails too, on both sides.
    let impostor = multiproc::Listener::bind("tcp:127.0.0.1:0", Some(b"other")).unwrap();
    let address = impostor.address().clone();
    let client = std::thread::spawn(move || Manager::connect(address, Some(KEY)).map(drop));
    let server_side = impostor.accept_timeout::<()>(LONG).unwrap_err();
    assert!(server_side.is_authentication_failed(), "{server_side}");
    assert!(client.join().unwrap().unwrap_err().is_authentication_failed());
    assert_eq!(good.join(), 200);
    assert_eq!(d.len().unwrap(), 200);
}

/// Streams up to `total` bytes to `address` after a frame header announcing
/// them as one handshake message; returns how many bytes the server took
/// before it cut the connection.
fn stream_garbage(address: &Address, header: bool, total: usize) -> usize {
    let Address::Tcp(addr) = address else { panic!("not TCP") };
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0;
    if header {
        let len = (total as u64).to_le_bytes();
        // version 3, kind Control, no flags, no descriptors, 6-byte length, CPU 0.
        let h = [3, 4, 0, 0, len[0], len[1], len[2], len[3], len[4], len[5], 0, 0];
        if s.write_all(&h).is_err() {
            return 0;
        }
    }
    let chunk = vec![0xA5u8; 1 << 20];
    while sent < total {
        match s.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
    // The server hung up (our reads see the end, after its challenge).
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    sent
}

#[test]
fn a_gibibyte_of_garbage_before_auth_is_cut_off_early() {
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let d = server.dict::<u32, u32>().unwrap();
    let good = Kid::spawn(keep_working, (d.clone(), 300));
    const GIB: usize = 1 << 30;
    let t = Instant::now();
    let sent = stream_garbage(server.address(), true, GIB);
    assert!(sent < 64 << 20, "the server took {sent} bytes of an unauthenticated frame");
    let sent = stream_garbage(server.address(), false, GIB);
    assert!(sent < 64 << 20, "the server took {sent} bytes of garbage");
    assert!(t.elapsed() < Duration::from_secs(15));
    assert_eq!(good.join(), 300);
    // And the server still accepts honest clients.
    let remote = Manager::connect(server.address(), Some(KEY)).unwrap();
    assert!(remote.get::<Dict<u32, u32>>("missing").is_err());
}

#[test]
fn a_stalled_peer_does_not_delay_other_clients() {
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let Address::Tcp(addr) = server.address() else { panic!() };
    let _stalled: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let t = Instant::now();
    let remote = Manager::connect(server.address(), Some(KEY)).unwrap();
    assert!(remote.get::<Queue<u8>>("none").is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_served_manager_shut_down_cuts_its_clients() {
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let q = server.queue::<u8>().unwrap();
    let q2 = q.clone();
    let blocked = std::thread::spawn(move || q2.get_timeout(LONG));
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    server.shutdown().unwrap();
    let r = blocked.join().unwrap();
    assert!(r.is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(q.put(1).unwrap_err().is_connection());
}

#[test]
fn a_client_that_speaks_no_hello_is_dropped_alone() {
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let d = server.dict::<u8, u8>().unwrap();
    let conn: Connection<()> = Client::connect(server.address(), Some(KEY)).unwrap();
    conn.send_bytes(b"\xff\xff\xff not a request").unwrap();
    // An error answer, then the end of the stream.
    assert!(conn.recv_bytes_timeout(LONG).is_ok());
    assert!(conn.recv_bytes_timeout(LONG).unwrap_err().is_closed());
    d.insert(1, 1).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(1));
}

#[test]
fn a_frame_too_large_after_auth_ends_that_connection_only() {
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let d = server.dict::<u32, u32>().unwrap();
    let good = Kid::spawn(keep_working, (d.clone(), 300));
    let conn: Connection<()> = Client::connect(server.address(), Some(KEY)).unwrap();
    // More than a manager reads: refused from its header, never buffered
    // (the send itself may fail once the manager hangs up).
    let _ = conn.send_bytes(&vec![0xA5; 100 << 20]);
    let end = conn.recv_bytes_timeout(LONG).unwrap_err();
    assert!(!end.is_timeout(), "the manager kept the connection: {end}");
    assert_eq!(good.join(), 300);
    d.insert(1, 1).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(1));
}

#[test]
fn proxies_of_a_replaced_manager_find_nothing_and_recover() {
    let first = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let address = first.address().clone();
    let old = first.dict::<u8, u8>().unwrap();
    old.insert(1, 1).unwrap();
    // A second process's view of it: its idle connection stays in its pool.
    let remote = Manager::connect(&address, Some(KEY)).unwrap();
    first.publish("d", &old).unwrap();
    let seen: Dict<u8, u8> = remote.get("d").unwrap();
    assert_eq!(seen.get(&1).unwrap(), Some(1));
    drop(first);
    let second = manager::serve(address.clone(), Some(KEY)).unwrap();
    let fresh = second.dict::<u8, u8>().unwrap();
    fresh.insert(1, 99).unwrap();
    // A stale idle connection fails at most once; then the old proxy reaches
    // the new manager, which has no such object (ids start at a random
    // point in each manager: it does not read the new dict by accident).
    let first_try = seen.get(&1);
    assert!(first_try.is_err(), "{first_try:?}");
    match seen.get(&1) {
        Err(ManagerError::Remote(RemoteError::NoSuchObject(_))) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(fresh.get(&1).unwrap(), Some(99));
}

/// Serves on `address`, blocks eight calls in it (queue gets and lock
/// acquisitions, timed far beyond the test), shuts it down: each call must
/// fail with a connection error, promptly; none may say it timed out.
fn shutdown_fails_blocked_calls_as_connection_errors(address: &str) {
    let server = manager::serve(address, Some(KEY)).unwrap();
    let (q, lock) = (server.queue::<u8>().unwrap(), server.lock().unwrap());
    lock.acquire().unwrap().leak();
    let calls: Vec<std::thread::JoinHandle<String>> = (0..8)
        .map(|i| {
            let (q, lock) = (q.clone(), lock.clone());
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    match q.get_timeout(LONG) {
                        Err(e) if e.is_connection() => "connection error".to_string(),
                        other => format!("get: {other:?}"),
                    }
                } else {
                    match lock.acquire_timeout(LONG) {
                        Err(multiproc::manager::AcquireError::Manager(e)) if e.is_connection() => {
                            "connection error".to_string()
                        }
                        other => format!("acquire: {other:?}"),
                    }
                }
            })
        })
        .collect();
    sync_support::until_calls_wait(&server, 8);
    let t = Instant::now();
    server.shutdown().unwrap();
    for call in calls {
        assert_eq!(call.join().unwrap(), "connection error");
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_served_manager_shut_down_fails_blocked_tcp_calls_as_connection_errors() {
    shutdown_fails_blocked_calls_as_connection_errors("tcp:127.0.0.1:0");
}

#[test]
fn a_served_manager_shut_down_fails_blocked_lane_calls_as_connection_errors() {
    let address = format!("abstract:multiproc-test-shutdown-{}", std::process::id());
    shutdown_fails_blocked_calls_as_connection_errors(&address);
}

fn hold_after_dropping_the_handle(address: String, key: Vec<u8>) {
    let remote = Manager::connect(&address, Some(&key)).unwrap();
    let lock: multiproc::manager::Lock = remote.get("lock").unwrap();
    let holding: multiproc::manager::Event = remote.get("holding").unwrap();
    lock.acquire().unwrap().leak();
    // The handle is done with; the proxies (and the lock) are not.
    drop(remote);
    holding.set().unwrap();
    sync_support::linger();
}

#[test]
fn dropping_a_connected_handle_keeps_the_locks_of_its_process() {
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let (lock, holding) = (server.lock().unwrap(), server.event().unwrap());
    server.publish("lock", &lock).unwrap();
    server.publish("holding", &holding).unwrap();
    let holder = Kid::<()>::spawn(hold_after_dropping_the_handle, (server.address().to_string(), KEY.to_vec()));
    assert!(holding.wait_timeout(LONG).unwrap());
    // The holder lives: its lock stays held.
    match lock.acquire_timeout(Duration::from_millis(500)) {
        Err(e) if e.is_timeout() => {}
        Ok(_) => panic!("the lock of a live holder was free"),
        Err(e) => panic!("the lock of a live holder was free: {e}"),
    }
    holder.kill();
    holder.reap();
    assert!(matches!(lock.acquire_timeout(LONG), Err(multiproc::manager::AcquireError::OwnerDied(_))));
}

/// Where a proxy says its manager is.
fn proxy_address<P: manager::Proxy>(proxy: &P) -> String {
    format!("{:?}", proxy.object_ref())
}

fn insert_through(d: Dict<u8, String>) -> String {
    d.insert(7, "from the child".into()).unwrap();
    proxy_address(&d)
}

#[test]
fn proxies_of_a_manager_bound_on_every_interface_carry_an_address_to_connect_to() {
    for any in ["tcp:0.0.0.0:0", "tcp:[::]:0"] {
        let m = match Manager::builder().address(any).authkey(KEY).start() {
            Ok(m) => m,
            Err(e) if any.contains("::") => {
                eprintln!("no IPv6 here ({e}); skipped");
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let Address::Tcp(bound) = m.address().clone() else { panic!("{}", m.address()) };
        // Nested: an object made by the manager's own handle, stored in another.
        let (outer, inner) = (m.dict::<String, Dict<u8, String>>().unwrap(), m.dict::<u8, String>().unwrap());
        outer.insert("inner".into(), inner.clone()).unwrap();
        m.publish("outer", &outer).unwrap();
        for p in [proxy_address(&outer), proxy_address(&inner)] {
            assert!(!p.contains("0.0.0.0") && !p.contains("[::]"), "{p}");
        }
        // A client reaching it on loopback passes the nested proxy to a child.
        let loopback = if bound.is_ipv4() { "127.0.0.1" } else { "[::1]" };
        let client = Manager::connect(format!("tcp:{loopback}:{}", bound.port()), Some(KEY)).unwrap();
        let nested = client.get::<Dict<String, Dict<u8, String>>>("outer").unwrap().get("inner").unwrap().unwrap();
        let seen = Kid::spawn(insert_through, (nested,)).join();
        assert!(!seen.contains("0.0.0.0") && !seen.contains("[::]"), "{seen}");
        assert_eq!(inner.get(&7).unwrap().as_deref(), Some("from the child"));
        m.shutdown().unwrap();
    }
}

/// A client elsewhere: connects by the listening address, reads the proxy
/// nested in the published dict, and uses it.
fn use_nested_proxy(address: String, key: Vec<u8>) -> String {
    let remote = Manager::connect(&address, Some(&key)).unwrap();
    let outer: Dict<String, Dict<u8, String>> = remote.get("outer").unwrap();
    insert_through(outer.get("inner").unwrap().unwrap())
}

#[test]
fn nested_proxies_of_a_manager_bound_on_every_interface_carry_its_advertise_address() {
    // All of 127.0.0.0/8 reaches this machine's loopback, which a manager
    // bound on 0.0.0.0 listens on: 127.0.0.2 stands for "this machine's
    // address as other machines know it", and differs from the default.
    let m = Manager::builder().address("tcp:0.0.0.0:0").advertise_address([127, 0, 0, 2]).authkey(KEY).start().unwrap();
    let Address::Tcp(bound) = m.address().clone() else { panic!("{}", m.address()) };
    assert!(bound.ip().is_unspecified(), "{bound}");
    let advertised = format!("tcp:127.0.0.2:{}", bound.port());
    let (outer, inner) = (m.dict::<String, Dict<u8, String>>().unwrap(), m.dict::<u8, String>().unwrap());
    outer.insert("inner".into(), inner.clone()).unwrap();
    m.publish("outer", &outer).unwrap();
    assert!(proxy_address(&inner).contains(&advertised), "{}", proxy_address(&inner));
    // Another process reaches the manager on 127.0.0.1; the proxy it reads
    // inside the dict names the advertise address, and works.
    let seen = Kid::spawn(use_nested_proxy, (format!("tcp:127.0.0.1:{}", bound.port()), KEY.to_vec())).join();
    assert!(seen.contains(&advertised), "{seen}");
    assert_eq!(inner.get(&7).unwrap().as_deref(), Some("from the child"));
    m.shutdown().unwrap();
}

#[test]
fn an_advertise_address_is_refused_where_it_cannot_apply() {
    let not_tcp = Manager::builder().advertise_address([127, 0, 0, 2]).serve().unwrap_err();
    assert!(matches!(&not_tcp, ManagerError::Start(e) if e.contains("TCP")), "{not_tcp}");
    let unspecified =
        Manager::builder().address("tcp:127.0.0.1:0").advertise_address([0, 0, 0, 0]).start().unwrap_err();
    assert!(matches!(&unspecified, ManagerError::Start(e) if e.contains("0.0.0.0")), "{unspecified}");
}

#[test]
fn a_peer_that_authenticates_but_never_answers_hello_fails_the_connect_in_bounded_time() {
    // Something that is not a manager listens with the same key (say, a
    // plain `Listener` of the program): it passes the handshake, then
    // reads and answers nothing. Both kinds of address at once (each
    // connect waits out its 10 s).
    let addresses = ["tcp:127.0.0.1:0".to_string(), format!("abstract:multiproc-mute-{}", std::process::id())];
    let tries: Vec<_> = addresses.into_iter().map(|address| std::thread::spawn(move || mute_peer(&address))).collect();
    for t in tries {
        t.join().unwrap();
    }
}

/// A connect to a peer at `address` that passes the handshake and then
/// answers nothing fails with a connection error in bounded time.
fn mute_peer(address: &str) {
    let mute = multiproc::Listener::bind(address, Some(KEY)).unwrap();
    let at = mute.address().clone();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let held = std::thread::spawn(move || {
        let conn: Connection<()> = mute.accept_timeout(LONG).unwrap();
        // Holds the connection, unread, until the client gave up on it.
        let _ = released.recv_timeout(3 * LONG);
        drop(conn);
    });
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Manager::connect(&at, Some(KEY)).map(drop));
    });
    let outcome = rx.recv_timeout(3 * LONG).expect("Manager::connect hung on a peer that never answers");
    let _ = release.send(());
    let err = outcome.unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert!(started.elapsed() < 2 * LONG, "{:?}", started.elapsed());
    held.join().unwrap();
}

#[test]
fn a_proxy_naming_another_address_of_the_same_manager_is_its_own() {
    // The handle's proxies name the advertise address (127.0.0.2); a client
    // connected on 127.0.0.1 reads one nested in a dict: both name the same
    // manager, each through an address the other's handle does not use.
    let m = Manager::builder().address("tcp:0.0.0.0:0").advertise_address([127, 0, 0, 2]).authkey(KEY).serve().unwrap();
    let Address::Tcp(bound) = m.address().clone() else { panic!("{}", m.address()) };
    let (outer, inner) = (m.dict::<String, Dict<u8, String>>().unwrap(), m.dict::<u8, String>().unwrap());
    outer.insert("inner".into(), inner.clone()).unwrap();
    m.publish("outer", &outer).unwrap();
    let client = Manager::connect(format!("tcp:127.0.0.1:{}", bound.port()), Some(KEY)).unwrap();
    let through_client: Dict<String, Dict<u8, String>> = client.get("outer").unwrap();
    let nested = through_client.get("inner").unwrap().unwrap();
    assert!(proxy_address(&nested).contains("127.0.0.2"), "{}", proxy_address(&nested));
    client.publish("inner", &nested).unwrap();
    m.publish("outer again", &through_client).unwrap();
    let again: Dict<u8, String> = m.get("inner").unwrap();
    again.insert(1, "one".into()).unwrap();
    assert!(client.remove(&nested).unwrap());
    assert!(!m.remove(&inner).unwrap());
    assert!(m.remove(&through_client).unwrap());
    // A proxy of another manager is still refused.
    let other = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let foreign = other.event().unwrap();
    let e = client.publish("foreign", &foreign).unwrap_err();
    assert!(matches!(e, ManagerError::ForeignProxy { .. }), "{e}");
    // So is one whose manager is gone: nothing tells it is this one.
    other.shutdown().unwrap();
    let e = m.remove(&foreign).unwrap_err();
    assert!(matches!(e, ManagerError::ForeignProxy { .. }), "{e}");
    m.shutdown().unwrap();
}
