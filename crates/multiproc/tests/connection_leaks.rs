//! Pipes, listeners, clients (with right and wrong keys, and handshakes that
//! fail) and `wait` leave no file descriptors, socket files or child
//! processes behind. One test in its own binary, so that no other test opens
//! descriptors meanwhile.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use multiproc::{Address, Client, Connection, ConnectionError, Listener, Pipe, Process, wait};

const LONG: Duration = Duration::from_secs(20);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn client_echo(address: String, key: Vec<u8>) {
    let conn: Connection<u32> = Client::connect_timeout(&address, Some(&key), LONG).unwrap();
    let x = conn.recv_timeout(LONG).unwrap();
    conn.send(&(x + 1)).unwrap();
}

fn pipe_echo(conn: Connection<u32>) {
    while let Ok(x) = conn.recv_timeout(LONG) {
        conn.send(&(x + 1)).unwrap();
    }
}

fn join(mut p: Process) {
    if let Err(e) = p.join_timeout(LONG) {
        let _ = p.kill();
        let _ = p.join_timeout(LONG);
        panic!("child failed: {e}");
    }
}

/// One round of everything; returns the socket file it used.
fn cycle(i: u32) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("multiproc-leak-{}-{i}.sock", std::process::id()));
    let addresses = [
        Address::unix(&path),
        Address::abstract_name(format!("multiproc-leak-{}-{i}", std::process::id())),
        "tcp:127.0.0.1:0".parse().unwrap(),
    ];
    for address in addresses {
        let listener = Listener::bind(&address, Some(b"key")).unwrap();
        let bound = listener.address().clone();

        // A client in a child with the right key.
        let child = Process::spawn(client_echo, (bound.to_string(), b"key".to_vec())).unwrap();
        let conn: Connection<u32> = listener.accept_timeout(LONG).unwrap();
        conn.send(&i).unwrap();
        assert_eq!(wait(&[&conn], Some(LONG)).unwrap(), [0]);
        assert_eq!(conn.recv_timeout(LONG).unwrap(), i + 1);
        join(child);
        drop(conn);

        // A client with the wrong key, refused on both sides.
        let wrong = {
            let bound = bound.clone();
            std::thread::spawn(move || Client::connect_timeout::<u32>(&bound, Some(b"nope"), LONG).is_err())
        };
        assert!(listener.accept_timeout::<u32>(LONG).unwrap_err().is_authentication_failed());
        assert!(wrong.join().unwrap());
    }

    failed_handshakes();

    // A pipe end given to a child; wait on the connection and the process.
    let (ours, theirs) = Pipe::<u32>::duplex().unwrap();
    let child = Process::spawn(pipe_echo, (theirs,)).unwrap();
    ours.send(&i).unwrap();
    assert_eq!(wait(&[&ours, &child], Some(LONG)).unwrap(), [0]);
    assert_eq!(ours.recv_timeout(LONG).unwrap(), i + 1);
    drop(ours);
    assert_eq!(wait(&[&child], Some(LONG)).unwrap(), [0]);
    join(child);
    path
}

/// Handshakes that fail on either side: a client that speaks another
/// protocol, one that stalls, one that hangs up; a listener that never
/// answers, and no listener at all.
fn failed_handshakes() {
    let mut listener = Listener::bind("tcp:127.0.0.1:0", Some(b"key")).unwrap();
    listener.set_handshake_timeout(Duration::from_millis(50));
    let Address::Tcp(addr) = *listener.address() else { unreachable!() };
    let mut foreign = TcpStream::connect(addr).unwrap();
    foreign.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let stalled = TcpStream::connect(addr).unwrap();
    drop(TcpStream::connect(addr).unwrap());
    for _ in 0..3 {
        assert!(matches!(listener.accept_timeout::<u32>(LONG), Err(ConnectionError::HandshakeFailed(_))));
    }
    drop((foreign, stalled, listener));

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let err = Client::connect_timeout::<u32>(silent_addr, Some(b"key"), Duration::from_millis(50)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    drop(silent);
    let err = Client::connect_timeout::<u32>(silent_addr, Some(b"key"), LONG).unwrap_err();
    assert!(matches!(err, ConnectionError::Connect { .. }), "{err}");
}

#[test]
fn nothing_is_left_behind() {
    // The first round starts what lives as long as the process (the launcher
    // thread, the fork server).
    cycle(0);
    let before = open_fds();
    let mut paths = Vec::new();
    for i in 1..=10 {
        paths.push(cycle(i));
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
    assert!(multiproc::active_children().is_empty());
    for path in paths {
        assert!(!path.exists(), "socket file left behind: {}", path.display());
    }
}
