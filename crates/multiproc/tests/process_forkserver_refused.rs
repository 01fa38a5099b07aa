//! Where the kernel or a sandbox refuses the fork server's kind of clone
//! (`CLONE_PARENT`), `ForkServer` children are started with `spawn` instead:
//! the program keeps working, only slower. The sandbox here is a real seccomp
//! filter, installed in a middle process so that it and everything it starts
//! (its fork server included) live under it.

mod process_support;

use multiproc::{Process, StartMethod};
use process_support::{JOIN, children_of, image_loader};

/// Makes every `clone` with `CLONE_PARENT` fail with `EPERM` in this process
/// and all it starts from now on.
fn refuse_sibling_clones() {
    let allow = libc::SECCOMP_RET_ALLOW;
    let refuse = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    // seccomp_data: the syscall number at offset 0, the low half of the
    // first argument (the clone flags) at offset 16.
    let program = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, libc::SYS_clone as u32, 0, 3),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 16),
        jump(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, libc::CLONE_PARENT as u32, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, refuse),
        stmt(libc::BPF_RET | libc::BPF_K, allow),
    ];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr().cast_mut() };
    // SAFETY: prctl reads `fprog` and the filter it points to, both alive
    // for the call; the filter only restricts this process from now on.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "no_new_privs");
        let rc = libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog);
        assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

fn pid_and_loader() -> (i32, i32) {
    (std::process::id() as i32, image_loader())
}

/// Under the filter, starts two `ForkServer` children one after the other;
/// returns, for each, its pid, the process that loaded its image and whether
/// it is our child, and then how many children of ours are left (the fork
/// server, no longer of use, should be gone).
fn start_under_the_filter() -> (Vec<(i32, i32, bool)>, usize) {
    refuse_sibling_clones();
    let started = (0..2)
        .map(|_| {
            let mut p = Process::builder().start_method(StartMethod::ForkServer).spawn(pid_and_loader, ()).unwrap();
            let (pid, loader) = p.join_timeout(JOIN).unwrap();
            (pid, loader, p.pid() == Some(pid))
        })
        .collect();
    (started, children_of(std::process::id() as i32).len())
}

#[test]
fn a_sandbox_that_refuses_the_fork_servers_clones_gets_spawned_children() {
    let mut middle = Process::builder().start_method(StartMethod::Spawn).spawn(start_under_the_filter, ()).unwrap();
    let (started, left) = middle.join_timeout(JOIN).unwrap();
    for (pid, loader, ours) in started {
        assert!(ours, "the middle process started and joined the child");
        assert_eq!(loader, pid, "the child loaded its own image: it was started by spawn");
    }
    assert_eq!(left, 0, "the useless fork server was stopped and reaped");
    assert_eq!(middle.exitcode(), Some(0));
}
