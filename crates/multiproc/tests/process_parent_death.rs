//! Children die with their parent, also when the parent is SIGKILLed and has
//! no chance to clean up. The parent here is a real separate process: a
//! "middle" child that starts three sleeping grandchildren, reports their
//! pids over a pipe, and is then SIGKILLed by the test.

mod process_support;

use std::time::Duration;

use multiproc::{Connection, Pipe, Process, ProcessError, StartMethod};
use process_support::{JOIN, children_of, is_dead, kill_quietly, serial, stat, wait_until};

fn sleeper() {
    std::thread::sleep(Duration::from_secs(30));
}

/// Starts three sleeping grandchildren with `method`, sends their pids (and
/// their parents' pids), then sleeps until it is killed.
fn middle(method: u8, report: Connection<Vec<(i32, i32)>>) {
    let method = [StartMethod::Spawn, StartMethod::ForkServer, process_support::FORK][usize::from(method)];
    let kids: Vec<Process> =
        (0..3).map(|_| Process::builder().start_method(method).spawn(sleeper, ()).unwrap()).collect();
    let pids = kids
        .iter()
        .map(|k| {
            let pid = k.pid().unwrap();
            (pid, stat(pid).map_or(0, |(_, ppid)| ppid))
        })
        .collect();
    report.send(&pids).unwrap();
    std::thread::sleep(Duration::from_secs(30));
}

fn sigkill_the_middle_and_watch_everything_below_it_die(method: StartMethod) {
    let (ours, theirs) = Pipe::<Vec<(i32, i32)>>::duplex().unwrap();
    let method_index =
        [StartMethod::Spawn, StartMethod::ForkServer, process_support::FORK].iter().position(|m| *m == method).unwrap()
            as u8;
    let mut mid = Process::builder().name("middle").start_method(method).spawn(middle, (method_index, theirs)).unwrap();
    let mid_pid = mid.pid().unwrap();
    let reported = ours.recv_timeout(JOIN).expect("the middle process reports its children");
    assert_eq!(reported.len(), 3);

    // Everything below the middle process: its children, which with the fork
    // server are the grandchildren, the server and the spare it forked ahead.
    for (pid, ppid) in &reported {
        assert!(!is_dead(*pid), "{method:?}: grandchild {pid} is not running");
        assert_eq!(*ppid, mid_pid, "{method:?}: grandchild's parent");
    }
    let mut below = children_of(mid_pid);
    below.sort();
    for (pid, _) in &reported {
        assert!(below.contains(pid), "{method:?}: grandchild {pid} is not listed among {below:?}");
    }
    if method == StartMethod::ForkServer {
        assert!(below.len() >= 4, "the middle's fork server is its child too: {below:?}");
    } else {
        assert_eq!(below.len(), 3, "{method:?}: nothing but the grandchildren: {below:?}");
    }

    mid.kill().unwrap();
    // They are signalled as the parent dies; the bound is for a loaded machine.
    let took = wait_until(Duration::from_secs(5), || below.iter().all(|p| is_dead(*p)));
    let survivors: Vec<i32> = below.iter().copied().filter(|p| !is_dead(*p)).collect();
    for p in &survivors {
        kill_quietly(*p);
    }
    assert!(took.is_some(), "{method:?}: still running 5 s after their parent was SIGKILLed: {survivors:?}");
    eprintln!("{method:?}: {} processes below the killed parent gone after {:?}", below.len(), took.unwrap());

    assert!(matches!(mid.join_timeout(JOIN), Err(ProcessError::Signaled { signal: 9 })));
    assert!(is_dead(mid_pid));
}

#[test]
fn children_die_with_a_sigkilled_parent_spawn() {
    let _serial = serial();
    sigkill_the_middle_and_watch_everything_below_it_die(StartMethod::Spawn);
}

#[test]
fn children_die_with_a_sigkilled_parent_forkserver() {
    let _serial = serial();
    sigkill_the_middle_and_watch_everything_below_it_die(StartMethod::ForkServer);
}

#[test]
fn children_die_with_a_sigkilled_parent_fork() {
    let _serial = serial();
    sigkill_the_middle_and_watch_everything_below_it_die(process_support::FORK);
}
