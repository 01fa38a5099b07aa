//! File-descriptor helpers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::super::Deadline;

/// Converts a libc return value into an `io::Result`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Takes ownership of a raw descriptor number inherited from a parent.
///
/// Returns an error if `raw` is not an open descriptor.
pub(crate) fn adopt_inherited(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD has no side effects; it only checks that `raw` is open.
    cvt(unsafe { libc::fcntl(raw, libc::F_GETFD) })?;
    // SAFETY: the descriptor is open and was handed to this process for it to own
    // (the parent's protocol guarantees no one else in this process uses it).
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_cloexec(fd.as_fd())?;
    Ok(fd)
}

/// Sets close-on-exec on a descriptor.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(())
}

/// Identity of a file: its device and inode. An inode number names a file
/// only within one file system; files on two file systems (a memfd and a
/// file in `/dev/shm`, say) can share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    /// The file system's device.
    pub(crate) dev: u64,
    /// The inode number within that file system.
    pub(crate) ino: u64,
}

/// Written as `<dev>:<ino>` (how the shared-memory tracker is told of a file).
impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

/// Reads `<dev>:<ino>`, as written by `Display`.
impl std::str::FromStr for FileId {
    type Err = ();

    fn from_str(s: &str) -> Result<FileId, ()> {
        let (dev, ino) = s.split_once(':').ok_or(())?;
        Ok(FileId { dev: dev.parse().map_err(drop)?, ino: ino.parse().map_err(drop)? })
    }
}

/// Readiness interest for [`poll_fds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Readable, hung up or in error.
    Read,
    /// Writable, hung up or in error.
    Write,
}

/// Polls the descriptors until one is ready or the deadline passes; returns a
/// readiness flag per descriptor (all false on timeout). Retries on EINTR.
pub(crate) fn poll_fds(fds: &[(BorrowedFd<'_>, Interest)], deadline: Deadline) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, interest)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: match interest {
                Interest::Read => libc::POLLIN,
                Interest::Write => libc::POLLOUT,
            },
            revents: 0,
        })
        .collect();
    poll_until(&mut pfds, deadline)?;
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Waits until `fd` is readable (or hung up) or the deadline passes. Returns
/// true when readable.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Deadline) -> io::Result<bool> {
    // As `poll_fds` on one descriptor, without its two allocations: this is
    // the sleep of every blocking receive on a Unix socket.
    let mut pfd = [libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    poll_until(&mut pfd, deadline)?;
    Ok(pfd[0].revents != 0)
}

/// Whether `fd` is readable (or hung up) now, without waiting. Unlike a
/// non-blocking read, this takes no lock on the socket: a thread polling
/// for the peer's answer does not contend with the kernel delivering it
/// (on loopback TCP, each read attempt took the socket's lock, and the
/// sender's delivery spun on it).
pub(crate) fn is_readable(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(poll_now(fd, libc::POLLIN)? != 0)
}

/// Whether the peer of the stream socket `fd` has closed it (or shut down
/// its sending side), even while bytes it sent are still unread: unlike
/// readability, this tells an end from a message.
pub(crate) fn peer_hung_up(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(poll_now(fd, libc::POLLRDHUP)? & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0)
}

/// Whether the stream socket `fd` can carry nothing more either way (its
/// peer closed it, or both directions were shut down): a send would fail.
/// Unlike [`peer_hung_up`], a peer that only stopped sending does not count.
pub(crate) fn closed_both_ways(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(poll_now(fd, 0)? & (libc::POLLHUP | libc::POLLERR) != 0)
}

/// The events of `events` (and the hang-up and error ones) that `fd` shows
/// now, without waiting. Retries on EINTR.
fn poll_now(fd: BorrowedFd<'_>, events: libc::c_short) -> io::Result<libc::c_short> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
    loop {
        // SAFETY: `pfd` is one valid pollfd that lives across the call; its fd
        // is borrowed by the caller for the duration.
        let ret = unsafe { libc::poll(&mut pfd, 1, 0) };
        if ret >= 0 {
            return Ok(pfd.revents);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Polls `pfds` until one is ready or the deadline passes (their `revents`
/// say which). Retries on EINTR, and after an early wake-up before the
/// deadline (the ≈T promise of the timed calls).
fn poll_until(pfds: &mut [libc::pollfd], deadline: Deadline) -> io::Result<()> {
    loop {
        let timeout = deadline.poll_millis();
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs that lives
        // across the call; every fd in it is borrowed by the caller for the duration.
        let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if ret >= 0 {
            if ret == 0 && !deadline.expired() && timeout != 0 {
                continue; // woke a little early: keep the ≈T promise
            }
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reads what is available from `fd` into `buf` (retrying on EINTR); 0 at
/// end of stream.
pub(crate) fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(rustix::io::Errno::INTR) => {}
            result => return Ok(result?),
        }
    }
}

/// Counts the open descriptors of this process (for leak checks).
#[allow(dead_code, reason = "leak-check helper; integration tests read /proc themselves")]
pub(crate) fn count_open_fds() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1))
}
