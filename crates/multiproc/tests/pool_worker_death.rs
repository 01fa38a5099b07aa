//! Workers SIGKILLed at bad moments: in an initializer, in the middle of a
//! chunk of `imap`/`starmap` with an initializer and `max_tasks_per_child`,
//! while writing a large result, all at once, after `close`, with a
//! grandchild holding their descriptors; and workers SIGSTOPped or deaf to
//! SIGTERM. Each call ends within a bounded time with the tasks of the dead
//! worker failed as `WorkerLost`, and the pool then works, terminates,
//! closes and joins, and leaves no descriptor, process or `/dev/shm` handle
//! behind, even after many dead workers.

mod pool_support;
#[path = "shm_support/mod.rs"]
mod shm_support;

use std::time::{Duration, Instant};

use multiproc::{Pool, PoolError, Queue};
use pool_support::{SLACK, WAIT, square};
use serde_bytes::ByteBuf;

fn kill(pid: i32) {
    // SAFETY: kill(2) with a pid we got from our own worker.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Initializer that kills its own worker.
fn die_in_init() {
    // SAFETY: ends this worker on purpose.
    unsafe { libc::raise(libc::SIGKILL) };
}

/// Initializer that aborts its worker.
fn abort_in_init() {
    std::process::abort();
}

#[test]
fn an_initializer_that_kills_its_worker_fails_the_tasks_instead_of_respawning_for_ever() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    for kind in ["kill", "abort"] {
        let builder = Pool::builder().processes(2);
        let pool = if kind == "kill" {
            builder.initializer(die_in_init, ()).build().unwrap()
        } else {
            builder.initializer(abort_in_init, ()).build().unwrap()
        };
        let t = Instant::now();
        let mut r = pool.apply_async(square, (3,));
        let got = r.get_timeout(SLACK);
        assert!(
            matches!(&got, Err(PoolError::Task { .. })),
            "a task on workers that {kind} themselves in their initializer: {:?} after {:?}",
            got.map_err(|e| e.to_string()),
            t.elapsed()
        );
        if kind == "kill" {
            // SIGKILL may come from outside: the error says both causes.
            let message = got.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("SIGKILL") && message.contains("outside the pool"), "{message}");
        }
        pool.close();
        pool.join_timeout(SLACK).unwrap();
    }
}

/// Task: reports its pid on `pids`, then squares `a + b` after `ms`.
fn report_then_add(pids: Queue<i32>, a: u64, b: u64, ms: u64) -> u64 {
    pids.put(std::process::id() as i32).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    (a + b) * (a + b)
}

#[test]
fn a_worker_killed_in_a_starmap_chunk_fails_the_call_at_once() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    let pool = Pool::builder().processes(2).initializer(noop, ()).max_tasks_per_child(5).build().unwrap();
    let pids = Queue::new().unwrap();
    let args: Vec<_> = (0..40u64).map(|i| (pids.clone(), i, 1, 20)).collect();
    let mut r = pool.with_chunksize(4).starmap_async(report_then_add, args);
    let victim = pids.get_timeout(WAIT).unwrap();
    kill(victim);
    let t = Instant::now();
    match r.get_timeout(WAIT) {
        Err(PoolError::Task { error, .. }) => assert!(error.is_worker_lost(), "{error}"),
        other => panic!("expected a lost worker, got {:?}", other.map_err(|e| e.to_string())),
    }
    assert!(t.elapsed() < SLACK, "WorkerLost after {:?}", t.elapsed());
    assert_eq!(pool.starmap(pool_support::add, vec![(1, 2), (3, 4)]).unwrap(), vec![3, 7]);
    pool.close();
    pool.join_timeout(SLACK).unwrap();
}

/// Task with state: reports its pid, then returns `x` after `ms`.
fn stateful(calls: &mut u64, (pids, x): (Queue<i32>, u64)) -> (u64, u64) {
    *calls += 1;
    pids.put(std::process::id() as i32).unwrap();
    std::thread::sleep(Duration::from_millis(10));
    (x, *calls)
}

fn noop() {}

fn zero() -> u64 {
    0
}

#[test]
fn imap_with_an_initializer_and_max_tasks_per_child_fails_only_the_killed_chunk() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    let pool = Pool::builder().processes(2).initializer(zero, ()).max_tasks_per_child(7).build().unwrap();
    let pids = Queue::new().unwrap();
    let n = 60u64;
    let items: Vec<_> = (0..n).map(|x| (pids.clone(), x)).collect();
    let mut it = pool.with_chunksize(3).imap_with_state(stateful, items);
    let mut outcomes = Vec::new();
    let mut killed = false;
    while let Some(r) = it.next_timeout(WAIT) {
        assert!(!matches!(&r, Err(e) if e.is_timeout()), "imap gives its next outcome in time");
        if !killed && outcomes.len() == 10 {
            kill(pids.get_timeout(WAIT).unwrap());
            killed = true;
        }
        outcomes.push(r);
    }
    assert_eq!(outcomes.len(), n as usize);
    let mut lost = 0;
    for (i, r) in outcomes.iter().enumerate() {
        match r {
            Ok((x, calls)) => {
                assert_eq!(*x, i as u64);
                assert!(*calls <= 7 * 3, "max_tasks_per_child (chunks) kept after the kill: {calls}");
            }
            Err(PoolError::Task { index, error }) if error.is_worker_lost() => {
                assert_eq!(*index, Some(i));
                lost += 1;
            }
            Err(e) => panic!("item {i}: {e}"),
        }
    }
    assert!(lost <= 3 * 3, "only the chunks in flight on the dead worker: {lost}");
    drop(it);
    pool.close();
    pool.join_timeout(SLACK).unwrap();
}

/// Task: reports its pid, then returns `len` bytes (written while the
/// caller may be killing it).
fn report_then_make(pids: Queue<i32>, len: usize) -> ByteBuf {
    pids.put(std::process::id() as i32).unwrap();
    ByteBuf::from(vec![0xA5u8; len])
}

#[test]
fn a_worker_killed_while_writing_a_large_result_fails_only_that_task() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    let pool = Pool::new(2).unwrap();
    let pids = Queue::new().unwrap();
    let (mut ok, mut lost) = (0, 0);
    for round in 0..12u64 {
        let len = 24 << 20;
        let mut r = pool.apply_async(report_then_make, (pids.clone(), len));
        let other = pool.apply_async(square, (round,));
        let victim = pids.get_timeout(WAIT).unwrap();
        std::thread::sleep(Duration::from_millis(round * 3));
        kill(victim);
        match r.get_timeout(WAIT) {
            Ok(b) => {
                assert_eq!(b.len(), len);
                assert!(b.iter().all(|&x| x == 0xA5), "round {round}: a torn result");
                ok += 1;
            }
            Err(PoolError::Task { error, .. }) if error.is_worker_lost() => lost += 1,
            Err(e) => panic!("round {round}: {e}"),
        }
        assert_eq!(pool_support::get(other).unwrap(), round * round);
    }
    eprintln!("{ok} large results arrived, {lost} lost");
    assert_eq!(pool.apply(square, (9,)).unwrap(), 81);
    pool.close();
    pool.join_timeout(SLACK).unwrap();
}

/// Task: reports its pid, then sleeps.
fn report_then_sleep(pids: Queue<i32>, ms: u64) -> u64 {
    pids.put(std::process::id() as i32).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn every_worker_killed_at_once_fails_the_map_and_the_pool_recovers() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    let pool = Pool::new(3).unwrap();
    let pids = Queue::new().unwrap();
    let mut r = pool.with_chunksize(2).starmap_async(report_then_sleep, (0..30).map(|_| (pids.clone(), 50)));
    let mut victims = std::collections::BTreeSet::new();
    while victims.len() < 3 {
        victims.insert(pids.get_timeout(WAIT).unwrap());
    }
    let t = Instant::now();
    for v in &victims {
        kill(*v);
    }
    match r.get_timeout(WAIT) {
        Err(PoolError::Task { error, .. }) => assert!(error.is_worker_lost(), "{error}"),
        other => panic!("expected a lost worker, got {:?}", other.map_err(|e| e.to_string())),
    }
    assert!(t.elapsed() < SLACK, "WorkerLost after {:?}", t.elapsed());
    assert_eq!(pool.map(square, 0..6u64).unwrap(), vec![0, 1, 4, 9, 16, 25]);
}

/// This process's open descriptors once their count held still for 100 ms
/// (a dropped pool's threads close theirs shortly after the drop).
fn settled_fds() -> usize {
    let t = Instant::now();
    let mut last = pool_support::open_fds();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = pool_support::open_fds();
        if now == last || t.elapsed() > SLACK {
            return now;
        }
        last = now;
    }
}

/// Serializes the tests of this file, so that the leak counts of one do not
/// see another's pool.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Task for the one-argument calls: reports its pid, then sleeps 100 ms.
fn report_then_nap(pids: Queue<i32>) -> u64 {
    report_then_sleep(pids, 100)
}

/// Starts a call of `kind` on `pool`, kills the first worker that takes one
/// of its tasks, and says whether the call then reported a lost worker (every
/// wait bounded).
fn kill_one_during(kind: &str, pool: &Pool, pids: &Queue<i32>, victims: &mut Vec<i32>) -> bool {
    let lost = |r: &Result<u64, PoolError>| matches!(r, Err(PoolError::Task { error, .. }) if error.is_worker_lost());
    let many = || (0..9).map(|_| pids.clone());
    match kind {
        "apply_async" => {
            // Long enough that the kill always finds it running, however
            // late this thread is scheduled (the kill ends it at once).
            let mut r = pool.apply_async(report_then_sleep, (pids.clone(), 20_000));
            victims.push(pids.get_timeout(WAIT).unwrap());
            kill(victims[0]);
            lost(&r.get_timeout(WAIT))
        }
        "map_async" => {
            let mut r = pool.with_chunksize(3).map_async(report_then_nap, many());
            victims.push(pids.get_timeout(WAIT).unwrap());
            kill(victims[0]);
            lost(&r.get_timeout(WAIT).map(|v| v.len() as u64))
        }
        "imap" | "imap_unordered" => {
            let mut it = if kind == "imap" {
                pool.with_chunksize(3).imap(report_then_nap, many())
            } else {
                pool.with_chunksize(3).imap_unordered(report_then_nap, many())
            };
            // imap starts its tasks as it is iterated: kill from a thread.
            std::thread::scope(|s| {
                s.spawn(|| {
                    victims.push(pids.get_timeout(WAIT).unwrap());
                    kill(victims[0]);
                });
                let mut any = false;
                while let Some(r) = it.next_timeout(WAIT) {
                    assert!(!matches!(&r, Err(e) if e.is_timeout()), "{kind}: no outcome in time");
                    any |= lost(&r);
                }
                any
            })
        }
        _ => unreachable!("{kind}"),
    }
}

/// Kills the worker holding a task of each kind of call, then closes and
/// joins (or drops) the pool: nothing waits for ever, and no descriptor,
/// child process or `/dev/shm` handle is left.
#[test]
fn killed_workers_leave_no_descriptor_process_or_shm_handle_behind() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    let pids = Queue::new().unwrap();
    let warm = Pool::new(1).unwrap();
    assert_eq!(warm.apply(square, (2,)).unwrap(), 4);
    drop(warm);
    let before = (settled_fds(), shm_support::own_dev_shm_handles());
    let mut workers = std::collections::BTreeSet::new();
    for kind in ["apply_async", "map_async", "imap", "imap_unordered"] {
        for close in [true, false] {
            let pool = Pool::builder().processes(2).initializer(noop, ()).max_tasks_per_child(2).build().unwrap();
            let mut victims = Vec::new();
            assert!(kill_one_during(kind, &pool, &pids, &mut victims), "{kind}: a lost worker is reported");
            workers.extend(victims);
            assert_eq!(pool.apply(square, (5,)).unwrap(), 25, "{kind}: pool still usable");
            let t = Instant::now();
            if close {
                pool.close();
                pool.join_timeout(SLACK).unwrap();
            } else {
                drop(pool);
            }
            assert!(t.elapsed() < SLACK, "{kind}: close/join or drop took {:?}", t.elapsed());
            // Pids of tasks that ran on after the call failed.
            while let Ok(pid) = pids.get_nowait() {
                workers.insert(pid);
            }
        }
    }
    let t = Instant::now();
    let left = || workers.iter().filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists()).collect::<Vec<_>>();
    while !left().is_empty() && t.elapsed() < SLACK {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(left().is_empty(), "workers left behind (alive or unreaped): {:?}", left());
    let after = (settled_fds(), shm_support::own_dev_shm_handles());
    assert_eq!(after, before, "descriptors and /dev/shm handles");
}

/// Task: forks a grandchild that sleeps `ms` holding every descriptor the
/// worker had, reports both pids, then sleeps itself.
fn fork_then_sleep(pids: Queue<i32>, ms: u64) -> u64 {
    // SAFETY: the child only sleeps and _exits (async-signal-safe).
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above.
        unsafe {
            libc::usleep((ms * 1000) as u32);
            libc::_exit(0);
        }
    }
    pids.put(std::process::id() as i32).unwrap();
    pids.put(child).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_killed_worker_whose_grandchild_holds_its_descriptors_is_still_lost_at_once() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    let pool = Pool::new(1).unwrap();
    let pids = Queue::new().unwrap();
    let mut r = pool.apply_async(fork_then_sleep, (pids.clone(), 20_000));
    let worker = pids.get_timeout(WAIT).unwrap();
    let grandchild = pids.get_timeout(WAIT).unwrap();
    kill(worker);
    let t = Instant::now();
    let got = r.get_timeout(SLACK);
    kill(grandchild);
    match got {
        Err(PoolError::Task { error, .. }) => assert!(error.is_worker_lost(), "{error}"),
        other => panic!("expected a lost worker, got {:?} after {:?}", other.map_err(|e| e.to_string()), t.elapsed()),
    }
    assert_eq!(pool.apply(square, (4,)).unwrap(), 16);
    pool.close();
    pool.join_timeout(SLACK).unwrap();
}

#[test]
fn results_outstanding_when_the_pool_is_terminated_or_dropped_fail_at_once() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    for drop_it in [false, true] {
        let pool = Pool::new(2).unwrap();
        let pids = Queue::new().unwrap();
        let mut running = pool.apply_async(report_then_sleep, (pids.clone(), 20_000));
        let mut queued: Vec<_> = (0..4).map(|_| pool.apply_async(report_then_sleep, (pids.clone(), 20_000))).collect();
        let mut map = pool.map_async(report_then_nap, (0..8).map(|_| pids.clone()));
        pids.get_timeout(WAIT).unwrap();
        if drop_it {
            drop(pool);
        } else {
            pool.terminate();
        }
        let t = Instant::now();
        let is_err_not_timeout = |r: Result<u64, PoolError>| matches!(r, Err(e) if !e.is_timeout());
        assert!(is_err_not_timeout(running.get_timeout(SLACK)), "drop {drop_it}: the running task");
        for q in &mut queued {
            assert!(is_err_not_timeout(q.get_timeout(SLACK)), "drop {drop_it}: a queued task");
        }
        assert!(is_err_not_timeout(map.get_timeout(SLACK).map(|v| v.len() as u64)), "drop {drop_it}: the map");
        assert!(t.elapsed() < SLACK, "drop {drop_it}: the results failed after {:?}", t.elapsed());
    }
}

/// Task: ignores SIGTERM, reports its pid, then sleeps.
fn deaf_then_sleep(pids: Queue<i32>, ms: u64) -> u64 {
    // SAFETY: sets a signal disposition, nothing else.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    report_then_sleep(pids, ms)
}

#[test]
fn terminate_and_drop_end_workers_that_are_stopped_or_ignore_sigterm() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    for (how, drop_it) in [("stop", false), ("stop", true), ("deaf", false), ("deaf", true)] {
        let pool = Pool::new(1).unwrap();
        let pids = Queue::new().unwrap();
        let mut r = pool.apply_async(deaf_then_sleep, (pids.clone(), 20_000));
        let worker = pids.get_timeout(WAIT).unwrap();
        if how == "stop" {
            // SAFETY: kill(2) on our own worker.
            unsafe { libc::kill(worker, libc::SIGSTOP) };
        }
        let t = Instant::now();
        if drop_it {
            drop(pool);
        } else {
            pool.terminate();
            pool.join_timeout(SLACK).unwrap();
        }
        assert!(t.elapsed() < SLACK, "{how}, drop {drop_it}: took {:?}", t.elapsed());
        assert!(r.get_timeout(SLACK).is_err_and(|e| !e.is_timeout()), "{how}, drop {drop_it}");
        let gone = || !std::path::Path::new(&format!("/proc/{worker}")).exists();
        while !gone() && t.elapsed() < SLACK {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone(), "{how}, drop {drop_it}: the worker is still there");
    }
}

#[test]
fn a_worker_killed_after_close_fails_its_task_and_join_still_returns() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    let pool = Pool::new(1).unwrap();
    let pids = Queue::new().unwrap();
    let mut running = pool.apply_async(report_then_sleep, (pids.clone(), 20_000));
    let queued: Vec<_> = (0..5u64).map(|x| pool.apply_async(square, (x,))).collect();
    let worker = pids.get_timeout(WAIT).unwrap();
    pool.close();
    kill(worker);
    let t = Instant::now();
    pool.join_timeout(SLACK).unwrap();
    assert!(t.elapsed() < SLACK);
    assert!(running.get_timeout(SLACK).is_err_and(|e| e.task_error().is_some_and(|t| t.is_worker_lost())));
    for (x, r) in (0..5u64).zip(queued) {
        assert_eq!(pool_support::get(r).unwrap(), x * x, "queued task {x} ran on a replacement");
    }
}

/// Task: reports its pid, sleeps, and echoes its (large) argument back.
fn report_then_echo(pids: Queue<i32>, b: ByteBuf, ms: u64) -> ByteBuf {
    pids.put(std::process::id() as i32).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    b
}

#[test]
fn a_long_lived_pool_keeps_no_descriptor_per_dead_worker() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    let pool = Pool::new(2).unwrap();
    let pids = Queue::new().unwrap();
    let big = ByteBuf::from(vec![5u8; 1 << 20]);
    let use_both = |pool: &Pool| {
        // Large arguments and results on both workers: slabs and rings exist.
        let mut rs: Vec<_> =
            (0..4).map(|_| pool.apply_async(report_then_echo, (pids.clone(), big.clone(), 30))).collect();
        for r in &mut rs {
            assert_eq!(r.get_timeout(WAIT).unwrap().len(), big.len());
        }
        while pids.get_nowait().is_ok() {}
    };
    use_both(&pool);
    let fds = settled_fds();
    for _ in 0..10 {
        let mut r = pool.apply_async(report_then_echo, (pids.clone(), big.clone(), 20_000));
        kill(pids.get_timeout(WAIT).unwrap());
        assert!(r.get_timeout(WAIT).is_err_and(|e| e.task_error().is_some_and(|t| t.is_worker_lost())));
        use_both(&pool);
    }
    // (At most: a pool of an earlier test may still be closing its own.)
    let now = settled_fds();
    assert!(now <= fds, "descriptors after ten dead workers: {now}, {fds} before");
}

fn byte_len(b: ByteBuf) -> usize {
    b.len()
}

#[test]
fn a_stopped_worker_does_not_hold_up_the_others_or_terminate() {
    let _watchdog = pool_support::watchdog();
    let _serial = serial();
    let pool = Pool::new(2).unwrap();
    let pids = Queue::new().unwrap();
    // Still running when it is stopped, however late this thread is
    // scheduled (terminate ends it).
    let mut stuck = pool.apply_async(report_then_sleep, (pids.clone(), 20_000));
    let worker = pids.get_timeout(WAIT).unwrap();
    // SAFETY: kill(2) on our own worker.
    unsafe { libc::kill(worker, libc::SIGSTOP) };
    // Arguments just under the shared-memory threshold go through the
    // sockets: many of them would fill the stopped worker's.
    let arg = ByteBuf::from(vec![1u8; 60 << 10]);
    let rs: Vec<_> = (0..200).map(|_| pool.apply_async(byte_len, (arg.clone(),))).collect();
    let t = Instant::now();
    let ready = || rs.iter().filter(|r| r.ready()).count();
    while ready() < 150 && t.elapsed() < SLACK {
        std::thread::sleep(Duration::from_millis(10));
    }
    let done = ready();
    assert!(done >= 150, "only {done} of 200 tasks ran on the worker that is not stopped");
    let t = Instant::now();
    pool.terminate();
    pool.join_timeout(SLACK).unwrap();
    assert!(t.elapsed() < SLACK, "terminate took {:?}", t.elapsed());
    assert!(stuck.get_timeout(SLACK).is_err_and(|e| !e.is_timeout()));
}
