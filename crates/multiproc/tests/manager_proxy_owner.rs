//! `Manager::publish` and `Manager::remove` tell whether a proxy is the
//! handle's manager's without connecting to the address the proxy names: a
//! proxy naming an address that never answers (a machine gone, a port
//! black-holed) costs no wait, whether its object is the manager's own or
//! another manager's. Every wait is bounded.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use multiproc::manager::{self, Dict, Manager, ManagerError, Proxy};
use multiproc::{Address, Pipe};

const KEY: &[u8] = b"proxy owner";

/// Far below the 10 s a connection to a silent address may take, far above
/// what deciding without one takes, even on a loaded machine.
const PROMPT: Duration = Duration::from_secs(5);

fn tcp_address(m: &Manager) -> SocketAddr {
    let Address::Tcp(at) = m.address().clone() else { panic!("not TCP: {}", m.address()) };
    at
}

/// `proxy` as a process would read it with `from` replaced by `to` (of the
/// same length) in its address: the same object, reached another way.
fn readdressed(proxy: &Dict<u8, u8>, from: &str, to: &str) -> Dict<u8, u8> {
    assert_eq!(from.len(), to.len());
    let (a, b) = Pipe::<Dict<u8, u8>>::duplex().unwrap();
    a.send(proxy).unwrap();
    let mut bytes = b.recv_bytes_timeout(Duration::from_secs(10)).unwrap();
    let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).expect("the address in the proxy");
    bytes[at..at + from.len()].copy_from_slice(to.as_bytes());
    b.send_bytes(&bytes).unwrap();
    a.recv_timeout(Duration::from_secs(10)).unwrap()
}

#[test]
fn a_proxy_of_this_manager_at_an_address_that_never_answers_is_its_own_at_once() {
    let m = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    // 127.0.0.2 at the manager's port accepts connections and says nothing.
    let _silent = TcpListener::bind(("127.0.0.2", tcp_address(&m).port())).unwrap();
    let moved: Dict<u8, u8> = readdressed(&d, "127.0.0.1", "127.0.0.2");
    assert!(format!("{:?}", moved.object_ref()).contains("127.0.0.2"));
    let start = Instant::now();
    let published = m.publish("moved", &moved);
    assert!(published.is_ok(), "{published:?} after {:?}", start.elapsed());
    assert_eq!(m.get::<Dict<u8, u8>>("moved").unwrap().get(&1).unwrap(), Some(1));
    assert!(m.remove(&moved).unwrap());
    assert!(start.elapsed() < PROMPT, "publish and remove took {:?}", start.elapsed());
    m.shutdown().unwrap();
}

#[test]
fn a_proxy_of_another_manager_at_an_address_that_never_answers_is_refused_at_once() {
    let m = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let other = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let foreign = other.event().unwrap();
    let gone = tcp_address(&other);
    other.shutdown().unwrap();
    // Its address now accepts connections and says nothing.
    let _silent = TcpListener::bind(gone).unwrap();
    let start = Instant::now();
    for e in [m.publish("foreign", &foreign).unwrap_err(), m.remove(&foreign).unwrap_err()] {
        assert!(matches!(e, ManagerError::ForeignProxy { .. }), "{e}");
    }
    assert!(start.elapsed() < PROMPT, "refusing took {:?}", start.elapsed());
    m.shutdown().unwrap();
}
