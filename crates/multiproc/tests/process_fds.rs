//! A child does not inherit the parent's unrelated file descriptors, even
//! ones opened without close-on-exec, under every start method.

mod process_support;

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

use multiproc::{Connection, Pipe, Process};
use process_support::{JOIN, METHODS, serial};

/// The descriptors open in this process, with what they point to.
fn open_fds() -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

/// Opens `path` with plain `open(2)`, without `O_CLOEXEC`: inherited by
/// anything this process starts unless the library closes it.
fn open_inheritable(path: &std::path::Path) -> OwnedFd {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o600) };
    assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just opened and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[test]
fn children_do_not_inherit_unrelated_descriptors() {
    let _serial = serial();
    let dir = process_support::TempDir::new("fds");
    let path = dir.0.join("secret.txt");
    let secret = open_inheritable(&path);
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&secret), libc::F_GETFD) };
    assert_eq!(flags & libc::FD_CLOEXEC, 0, "the test descriptor must be inheritable");
    let secret_name = path.to_string_lossy().into_owned();
    assert!(open_fds().iter().any(|(_, t)| *t == secret_name));

    for method in METHODS {
        let mut p = Process::builder().start_method(method).spawn(open_fds, ()).unwrap();
        let fds = p.join_timeout(JOIN).unwrap();
        assert!(fds.iter().all(|(_, t)| *t != secret_name), "{method:?}: the child inherited {secret_name}: {fds:?}");
        // Only stdio, the channel to the parent and the one read_dir uses.
        let above_stdio: Vec<_> = fds.iter().filter(|(fd, _)| *fd > 2).collect();
        assert!(above_stdio.len() <= 2, "{method:?}: unexpected descriptors in the child: {fds:?}");
    }
    drop(secret);
}

fn fds_with(conn: Connection<u8>) -> (Vec<(i32, String)>, u8) {
    let got = conn.recv_timeout(JOIN).unwrap_or(0);
    (open_fds(), got)
}

#[test]
fn a_descriptor_passed_as_an_argument_is_the_only_extra_one() {
    let _serial = serial();
    for method in METHODS {
        let (ours, theirs) = Pipe::<u8>::duplex().unwrap();
        ours.send(&7).unwrap();
        let mut p = Process::builder().start_method(method).spawn(fds_with, (theirs,)).unwrap();
        let (fds, got) = p.join_timeout(JOIN).unwrap();
        assert_eq!(got, 7);
        let sockets = fds.iter().filter(|(fd, t)| *fd > 2 && t.starts_with("socket:")).count();
        assert_eq!(sockets, 2, "{method:?}: the channel to the parent and the passed pipe end: {fds:?}");
    }
}
