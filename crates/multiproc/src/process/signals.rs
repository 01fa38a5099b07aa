//! Signals between a program and the processes it runs: workers that leave
//! stopping to their parent, a parent that stops gracefully, and helper
//! programs that die with their owner.
//!
//! A terminal's Ctrl-C sends SIGINT to every process of the foreground
//! group, and a service manager's stop (systemd's default) sends SIGTERM to
//! every process of the service. A program that drains its work on either
//! signal wants its workers to ignore them: the parent stops the workers
//! itself once their work is done (and they still die with it, SIGKILL,
//! if it is killed).

use std::io;
use std::process::{Child, Command};

use crate::sys::imp::signal;

/// Makes this process ignore SIGINT and SIGTERM from now on, so a Ctrl-C or
/// a service manager's SIGTERM meant for the whole group leaves it running
/// until its parent stops it. Call it first thing in a worker whose parent
/// handles those signals, or make it a pool's initializer (SIGKILL still
/// ends the process, and it still dies with its parent).
///
/// # Examples
///
/// ```
/// use multiproc::Process;
/// use std::time::Duration;
///
/// fn worker() {
///     multiproc::process::ignore_stop_signals();
///     // ... serve until the parent says stop ...
/// }
///
/// let mut p = Process::spawn(worker, ()).unwrap();
/// p.join_timeout(Duration::from_secs(30)).unwrap();
/// assert_eq!(p.exitcode(), Some(0));
///
/// // Every worker of this pool ignores them.
/// let pool = multiproc::Pool::builder()
///     .initializer(multiproc::process::ignore_stop_signals, ())
///     .processes(1)
///     .build()
///     .unwrap();
/// # drop(pool);
/// ```
pub fn ignore_stop_signals() {
    signal::ignore_stop_signals();
}

/// Makes the external program `cmd` will start ignore SIGINT and SIGTERM,
/// as [`ignore_stop_signals`] does for a process of ours. Most programs keep
/// an ignored signal ignored (Python does for SIGINT).
///
/// ```
/// // A shell that sends itself SIGTERM lives on to print.
/// let mut cmd = std::process::Command::new("sh");
/// cmd.args(["-c", "kill -TERM $$; echo still here"]);
/// multiproc::process::command_ignores_stop_signals(&mut cmd);
/// assert_eq!(cmd.output().unwrap().stdout, b"still here\n");
/// ```
pub fn command_ignores_stop_signals(cmd: &mut Command) {
    signal::command_ignores_stop_signals(cmd);
}

/// Catches SIGINT and SIGTERM in this process from now on: instead of
/// ending it, they make [`stop_requested`] true, for a main loop that polls
/// it and stops gracefully. Processes started afterwards with `exec` get the
/// default dispositions back.
pub fn catch_stop_signals() {
    signal::catch_stop_signals();
}

/// True once SIGINT or SIGTERM arrived after [`catch_stop_signals`].
///
/// # Examples
///
/// ```
/// multiproc::process::catch_stop_signals();
/// assert!(!multiproc::process::stop_requested());
/// ```
pub fn stop_requested() -> bool {
    signal::stop_requested()
}

/// Sends SIGKILL to the process `pid`: one of your own children (a pid that
/// is not yours may by now belong to any process).
///
/// # Errors
///
/// `pid` is not positive, or the OS refused (no such process, or not ours
/// to signal).
pub fn kill_pid(pid: i32) -> io::Result<()> {
    signal::kill(pid)
}

/// Makes the external program `cmd` will start die (SIGKILL) with the
/// thread that spawns it, as multiproc's own children die with their
/// parent: a helper server (a `redis-server`, say) is not left running when
/// its owner is killed. Linux ties this to the spawning *thread*: spawn
/// from a thread that lives as long as the program should.
///
/// ```no_run
/// let mut cmd = std::process::Command::new("sleep");
/// cmd.arg("60");
/// multiproc::process::kill_command_with_parent(&mut cmd);
/// let _child = cmd.spawn().unwrap();
/// ```
pub fn kill_command_with_parent(cmd: &mut Command) {
    signal::kill_command_with_parent(cmd);
}

/// Starts the external program `cmd` so that it dies (SIGKILL) with this
/// program, from any thread: [`kill_command_with_parent`], with the spawn
/// made on multiproc's launcher thread, which lives as long as the program
/// (a child spawned from a short-lived thread would die with that thread).
///
/// ```no_run
/// let mut cmd = std::process::Command::new("sleep");
/// cmd.arg("60");
/// let _child = multiproc::process::spawn_command_with_parent(cmd).unwrap();
/// ```
///
/// # Errors
///
/// The program could not be started (as [`Command::spawn`]), or the
/// launcher thread could not be started.
pub fn spawn_command_with_parent(mut cmd: Command) -> io::Result<Child> {
    kill_command_with_parent(&mut cmd);
    super::launch::on_launcher_thread(move || cmd.spawn())?
}
