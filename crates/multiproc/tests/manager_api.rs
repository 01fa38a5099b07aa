//! Manager proxies: every kind of object, used from the parent and from
//! children (SPEC.md "Manager"; issue 9, items 1–4). Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::time::{Duration, Instant};

use multiproc::manager::{Dict, List, Manager, ManagerError, Namespace, Queue, RemoteError};
use multiproc::{Pool, Process};
use sync_support::{Kid, LONG};

const SHORT: Duration = Duration::from_millis(50);

#[test]
fn dict_operations_match_a_hashmap() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    assert_eq!(d.insert("a".into(), 1).unwrap(), None);
    assert_eq!(d.insert("a".into(), 2).unwrap(), Some(1));
    // `set` replaces or adds, answering nothing (the key borrowed as `str`).
    d.set("a", &20).unwrap();
    assert_eq!(d.get("a").unwrap(), Some(20));
    d.set("z", &26).unwrap();
    assert_eq!(d.insert("a".into(), 2).unwrap(), Some(20));
    assert_eq!(d.remove("z").unwrap(), Some(26));
    d.extend([("b".to_string(), 3), ("c".to_string(), 4)]).unwrap();
    assert_eq!(d.get("a").unwrap(), Some(2));
    assert_eq!(d.get("zz").unwrap(), None);
    assert!(d.contains_key("b").unwrap());
    assert_eq!(d.len().unwrap(), 3);
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c"]);
    let mut values = d.values().unwrap();
    values.sort();
    assert_eq!(values, [2, 3, 4]);
    let mut items = d.items().unwrap();
    items.sort();
    assert_eq!(items, [("a".to_string(), 2), ("b".to_string(), 3), ("c".to_string(), 4)]);
    assert_eq!(d.remove("b").unwrap(), Some(3));
    assert_eq!(d.remove("b").unwrap(), None);
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
    m.shutdown().unwrap();
}

#[test]
fn list_operations_match_a_vec() {
    let m = Manager::start().unwrap();
    let l = m.list_from(0..5u32).unwrap();
    l.push(5).unwrap();
    l.extend([6, 7]).unwrap();
    assert_eq!(l.len().unwrap(), 8);
    assert_eq!(l.get(3).unwrap(), 3);
    l.set(3, 30).unwrap();
    l.insert(0, 100).unwrap();
    l.insert(9, 200).unwrap(); // at len: appends
    assert_eq!(l.remove(0).unwrap(), 100);
    assert_eq!(l.pop().unwrap(), Some(200));
    assert_eq!(l.to_vec().unwrap(), [0, 1, 2, 30, 4, 5, 6, 7]);
    match l.get(8) {
        Err(ManagerError::Remote(RemoteError::IndexOutOfRange { index: 8, len: 8 })) => {}
        other => panic!("{other:?}"),
    }
    assert!(l.insert(10, 1).is_err());
    assert!(l.set(8, 1).is_err());
    assert_eq!(l.update_with(0, 5u32, |x: &mut u32, n: u32| std::mem::replace(x, n)).unwrap(), 0);
    assert_eq!(l.get(0).unwrap(), 5);
    l.clear().unwrap();
    assert_eq!(l.pop().unwrap(), None);
    assert!(l.is_empty().unwrap());
}

#[test]
fn namespace_fields_have_their_own_types() {
    let m = Manager::start().unwrap();
    let ns = m.namespace().unwrap();
    ns.set("x", &1.5f64).unwrap();
    ns.set("tags", &vec!["a", "b"]).unwrap();
    assert_eq!(ns.get::<f64>("x").unwrap(), Some(1.5));
    assert_eq!(ns.get::<Vec<String>>("tags").unwrap().unwrap(), ["a", "b"]);
    assert_eq!(ns.get::<u8>("missing").unwrap(), None);
    assert!(ns.contains("x").unwrap());
    // Read as another type: a decode error, not garbage.
    match ns.get::<String>("x") {
        Err(e @ ManagerError::FieldType { .. }) => assert!(e.to_string().contains("f64"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(ns.update("x", |v: &mut Option<String>| v.take()).is_err());
    assert_eq!(ns.get::<f64>("x").unwrap(), Some(1.5));
    assert_eq!(ns.update_with("x", 2.0, |v: &mut Option<f64>, k: f64| v.map(|x| x * k)).unwrap(), Some(1.5 * 2.0));
    assert!(ns.remove("x").unwrap());
    assert!(!ns.remove("x").unwrap());
    assert_eq!(ns.names().unwrap(), ["tags"]);
}

#[test]
fn updating_a_namespace_field_as_another_type_is_a_field_type_error() {
    let m = Manager::start().unwrap();
    let ns = m.namespace().unwrap();
    ns.set("x", &1.5f64).unwrap();
    // As reading it as another type says (not a panic of the manager's).
    match ns.update("x", |v: &mut Option<String>| v.take()) {
        Err(ManagerError::FieldType { field, stored, asked }) => {
            assert_eq!(field, "x");
            assert!(stored.contains("f64") && asked.contains("String"), "{stored} / {asked}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ns.get::<f64>("x").unwrap(), Some(1.5));
}

#[test]
fn values_read_are_copies_and_nested_proxies_share() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, Vec<u32>>().unwrap();
    d.insert("v".into(), vec![1]).unwrap();
    let mut copy = d.get("v").unwrap().unwrap();
    copy.push(2); // changes the copy only
    assert_eq!(d.get("v").unwrap().unwrap(), [1]);

    let outer = m.dict::<String, List<u32>>().unwrap();
    let inner = m.list::<u32>().unwrap();
    outer.insert("inner".into(), inner.clone()).unwrap();
    let fetched = outer.get("inner").unwrap().unwrap();
    fetched.push(9).unwrap(); // a proxy: changes the shared list
    assert_eq!(inner.to_vec().unwrap(), [9]);
}

#[test]
fn a_value_holding_a_handle_is_refused() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, multiproc::Queue<u8>>().unwrap();
    let err = d.insert(1, multiproc::Queue::new().unwrap()).unwrap_err();
    assert!(err.to_string().contains("store a manager proxy"), "{err}");
}

fn count_to(d: Dict<String, u64>, l: List<u64>, i: u64, n: u64) {
    for _ in 0..n {
        d.update("count", |c: &mut Option<u64>| *c.get_or_insert(0) += 1).unwrap();
    }
    d.insert(format!("child {i}"), i).unwrap();
    l.push(i).unwrap();
}

#[test]
fn update_is_atomic_across_ten_processes() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, u64>().unwrap();
    let l = m.list::<u64>().unwrap();
    let kids: Vec<Kid<()>> = (0..10).map(|i| Kid::spawn(count_to, (d.clone(), l.clone(), i, 200))).collect();
    for k in kids {
        k.join();
    }
    assert_eq!(d.get("count").unwrap(), Some(2000));
    assert_eq!(d.len().unwrap(), 11);
    let mut l = l.to_vec().unwrap();
    l.sort();
    assert_eq!(l, (0..10).collect::<Vec<_>>());
}

#[test]
fn a_panicking_update_is_an_error_and_leaves_the_entry_unchanged() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u32>().unwrap();
    d.insert(1, 10).unwrap();
    let err = d
        .update(&1, |v: &mut Option<u32>| -> u32 {
            *v = Some(99);
            panic!("update boom")
        })
        .unwrap_err();
    match err {
        ManagerError::Remote(RemoteError::Panicked(msg)) => assert!(msg.contains("update boom"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(d.get(&1).unwrap(), Some(10));
    let v = m.value(3u8).unwrap();
    assert!(v.update(|x: &mut u8| *x = x.checked_sub(4).expect("below zero")).is_err());
    assert_eq!(v.get().unwrap(), 3);
    // A list item and a namespace field too, changed before the panic.
    let l = m.list_from([vec![1u8], vec![2]]).unwrap();
    let pushed_then_panicked = l.update(1, |x: &mut Vec<u8>| -> usize {
        x.push(3);
        panic!("list boom")
    });
    assert!(matches!(pushed_then_panicked, Err(ManagerError::Remote(RemoteError::Panicked(_)))));
    assert_eq!(l.to_vec().unwrap(), [vec![1], vec![2]]);
    let ns = m.namespace().unwrap();
    ns.set("n", &5u64).unwrap();
    let replaced_then_panicked = ns.update("n", |n: &mut Option<u64>| -> u64 {
        *n = Some(6);
        panic!("namespace boom")
    });
    assert!(matches!(replaced_then_panicked, Err(ManagerError::Remote(RemoteError::Panicked(_)))));
    assert_eq!(ns.get::<u64>("n").unwrap(), Some(5));
}

#[test]
fn queue_fifo_bounds_timeouts_and_close() {
    let m = Manager::start().unwrap();
    // Room for no item: every put would wait for ever. Refused, as
    // `multiproc::Queue` refuses it.
    match m.bounded_queue::<u32>(0) {
        Err(ManagerError::Remote(RemoteError::BadRequest(why))) => assert!(why.contains("at least 1"), "{why}"),
        other => panic!("{other:?}"),
    }
    let q = m.bounded_queue::<u32>(2).unwrap();
    q.put(1).unwrap();
    q.put_timeout(2, SHORT).unwrap();
    assert!(q.full().unwrap());
    let t = Instant::now();
    assert!(q.put_timeout(3, SHORT).unwrap_err().is_timeout());
    assert!(t.elapsed() >= SHORT);
    assert!(matches!(q.put_nowait(3), Err(ManagerError::Remote(RemoteError::Full))));
    assert_eq!(q.qsize().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get_nowait().unwrap(), 2);
    assert!(q.empty().unwrap());
    assert!(matches!(q.get_nowait(), Err(ManagerError::Remote(RemoteError::Empty))));
    let t = Instant::now();
    assert!(q.get_timeout(SHORT).unwrap_err().is_timeout());
    assert!(t.elapsed() >= SHORT);
    q.put(7).unwrap();
    q.close().unwrap();
    assert!(q.is_closed().unwrap());
    assert!(matches!(q.put(8), Err(ManagerError::Remote(RemoteError::Closed))));
    assert_eq!(q.get_timeout(LONG).unwrap(), 7);
    assert!(matches!(q.get_timeout(LONG), Err(ManagerError::Remote(RemoteError::Closed))));
}

fn consume(q: multiproc::manager::JoinableQueue<u32>, out: List<u32>) {
    loop {
        let x = q.get_timeout(LONG).unwrap();
        if x == u32::MAX {
            q.task_done().unwrap();
            return;
        }
        out.push(x * 10).unwrap();
        q.task_done().unwrap();
    }
}

#[test]
fn joinable_queue_join_waits_for_task_done_from_children() {
    let m = Manager::start().unwrap();
    let q = m.joinable_queue::<u32>().unwrap();
    let out = m.list::<u32>().unwrap();
    for i in 0..20 {
        q.put(i).unwrap();
    }
    let kids: Vec<Kid<()>> = (0..2).map(|_| Kid::spawn(consume, (q.clone(), out.clone()))).collect();
    q.put(u32::MAX).unwrap();
    q.put(u32::MAX).unwrap();
    q.join_timeout(LONG).unwrap();
    assert_eq!(q.unfinished_tasks().unwrap(), 0);
    let mut got = out.to_vec().unwrap();
    got.sort();
    assert_eq!(got, (0..20).map(|i| i * 10).collect::<Vec<_>>());
    for k in kids {
        k.join();
    }
    assert!(matches!(q.task_done(), Err(ManagerError::Remote(RemoteError::TooManyTaskDone))));
}

#[test]
fn waiting_calls_counts_the_calls_blocked_in_the_manager_while_they_wait() {
    let m = Manager::start().unwrap();
    let (q, lock) = (m.queue::<u32>().unwrap(), m.lock().unwrap());
    assert_eq!(m.waiting_calls().unwrap(), 0);
    let held = lock.acquire().unwrap();
    let getter = {
        let q = q.clone();
        std::thread::spawn(move || q.get_timeout(LONG).unwrap())
    };
    let acquirer = {
        let l = lock.clone();
        std::thread::spawn(move || l.acquire_timeout(LONG).map(drop).is_ok())
    };
    sync_support::until_calls_wait(&m, 2);
    // A call that times out is counted while it waits, not after.
    assert!(q.get_timeout(SHORT).unwrap_err().is_timeout());
    assert_eq!(m.waiting_calls().unwrap(), 2);
    q.put(5).unwrap();
    assert_eq!(getter.join().unwrap(), 5);
    drop(held);
    assert!(acquirer.join().unwrap());
    assert_eq!(m.waiting_calls().unwrap(), 0);
    m.shutdown().unwrap();
}

fn blocked_get(q: Queue<u32>) -> u32 {
    q.get_timeout(LONG).unwrap()
}

#[test]
fn a_blocking_call_blocks_only_its_caller() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u32>().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    // Two children block in get; meanwhile this process (and a thread) go on.
    let kids: Vec<Kid<u32>> = (0..2).map(|_| Kid::spawn(blocked_get, (q.clone(),))).collect();
    let q2 = q.clone();
    let thread = std::thread::spawn(move || q2.get_timeout(LONG).unwrap());
    sync_support::until_calls_wait(&m, 3);
    let t = Instant::now();
    for i in 0..50 {
        d.insert(i, i).unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    for i in 1..=3 {
        q.put(i).unwrap();
    }
    let mut got: Vec<u32> = kids.into_iter().map(Kid::join).collect();
    got.push(thread.join().unwrap());
    got.sort();
    assert_eq!(got, [1, 2, 3]);
}

#[test]
fn lock_and_rlock_semantics() {
    let m = Manager::start().unwrap();
    let lock = m.lock().unwrap();
    assert!(matches!(lock.release(), Err(ManagerError::Remote(RemoteError::Release(_)))));
    let g = lock.acquire().unwrap();
    let l2 = lock.clone();
    let other = std::thread::spawn(move || l2.acquire_timeout(SHORT).map(drop).unwrap_err().is_timeout());
    assert!(other.join().unwrap());
    drop(g);
    assert!(!lock.is_locked().unwrap());

    let r = m.rlock().unwrap();
    r.acquire().unwrap().leak();
    r.acquire().unwrap().leak();
    assert_eq!(r.depth().unwrap(), 2);
    assert!(r.is_owned().unwrap());
    let r2 = r.clone();
    // Another thread may neither take nor release it.
    let other =
        std::thread::spawn(move || (r2.try_acquire().map(drop).unwrap_err().is_timeout(), r2.release().is_err()));
    assert_eq!(other.join().unwrap(), (true, true));
    r.release().unwrap();
    assert!(r.is_locked().unwrap());
    r.release().unwrap();
    assert!(!r.is_locked().unwrap());
}

#[test]
fn semaphore_counts() {
    let m = Manager::start().unwrap();
    let s = m.semaphore(2).unwrap();
    s.acquire().unwrap();
    assert!(s.acquire_timeout(SHORT).unwrap());
    let t = Instant::now();
    assert!(!s.acquire_timeout(SHORT).unwrap());
    assert!(t.elapsed() >= SHORT);
    s.release().unwrap();
    s.release().unwrap();
    s.release().unwrap(); // unbounded: may go above its start
    assert_eq!(s.value().unwrap(), 3);
}

fn wait_event(e: multiproc::manager::Event) -> bool {
    e.wait_timeout(LONG).unwrap()
}

#[test]
fn event_set_by_the_parent_wakes_children() {
    let m = Manager::start().unwrap();
    let e = m.event().unwrap();
    let kids: Vec<Kid<bool>> = (0..3).map(|_| Kid::spawn(wait_event, (e.clone(),))).collect();
    sync_support::until_calls_wait(&m, 3);
    e.set().unwrap();
    assert!(kids.into_iter().all(Kid::join));
}

fn notified_waiter(c: multiproc::manager::Condition, d: Dict<u8, u32>) -> bool {
    let mut g = c.acquire().unwrap();
    d.update(&0, |n: &mut Option<u32>| *n.get_or_insert(0) += 1).unwrap();
    g.wait_timeout(LONG).unwrap()
}

#[test]
fn each_notify_wakes_exactly_that_many_waiters() {
    let m = Manager::start().unwrap();
    let c = m.condition().unwrap();
    let d = m.dict::<u8, u32>().unwrap();
    let kids: Vec<Kid<bool>> = (0..3).map(|_| Kid::spawn(notified_waiter, (c.clone(), d.clone()))).collect();
    // Each waits for a notify in the manager now (and released the lock).
    sync_support::until_calls_wait(&m, 3);
    assert_eq!(d.get(&0).unwrap(), Some(3));
    assert_eq!(c.notify(2).unwrap(), 2);
    assert_eq!(c.notify_all().unwrap(), 1);
    assert_eq!(c.notify_all().unwrap(), 0);
    assert!(kids.into_iter().all(Kid::join));
}

fn barrier_party(b: multiproc::manager::Barrier, passes: usize) -> Vec<usize> {
    (0..passes).map(|_| b.wait_timeout(LONG).unwrap()).collect()
}

#[test]
fn barrier_gives_distinct_indices_in_lockstep() {
    let m = Manager::start().unwrap();
    let b = m.barrier(3).unwrap();
    assert_eq!(b.parties().unwrap(), 3);
    let kids: Vec<Kid<Vec<usize>>> = (0..3).map(|_| Kid::spawn(barrier_party, (b.clone(), 20))).collect();
    let runs: Vec<Vec<usize>> = kids.into_iter().map(Kid::join).collect();
    for pass in 0..20 {
        let mut idx: Vec<usize> = runs.iter().map(|r| r[pass]).collect();
        idx.sort();
        assert_eq!(idx, [0, 1, 2]);
    }
    // abort breaks waiters; reset mends it.
    let b2 = b.clone();
    let waiter = std::thread::spawn(move || b2.wait_timeout(LONG));
    while b.n_waiting().unwrap() == 0 {
        std::thread::sleep(Duration::from_millis(2));
    }
    b.abort().unwrap();
    assert!(matches!(waiter.join().unwrap(), Err(ManagerError::Remote(RemoteError::BarrierBroken))));
    assert!(b.is_broken().unwrap());
    b.reset().unwrap();
    assert!(!b.is_broken().unwrap());
}

fn pool_task(d: Dict<u64, u64>, x: u64) -> u64 {
    d.insert(x, x * x).unwrap();
    x
}

#[test]
fn proxies_pass_to_pool_tasks() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let pool = Pool::new(2).unwrap();
    let args: Vec<(Dict<u64, u64>, u64)> = (0..8).map(|x| (d.clone(), x)).collect();
    assert_eq!(pool.starmap(pool_task, args).unwrap(), (0..8).collect::<Vec<_>>());
    assert_eq!(d.len().unwrap(), 8);
    assert_eq!(d.get(&7).unwrap(), Some(49));
}

#[test]
fn shutdown_exits_zero_and_later_calls_are_connection_errors() {
    let m = Manager::builder().name("state").start().unwrap();
    let pid = m.pid().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    m.shutdown().unwrap(); // joins the process, checking exit code 0
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie_free(pid));
    let err = d.get(&1).unwrap_err();
    assert!(err.is_connection(), "{err}");
}

/// As Python's (since 3.8): a terminal's Ctrl-C reaches the manager process
/// too (it is in the program's process group), and the program that catches
/// it may still need its shared objects while it winds down.
#[test]
fn the_manager_process_ignores_sigint() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    let sent = std::process::Command::new("kill").args(["-INT", &m.pid().unwrap().to_string()]).status().unwrap();
    assert!(sent.success());
    std::thread::sleep(std::time::Duration::from_millis(100));
    d.insert(2, 2).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(1));
    m.shutdown().unwrap(); // exit code 0: it was not killed
}

fn is_zombie_free(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| !s.contains(") Z"))
}

fn in_child(ns: Namespace) -> String {
    ns.set("from", "child").unwrap();
    multiproc::current_process().name
}

#[test]
fn a_proxy_works_in_a_child_started_with_every_method() {
    let m = Manager::start().unwrap();
    let ns = m.namespace().unwrap();
    // SAFETY: the forked child runs only multiproc's code (whose globals are
    // reset after a fork) and this file's functions, which take no lock
    // another thread of the test binary may hold.
    let fork = unsafe { multiproc::StartMethod::fork() };
    for method in [multiproc::StartMethod::ForkServer, multiproc::StartMethod::Spawn, fork] {
        ns.set("from", "parent").unwrap();
        let mut p = Process::builder().start_method(method).spawn(in_child, (ns.clone(),)).unwrap();
        p.join_timeout(LONG).unwrap();
        assert_eq!(ns.get::<String>("from").unwrap().as_deref(), Some("child"), "{method:?}");
    }
}

#[test]
fn a_manager_starts_with_each_start_method() {
    // SAFETY: the forked child runs only multiproc's code (whose globals are
    // reset after a fork) and this file's functions, which take no lock
    // another thread of the test binary may hold.
    let fork = unsafe { multiproc::StartMethod::fork() };
    for method in [multiproc::StartMethod::ForkServer, multiproc::StartMethod::Spawn, fork] {
        let m = Manager::builder().start_method(method).start().unwrap();
        let l = m.list_from([1u8, 2]).unwrap();
        assert_eq!(l.to_vec().unwrap(), [1, 2], "{method:?}");
        m.shutdown().unwrap();
    }
}

/// Where the barrier action of the test below leaves its marks: a file
/// named after the test process (the manager's parent).
fn action_log(test_pid: i32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("multiproc-manager-barrier-action-{test_pid}"))
}

fn mark_pass() {
    use std::io::Write;
    let parent = multiproc::parent_process().expect("runs in the manager process").pid;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(action_log(parent)).unwrap();
    f.write_all(b"pass\n").unwrap();
}

fn explode() {
    panic!("barrier action boom");
}

#[test]
fn a_barrier_action_runs_once_per_pass_in_the_manager() {
    let log = action_log(std::process::id() as i32);
    let _ = std::fs::remove_file(&log);
    let m = Manager::start().unwrap();
    let b = m.barrier_with_action(3, mark_pass).unwrap();
    let kids: Vec<Kid<Vec<usize>>> = (0..3).map(|_| Kid::spawn(barrier_party, (b.clone(), 5))).collect();
    for k in kids {
        k.join();
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pass\n".repeat(5));
    std::fs::remove_file(&log).unwrap();

    let b = m.barrier_with_action(2, explode).unwrap();
    let b2 = b.clone();
    let first = std::thread::spawn(move || b2.wait_timeout(LONG));
    while b.n_waiting().unwrap() == 0 {
        std::thread::sleep(Duration::from_millis(2));
    }
    match b.wait_timeout(LONG) {
        Err(ManagerError::Remote(RemoteError::Panicked(msg))) => assert!(msg.contains("boom"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(first.join().unwrap(), Err(ManagerError::Remote(RemoteError::BarrierBroken))));
}
