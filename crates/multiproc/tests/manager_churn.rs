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

fn lock_and_count_forever(lock: Lock, d: Dict<u32, u32>) {
    loop {
        let guard = match lock.acquire() {
            Ok(g) => g,
            Err(multiproc::manager::AcquireError::OwnerDied(g)) => g.into_inner(),
            Err(e) => panic!("{e}"),
        };
        d.update(&0, |n: &mut Option<u32>| *n.get_or_insert(0) += 1).unwrap();
        drop(guard);
    }
}

#[test]
fn clients_killed_at_any_point_of_their_calls_never_keep_a_lock() {
    let m = Manager::start().unwrap();
    let pid = m.pid().unwrap();
    let (lock, d) = (m.lock().unwrap(), m.dict::<u32, u32>().unwrap());
    d.insert(0, 0).unwrap();
    let threads = 3; // accept loop, dispatcher, this process's connection
    for round in 0..15u32 {
        let kids: Vec<Kid<()>> =
            (0..2).map(|_| Kid::spawn(lock_and_count_forever, (lock.clone(), d.clone()))).collect();
        let start = d.get(&0).unwrap().unwrap();
        wait_until("the clients to get going", || d.get(&0).unwrap().unwrap() > start + 20 + round * 7);
        for k in kids {
            k.kill();
            k.reap();
        }
        // Killed anywhere (holding the lock, waiting for it, mid-update):
        // the lock is free again, at once or for an OwnerDied acquirer.
        match lock.acquire_timeout(Duration::from_secs(5)) {
            Ok(g) => drop(g),
            Err(multiproc::manager::AcquireError::OwnerDied(g)) => drop(g.into_inner()),
            Err(e) => panic!("round {round}: the lock stayed held by a dead client: {e}"),
        }
    }
    wait_until("the dead clients' connections to end", || threads_and_fds(pid).0 == threads);
    m.shutdown().unwrap();
}
