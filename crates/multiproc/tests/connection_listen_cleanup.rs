//! A Unix `Listener::bind` that fails after its bind (here: `listen` fails)
//! removes the socket file it created, so the next bind at that path is not
//! refused with "address in use"; a file it did not create is left alone.
//!
//! `listen` on a freshly bound Unix socket does not fail by itself, so the
//! failure is forced with a seccomp filter that makes `listen(2)` return
//! `EACCES`, installed on one thread only (filters are per thread): the bind
//! runs on that thread, the rest of the test binary is untouched.

use std::path::{Path, PathBuf};

use multiproc::{Address, ConnectionError, Listener};

/// Makes `listen(2)` fail with `EACCES` on the calling thread from now on.
fn refuse_listen_on_this_thread() {
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let filter = [
        // Load the syscall number (`seccomp_data.nr`, offset 0).
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        // listen? then the next instruction, else skip it.
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_listen as u32,
        },
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EACCES as u32),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    // SAFETY: plain prctl calls; `prog` points at `filter`, both alive for
    // the call (the kernel copies the program).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "PR_SET_NO_NEW_PRIVS");
        assert_eq!(
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &raw const prog),
            0,
            "PR_SET_SECCOMP: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// `Listener::bind` at `path` on a thread where `listen` fails.
fn bind_where_listen_fails(path: &Path) -> Result<Listener, ConnectionError> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        refuse_listen_on_this_thread();
        Listener::bind(Address::unix(&path), None)
    })
    .join()
    .unwrap()
}

fn socket_path(case: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("multiproc-listen-cleanup-{}-{case}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn a_listen_that_fails_after_the_bind_leaves_no_socket_file() {
    let path = socket_path("fails");
    let err = bind_where_listen_fails(&path).expect_err("listen was made to fail");
    assert!(
        matches!(&err, ConnectionError::Bind { source, .. } if source.raw_os_error() == Some(libc::EACCES)),
        "{err}"
    );
    let left = path.exists();
    let _ = std::fs::remove_file(&path);
    assert!(!left, "the failed bind left its socket file at {}", path.display());
    // The path is free again: a normal bind works.
    let listener = Listener::bind(Address::unix(&path), None).unwrap();
    drop(listener);
    assert!(!path.exists());
}

#[test]
fn a_bind_refused_at_an_existing_file_leaves_that_file_alone() {
    let path = socket_path("existing");
    std::fs::write(&path, b"not ours").unwrap();
    assert!(bind_where_listen_fails(&path).is_err());
    let kept = std::fs::read(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(kept.unwrap(), b"not ours");
}
