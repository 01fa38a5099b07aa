//! A host whose reads of large arguments get no answer (Redis stopped
//! answering that connection after it handed out the entries) stops within
//! its bound, rather than wait a reply timeout or two for every entry of
//! the read.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use multiproc_redis::Worker;
use support::{pool, server};

fn len(v: Vec<u8>) -> usize {
    v.len()
}

/// A loopback TCP proxy to a Redis server that forwards everything, except
/// that a connection that sends a `GET` is frozen: that command and all
/// after it are swallowed, and nothing more comes back.
struct FreezingProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, freeze_on_get: bool) {
    let mut buf = [0u8; 64 * 1024];
    let mut frozen = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if freeze_on_get && buf[..n].windows(9).any(|w| w == b"$3\r\nGET\r\n") {
            frozen = true;
        }
        if !frozen && to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

impl FreezingProxy {
    fn start(server_port: u16) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let acceptor = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(upstream) = TcpStream::connect(("127.0.0.1", server_port)) else { continue };
                        let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                        std::thread::spawn(move || pump(client, upstream, true));
                        std::thread::spawn(move || pump(u2, c2, false));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FreezingProxy { port, stop, acceptor: Some(acceptor) }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_host_whose_argument_reads_get_no_answer_stops_within_its_bound() {
    let server = server();
    let server_port: u16 = server.url().trim_start_matches("redis://127.0.0.1:").trim_end_matches('/').parse().unwrap();
    let proxy = FreezingProxy::start(server_port);
    let pool = pool(&server, "stalled").connect().unwrap();
    // Eight chunks whose arguments travel in keys of their own (a GET each).
    let _call = pool.with_chunksize(1).map_async(len, vec![vec![7u8; 300 * 1024]; 8]);
    let worker =
        Worker::builder(&format!("redis://127.0.0.1:{}/", proxy.port)).prefix("stalled").processes(4).start().unwrap();
    let read = || {
        let info = multiproc_redis::queue_info(&server.url(), "stalled", "default").unwrap();
        info.hosts.iter().map(|h| h.pending).sum::<u64>() >= 2
    };
    assert!(support::eventually(Duration::from_secs(30), read), "the host never read the entries");
    // Before, the host waited a reply timeout or two (10-20 s) for each
    // entry of its read: minutes for eight, with the stop unheard.
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let stopper = std::thread::spawn(move || {
        worker.stop();
        let _ = tx.send(());
    });
    let stopped = rx.recv_timeout(Duration::from_secs(40)).is_ok();
    let took = started.elapsed();
    // Unfreeze whatever is left so that the stop ends, then clean up.
    drop(server);
    let _ = stopper.join();
    drop(proxy);
    assert!(stopped, "the host did not stop within 40 s (waited {took:?})");
}
