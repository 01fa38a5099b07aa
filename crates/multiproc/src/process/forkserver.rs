//! The fork server: a clean, single-threaded copy of the program, started by
//! re-execution before `main` ran, that forks children on request. Forking it
//! is fast (it is small) and safe (it has one thread), unlike forking a
//! multi-threaded parent.
//!
//! The server forks each child as a *sibling* (`CLONE_PARENT`): the child's
//! parent is the program, which reaps it through a pidfd like a child it
//! started itself, so its exit reaches the program directly.
//!
//! The program keeps *spares* coming: children forked ahead of time that wait
//! on their channels. Starting a process takes the oldest spare, asks the
//! server for another without waiting for the answer (which is read when
//! that spare is needed, two starts later), and sends the spare its task
//! (and, if they differ from the server's, its environment and directory).
//! The fork (~100 µs on a 2-core VM) so happens while children run, off the
//! start-up path.
//!
//! The server first moves the program's relocated read-only data (its
//! `PT_GNU_RELRO` segment: vtables and other tables of pointers, which the
//! dynamic loader writes at start, about 0.8 MiB in a program linking an
//! async runtime and an ONNX engine) into a sealed memory file mapped at
//! the same place. Private pages are copied into every fork and freed again
//! at every exit, on the path of `join`; a shared file mapping is neither.
//!
//! Protocol on the control socket: the program sends a `SpareRequest` with
//! the spare's end of its channel; the server forks and replies
//! `Ready { pid }`. When the control socket closes (the program exited or
//! died), the server exits. On its channel, a spare first sends a
//! `SpareHello` with a pidfd it opened for itself (so the program can reap it
//! even if the server died before replying), then waits for its task.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::bootstrap;
use super::launch::Task;
use super::protocol::{ForkRequest, SpareHello, SpareReply, SpareRequest};
use crate::log::lifecycle;
use crate::sys::Deadline;
use crate::sys::imp::{self, Pid, forkserver_sys::SiblingFork, pidfd::Pidfd, spawn::CHILD_CHANNEL_FD};
use crate::wire::{self, Channel, Kind, RecvError, WireError};

/// The fork server's main loop. Never returns.
pub(crate) fn serve(control: OwnedFd) -> ! {
    // Computed once here, inherited by every child instead of recomputed.
    let _ = imp::build_id::build_id();
    // Shared, not copied into each child (a speed-up only: on failure the
    // pages stay private).
    let _ = imp::relro::share_program_relro();
    // As Python's fork server: a terminal's Ctrl-C reaches every process of
    // the program's group and is for the program. Its children get the
    // program's handling of SIGINT back (see `fork_spare`).
    let sigint_ignored = imp::signal::ignore_sigint();
    let server = Server {
        control: Channel::unix(control),
        sibling: SiblingFork::prepare(),
        program: imp::getppid(),
        sigint_ignored,
    };
    loop {
        // Sleeps until a request comes (a blocking receive could poll).
        let _ = imp::wait_readable(server.control.as_fd(), Deadline::NEVER);
        loop {
            match server.control.recv(Deadline::after(Duration::ZERO), None) {
                Ok(frame) => server.handle(&frame.payload, frame.fds),
                Err(RecvError::Timeout) => break,
                // The program is gone; its children are its own.
                Err(_) => std::process::exit(0),
            }
        }
    }
}

struct Server {
    control: Channel,
    /// How to fork siblings, or why this system cannot.
    sibling: io::Result<SiblingFork>,
    /// The program that started the server: the parent of every child.
    program: Pid,
    /// The program ignores SIGINT (then so do its children).
    sigint_ignored: bool,
}

impl Server {
    fn handle(&self, payload: &[u8], mut fds: Vec<OwnedFd>) {
        let reply = match (wire::decode::<SpareRequest>(payload, Vec::new()), fds.pop(), &self.sibling) {
            (Err(e), _, _) => SpareReply::Failed(format!("bad spare request: {e}")),
            (_, None, _) => SpareReply::Failed("spare request without the child's channel".to_string()),
            (_, _, Err(e)) => SpareReply::Unsupported(format!("cannot fork children for the program here: {e}")),
            (Ok(SpareRequest), Some(channel), Ok(sibling)) => match self.fork_spare(sibling, channel) {
                Ok(pid) => SpareReply::Ready { pid },
                // A kernel or sandbox (seccomp) that refuses this kind of clone.
                Err(e) if imp::forkserver_sys::is_refusal(&e) => {
                    SpareReply::Unsupported(format!("cannot fork children for the program here: {e}"))
                }
                Err(e) => SpareReply::Failed(format!("fork failed: {e}")),
            },
        };
        if let Ok(encoded) = wire::encode(&reply)
            && self.control.send(Kind::Control, &encoded.bytes, &[]).is_err()
        {
            std::process::exit(0);
        }
    }

    /// Forks a spare that will find `channel` as its descriptor 3. The
    /// server's signal state is the one it was started with, the program's,
    /// but for SIGINT: the spare ignores it too until it is handed its task
    /// (a Ctrl-C is not for spares), then has it as the program has.
    fn fork_spare(&self, sibling: &SiblingFork, channel: OwnedFd) -> io::Result<Pid> {
        // The request comes as the program hands a task to an earlier spare,
        // which it wakes right after us; when both wait for the same CPU, the
        // child whose exit the program waits for should run first, and the
        // fork (not needed before the start after next) later. Measured on
        // 2 vCPUs: 245 -> 218 µs per start + join.
        std::thread::yield_now();
        let keep = channel.as_raw_fd();
        let (program, sigint_ignored) = (self.program, self.sigint_ignored);
        // SAFETY: the fork server is single-threaded and holds no locks here;
        // `sibling` was prepared in this process.
        unsafe {
            sibling.fork(|| {
                imp::forkserver_sys::move_fd(keep, CHILD_CHANNEL_FD);
                imp::spawn::close_fds_from_except(CHILD_CHANNEL_FD + 1, &[]);
                imp::die_with_parent(program);
                let channel = imp::adopt_inherited(CHILD_CHANNEL_FD)
                    .unwrap_or_else(|_| bootstrap::exit_forked(bootstrap::EXIT_FAILED));
                spare_main(Channel::unix(channel), sigint_ignored)
            })
        }
    }
}

/// A spare child: waits on its channel for the parent's first message, which
/// is either the environment to take (then the task) or the task itself.
/// Once that comes, SIGINT is given back its default action unless the
/// program ignores it (`sigint_ignored`).
fn spare_main(channel: Channel, sigint_ignored: bool) -> ! {
    bootstrap::prepare_forked_child();
    let greeted = Pidfd::open(imp::getpid())
        .map_err(WireError::from)
        .and_then(|me| channel.send(Kind::Control, &wire::encode(&SpareHello)?.bytes, &[me.into_fd()]));
    if greeted.is_err() {
        bootstrap::exit_forked(0); // the parent is gone
    }
    let first = match channel.recv(Deadline::NEVER, None) {
        Ok(f) => f,
        Err(_) => bootstrap::exit_forked(0), // the parent dropped the spare unused
    };
    if !sigint_ignored {
        imp::signal::default_sigint();
    }
    let start = if first.kind == Kind::Control {
        let Ok(req) = wire::decode::<ForkRequest>(&first.payload, Vec::new()) else {
            bootstrap::exit_forked(bootstrap::EXIT_FAILED)
        };
        apply_environment(&req);
        None
    } else {
        Some(first)
    };
    bootstrap::run_child(channel, start, bootstrap::Origin::Forked)
}

/// Makes this process's environment equal to the requested one, touching
/// only the variables that differ (usually none: the spare was forked from a
/// server that started with the parent's environment).
fn apply_environment(req: &ForkRequest) {
    if let Some(env) = &req.env {
        set_environment(env);
    }
    if let Some(dir) = req.cwd.as_deref().map(OsStr::from_bytes) {
        super::launch::enter_working_dir(std::path::Path::new(dir));
    }
}

fn set_environment(env: &[(Vec<u8>, Vec<u8>)]) {
    let wanted: HashMap<&[u8], &[u8]> = env.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    for (key, value) in std::env::vars_os() {
        match wanted.get(key.as_bytes()) {
            Some(v) if *v == value.as_bytes() => {}
            // SAFETY: the forked child is single-threaded.
            Some(v) => unsafe { std::env::set_var(&key, OsStr::from_bytes(v)) },
            // SAFETY: as above.
            None => unsafe { std::env::remove_var(&key) },
        }
    }
    for (k, v) in env {
        if std::env::var_os(OsStr::from_bytes(k)).is_none() {
            // SAFETY: as above.
            unsafe { std::env::set_var(OsStr::from_bytes(k), OsStr::from_bytes(v)) };
        }
    }
}

/// A spare child in the program's hand: its pid, the pidfd it greeted us
/// with, and the channel on which it waits for its task.
#[derive(Debug)]
struct Spare {
    pid: Pid,
    pidfd: Pidfd,
    channel: Channel,
}

impl Spare {
    /// Sends the spare its environment (if it differs from the server's) and
    /// its task.
    fn send(&self, setup: Option<&ForkRequest>, task: Task<'_>) -> Result<(), WireError> {
        if let Some(req) = setup {
            self.channel.send(Kind::Control, &wire::encode(req)?.bytes, &[])?;
        }
        self.channel.send(Kind::Start, task.start, task.fds)
    }
}

/// Spares asked for ahead of need: with two, the server has a whole start to
/// fork each one, so its fork never delays the start that needs it.
/// Measured on 2 vCPUs (with the server's yield): 256 µs per start + join
/// with one ahead, 204 with two, 195 with three.
const SPARES_AHEAD: usize = 2;
/// How long a start waits for the server's reply at most.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may stay stopped before a start gives up on it (a
/// brief stop, such as a profiler's, is waited out).
const STOPPED_GRACE: Duration = Duration::from_secs(1);
/// How often a start waiting for the server's reply checks whether the
/// server is stopped.
const STOPPED_POLL: Duration = Duration::from_millis(100);

/// How long a start waits at most for a spare the server reported forked to
/// greet it.
const GREETING_TIMEOUT: Duration = Duration::from_secs(30);

/// The pidfd a spare sends first on its channel; `None` if the channel ends
/// (or the deadline passes) first.
fn greeting(channel: &Channel, deadline: Deadline) -> Option<Pidfd> {
    let frame = channel.recv(deadline, None).ok()?;
    hello_pidfd(frame)
}

fn hello_pidfd(frame: wire::Frame) -> Option<Pidfd> {
    wire::decode::<SpareHello>(&frame.payload, Vec::new()).ok()?;
    frame.fds.into_iter().next().map(Pidfd::from_fd)
}

/// The greeting of spare `pid`, waiting at most [`GREETING_TIMEOUT`];
/// `None` at once if the spare is stopped (SIGSTOP, SIGTSTP, a debugger):
/// a stopped spare neither greets nor runs a task until it is continued, and
/// another spare serves as well.
fn spare_greeting(channel: &Channel, pid: Pid) -> Option<Pidfd> {
    recv_watching(channel, pid, GREETING_TIMEOUT, Duration::ZERO).ok().and_then(hello_pidfd)
}

/// Why [`recv_watching`] returned no frame.
#[derive(Debug)]
enum Watched {
    /// The channel failed or ended.
    Wire(WireError),
    /// Nothing came before the timeout.
    TimedOut,
    /// The sender stayed stopped for the grace.
    Stopped,
}

/// The next frame on `channel`, sent by process `pid`, waiting at most
/// `timeout`; checks every [`STOPPED_POLL`] whether `pid` is stopped
/// (SIGSTOP, SIGTSTP, a debugger), as a stopped process sends nothing until
/// it is continued, and gives up once it has stayed stopped for `grace`
/// (at its first check for `Duration::ZERO`). A stop that ends within the
/// grace is waited out.
fn recv_watching(channel: &Channel, pid: Pid, timeout: Duration, grace: Duration) -> Result<wire::Frame, Watched> {
    let deadline = Deadline::after(timeout);
    let mut stopped_since = None;
    loop {
        match channel.recv(deadline.at_most(STOPPED_POLL), None) {
            Ok(frame) => return Ok(frame),
            Err(RecvError::Wire(e)) => return Err(Watched::Wire(e)),
            Err(_) if deadline.expired() => return Err(Watched::TimedOut),
            Err(_) => {}
        }
        if !is_stopped(pid) {
            stopped_since = None;
        } else if stopped_since.get_or_insert_with(Instant::now).elapsed() >= grace {
            return Err(Watched::Stopped);
        }
    }
}

/// True if process `pid` is stopped (job control or a tracer).
fn is_stopped(pid: Pid) -> bool {
    matches!(imp::proc::lookup(pid as u32), imp::proc::Lookup::Found(s) if s.is_stopped())
}

/// Kills and reaps the spares asked for on `asked` once their server is gone
/// or going: a spare the server forked greets us on its channel whether or
/// not the server lived to report it; a channel whose request died with the
/// server ends at once.
fn reap_spares(asked: impl IntoIterator<Item = OwnedFd>) {
    for channel in asked {
        if let Some(pidfd) = greeting(&Channel::unix(channel), Deadline::after(Duration::from_secs(5))) {
            pidfd.kill_and_reap();
        }
    }
}

/// A child forked by the server: ours to reap.
#[derive(Debug)]
pub(crate) struct Forked {
    pub pid: Pid,
    pub pidfd: Pidfd,
    pub channel: Channel,
}

/// Program side: a running fork server.
#[derive(Debug)]
pub(crate) struct ForkServerClient {
    control: Channel,
    pid: Pid,
    pidfd: Pidfd,
    /// The environment and working directory the server (and so every
    /// spare) started with.
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    /// Our ends of the channels of the spares asked for and not yet taken,
    /// oldest first (the server answers in order).
    asked: VecDeque<OwnedFd>,
    /// A socket pair made ahead for the next request (off the start-up path).
    next_pair: Option<(OwnedFd, OwnedFd)>,
}

impl ForkServerClient {
    /// Starts a fork server (from the launcher thread) and asks it for the
    /// first spare.
    pub(crate) fn start() -> io::Result<ForkServerClient> {
        let (ours, theirs) = imp::socketpair()?;
        let env = super::launch::exe_environment(&Vec::new());
        let cwd = std::env::current_dir().ok();
        // Started with that very environment: built once, so that the copy
        // kept is what the server got.
        let role = super::bootstrap::Role::ForkServer;
        let pid = super::launch::spawn_exe_at(theirs.as_fd(), role, env.clone(), None, None)?;
        drop(theirs);
        // From here on a failure ends the server (and any spare it forked)
        // and reaps it: it is our child, and no one else would.
        let pidfd = Pidfd::open(pid).inspect_err(|_| imp::kill_and_reap(pid))?;
        let control = Channel::unix(ours);
        let mut client = ForkServerClient { control, pid, pidfd, env, cwd, asked: VecDeque::new(), next_pair: None };
        if let Err(e) = client.ask_for_spare() {
            client.stop();
            return Err(io::Error::other(e));
        }
        Ok(client)
    }

    /// What a spare must change to become a child with environment `env` in
    /// directory `cwd`; `None` if nothing (the common case).
    pub(crate) fn setup_for(&self, env: &[(OsString, OsString)], cwd: Option<&Path>) -> Option<ForkRequest> {
        let env = (self.env != env)
            .then(|| env.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect());
        let cwd = cwd.filter(|c| self.cwd.as_deref() != Some(*c)).map(|c| c.as_os_str().as_bytes().to_vec());
        (env.is_some() || cwd.is_some()).then_some(ForkRequest { env, cwd })
    }

    /// Hands `setup` and `task` to a spare, which becomes the child. Asks for
    /// the next spare before returning. An error of kind `Unsupported` means
    /// this system cannot fork children through the server.
    pub(crate) fn fork(&mut self, setup: Option<&ForkRequest>, task: Task<'_>) -> Result<Forked, WireError> {
        // A spare can only fail to take its task if someone killed or
        // stopped it: try another. All those asked for ahead may be dead (a kill of the whole
        // group): the one asked for meanwhile is new.
        let mut last_error = None;
        for _attempt in 0..=SPARES_AHEAD {
            let Some(spare) = self.take_spare()? else {
                last_error = Some(WireError::Closed);
                continue;
            };
            // The server starts forking the next spare before the child
            // starts: the request's descriptor is in flight for the shortest
            // time (while one is, every Unix socket closed anywhere wakes the
            // kernel's descriptor garbage collector).
            if let Err(e) = self.ask_for_spare() {
                // The server is gone: the caller restarts it and tries again.
                spare.pidfd.kill_and_reap();
                return Err(e);
            }
            let sent = spare.send(setup, task);
            // The rest happens while the child runs.
            self.next_pair = imp::socketpair().ok();
            match sent {
                Ok(()) => return Ok(Forked { pid: spare.pid, pidfd: spare.pidfd, channel: spare.channel }),
                Err(e) => {
                    spare.pidfd.kill_and_reap();
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or(WireError::Closed))
    }

    /// Asks the server for spares until [`SPARES_AHEAD`] are on their way.
    /// Each request carries the spare's end of its channel to us.
    fn ask_for_spare(&mut self) -> Result<(), WireError> {
        while self.asked.len() < SPARES_AHEAD {
            let (ours, theirs) = match self.next_pair.take() {
                Some(pair) => pair,
                None => imp::socketpair()?,
            };
            self.control.send(Kind::Control, &wire::encode(&SpareRequest)?.bytes, &[theirs])?;
            self.asked.push_back(ours);
        }
        Ok(())
    }

    /// The oldest spare asked for (waiting for it if the server is still
    /// forking); `None` if it died before greeting us, or is stopped (it is
    /// killed and reaped: a stopped spare would hold its child up until
    /// someone continued it).
    fn take_spare(&mut self) -> Result<Option<Spare>, WireError> {
        self.ask_for_spare()?;
        let frame = self.answer()?;
        let channel = Channel::unix(self.asked.pop_front().expect("a spare was asked for"));
        match wire::decode::<SpareReply>(&frame.payload, Vec::new())? {
            SpareReply::Ready { pid } => {
                let pidfd = spare_greeting(&channel, pid);
                // It may have greeted before it was stopped.
                if is_stopped(pid) {
                    lifecycle!(WARN, "fork server spare (pid {pid}) is stopped; killing it and using another");
                } else if let Some(pidfd) = pidfd {
                    return Ok(Some(Spare { pid, pidfd, channel }));
                }
                // Our unreaped child: its pid cannot have been reused.
                imp::kill_and_reap(pid);
                Ok(None)
            }
            SpareReply::Failed(e) => {
                Err(WireError::Io(io::Error::other(format!("the fork server could not fork a child: {e}"))))
            }
            SpareReply::Unsupported(e) => Err(WireError::Io(io::Error::new(io::ErrorKind::Unsupported, e))),
        }
    }

    /// The server's next reply, waiting at most [`ANSWER_TIMEOUT`]; fails
    /// sooner when the server is stopped (SIGSTOP, a debugger) for
    /// [`STOPPED_GRACE`], as a stopped server answers nothing until it is
    /// continued. Both failures are `TimedOut` errors. The reply is not lost
    /// either way: it is read (for the same spare, still first in `asked`) by
    /// the next start.
    fn answer(&self) -> Result<wire::Frame, WireError> {
        let pid = self.pid;
        let why = match recv_watching(&self.control, pid, ANSWER_TIMEOUT, STOPPED_GRACE) {
            Ok(frame) => return Ok(frame),
            Err(Watched::Wire(e)) => return Err(e),
            Err(Watched::TimedOut) => format!("the fork server (pid {pid}) did not answer in {ANSWER_TIMEOUT:?}"),
            Err(Watched::Stopped) => format!(
                "the fork server (pid {pid}) is stopped (SIGSTOP, SIGTSTP or a debugger) and forks no child until it \
                 is continued: continue it (`kill -CONT {pid}`) and start again, or use another start method"
            ),
        };
        Err(WireError::Io(io::Error::new(io::ErrorKind::TimedOut, why)))
    }

    /// True while the server process runs.
    pub(crate) fn is_alive(&self) -> bool {
        !self.exited_within(Duration::ZERO)
    }

    /// True once the server process has exited, waiting at most `limit` for
    /// it.
    pub(crate) fn exited_within(&self, limit: Duration) -> bool {
        imp::wait_readable(self.pidfd.as_fd(), Deadline::after(limit)).unwrap_or(true)
    }

    /// After the server died: reaps it, and the spare it may have forked
    /// for us before dying (its reply can still be buffered).
    pub(crate) fn retire(self) {
        let _ = self.pidfd.try_reap();
        reap_spares(self.asked);
    }

    /// Ends a server that is no longer wanted: it exits when its control
    /// socket closes, and is reaped here with the spares it forked for us
    /// meanwhile.
    pub(crate) fn stop(self) {
        let ForkServerClient { control, pidfd, asked, .. } = self;
        drop(control);
        reap_spares(asked);
        let _ = imp::wait_readable(pidfd.as_fd(), Deadline::after(Duration::from_secs(5)));
        let _ = pidfd.try_reap();
    }

    /// Process id of the server.
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// A pidfd of the server of its own, for a thread that waits for its
    /// exit (see `launch::watch_server`).
    pub(crate) fn exit_watch(&self) -> io::Result<Pidfd> {
        Ok(Pidfd::from_fd(self.pidfd.as_fd().try_clone_to_owned()?))
    }
}
