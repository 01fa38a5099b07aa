//! A pool that cannot replace a worker for a while (its fork server is
//! stopped, SIGSTOP) fails the tasks meanwhile instead of leaving them to
//! wait, and takes tasks again once workers can be started; before, a few
//! seconds of failed starts broke it for good. (Its own binary: the test
//! stops this process's one fork server, which no other test may share.)

mod pool_support;
#[path = "process_support/mod.rs"]
mod process_support;

use std::time::{Duration, Instant};

use multiproc::{Pool, Process, StartMethod};
use pool_support::{WAIT, square, watchdog};
use process_support::{fork_server_pid, stat, wait_until};

fn pid() -> i32 {
    std::process::id() as i32
}

fn seven() -> u32 {
    7
}

/// Continues the server when dropped, so that a failed test leaves no
/// stopped process behind.
struct ContinueOnDrop(i32);

impl Drop for ContinueOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our child.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn a_pool_that_could_not_start_workers_for_a_while_takes_tasks_again() {
    let _w = watchdog();
    let server = fork_server_pid();
    let pool = Pool::builder().processes(1).start_method(StartMethod::ForkServer).build().unwrap();
    let worker = pool.apply(pid, ()).unwrap();

    let cont = ContinueOnDrop(server);
    // SAFETY: as in `ContinueOnDrop::drop`.
    assert_eq!(unsafe { libc::kill(server, libc::SIGSTOP) }, 0);
    assert!(wait_until(WAIT, || matches!(stat(server), Some(('T', _)))).is_some(), "the server did not stop");
    // Use up the spares forked before the stop: then no start can succeed.
    let mut started = Vec::new();
    while let Ok(p) = Process::builder().start_method(StartMethod::ForkServer).spawn(seven, ()) {
        started.push(p);
        assert!(started.len() < 8, "starts keep succeeding with the fork server stopped");
    }
    // SAFETY: kill(2) on our pool's worker.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    // A task now fails (no worker can be started) rather than waiting.
    let mut r = pool.apply_async(square, (3,));
    let got = r.get_timeout(WAIT);
    assert!(got.is_err(), "a task ran with no worker startable: {got:?}");
    let message = got.unwrap_err().to_string();
    assert!(message.contains("could not be started") && message.contains("stopped"), "{message}");

    drop(cont);
    // Once the server is continued, a worker starts and tasks run again.
    let t = Instant::now();
    let mut last = String::new();
    let ok = wait_until(WAIT, || match pool.apply_async(square, (4,)).get_timeout(Duration::from_secs(5)) {
        Ok(v) => v == 16,
        Err(e) => {
            last = e.to_string();
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(ok.is_some(), "the pool still fails tasks {:?} after the server was continued: {last}", t.elapsed());
    for mut p in started {
        assert_eq!(p.join_timeout(WAIT).unwrap(), 7);
    }
    pool.close();
    pool.join_timeout(WAIT).unwrap();
}
