//! Signals, parent-death notification and process identity.

use std::io;

/// A process id.
pub(crate) type Pid = i32;

/// This process's id.
pub(crate) fn getpid() -> Pid {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// The parent's process id (0 if the parent is gone and no reaper adopted us).
pub(crate) fn getppid() -> Pid {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get())
}

/// Kills our unreaped child `pid` and reaps it, waiting for it to end at
/// most [`super::pidfd::KILL_WAIT`] (then it is left unreaped, and a warning
/// says so). A child's pid cannot be reused before it is reaped, so this
/// cannot hit another process. (For a child without a pidfd: it is polled.)
pub(crate) fn kill_and_reap(pid: Pid) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let until = std::time::Instant::now() + super::pidfd::KILL_WAIT;
    let mut pause = std::time::Duration::from_micros(50);
    loop {
        match rustix::process::waitpid(rustix::process::Pid::from_raw(pid), rustix::process::WaitOptions::NOHANG) {
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            // Reaped, or not ours to reap (someone else did).
            Ok(Some(_)) | Err(_) => return,
        }
        if std::time::Instant::now() >= until {
            tracing::warn!("killed child {pid} did not end within {:?}; it is left unreaped", super::pidfd::KILL_WAIT);
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(10));
    }
}

/// Waits for our child `pid` to exit and reaps it (retrying on EINTR).
pub(crate) fn wait_exit(pid: Pid) {
    while let Err(rustix::io::Errno::INTR) =
        rustix::process::waitpid(rustix::process::Pid::from_raw(pid), rustix::process::WaitOptions::empty())
    {}
}

/// SIGTERM.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
/// SIGKILL.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;

/// True for the signals that other processes send to end one (kill(1) and
/// the OOM killer's SIGKILL, a service manager's SIGTERM, a terminal's
/// SIGINT and SIGHUP), as opposed to those a process usually brings on
/// itself (SIGABRT, SIGSEGV, SIGBUS, ...). A hint only: the wait status does
/// not say who sent the signal.
pub(crate) fn usually_sent_from_outside(signal: i32) -> bool {
    matches!(signal, libc::SIGKILL | libc::SIGTERM | libc::SIGINT | libc::SIGHUP)
}

/// Arranges for SIGKILL when the parent dies, then checks that the parent is
/// still `expected_parent`; if it already died, exits at once.
pub(crate) fn die_with_parent(expected_parent: Pid) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers; no memory is touched.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    if getppid() != expected_parent {
        // SAFETY: _exit is async-signal-safe and ends the process at once.
        unsafe { libc::_exit(1) };
    }
}

/// Makes the program that `cmd` starts receive SIGKILL when the thread that
/// spawns it ends (`PR_SET_PDEATHSIG`, set between fork and exec); if the
/// parent died before that (the signal would never come), the child exits
/// before it runs the program.
pub(crate) fn kill_command_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = getpid();
    // SAFETY: between fork and exec the closure calls only prctl, getppid
    // and _exit, which are async-signal-safe, take plain integers and
    // allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Ignores SIGINT and SIGTERM in this process from now on (the
/// dispositions are inherited by children and survive `exec`). signal(2)
/// only fails for a signal that cannot be ignored (SIGKILL, SIGSTOP) or
/// does not exist, so this cannot fail.
pub(crate) fn ignore_stop_signals() {
    ignore_sigint();
    // SAFETY: installing SIG_IGN touches no memory of ours.
    let old = unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    debug_assert_ne!(old, libc::SIG_ERR);
}

/// Ignores SIGINT in this process from now on; true if it was ignored
/// already (as in a program started in the background by a shell).
pub(crate) fn ignore_sigint() -> bool {
    // SAFETY: installing SIG_IGN touches no memory of ours.
    let old = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    debug_assert_ne!(old, libc::SIG_ERR);
    old == libc::SIG_IGN
}

/// Gives SIGINT its default action back (async-signal-safe: for a freshly
/// forked child).
pub(crate) fn default_sigint() {
    // SAFETY: signal(2) only changes a disposition, and is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
}

/// Makes the program that `cmd` starts ignore SIGINT and SIGTERM (set
/// between fork and exec; an ignored signal stays ignored across `exec`).
pub(crate) fn command_ignores_stop_signals(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure calls only signal(2), which
    // is async-signal-safe, takes plain integers and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM] {
                if libc::signal(sig, libc::SIG_IGN) == libc::SIG_ERR {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Set by [`on_stop_signal`].
static STOP_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The handler of SIGINT and SIGTERM once caught: it only stores to an
/// atomic, which is async-signal-safe.
extern "C" fn on_stop_signal(_: libc::c_int) {
    // ORDERING: Relaxed: the flag is polled; nothing else is published with it.
    STOP_REQUESTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Catches SIGINT and SIGTERM from now on: they set the flag that
/// [`stop_requested`] reads instead of ending the process (cannot fail, as
/// for [`ignore_stop_signals`]).
pub(crate) fn catch_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_stop_signal` is an `extern "C" fn(c_int)` that only
        // stores to an atomic; installing it with signal(2) is sound.
        let old = unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
        debug_assert_ne!(old, libc::SIG_ERR);
    }
}

/// True once a caught SIGINT or SIGTERM arrived.
pub(crate) fn stop_requested() -> bool {
    // ORDERING: see `on_stop_signal`.
    STOP_REQUESTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sends SIGKILL to the one process `pid` (not a group: `pid` must be > 0).
pub(crate) fn kill(pid: Pid) -> io::Result<()> {
    let Some(target) = rustix::process::Pid::from_raw(pid.max(0)) else {
        let message = format!("{pid} is not the id of one process");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    };
    Ok(rustix::process::kill_process(target, rustix::process::Signal::KILL)?)
}

/// Ignores SIGPIPE, as Rust's runtime does before `main`: a write to a pipe
/// or socket whose reader left then fails with `BrokenPipe` instead of
/// killing the process.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: signal(2) only changes this process's disposition of SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Registers `handler` to run at normal process exit (`atexit`).
pub(crate) fn at_exit(handler: extern "C" fn()) {
    // SAFETY: `handler` is a plain extern "C" function taking no arguments.
    unsafe { libc::atexit(handler) };
}

/// Ends the process at once with `code`: no `atexit` handlers, no library
/// destructors, no flushing of C stdio buffers.
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it ends the process without
    // returning, so no Rust state can be observed half-torn-down.
    unsafe { libc::_exit(code) }
}

/// A short name of a signal, for messages ("SIGKILL").
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// Number of threads of this process (for leak checks).
#[allow(dead_code, reason = "leak-check helper; integration tests read /proc themselves")]
pub(crate) fn count_threads() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Number of zombie children of this process (for leak checks).
#[allow(dead_code, reason = "leak-check helper; integration tests read /proc themselves")]
pub(crate) fn count_zombie_children() -> io::Result<usize> {
    let me = getpid();
    Ok(super::proc::all_processes()?.iter().filter(|(_, s)| s.state == b'Z' && s.ppid == me).count())
}
