//! Sparse memory files: a memfd whose size is mostly holes, mapped in windows,
//! written and read at offsets, and given back to the kernel a range at a time
//! by punching holes. The queue keeps its segments and large items in one.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use rustix::fs::FallocateFlags;
use rustix::mm::{MapFlags, ProtFlags};

/// Page size assumed for alignment of windows and holes.
pub(crate) const PAGE: u64 = 4096;

/// A read-write shared mapping of `len` bytes of a file at a page-aligned
/// offset. It does not own the descriptor; the file must stay open while the
/// window is used (a mapping keeps the memory itself alive anyway).
#[derive(Debug)]
pub(crate) struct Window {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the window is plain shared memory; every user synchronises access
// to its contents with atomics (see queue/README.md).
unsafe impl Send for Window {}
// SAFETY: as above; `&Window` only hands out a raw pointer.
unsafe impl Sync for Window {}

impl Window {
    /// Maps `len` bytes of `fd` starting at `offset` (a multiple of [`PAGE`]).
    /// The range must lie within the file's size: touching a page past the
    /// end raises SIGBUS.
    pub(crate) fn map(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Window> {
        if !offset.is_multiple_of(PAGE) || len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "window offset must be page-aligned, length > 0"));
        }
        // SAFETY: a fresh MAP_SHARED mapping chosen by the kernel aliases no Rust
        // object; it stays valid until `munmap` in Drop. MAP_NORESERVE: the file
        // is sparse and pages are only charged when touched.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::NORESERVE,
                fd,
                offset,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Window { ptr, len })
    }

    /// Start of the window.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `map`; users only borrow
        // it through `&self`, so no reference outlives the window.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Sets the file's size (the new part reads as zeros and costs nothing until
/// written).
pub(crate) fn set_len(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    rustix::fs::ftruncate(fd, len)?;
    Ok(())
}

/// The file's current size.
pub(crate) fn file_len(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_size as u64)
}

/// Frees the memory behind `[offset, offset + len)`; the range reads as zeros
/// afterwards, in every process that maps it. Page faults on the range wait
/// until the punch is complete, so no reader sees a half-punched page.
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    rustix::fs::fallocate(fd, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, offset, len)?;
    Ok(())
}

/// Writes all of `data` at `offset`, growing the file if needed.
pub(crate) fn write_all_at(fd: BorrowedFd<'_>, mut data: &[u8], mut offset: u64) -> io::Result<()> {
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

/// Reads exactly `len` bytes at `offset` into a new vector. The range must
/// lie inside the file (checked before anything is allocated: `len` and
/// `offset` may come from another process), and memory the allocator
/// refuses is an error, not an abort.
pub(crate) fn read_exact_at(fd: BorrowedFd<'_>, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    let inside = offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= i64::MAX as u64 && file_len(fd).is_ok_and(|size| end <= size));
    if !inside {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "range to read lies outside the memory file"));
    }
    let mut out: Vec<u8> = Vec::new();
    out.try_reserve_exact(len).map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "no memory for the payload"))?;
    let base = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
    let mut filled = 0;
    while filled < len {
        // SAFETY: `base` points to `len` bytes of spare capacity; pread writes at
        // most `len - filled` bytes at `base + filled`.
        let n = unsafe {
            libc::pread(fd.as_raw_fd(), base.add(filled).cast(), len - filled, (offset + filled as u64) as libc::off_t)
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
    // SAFETY: all `len` bytes were initialised by pread above.
    unsafe { out.set_len(len) };
    Ok(out)
}

#[cfg(test)]
mod test {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn windows_share_and_holes_read_as_zero() {
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        set_len(fd.as_fd(), 1 << 30).unwrap();
        let a = Window::map(fd.as_fd(), 1 << 20, 8192).unwrap();
        let b = Window::map(fd.as_fd(), 1 << 20, 8192).unwrap();
        // Volatile: the kernel changes these bytes behind the compiler's
        // back (the hole), and an optimised build could reuse a read.
        // SAFETY: both windows are 8192 bytes long.
        unsafe {
            a.as_ptr().add(5000).write_volatile(9);
            assert_eq!(b.as_ptr().add(5000).read_volatile(), 9);
        }
        punch_hole(fd.as_fd(), 1 << 20, 8192).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { b.as_ptr().add(5000).read_volatile() }, 0);
        write_all_at(fd.as_fd(), b"hello", (1 << 40) + 3).unwrap();
        assert_eq!(read_exact_at(fd.as_fd(), 5, (1 << 40) + 3).unwrap(), b"hello");
        assert!(Window::map(fd.as_fd(), 1, 10).is_err());
    }
}
