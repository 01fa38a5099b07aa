//! A closed `Connection` (issue 13, item 5): `AsFd` does not panic, waiting
//! on it returns at once, and every call reports `HandleClosed`.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use multiproc::{ConnectionError, Pipe, wait};

#[test]
fn as_fd_on_a_closed_connection_does_not_panic() {
    let (mut a, b) = Pipe::<u8>::duplex().unwrap();
    a.close();
    let fd = a.as_fd();
    let _ = fd; // a descriptor, not a panic
    assert!(a.closed());
    assert!(matches!(a.send(&1), Err(ConnectionError::HandleClosed)));
    assert!(matches!(a.recv(), Err(ConnectionError::HandleClosed)));
    // The peer sees the end of the stream: the socket really closed.
    assert!(b.recv_timeout(Duration::from_secs(10)).unwrap_err().is_closed());
}

#[test]
fn waiting_on_a_closed_connection_returns_at_once() {
    let (mut a, _b) = Pipe::<u8>::duplex().unwrap();
    a.close();
    let start = Instant::now();
    let ready = wait(&[&a], Some(Duration::from_secs(10)));
    assert!(start.elapsed() < Duration::from_secs(5), "waited {:?}", start.elapsed());
    // Either it reports the closed handle as ready (the next call says
    // HandleClosed) or it refuses with HandleClosed; it never blocks.
    match ready {
        Ok(ready) => assert_eq!(ready, [0]),
        Err(e) => assert!(matches!(e, ConnectionError::HandleClosed), "{e}"),
    }
}

#[test]
fn a_clone_of_a_closed_connection_is_closed_too() {
    let (mut a, _b) = Pipe::<u8>::duplex().unwrap();
    a.close();
    let c = a.clone();
    assert!(c.closed());
    assert!(matches!(c.send(&1), Err(ConnectionError::HandleClosed)));
}
