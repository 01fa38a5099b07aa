//! `Value<T>` (one shared value behind a lock) and `RawValue<T>` (without).

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic;
use std::time::Duration;

use super::data::{Data, Kind, data_serde};
use crate::memory::plain::{self, Plain};
use crate::memory::raw_mutex::Acquired;
use crate::sync::{LockResult, OwnerDied, TryLockError, TryLockResult};
use crate::sys::Deadline;

/// What to do instead of taking a Value's lock again on the thread that
/// holds it.
const REENTRY: &str = "read and write the value through the guard you hold (get and set take the lock)";

/// One value of a plain type in shared memory, with a lock (Python's
/// `multiprocessing.Value`).
///
/// Every access goes through the lock: [`get`](Value::get) and
/// [`set`](Value::set) for one copy, [`lock`](Value::lock) for a
/// read-modify-write under a guard. Pass a clone to a child process and its
/// writes are the parent's reads. For access without a lock, see
/// [`RawValue`].
///
/// The lock is robust like [`Lock`](crate::Lock): `lock()` reports
/// [`OwnerDied`] if a holder died mid-update. `get` and `set` go on in that
/// case (any bit pattern is a valid `T`, so the value is usable, if perhaps
/// stale or torn).
///
/// # Examples
///
/// ```
/// use multiproc::{Process, Value};
///
/// fn bump(counter: Value<i64>) {
///     for _ in 0..500 {
///         *counter.lock().unwrap() += 1;
///     }
/// }
///
/// let counter = Value::new(0i64).unwrap();
/// let mut kids: Vec<_> = (0..2).map(|_| Process::spawn(bump, (counter.clone(),)).unwrap()).collect();
/// for k in &mut kids { k.join().unwrap(); }
/// assert_eq!(counter.get(), 1000);
/// ```
#[derive(Clone)]
pub struct Value<T> {
    data: Data<T>,
}

data_serde!(Value, Kind::Value);

impl<T: Plain> Value<T> {
    /// A shared value holding `value`.
    ///
    /// # Errors
    ///
    /// The OS refused the memory.
    pub fn new(value: T) -> io::Result<Value<T>> {
        let v = Value { data: Data::zeroed("multiproc-value", Kind::Value, 1)? };
        // SAFETY: a fresh segment nobody else can see yet; one element.
        unsafe { plain::store(v.data.ptr(), value) };
        Ok(v)
    }

    /// A copy of the value (taken under the lock).
    pub fn get(&self) -> T {
        *self.lock().unwrap_or_else(OwnerDied::into_inner)
    }

    /// Replaces the value (under the lock).
    pub fn set(&self, value: T) {
        *self.lock().unwrap_or_else(OwnerDied::into_inner) = value;
    }

    /// Takes the lock; the guard reads and writes the value.
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
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
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
    pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<ValueGuard<'_, T>> {
        match self.data.lock().lock(Deadline::after(timeout)) {
            Ok(Acquired::Clean) => Ok(self.guard()),
            Ok(Acquired::OwnerDied) => Err(TryLockError::OwnerDied(OwnerDied::new(self.guard()))),
            Err(_) => Err(TryLockError::Timeout),
        }
    }

    fn guard(&self) -> ValueGuard<'_, T> {
        ValueGuard { value: self, _not_send: PhantomData }
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lock_timeout(Duration::from_millis(10)) {
            Ok(g) => f.debug_tuple("Value").field(&*g).finish(),
            Err(_) => f.write_str("Value(<locked>)"),
        }
    }
}

/// The lock of a [`Value`], held: dereferences to the value.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Plain> {
    value: &'a Value<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T: Plain> Deref for ValueGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the lock is held, and every access to a Value's element
        // takes the lock, so nobody writes it meanwhile; the segment holds
        // one valid `T` (any bit pattern is) and outlives the guard.
        unsafe { &*self.value.data.ptr() }
    }
}

impl<T: Plain> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and the guard is the only access path while
        // the lock is held (`&mut self` makes it exclusive here).
        unsafe { &mut *self.value.data.ptr() }
    }
}

impl<T: Plain> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        self.value.data.lock().unlock();
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}

/// One value of a plain type in shared memory, without a lock (Python's
/// `multiprocessing.RawValue`).
///
/// [`get`](RawValue::get) and [`set`](RawValue::set) are **unsynchronized**:
/// they never block and never cause undefined behaviour, but a value read
/// while another process writes it may be torn (part old, part new) if it is
/// larger than 8 bytes, and a read-modify-write from two processes loses
/// updates. For integers, [`as_atomic`](RawValue::as_atomic) gives atomic
/// operations. Otherwise coordinate with a [`Lock`](crate::Lock), or use
/// [`Value`].
///
/// # Examples
///
/// ```
/// use std::sync::atomic::Ordering;
/// use multiproc::{Process, RawValue};
///
/// fn add(n: RawValue<u64>) { n.as_atomic().fetch_add(5, Ordering::Relaxed); }
///
/// let n = RawValue::new(1u64).unwrap();
/// Process::spawn(add, (n.clone(),)).unwrap().join().unwrap();
/// assert_eq!(n.get(), 6);
/// ```
#[derive(Clone)]
pub struct RawValue<T> {
    data: Data<T>,
}

data_serde!(RawValue, Kind::RawValue);

impl<T: Plain> RawValue<T> {
    /// A shared value holding `value`.
    ///
    /// # Errors
    ///
    /// The OS refused the memory.
    pub fn new(value: T) -> io::Result<RawValue<T>> {
        let v = RawValue { data: Data::zeroed("multiproc-rawvalue", Kind::RawValue, 1)? };
        v.set(value);
        Ok(v)
    }

    /// A copy of the value (unsynchronized: see the type's docs).
    pub fn get(&self) -> T {
        // SAFETY: one element in live shared memory, accessed only through
        // atomic copies and atomics.
        unsafe { plain::load(self.data.ptr()) }
    }

    /// Replaces the value (unsynchronized: see the type's docs).
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`.
        unsafe { plain::store(self.data.ptr(), value) }
    }

    /// A pointer to the value, for code that synchronizes by its own means.
    pub fn as_ptr(&self) -> *mut T {
        self.data.ptr()
    }
}

impl<T: AtomicPlain> RawValue<T> {
    /// The value as an atomic, for lock-free updates shared by processes
    /// (`fetch_add`, `compare_exchange`, …).
    pub fn as_atomic(&self) -> &T::Atomic {
        // SAFETY: the element is aligned (offset 64 in a page-aligned
        // mapping) and the atomic type has the size and alignment of `T`
        // (`AtomicPlain`); other accesses are atomic too.
        unsafe { &*self.data.ptr().cast::<T::Atomic>() }
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An integer type with a matching atomic type, for
/// [`RawValue::as_atomic`] and [`RawArray::as_atomic`](crate::RawArray::as_atomic).
pub trait AtomicPlain: Plain + sealed::Sealed {
    /// The atomic type of the same size and alignment (`AtomicU64` for `u64`).
    type Atomic: Sync + fmt::Debug;
}

macro_rules! atomic_plain {
    ($($t:ty => $a:ty),*) => { $(
        impl sealed::Sealed for $t {}
        impl AtomicPlain for $t {
            type Atomic = $a;
        }
        const _: () = assert!(
            std::mem::size_of::<$t>() == std::mem::size_of::<$a>()
                && std::mem::align_of::<$t>() == std::mem::align_of::<$a>()
        );
    )* };
}

atomic_plain!(
    u8 => atomic::AtomicU8, u16 => atomic::AtomicU16, u32 => atomic::AtomicU32, u64 => atomic::AtomicU64,
    usize => atomic::AtomicUsize, i8 => atomic::AtomicI8, i16 => atomic::AtomicI16, i32 => atomic::AtomicI32,
    i64 => atomic::AtomicI64, isize => atomic::AtomicIsize
);
