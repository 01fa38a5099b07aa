//! A fork server that is stopped (SIGSTOP) makes a `ForkServer` start fail
//! within seconds with an error that says so, instead of waiting 30 s for
//! an answer; once continued, the same server starts children again. (Its
//! own binary: the test stops this process's one fork server, which no
//! other test may share.)

mod process_support;

use std::time::{Duration, Instant};

use multiproc::{Process, StartMethod};
use process_support::{JOIN, fork_server_pid, stat, wait_until};

fn seven() -> u32 {
    7
}

/// Continues the server when dropped, so that a failed test leaves no
/// stopped process behind (a stopped server would not see that we exited).
struct ContinueOnDrop(i32);

impl Drop for ContinueOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our child.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

fn start() -> Result<Process<u32>, multiproc::ProcessError> {
    Process::builder().start_method(StartMethod::ForkServer).spawn(seven, ())
}

/// Far below the 30 s a start waited before, and far above the server's
/// one second of grace.
const FAST: Duration = Duration::from_secs(10);

#[test]
fn a_start_with_a_stopped_fork_server_fails_fast_then_works_once_it_is_continued() {
    let server = fork_server_pid();
    let cont = ContinueOnDrop(server);
    // SAFETY: as in `ContinueOnDrop::drop`.
    assert_eq!(unsafe { libc::kill(server, libc::SIGSTOP) }, 0);
    assert!(wait_until(JOIN, || matches!(stat(server), Some(('T', _)))).is_some(), "the server did not stop");

    // Spares the server forked before it stopped may serve the first starts.
    let mut started = Vec::new();
    let mut failure = None;
    for _ in 0..4 {
        let t = Instant::now();
        match start() {
            Ok(p) => started.push(p),
            Err(e) => {
                failure = Some((e, t.elapsed()));
                break;
            }
        }
    }
    let (error, took) = failure.expect("a start failed once the spares ran out");
    assert!(took < FAST, "the start took {took:?} to give up on the stopped server");
    assert!(matches!(error, multiproc::ProcessError::Start(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("stopped") && message.contains(&server.to_string()), "{message}");

    drop(cont);
    let mut p = start().expect("a start after the server was continued");
    assert_eq!(p.join_timeout(JOIN).unwrap(), 7);
    assert_eq!(fork_server_pid(), server, "the same server serves again");
    for mut p in started {
        assert_eq!(p.join_timeout(JOIN).unwrap(), 7);
    }
}
