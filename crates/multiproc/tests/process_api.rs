//! The `Process` API: builder options, arguments, return values, the `Run`
//! form, identity of parent and child, errors of misuse, under every start
//! method.

mod process_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use multiproc::{
    Connection, Pipe, Process, ProcessError, ProcessInfo, Run, StartMethod, active_children, cpu_count,
    current_process, parent_process,
};
use process_support::{JOIN, METHODS, TempDir};
use serde::{Deserialize, Serialize};

// ---------- arguments: 0, 1, 2 and 8 ----------

fn zero() -> u32 {
    7
}

fn one(x: u64) -> u64 {
    x * x
}

fn two(a: String, b: Vec<u8>) -> String {
    format!("{a}:{}", b.len())
}

#[allow(clippy::too_many_arguments)]
fn eight(a: u8, b: i16, c: u32, d: i64, e: f64, f: bool, g: char, h: String) -> String {
    format!("{a} {b} {c} {d} {e} {f} {g} {h}")
}

#[test]
fn spawn_with_zero_one_two_and_eight_arguments() {
    let _serial = process_support::serial();
    for method in METHODS {
        let b = || Process::builder().start_method(method);
        assert_eq!(b().spawn(zero, ()).unwrap().join_timeout(JOIN).unwrap(), 7, "{method:?}");
        assert_eq!(b().spawn(one, (12u64,)).unwrap().join_timeout(JOIN).unwrap(), 144, "{method:?}");
        let got = b().spawn(two, ("x".to_string(), vec![1u8, 2, 3])).unwrap().join_timeout(JOIN).unwrap();
        assert_eq!(got, "x:3", "{method:?}");
        let args = (1u8, -2i16, 3u32, -4i64, 0.5f64, true, 'z', "eight".to_string());
        let got = b().spawn(eight, args).unwrap().join_timeout(JOIN).unwrap();
        assert_eq!(got, "1 -2 3 -4 0.5 true z eight", "{method:?}");
    }
}

#[test]
fn a_non_capturing_closure_runs_in_the_child() {
    let _serial = process_support::serial();
    let mut p = Process::spawn(|a: i32, b: i32| a - b, (10, 4)).unwrap();
    assert_eq!(p.join_timeout(JOIN).unwrap(), 6);
}

// ---------- return values of several types ----------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    id: u32,
    tags: Vec<String>,
    score: Option<f32>,
}

fn ret_unit() {}
fn ret_string() -> String {
    "héllo".to_string()
}
fn ret_vec() -> Vec<u64> {
    (0..1000).collect()
}
fn ret_struct(id: u32) -> Report {
    Report { id, tags: vec!["a".into(), "b".into()], score: Some(0.25) }
}
fn ret_map() -> BTreeMap<String, i32> {
    [("one".to_string(), 1), ("two".to_string(), 2)].into()
}
fn ret_result(ok: bool) -> Result<u8, String> {
    if ok { Ok(1) } else { Err("no".into()) }
}
fn ret_tuple() -> (i8, Option<bool>, [u16; 3]) {
    (-1, None, [1, 2, 3])
}
fn ret_big() -> Vec<u8> {
    vec![0xAB; 1 << 20]
}

#[test]
fn return_values_of_several_types() {
    let _serial = process_support::serial();
    for method in METHODS {
        let b = || Process::builder().start_method(method);
        b().spawn(ret_unit, ()).unwrap().join_timeout(JOIN).unwrap();
        assert_eq!(b().spawn(ret_string, ()).unwrap().join_timeout(JOIN).unwrap(), "héllo");
        assert_eq!(b().spawn(ret_vec, ()).unwrap().join_timeout(JOIN).unwrap(), (0..1000).collect::<Vec<u64>>());
        assert_eq!(b().spawn(ret_struct, (9,)).unwrap().join_timeout(JOIN).unwrap(), ret_struct(9));
        assert_eq!(b().spawn(ret_map, ()).unwrap().join_timeout(JOIN).unwrap(), ret_map());
        assert_eq!(b().spawn(ret_result, (true,)).unwrap().join_timeout(JOIN).unwrap(), Ok(1));
        assert_eq!(b().spawn(ret_result, (false,)).unwrap().join_timeout(JOIN).unwrap(), Err("no".to_string()));
        assert_eq!(b().spawn(ret_tuple, ()).unwrap().join_timeout(JOIN).unwrap(), (-1, None, [1, 2, 3]));
        let big = b().spawn(ret_big, ()).unwrap().join_timeout(JOIN).unwrap();
        assert!(big.len() == 1 << 20 && big.iter().all(|b| *b == 0xAB), "{method:?}");
    }
}

/// The child makes a pipe, writes into one end and returns the other: the
/// descriptor travels back with the result.
fn ret_connection() -> Connection<String> {
    let (a, b) = Pipe::<String>::duplex().unwrap();
    a.send(&"from the child".to_string()).unwrap();
    b
}

#[test]
fn a_returned_connection_carries_its_descriptor() {
    let _serial = process_support::serial();
    let conn = Process::spawn(ret_connection, ()).unwrap().join_timeout(JOIN).unwrap();
    assert_eq!(conn.recv_timeout(JOIN).unwrap(), "from the child");
}

// ---------- the process-type form ----------

#[derive(Serialize, Deserialize)]
struct Counter {
    start: u64,
    steps: u64,
}

impl Run for Counter {
    type Output = (u64, String);
    fn run(self) -> (u64, String) {
        (self.start + self.steps, current_process().name)
    }
}

#[test]
fn run_trait_form() {
    let _serial = process_support::serial();
    for method in METHODS {
        let mut p =
            Process::builder().name("counter").start_method(method).spawn_run(Counter { start: 40, steps: 2 }).unwrap();
        assert_eq!(p.name(), "counter");
        assert_eq!(p.join_timeout(JOIN).unwrap(), (42, "counter".to_string()), "{method:?}");
        assert_eq!(p.exitcode(), Some(0));
    }
    let mut p = Process::spawn_run(Counter { start: 1, steps: 1 }).unwrap();
    assert_eq!(p.join_timeout(JOIN).unwrap().0, 2);
}

// ---------- builder options ----------

/// `ProcessInfo` as a serde type, to bring it back from a child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Info {
    pid: i32,
    name: String,
    daemon: bool,
}

impl From<ProcessInfo> for Info {
    fn from(p: ProcessInfo) -> Info {
        Info { pid: p.pid, name: p.name, daemon: p.daemon }
    }
}

fn who_am_i() -> (Info, Option<Info>) {
    (current_process().into(), parent_process().map(Info::from))
}

#[test]
fn names_and_identity_of_parent_and_child() {
    let _serial = process_support::serial();
    let me = current_process();
    assert_eq!(me.name, "MainProcess");
    assert_eq!(me.pid as u32, std::process::id());
    assert!(!me.daemon);
    assert!(parent_process().is_none());
    for method in METHODS {
        let mut p = Process::builder().name("worker 1").start_method(method).spawn(who_am_i, ()).unwrap();
        assert_eq!(p.name(), "worker 1");
        let pid = p.pid().unwrap();
        let (child, parent) = p.join_timeout(JOIN).unwrap();
        assert_eq!(child.name, "worker 1", "{method:?}");
        assert_eq!(child.pid, pid, "{method:?}");
        assert_ne!(child.pid, me.pid);
        assert!(!child.daemon);
        let parent = parent.expect("a child has a parent");
        assert_eq!(parent.pid, me.pid, "{method:?}");
        assert_eq!(parent.name, "MainProcess");
    }
}

#[test]
fn default_names_are_process_n() {
    let _serial = process_support::serial();
    let p = Process::spawn(zero, ()).unwrap();
    let q = Process::spawn(zero, ()).unwrap();
    for mut p in [p, q] {
        let n = p.name().strip_prefix("Process-").unwrap_or_else(|| panic!("{}", p.name())).parse::<usize>().unwrap();
        assert!(n >= 1);
        p.join_timeout(JOIN).unwrap();
    }
}

#[test]
fn daemon_flag_is_seen_by_the_child() {
    let _serial = process_support::serial();
    for method in METHODS {
        let mut p = Process::builder().daemon(true).start_method(method).spawn(who_am_i, ()).unwrap();
        assert!(p.daemon());
        assert!(p.join_timeout(JOIN).unwrap().0.daemon, "{method:?}");
    }
    let mut p = Process::spawn(who_am_i, ()).unwrap();
    assert!(!p.daemon());
    assert!(!p.join_timeout(JOIN).unwrap().0.daemon);
}

fn read_env(keys: Vec<String>) -> Vec<Option<String>> {
    keys.iter().map(|k| std::env::var(k).ok()).collect()
}

#[test]
fn environment_override_and_removal_are_seen_by_the_child() {
    let _serial = process_support::serial();
    // PATH and HOME are set for every test run; MULTIPROC_TEST_NEW is not.
    let parent_path = std::env::var("PATH").expect("PATH is set");
    assert!(std::env::var_os("MULTIPROC_TEST_NEW").is_none());
    let keys: Vec<String> = ["MULTIPROC_TEST_NEW", "HOME", "PATH", "MULTIPROC_ROLE"].map(String::from).to_vec();
    for method in METHODS {
        let mut p = Process::builder()
            .start_method(method)
            .env("MULTIPROC_TEST_NEW", "fresh value")
            .env("HOME", "/nonexistent/override")
            .env_remove("PATH")
            .spawn(read_env, (keys.clone(),))
            .unwrap();
        let got = p.join_timeout(JOIN).unwrap();
        assert_eq!(
            got,
            vec![Some("fresh value".to_string()), Some("/nonexistent/override".to_string()), None, None],
            "{method:?}"
        );
        // Without changes the child inherits the parent's environment.
        let mut p = Process::builder().start_method(method).spawn(read_env, (keys.clone(),)).unwrap();
        let got = p.join_timeout(JOIN).unwrap();
        assert_eq!(got[2].as_deref(), Some(parent_path.as_str()), "{method:?}");
        assert_eq!(got[0], None, "{method:?}");
    }
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap()
}

#[test]
fn working_directory_is_seen_by_the_child() {
    let _serial = process_support::serial();
    let dir = TempDir::new("cwd");
    let expected = dir.0.canonicalize().unwrap();
    for method in METHODS {
        let mut p = Process::builder().start_method(method).current_dir(&dir.0).spawn(cwd, ()).unwrap();
        assert_eq!(p.join_timeout(JOIN).unwrap(), expected, "{method:?}");
        // Without the option the child starts where the parent is.
        let mut p = Process::builder().start_method(method).spawn(cwd, ()).unwrap();
        assert_eq!(p.join_timeout(JOIN).unwrap(), std::env::current_dir().unwrap(), "{method:?}");
    }
}

#[test]
fn a_missing_working_directory_fails_the_child_not_the_parent() {
    let _serial = process_support::serial();
    for method in METHODS {
        let result = Process::builder()
            .start_method(method)
            .current_dir("/nonexistent/multiproc/dir")
            .spawn(cwd, ())
            .and_then(|mut p| p.join_timeout(JOIN));
        assert!(result.is_err(), "{method:?}: {result:?}");
    }
}

// ---------- handle state and misuse ----------

#[test]
fn new_then_start_and_the_errors_of_misuse() {
    let _serial = process_support::serial();
    let mut p = Process::new(one, (3u64,)).unwrap();
    assert_eq!(p.pid(), None);
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert!(matches!(p.join_timeout(Duration::from_millis(10)), Err(ProcessError::NotStarted)));
    assert!(matches!(p.join(), Err(ProcessError::NotStarted)));
    assert!(matches!(p.terminate(), Err(ProcessError::NotStarted)));
    assert!(matches!(p.kill(), Err(ProcessError::NotStarted)));
    assert!(ProcessError::NotStarted.to_string().contains("start()"));

    p.start().unwrap();
    assert!(p.pid().unwrap() > 0);
    let again = p.start().unwrap_err();
    assert!(matches!(again, ProcessError::AlreadyStarted), "{again:?}");
    assert!(again.to_string().contains("already started"), "{again}");

    assert_eq!(p.join_timeout(JOIN).unwrap(), 9);
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    let twice = p.join_timeout(JOIN).unwrap_err();
    assert!(matches!(twice, ProcessError::AlreadyJoined), "{twice:?}");
    // Signalling a finished process is harmless.
    p.terminate().unwrap();
    p.kill().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn builder_build_then_start() {
    let _serial = process_support::serial();
    for method in METHODS {
        let mut p = Process::builder().name("built").start_method(method).build(one, (5u64,)).unwrap();
        assert_eq!(p.name(), "built");
        assert!(p.pid().is_none());
        p.start().unwrap();
        assert!(matches!(p.start(), Err(ProcessError::AlreadyStarted)));
        assert_eq!(p.join_timeout(JOIN).unwrap(), 25, "{method:?}");
    }
}

#[test]
fn a_start_that_failed_can_be_tried_again() {
    // As in Python, where a failed start() leaves the process unstarted.
    let dir = TempDir::new("late-cwd");
    let missing = dir.0.join("not-yet");
    let mut p = Process::builder().start_method(StartMethod::Spawn).current_dir(&missing).build(one, (6u64,)).unwrap();
    let failed = p.start().unwrap_err();
    assert!(matches!(failed, ProcessError::Start(_)), "{failed:?}");
    assert_eq!(p.pid(), None);
    std::fs::create_dir(&missing).unwrap();
    p.start().unwrap();
    assert_eq!(p.join_timeout(JOIN).unwrap(), 36);
}

// ---------- daemon children ----------

fn try_to_spawn() -> String {
    match Process::spawn(zero, ()) {
        Ok(mut p) => format!("spawned: {:?}", p.join_timeout(JOIN)),
        Err(e @ ProcessError::DaemonCannotSpawn) => format!("refused: {e}"),
        Err(e) => format!("other error: {e}"),
    }
}

#[test]
fn a_daemon_process_cannot_create_children() {
    let _serial = process_support::serial();
    for method in METHODS {
        let mut p = Process::builder().daemon(true).start_method(method).spawn(try_to_spawn, ()).unwrap();
        let got = p.join_timeout(JOIN).unwrap();
        assert!(got.starts_with("refused: ") && got.contains("daemon"), "{method:?}: {got}");
    }
}

fn spawn_grandchild() -> String {
    let mut p = Process::spawn(who_am_i, ()).unwrap();
    let (child, parent) = p.join_timeout(JOIN).unwrap();
    format!("{}<-{}", child.name, parent.unwrap().name)
}

#[test]
fn a_non_daemon_child_can_create_children() {
    let _serial = process_support::serial();
    for method in METHODS {
        let mut p = Process::builder().name("mid").start_method(method).spawn(spawn_grandchild, ()).unwrap();
        let got = p.join_timeout(JOIN).unwrap();
        // Grandchildren get names derived from their parent's.
        assert!(got.starts_with("mid:") && got.ends_with("<-mid"), "{method:?}: {got}");
    }
}

// ---------- active_children, cpu_count ----------

fn wait_for_word(conn: Connection<String>) -> String {
    conn.recv_timeout(Duration::from_secs(30)).unwrap_or_default()
}

#[test]
fn active_children_lists_running_children_and_reaps_finished_ones() {
    let _serial = process_support::serial();
    for method in METHODS {
        let (ours, theirs) = Pipe::<String>::duplex().unwrap();
        let mut waiting =
            Process::builder().name("waiting").start_method(method).spawn(wait_for_word, (theirs,)).unwrap();
        let mut quick = Process::builder().name("quick").start_method(method).spawn(one, (2u64,)).unwrap();
        let (waiting_pid, quick_pid) = (waiting.pid().unwrap(), quick.pid().unwrap());

        let listed = active_children();
        let entry = listed.iter().find(|c| c.pid == waiting_pid).expect("the waiting child is listed");
        assert_eq!(entry.name, "waiting");

        // The quick child finishes on its own; active_children drops (reaps) it.
        let took = process_support::wait_until(JOIN, || active_children().iter().all(|c| c.pid != quick_pid));
        assert!(took.is_some(), "{method:?}: finished child still listed");
        assert!(active_children().iter().any(|c| c.pid == waiting_pid));
        if method != StartMethod::ForkServer {
            // Our own child: reaped by active_children, so not a zombie.
            assert_eq!(process_support::stat(quick_pid), None, "{method:?}: finished child not reaped");
        }
        // Its value is still there for join.
        assert_eq!(quick.join_timeout(JOIN).unwrap(), 4);

        ours.send(&"go".to_string()).unwrap();
        assert_eq!(waiting.join_timeout(JOIN).unwrap(), "go");
        assert!(active_children().iter().all(|c| c.pid != waiting_pid));
    }
}

#[test]
fn cpu_count_matches_the_cpus_we_may_use() {
    let _serial = process_support::serial();
    let n = cpu_count();
    assert!(n >= 1);
    assert_eq!(n, std::thread::available_parallelism().unwrap().get());
    // A child sees the same count.
    let mut p = Process::spawn(cpu_count, ()).unwrap();
    assert_eq!(p.join_timeout(JOIN).unwrap(), n);
}

#[test]
fn the_default_start_method_is_forkserver() {
    let _serial = process_support::serial();
    assert_eq!(multiproc::get_start_method(), StartMethod::ForkServer);
    assert_eq!(StartMethod::default(), StartMethod::ForkServer);
}

// ---------- large arguments ----------

fn checksum(data: Vec<u8>, text: String) -> (usize, u64, usize) {
    (data.len(), data.iter().map(|b| u64::from(*b)).sum(), text.len())
}

#[test]
fn large_arguments_reach_the_child_whole() {
    let _serial = process_support::serial();
    let data: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 251) as u8).collect();
    let sum: u64 = data.iter().map(|b| u64::from(*b)).sum();
    let text = "x".repeat(100_000);
    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(checksum, (data.clone(), text.clone())).unwrap();
        assert_eq!(p.join_timeout(JOIN).unwrap(), (2 << 20, sum, 100_000), "{method:?}");
    }
}
