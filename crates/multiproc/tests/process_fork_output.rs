//! Children started with the fork method while the library's own thread
//! copies another child's prefixed output to this process's stdout: that
//! copy holds no lock a forked child needs. (It wrote under std's stdout
//! lock, and a child forked while the lock was held inherited it held for
//! ever: its first `println!`, or the flush at its end, never returned.)
//! Runs alone in its binary, as the fork method requires.

mod process_support;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use multiproc::{ChildOutput, Process};
use process_support::{FORK, JOIN};

/// Prints lines as fast as it can, for at most a minute.
fn chatter() {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        println!("chatter chatter chatter chatter chatter chatter chatter chatter");
    }
}

fn hello() {
    println!("a forked child");
}

/// Forks `forks` children while a prefixed chatterer runs; the number that
/// did not end within their bound. Its stdout goes to /dev/null (the
/// chatter would flood the test's output).
fn fork_while_prefixing(forks: u32) -> u32 {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    // SAFETY: dup2 replaces descriptor 1 of this process (a child of the
    // test) with /dev/null; `null` stays owned and is closed on drop.
    assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), 1) }, 1);
    let mut chatty = Process::builder().name("chatty").stdout(ChildOutput::Prefix).spawn(chatter, ()).unwrap();
    let mut stuck = 0;
    for _ in 0..forks {
        let mut child = Process::builder().name("forked").start_method(FORK).spawn(hello, ()).unwrap();
        if child.join_timeout(Duration::from_secs(5)).is_err() {
            stuck += 1;
            let _ = child.kill();
            let _ = child.join_timeout(JOIN);
        }
    }
    let _ = chatty.kill();
    let _ = chatty.join_timeout(JOIN);
    stuck
}

#[test]
fn children_forked_while_prefixed_output_is_copied_do_not_hang() {
    let mut middle = Process::builder().name("middle").spawn(fork_while_prefixing, (300u32,)).unwrap();
    let stuck = middle.join_timeout(Duration::from_secs(300)).unwrap_or_else(|e| {
        let _ = middle.kill();
        panic!("the middle process did not end: {e}")
    });
    assert_eq!(stuck, 0, "forked children that hung");
}
