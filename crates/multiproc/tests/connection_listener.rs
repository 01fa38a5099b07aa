//! `Listener`/`Client` over Unix paths, abstract names and TCP loopback, with
//! and without an auth key, across real child processes: SPEC.md, "Pipe and
//! Connection".

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Address, Client, Connection, ConnectionError, Listener, Pipe, Process, SendFd};
use serde::{Deserialize, Serialize};

mod process_support;
// For `assert_about` (with room for a loaded machine: t + 3 s).
mod sync_support;

use process_support::{JOIN as LONG, join_or_kill as join};
use sync_support::assert_about;

/// A fresh address of each kind, unique to this test process and call.
fn addresses() -> [String; 3] {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let path = std::env::temp_dir().join(format!("multiproc-test-{pid}-{n}.sock"));
    [format!("unix:{}", path.display()), format!("abstract:multiproc-test-{pid}-{n}"), "tcp:127.0.0.1:0".into()]
}

/// How a client child's attempt ended.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Outcome {
    Reply(String),
    AuthenticationFailed,
    Other(String),
}

fn outcome<T>(r: Result<T, ConnectionError>) -> Result<T, Outcome> {
    r.map_err(
        |e| if e.is_authentication_failed() { Outcome::AuthenticationFailed } else { Outcome::Other(e.to_string()) },
    )
}

/// Connects, sends "ping", returns the reply.
fn client_ping(address: String, key: Option<Vec<u8>>) -> Outcome {
    let run = || -> Result<String, Outcome> {
        let conn: Connection<String> = outcome(Client::connect_timeout(&address, key.as_deref(), LONG))?;
        outcome(conn.send(&format!("ping from {}", std::process::id())))?;
        outcome(conn.recv_timeout(LONG))
    };
    match run() {
        Ok(reply) => Outcome::Reply(reply),
        Err(o) => o,
    }
}

/// Accepts one client, answers its ping.
fn serve_one(listener: &Listener) -> Result<String, ConnectionError> {
    let conn: Connection<String> = listener.accept_timeout(LONG)?;
    let ping = conn.recv_timeout(LONG)?;
    conn.send(&format!("pong to {ping}"))?;
    Ok(ping)
}

#[test]
fn clients_in_children_connect_over_every_address_kind_with_and_without_keys() {
    for key in [Some(&b"secret key"[..]), Some(&b""[..]), None] {
        for address in addresses() {
            let listener = Listener::bind(&address, key).unwrap();
            let bound = listener.address().to_string();
            let child = Process::spawn(client_ping, (bound.clone(), key.map(<[u8]>::to_vec))).unwrap();
            let pid = child.pid().unwrap();
            let ping = serve_one(&listener).unwrap_or_else(|e| panic!("{bound} key {key:?}: {e}"));
            assert_eq!(ping, format!("ping from {pid}"));
            assert_eq!(join(child), Outcome::Reply(format!("pong to ping from {pid}")), "{bound} key {key:?}");
        }
    }
}

#[test]
fn a_wrong_key_fails_on_both_sides_and_the_listener_stays_usable() {
    type Key = Option<&'static [u8]>;
    let cases: [(Key, Key); 6] = [
        (Some(b"right"), Some(b"wrong")),
        (Some(b"right"), Some(b"")),
        (Some(b""), Some(b"x")),
        (Some(b"right"), None),
        (Some(b""), None),
        (None, Some(b"")),
    ];
    for (server_key, client_key) in cases {
        for address in addresses() {
            let listener = Listener::bind(&address, server_key).unwrap();
            let bound = listener.address().to_string();
            let what = format!("{bound}: listener key {server_key:?}, client key {client_key:?}");
            let start = Instant::now();
            let child = Process::spawn(client_ping, (bound.clone(), client_key.map(<[u8]>::to_vec))).unwrap();
            let server = serve_one(&listener);
            assert!(matches!(server, Err(ConnectionError::AuthenticationFailed(_))), "{what}: listener got {server:?}");
            assert_eq!(join(child), Outcome::AuthenticationFailed, "{what}");
            assert!(start.elapsed() < Duration::from_secs(5), "{what}: refusal took {:?}", start.elapsed());

            // The same listener then serves a client with the right key.
            let child = Process::spawn(client_ping, (bound.clone(), server_key.map(<[u8]>::to_vec))).unwrap();
            serve_one(&listener).unwrap_or_else(|e| panic!("{what}: second client: {e}"));
            assert!(matches!(join(child), Outcome::Reply(_)), "{what}");
        }
    }
}

/// Listens on `address` with `key`, tells the parent the bound address over
/// `report`, accepts one client and answers its ping.
fn child_server(address: String, key: Option<Vec<u8>>, report: Connection<String>) -> Outcome {
    let listener = match Listener::bind(&address, key.as_deref()) {
        Ok(l) => l,
        Err(e) => return Outcome::Other(e.to_string()),
    };
    report.send(&listener.address().to_string()).unwrap();
    match outcome(serve_one(&listener)) {
        Ok(ping) => Outcome::Reply(ping),
        Err(o) => o,
    }
}

#[test]
fn a_listener_in_a_child_reports_its_tcp_port_and_checks_the_key() {
    for (child_key, our_key, ok) in
        [(Some(&b"k"[..]), Some(&b"k"[..]), true), (Some(b"k"), Some(b"K"), false), (None, None, true)]
    {
        let (report, theirs) = Pipe::<String>::one_way().unwrap();
        let child =
            Process::spawn(child_server, ("tcp:127.0.0.1:0".to_string(), child_key.map(<[u8]>::to_vec), theirs))
                .unwrap();
        let address: Address = report.recv_timeout(LONG).unwrap().parse().unwrap();
        assert!(matches!(&address, Address::Tcp(a) if a.port() != 0 && a.ip().is_loopback()), "{address}");
        let conn = Client::connect_timeout::<String>(&address, our_key, LONG);
        if ok {
            let conn = conn.unwrap();
            conn.send(&"ping".to_string()).unwrap();
            assert_eq!(conn.recv_timeout(LONG).unwrap(), "pong to ping");
            assert_eq!(join(child), Outcome::Reply("ping".into()));
        } else {
            assert!(conn.unwrap_err().is_authentication_failed());
            assert_eq!(join(child), Outcome::AuthenticationFailed);
        }
    }
}

fn talk_on(conn: Connection<String>) -> String {
    let got = conn.recv_timeout(LONG).unwrap();
    conn.send(&format!("child {} got {got}", std::process::id())).unwrap();
    got
}

#[test]
fn an_accepted_connection_can_be_handed_to_a_child() {
    for address in addresses() {
        let listener = Listener::bind(&address, Some(b"k")).unwrap();
        let bound = listener.address().clone();
        let client = std::thread::spawn(move || {
            let conn: Connection<String> = Client::connect_timeout(&bound, Some(b"k"), LONG).unwrap();
            conn.send(&"hello".to_string()).unwrap();
            conn.recv_timeout(LONG).unwrap()
        });
        let accepted: Connection<String> = listener.accept_timeout(LONG).unwrap();
        let child = Process::spawn(talk_on, (accepted,)).unwrap();
        let pid = child.pid().unwrap();
        assert_eq!(join(child), "hello");
        assert_eq!(client.join().unwrap(), format!("child {pid} got hello"), "{address}");
    }
}

#[test]
fn tcp_refuses_handles_but_carries_large_messages() {
    let listener = Listener::bind("tcp:127.0.0.1:0", None).unwrap();
    let bound = listener.address().clone();
    let client = std::thread::spawn(move || {
        let conn: Connection<SendFd> = Client::connect_timeout(&bound, None, LONG).unwrap();
        let big = conn.recv_bytes_timeout(LONG).unwrap();
        conn.send_bytes(&big).unwrap();
        big.len()
    });
    let conn: Connection<SendFd> = listener.accept_timeout(LONG).unwrap();
    let (reader, _writer) = std::io::pipe().unwrap();
    let err = conn.send(&SendFd::from(reader)).unwrap_err();
    assert!(err.to_string().contains("TCP"), "{err}");

    // Nothing was sent; the connection still works, for 16 MiB too.
    let data: Vec<u8> = (0..16u32 << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
    conn.send_bytes(&data).unwrap();
    assert!(conn.recv_bytes_timeout(LONG).unwrap() == data);
    assert_eq!(client.join().unwrap(), data.len());
}

#[test]
fn a_message_too_large_for_a_tcp_frame_is_refused_before_it_is_sent() {
    let listener = Listener::bind("tcp:127.0.0.1:0", None).unwrap();
    let bound = listener.address().clone();
    let client = std::thread::spawn(move || {
        let conn: Connection<()> = Client::connect_timeout(&bound, None, LONG).unwrap();
        // One byte over what a TCP frame carries (1 GiB): zeroed pages, so
        // the allocation costs no memory unless it is really sent.
        let huge = vec![0u8; (1 << 30) + 1];
        let refused = conn.send_bytes(&huge).map_err(|e| e.to_string());
        drop(huge);
        // Nothing was sent: the connection still carries messages.
        let after = conn.send_bytes(b"after").map_err(|e| e.to_string());
        (refused, after)
    });
    let conn: Connection<()> = listener.accept_timeout(LONG).unwrap();
    let received = conn.recv_bytes_timeout(LONG).map_err(|e| e.to_string());
    drop(conn);
    let (refused, after) = client.join().unwrap();
    let err = refused.unwrap_err();
    assert!(err.contains("too large"), "{err}");
    assert_eq!(after, Ok(()));
    assert_eq!(received.as_deref(), Ok(&b"after"[..]));
}

#[test]
fn unix_handles_travel_over_a_listener_connection() {
    let [path, name, _] = addresses();
    for address in [path, name] {
        let listener = Listener::bind(&address, Some(b"")).unwrap();
        let bound = listener.address().clone();
        let client = std::thread::spawn(move || {
            let conn: Connection<SendFd> = Client::connect_timeout(&bound, Some(b""), LONG).unwrap();
            let mut file = std::fs::File::from(conn.recv_timeout(LONG).unwrap().into_inner());
            file.write_all(b"through the listener").unwrap();
        });
        let conn: Connection<SendFd> = listener.accept_timeout(LONG).unwrap();
        let (mut reader, writer) = std::io::pipe().unwrap();
        conn.send(&SendFd::from(writer)).unwrap();
        client.join().unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the listener");
    }
}

#[test]
fn the_unix_socket_file_is_removed_on_drop_and_cannot_be_bound_twice() {
    let [path, name, _] = addresses();
    let listener = Listener::bind(&path, None).unwrap();
    let Address::Unix(file) = listener.address().clone() else { panic!("not a path: {path}") };
    assert!(file.exists());
    assert!(matches!(Listener::bind(&path, None), Err(ConnectionError::Bind { .. })));
    drop(listener);
    assert!(!file.exists());
    // Free again.
    drop(Listener::bind(&path, None).unwrap());
    assert!(!file.exists());

    let listener = Listener::bind(&name, None).unwrap();
    assert!(matches!(Listener::bind(&name, None), Err(ConnectionError::Bind { .. })));
    drop(listener);
    drop(Listener::bind(&name, None).unwrap());
}

#[test]
fn accept_and_connect_time_out_and_report_missing_listeners() {
    let listener = Listener::bind("tcp:127.0.0.1:0", None).unwrap();
    let t = Duration::from_millis(300);
    let start = Instant::now();
    let err = listener.accept_timeout::<()>(t).unwrap_err();
    assert!(err.is_timeout());
    assert_about(start, t);
    // The error's text fits an accept (and a connect), not only a receive.
    assert!(err.to_string().contains("a client to accept"), "{err}");

    let [path, name, _] = addresses();
    for address in [path, name] {
        let start = Instant::now();
        let err = Client::connect_timeout::<()>(&address, None, LONG).unwrap_err();
        assert!(matches!(err, ConnectionError::Connect { .. }), "{address}: {err}");
        // Refused at once, not after the timeout (LONG): room for a loaded machine.
        assert!(start.elapsed() < Duration::from_secs(5), "{address}: took {:?}", start.elapsed());
    }
    // A TCP port that nothing listens on: bind one, note it, close it.
    let closed = Listener::bind("tcp:127.0.0.1:0", None).unwrap().address().clone();
    let err = Client::connect_timeout::<()>(&closed, None, LONG).unwrap_err();
    assert!(matches!(err, ConnectionError::Connect { .. }), "{closed}: {err}");
}

#[test]
fn a_silent_or_foreign_peer_is_an_error_not_a_hang() {
    // A client that connects and says nothing.
    let mut listener = Listener::bind("tcp:127.0.0.1:0", Some(b"k")).unwrap();
    let t = Duration::from_millis(300);
    listener.set_handshake_timeout(t);
    let Address::Tcp(addr) = *listener.address() else { unreachable!() };
    let silent = std::net::TcpStream::connect(addr).unwrap();
    let start = Instant::now();
    let err = listener.accept_timeout::<()>(LONG).unwrap_err();
    assert!(matches!(err, ConnectionError::HandshakeFailed(_)), "{err}");
    assert_about(start, t);
    drop(silent);

    // A client that hangs up at once.
    drop(std::net::TcpStream::connect(addr).unwrap());
    let err = listener.accept_timeout::<()>(LONG).unwrap_err();
    assert!(matches!(err, ConnectionError::HandshakeFailed(_)), "{err}");

    // A server that accepts and says nothing: the client's timeout holds.
    let raw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let raw_addr = raw.local_addr().unwrap();
    let start = Instant::now();
    let err = Client::connect_timeout::<()>(raw_addr, Some(b"k"), t).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_about(start, t);

    // A server that speaks something else.
    let speaker = std::thread::spawn(move || {
        let (mut s, _) = raw.accept().unwrap(); // the first, timed-out client
        drop(s);
        (s, _) = raw.accept().unwrap();
        s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        s
    });
    let err = Client::connect_timeout::<()>(raw_addr, Some(b"k"), LONG).unwrap_err();
    assert!(matches!(err, ConnectionError::HandshakeFailed(_)), "{err}");
    drop(speaker.join().unwrap());
}

#[test]
fn a_client_stalled_in_the_handshake_delays_the_next_one_by_the_handshake_timeout_only() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    for address in addresses() {
        let mut listener = Listener::bind(address.as_str(), Some(b"k")).unwrap();
        let t = Duration::from_millis(300);
        listener.set_handshake_timeout(t);
        let bound = listener.address().clone();
        // A client that connects and says nothing, then an honest one.
        let silent: Box<dyn std::any::Any> = match &bound {
            Address::Tcp(addr) => Box::new(std::net::TcpStream::connect(addr).unwrap()),
            Address::Unix(path) => Box::new(UnixStream::connect(path).unwrap()),
            Address::Abstract(name) => {
                Box::new(UnixStream::connect_addr(&SocketAddr::from_abstract_name(name).unwrap()).unwrap())
            }
        };
        let honest = std::thread::spawn(move || client_ping(bound.to_string(), Some(b"k".to_vec())));
        let start = Instant::now();
        let err = serve_one(&listener).unwrap_err();
        assert!(matches!(err, ConnectionError::HandshakeFailed(_)), "{address}: {err}");
        assert_about(start, t);
        serve_one(&listener).unwrap();
        assert!(matches!(honest.join().unwrap(), Outcome::Reply(_)), "{address}");
        drop(silent);
    }
}

#[test]
fn a_peer_that_speaks_another_protocol_is_told_apart_from_another_multiproc_build() {
    // A client that speaks HTTP to a listener.
    let listener = Listener::bind("tcp:127.0.0.1:0", Some(b"k")).unwrap();
    let Address::Tcp(addr) = *listener.address() else { unreachable!() };
    let mut foreign = std::net::TcpStream::connect(addr).unwrap();
    foreign.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let err = listener.accept_timeout::<()>(LONG).unwrap_err().to_string();
    assert!(err.contains("does not speak the multiproc protocol") && err.contains("client"), "{err}");
    drop(foreign);

    // A listener that answers in HTTP.
    let raw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let raw_addr = raw.local_addr().unwrap();
    let speaker = std::thread::spawn(move || {
        let (mut s, _) = raw.accept().unwrap();
        s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        s
    });
    let err = Client::connect_timeout::<()>(raw_addr, Some(b"k"), LONG).unwrap_err().to_string();
    assert!(err.contains("does not speak the multiproc protocol") && err.contains("server"), "{err}");
    drop(speaker.join().unwrap());
}

#[test]
fn addresses_parse_from_their_documented_forms() {
    let unix: Address = "unix:/tmp/a.sock".parse().unwrap();
    assert_eq!(unix, Address::unix("/tmp/a.sock"));
    assert_eq!("/tmp/a.sock".parse::<Address>().unwrap(), unix);
    assert_eq!("./a.sock".parse::<Address>().unwrap(), Address::unix("./a.sock"));
    assert_eq!("abstract:svc".parse::<Address>().unwrap(), Address::abstract_name("svc"));
    assert_eq!("@svc".parse::<Address>().unwrap(), Address::abstract_name("svc"));
    let tcp: Address = "tcp:127.0.0.1:5000".parse().unwrap();
    assert_eq!(tcp, Address::Tcp("127.0.0.1:5000".parse().unwrap()));
    assert_eq!("127.0.0.1:5000".parse::<Address>().unwrap(), tcp);
    assert_eq!("[::1]:0".parse::<Address>().unwrap(), Address::Tcp("[::1]:0".parse().unwrap()));
    assert!(matches!("localhost:80".parse::<Address>().unwrap(), Address::Tcp(a) if a.ip().is_loopback()));
    for a in [&unix, &Address::abstract_name("svc"), &tcp] {
        assert_eq!(&a.to_string().parse::<Address>().unwrap(), a);
    }
    for bad in ["", "unix:", "abstract:", "@", "hello", "tcp:127.0.0.1", "127.0.0.1:99999", "host:port"] {
        let err = bad.parse::<Address>().unwrap_err();
        assert!(err.to_string().contains("invalid address"), "{bad:?}: {err}");
    }
    assert!(matches!(Listener::bind("nonsense", None), Err(ConnectionError::Address(_))));
}

/// Listens on `path`, says so, and is killed before it can remove the socket file.
fn listen_and_wait(path: std::path::PathBuf, listening: multiproc::Event) {
    let _listener = Listener::bind(Address::unix(&path), None).unwrap();
    listening.set();
    std::thread::sleep(LONG);
}

#[test]
fn binding_over_a_socket_file_left_by_a_killed_listener_says_so() {
    let path = std::env::temp_dir().join(format!("multiproc-test-{}-stale.sock", std::process::id()));
    let listening = multiproc::Event::new().unwrap();
    let mut child = Process::spawn(listen_and_wait, (path.clone(), listening.clone())).unwrap();
    // Not merely until the file exists: between its bind and its listen,
    // the child's socket is a file that nobody listens on yet.
    assert!(listening.wait_timeout(LONG), "the child never listened");
    // While it listens, the address is in use as before.
    let live = Listener::bind(Address::unix(&path), None).unwrap_err().to_string();
    assert!(live.contains("in use") && !live.contains("nobody listens"), "{live}");
    child.kill().unwrap();
    let _ = child.join_timeout(LONG);
    let stale = Listener::bind(Address::unix(&path), None).unwrap_err().to_string();
    let _ = std::fs::remove_file(&path);
    assert!(stale.contains("nobody listens") && stale.contains("remove"), "{stale}");
}
