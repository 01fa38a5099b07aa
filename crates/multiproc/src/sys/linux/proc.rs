//! What `/proc` says about a process or thread: the one parser of
//! `/proc/<pid>/stat`, and this process's pid namespace.
//!
//! Deciding that a lock's or a slot's owner is *dead* lets another thread
//! take what it held, so the answer must be certain: a thread in another pid
//! namespace (its id means something else here) or hidden by `hidepid` (its
//! `/proc` entry is missing although it runs) is never reported dead.

use std::io;

/// The fields of `/proc/<pid>/stat` the library uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// State letter (field 3): `R`, `S`, `Z`, …
    pub state: u8,
    /// Parent pid (field 4).
    pub ppid: i32,
    /// Threads in the process (field 20).
    pub threads: u64,
    /// Start time in clock ticks since boot (field 22).
    pub start: u64,
}

impl Stat {
    /// A zombie or dead task: it will never release anything.
    pub(crate) fn is_zombie(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }

    /// Stopped by a signal (`T`: SIGSTOP, SIGTSTP…) or by a tracer (`t`):
    /// it runs nothing until it is continued.
    pub(crate) fn is_stopped(&self) -> bool {
        matches!(self.state, b'T' | b't')
    }
}

/// What a look at `/proc/<pid>/stat` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The task exists; its fields.
    Found(Stat),
    /// No task with this id exists in our pid namespace (certain: `/proc`
    /// had no entry and the kernel confirmed with `kill(pid, 0)`).
    Gone,
    /// Unknown: `/proc` unreadable, the entry hidden, or unparsable.
    Unknown,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may
/// hold spaces and parentheses: the fields after it start after the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (the state) is fields[0].
    let state = *fields.first()?.as_bytes().first()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let threads = fields.get(17)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some(Stat { state, ppid, threads, start })
}

/// Reads `/proc/<pid>/stat` (a pid or a thread id).
pub(crate) fn lookup(pid: u32) -> Lookup {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(&text).map_or(Lookup::Unknown, Lookup::Found),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            // Missing from /proc: gone, or hidden (`hidepid`). The kernel
            // tells them apart: ESRCH only when no such task exists.
            match rustix::process::Pid::from_raw(pid as i32).map(rustix::process::test_kill_process) {
                Some(Err(rustix::io::Errno::SRCH)) => Lookup::Gone,
                _ => Lookup::Unknown,
            }
        }
        Err(_) => Lookup::Unknown,
    }
}

/// The stat of every process in our `/proc` (for leak checks and tests).
pub(crate) fn all_processes() -> io::Result<Vec<(i32, Stat)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(stat) = parse_stat(&text)
        {
            out.push((pid, stat));
        }
    }
    Ok(out)
}

/// This process's pid namespace (the inode of `/proc/self/ns/pid`), or 0 if
/// it cannot be read. Not cached here: a child forked after `unshare` is in
/// another namespace than its parent (`thread::current` caches it per fork).
pub(crate) fn pid_namespace() -> u32 {
    // The kernel's namespace inode numbers are 32-bit (`proc_inum`).
    std::fs::metadata("/proc/self/ns/pid")
        .ok()
        .and_then(|m| u32::try_from(std::os::unix::fs::MetadataExt::ino(&m)).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parses_names_with_parentheses_and_spaces() {
        let line = "42 (a) b (c)) S 7 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 3 18 12345 0 0";
        assert_eq!(parse_stat(line), Some(Stat { state: b'S', ppid: 7, threads: 3, start: 12345 }));
        assert_eq!(parse_stat("42 (x) Z 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_found_and_has_a_namespace() {
        let me = std::process::id();
        assert!(matches!(lookup(me), Lookup::Found(s) if !s.is_zombie() && s.start > 0));
        assert_ne!(pid_namespace(), 0);
    }

    #[test]
    fn a_pid_above_pid_max_is_gone() {
        // pid_max is at most 2^22.
        assert_eq!(lookup((1 << 22) + 5), Lookup::Gone);
    }
}
