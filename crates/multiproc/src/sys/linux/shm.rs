//! Shared memory mappings backed by a memfd (anonymous, freed by the kernel
//! when the last descriptor and mapping go away) or by a named POSIX segment
//! in `/dev/shm`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use super::fd::{FileId, cvt};

/// A read-write shared mapping of a whole memory file.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; it is valid from any thread, and
// every user synchronises access to its contents with atomics or locks.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out raw pointers.
unsafe impl Sync for Mapping {}

/// Says which size the OS refused (its bare "Cannot allocate memory" or
/// "Invalid argument" names none), keeping the error's kind.
fn too_large(e: io::Error, len: usize) -> io::Error {
    io::Error::new(e.kind(), format!("cannot make a shared memory segment of {len} bytes: {e}"))
}

impl Mapping {
    /// A new zeroed anonymous segment of `len` bytes (at least 1), sealed
    /// against shrinking: no process that holds it can cut the file under
    /// another's mapping (which would make its next access a SIGBUS). It may
    /// still grow (the queue grows its sparse file).
    pub(crate) fn anonymous(name: &str, len: usize) -> io::Result<Mapping> {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len.max(1) as u64).map_err(|e| too_large(e.into(), len))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK)?;
        Mapping::map(fd, len).map_err(|e| too_large(e, len))
    }

    /// Maps an anonymous segment received from another process; its size
    /// must be at least `len`, and it must be sealed against shrinking (if
    /// the sender did not seal it, we do; a file that cannot be sealed is
    /// refused).
    pub(crate) fn from_fd(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
        if !rustix::fs::fcntl_get_seals(&fd).is_ok_and(|s| s.contains(SealFlags::SHRINK))
            && rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).is_err()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory segment is not sealed against shrinking",
            ));
        }
        Mapping::from_unsealed_fd(fd, len)
    }

    /// Maps a named segment received from another process (a `/dev/shm`
    /// file cannot be sealed: whoever can open it can also shrink it, as
    /// with Python's shared memory); its size must be at least `len`.
    pub(crate) fn from_unsealed_fd(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
        // Seal it anyway where the file allows it (a memfd sent as "named").
        let _ = rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK);
        let size = rustix::fs::fstat(&fd)?.st_size as u64;
        if size < len as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "shared memory segment is smaller than announced"));
        }
        Mapping::map(fd, len)
    }

    /// Creates the named segment `/dev/shm/<name>` of `len` bytes; fails with
    /// `AlreadyExists` if it exists.
    pub(crate) fn create_named(name: &str, len: usize) -> io::Result<Mapping> {
        let fd = shm_open(name, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR)?;
        // A segment that cannot be sized or mapped leaves no name behind.
        let made =
            rustix::fs::ftruncate(&fd, len.max(1) as u64).map_err(io::Error::from).and_then(|()| Mapping::map(fd, len));
        made.map_err(|e| {
            let _ = unlink_named(name);
            too_large(e, len)
        })
    }

    /// Opens the named segment `/dev/shm/<name>`; fails with `NotFound` if it
    /// does not exist. Maps the whole segment.
    pub(crate) fn open_named(name: &str) -> io::Result<Mapping> {
        let fd = shm_open(name, libc::O_RDWR)?;
        let len = rustix::fs::fstat(&fd)?.st_size as usize;
        Mapping::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh MAP_SHARED mapping chosen by the kernel aliases no Rust
        // object; it stays valid until `munmap` in Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len.max(1),
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len, fd })
    }

    /// Start of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The 4-byte aligned word at `offset` as an atomic; `None` when it is
    /// misaligned or not inside the mapping. Every process must access that
    /// word only atomically.
    pub(crate) fn atomic_u32_at(&self, offset: usize) -> Option<&AtomicU32> {
        let in_bounds = offset.checked_add(size_of::<u32>()).is_some_and(|end| end <= self.len);
        if !in_bounds || !offset.is_multiple_of(align_of::<AtomicU32>()) {
            return None;
        }
        // SAFETY: inside the mapping (checked), aligned (the mapping is page
        // aligned and `offset` checked), and valid as long as `&self`; an
        // AtomicU32 tolerates writes from other processes.
        Some(unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() })
    }

    /// Copies `bytes` into the mapping at `offset`; `None` (nothing copied)
    /// when they would not fit inside it.
    ///
    /// The copy is a plain `memcpy`, the fastest: use it where the caller's
    /// protocol keeps every other process away from those bytes meanwhile
    /// (the large-payload arena). Where another process may write the same
    /// bytes concurrently (a peer breaking the protocol), use
    /// [`Mapping::write_volatile_at`] instead.
    pub(crate) fn write_at(&self, offset: usize, bytes: &[u8]) -> Option<()> {
        offset.checked_add(bytes.len()).filter(|end| *end <= self.len)?;
        // SAFETY: [offset, offset + len) lies inside the mapping (checked); the
        // source is a private slice, so the two do not overlap. No Rust
        // reference to the shared bytes is made.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(offset), bytes.len()) };
        Some(())
    }

    /// Copies `len` bytes at `offset` out of the mapping; `None` when they
    /// are not all inside it (so lengths and offsets announced by another
    /// process can be passed as they came).
    ///
    /// A plain `memcpy`, as for [`Mapping::write_at`]: bytes that a
    /// misbehaving process writes meanwhile arrive torn (any bit pattern is a
    /// valid `u8`), and the caller must treat them as untrusted. Where
    /// another process may write the bytes while they are read, use
    /// [`Mapping::read_volatile_into`] instead.
    pub(crate) fn read_at(&self, offset: usize, len: usize) -> Option<Vec<u8>> {
        offset.checked_add(len).filter(|end| *end <= self.len)?;
        let mut out = Vec::with_capacity(len);
        // SAFETY: [offset, offset + len) lies inside the mapping (checked);
        // `out` is private, has capacity `len`, and the copy initialises
        // exactly `len` bytes before `set_len`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        Some(out)
    }

    // The volatile pair below is for memory another process may write at any
    // time (a peer that breaks the turns of the protocol): the memory is
    // outside every allocation of this program, and a plain copy from or to
    // memory changing under it is a data race, which volatile accesses to
    // such memory are not. Word by word where `offset` is 8-aligned (the
    // mapping is page aligned), for speed; byte by byte otherwise.

    /// Copies `bytes` into the mapping at `offset` with volatile writes;
    /// `None` (nothing copied) when they would not fit inside it.
    ///
    /// Use it where another process may touch those bytes concurrently (the
    /// manager's lanes); where the protocol keeps it away, the plain
    /// [`Mapping::write_at`] is faster.
    pub(crate) fn write_volatile_at(&self, offset: usize, bytes: &[u8]) -> Option<()> {
        offset.checked_add(bytes.len()).filter(|end| *end <= self.len)?;
        // SAFETY: [offset, offset + len) lies inside the mapping (checked).
        let dst = unsafe { self.ptr.as_ptr().add(offset) };
        let (words, tail) =
            if offset.is_multiple_of(8) { bytes.split_at(bytes.len() / 8 * 8) } else { (&[][..], bytes) };
        for (i, word) in words.chunks_exact(8).enumerate() {
            let word = u64::from_ne_bytes(word.try_into().expect("chunks of 8"));
            // SAFETY: word i lies inside [dst, dst + len) and is 8-aligned
            // (the mapping is page aligned and `offset` a multiple of 8).
            unsafe { dst.cast::<u64>().add(i).write_volatile(word) };
        }
        let base = words.len();
        for (i, &byte) in tail.iter().enumerate() {
            // SAFETY: inside [dst, dst + len).
            unsafe { dst.add(base + i).write_volatile(byte) };
        }
        Some(())
    }

    /// Replaces `out` with the `len` bytes at `offset`, read with volatile
    /// reads; `None` (and `out` untouched) when they are not all inside the
    /// mapping, so lengths announced by another process can be passed as
    /// they came.
    ///
    /// Use it where another process may write those bytes concurrently (the
    /// manager's lanes): they may then arrive torn and are untrusted; where
    /// the protocol keeps it away, the plain [`Mapping::read_at`] is faster.
    pub(crate) fn read_volatile_into(&self, offset: usize, len: usize, out: &mut Vec<u8>) -> Option<()> {
        offset.checked_add(len).filter(|end| *end <= self.len)?;
        // SAFETY: [offset, offset + len) lies inside the mapping (checked).
        let src = unsafe { self.ptr.as_ptr().add(offset) }.cast_const();
        let words = if offset.is_multiple_of(8) { len / 8 } else { 0 };
        out.clear();
        out.reserve(len);
        for i in 0..words {
            // SAFETY: word i lies inside [src, src + len) and is 8-aligned
            // (the mapping is page aligned and `offset` a multiple of 8).
            let word = unsafe { src.cast::<u64>().add(i).read_volatile() };
            out.extend_from_slice(&word.to_ne_bytes());
        }
        for i in words * 8..len {
            // SAFETY: inside [src, src + len).
            out.push(unsafe { src.add(i).read_volatile() });
        }
        Some(())
    }
}

impl AsFd for Mapping {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `map`; no references into
        // it outlive the Mapping (users borrow through `&self`).
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len.max(1));
        }
    }
}

/// The identity (device and inode) and size of a memory file.
pub(crate) fn file_identity(fd: BorrowedFd<'_>) -> io::Result<(FileId, u64)> {
    let stat = rustix::fs::fstat(fd)?;
    let id = FileId { dev: stat.st_dev, ino: stat.st_ino };
    Ok((id, u64::try_from(stat.st_size).unwrap_or(0)))
}

/// The identity of the file named `/dev/shm/<name>` now.
pub(crate) fn named_file_id(name: &str) -> io::Result<FileId> {
    let fd = shm_open(name, libc::O_RDONLY)?;
    Ok(file_identity(fd.as_fd())?.0)
}

/// Copies bytes of a memory file starting at `offset` into `buf` (`pread`);
/// returns how many: fewer than `buf.len()` where the file ends. Unlike a
/// copy through a mapping, a file cut short by another process meanwhile
/// ends the copy early instead of raising SIGBUS.
pub(crate) fn read_file_at(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

fn shm_path(name: &str) -> io::Result<CString> {
    let name = name.trim_start_matches('/');
    if name.is_empty() || name.contains('/') || name.len() > 250 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a shared memory name is 1-250 characters without '/'",
        ));
    }
    CString::new(format!("/{name}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in shared memory name"))
}

fn shm_open(name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = shm_path(name)?;
    // SAFETY: `path` is a valid C string; shm_open returns a new descriptor or -1.
    let fd = cvt(unsafe { libc::shm_open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o600) })?;
    // SAFETY: shm_open returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes the named segment `/dev/shm/<name>`.
pub(crate) fn unlink_named(name: &str) -> io::Result<()> {
    let path = shm_path(name)?;
    // SAFETY: `path` is a valid C string.
    cvt(unsafe { libc::shm_unlink(path.as_ptr()) }).map(drop)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn anonymous_is_zeroed_and_shared_through_fd() {
        let a = Mapping::anonymous("t", 4096).unwrap();
        // SAFETY: the mapping is 4096 bytes long.
        unsafe {
            assert_eq!(*a.as_ptr().add(100), 0);
            *a.as_ptr().add(100) = 7;
        }
        let b = Mapping::from_fd(a.as_fd().try_clone_to_owned().unwrap(), 4096).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { *b.as_ptr().add(100) }, 7);
        assert!(rustix::fs::ftruncate(a.as_fd(), 0).is_err(), "a peer must not shrink the segment");
        let unsealed = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, 4096).unwrap();
        assert!(Mapping::from_fd(unsealed, 4096).is_err());
    }

    #[test]
    fn checked_copies_refuse_anything_outside_the_mapping() {
        let m = Mapping::anonymous("t", 4096).unwrap();
        assert_eq!(m.write_at(4090, &[1; 6]), Some(()));
        assert_eq!(m.read_at(4090, 6).unwrap(), [1; 6]);
        assert_eq!(m.write_at(4091, &[1; 6]), None);
        assert_eq!(m.read_at(4091, 6), None);
        assert_eq!(m.read_at(usize::MAX, 2), None);
        assert_eq!(m.read_at(1, usize::MAX), None);
        assert!(m.atomic_u32_at(4092).is_some());
        assert!(m.atomic_u32_at(4093).is_none(), "misaligned");
        assert!(m.atomic_u32_at(4096).is_none(), "past the end");
        assert!(m.atomic_u32_at(usize::MAX - 3).is_none());
    }

    #[test]
    fn volatile_copies_round_trip_every_length_and_refuse_anything_outside() {
        let m = Mapping::anonymous("t", (64 << 10) + 16).unwrap();
        let mut out = vec![9u8; 3];
        for offset in [0, 8, 3] {
            for len in [0, 1, 7, 8, 9, 15, 16, 1000, 64 << 10] {
                let message: Vec<u8> = (0..len).map(|i| (i * 7 + len + offset) as u8).collect();
                assert_eq!(m.write_volatile_at(offset, &message), Some(()));
                assert_eq!(m.read_volatile_into(offset, len, &mut out), Some(()));
                assert_eq!(out, message, "a message of {len} bytes at {offset}");
                assert_eq!(m.read_at(offset, len).unwrap(), message, "the plain copy sees the same bytes");
            }
        }
        let end = m.len();
        assert_eq!(m.write_volatile_at(end - 6, &[1; 6]), Some(()));
        assert_eq!(m.write_volatile_at(end - 5, &[1; 6]), None);
        assert_eq!(m.write_volatile_at(usize::MAX, &[1; 2]), None);
        assert_eq!(m.read_volatile_into(end - 5, 6, &mut out), None);
        assert_eq!(m.read_volatile_into(usize::MAX, 2, &mut out), None);
        assert_eq!(m.read_volatile_into(1, usize::MAX, &mut out), None);
        assert_eq!(out.len(), 64 << 10, "a refused read leaves `out` as it was");
    }

    #[test]
    fn named_create_open_unlink() {
        let name = format!("multiproc-test-{}", std::process::id());
        let a = Mapping::create_named(&name, 64).unwrap();
        assert_eq!(Mapping::create_named(&name, 64).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        let b = Mapping::open_named(&name).unwrap();
        assert_eq!(b.len(), 64);
        unlink_named(&name).unwrap();
        assert_eq!(Mapping::open_named(&name).unwrap_err().kind(), io::ErrorKind::NotFound);
        drop((a, b));
    }
}
