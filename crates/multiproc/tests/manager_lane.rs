//! Local manager clients call through a shared-memory lane served by the
//! manager's dispatcher: large messages, calls that wait, many clients and
//! a client killed mid-stream still behave as over a socket. Every wait is
//! bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::time::{Duration, Instant};

use multiproc::manager::{Dict, List, Lock, Manager, Queue};
use sync_support::{Kid, LONG};

/// Larger than a lane's message area (64 KiB): these travel on the socket.
const BIG: usize = 300 << 10;

fn big_round_trip(d: Dict<u8, Vec<u8>>, l: List<Vec<u8>>) -> usize {
    let value = d.get(&1).unwrap().unwrap();
    d.insert(2, value.iter().map(|b| b.wrapping_add(1)).collect()).unwrap();
    // Replaced with no answer but `Unit`, large value or not.
    d.set(&3, &value[..]).unwrap();
    d.set(&3, &value[1..]).unwrap();
    l.push(vec![9; BIG]).unwrap();
    value.len()
}

#[test]
fn messages_larger_than_the_lane_go_on_the_socket_both_ways() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, Vec<u8>>().unwrap();
    let l = m.list::<Vec<u8>>().unwrap();
    let value: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    d.insert(1, value.clone()).unwrap();
    assert_eq!(d.get(&1).unwrap().as_ref(), Some(&value));
    // Small calls on the same connection go on through the lane.
    assert_eq!(d.len().unwrap(), 1);
    assert_eq!(Kid::spawn(big_round_trip, (d.clone(), l.clone())).join(), BIG);
    let plus_one: Vec<u8> = value.iter().map(|b| b.wrapping_add(1)).collect();
    assert_eq!(d.get(&2).unwrap(), Some(plus_one));
    assert_eq!(d.get(&3).unwrap().as_deref(), Some(&value[1..]));
    // An answer too large for the lane (many items at once).
    for _ in 0..3 {
        l.push(vec![7; BIG]).unwrap();
    }
    let all = l.to_vec().unwrap();
    assert_eq!(all.len(), 4);
    assert!(all[0].iter().all(|b| *b == 9) && all[1..].iter().all(|v| v.len() == BIG && v[0] == 7));
    m.shutdown().unwrap();
}

fn count_and_take(d: Dict<String, u64>, q: Queue<u64>, n: u64) -> u64 {
    for _ in 0..n {
        d.update("count", |c: &mut Option<u64>| *c.get_or_insert(0) += 1).unwrap();
    }
    // A get that waits: handed to this client's own connection thread.
    q.get_timeout(LONG).unwrap()
}

#[test]
fn many_clients_mix_quick_calls_and_calls_that_wait() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, u64>().unwrap();
    let q = m.queue::<u64>().unwrap();
    let kids: Vec<Kid<u64>> = (0..4).map(|_| Kid::spawn(count_and_take, (d.clone(), q.clone(), 500))).collect();
    // Every child counts, then waits in get; the dispatcher goes on serving.
    let start = Instant::now();
    while d.get("count").unwrap() != Some(2000) {
        assert!(start.elapsed() < LONG, "the count stalled at {:?}", d.get("count"));
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..4 {
        q.put(i).unwrap();
    }
    let mut got: Vec<u64> = kids.into_iter().map(Kid::join).collect();
    got.sort();
    assert_eq!(got, [0, 1, 2, 3]);
    m.shutdown().unwrap();
}

fn call_forever(d: Dict<u64, u64>) {
    for i in 0.. {
        d.insert(i % 100, i).unwrap();
        let _ = d.get(&(i % 100)).unwrap();
    }
}

#[test]
fn a_client_killed_mid_stream_leaves_the_others_served() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let busy = Kid::<()>::spawn(call_forever, (d.clone(),));
    let start = Instant::now();
    while d.len().unwrap() < 100 {
        assert!(start.elapsed() < LONG, "the child never got going");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Killed at any point of a call: its lane may hold a request not yet
    // taken, taken and not answered, or an answer nobody reads.
    busy.kill();
    busy.reap();
    let mine = m.dict::<u8, u8>().unwrap();
    for i in 0..200 {
        mine.insert(i, i).unwrap();
        assert_eq!(mine.get(&i).unwrap(), Some(i));
    }
    assert_eq!(d.len().unwrap(), 100);
    m.shutdown().unwrap();
}

/// Increments entry 0 of `d` `n` times, each a read and a write (two calls,
/// not atomic) under `lock`, from two threads of this process.
fn count_under_lock(lock: Lock, d: Dict<u32, u32>, n: u32) {
    let work = move || {
        for _ in 0..n {
            let guard = lock.acquire().unwrap();
            let v = d.get(&0).unwrap().unwrap();
            d.insert(0, v + 1).unwrap();
            drop(guard);
        }
    };
    let other = std::thread::spawn(work.clone());
    work();
    other.join().unwrap();
}

#[test]
fn a_manager_lock_makes_read_modify_write_exact_across_processes_and_threads() {
    let m = Manager::start().unwrap();
    let (lock, d) = (m.lock().unwrap(), m.dict::<u32, u32>().unwrap());
    d.insert(0, 0).unwrap();
    let kids: Vec<Kid<()>> = (0..4).map(|_| Kid::spawn(count_under_lock, (lock.clone(), d.clone(), 150))).collect();
    for k in kids {
        k.join();
    }
    assert_eq!(d.get(&0).unwrap(), Some(4 * 2 * 150));
    m.shutdown().unwrap();
}
