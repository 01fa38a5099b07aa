//! The shared-memory tracker: removes the named segments a process created
//! and did not remove itself, once that process is gone (by any death).
//!
//! Each process that creates a named segment starts one tracker (lazily, on
//! its first `create`) and keeps a socket to it. It sends `R <name>` when it
//! takes a name, `I <dev>:<inode> <name>` once it has made the file, and
//! `U <name>` when it gives the name up. When the socket closes — the creator
//! exited, crashed or was killed — the tracker removes every name still
//! registered whose trailer names the creator, or that still names the file
//! the creator made (its trailer cut away by another process), then exits. The
//! tracker is detached (see `sys::imp::shm_tracker`): it is not a child of
//! the creator, so it leaves no zombie and is not killed with it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::process::bootstrap::Role;
use crate::process_local::ProcessLocal;
use crate::sys::imp::{self, FileId, shm_tracker, thread};

struct Connection {
    /// The process that started this tracker (a forked child starts its own).
    pid: i32,
    sock: OwnedFd,
    /// Names this process owns.
    names: HashMap<String, Claim>,
}

/// This process's claim on one name.
#[derive(Default)]
struct Claim {
    /// How many handles claim the name.
    handles: usize,
    /// The file made under the name, once made.
    file: Option<FileId>,
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

/// Tells the tracker which file `name` names (so it can remove the file even
/// if another process cut its trailer away).
fn send_file(conn: &Connection, name: &str, file: FileId) -> io::Result<()> {
    send(conn, 'I', &format!("{file} {name}"))
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
    let claim = conn.names.entry(name.to_string()).or_default();
    claim.handles += 1;
    if claim.handles > 1 {
        return Ok(());
    }
    if send(conn, 'R', name).is_err() {
        // The tracker died: start another and tell it everything again.
        conn.sock = start()?;
        for (owned, claim) in &conn.names {
            send(conn, 'R', owned)?;
            if let Some(file) = claim.file {
                send_file(conn, owned, file)?;
            }
        }
    }
    Ok(())
}

/// Records that the file this process just made under the registered
/// `name` is `file`.
pub(crate) fn record_file(name: &str, file: FileId) {
    let mut guard = TRACKER.lock();
    let Some(conn) = guard.as_mut().filter(|c| c.pid == imp::getpid()) else {
        return;
    };
    let Some(claim) = conn.names.get_mut(name) else {
        return;
    };
    claim.file = Some(file);
    // A tracker that is gone is restarted, and told again, by the next
    // `register`.
    let _ = send_file(conn, name, file);
}

/// Records that this process no longer owns `name` (removed, or the create
/// that claimed it failed).
pub(crate) fn unregister(name: &str) {
    let mut guard = TRACKER.lock();
    let Some(conn) = guard.as_mut().filter(|c| c.pid == imp::getpid()) else {
        return;
    };
    let Some(claim) = conn.names.get_mut(name) else {
        return;
    };
    claim.handles -= 1;
    if claim.handles == 0 {
        conn.names.remove(name);
        // A tracker that is gone cannot remove the name either: nothing to do.
        let _ = send(conn, 'U', name);
    }
}

/// The tracker process's loop: collect names (with the identities of
/// their files, once known) until the creator's socket closes, then remove the
/// ones the creator still owns.
pub(crate) fn serve(sock: OwnedFd, creator: i32) {
    let creator_start = match thread::status(creator as u32) {
        thread::ThreadStatus::Alive { start } => start,
        thread::ThreadStatus::Dead => 0,
    };
    let mut names: HashMap<String, Option<FileId>> = HashMap::new();
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
    for (name, file) in &names {
        super::memory::unlink_for_creator(name, (creator as u32, creator_start), *file);
    }
}

fn apply(names: &mut HashMap<String, Option<FileId>>, line: &[u8]) {
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    match line.split_once(' ') {
        Some(("R", name)) => {
            names.entry(name.to_string()).or_insert(None);
        }
        Some(("I", rest)) => {
            if let Some((file, name)) = rest.split_once(' ')
                && let (Ok(file), Some(known)) = (file.parse(), names.get_mut(name))
            {
                *known = Some(file);
            }
        }
        Some(("U", name)) => {
            names.remove(name);
        }
        _ => {}
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_tracker_learns_a_files_device_and_inode() {
        let mut names = HashMap::new();
        let file = FileId { dev: 27, ino: 152_402 };
        apply(&mut names, b"R a name with spaces");
        apply(&mut names, format!("I {file} a name with spaces").as_bytes());
        assert_eq!(names.get("a name with spaces"), Some(&Some(file)));
        apply(&mut names, b"I 152402 a name with spaces");
        assert_eq!(names.get("a name with spaces"), Some(&Some(file)), "a bare inode is not an identity");
    }
}
