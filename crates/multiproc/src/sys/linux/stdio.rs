//! A child's standard output and error: pipes to the parent, put in place of
//! descriptors 1 and 2.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::fd::cvt;

/// A pipe, both ends close-on-exec: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Which standard stream to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdStream {
    /// Descriptor 1.
    Stdout,
    /// Descriptor 2.
    Stderr,
}

/// Makes `fd` the process's standard output or error (the descriptor itself
/// is closed; the copy at 1 or 2 stays open across `exec`).
pub(crate) fn redirect(fd: OwnedFd, stream: StdStream) -> io::Result<()> {
    let target = match stream {
        StdStream::Stdout => 1,
        StdStream::Stderr => 2,
    };
    // SAFETY: dup2 only replaces descriptor 1 or 2, which the standard
    // streams own for the life of the process; `fd` stays owned by us and is
    // closed when dropped.
    cvt(unsafe { libc::dup2(fd.as_raw_fd(), target) })?;
    Ok(())
}

/// Writes all of `bytes` to the process's standard output or error with
/// write(2), without std's lock on the stream. A thread that holds that
/// lock while another thread forks leaves it held for ever in the child,
/// whose own writes (a `println!`, the flush at its end) would then wait
/// for ever; the library's own threads write this way. Std's buffer is
/// not used: callers write whole lines.
pub(crate) fn write_unlocked(stream: StdStream, mut bytes: &[u8]) -> io::Result<()> {
    let raw = match stream {
        StdStream::Stdout => 1,
        StdStream::Stderr => 2,
    };
    // SAFETY: descriptors 1 and 2 belong to the standard streams for the
    // life of the process; if one is closed, write fails with EBADF.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
