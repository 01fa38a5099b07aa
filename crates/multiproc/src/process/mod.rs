//! Processes that run Rust functions: start methods, the child bootstrap, the
//! `Process` handle and exit status (its options are in `builder`).

pub(crate) mod bootstrap;
mod builder;
mod child;
mod error;
pub(crate) mod forkserver;
pub(crate) mod identity;
pub(crate) mod launch;
mod output;
pub(crate) mod protocol;
mod signals;
pub(crate) mod task;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use builder::{ProcessBuilder, Run};
pub use error::{ProcessError, RemotePanic};
pub use identity::{ProcessInfo, cpu_count, current_process, parent_process};
pub use output::ChildOutput;
pub use signals::{
    catch_stop_signals, command_ignores_stop_signals, ignore_stop_signals, kill_command_with_parent, kill_pid,
    spawn_command_with_parent, stop_requested,
};
pub(crate) use task::EntryRef;
pub use task::{RemoteFn, Task, build_id};

use crate::log::lifecycle;
use crate::sys::Deadline;
use crate::sys::imp;
use crate::wire::{self, Channel, Encoded, Kind, RecvError};
use child::ChildShared;
use protocol::{Reply, Start};

/// How a child process is created.
///
/// Measured on a 2-core Linux VM (`cargo run --release -p multiproc-bench --
/// --only spawn_join`): `ForkServer` starts and joins a child in about a
/// tenth of the time `Spawn` takes, so it is the default.
///
/// `Spawn` and `ForkServer` are safe in any program. `Fork` can only be made
/// with the `unsafe` [`StartMethod::fork`], whose contract the caller keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMethod {
    /// Re-execute the program; the child runs only the function (never `main`).
    Spawn,
    /// Ask a fork server — a clean, single-threaded copy of the program started
    /// once by re-execution — to fork the child. Fast and safe. The child is
    /// still this program's own (its parent pid is ours, we reap it), and a
    /// `fork`ed child ends as Python's do: without the exit handlers of the
    /// image it was forked from. If the fork server dies, it is reaped at
    /// once (a thread waits for its exit) and the next start restarts it;
    /// the children it forked run on. (Up to two starts right after its
    /// death may still be served by children it forked ahead of time.)
    #[default]
    ForkServer,
    /// Fork the parent itself (made only by the `unsafe` [`StartMethod::fork`];
    /// see its contract). The child ends with `_exit`, without running the
    /// parent's exit handlers, as Python's forked children do.
    Fork(ForkContract),
}

/// The caller's promise that makes [`StartMethod::Fork`] sound; only the
/// `unsafe` [`StartMethod::fork`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ForkContract(());

impl StartMethod {
    /// The `fork` start method: the child is a copy of the whole parent,
    /// made by `fork(2)` from the library's launcher thread, and runs the
    /// task on that copy.
    ///
    /// # Safety
    ///
    /// `fork` copies memory but only the forking thread. Every lock that
    /// another thread of the parent holds at that moment stays locked for
    /// ever in the child, and data another thread was changing stays half
    /// changed; the child's task (and the library's code in the child) may
    /// touch either. So the caller promises that, whenever a child is started
    /// with this method, **no thread of the program other than the one
    /// calling `start`/`spawn` (and the library's launcher thread, which does
    /// the fork) is running code that holds a lock or changes shared state
    /// the child will use** — in practice: no other thread of yours, and no
    /// thread of another library (an async runtime, a `tracing` subscriber's
    /// writer, …) runs while `Fork` children start. The library's own
    /// threads (the launcher, a `Pool`'s scheduler, the lock owner watch)
    /// are allowed: a forked child resets their per-process state and never
    /// touches the rest. When that cannot be promised, use
    /// [`StartMethod::ForkServer`] (the default), which is as fast and safe.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Process, StartMethod};
    ///
    /// fn double(x: u32) -> u32 { x * 2 }
    ///
    /// // SAFETY: this doctest's program runs no other thread while it forks.
    /// let fork = unsafe { StartMethod::fork() };
    /// let mut p = Process::builder().start_method(fork).spawn(double, (21,)).unwrap();
    /// assert_eq!(p.join().unwrap(), 42);
    /// ```
    pub const unsafe fn fork() -> StartMethod {
        StartMethod::Fork(ForkContract(()))
    }
}

static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

/// Sets the start method used when a builder does not choose one.
pub fn set_start_method(method: StartMethod) {
    let code = match method {
        StartMethod::Spawn => 1,
        StartMethod::ForkServer => 2,
        StartMethod::Fork(_) => 3,
    };
    DEFAULT_METHOD.store(code, Ordering::Relaxed);
}

/// The start method used when a builder does not choose one.
pub fn get_start_method() -> StartMethod {
    match DEFAULT_METHOD.load(Ordering::Relaxed) {
        1 => StartMethod::Spawn,
        // The contract was promised by whoever set `Fork` (only `fork()` makes one).
        3 => StartMethod::Fork(ForkContract(())),
        _ => StartMethod::ForkServer,
    }
}

/// A handle to a child process running a Rust function that returns `R`.
///
/// # Examples
///
/// ```
/// use multiproc::Process;
///
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// let mut p = Process::builder().name("adder").spawn(add, (2, 3)).unwrap();
/// assert_eq!(p.join().unwrap(), 5);
/// assert_eq!(p.exitcode(), Some(0));
/// ```
#[derive(Debug)]
pub struct Process<R = ()> {
    config: ProcessBuilder,
    name: String,
    task: Option<(EntryRef, Encoded)>,
    running: Option<Running>,
    _result: PhantomData<fn() -> R>,
}

#[derive(Debug)]
struct Running {
    child: Arc<ChildShared>,
    channel: Channel,
    reply: ReplyState,
    /// The child's redirected standard streams, if any.
    outputs: output::Outputs,
}

#[derive(Debug)]
enum ReplyState {
    Waiting,
    Got(Reply, Vec<std::os::fd::OwnedFd>),
    /// The channel closed without a reply.
    None,
    Taken,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

impl Process<()> {
    /// Options for a new process.
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::default()
    }
}

impl<R: Serialize + DeserializeOwned> Process<R> {
    /// Starts a process running `f(args…)` with default options.
    ///
    /// # Errors
    ///
    /// As for [`ProcessBuilder::spawn`].
    pub fn spawn<F, A>(f: F, args: A) -> Result<Process<R>, ProcessError>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned,
    {
        ProcessBuilder::default().spawn(f, args)
    }

    /// Prepares a process running `f(args…)` without starting it (Python's
    /// `Process(target=f, args=…)`); call [`Process::start`].
    ///
    /// # Errors
    ///
    /// The arguments could not be serialized.
    pub fn new<F, A>(f: F, args: A) -> Result<Process<R>, ProcessError>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned,
    {
        ProcessBuilder::default().build(f, args)
    }

    fn unstarted(config: ProcessBuilder, entry: EntryRef, args: Encoded) -> Process<R> {
        let name = config.name.clone().unwrap_or_else(|| default_name(NEXT_ID.fetch_add(1, Ordering::Relaxed)));
        Process { config, name, task: Some((entry, args)), running: None, _result: PhantomData }
    }

    /// Starts the child.
    ///
    /// # Errors
    ///
    /// [`ProcessError::AlreadyStarted`] on a second call,
    /// [`ProcessError::DaemonCannotSpawn`] inside a daemon process, or the OS
    /// error that stopped the start.
    pub fn start(&mut self) -> Result<(), ProcessError> {
        let (entry, args) = self.task.as_mut().ok_or(ProcessError::AlreadyStarted)?;
        let method = self.config.method_to_use()?;
        if identity::is_daemon() {
            return Err(ProcessError::DaemonCannotSpawn);
        }
        let (outputs, ends) =
            output::Outputs::open(&self.name, self.config.stdout, self.config.stderr).map_err(ProcessError::Start)?;
        // The write ends travel after the task's own descriptors; ours close
        // below. A start that fails keeps the task, to be tried again (Python).
        let own = args.fds.len();
        args.fds.extend(ends.fds);
        let me = current_process();
        let mut start = Start {
            build_id: imp::build_id::build_id().to_string(),
            name: self.name.clone(),
            daemon: self.config.daemon,
            parent_pid: me.pid,
            parent_name: me.name,
            entry: *entry,
            args: std::mem::take(&mut args.bytes),
            log: crate::log::state_for_child(),
            stdio: ends.bits,
        };
        let (env, cwd, exe) = (&self.config.env, self.config.cwd.as_deref(), self.config.executable.as_deref());
        let launched = wire::encode(&start).map_err(ProcessError::from).and_then(|encoded| {
            launch::launch(method, launch::Task { start: &encoded.bytes, fds: &args.fds }, env, cwd, exe)
        });
        args.fds.truncate(own);
        args.bytes = std::mem::take(&mut start.args);
        let launched = match launched {
            Ok(launched) => launched,
            Err(e) => {
                outputs.close_unused();
                return Err(e);
            }
        };
        self.task = None;
        let child = ChildShared::register(launched.pid, self.name.clone(), self.config.daemon, launched.exit);
        lifecycle!(DEBUG, "started child {} (pid {}) with {method:?}", self.name, launched.pid);
        self.running = Some(Running { child, channel: launched.channel, reply: ReplyState::Waiting, outputs });
        Ok(())
    }

    /// Readable once the started child has exited (for `connection::wait`).
    pub(crate) fn exit_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.running.as_ref().map(|r| r.child.exit_fd())
    }

    /// What the child wrote to its standard output, when the builder asked
    /// for [`ChildOutput::Capture`]: all of it once `join` returned, what
    /// arrived so far before. `None` for an inherited or prefixed stream, or
    /// before `start`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{ChildOutput, Process};
    ///
    /// fn hello() { println!("hello from the child"); }
    ///
    /// let mut p = Process::builder().stdout(ChildOutput::Capture).spawn(hello, ()).unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.captured_stdout().unwrap(), b"hello from the child\n");
    /// ```
    pub fn captured_stdout(&self) -> Option<Vec<u8>> {
        self.running.as_ref().and_then(|r| r.outputs.stdout())
    }

    /// What the child wrote to its standard error, when captured; see
    /// [`Process::captured_stdout`].
    pub fn captured_stderr(&self) -> Option<Vec<u8>> {
        self.running.as_ref().and_then(|r| r.outputs.stderr())
    }

    /// The process id, once started.
    pub fn pid(&self) -> Option<i32> {
        self.running.as_ref().map(|r| r.child.pid)
    }

    /// The process name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process is a daemon.
    pub fn daemon(&self) -> bool {
        self.config.daemon
    }

    /// True from `start` until the child exits.
    pub fn is_alive(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.child.exit_code().is_none())
    }

    /// Python's exit code: `None` while running (or before start, or if the
    /// status was lost: SIGCHLD ignored), 0 after a normal return, the code
    /// of an explicit `exit`, 1 after a panic, `-N` after signal N.
    pub fn exitcode(&self) -> Option<i32> {
        self.running.as_ref().and_then(|r| r.child.exitcode())
    }

    /// Asks the child to stop with SIGTERM (exit code −15). Does not wait. A
    /// child that has already exited is left alone (`Ok`).
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`] before `start`; [`ProcessError::Signal`]
    /// if the OS refused the signal.
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.signal(imp::SIGTERM)
    }

    /// Kills the child with SIGKILL (exit code −9). Does not wait. A child
    /// that has already exited is left alone (`Ok`).
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`] before `start`; [`ProcessError::Signal`]
    /// if the OS refused the signal.
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.signal(imp::SIGKILL)
    }

    fn signal(&self, signal: i32) -> Result<(), ProcessError> {
        let running = self.running.as_ref().ok_or(ProcessError::NotStarted)?;
        // A child that is already gone is not an error (the OS layer says Ok).
        running.child.signal(signal).map_err(|source| ProcessError::Signal { signal, source })
    }

    /// Waits for the child to finish and returns the function's value.
    ///
    /// # Errors
    ///
    /// The child panicked, exited early, was killed, or refused the task; see
    /// [`ProcessError`]. A second `join` returns [`ProcessError::AlreadyJoined`].
    pub fn join(&mut self) -> Result<R, ProcessError> {
        self.join_until(Deadline::NEVER, Duration::MAX)
    }

    /// As [`Process::join`], but gives up after `timeout` with
    /// [`ProcessError::Timeout`], leaving the child running.
    ///
    /// # Errors
    ///
    /// As for [`Process::join`], plus [`ProcessError::Timeout`].
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R, ProcessError> {
        self.join_until(Deadline::after(timeout), timeout)
    }

    fn join_until(&mut self, deadline: Deadline, timeout: Duration) -> Result<R, ProcessError> {
        let running = self.running.as_mut().ok_or(ProcessError::NotStarted)?;
        running.collect_reply(deadline, timeout)?;
        let code = running.child.wait(deadline).ok_or(ProcessError::Timeout(timeout))?;
        running.outputs.drain(deadline);
        child::forget(running.child.pid);
        match std::mem::replace(&mut running.reply, ReplyState::Taken) {
            ReplyState::Got(reply, fds) => reply_to_result(reply, fds),
            ReplyState::None | ReplyState::Waiting => Err(ProcessError::from_exit(code)),
            ReplyState::Taken => Err(ProcessError::AlreadyJoined),
        }
    }
}

/// How long `join` waits for the child's exit alone before it also wakes for
/// the reply (see `collect_reply`).
const EXIT_FIRST: Duration = Duration::from_millis(2);

impl Running {
    /// Waits for the child's reply, or its exit, or the deadline.
    fn collect_reply(&mut self, deadline: Deadline, timeout: Duration) -> Result<(), ProcessError> {
        if !matches!(self.reply, ReplyState::Waiting) {
            return Ok(());
        }
        // Wait for the exit alone first: a reply frame fits the socket buffer
        // (payloads over 64 KiB travel in shared memory), so it is there by
        // the time the child has exited, and the parent wakes once instead of
        // twice. A child still running after a moment may be blocked sending
        // on a small socket buffer, so from then on either wakes us.
        let exited = imp::wait_readable(self.child.exit_fd(), deadline.at_most(EXIT_FIRST)).unwrap_or(false);
        let got = if exited {
            // Gone: its reply, if it sent one, is buffered.
            self.channel.try_recv().ok().flatten()
        } else {
            match self.channel.recv(deadline, Some(self.child.exit_fd())) {
                Ok(frame) => Some(frame),
                // Exited: a reply it sent just before may still be buffered.
                Err(RecvError::WatchReady) => self.channel.try_recv().ok().flatten(),
                Err(RecvError::Timeout) => return Err(ProcessError::Timeout(timeout)),
                Err(RecvError::Wire(_)) => None,
            }
        };
        self.reply = match got {
            Some(frame) if frame.kind == Kind::Reply => match wire::decode::<Reply>(&frame.payload, Vec::new()) {
                Ok(reply) => ReplyState::Got(reply, frame.fds),
                Err(e) => ReplyState::Got(Reply::Failed(e.to_string()), Vec::new()),
            },
            _ => ReplyState::None,
        };
        Ok(())
    }
}

fn reply_to_result<R: DeserializeOwned>(reply: Reply, fds: Vec<std::os::fd::OwnedFd>) -> Result<R, ProcessError> {
    match reply {
        Reply::Value(bytes) => Ok(wire::decode(&bytes, fds)?),
        Reply::Panicked(p) => Err(ProcessError::Panicked(p)),
        Reply::Failed(message) => Err(ProcessError::Failed(message)),
        Reply::Refused { child_build_id } => {
            Err(ProcessError::BuildMismatch { parent: imp::build_id::build_id().to_string(), child: child_build_id })
        }
    }
}

impl Process<()> {
    /// Starts a process that calls [`Run::run`] on `value`, with default options.
    ///
    /// # Errors
    ///
    /// As for [`ProcessBuilder::spawn`].
    pub fn spawn_run<T: Run>(value: T) -> Result<Process<T::Output>, ProcessError> {
        ProcessBuilder::default().spawn_run(value)
    }
}

fn default_name(n: usize) -> String {
    let me = identity::current_name();
    if me == "MainProcess" { format!("Process-{n}") } else { format!("{me}:{n}") }
}

/// The children of this process that are still running. Finished children are
/// reaped as a side effect, as in Python.
///
/// # Examples
///
/// ```
/// assert!(multiproc::active_children().iter().all(|c| c.pid > 0));
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    child::active().iter().map(|c| ProcessInfo { pid: c.pid, name: c.name.clone(), daemon: c.daemon }).collect()
}
