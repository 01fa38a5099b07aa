//! The fork server: a clean, single-threaded copy of the program, started by
//! re-execution before `main` ran, that forks children on request. Forking it
//! is fast (it is small) and safe (it has one thread), unlike forking a
//! multi-threaded parent.
//!
//! Protocol on the control socket: the parent sends a `ForkRequest` with the
//! child's channel attached; the server forks, and replies `Started { pid }`
//! with the read end of a pipe on which it will write the child's exit code
//! (4 bytes, little-endian, Python-style) once it reaps it. When the control
//! socket closes (the parent exited or died), the server kills its children
//! and exits.
//!
//! The server keeps one child forked ahead of time (the spare) waiting on a
//! hand-over socket: a request sends the spare its environment and channel,
//! the reply goes out, and only then is the next spare forked. A fork costs
//! ~140 µs on a 2-core VM; this takes it off the start-up path.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use super::protocol::{ForkReply, ForkRequest};
use crate::sys::Deadline;
use crate::sys::imp::{self, Interest, Pid, spawn::CHILD_CHANNEL_FD};
use crate::wire::{self, Channel, Kind, RecvError, WireError};

/// The fork server's main loop. Never returns.
pub(crate) fn serve(control: OwnedFd) -> ! {
    let sigchld = match imp::forkserver_sys::SigchldFd::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("multiproc fork server: cannot watch children ({e}); exiting");
            std::process::exit(1)
        }
    };
    imp::forkserver_sys::ignore_sigpipe();
    // Computed once here, inherited by every child instead of recomputed.
    let _ = imp::build_id::build_id();
    let mut server = Server { control: Channel::unix(control), sigchld, children: HashMap::new(), spare: None };
    server.spare = server.fork_spare().ok();
    loop {
        let ready = imp::poll_fds(
            &[(server.control.as_fd(), Interest::Read), (server.sigchld.as_fd(), Interest::Read)],
            server.wait_budget(),
        )
        .unwrap_or_else(|_| vec![true, true]);
        if !ready.contains(&true) {
            server.replenish();
            continue;
        }
        if ready[1] {
            server.sigchld.drain();
            server.reap();
        }
        if ready[0] {
            match server.control.recv(Deadline::after(std::time::Duration::ZERO), None) {
                Ok(frame) => server.handle(frame.payload, frame.fds),
                Err(RecvError::Timeout) => {}
                Err(_) => server.shut_down(),
            }
        }
    }
}

/// A child forked ahead of time that waits for its task, so that a request
/// costs a hand-over instead of a fork (a fork takes ~140 µs on a small VM).
struct Spare {
    pid: Pid,
    handoff: Channel,
    status_r: OwnedFd,
    status_w: OwnedFd,
}

struct Server {
    control: Channel,
    sigchld: imp::forkserver_sys::SigchldFd,
    /// Started children and the pipe on which to report each one's exit.
    children: HashMap<Pid, OwnedFd>,
    spare: Option<Spare>,
}

impl Server {
    fn handle(&mut self, payload: Vec<u8>, mut fds: Vec<OwnedFd>) {
        let reply = match (wire::decode::<ForkRequest>(&payload, Vec::new()), fds.pop()) {
            (Ok(_), Some(channel)) => self.start_child(&payload, channel),
            (Err(e), _) => Err(format!("bad fork request: {e}")),
            (_, None) => Err("fork request without the child's channel".to_string()),
        };
        let (msg, fds) = match reply {
            Ok((pid, status_r, status_w)) => {
                self.children.insert(pid, status_w);
                (ForkReply::Started { pid }, vec![status_r])
            }
            Err(e) => (ForkReply::Failed(e), Vec::new()),
        };
        if let Ok(encoded) = wire::encode(&msg)
            && self.control.send(Kind::Control, &encoded.bytes, &fds).is_err()
        {
            self.shut_down();
        }
    }

    /// How long to wait for events: forever while a spare is ready; briefly
    /// when it is not, so the next spare is forked once the child just
    /// started has had time to finish (a fork takes the server ~140 µs, and
    /// a child that exits meanwhile would wait that long to be reported).
    fn wait_budget(&self) -> Deadline {
        if self.spare.is_some() { Deadline::NEVER } else { Deadline::after(std::time::Duration::from_millis(1)) }
    }

    fn replenish(&mut self) {
        if self.spare.is_none() {
            self.spare = self.fork_spare().ok();
        }
    }

    /// Hands the request to the spare (or, if there is none, forks a spare
    /// and hands it over at once).
    fn start_child(&mut self, request: &[u8], channel: OwnedFd) -> Result<(Pid, OwnedFd, OwnedFd), String> {
        for _ in 0..2 {
            let spare = match self.spare.take() {
                Some(s) => s,
                None => self.fork_spare()?,
            };
            if spare.handoff.send(Kind::Control, request, std::slice::from_ref(&channel)).is_ok() {
                return Ok((spare.pid, spare.status_r, spare.status_w));
            }
            // The spare died (someone killed it): reap it later and fork another.
        }
        Err("could not hand the task to a forked child".to_string())
    }

    fn fork_spare(&self) -> Result<Spare, String> {
        let (status_r, status_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| e.to_string())?;
        let (ours, theirs) = imp::socketpair().map_err(|e| e.to_string())?;
        let server_pid = imp::getpid();
        let keep = theirs.as_raw_fd();
        // SAFETY: the fork server is single-threaded, so the child may do anything.
        let pid = unsafe {
            imp::spawn::fork(|| {
                imp::forkserver_sys::reset_child_signals();
                imp::forkserver_sys::move_fd(keep, CHILD_CHANNEL_FD);
                imp::spawn::close_fds_from_except(CHILD_CHANNEL_FD + 1, &[]);
                imp::die_with_parent(server_pid);
                let handoff = imp::adopt_inherited(CHILD_CHANNEL_FD).unwrap_or_else(|_| std::process::exit(1));
                spare_main(Channel::unix(handoff))
            })
        }
        .map_err(|e| format!("fork failed: {e}"))?;
        Ok(Spare { pid, handoff: Channel::unix(ours), status_r, status_w })
    }

    /// Reaps every exited child and writes its exit code to its status pipe.
    fn reap(&mut self) {
        let mut reported = false;
        while let Some((pid, code)) = imp::forkserver_sys::reap_any() {
            if let Some(status_w) = self.children.remove(&pid) {
                let _ = rustix::io::write(&status_w, &code.to_le_bytes());
                reported = true;
            }
            if self.spare.as_ref().is_some_and(|s| s.pid == pid) {
                self.spare = None;
            }
        }
        // The parent has its exit code: now is a good moment for the next fork.
        if reported {
            self.replenish();
        }
    }

    fn shut_down(&mut self) -> ! {
        let spare = self.spare.as_ref().map(|s| s.pid);
        for pid in self.children.keys().copied().chain(spare) {
            let _ = imp::send_signal(pid, imp::SIGKILL);
        }
        std::process::exit(0)
    }
}

/// A spare child: waits for its task's environment and channel, then runs it.
fn spare_main(handoff: Channel) {
    let frame = match handoff.recv(Deadline::NEVER, None) {
        Ok(f) => f,
        Err(_) => std::process::exit(0), // the fork server is gone
    };
    let (Ok(req), Some(channel)) =
        (wire::decode::<ForkRequest>(&frame.payload, Vec::new()), frame.fds.into_iter().next())
    else {
        std::process::exit(1)
    };
    drop(handoff);
    apply_environment(&req);
    super::bootstrap::child_main(channel)
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

/// Parent side: a running fork server.
#[derive(Debug)]
pub(crate) struct ForkServerClient {
    control: Channel,
    pid: Pid,
    pidfd: imp::pidfd::Pidfd,
    /// The environment the server (and so every spare) started with.
    env: Vec<(OsString, OsString)>,
}

impl ForkServerClient {
    /// Starts a fork server (from the launcher thread).
    pub(crate) fn start() -> io::Result<ForkServerClient> {
        let (ours, theirs) = imp::socketpair()?;
        let env = super::launch::child_environment(&Vec::new());
        let pid = super::launch::spawn_exe(theirs.as_fd(), "forkserver", &Vec::new(), None)?;
        let pidfd = imp::pidfd::Pidfd::open(pid)?;
        Ok(ForkServerClient { control: Channel::unix(ours), pid, pidfd, env })
    }

    /// True if a child with environment `env` needs no changes to the
    /// server's (so the request can leave it out).
    pub(crate) fn started_with(&self, env: &[(OsString, OsString)]) -> bool {
        self.env == env
    }

    /// Asks the server for a child running on `channel`; returns its pid and
    /// the pipe on which its exit code will arrive.
    pub(crate) fn fork(&self, req: &ForkRequest, channel: OwnedFd) -> Result<(Pid, OwnedFd), WireError> {
        let encoded = wire::encode(req)?;
        self.control.send(Kind::Control, &encoded.bytes, &[channel])?;
        let frame = match self.control.recv(Deadline::after(std::time::Duration::from_secs(30)), None) {
            Ok(f) => f,
            Err(RecvError::Wire(e)) => return Err(e),
            Err(_) => {
                return Err(WireError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the fork server did not answer in 30 s",
                )));
            }
        };
        match wire::decode::<ForkReply>(&frame.payload, Vec::new())? {
            ForkReply::Started { pid } => {
                let status = frame
                    .fds
                    .into_iter()
                    .next()
                    .ok_or_else(|| WireError::corrupt("fork reply without a status pipe"))?;
                rustix::io::ioctl_fionbio(&status, true).map_err(io::Error::from)?;
                Ok((pid, status))
            }
            ForkReply::Failed(e) => {
                Err(WireError::Io(io::Error::other(format!("the fork server could not start the child: {e}"))))
            }
        }
    }

    /// True while the server process runs.
    pub(crate) fn is_alive(&self) -> bool {
        !imp::wait_readable(self.pidfd.as_fd(), Deadline::after(std::time::Duration::ZERO)).unwrap_or(true)
    }

    /// Reaps a dead server.
    pub(crate) fn reap(&self) {
        let _ = self.pidfd.try_reap();
    }

    /// Process id of the server.
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }
}
