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

use std::collections::HashMap;
use std::ffi::OsStr;
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
    let control = Channel::unix(control);
    let mut children: HashMap<Pid, OwnedFd> = HashMap::new();
    loop {
        let ready =
            imp::poll_fds(&[(control.as_fd(), Interest::Read), (sigchld.as_fd(), Interest::Read)], Deadline::NEVER)
                .unwrap_or_else(|_| vec![true, true]);
        if ready[1] {
            sigchld.drain();
            reap(&mut children);
        }
        if ready[0] {
            match control.recv(Deadline::after(std::time::Duration::ZERO), None) {
                Ok(frame) => handle(&control, &sigchld, frame.payload, frame.fds, &mut children),
                Err(RecvError::Timeout) => {}
                Err(_) => shut_down(children),
            }
        }
    }
}

fn handle(
    control: &Channel,
    sigchld: &imp::forkserver_sys::SigchldFd,
    payload: Vec<u8>,
    mut fds: Vec<OwnedFd>,
    children: &mut HashMap<Pid, OwnedFd>,
) {
    let reply = match (wire::decode::<ForkRequest>(&payload, Vec::new()), fds.pop()) {
        (Ok(req), Some(channel)) => fork_child(control, sigchld, req, channel),
        (Err(e), _) => Err(format!("bad fork request: {e}")),
        (_, None) => Err("fork request without the child's channel".to_string()),
    };
    let (msg, fds) = match reply {
        Ok((pid, status_r, status_w)) => {
            children.insert(pid, status_w);
            (ForkReply::Started { pid }, vec![status_r])
        }
        Err(e) => (ForkReply::Failed(e), Vec::new()),
    };
    if let Ok(encoded) = wire::encode(&msg) {
        if control.send(Kind::Control, &encoded.bytes, &fds).is_err() {
            shut_down(std::mem::take(children));
        }
    }
}

fn fork_child(
    control: &Channel,
    sigchld: &imp::forkserver_sys::SigchldFd,
    req: ForkRequest,
    channel: OwnedFd,
) -> Result<(Pid, OwnedFd, OwnedFd), String> {
    let (status_r, status_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| e.to_string())?;
    let server_pid = imp::getpid();
    let keep = channel.as_raw_fd();
    let _ = (control, sigchld); // closed in the child by close_fds_from_except
    // SAFETY: the fork server is single-threaded, so the child may do anything.
    let pid = unsafe {
        imp::spawn::fork(|| {
            imp::forkserver_sys::reset_child_signals();
            imp::forkserver_sys::move_fd(keep, CHILD_CHANNEL_FD);
            imp::spawn::close_fds_from_except(CHILD_CHANNEL_FD + 1, &[]);
            imp::die_with_parent(server_pid);
            apply_environment(&req);
            let fd = imp::adopt_inherited(CHILD_CHANNEL_FD).unwrap_or_else(|_| std::process::exit(1));
            super::bootstrap::child_main(fd)
        })
    }
    .map_err(|e| format!("fork failed: {e}"))?;
    drop(channel);
    Ok((pid, status_r, status_w))
}

fn apply_environment(req: &ForkRequest) {
    let current: Vec<_> = std::env::vars_os().map(|(k, _)| k).collect();
    for key in current {
        // SAFETY: the forked child is single-threaded.
        unsafe { std::env::remove_var(key) };
    }
    for (k, v) in &req.env {
        // SAFETY: as above.
        unsafe { std::env::set_var(OsStr::from_bytes(k), OsStr::from_bytes(v)) };
    }
    if let Some(dir) = req.cwd.as_deref().map(OsStr::from_bytes) {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!("multiproc: cannot enter working directory {dir:?}: {e}");
            std::process::exit(1);
        }
    }
}

/// Reaps every exited child and writes its exit code to its status pipe.
fn reap(children: &mut HashMap<Pid, OwnedFd>) {
    while let Some((pid, code)) = imp::forkserver_sys::reap_any() {
        if let Some(status_w) = children.remove(&pid) {
            let _ = rustix::io::write(&status_w, &code.to_le_bytes());
        }
    }
}

fn shut_down(children: HashMap<Pid, OwnedFd>) -> ! {
    for pid in children.keys() {
        let _ = imp::send_signal(*pid, imp::SIGKILL);
    }
    std::process::exit(0)
}

/// Parent side: a running fork server.
#[derive(Debug)]
pub(crate) struct ForkServerClient {
    control: Channel,
    pid: Pid,
    pidfd: imp::pidfd::Pidfd,
}

impl ForkServerClient {
    /// Starts a fork server (from the launcher thread).
    pub(crate) fn start() -> io::Result<ForkServerClient> {
        let (ours, theirs) = imp::socketpair()?;
        let pid = super::launch::spawn_exe(theirs.as_fd(), "forkserver", &Vec::new(), None)?;
        let pidfd = imp::pidfd::Pidfd::open(pid)?;
        Ok(ForkServerClient { control: Channel::unix(ours), pid, pidfd })
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
