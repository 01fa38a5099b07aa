//! `SharedMemory`: a block of bytes shared by processes, anonymous by
//! default, named on request.
//!
//! # Lifetime of named segments (maintainer's notes)
//!
//! A named segment is `/dev/shm/<name>`, laid out as the user's bytes
//! followed by a 40-byte trailer: a magic number, the creator's pid and the
//! creator's start time (clock ticks since boot), the user's size and a
//! random nonce for this segment. The creator owns the name:
//! - it removes the name when its last handle is dropped (or on `unlink`);
//! - if it dies first (even by `kill -9`), its tracker (a detached helper
//!   process, one per creating process, see `tracker.rs`) removes every name
//!   it still owns as soon as the creator's end of the tracker socket closes
//!   (also a name whose file lost its trailer to another process that cut it
//!   short: the tracker knows the file's device and inode);
//! - should the tracker be gone as well, the next `create` of the same name
//!   finds the creator dead (by pid and start time) and reclaims the name.
//!
//! Names are only removed when the trailer still names the process that is
//! removing them (or a dead one), so a segment that someone else created
//! under the same name later is left alone.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::SharedMemoryError;
use super::tracker;
use crate::memory::plain;
use crate::sys::imp::FileId;
use crate::sys::imp::shm::{self, Mapping};
use crate::sys::imp::sparse;
use crate::sys::imp::{self, thread};
use crate::wire::{de_error, fd_serde, ser_error};

const TRAILER_MAGIC: u64 = u64::from_le_bytes(*b"mpshm\x01\0\0");
const TRAILER_LEN: usize = 40;

/// The trailer of a named segment: at byte 0 a magic number, at 8 the
/// creator's pid (4 bytes, then 4 of padding), at 16 its start time, at 24
/// the user's size, at 32 a nonce, each in native byte order.
///
/// It is read and written through the file (`pread`/`pwrite`), never
/// through a mapping: any process that can open the name can cut the file
/// short at any moment, and touching a mapping past the file's end is a
/// SIGBUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trailer {
    pid: u32,
    start: u64,
    size: u64,
    /// Random, per segment: tells this segment from a later one of the same
    /// name and creator.
    nonce: u64,
}

impl Trailer {
    /// Writes the trailer at `at` in the file: the fields first, then the
    /// magic, so a reader racing with a creation finds no magic (and takes
    /// the segment for a foreign one) until the fields are there.
    fn write(&self, fd: BorrowedFd<'_>, at: usize) -> io::Result<()> {
        let mut fields = [0u8; TRAILER_LEN - 8];
        fields[0..4].copy_from_slice(&self.pid.to_ne_bytes());
        fields[8..16].copy_from_slice(&self.start.to_ne_bytes());
        fields[16..24].copy_from_slice(&self.size.to_ne_bytes());
        fields[24..32].copy_from_slice(&self.nonce.to_ne_bytes());
        sparse::write_all_at(fd, &fields, at as u64 + 8)?;
        sparse::write_all_at(fd, &TRAILER_MAGIC.to_ne_bytes(), at as u64)
    }

    /// The trailer of the file `map` maps, if it has ours.
    fn read(map: &Mapping) -> Option<Trailer> {
        let len = map.len();
        if len < TRAILER_LEN || !(len - TRAILER_LEN).is_multiple_of(8) {
            return None;
        }
        let mut bytes = [0u8; TRAILER_LEN];
        // A file cut short reads short: not ours (any more).
        if shm::read_file_at(map.as_fd(), &mut bytes, (len - TRAILER_LEN) as u64).ok()? < TRAILER_LEN {
            return None;
        }
        let u64_at = |i: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i..i + 8]);
            u64::from_ne_bytes(word)
        };
        let mut pid = [0u8; 4];
        pid.copy_from_slice(&bytes[8..12]);
        let t = Trailer { pid: u32::from_ne_bytes(pid), start: u64_at(16), size: u64_at(24), nonce: u64_at(32) };
        (u64_at(0) == TRAILER_MAGIC && trailer_offset(t.size) == Some(len - TRAILER_LEN)).then_some(t)
    }
}

/// Where the trailer starts for a segment of `size` user bytes (`None` if
/// that is past `usize::MAX`: a size no segment has).
fn trailer_offset(size: u64) -> Option<usize> {
    usize::try_from(size).ok()?.checked_next_multiple_of(8)
}

fn this_process() -> (u32, u64) {
    let pid = imp::getpid() as u32;
    let start = match thread::status(pid) {
        thread::ThreadStatus::Alive { start } => start,
        thread::ThreadStatus::Dead => 0,
    };
    (pid, start)
}

/// Whose segment may be removed, by [`unlink_if_owned`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owner {
    /// The one segment with this nonce (its creator's drop).
    Segment(u64),
    /// Any segment created by this process (pid, start time): its tracker.
    Process(u32, u64),
    /// Any segment whose creator is dead: a reclaiming `create`.
    Dead,
}

/// Removes `/dev/shm/<name>` if its trailer matches `expected`. Used by the
/// creator, its tracker and reclaiming `create`s.
pub(crate) fn unlink_if_owned(name: &str, expected: Owner) -> bool {
    let Ok(map) = Mapping::open_named(name) else {
        return false;
    };
    let Some(t) = Trailer::read(&map) else {
        return false;
    };
    let matches = match expected {
        Owner::Segment(nonce) => t.nonce == nonce,
        Owner::Process(p, s) => t.pid == p && (s == 0 || t.start == 0 || s == t.start),
        Owner::Dead => !thread::process_alive(t.pid, t.start),
    };
    drop(map);
    matches && shm::unlink_named(name).is_ok()
}

/// Removes `/dev/shm/<name>` for the tracker of its creator `(pid, start
/// time)`, now gone: if the trailer names the creator, or if the name still
/// names the file the creator made (`file`) but its trailer is gone (another
/// process cut the file short).
pub(crate) fn unlink_for_creator(name: &str, (pid, start): (u32, u64), file: Option<FileId>) -> bool {
    if unlink_if_owned(name, Owner::Process(pid, start)) {
        return true;
    }
    file.is_some_and(|file| names_file(name, file)) && shm::unlink_named(name).is_ok()
}

/// True if `/dev/shm/<name>` is the file `file`.
fn names_file(name: &str, file: FileId) -> bool {
    shm::named_file_id(name).is_ok_and(|named| named == file)
}

/// True if `/dev/shm/<name>` is the file `map` maps.
fn is_our_file(name: &str, map: &Mapping) -> bool {
    shm::file_identity(map.as_fd()).is_ok_and(|(file, _)| names_file(name, file))
}

fn check_name(name: &str) -> Result<&str, SharedMemoryError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.len() > 250 || bare.contains(['/', '\0', '\n']) {
        return Err(SharedMemoryError::InvalidName { name: name.to_string() });
    }
    Ok(bare)
}

struct Inner {
    map: Mapping,
    size: usize,
    name: Option<String>,
    /// The nonce of the segment this handle created (and removes when
    /// dropped), if it did.
    created: Option<u64>,
    /// True while this segment's name is registered with the tracker (from
    /// `create` until `unlink` or drop): the name is unregistered once, so
    /// that a later segment this process creates under the same name keeps
    /// its own registration.
    registered: AtomicBool,
}

impl Inner {
    /// Tells the tracker this segment no longer needs its name removed (once).
    fn unregister(&self) {
        // ORDERING: Relaxed: only the swap's atomicity matters.
        if let Some(name) = self.name.as_deref().filter(|_| self.registered.swap(false, Ordering::Relaxed)) {
            tracker::unregister(name);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let (Some(nonce), Some(name)) = (self.created, &self.name)
            && !unlink_if_owned(name, Owner::Segment(nonce))
            && is_our_file(name, &self.map)
        {
            // Cut short by another process, the file lost its trailer, but
            // the name still names the very file we created.
            let _ = shm::unlink_named(name);
        }
        self.unregister();
    }
}

/// A fresh segment nonce.
fn nonce() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // ORDERING: Relaxed: only uniqueness within this process matters here
        // (the pid and start time tell processes apart).
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (n ^ t.as_nanos() as u64).to_le_bytes();
    }
    u64::from_le_bytes(bytes)
}

/// A block of bytes shared by processes (Python's
/// `multiprocessing.shared_memory.SharedMemory`).
///
/// [`SharedMemory::new`] makes an **anonymous** segment (a memfd): only
/// processes it is passed to (as a [`Process::spawn`](crate::Process::spawn)
/// argument or in a message) can see it, and the kernel frees it when the
/// last of them lets go, whatever way they end. [`SharedMemory::create`]
/// makes a **named** one, `/dev/shm/<name>`, that unrelated processes can
/// [`open`](SharedMemory::open); its name is removed when the creator drops
/// its last handle, calls [`unlink`](SharedMemory::unlink), or dies (even by
/// `kill -9`: a tracker process removes it). Mappings already open stay valid
/// after the name is gone.
///
/// New segments are zero-filled. Bytes can be copied in and out with
/// [`read_at`](SharedMemory::read_at) and [`write_at`](SharedMemory::write_at)
/// (sound even while other processes write: they may see a mix of old and
/// new bytes, so coordinate with a [`Lock`](crate::Lock)), or reached
/// directly through [`as_slice`](SharedMemory::as_slice) and
/// [`as_mut_ptr`](SharedMemory::as_mut_ptr) (`unsafe`).
///
/// # Examples
///
/// ```
/// use multiproc::{Process, SharedMemory};
///
/// fn fill(shm: SharedMemory) { shm.write_at(0, b"hello from a child").unwrap(); }
///
/// let shm = SharedMemory::new(64).unwrap();
/// Process::spawn(fill, (shm.clone(),)).unwrap().join().unwrap();
/// let mut buf = [0u8; 18];
/// shm.read_at(0, &mut buf).unwrap();
/// assert_eq!(&buf, b"hello from a child");
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    inner: Arc<Inner>,
}

impl SharedMemory {
    /// A new zeroed anonymous segment of `size` bytes.
    ///
    /// # Errors
    ///
    /// [`SharedMemoryError::InvalidSize`] for 0 bytes; the OS error if the
    /// memory could not be had.
    pub fn new(size: usize) -> Result<SharedMemory, SharedMemoryError> {
        if size == 0 {
            return Err(SharedMemoryError::InvalidSize);
        }
        let map = Mapping::anonymous("multiproc-shm", size)?;
        Ok(SharedMemory::wrap(Inner { map, size, name: None, created: None, registered: AtomicBool::new(false) }))
    }

    /// Creates the named segment `/dev/shm/<name>` of `size` zeroed bytes;
    /// this process owns the name (see the type's docs).
    ///
    /// # Errors
    ///
    /// [`SharedMemoryError::FileExists`] if the name is taken (by a live
    /// owner: a dead owner's segment is reclaimed),
    /// [`SharedMemoryError::InvalidName`], [`SharedMemoryError::InvalidSize`],
    /// or the OS error.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{SharedMemory, SharedMemoryError};
    ///
    /// let name = format!("doc-create-{}", std::process::id());
    /// let a = SharedMemory::create(&name, 100).unwrap();
    /// assert!(matches!(SharedMemory::create(&name, 100), Err(SharedMemoryError::FileExists { .. })));
    /// let b = SharedMemory::open(&name).unwrap();
    /// assert_eq!(b.size(), 100);
    /// drop((a, b)); // the creator's last handle removes the name
    /// assert!(matches!(SharedMemory::open(&name), Err(SharedMemoryError::NotFound { .. })));
    /// ```
    pub fn create(name: &str, size: usize) -> Result<SharedMemory, SharedMemoryError> {
        let bare = check_name(name)?.to_string();
        if size == 0 {
            return Err(SharedMemoryError::InvalidSize);
        }
        let (at, total) = trailer_offset(size as u64)
            .and_then(|at| Some((at, at.checked_add(TRAILER_LEN)?)))
            .ok_or(io::Error::new(io::ErrorKind::InvalidInput, "shared memory size too large"))?;
        // Register first: if we die right after creating, the tracker knows.
        tracker::register(&bare)?;
        let map = match Mapping::create_named(&bare, total) {
            Ok(map) => map,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A dead owner's leftover is reclaimed; a live owner's is not.
                if unlink_if_owned(&bare, Owner::Dead) {
                    Mapping::create_named(&bare, total).map_err(|e| {
                        tracker::unregister(&bare);
                        SharedMemoryError::from_create(e, &bare)
                    })?
                } else {
                    tracker::unregister(&bare);
                    return Err(SharedMemoryError::FileExists { name: bare });
                }
            }
            Err(e) => {
                tracker::unregister(&bare);
                return Err(SharedMemoryError::from_create(e, &bare));
            }
        };
        // Before the trailer: the tracker can then remove the file even if
        // another process cuts the trailer away (or we die before writing it).
        if let Ok((file, _)) = shm::file_identity(map.as_fd()) {
            tracker::record_file(&bare, file);
        }
        let (pid, start) = this_process();
        let nonce = nonce();
        let written = Trailer { pid, start, size: size as u64, nonce }.write(map.as_fd(), at);
        if let Err(e) = written {
            let _ = shm::unlink_named(&bare);
            tracker::unregister(&bare);
            return Err(e.into());
        }
        Ok(SharedMemory::wrap(Inner {
            map,
            size,
            name: Some(bare),
            created: Some(nonce),
            registered: AtomicBool::new(true),
        }))
    }

    /// Attaches to the named segment `/dev/shm/<name>` (made by
    /// [`create`](SharedMemory::create) here or by any other program, such
    /// as Python's `SharedMemory(create=True)`).
    ///
    /// # Errors
    ///
    /// [`SharedMemoryError::NotFound`] if there is no such segment,
    /// [`SharedMemoryError::InvalidName`], [`SharedMemoryError::InvalidSize`]
    /// for an empty segment, or the OS error.
    pub fn open(name: &str) -> Result<SharedMemory, SharedMemoryError> {
        let bare = check_name(name)?.to_string();
        let map = Mapping::open_named(&bare).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SharedMemoryError::NotFound { name: bare.clone() },
            _ => SharedMemoryError::Io(e),
        })?;
        if map.len() == 0 {
            return Err(SharedMemoryError::InvalidSize);
        }
        let size = Trailer::read(&map).map_or(map.len(), |t| t.size as usize);
        Ok(SharedMemory::wrap(Inner { map, size, name: Some(bare), created: None, registered: AtomicBool::new(false) }))
    }

    fn wrap(inner: Inner) -> SharedMemory {
        SharedMemory { inner: Arc::new(inner) }
    }

    /// The segment's name, for a named segment (without the leading `/`).
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// The size in bytes (as asked at creation).
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Removes the name now (Python's `unlink`): later `open`s fail, while
    /// existing mappings stay valid. Nothing to do for an anonymous segment.
    ///
    /// # Errors
    ///
    /// [`SharedMemoryError::NotFound`] if the name is already gone.
    pub fn unlink(&self) -> Result<(), SharedMemoryError> {
        let Some(name) = &self.inner.name else {
            return Ok(());
        };
        shm::unlink_named(name).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SharedMemoryError::NotFound { name: name.clone() },
            _ => SharedMemoryError::Io(e),
        })?;
        self.inner.unregister();
        Ok(())
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    ///
    /// # Errors
    ///
    /// [`SharedMemoryError::OutOfRange`] if the range is not inside the
    /// segment; [`SharedMemoryError::Truncated`] if another process cut a
    /// named segment's file short of it (also while the copy ran).
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), SharedMemoryError> {
        let end = self.check_range(offset, buf.len())?;
        if let Some(name) = &self.inner.name {
            // A named segment's file may be cut short at any moment, also in
            // the middle of a copy through the mapping (a SIGBUS): copy
            // through the file, where a cut ends the copy early instead.
            let copied = shm::read_file_at(self.inner.map.as_fd(), buf, offset as u64)?;
            if copied < buf.len() {
                return Err(self.truncated(name, offset, end)?);
            }
            return Ok(());
        }
        // SAFETY: the range is inside the mapping (checked), whose anonymous
        // file is sealed against shrinking; the shared bytes are only
        // accessed atomically or through `unsafe` views whose users take
        // responsibility; `buf` is private.
        unsafe { plain::copy_in(self.inner.map.as_ptr().add(offset), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the segment starting at `offset`.
    ///
    /// # Errors
    ///
    /// As for [`read_at`](SharedMemory::read_at); a named segment's file cut
    /// short while the copy runs is not an error: the write makes the file
    /// long enough again, as a write to the file would.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), SharedMemoryError> {
        let end = self.check_range(offset, data.len())?;
        if let Some(name) = &self.inner.name {
            // As in `read_at`: never through the mapping, which a cut makes
            // a SIGBUS; a file already cut short is refused.
            let (_, file_size) = shm::file_identity(self.inner.map.as_fd())?;
            if end as u64 > file_size {
                return Err(self.truncated(name, offset, end)?);
            }
            sparse::write_all_at(self.inner.map.as_fd(), data, offset as u64)?;
            return Ok(());
        }
        // SAFETY: as in `read_at`.
        unsafe { plain::copy_out(data.as_ptr(), self.inner.map.as_ptr().add(offset), data.len()) };
        Ok(())
    }

    /// Checks that `start..start + len` lies inside the segment; returns its end.
    fn check_range(&self, start: usize, len: usize) -> Result<usize, SharedMemoryError> {
        match start.checked_add(len) {
            Some(end) if end <= self.size() => Ok(end),
            end => Err(SharedMemoryError::OutOfRange { start, end: end.unwrap_or(usize::MAX), size: self.size() }),
        }
    }

    /// The error for bytes `start..end` of the named segment `name`, past
    /// the end of its file (cut short by another process).
    fn truncated(&self, name: &str, start: usize, end: usize) -> io::Result<SharedMemoryError> {
        let (_, file_size) = shm::file_identity(self.inner.map.as_fd())?;
        Ok(SharedMemoryError::Truncated { name: name.to_string(), file_size, start, end })
    }

    /// The first byte (valid for [`size`](SharedMemory::size) bytes while
    /// this handle or a clone lives).
    pub fn as_ptr(&self) -> *const u8 {
        self.inner.map.as_ptr()
    }

    /// The first byte, for writing (other processes see the writes).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.inner.map.as_ptr()
    }

    /// The bytes as a slice.
    ///
    /// # Safety
    ///
    /// No thread or process may write to the segment while the slice is
    /// alive (other than through atomics the caller does not read through
    /// this slice): Rust assumes a `&[u8]` does not change.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `size` valid bytes that live as long as
        // `self`; the caller guarantees nobody writes meanwhile.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.size()) }
    }

    /// The bytes as a mutable slice.
    ///
    /// # Safety
    ///
    /// For as long as the slice is alive, no other thread or process may
    /// read or write the segment (for instance: everyone holds one `Lock`
    /// while touching it), and no other slice of it may exist in this process.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as above, with exclusivity guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.size()) }
    }
}

impl SharedMemoryError {
    fn from_create(e: io::Error, name: &str) -> SharedMemoryError {
        match e.kind() {
            io::ErrorKind::AlreadyExists => SharedMemoryError::FileExists { name: name.to_string() },
            io::ErrorKind::InvalidInput => SharedMemoryError::InvalidName { name: name.to_string() },
            _ => SharedMemoryError::Io(e),
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory").field("name", &self.name()).field("size", &self.size()).finish()
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let index = fd_serde::push_fd(self.inner.map.as_fd()).map_err(ser_error)?;
        (index, self.inner.map.len() as u64, self.size() as u64, self.name()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (index, len, size, name) = <(u32, u64, u64, Option<String>)>::deserialize(d)?;
        let fd = fd_serde::take_fd(index).map_err(de_error)?;
        let (Ok(len), Ok(size)) = (usize::try_from(len), usize::try_from(size)) else {
            return Err(de_error("shared memory handle larger than this process can map"));
        };
        if size == 0 || size > len {
            return Err(de_error("shared memory handle with an impossible size"));
        }
        let map = match name {
            // A named segment cannot be sealed (see `Mapping::from_unsealed_fd`).
            Some(_) => Mapping::from_unsealed_fd(fd, len),
            None => Mapping::from_fd(fd, len),
        }
        .map_err(|e| de_error(format_args!("cannot map a shared memory handle's segment: {e}")))?;
        // The receiver does not own the name: only its creator removes it.
        Ok(SharedMemory::wrap(Inner { map, size, name, created: None, registered: AtomicBool::new(false) }))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// Makes `/dev/shm/<name>` by hand with a trailer naming `pid`.
    fn fake_segment(name: &str, pid: u32) {
        let size = 16;
        let at = trailer_offset(size as u64).unwrap();
        let map = Mapping::create_named(name, at + TRAILER_LEN).unwrap();
        Trailer { pid, start: 0, size: size as u64, nonce: 1 }.write(map.as_fd(), at).unwrap();
    }

    #[test]
    fn a_dead_creators_leftover_is_reclaimed_a_live_ones_is_not() {
        let dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();

        let name = format!("multiproc-unit-reclaim-{}", std::process::id());
        fake_segment(&name, dead_pid);
        let shm = SharedMemory::create(&name, 100).expect("reclaimed from a dead creator");
        assert_eq!(shm.size(), 100);
        drop(shm);
        assert!(matches!(SharedMemory::open(&name), Err(SharedMemoryError::NotFound { .. })));

        fake_segment(&name, std::process::id());
        assert!(matches!(SharedMemory::create(&name, 100), Err(SharedMemoryError::FileExists { .. })));
        assert_eq!(SharedMemory::open(&name).unwrap().size(), 16);
        shm::unlink_named(&name).unwrap();
    }

    #[test]
    fn foreign_segments_are_opened_whole() {
        let name = format!("multiproc-unit-foreign-{}", std::process::id());
        let _raw = Mapping::create_named(&name, 5000).unwrap();
        let shm = SharedMemory::open(&name).unwrap();
        assert_eq!(shm.size(), 5000);
        // Without our trailer there is no owner: a create does not reclaim it.
        assert!(matches!(SharedMemory::create(&name, 10), Err(SharedMemoryError::FileExists { .. })));
        shm.unlink().unwrap();
    }
}
