//! OS side of the shared-memory tracker: a detached helper process that
//! outlives its creator and removes the named segments the creator leaves
//! behind (see `shared::tracker` for the protocol).
//!
//! The helper is this same executable, re-executed with
//! [`TRACKER_ENV`]` = <creator pid>` and its end of a socket as descriptor 3.
//! A hook placed before `main` recognises it, detaches (new session, a second
//! fork so that it is nobody's child), and runs the tracker loop.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::spawn::{CHILD_CHANNEL_FD, SpawnRequest};

/// Environment variable naming the creator pid in a tracker process.
pub(crate) const TRACKER_ENV: &str = "MULTIPROC_SHM_TRACKER";

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;

extern "C" fn on_load() {
    let Some(value) = std::env::var_os(TRACKER_ENV) else {
        return;
    };
    // SAFETY: this runs before `main`, while the process is single-threaded.
    unsafe { std::env::remove_var(TRACKER_ENV) };
    let Some(creator) = std::str::from_utf8(value.as_bytes()).ok().and_then(|v| v.parse::<i32>().ok()) else {
        // SAFETY: _exit ends the process at once.
        unsafe { libc::_exit(2) }
    };
    let Ok(channel) = super::fd::adopt_inherited(CHILD_CHANNEL_FD) else {
        // SAFETY: as above.
        unsafe { libc::_exit(2) }
    };
    detach();
    crate::shared::tracker::serve(channel, creator);
    // SAFETY: as above; the tracker has finished its work.
    unsafe { libc::_exit(0) }
}

/// Leaves the creator's session and process tree: the process that the
/// creator spawned exits at once (the creator reaps it) and its forked child
/// carries on, adopted by the reaper. Standard streams go to `/dev/null` so
/// that the tracker holds no one's output pipe open; SIGINT and SIGTERM are
/// ignored (a terminal's Ctrl-C or a group kill is for the creator).
fn detach() {
    // SAFETY: single-threaded (before `main`): setsid, fork, signal, open and
    // dup2 are safe to call; `_exit` in the parent runs no Rust code.
    unsafe {
        libc::setsid();
        match libc::fork() {
            0 => {}
            -1 => libc::_exit(2),
            _ => libc::_exit(0),
        }
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        libc::chdir(c"/".as_ptr());
    }
    super::init::keep_linked();
}

/// Starts a tracker for this process; returns our end of its socket. Closing
/// it (including by dying) tells the tracker to clean up and exit.
pub(crate) fn start() -> io::Result<OwnedFd> {
    std::hint::black_box(&ON_LOAD);
    let (ours, theirs) = super::socket::socketpair()?;
    let mut env: Vec<OsString> = std::env::vars_os()
        .filter(|(k, _)| k != TRACKER_ENV && k != crate::process::bootstrap::ROLE_ENV)
        .map(|(k, v)| {
            let mut entry = k;
            entry.push("=");
            entry.push(v);
            entry
        })
        .collect();
    env.push(format!("{TRACKER_ENV}={}", super::signal::getpid()).into());
    let proc_exe = PathBuf::from("/proc/self/exe");
    let exe = if proc_exe.exists() { proc_exe } else { std::env::current_exe()? };
    let pid = super::spawn::spawn(&SpawnRequest { exe: &exe, env, cwd: None, channel: theirs.as_fd() })?;
    drop(theirs);
    // The spawned process forks the real tracker and exits at once: reap it.
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into our local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    Ok(ours)
}

/// Sends one line to the tracker without raising SIGPIPE if it is gone.
pub(crate) fn send_line(sock: &OwnedFd, line: &[u8]) -> io::Result<()> {
    let mut rest = line;
    while !rest.is_empty() {
        match rustix::net::send(sock, rest, rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
