//! OS side of the shared-memory tracker: a detached helper process that
//! outlives its creator and removes the named segments the creator leaves
//! behind (see `shared::tracker` for the protocol; `process::bootstrap`
//! dispatches the re-executed binary to it).

use std::io;
use std::os::fd::OwnedFd;

/// Leaves the creator's session and process tree: the process that the
/// creator spawned exits at once (the creator reaps it) and its forked child
/// carries on, adopted by the reaper. Standard streams go to `/dev/null` so
/// that the tracker holds no one's output pipe open; SIGINT and SIGTERM are
/// ignored (a terminal's Ctrl-C or a group kill is for the creator).
pub(crate) fn detach() {
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
