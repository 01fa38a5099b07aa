//! Sealed anonymous memory files, used to move large payloads between processes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};

/// Creates an anonymous memory file holding `data`, sealed against any change,
/// so the receiver can trust its size and contents.
pub(crate) fn sealed_with(name: &str, data: &[u8]) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    write_all_at(fd.as_fd(), data)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL)?;
    Ok(fd)
}

fn write_all_at(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    let mut offset = 0u64;
    while !data.is_empty() {
        match rustix::io::pwrite(fd, data, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
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
    let mut out: Vec<u8> = Vec::with_capacity(expected_len);
    let base = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
    let mut filled = 0;
    while filled < expected_len {
        // SAFETY: `base` points to `expected_len` bytes of spare capacity; pread
        // writes at most `expected_len - filled` bytes at `base + filled`.
        let n = unsafe {
            libc::pread(fd.as_raw_fd(), base.add(filled).cast(), expected_len - filled, filled as libc::off_t)
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => filled += n as usize,
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    // SAFETY: all `expected_len` bytes were initialised by pread above.
    unsafe { out.set_len(filled) };
    Ok(out)
}
