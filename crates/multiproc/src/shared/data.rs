//! The segment behind `Value`, `RawValue`, `Array` and `RawArray`: a
//! 64-byte header (tag, robust lock, element type, length) and the elements.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::memory::plain::{Plain, type_tag};
use crate::memory::raw_mutex::RawMutex;
use crate::memory::segment::{Shared, SharedObject};
use crate::wire::de_error;

/// Where the elements start.
pub(crate) const DATA_OFFSET: usize = 64;

/// Which handle type a segment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Value = 1,
    RawValue = 2,
    Array = 3,
    RawArray = 4,
}

/// The header of a data segment.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct DataHeader {
    tag: AtomicU64,
    /// Guards the elements of a `Value` or `Array` (unused by the raw kinds).
    pub(crate) lock: RawMutex,
    /// Hash of the element type's name.
    elem: AtomicU64,
    /// Number of elements.
    len: AtomicU64,
    kind: AtomicU32,
}

// SAFETY: repr(C) atomics only; all-zero is valid (an empty segment of no
// kind, refused by `check`); `tag` is a field.
unsafe impl SharedObject for DataHeader {
    const TAG: u64 = u64::from_le_bytes(*b"mp.Data\0");
    fn tag(&self) -> &AtomicU64 {
        &self.tag
    }
}

/// A typed data segment of `len` elements of `T`.
///
/// The length is read from the shared header once, checked against the
/// mapping, and kept here: another process that rewrites the header later
/// cannot make this process index past the mapping.
pub(crate) struct Data<T> {
    header: Shared<DataHeader>,
    len: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T: Plain> Data<T> {
    /// A zeroed segment of `len` elements.
    pub(crate) fn zeroed(name: &str, kind: Kind, len: usize) -> io::Result<Data<T>> {
        const { assert!(align_of::<T>() <= DATA_OFFSET, "Plain types have an alignment of at most 64") };
        let bytes = len
            .checked_mul(size_of::<T>())
            .and_then(|b| b.checked_add(DATA_OFFSET))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "shared array too large"))?;
        let header = Shared::create_sized(name, bytes, |h: &DataHeader| {
            // ORDERING: Relaxed: published with the tag (see `Shared::place`).
            h.elem.store(type_tag::<T>(), Ordering::Relaxed);
            h.len.store(len as u64, Ordering::Relaxed);
            h.kind.store(kind as u32, Ordering::Relaxed);
        })?;
        Ok(Data { header, len, _type: PhantomData })
    }

    /// Checks a segment received from another process.
    fn check(header: Shared<DataHeader>, kind: Kind) -> Result<Data<T>, &'static str> {
        // ORDERING: Relaxed: set at creation, before the handle was sent.
        if header.kind.load(Ordering::Relaxed) != kind as u32 {
            return Err("the shared data handle is of another kind (Value, RawValue, Array, RawArray)");
        }
        if header.elem.load(Ordering::Relaxed) != type_tag::<T>() {
            return Err("the shared data handle holds another element type");
        }
        let len = usize::try_from(header.len.load(Ordering::Relaxed)).ok().filter(|&l| {
            l.checked_mul(size_of::<T>())
                .and_then(|b| b.checked_add(DATA_OFFSET))
                .is_some_and(|end| end <= header.mapping().len())
        });
        let Some(len) = len else {
            return Err("the shared data segment is smaller than its length");
        };
        if matches!(kind, Kind::Value | Kind::RawValue) && len != 1 {
            return Err("a shared value segment does not hold exactly one element");
        }
        Ok(Data { header, len, _type: PhantomData })
    }

    /// The number of elements (checked when the handle was made; never
    /// re-read from shared memory).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first element (`len` valid elements follow).
    pub(crate) fn ptr(&self) -> *mut T {
        // SAFETY: DATA_OFFSET is inside the mapping (created or checked with
        // room for the header and `len` elements).
        unsafe { self.header.mapping().as_ptr().add(DATA_OFFSET).cast() }
    }

    /// The lock of a `Value` or `Array`.
    pub(crate) fn lock(&self) -> &RawMutex {
        &self.header.lock
    }

    /// Serializes as a `Shared` header handle.
    pub(crate) fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.header.serialize(s)
    }

    /// Deserializes and checks kind, element type and length.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D, kind: Kind) -> Result<Data<T>, D::Error> {
        let header = Shared::<DataHeader>::deserialize(d)?;
        Data::check(header, kind).map_err(de_error)
    }
}

impl<T> Clone for Data<T> {
    fn clone(&self) -> Self {
        Data { header: self.header.clone(), len: self.len, _type: PhantomData }
    }
}

impl<T> fmt::Debug for Data<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.header.fmt(f)
    }
}

/// Serde impls for a handle type that wraps a `Data<T>` in a field `data`.
macro_rules! data_serde {
    ($ty:ident, $kind:expr) => {
        impl<T: Plain> serde::Serialize for $ty<T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.data.serialize(s)
            }
        }

        impl<'de, T: Plain> serde::Deserialize<'de> for $ty<T> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($ty { data: crate::shared::data::Data::deserialize(d, $kind)? })
            }
        }
    };
}
pub(crate) use data_serde;
