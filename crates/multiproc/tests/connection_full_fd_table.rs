//! A process whose descriptor table is full. A receiver cannot take the
//! descriptors a message brings (the kernel drops them): the receive fails
//! and says why and what to do, and the connection stays failed rather than
//! framing the rest of the stream from the middle of the lost message. A
//! listener cannot accept: the error says what failed, where, and why.

use std::fs::File;

use multiproc::{Connection, Listener, Pipe, Process, SendFd};

mod process_support;

use process_support::{JOIN, count_fds, join_or_kill};

type Msg = (Vec<u8>, Vec<SendFd>);

fn open_files_limit() -> libc::rlimit {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into `limit`, a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit
}

fn set_open_files_limit(limit: &libc::rlimit) {
    // SAFETY: setrlimit reads `limit`, a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) }, 0);
}

/// Runs `f` with this process's descriptor table full.
fn with_a_full_descriptor_table<R>(f: impl FnOnce() -> R) -> R {
    let old = open_files_limit();
    set_open_files_limit(&libc::rlimit { rlim_cur: count_fds() as u64 + 32, ..old });
    let mut fillers = Vec::new();
    while let Ok(file) = File::open("/dev/null") {
        fillers.push(file);
        assert!(fillers.len() < 1000, "the descriptor table never filled");
    }
    let result = f();
    drop(fillers);
    set_open_files_limit(&old);
    result
}

/// Fills this process's descriptor table, says so, then receives twice and
/// tells how each receive ended.
fn receive_with_a_full_descriptor_table(conn: Connection<Msg>) -> Vec<String> {
    with_a_full_descriptor_table(|| receive_twice(&conn))
}

fn receive_twice(conn: &Connection<Msg>) -> Vec<String> {
    conn.send(&(b"full".to_vec(), Vec::new())).unwrap();
    (0..2)
        .map(|_| match conn.recv_timeout(JOIN) {
            Ok((bytes, fds)) => format!("a message of {} bytes with {} descriptors", bytes.len(), fds.len()),
            Err(e) => e.to_string(),
        })
        .collect()
}

#[test]
fn descriptors_lost_to_a_full_table_fail_the_receive_and_the_connection() {
    let (ours, theirs) = Pipe::<Msg>::duplex().unwrap();
    let child = Process::spawn(receive_with_a_full_descriptor_table, (theirs,)).unwrap();
    assert_eq!(ours.recv_timeout(JOIN).unwrap().0, b"full");
    let handles = (0..5).map(|_| SendFd::from(File::open("/dev/null").unwrap())).collect();
    // Longer than the receiver's first read, so part of it stays unread.
    ours.send(&(vec![1u8; 10_000], handles)).unwrap();
    // The receiver may be gone already (its second receive need not wait).
    let _ = ours.send(&(b"after".to_vec(), Vec::new()));
    let outcomes = join_or_kill(child);
    for outcome in &outcomes {
        assert!(outcome.contains("open files") && outcome.contains("can no longer be used"), "{outcomes:?}");
    }
}

/// A client waits to be accepted while the table is full; how the accept ends.
fn accept_with_a_full_descriptor_table() -> String {
    let listener = Listener::bind("tcp:127.0.0.1:0", None).unwrap();
    let multiproc::Address::Tcp(addr) = *listener.address() else { unreachable!() };
    let _client = std::net::TcpStream::connect(addr).unwrap();
    with_a_full_descriptor_table(|| match listener.accept_timeout::<()>(JOIN) {
        Ok(_) => "accepted".to_string(),
        Err(e) => e.to_string(),
    })
}

#[test]
fn an_accept_refused_by_a_full_table_says_what_failed_and_why() {
    let outcome = join_or_kill(Process::spawn(accept_with_a_full_descriptor_table, ()).unwrap());
    assert!(outcome.contains("cannot accept a connection on tcp:") && outcome.contains("open files"), "{outcome}");
}
