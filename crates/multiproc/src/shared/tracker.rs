//! The shared-memory tracker: removes the named segments a process created
//! and did not remove itself, once that process is gone (by any death).
//!
//! Each process that creates a named segment starts one tracker (lazily, on
//! its first `create`) and keeps a socket to it. It sends `R <name>` when it
//! takes a name and `U <name>` when it gives it up. When the socket closes —
//! the creator exited, crashed or was killed — the tracker removes every
//! name still registered whose trailer names the creator, then exits. The
//! tracker is detached (see `sys::imp::shm_tracker`): it is not a child of
//! the creator, so it leaves no zombie and is not killed with it.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::process::bootstrap::Role;
use crate::process_local::ProcessLocal;
use crate::sys::imp::{self, shm_tracker, thread};

struct Connection {
    /// The process that started this tracker (a forked child starts its own).
    pid: i32,
    sock: OwnedFd,
    /// Names this process owns, with how many handles claim each.
    names: HashMap<String, usize>,
}

/// This process's connection (reset in a forked child, see `ProcessLocal`).
static TRACKER: ProcessLocal<Option<Connection>> = ProcessLocal::new(|| None);

/// Starts a tracker for this process; returns our end of its socket. Closing
/// it (including by dying) tells the tracker to clean up and exit.
fn start() -> io::Result<OwnedFd> {
    let (ours, theirs) = imp::socketpair()?;
    crate::process::bootstrap::keep_linked();
    let pid = crate::process::launch::spawn_exe(theirs.as_fd(), Role::ShmTracker, &Vec::new(), None)?;
    drop(theirs);
    // The spawned process forks the real tracker and exits at once: reap it.
    imp::wait_exit(pid);
    Ok(ours)
}

fn send(conn: &Connection, op: char, name: &str) -> io::Result<()> {
    shm_tracker::send_line(&conn.sock, format!("{op} {name}\n").as_bytes())
}

/// Records that this process owns `name`, starting the tracker if needed.
pub(crate) fn register(name: &str) -> io::Result<()> {
    let mut guard = TRACKER.lock();
    let me = imp::getpid();
    if guard.as_ref().is_none_or(|c| c.pid != me) {
        // First name in this process (or we are a forked child: the parent's
        // tracker is the parent's business).
        *guard = Some(Connection { pid: me, sock: start()?, names: HashMap::new() });
    }
    let Some(conn) = guard.as_mut() else { unreachable!("set just above") };
    let count = conn.names.entry(name.to_string()).or_insert(0);
    *count += 1;
    if *count > 1 {
        return Ok(());
    }
    if send(conn, 'R', name).is_err() {
        // The tracker died: start another and tell it everything again.
        conn.sock = start()?;
        for owned in conn.names.keys() {
            send(conn, 'R', owned)?;
        }
    }
    Ok(())
}

/// Records that this process no longer owns `name` (removed, or the create
/// that claimed it failed).
pub(crate) fn unregister(name: &str) {
    let mut guard = TRACKER.lock();
    let Some(conn) = guard.as_mut().filter(|c| c.pid == imp::getpid()) else {
        return;
    };
    let Some(count) = conn.names.get_mut(name) else {
        return;
    };
    *count -= 1;
    if *count == 0 {
        conn.names.remove(name);
        // A tracker that is gone cannot remove the name either: nothing to do.
        let _ = send(conn, 'U', name);
    }
}

/// The tracker process's loop: collect names until the creator's socket
/// closes, then remove the ones the creator still owns.
pub(crate) fn serve(sock: OwnedFd, creator: i32) {
    let creator_start = match thread::status(creator as u32) {
        thread::ThreadStatus::Alive { start } => start,
        thread::ThreadStatus::Dead => 0,
    };
    let mut names: HashSet<String> = HashSet::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match imp::read_some(sock.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    apply(&mut names, &line[..line.len() - 1]);
                }
            }
            Err(_) => break,
        }
    }
    for name in &names {
        super::memory::unlink_if_owned(name, super::memory::Owner::Process(creator as u32, creator_start));
    }
}

fn apply(names: &mut HashSet<String>, line: &[u8]) {
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    match line.split_once(' ') {
        Some(("R", name)) => {
            names.insert(name.to_string());
        }
        Some(("U", name)) => {
            names.remove(name);
        }
        _ => {}
    }
}
