//! Stateful workers: the initializer builds per-worker state once; tasks
//! receive `&mut` to it.

mod pool_support;

use multiproc::Pool;
use pool_support::WAIT;

/// A "model" loaded once per worker: how many times it was loaded is visible
/// through the load counter, how many predictions it made through `calls`.
struct Model {
    scale: u64,
    calls: u64,
    pid: u32,
}

fn load(scale: u64) -> Model {
    Model { scale, calls: 0, pid: std::process::id() }
}

fn predict(m: &mut Model, x: u64) -> (u64, u64, u32) {
    m.calls += 1;
    (x * m.scale, m.calls, m.pid)
}

#[test]
fn each_worker_builds_its_state_once_and_keeps_it() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::builder().processes(2).initializer(load, (3u64,)).build().unwrap();
    let out = pool.with_chunksize(10).map_with_state(predict, 0..200u64).unwrap();
    for (x, (y, _, _)) in out.iter().enumerate() {
        assert_eq!(*y, 3 * x as u64);
    }
    let mut per_pid = std::collections::BTreeMap::new();
    for (_, calls, pid) in &out {
        let e = per_pid.entry(*pid).or_insert(0);
        *e = (*e).max(*calls);
    }
    assert!(per_pid.len() <= 2);
    assert_eq!(per_pid.values().sum::<u64>(), 200, "state persisted across tasks: {per_pid:?}");
    let (y, calls, _) = pool.apply_with_state(predict, 5).unwrap();
    assert_eq!(y, 15);
    assert!(calls > 1, "the state is still there");
    let mut r = pool.apply_async_with_state(predict, 6);
    assert_eq!(r.get_timeout(WAIT).unwrap().0, 18);
    let got: Vec<u64> = pool.imap_with_state(predict, 0..5u64).map(|r| r.unwrap().0).collect();
    assert_eq!(got, vec![0, 3, 6, 9, 12]);
    let mut un: Vec<u64> = pool.imap_unordered_with_state(predict, 0..5u64).map(|r| r.unwrap().0).collect();
    un.sort_unstable();
    assert_eq!(un, vec![0, 3, 6, 9, 12]);
}

#[test]
fn a_replaced_worker_builds_its_state_again() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::builder().processes(1).max_tasks_per_child(1).initializer(load, (2u64,)).build().unwrap();
    let out = pool.with_chunksize(1).map_with_state(predict, 0..4u64).unwrap();
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![0, 2, 4, 6]);
    assert!(out.iter().all(|o| o.1 == 1), "a fresh model per worker: {out:?}");
}

#[test]
fn an_initializer_with_unit_state_prepares_the_process() {
    let _watchdog = pool_support::watchdog();
    fn set_env(key: String, value: String) {
        // SAFETY: the worker is single-threaded while its initializer runs.
        unsafe { std::env::set_var(key, value) };
    }
    fn read_env(key: String) -> Option<String> {
        std::env::var(key).ok()
    }
    let pool = Pool::builder()
        .processes(2)
        .initializer(set_env, ("POOL_INIT".to_string(), "yes".to_string()))
        .build()
        .unwrap();
    let got = pool.map(read_env, vec!["POOL_INIT".to_string(); 8]).unwrap();
    assert!(got.iter().all(|v| v.as_deref() == Some("yes")), "{got:?}");
}
