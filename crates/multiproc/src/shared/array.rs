//! `Array<T>` (a shared fixed-length array behind a lock) and `RawArray<T>`
//! (without).

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use super::data::{Data, Kind, data_serde};
use super::value::AtomicPlain;
use crate::memory::plain::{self, Plain};
use crate::memory::raw_mutex::Acquired;
use crate::sync::{LockResult, OwnerDied, TryLockError, TryLockResult};
use crate::sys::Deadline;

/// What to do instead of taking a Array's lock again on the thread that
/// holds it.
const REENTRY: &str = "read and write the elements through the guard you hold (get, set and to_vec take the lock)";

/// Copies all of `src` into the shared elements at `dst`.
///
/// # Safety
///
/// `dst` points to `src.len()` elements of live shared memory accessed only
/// atomically or under a lock the caller holds.
unsafe fn write_all<T: Plain>(dst: *mut T, src: &[T]) {
    // SAFETY: `src` is initialised without padding (`Plain`); the caller
    // vouches for `dst`.
    unsafe { plain::copy_out(src.as_ptr().cast(), dst.cast(), std::mem::size_of_val(src)) }
}

/// Copies `len` shared elements at `src` into a new vector.
///
/// # Safety
///
/// As for [`write_all`], for reading.
unsafe fn read_all<T: Plain>(src: *const T, len: usize) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    // SAFETY: the vector has room for `len` elements; the caller vouches for
    // `src`; every bit pattern is a valid `T` (`Plain`), so after the copy
    // the elements are initialised.
    unsafe {
        plain::copy_in(src.cast(), out.as_mut_ptr().cast(), size_of::<T>() * len);
        out.set_len(len);
    }
    out
}

/// A fixed-length array of a plain type in shared memory, with a lock
/// (Python's `multiprocessing.Array`). New arrays are zeroed.
///
/// Every access goes through the lock: [`lock`](Array::lock) gives a guard
/// that dereferences to `[T]`; [`get`](Array::get), [`set`](Array::set),
/// [`to_vec`](Array::to_vec) and [`copy_from_slice`](Array::copy_from_slice)
/// lock for one operation. The lock is robust, as for [`Value`](crate::Value).
///
/// # Examples
///
/// ```
/// use multiproc::{Array, Process};
///
/// fn square_all(a: Array<f64>) {
///     for x in a.lock().unwrap().iter_mut() { *x *= *x; }
/// }
///
/// let a = Array::from_slice(&[1.0, 2.0, 3.0]).unwrap();
/// Process::spawn(square_all, (a.clone(),)).unwrap().join().unwrap();
/// assert_eq!(a.to_vec(), [1.0, 4.0, 9.0]);
/// assert_eq!(Array::<u8>::zeroed(4).unwrap().to_vec(), [0; 4]);
/// ```
#[derive(Clone)]
pub struct Array<T> {
    data: Data<T>,
}

data_serde!(Array, Kind::Array);

impl<T: Plain> Array<T> {
    /// An array of `len` zero elements.
    ///
    /// # Errors
    ///
    /// The OS refused the memory (or the size overflows).
    pub fn zeroed(len: usize) -> io::Result<Array<T>> {
        Ok(Array { data: Data::zeroed("multiproc-array", Kind::Array, len)? })
    }

    /// An array holding a copy of `items`.
    ///
    /// # Errors
    ///
    /// As [`Array::zeroed`].
    pub fn from_slice(items: &[T]) -> io::Result<Array<T>> {
        let a = Array::zeroed(items.len())?;
        // SAFETY: a fresh segment of `items.len()` elements nobody else sees.
        unsafe { write_all(a.data.ptr(), items) };
        Ok(a)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for an array of no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `index` (under the lock), or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        self.lock().unwrap_or_else(OwnerDied::into_inner).get(index).copied()
    }

    /// Sets element `index` (under the lock).
    ///
    /// # Panics
    ///
    /// If `index` is out of bounds.
    pub fn set(&self, index: usize, value: T) {
        self.lock().unwrap_or_else(OwnerDied::into_inner)[index] = value;
    }

    /// A copy of all elements (under the lock).
    pub fn to_vec(&self) -> Vec<T> {
        self.lock().unwrap_or_else(OwnerDied::into_inner).to_vec()
    }

    /// Overwrites all elements (under the lock).
    ///
    /// # Panics
    ///
    /// If `items` does not have exactly [`len`](Array::len) elements.
    pub fn copy_from_slice(&self, items: &[T]) {
        self.lock().unwrap_or_else(OwnerDied::into_inner).copy_from_slice(items);
    }

    /// Takes the lock; the guard dereferences to the elements.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (with the guard; the lock is held) if a holder died.
    ///
    /// # Panics
    ///
    /// If this thread already holds the lock (a guard of it is alive; `get`
    /// and `set` take it too): the call could only wait for ever. Unlike
    /// Python's, whose lock is an RLock, this lock is not re-entrant: the
    /// guard is the way to the data while it is held.
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        match self.data.lock().lock_once(Deadline::NEVER, REENTRY) {
            Ok(Acquired::Clean) => Ok(self.guard()),
            Ok(Acquired::OwnerDied) => Err(OwnerDied::new(self.guard())),
            Err(_) => unreachable!("a wait without a deadline does not time out"),
        }
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`TryLockError::Timeout`] after the timeout, [`TryLockError::OwnerDied`]
    /// (with the guard) if a holder died.
    pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<ArrayGuard<'_, T>> {
        match self.data.lock().lock(Deadline::after(timeout)) {
            Ok(Acquired::Clean) => Ok(self.guard()),
            Ok(Acquired::OwnerDied) => Err(TryLockError::OwnerDied(OwnerDied::new(self.guard()))),
            Err(_) => Err(TryLockError::Timeout),
        }
    }

    fn guard(&self) -> ArrayGuard<'_, T> {
        ArrayGuard { array: self, _not_send: PhantomData }
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lock_timeout(Duration::from_millis(10)) {
            Ok(g) => f.debug_tuple("Array").field(&&*g).finish(),
            Err(_) => write!(f, "Array(<locked>, len {})", self.len()),
        }
    }
}

/// The lock of an [`Array`], held: dereferences to the elements.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Plain> {
    array: &'a Array<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T: Plain> Deref for ArrayGuard<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the lock is held and every access to an Array's elements
        // takes it; the segment holds `len` valid elements (any bit pattern
        // is) and outlives the guard.
        unsafe { std::slice::from_raw_parts(self.array.data.ptr(), self.array.len()) }
    }
}

impl<T: Plain> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, exclusive through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.array.data.ptr(), self.array.len()) }
    }
}

impl<T: Plain> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        self.array.data.lock().unlock();
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&**self).finish()
    }
}

/// A fixed-length array of a plain type in shared memory, without a lock
/// (Python's `multiprocessing.RawArray`). New arrays are zeroed.
///
/// Element reads and writes are **unsynchronized** but sound: an element of
/// up to 8 bytes is read and written whole (one atomic access); bigger
/// elements and whole-array copies may be torn by a concurrent writer.
/// For integers, [`as_atomic`](RawArray::as_atomic) gives atomic elements.
///
/// # Examples
///
/// ```
/// use multiproc::{Process, RawArray};
///
/// fn mark(a: RawArray<u32>, i: usize) { a.set(i, 7); }
///
/// let a = RawArray::<u32>::zeroed(3).unwrap();
/// Process::spawn(mark, (a.clone(), 1usize)).unwrap().join().unwrap();
/// assert_eq!(a.to_vec(), [0, 7, 0]);
/// ```
#[derive(Clone)]
pub struct RawArray<T> {
    data: Data<T>,
}

data_serde!(RawArray, Kind::RawArray);

impl<T: Plain> RawArray<T> {
    /// An array of `len` zero elements.
    ///
    /// # Errors
    ///
    /// The OS refused the memory (or the size overflows).
    pub fn zeroed(len: usize) -> io::Result<RawArray<T>> {
        Ok(RawArray { data: Data::zeroed("multiproc-rawarray", Kind::RawArray, len)? })
    }

    /// An array holding a copy of `items`.
    ///
    /// # Errors
    ///
    /// As [`RawArray::zeroed`].
    pub fn from_slice(items: &[T]) -> io::Result<RawArray<T>> {
        let a = RawArray::zeroed(items.len())?;
        a.copy_from_slice(items);
        Ok(a)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for an array of no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        // SAFETY: `index` is in bounds; elements are accessed only through
        // atomic copies and atomics.
        (index < self.len()).then(|| unsafe { plain::load(self.data.ptr().add(index)) })
    }

    /// Sets element `index`.
    ///
    /// # Panics
    ///
    /// If `index` is out of bounds.
    pub fn set(&self, index: usize, value: T) {
        assert!(index < self.len(), "index {index} out of bounds for a RawArray of length {}", self.len());
        // SAFETY: as in `get`.
        unsafe { plain::store(self.data.ptr().add(index), value) }
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: `len` elements, accessed only atomically.
        unsafe { read_all(self.data.ptr(), self.len()) }
    }

    /// Overwrites all elements.
    ///
    /// # Panics
    ///
    /// If `items` does not have exactly [`len`](RawArray::len) elements.
    pub fn copy_from_slice(&self, items: &[T]) {
        assert_eq!(items.len(), self.len(), "copy_from_slice needs exactly as many items as the RawArray holds");
        // SAFETY: `len` elements, accessed only atomically.
        unsafe { write_all(self.data.ptr(), items) }
    }

    /// A pointer to the first element, for code that synchronizes by its
    /// own means.
    pub fn as_ptr(&self) -> *mut T {
        self.data.ptr()
    }
}

impl<T: AtomicPlain> RawArray<T> {
    /// The elements as atomics, for lock-free updates shared by processes.
    pub fn as_atomic(&self) -> &[T::Atomic] {
        // SAFETY: `len` elements, each aligned to its size (offset 64 plus a
        // multiple of the element size), and the atomic type has the size
        // and alignment of `T`; every access to them is atomic.
        unsafe { std::slice::from_raw_parts(self.data.ptr().cast::<T::Atomic>(), self.len()) }
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}
