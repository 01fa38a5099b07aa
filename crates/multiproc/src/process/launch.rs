//! Starting a child with each start method.
//!
//! Children are started from one long-lived launcher thread. The kernel's
//! parent-death signal fires when the *thread* that started a child exits, not
//! the process; starting every child from a thread that lives as long as the
//! process makes "the child dies with its parent" mean the parent process.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::bootstrap::{ROLE_ENV, Role};
use super::child::ExitWatch;
use super::forkserver::ForkServerClient;
use super::{ProcessError, StartMethod};
use crate::process_local::ProcessLocal;
use crate::sys::imp::{self, Pid, spawn::SpawnRequest};
use crate::wire::{Channel, Kind, WireError};

/// Environment changes for a child: `Some` sets, `None` removes.
pub(crate) type EnvChanges = Vec<(OsString, Option<OsString>)>;

/// A started child as the parent sees it.
#[derive(Debug)]
pub(crate) struct Launched {
    pub pid: Pid,
    pub exit: ExitWatch,
    /// The channel to the child, with its task already sent.
    pub channel: Channel,
}

/// A child's task: its encoded `Start` message and the descriptors among its
/// arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Task<'a> {
    pub start: &'a [u8],
    pub fds: &'a [OwnedFd],
}

impl Task<'_> {
    /// Sends the task to the child on `channel`.
    fn send(&self, channel: &Channel) -> Result<(), WireError> {
        channel.send(Kind::Start, self.start, self.fds)
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the launcher thread and returns its result.
pub(crate) fn on_launcher_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let boxed: Job = Box::new(move || {
        let _ = done_tx.send(job());
    });
    // The lock is released before the job is queued: a `fork` job must not
    // copy it locked into the child.
    let sender = {
        let mut launcher = LAUNCHER.lock();
        match launcher.as_ref() {
            Some(tx) => tx.clone(),
            None => launcher.insert(start_launcher()?).clone(),
        }
    };
    sender.send(boxed).map_err(|_| io::Error::other("the multiproc launcher thread is gone"))?;
    done_rx.recv().map_err(|_| io::Error::other("the multiproc launcher thread failed"))
}

/// The queue of the launcher thread, started on first use.
static LAUNCHER: ProcessLocal<Option<mpsc::Sender<Job>>> = ProcessLocal::new(|| None);

fn start_launcher() -> io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("multiproc-launcher".into())
        .spawn(move || rx.into_iter().for_each(|job| job()))?;
    Ok(tx)
}

/// Starts a child with `method` running `task`.
pub(crate) fn launch(
    method: StartMethod,
    task: Task<'_>,
    env: &EnvChanges,
    cwd: Option<&Path>,
    exe: Option<&Path>,
) -> Result<Launched, ProcessError> {
    super::bootstrap::keep_linked();
    check_options(env, cwd, exe).map_err(ProcessError::Start)?;
    if method == StartMethod::ForkServer {
        return fork_via_server(task, env, cwd, exe);
    }
    let (ours, theirs) = imp::socketpair().map_err(ProcessError::Start)?;
    let channel = Channel::unix(ours);
    let env = env.clone();
    let cwd = cwd.map(Path::to_path_buf);
    let pid = if method == StartMethod::Spawn {
        let exe = exe.map(Path::to_path_buf);
        on_launcher_thread(move || {
            spawn_exe_at(theirs.as_fd(), Role::Child, exe_environment(&env), cwd.as_deref(), exe.as_deref())
        })
    } else {
        on_launcher_thread(move || fork_here(theirs, &env, cwd.as_deref()))
    };
    let pid = pid.and_then(|r| r).map_err(ProcessError::Start)?;
    // The pidfd is opened before the task is sent: until then the child
    // cannot finish, so it cannot be gone already (a program that ignores
    // SIGCHLD has its children reaped the moment they exit). If it cannot be
    // opened (no descriptor left), the child is killed and reaped: nobody
    // else would, and it would stay a zombie until this program exits.
    let exit = ExitWatch::child(pid).inspect_err(|_| imp::kill_and_reap(pid)).map_err(ProcessError::Start)?;
    match task.send(&channel) {
        // A child that died before reading its task: `join` reports how.
        Ok(()) | Err(WireError::Closed) => Ok(Launched { pid, exit, channel }),
        Err(e) => {
            exit.kill_and_reap();
            Err(e.into())
        }
    }
}

/// Refuses, in the parent and naming the option, what the child could not
/// use: an environment variable name that is empty or holds `=` or NUL (or
/// a value holding NUL), a working directory that is not a directory, an
/// executable that is not there. A forked child would die of them with exit
/// code 1, and a spawned one failed with an OS error naming no path.
fn check_options(env: &EnvChanges, cwd: Option<&Path>, exe: Option<&Path>) -> io::Result<()> {
    let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    for (key, value) in env {
        let bytes = key.as_encoded_bytes();
        if bytes.is_empty() || bytes.contains(&b'=') || bytes.contains(&0) {
            return invalid(format!(
                "environment variable name {key:?} cannot be set: a name is not empty and holds no '=' or NUL byte"
            ));
        }
        if value.as_ref().is_some_and(|v| v.as_encoded_bytes().contains(&0)) {
            return invalid(format!("environment variable {key:?} cannot be set: its value holds a NUL byte"));
        }
    }
    if let Some(dir) = cwd {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return invalid(format!("cannot use {dir:?} as the child's working directory: not a directory")),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot use {dir:?} as the child's working directory: {e}"),
                ));
            }
        }
    }
    // The child enters its directory before it runs the executable, so a
    // relative path is found from there.
    let exe_from_child = exe.map(|exe| cwd.map_or_else(|| exe.to_path_buf(), |dir| dir.join(exe)));
    if let (Some(exe), Some(found)) = (exe, exe_from_child)
        && let Err(e) = std::fs::metadata(found)
    {
        return Err(io::Error::new(e.kind(), format!("cannot run the executable {exe:?}: {e}")));
    }
    Ok(())
}

/// Re-executes this program in `role` with `channel` as its descriptor 3:
/// the one place that builds a re-executed binary's environment. A `Child`
/// or `ForkServer` must be started on the launcher thread (its parent-death
/// signal follows the starting thread).
pub(crate) fn spawn_exe(channel: BorrowedFd<'_>, role: Role, env: &EnvChanges, cwd: Option<&Path>) -> io::Result<Pid> {
    spawn_exe_at(channel, role, exe_environment(env), cwd, None)
}

/// As [`spawn_exe`], with the child's whole environment `vars` already
/// built by [`exe_environment`] (the fork server keeps a copy of its own to
/// compare its children's with), and `exe` run instead of this program.
pub(crate) fn spawn_exe_at(
    channel: BorrowedFd<'_>,
    role: Role,
    vars: Vec<(OsString, OsString)>,
    cwd: Option<&Path>,
    exe: Option<&Path>,
) -> io::Result<Pid> {
    let exe = match exe {
        Some(e) => e.to_path_buf(),
        None => current_exe()?,
    };
    let mut full: Vec<OsString> = vars
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        })
        .collect();
    full.push(format!("{ROLE_ENV}={}:{}", role.name(), imp::getpid()).into());
    imp::spawn::spawn(&SpawnRequest { exe: &exe, env: full, cwd, channel })
}

/// The variable glibc reads its allocator settings from at start-up.
const TUNABLES_ENV: &str = "GLIBC_TUNABLES";

fn current_exe() -> io::Result<PathBuf> {
    // /proc/self/exe names this very binary even if it was moved; fall back to
    // the path std reports.
    let proc_path = PathBuf::from("/proc/self/exe");
    if proc_path.exists() { Ok(proc_path) } else { std::env::current_exe() }
}

/// The environment of a child that runs this program again: this process's
/// with `changes` applied, and (see
/// [`allow_allocator_tuning`](crate::allow_allocator_tuning)) the C
/// allocator's per-thread cache raised, unless the program set its size
/// or `changes` removes `GLIBC_TUNABLES`. A fork server's children are
/// compared with it too, so that theirs is the same as a spawned child's.
pub(crate) fn exe_environment(changes: &EnvChanges) -> Vec<(OsString, OsString)> {
    let mut vars = child_environment(changes);
    let current = vars.iter().find(|(k, _)| k == TUNABLES_ENV).map(|(_, v)| v.as_os_str());
    // Missing though a change names it: the last change removed it.
    let removed = current.is_none() && changes.iter().any(|(k, _)| k == TUNABLES_ENV);
    if crate::allocator::tuning_allowed()
        && !removed
        && let Some(tunables) = imp::malloc::child_tunables(current)
    {
        vars.retain(|(k, _)| k != TUNABLES_ENV);
        vars.push((TUNABLES_ENV.into(), tunables));
    }
    vars
}

/// This process's environment with `changes` applied (without our role token).
fn child_environment(changes: &EnvChanges) -> Vec<(OsString, OsString)> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().filter(|(k, _)| k != ROLE_ENV).collect();
    for (key, value) in changes {
        vars.retain(|(k, _)| k != key);
        if let Some(v) = value {
            vars.push((key.clone(), v.clone()));
        }
    }
    vars
}

/// Set once the fork server found that this system refuses its clones:
/// `ForkServer` children are then started with `Spawn`.
static FORK_SERVER_REFUSED: AtomicBool = AtomicBool::new(false);

/// The fork server, started on first use and restarted if it died.
static FORK_SERVER: ProcessLocal<Option<ForkServerClient>> = ProcessLocal::new(|| None);

fn fork_via_server(
    task: Task<'_>,
    env: &EnvChanges,
    cwd: Option<&Path>,
    exe: Option<&Path>,
) -> Result<Launched, ProcessError> {
    // ORDERING: Relaxed: a hint that only ever turns on.
    if FORK_SERVER_REFUSED.load(Ordering::Relaxed) {
        return launch(StartMethod::Spawn, task, env, cwd, exe);
    }
    let mut server = FORK_SERVER.lock();
    let mut last_error = None;
    for _attempt in 0..2 {
        if !server.as_ref().is_some_and(ForkServerClient::is_alive) {
            if let Some(dead) = server.take() {
                dead.retire();
            }
            let started = on_launcher_thread(ForkServerClient::start).and_then(|r| r);
            let started = started.map_err(ProcessError::Start)?;
            watch_server(&started);
            *server = Some(started);
        }
        let client = server.as_mut().expect("fork server just started");
        let setup = client.setup_for(&exe_environment(env), absolute_dir(cwd).as_deref());
        match client.fork(setup.as_ref(), task) {
            Ok(forked) => {
                let exit = ExitWatch::child_with(forked.pidfd);
                return Ok(Launched { pid: forked.pid, exit, channel: forked.channel });
            }
            Err(WireError::Io(e)) if e.kind() == io::ErrorKind::Unsupported => {
                tracing::debug!("the fork server cannot fork children here ({e}); using spawn");
                // ORDERING: see the load above.
                FORK_SERVER_REFUSED.store(true, Ordering::Relaxed);
                if let Some(useless) = server.take() {
                    useless.stop();
                }
                drop(server);
                return launch(StartMethod::Spawn, task, env, cwd, exe);
            }
            Err(e @ (WireError::Closed | WireError::Io(_))) if server_died(client, &e) => {
                tracing::debug!(pid = client.pid(), "fork server died; restarting it");
                last_error = Some(io::Error::other("the fork server died"));
            }
            // The server did not answer (it is stopped, or hangs): the start
            // failed, not a connection to the child.
            Err(WireError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => return Err(ProcessError::Start(e)),
            Err(e) => return Err(e.into()),
        }
    }
    let error = last_error.unwrap_or_else(|| io::Error::other("the fork server could not start a child"));
    Err(ProcessError::Start(error))
}

/// Reaps the fork server `client` as soon as it dies, from a thread that
/// waits for its exit. Starts find a dead server too, but one served by a
/// spare the server forked before it died does not look at it, so without
/// this a killed server could stay a zombie until a later start (or for
/// good, in a program that starts nothing more). If the thread cannot be
/// started, starts still reap the server when they find it dead.
fn watch_server(client: &ForkServerClient) {
    let (pid, Ok(exit)) = (client.pid(), client.exit_watch()) else { return };
    let watch = move || {
        if !imp::wait_readable(exit.as_fd(), crate::sys::Deadline::NEVER).unwrap_or(false) {
            return;
        }
        let mut server = FORK_SERVER.lock();
        // The same server, dead (not one started since under a pid reused
        // after a start reaped this one).
        if server.as_ref().is_some_and(|c| c.pid() == pid && !c.is_alive())
            && let Some(dead) = server.take()
        {
            tracing::debug!(pid, "fork server died; reaped by its watcher");
            dead.retire();
        }
    };
    if let Err(e) = std::thread::Builder::new().name("multiproc-fs-watch".into()).spawn(watch) {
        tracing::debug!("no thread to watch the fork server ({e}); starts reap it when they find it dead");
    }
}

/// How long a start waits for a fork server whose control socket closed to
/// show its exit.
const DYING_SERVER: Duration = Duration::from_secs(2);

/// Whether the fork server died, given the error its control socket gave. A
/// killed server's socket closes while the kernel tears the process down, a
/// moment before its exit shows on the pidfd; the server closes it in no
/// other way. So after `Closed` wait (briefly) for the exit instead of taking
/// a dying server for a live one and failing the start.
fn server_died(client: &ForkServerClient, error: &WireError) -> bool {
    match error {
        WireError::Closed => client.exited_within(DYING_SERVER),
        _ => !client.is_alive(),
    }
}

/// The child's working directory as an absolute path (relative ones are
/// resolved against ours now, as `Spawn` and `Fork` do; the server's own
/// directory is the one we had when it started).
fn absolute_dir(cwd: Option<&Path>) -> Option<PathBuf> {
    match cwd {
        Some(c) if c.is_relative() => Some(std::env::current_dir().map_or_else(|_| c.to_path_buf(), |d| d.join(c))),
        Some(c) => Some(c.to_path_buf()),
        None => std::env::current_dir().ok(),
    }
}

/// Forks the calling (launcher) thread's process. The child applies the
/// environment changes and working directory, then runs the task sent on
/// `channel`.
fn fork_here(channel: OwnedFd, env: &EnvChanges, cwd: Option<&Path>) -> io::Result<Pid> {
    let parent = imp::getpid();
    let raw = imp::forkserver_sys::raw(channel.as_fd());
    // SAFETY: choosing the `fork` start method is `unsafe` (`StartMethod::fork`):
    // the caller promised that no other thread holds state the child needs;
    // the child rearranges descriptors, forgets the parent's per-process
    // state, runs the task and ends with `_exit`.
    let pid = unsafe {
        imp::spawn::fork(|| {
            imp::forkserver_sys::reset_child_signals();
            imp::forkserver_sys::move_fd(raw, imp::spawn::CHILD_CHANNEL_FD);
            imp::spawn::close_fds_from_except(imp::spawn::CHILD_CHANNEL_FD + 1, &[]);
            imp::die_with_parent(parent);
            // The parent's launcher, fork server, children, arenas, identity,
            // lock-owner watch and shm tracker did not come along.
            crate::process_local::reset_all_in_forked_child();
            apply_changes(env, cwd);
            let fd = imp::adopt_inherited(imp::spawn::CHILD_CHANNEL_FD)
                .unwrap_or_else(|_| super::bootstrap::exit_forked(super::bootstrap::EXIT_FAILED));
            super::bootstrap::child_main(fd, super::bootstrap::Origin::Forked)
        })
    }?;
    drop(channel);
    Ok(pid)
}

/// In a forked child: applies the builder's environment changes and working
/// directory (a failure to enter the directory ends the child with code 1).
fn apply_changes(env: &EnvChanges, cwd: Option<&Path>) {
    for (key, value) in env {
        match value {
            // SAFETY: the forked child is single-threaded.
            Some(v) => unsafe { std::env::set_var(key, v) },
            // SAFETY: as above.
            None => unsafe { std::env::remove_var(key) },
        }
    }
    if let Some(dir) = cwd {
        enter_working_dir(dir);
    }
}

/// In a new forked child: enters `dir`, or ends the child (with `_exit`)
/// with code 1 and a message (the parent's join then reports the exit).
pub(crate) fn enter_working_dir(dir: &Path) {
    if let Err(e) = std::env::set_current_dir(dir) {
        eprintln!("multiproc: cannot enter working directory {dir:?}: {e}");
        super::bootstrap::exit_forked(super::bootstrap::EXIT_FAILED);
    }
}
