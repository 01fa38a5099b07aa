//! Typed views of state objects that live in a shared mapping: the common
//! base of every sync primitive, `Value` and `Array`.
//!
//! A [`Shared<S>`] is a counted reference to a mapping plus the offset of an
//! `S` inside it. Cloning shares the mapping; serializing sends the mapping's
//! memfd out of band, and the receiving process maps the same memory, so the
//! decoded handle refers to the same object.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ops::Deref;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys::imp::shm::Mapping;
use crate::wire::{de_error, fd_serde, ser_error};

/// A state object that may live in shared memory.
///
/// # Safety
///
/// The type must be `#[repr(C)]`, made only of atomics and plain integers
/// (so it is `Sync` and every access is sound while other processes touch
/// it), valid when all its bytes are zero (a fresh memfd is zero-filled), and
/// `tag()` must return a field of the object.
pub(crate) unsafe trait SharedObject: Sync + 'static {
    /// A constant identifying the type, written at creation and checked when
    /// a handle arrives from another process.
    const TAG: u64;
    /// The object's tag word.
    fn tag(&self) -> &AtomicU64;
}

/// A reference to an `S` inside a shared mapping.
pub(crate) struct Shared<S> {
    map: Arc<Mapping>,
    offset: usize,
    _type: PhantomData<fn() -> S>,
}

impl<S: SharedObject> Shared<S> {
    /// A fresh zeroed anonymous mapping holding one `S` (named `name` in
    /// `/proc/<pid>/fd`), after `init` has run on it.
    pub(crate) fn create(name: &str, init: impl FnOnce(&S)) -> io::Result<Shared<S>> {
        Shared::create_sized(name, size_of::<S>(), init)
    }

    /// As [`Shared::create`], in a mapping of `len` bytes (room for more
    /// objects or data after the `S`).
    pub(crate) fn create_sized(name: &str, len: usize, init: impl FnOnce(&S)) -> io::Result<Shared<S>> {
        let map = Arc::new(Mapping::anonymous(name, len.max(size_of::<S>()))?);
        Shared::place(map, 0, init)
    }

    /// Places a fresh `S` at `offset` in an existing (zeroed) mapping.
    pub(crate) fn place(map: Arc<Mapping>, offset: usize, init: impl FnOnce(&S)) -> io::Result<Shared<S>> {
        let shared = Shared::view(map, offset)?;
        init(&shared);
        // ORDERING: Relaxed: other processes learn of the object through a
        // message (a syscall), which orders this store before their loads.
        shared.tag().store(S::TAG, Ordering::Relaxed);
        Ok(shared)
    }

    /// A view of the `S` at `offset`, checking bounds and alignment only.
    fn view(map: Arc<Mapping>, offset: usize) -> io::Result<Shared<S>> {
        let fits = offset.checked_add(size_of::<S>()).is_some_and(|end| end <= map.len());
        if !fits || !(map.as_ptr() as usize + offset).is_multiple_of(align_of::<S>()) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "shared object lies outside its segment"));
        }
        Ok(Shared { map, offset, _type: PhantomData })
    }

    /// Another object in the same mapping.
    pub(crate) fn sibling<T: SharedObject>(&self, offset: usize, init: impl FnOnce(&T)) -> io::Result<Shared<T>> {
        Shared::place(self.map.clone(), offset, init)
    }

    /// The mapping this object lives in.
    pub(crate) fn mapping(&self) -> &Arc<Mapping> {
        &self.map
    }

    /// True if both handles refer to the same object in the same mapping.
    pub(crate) fn same_as(&self, other: &Shared<S>) -> bool {
        std::ptr::eq(self.deref(), other.deref())
    }
}

impl<S: SharedObject> Deref for Shared<S> {
    type Target = S;

    fn deref(&self) -> &S {
        // SAFETY: `view` checked that an `S` fits at `offset` with the right
        // alignment; the mapping lives as long as `self.map`; `S` is made of
        // atomics (SharedObject), so shared references to it are sound while
        // other processes access it, and all-zero bytes are a valid `S`.
        unsafe { &*self.map.as_ptr().add(self.offset).cast::<S>() }
    }
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared { map: self.map.clone(), offset: self.offset, _type: PhantomData }
    }
}

impl<S> fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("segment", &self.map.as_ptr()).field("offset", &self.offset).finish()
    }
}

impl<S> Serialize for Shared<S> {
    fn serialize<Se: Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        let index = fd_serde::push_fd(self.map.as_fd()).map_err(ser_error)?;
        (index, self.map.len() as u64, self.offset as u64).serialize(s)
    }
}

impl<'de, S: SharedObject> Deserialize<'de> for Shared<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (index, len, offset) = <(u32, u64, u64)>::deserialize(d)?;
        let fd = fd_serde::take_fd(index).map_err(de_error)?;
        let (Ok(len), Ok(offset)) = (usize::try_from(len), usize::try_from(offset)) else {
            return Err(de_error("shared memory handle larger than this process can map"));
        };
        let map = Mapping::from_fd(fd, len)
            .map_err(|e| de_error(format_args!("cannot map a shared object's segment: {e}")))?;
        let shared = Shared::<S>::view(Arc::new(map), offset).map_err(de_error)?;
        // ORDERING: Relaxed: see `place`.
        if shared.tag().load(Ordering::Relaxed) != S::TAG {
            return Err(de_error("the shared memory handle does not hold the expected kind of object"));
        }
        Ok(shared)
    }
}
