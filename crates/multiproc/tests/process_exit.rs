//! How a child ends and what the parent sees: Python's exit codes (0, an
//! explicit code, 1 after a panic, `-N` after signal N), the errors `join`
//! returns, `join_timeout`, `terminate` and `kill`, under every start method.

mod process_support;

use std::time::{Duration, Instant};

use multiproc::{Process, ProcessError, StartMethod};
use process_support::{JOIN, METHODS, serial};

fn nap(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    1
}

fn returns() -> u8 {
    0
}

fn exits_with_3() -> u8 {
    std::process::exit(3)
}

fn panics(what: String) -> u8 {
    panic!("model file {what} not found")
}

fn segfaults() -> u8 {
    // A write to an unmapped page: a real SIGSEGV, not a raised one (std's
    // handler for stack overflows would swallow a raised signal).
    let bad = std::hint::black_box(16usize) as *mut u64;
    // SAFETY: not safe at all: the point is to crash this (child) process.
    unsafe { bad.write_volatile(1) };
    0
}

fn aborts() -> u8 {
    std::process::abort()
}

#[test]
fn a_normal_return_is_exit_code_0() {
    let _serial = serial();
    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(returns, ()).unwrap();
        assert_eq!(p.join_timeout(JOIN).unwrap(), 0);
        assert_eq!(p.exitcode(), Some(0), "{method:?}");
        assert!(!p.is_alive());
    }
}

#[test]
fn an_explicit_exit_is_its_code_and_an_exited_error() {
    let _serial = serial();
    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(exits_with_3, ()).unwrap();
        let err = p.join_timeout(JOIN).unwrap_err();
        assert!(matches!(err, ProcessError::Exited { code: 3 }), "{method:?}: {err:?}");
        assert!(err.to_string().contains("code 3"), "{err}");
        assert_eq!(p.exitcode(), Some(3), "{method:?}");
    }
}

#[test]
fn a_panic_is_exit_code_1_with_message_location_and_backtrace() {
    let _serial = serial();
    for method in METHODS {
        let mut p = Process::builder().name("loader").start_method(method).spawn(panics, ("v2".to_string(),)).unwrap();
        let err = p.join_timeout(JOIN).unwrap_err();
        let panic = err.panic().unwrap_or_else(|| panic!("{method:?}: not a panic: {err:?}")).clone();
        assert_eq!(panic.message, "model file v2 not found");
        let location = panic.location.expect("a location");
        assert!(location.contains("process_exit.rs:"), "{location}");
        assert!(panic.backtrace.contains("panics"), "the backtrace names the function:\n{}", panic.backtrace);
        assert_eq!(panic.process, "loader");
        let shown = err.to_string();
        assert!(shown.contains("model file v2 not found") && shown.contains("loader"), "{shown}");
        assert_eq!(p.exitcode(), Some(1), "{method:?}");
    }
}

#[test]
fn a_segfault_is_minus_11() {
    let _serial = serial();
    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(segfaults, ()).unwrap();
        let err = p.join_timeout(JOIN).unwrap_err();
        assert!(matches!(err, ProcessError::Signaled { signal: 11 }), "{method:?}: {err:?}");
        assert!(err.to_string().contains("SIGSEGV"), "{err}");
        assert_eq!(p.exitcode(), Some(-11), "{method:?}");
    }
}

#[test]
fn an_abort_is_minus_6() {
    let _serial = serial();
    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(aborts, ()).unwrap();
        let err = p.join_timeout(JOIN).unwrap_err();
        assert!(matches!(err, ProcessError::Signaled { signal: 6 }), "{method:?}: {err:?}");
        assert_eq!(p.exitcode(), Some(-6), "{method:?}");
    }
}

#[test]
fn terminate_is_minus_15() {
    let _serial = serial();
    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(nap, (30_000,)).unwrap();
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        p.terminate().unwrap();
        let err = p.join_timeout(JOIN).unwrap_err();
        assert!(matches!(err, ProcessError::Signaled { signal: 15 }), "{method:?}: {err:?}");
        assert!(err.to_string().contains("SIGTERM"), "{err}");
        assert_eq!(p.exitcode(), Some(-15), "{method:?}");
        assert!(!p.is_alive());
    }
}

#[test]
fn kill_is_minus_9() {
    let _serial = serial();
    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(nap, (30_000,)).unwrap();
        p.kill().unwrap();
        let err = p.join_timeout(JOIN).unwrap_err();
        assert!(matches!(err, ProcessError::Signaled { signal: 9 }), "{method:?}: {err:?}");
        assert_eq!(p.exitcode(), Some(-9), "{method:?}");
    }
}

#[test]
fn join_timeout_returns_after_about_t_and_leaves_the_child_running() {
    let _serial = serial();
    let t = Duration::from_millis(300);
    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(nap, (30_000,)).unwrap();
        let start = Instant::now();
        let err = p.join_timeout(t).unwrap_err();
        let took = start.elapsed();
        assert!(err.is_timeout(), "{method:?}: {err:?}");
        assert!(matches!(err, ProcessError::Timeout(d) if d == t));
        // (Upper bound: far above ≈t, for a loaded machine; far below the child's 30 s.)
        assert!(took >= t && took < t + Duration::from_secs(5), "{method:?}: took {took:?}");
        assert!(p.is_alive(), "{method:?}: still running after the timeout");
        assert_eq!(p.exitcode(), None);
        // A second timed join times out again, and the child still answers signals.
        assert!(p.join_timeout(Duration::from_millis(20)).unwrap_err().is_timeout());
        p.terminate().unwrap();
        assert!(matches!(p.join_timeout(JOIN), Err(ProcessError::Signaled { signal: 15 })));
    }
}

#[test]
fn join_timeout_returns_the_value_when_the_child_finishes_in_time() {
    let _serial = serial();
    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(nap, (200,)).unwrap();
        let start = Instant::now();
        assert_eq!(p.join_timeout(JOIN).unwrap(), 1);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "{method:?}: join waited {took:?} for a 200 ms child");
        assert_eq!(p.exitcode(), Some(0));
    }
}

#[test]
fn exit_codes_like_python_seed_003() {
    // exit(1), a normal return, a panic and a terminated process: [1, 0, 1, -15].
    let _serial = serial();
    fn exit_error() -> u8 {
        std::process::exit(1)
    }
    fn raises() -> u8 {
        panic!("There was an error!")
    }
    let mut jobs = [
        Process::builder().name("exit_error").spawn(exit_error, ()).unwrap(),
        Process::builder().name("exit_ok").spawn(returns, ()).unwrap(),
        Process::builder().name("raises").spawn(raises, ()).unwrap(),
        Process::builder().name("terminated").spawn(|| nap(30_000) as u8, ()).unwrap(),
    ];
    jobs[3].terminate().unwrap();
    let codes: Vec<Option<i32>> = jobs
        .iter_mut()
        .map(|j| {
            let _ = j.join_timeout(JOIN);
            j.exitcode()
        })
        .collect();
    assert_eq!(codes, [Some(1), Some(0), Some(1), Some(-15)]);
}

#[test]
fn the_default_method_reports_exits_like_the_others() {
    let _serial = serial();
    assert_eq!(multiproc::get_start_method(), StartMethod::ForkServer);
    let mut p = Process::spawn(exits_with_3, ()).unwrap();
    assert!(matches!(p.join_timeout(JOIN), Err(ProcessError::Exited { code: 3 })));
}

/// Writes to a pipe whose reader is gone; what the write said.
fn writes_to_a_closed_pipe() -> String {
    use std::io::Write;
    let (reader, mut writer) = std::io::pipe().unwrap();
    drop(reader);
    match writer.write_all(b"anyone?") {
        Ok(()) => "written".into(),
        Err(e) => format!("{:?}", e.kind()),
    }
}

#[test]
fn a_write_to_a_closed_pipe_is_an_error_in_the_child_as_in_the_parent() {
    // A Rust program (and a Python child) ignores SIGPIPE: the write fails
    // with BrokenPipe instead of killing the process with signal 13.
    let _serial = serial();
    assert_eq!(writes_to_a_closed_pipe(), "BrokenPipe");
    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(writes_to_a_closed_pipe, ()).unwrap();
        let got = p.join_timeout(JOIN).map_err(|e| e.to_string());
        assert_eq!(got.as_deref(), Ok("BrokenPipe"), "{method:?}");
    }
}

thread_local! {
    /// Catches a panic in its destructor, as cleanup code may.
    static CATCHES_ON_EXIT: std::cell::RefCell<Option<CatchesOnExit>> = const { std::cell::RefCell::new(None) };
}

struct CatchesOnExit;

impl Drop for CatchesOnExit {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| panic!("caught as the thread ends"));
    }
}

/// A thread whose thread-local destructor panics and catches it, after
/// multiproc's own thread-locals are gone (it panicked once before, so they
/// were in use).
fn panic_caught_in_a_thread_local_destructor() -> u8 {
    std::thread::spawn(|| {
        CATCHES_ON_EXIT.with(|c| *c.borrow_mut() = Some(CatchesOnExit));
        let _ = std::panic::catch_unwind(|| panic!("caught while the thread runs"));
    })
    .join()
    .unwrap();
    7
}

#[test]
fn a_panic_caught_in_a_thread_local_destructor_does_not_abort_the_child() {
    let mut p = Process::spawn(panic_caught_in_a_thread_local_destructor, ()).unwrap();
    let got = p.join_timeout(JOIN);
    if got.is_err() {
        let _ = p.kill();
    }
    assert_eq!(got.unwrap(), 7);
}
