//! Sealed anonymous memory files, used to move large payloads between processes.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};

/// Creates an anonymous memory file holding `data`, sealed against any change,
/// so the receiver can trust its size and contents.
pub(crate) fn sealed_with(name: &str, data: &[u8]) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    super::sparse::write_all_at(fd.as_fd(), data, 0)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL)?;
    Ok(fd)
}

/// Reads the whole of a sealed memory file, checking that it is sealed and
/// exactly `expected_len` bytes long.
pub(crate) fn read_sealed(fd: BorrowedFd<'_>, expected_len: usize) -> io::Result<Vec<u8>> {
    let seals = rustix::fs::fcntl_get_seals(fd)?;
    if !seals.contains(SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "payload memory file is not sealed"));
    }
    let size = rustix::fs::fstat(fd)?.st_size as u64;
    if size != expected_len as u64 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "payload memory file has the wrong size"));
    }
    super::sparse::read_exact_at(fd, expected_len, 0)
}
