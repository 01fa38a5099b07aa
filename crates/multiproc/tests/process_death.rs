//! Children that do not die the easy way: one that ignores SIGTERM, one
//! whose own child (forked behind the library's back, holding every
//! descriptor it had) outlives it. `join_timeout` keeps its bound, and the
//! parent learns the outcome as soon as the child itself is gone.

mod process_support;

use std::time::{Duration, Instant};

use multiproc::{Connection, Pipe, Process, ProcessError};
use process_support::{JOIN, METHODS, serial};

/// Bound for "at once" on a loaded machine.
const SOON: Duration = Duration::from_secs(5);

/// Ignores SIGTERM, says so, then sleeps 20 s.
fn deaf_to_sigterm(conn: Connection<u32>) -> u32 {
    // SAFETY: sets a signal disposition to SIG_IGN, nothing else.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    conn.send(&1).unwrap();
    std::thread::sleep(Duration::from_secs(20));
    2
}

#[test]
fn terminate_leaves_a_child_that_ignores_sigterm_running_and_kill_ends_it() {
    let _serial = serial();
    for method in METHODS {
        let (ours, theirs) = Pipe::<u32>::duplex().unwrap();
        let mut p = Process::builder().start_method(method).spawn(deaf_to_sigterm, (theirs,)).unwrap();
        assert_eq!(ours.recv_timeout(JOIN).unwrap(), 1, "{method:?}");
        p.terminate().unwrap();
        let t = Instant::now();
        let err = p.join_timeout(Duration::from_millis(300)).unwrap_err();
        assert!(err.is_timeout(), "{method:?}: {err:?}");
        assert!(t.elapsed() < SOON, "{method:?}: join_timeout took {:?}", t.elapsed());
        assert!(p.is_alive(), "{method:?}: SIGTERM was ignored");
        assert_eq!(p.exitcode(), None);
        p.kill().unwrap();
        let t = Instant::now();
        assert!(matches!(p.join_timeout(JOIN), Err(ProcessError::Signaled { signal: 9 })), "{method:?}");
        assert!(t.elapsed() < SOON, "{method:?}: join after kill took {:?}", t.elapsed());
        assert_eq!(p.exitcode(), Some(-9));
        // Both are harmless once it is gone.
        let _ = p.terminate();
        let _ = p.kill();
    }
}

/// Forks a grandchild that sleeps 20 s with every descriptor of this child,
/// sends its pid, then returns 7 or waits to be killed.
fn fork_a_long_lived_grandchild(conn: Connection<i32>, then_wait: bool) -> u32 {
    // SAFETY: the grandchild only sleeps and _exits (async-signal-safe).
    let grandchild = unsafe { libc::fork() };
    if grandchild == 0 {
        // SAFETY: as above.
        unsafe {
            libc::sleep(20);
            libc::_exit(0);
        }
    }
    conn.send(&grandchild).unwrap();
    if then_wait {
        std::thread::sleep(Duration::from_secs(20));
    }
    7
}

fn kill(pid: i32) {
    // SAFETY: kill(2) on a pid we were sent by our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[test]
fn a_grandchild_holding_the_childs_descriptors_does_not_delay_join() {
    let _serial = serial();
    for method in METHODS {
        for killed in [false, true] {
            let (ours, theirs) = Pipe::<i32>::duplex().unwrap();
            let mut p =
                Process::builder().start_method(method).spawn(fork_a_long_lived_grandchild, (theirs, killed)).unwrap();
            let grandchild = ours.recv_timeout(JOIN).unwrap();
            if killed {
                p.kill().unwrap();
            }
            let t = Instant::now();
            let got = p.join_timeout(JOIN);
            let took = t.elapsed();
            kill(grandchild);
            if killed {
                assert!(matches!(got, Err(ProcessError::Signaled { signal: 9 })), "{method:?}: {got:?}");
            } else {
                assert_eq!(got.unwrap(), 7, "{method:?}");
            }
            assert!(took < SOON, "{method:?}, killed {killed}: join took {took:?} while the grandchild lived");
        }
    }
}

/// Says it is about to return, then returns `len` bytes of 0xA5.
fn return_large(conn: Connection<i32>, len: usize) -> serde_bytes::ByteBuf {
    conn.send(&0).unwrap();
    serde_bytes::ByteBuf::from(vec![0xA5u8; len])
}

#[test]
fn a_child_killed_while_returning_a_large_value_is_a_death_not_a_torn_value() {
    let _serial = serial();
    // The fork server and its spares live for the process: start them first.
    for method in METHODS {
        let (ours, theirs) = Pipe::<i32>::duplex().unwrap();
        let mut p = Process::builder().start_method(method).spawn(return_large, (theirs, 1)).unwrap();
        ours.recv_timeout(JOIN).unwrap();
        assert_eq!(p.join_timeout(JOIN).unwrap().len(), 1);
    }
    let fds = process_support::count_fds();
    let (mut whole, mut killed) = (0, 0);
    for round in 0..16u64 {
        let method = METHODS[round as usize % METHODS.len()];
        let len = 16 << 20;
        let (ours, theirs) = Pipe::<i32>::duplex().unwrap();
        let mut p = Process::builder().start_method(method).spawn(return_large, (theirs, len)).unwrap();
        ours.recv_timeout(JOIN).unwrap();
        std::thread::sleep(Duration::from_millis(round * 6));
        let _ = p.kill();
        let t = Instant::now();
        match p.join_timeout(JOIN) {
            Ok(v) => {
                assert_eq!(v.len(), len, "{method:?}");
                assert!(v.iter().all(|&b| b == 0xA5), "{method:?}: a torn value");
                whole += 1;
            }
            Err(ProcessError::Signaled { signal: 9 }) => killed += 1,
            Err(e) => panic!("{method:?}, round {round}: {e}"),
        }
        assert!(t.elapsed() < SOON, "{method:?}: join took {:?}", t.elapsed());
    }
    eprintln!("{whole} values whole, {killed} children killed first");
    assert_eq!(process_support::count_fds(), fds, "descriptors after killed children");
}
