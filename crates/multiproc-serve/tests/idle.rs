//! An idle worker sleeps: with no request and nothing to watch, its
//! process does not wake up until a batch comes or its server is gone; nor
//! does the server's thread that supervises it, until a request comes, the
//! worker dies or sends something, or the version stops. A supervisor
//! waiting for its worker to load, or backing off after a crash, sleeps
//! too, until the worker answers or dies, the backoff ends, or the version
//! stops.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Behaviour, Doubler, PATIENCE, Tagged, wait_for};
use multiproc_serve::{ModelSettings, ModelSpec, Request, RestartPolicy, Server, StartMode, WorkerState};

/// Context switches of the thread whose /proc directory is `task` so far
/// (each wake-up from a sleep is one).
fn task_wake_ups(task: &Path) -> u64 {
    let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Context switches of every thread of process `pid` so far.
fn wake_ups(pid: i32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the worker's threads");
    tasks.flatten().map(|task| task_wake_ups(&task.path())).sum()
}

/// The /proc directory of this process's thread named `name`.
fn own_thread(name: &str) -> std::path::PathBuf {
    let tasks = std::fs::read_dir("/proc/self/task").expect("this process's threads");
    tasks
        .flatten()
        .map(|task| task.path())
        .find(|task| std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim() == name))
        .unwrap_or_else(|| panic!("no thread named {name}"))
}

#[test]
fn an_idle_worker_does_not_wake_up() {
    let server = Server::new();
    server.add(ModelSpec::<Doubler>::new("m").version(1, Behaviour::default())).unwrap();
    // Loaded and answered a request; the worker then waits for the next.
    let reply = server.infer::<u64, Tagged>(Request::new("m", 1).timeout(PATIENCE)).unwrap();
    let pid = i32::try_from(reply.output.pid).unwrap();
    // Past the short poll that follows a lone request (see `crate::lone`).
    std::thread::sleep(Duration::from_millis(500));
    let before = wake_ups(pid);
    std::thread::sleep(Duration::from_secs(2));
    let woke = wake_ups(pid) - before;
    // Polling every 100 ms would be about 20; a stray signal or the
    // scheduler may add one or two.
    assert!(woke <= 4, "the idle worker woke up {woke} times in 2 s");
    // Asleep, it still answers at once.
    assert_eq!(server.infer::<u64, Tagged>(Request::new("m", 4).timeout(PATIENCE)).unwrap().output.value, 8);
    server.shutdown();
}

#[test]
fn an_idle_supervisor_thread_does_not_wake_up_yet_sees_its_worker_die_at_once() {
    let server = Server::new();
    let settings = ModelSettings {
        restart: RestartPolicy { initial_backoff: Duration::from_millis(20), ..Default::default() },
        ..Default::default()
    };
    server.add(ModelSpec::<Doubler>::new("sup").version(1, Behaviour::default()).settings(settings)).unwrap();
    let reply = server.infer::<u64, Tagged>(Request::new("sup", 1).timeout(PATIENCE)).unwrap();
    let pid = i32::try_from(reply.output.pid).unwrap();
    // The thread that supervises instance 0 of version 1 of "sup".
    let supervisor = own_thread("serve-sup-v1-0");
    std::thread::sleep(Duration::from_millis(500));
    let before = task_wake_ups(&supervisor);
    std::thread::sleep(Duration::from_secs(2));
    let woke = task_wake_ups(&supervisor) - before;
    // Looking at its worker every 100 ms would be about 20.
    assert!(woke <= 4, "the idle supervisor woke up {woke} times in 2 s");
    // Asleep, it still sees its worker die, and restarts it.
    common::kill(pid);
    let restarted = || {
        let v = server.status().model("sup").unwrap().versions[0].clone();
        v.ready && v.restarts == 1 && v.workers[0].pid.is_some_and(|p| p != pid)
    };
    assert!(wait_for(PATIENCE, restarted), "the worker killed while idle was not restarted");
    let reply = server.infer::<u64, Tagged>(Request::new("sup", 5).timeout(PATIENCE)).unwrap();
    assert_eq!(reply.output.value, 10);
    // And it stops at once when the server shuts down.
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    server.shutdown();
    assert!(start.elapsed() < Duration::from_secs(5), "shutdown took {:?}", start.elapsed());
}

#[test]
fn requests_that_come_to_sleeping_supervisors_wake_as_many_as_they_need() {
    let server = Server::new();
    let settings = ModelSettings { instances: 2, max_batch_size: 1, ..Default::default() };
    let slow = Behaviour { batch_ms: 400, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("pair").version(1, slow).settings(settings)).unwrap();
    // Both supervisors fall asleep (past their wait for a first request).
    std::thread::sleep(Duration::from_millis(500));
    // Two requests at once: each wakes a supervisor of its own, so the two
    // run side by side, one per worker.
    let start = Instant::now();
    let futures: Vec<_> =
        (0..2).map(|x| server.infer_async::<u64, Tagged>(Request::new("pair", x).timeout(PATIENCE))).collect();
    let pids: Vec<u32> = futures.into_iter().map(|f| common::block_on(f, PATIENCE).unwrap().output.pid).collect();
    assert_ne!(pids[0], pids[1], "one worker ran both requests: the other slept on");
    // (Well within the sleep's 10 s backstop: the requests woke them.)
    assert!(start.elapsed() < Duration::from_secs(5), "answered after {:?}", start.elapsed());
    server.shutdown();
}

/// Context switches of this process's thread `name` over `d`.
fn wake_ups_over(name: &str, d: Duration) -> u64 {
    let thread = own_thread(name);
    let before = task_wake_ups(&thread);
    std::thread::sleep(d);
    task_wake_ups(&thread) - before
}

#[test]
fn a_supervisor_backing_off_after_a_crash_does_not_wake_up_yet_an_unload_ends_it_at_once() {
    let server = Server::new();
    let settings = ModelSettings {
        start: StartMode::Lazy,
        restart: RestartPolicy {
            initial_backoff: Duration::from_secs(120),
            max_backoff: Duration::from_secs(120),
            crash_loop_threshold: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let broken = Behaviour { panic_on_load: Some("no weights".into()), ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("bo").version(1, broken).settings(settings)).unwrap();
    // The first request starts the version; its worker panics on load and
    // the request fails (one crash is a crash loop here).
    assert!(server.infer::<u64, Tagged>(Request::new("bo", 1).timeout(PATIENCE)).is_err());
    let backing_off = || server.status().model("bo").unwrap().versions[0].workers[0].state == WorkerState::BackingOff;
    assert!(wait_for(PATIENCE, backing_off), "the worker that panicked on load is not backing off");
    let woke = wake_ups_over("serve-bo-v1-0", Duration::from_secs(2));
    // Looking at its version every 20 ms would be about 100.
    assert!(woke <= 4, "the supervisor backing off woke up {woke} times in 2 s");
    let start = Instant::now();
    server.unload("bo").unwrap();
    assert!(start.elapsed() < Duration::from_secs(10), "unload during a backoff took {:?}", start.elapsed());
    let start = Instant::now();
    server.shutdown();
    assert!(start.elapsed() < Duration::from_secs(10), "shutdown took {:?}", start.elapsed());
}

#[test]
fn a_supervisor_waiting_for_a_slow_load_does_not_wake_up_yet_stops_when_its_version_does() {
    let server = Server::new();
    let settings = ModelSettings {
        start: StartMode::Lazy,
        startup_timeout: Duration::from_secs(120),
        drain_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let slow = Behaviour { load_ms: 120_000, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("sl").version(1, slow).settings(settings)).unwrap();
    // A request starts the version; it waits in the queue while the worker loads.
    let waiting = server.infer_async::<u64, Tagged>(Request::new("sl", 1).timeout(PATIENCE));
    let pid = || server.status().model("sl").unwrap().versions[0].workers[0].pid;
    assert!(wait_for(PATIENCE, || pid().is_some()), "the worker was not spawned");
    let pid = pid().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let woke = wake_ups_over("serve-sl-v1-0", Duration::from_secs(2));
    // Looking at its version every 100 ms would be about 20.
    assert!(woke <= 4, "the supervisor waiting for the load woke up {woke} times in 2 s");
    // The drain cannot finish the queued request: past its timeout the
    // version stops hard, and the supervisor kills the loading worker.
    let start = Instant::now();
    server.unload("sl").unwrap();
    assert!(start.elapsed() < Duration::from_secs(10), "unload during a load took {:?}", start.elapsed());
    assert!(common::block_on(waiting, PATIENCE).is_err());
    assert!(
        wait_for(PATIENCE, || !multiproc_test_support::process_exists(pid)),
        "the loading worker {pid} was left behind"
    );
    server.shutdown();
}
