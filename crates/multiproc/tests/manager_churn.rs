//! Clients coming and going: a manager serving many short-lived client
//! processes (some killed mid-call, some over TCP) ends with the threads and
//! descriptors it had before them. Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::time::Duration;

use multiproc::manager::{Dict, Lock, Manager, Queue};
use sync_support::{Kid, wait_until};

/// Threads and open descriptors of process `pid`.
fn threads_and_fds(pid: i32) -> (usize, usize) {
    let count = |what: &str| std::fs::read_dir(format!("/proc/{pid}/{what}")).unwrap().count();
    (count("task"), count("fd"))
}

fn short_client(d: Dict<u32, u32>, q: Queue<u32>, lock: Lock, i: u32) {
    d.insert(i, i).unwrap();
    // A call that waits (handed to the connection's thread), then times out.
    assert!(q.get_timeout(Duration::from_millis(20)).unwrap_err().is_timeout());
    drop(lock.acquire().unwrap());
}

fn blocked_client(q: Queue<u32>, started: Queue<u32>) {
    started.put(0).unwrap();
    let _ = q.get();
}

fn tcp_client(address: String, key: Vec<u8>, i: u32) {
    let remote = Manager::connect(&address, Some(&key)).unwrap();
    let d: Dict<u32, u32> = remote.get("d").unwrap();
    d.insert(i, i).unwrap();
}

#[test]
fn clients_that_come_and_go_leave_no_threads_or_descriptors_behind() {
    let key = b"churn".to_vec();
    let m = Manager::builder().address("tcp:127.0.0.1:0").authkey(&key).start().unwrap();
    let local = Manager::start().unwrap();
    for (m, over_tcp) in [(&m, true), (&local, false)] {
        let pid = m.pid().unwrap();
        let (d, q, lock, started) =
            (m.dict::<u32, u32>().unwrap(), m.queue::<u32>().unwrap(), m.lock().unwrap(), m.queue().unwrap());
        m.publish("d", &d).unwrap();
        // One client first: the manager's own threads (the dispatcher) start
        // with it; count from there.
        Kid::<()>::spawn(short_client, (d.clone(), q.clone(), lock.clone(), 0)).join();
        // Its accept loop, the dispatcher of lanes (local only) and one
        // thread per connection of this process (one: it calls from one thread).
        let threads = if over_tcp { 2 } else { 3 };
        wait_until("the first client's connection to end", || threads_and_fds(pid).0 == threads);
        // (Its descriptors may not all be closed yet: the dispatcher lets
        // go of a closed lane when it next wakes. So "after" may be fewer.)
        let before = threads_and_fds(pid);
        for i in 1..=12 {
            Kid::<()>::spawn(short_client, (d.clone(), q.clone(), lock.clone(), i)).join();
            let killed = Kid::<()>::spawn(blocked_client, (q.clone(), started.clone()));
            started.get_timeout(sync_support::LONG).unwrap();
            killed.kill();
            killed.reap();
            if over_tcp {
                Kid::<()>::spawn(tcp_client, (m.address().to_string(), key.clone(), 100 + i)).join();
            }
        }
        assert_eq!(q.qsize().unwrap(), 0);
        let mut now = before;
        let start = std::time::Instant::now();
        while start.elapsed() < sync_support::LONG {
            now = threads_and_fds(pid);
            if now.0 <= before.0 && now.1 <= before.1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            now.0 <= before.0 && now.1 <= before.1,
            "threads and descriptors of the manager (over TCP: {over_tcp}): {before:?} before, {now:?} after"
        );
    }
    m.shutdown().unwrap();
    local.shutdown().unwrap();
}

#[test]
fn connecting_again_and_again_does_not_gather_connections() {
    let key = b"again".to_vec();
    let m = Manager::builder().address("tcp:127.0.0.1:0").authkey(&key).start().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    m.publish("d", &d).unwrap();
    let pid = m.pid().unwrap();
    let before = threads_and_fds(pid);
    for i in 0..30 {
        let remote = Manager::connect(m.address(), Some(&key)).unwrap();
        let seen: Dict<u32, u32> = remote.get("d").unwrap();
        seen.insert(i, i).unwrap();
    }
    assert_eq!(d.len().unwrap(), 30);
    // At most one more connection (so one more thread in the manager) than
    // before, however many times this process connected.
    wait_until("the manager to serve at most one more connection", || threads_and_fds(pid).0 <= before.0 + 1);
    m.shutdown().unwrap();
}
