//! 1,000 spawn/join cycles leave the parent as they found it: the same number
//! of open descriptors, threads and zombie children. (Its own binary with one
//! test, so no other test changes the counts. /dev/shm is shared with the
//! whole machine; `.ci/run` checks it around the whole suite.)

mod process_support;

use std::time::{Duration, Instant};

use multiproc::{Process, StartMethod};
use process_support::{FORK, JOIN, count_fds, count_threads, count_zombie_children};

fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[derive(Debug, PartialEq, Eq)]
struct Counts {
    fds: usize,
    threads: usize,
    zombies: usize,
}

fn counts() -> Counts {
    Counts { fds: count_fds(), threads: count_threads(), zombies: count_zombie_children() }
}

fn cycles(method: StartMethod, n: u64) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let mut p = Process::builder().start_method(method).spawn(add, (i, 1)).unwrap();
        assert_eq!(p.join_timeout(JOIN).unwrap(), i + 1);
        assert_eq!(p.exitcode(), Some(0));
    }
    start.elapsed()
}

#[test]
fn a_thousand_spawn_join_cycles_leak_nothing() {
    // Warm up: the launcher thread and the fork server start on first use.
    for method in [StartMethod::ForkServer, StartMethod::Spawn, FORK] {
        cycles(method, 5);
    }
    let before = counts();
    assert_eq!(before.zombies, 0);

    let took = cycles(StartMethod::ForkServer, 1000);
    eprintln!("1000 ForkServer spawn/join cycles in {took:?} ({:?} each)", took / 1000);
    let after = counts();
    assert_eq!(before.fds, after.fds, "descriptors leaked by ForkServer cycles");
    assert_eq!(before.threads, after.threads, "threads leaked by ForkServer cycles");
    assert_eq!(after.zombies, 0, "zombies left by ForkServer cycles");

    // The other start methods, fewer times (re-execution is slower).
    for method in [StartMethod::Spawn, FORK] {
        let took = cycles(method, 100);
        eprintln!("100 {method:?} spawn/join cycles in {took:?} ({:?} each)", took / 100);
        let now = counts();
        assert_eq!(before.fds, now.fds, "descriptors leaked by {method:?} cycles");
        assert_eq!(before.threads, now.threads, "threads leaked by {method:?} cycles");
        assert_eq!(now.zombies, 0, "zombies left by {method:?} cycles");
    }
}
