//! At normal exit a process terminates its daemon children and joins the
//! others (Python's rule), leaving no zombies. The exiting process is a real
//! child ("middle") that starts a daemon and a non-daemon grandchild and
//! returns at once.

mod process_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use multiproc::{Connection, Pipe, Process, StartMethod};
use process_support::{JOIN, METHODS, TempDir, count_zombie_children, is_dead, kill_quietly, serial, stat};

/// The daemon: would write its file after 30 s, if it were not terminated.
fn daemon_work(path: PathBuf) {
    std::thread::sleep(Duration::from_secs(30));
    std::fs::write(path, "daemon finished").unwrap();
}

/// The non-daemon worker: writes its file after a short nap.
fn worker(path: PathBuf) {
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(path, "worker finished").unwrap();
}

fn middle(method: u8, dir: PathBuf, report: Connection<(i32, i32)>) {
    let method = [StartMethod::Spawn, StartMethod::ForkServer, process_support::FORK][usize::from(method)];
    let d = Process::builder()
        .name("daemon")
        .daemon(true)
        .start_method(method)
        .spawn(daemon_work, (dir.join("daemon"),))
        .unwrap();
    let w = Process::builder().name("worker").start_method(method).spawn(worker, (dir.join("worker"),)).unwrap();
    report.send(&(d.pid().unwrap(), w.pid().unwrap())).unwrap();
    // Returns without joining either: the exit handler must deal with them.
}

#[test]
fn daemons_are_terminated_and_others_joined_at_normal_exit() {
    let _serial = serial();
    for (index, method) in METHODS.iter().enumerate() {
        let dir = TempDir::new("daemon-exit");
        let (ours, theirs) = Pipe::<(i32, i32)>::duplex().unwrap();
        let start = Instant::now();
        let mut mid = Process::builder().name("middle").spawn(middle, (index as u8, dir.0.clone(), theirs)).unwrap();
        let (daemon, worker) = ours.recv_timeout(JOIN).expect("the middle process reports its children");
        let result = mid.join_timeout(JOIN);
        let took = start.elapsed();
        if result.is_err() {
            kill_quietly(daemon);
            kill_quietly(worker);
        }
        result.unwrap_or_else(|e| panic!("{method:?}: the middle process failed: {e}"));
        assert_eq!(mid.exitcode(), Some(0));

        // The worker was joined: its file is there, written before the middle exited.
        assert_eq!(
            std::fs::read_to_string(dir.0.join("worker")).ok().as_deref(),
            Some("worker finished"),
            "{method:?}: the non-daemon child was not joined"
        );
        // The daemon was terminated, not waited for (it would take 30 s).
        assert!(took < Duration::from_secs(10), "{method:?}: exit took {took:?}: the daemon was waited for");
        assert!(took >= Duration::from_millis(300), "{method:?}: exit took {took:?}: the worker was not waited for");
        assert!(!dir.0.join("daemon").exists(), "{method:?}: the daemon ran to the end");
        // Both were reaped by the middle process before it exited: gone, not zombies.
        assert_eq!(stat(daemon), None, "{method:?}: the daemon is still there");
        assert_eq!(stat(worker), None, "{method:?}: the worker is still there");
        assert!(is_dead(daemon) && is_dead(worker));
        assert_eq!(count_zombie_children(), 0, "{method:?}: zombies of ours");
    }
}

/// A daemon that ignores SIGTERM (as pool workers built with
/// `ignore_stop_signals` do), and says so on `ready`: would write its file
/// after 30 s.
fn stubborn_daemon(path: PathBuf, ready: Connection<()>) {
    multiproc::process::ignore_stop_signals();
    ready.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(30));
    std::fs::write(path, "stubborn daemon finished").unwrap();
}

fn middle_with_a_stubborn_daemon(dir: PathBuf, report: Connection<i32>) {
    let (ready, theirs) = Pipe::<()>::duplex().unwrap();
    let d =
        Process::builder().name("stubborn").daemon(true).spawn(stubborn_daemon, (dir.join("daemon"), theirs)).unwrap();
    // Its SIGTERM comes only once it ignores it.
    ready.recv_timeout(JOIN).unwrap();
    report.send(&d.pid().unwrap()).unwrap();
}

#[test]
fn a_daemon_that_ignores_sigterm_is_killed_at_exit_rather_than_waited_for() {
    let _serial = serial();
    let dir = TempDir::new("stubborn-daemon-exit");
    let (ours, theirs) = Pipe::<i32>::duplex().unwrap();
    let start = Instant::now();
    let mut mid =
        Process::builder().name("middle").spawn(middle_with_a_stubborn_daemon, (dir.0.clone(), theirs)).unwrap();
    let daemon = ours.recv_timeout(JOIN).expect("the middle process reports its daemon");
    let result = mid.join_timeout(JOIN);
    let took = start.elapsed();
    if result.is_err() {
        kill_quietly(daemon);
    }
    result.unwrap_or_else(|e| panic!("the middle process did not exit: {e}"));
    assert_eq!(mid.exitcode(), Some(0));
    // Killed after the grace the exit gives a daemon (1 s), not waited for.
    assert!(took >= Duration::from_secs(1), "exit took {took:?}: the daemon did not ignore its SIGTERM");
    assert!(took < Duration::from_secs(10), "exit took {took:?}: the daemon was waited for");
    assert!(!dir.0.join("daemon").exists(), "the daemon ran to the end");
    assert_eq!(stat(daemon), None, "the daemon is still there");
    assert_eq!(count_zombie_children(), 0, "zombies of ours");
}
