//! As Python's: the fork server ignores SIGINT (a terminal's Ctrl-C reaches
//! every process of the program's group, and is for the program), and the
//! children it forks do not inherit that. (Its own binary: the test signals
//! this process's one fork server.)

mod process_support;

use std::time::Duration;

use multiproc::{Process, StartMethod};
use process_support::{JOIN, fork_server_pid, is_dead, wait_until};

/// True if this process ignores SIGINT (its `SigIgn` mask in `/proc`).
fn ignores_sigint() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).unwrap().trim();
    u64::from_str_radix(mask, 16).unwrap() & (1 << (libc::SIGINT - 1)) != 0
}

/// The children of this process (from `/proc/<pid>/task/*/children`).
fn children() -> Vec<i32> {
    let ours = std::process::id();
    let tasks = std::fs::read_dir(format!("/proc/{ours}/task")).unwrap().flatten();
    tasks
        .flat_map(|t| {
            let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            list.split_whitespace().map(|p| p.parse().unwrap()).collect::<Vec<i32>>()
        })
        .collect()
}

#[test]
fn the_fork_server_outlives_ctrl_c_and_its_children_keep_the_programs_sigint() {
    let server = fork_server_pid();
    // SAFETY: kill(2) has no memory-safety preconditions; `server` is our child.
    assert_eq!(unsafe { libc::kill(server, libc::SIGINT) }, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!is_dead(server), "the fork server died of SIGINT");
    assert_eq!(fork_server_pid(), server, "the same server goes on serving");
    // A forked child handles SIGINT as this program does (by default: it
    // dies of it), not as the server.
    let mut child = Process::builder().start_method(StartMethod::ForkServer).spawn(ignores_sigint, ()).unwrap();
    assert_eq!(child.join_timeout(JOIN).unwrap(), ignores_sigint());
    // The spares forked ahead for the next starts ignore a Ctrl-C too
    // (they are not the program's children yet)... The server forks them
    // asynchronously, after the starts that asked for them: right after a
    // join there may be none yet, so wait for them.
    let mut spares = Vec::new();
    let came = wait_until(JOIN, || {
        spares = children().into_iter().filter(|&pid| pid != server && !is_dead(pid)).collect();
        !spares.is_empty()
    });
    assert!(came.is_some(), "no spare was forked");
    let signal_all = |signal| {
        for &pid in &spares {
            // SAFETY: as above; `pid` is our child.
            assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        }
    };
    signal_all(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    assert!(spares.iter().all(|&pid| !is_dead(pid)), "a spare died of SIGINT");
    // ... and when all of them are killed anyway, the next start still works.
    signal_all(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(200));
    let mut next = Process::builder().start_method(StartMethod::ForkServer).spawn(ignores_sigint, ()).unwrap();
    assert_eq!(next.join_timeout(JOIN).unwrap(), ignores_sigint());
}
