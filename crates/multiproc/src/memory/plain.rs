//! Plain data: the types that may live in shared memory, and copies in and out
//! of shared memory that stay sound while other processes write to it.

use std::mem::{MaybeUninit, size_of};
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

/// A type that can live in shared memory and be copied in and out of it as
/// bytes: integers, floats, arrays of them, and `#[repr(C)]` structs of them
/// without padding.
///
/// `bool` and `char` are deliberately not `Plain`: another process could
/// write a byte that is not a valid `bool` (use `u8`), and likewise for
/// `char` (use `u32`).
///
/// # Safety
///
/// Implement it only for a `Copy` type that
/// - is valid for **every** bit pattern (a value read back may have been
///   written by any process, or be torn by a racing write),
/// - has **no padding** bytes (its bytes are copied as integers),
/// - holds no pointers or references (they mean nothing in another process),
/// - has an alignment of at most 64.
///
/// # Examples
///
/// ```
/// use multiproc::{Plain, Value};
///
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Point { x: f64, y: f64 }
///
/// // SAFETY: two f64s, no padding, every bit pattern is a valid Point.
/// unsafe impl Plain for Point {}
///
/// let p = Value::new(Point { x: 1.0, y: 2.0 }).unwrap();
/// assert_eq!(p.get().y, 2.0);
/// ```
pub unsafe trait Plain: Copy + Send + Sync + 'static {}

macro_rules! plain {
    ($($t:ty),*) => { $(
        // SAFETY: primitive numbers: every bit pattern valid, no padding.
        unsafe impl Plain for $t {}
    )* };
}

plain!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);

// SAFETY: an array of plain values has no padding between elements (its size
// is N times the element's) and every bit pattern is valid.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

/// Reads a `T` at `src` with relaxed atomic loads (torn if another process
/// writes at the same time, but never undefined behaviour).
///
/// # Safety
///
/// `src` must point to `size_of::<T>()` bytes of live shared memory that is
/// only ever accessed atomically or through these functions.
pub(crate) unsafe fn load<T: Plain>(src: *const T) -> T {
    let mut out = MaybeUninit::<T>::uninit();
    // SAFETY: `out` provides size_of::<T>() writable bytes; the caller vouches
    // for `src`.
    unsafe { copy_in(src.cast(), out.as_mut_ptr().cast(), size_of::<T>()) };
    // SAFETY: every byte was written, and every bit pattern is a valid `T`
    // (`Plain`).
    unsafe { out.assume_init() }
}

/// Writes `value` at `dst` with relaxed atomic stores.
///
/// # Safety
///
/// As for [`load`], for writing.
pub(crate) unsafe fn store<T: Plain>(dst: *mut T, value: T) {
    // SAFETY: `value` has no padding (`Plain`), so its size_of::<T>() bytes
    // are initialised; the caller vouches for `dst`.
    unsafe { copy_out((&raw const value).cast(), dst.cast(), size_of::<T>()) };
}

/// Copies `len` bytes from shared memory at `src` to private memory at `dst`.
///
/// # Safety
///
/// `src` as for [`load`]; `dst` valid for `len` bytes of writes and not
/// shared.
pub(crate) unsafe fn copy_in(src: *const u8, dst: *mut u8, len: usize) {
    // A naturally aligned 2-, 4- or 8-byte value is one atomic access of its
    // size, so that it mixes soundly with `RawValue::as_atomic` users.
    // ORDERING: Relaxed, as below.
    let src_mut = src.cast_mut();
    match exact(src, len) {
        2 => {
            // SAFETY: in bounds and aligned to the access size (`exact`).
            return unsafe {
                dst.cast::<u16>().write_unaligned(AtomicU16::from_ptr(src_mut.cast()).load(Ordering::Relaxed))
            };
        }
        4 => {
            // SAFETY: in bounds and aligned to the access size (`exact`).
            return unsafe {
                dst.cast::<u32>().write_unaligned(AtomicU32::from_ptr(src_mut.cast()).load(Ordering::Relaxed))
            };
        }
        8 => {
            // SAFETY: in bounds and aligned to the access size (`exact`).
            return unsafe {
                dst.cast::<u64>().write_unaligned(AtomicU64::from_ptr(src_mut.cast()).load(Ordering::Relaxed))
            };
        }
        _ => {}
    }
    let mut i = 0;
    // ORDERING: Relaxed everywhere: these copies carry no synchronisation;
    // callers order them with a lock (or accept tearing, for raw values).
    while i < len && !(src as usize + i).is_multiple_of(8) {
        // SAFETY: in bounds (i < len); AtomicU8 has alignment 1.
        unsafe { *dst.add(i) = AtomicU8::from_ptr(src.add(i).cast_mut()).load(Ordering::Relaxed) };
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: in bounds; `src + i` is 8-aligned by the loop above.
        let word = unsafe { AtomicU64::from_ptr(src.add(i).cast_mut().cast()).load(Ordering::Relaxed) };
        // SAFETY: in bounds; unaligned write to private memory.
        unsafe { dst.add(i).cast::<u64>().write_unaligned(word) };
        i += 8;
    }
    while i < len {
        // SAFETY: in bounds; alignment 1.
        unsafe { *dst.add(i) = AtomicU8::from_ptr(src.add(i).cast_mut()).load(Ordering::Relaxed) };
        i += 1;
    }
}

/// Copies `len` bytes from private memory at `src` to shared memory at `dst`.
///
/// # Safety
///
/// `dst` as for [`store`]; `src` valid for `len` initialised bytes.
pub(crate) unsafe fn copy_out(src: *const u8, dst: *mut u8, len: usize) {
    // As in `copy_in`.
    // ORDERING: Relaxed, as below.
    match exact(dst, len) {
        2 => {
            // SAFETY: in bounds and aligned to the access size (`exact`).
            return unsafe {
                AtomicU16::from_ptr(dst.cast()).store(src.cast::<u16>().read_unaligned(), Ordering::Relaxed)
            };
        }
        4 => {
            // SAFETY: in bounds and aligned to the access size (`exact`).
            return unsafe {
                AtomicU32::from_ptr(dst.cast()).store(src.cast::<u32>().read_unaligned(), Ordering::Relaxed)
            };
        }
        8 => {
            // SAFETY: in bounds and aligned to the access size (`exact`).
            return unsafe {
                AtomicU64::from_ptr(dst.cast()).store(src.cast::<u64>().read_unaligned(), Ordering::Relaxed)
            };
        }
        _ => {}
    }
    let mut i = 0;
    // ORDERING: Relaxed, as in `copy_in`.
    while i < len && !(dst as usize + i).is_multiple_of(8) {
        // SAFETY: in bounds; alignment 1.
        unsafe { AtomicU8::from_ptr(dst.add(i)).store(*src.add(i), Ordering::Relaxed) };
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: in bounds; unaligned read of private memory.
        let word = unsafe { src.add(i).cast::<u64>().read_unaligned() };
        // SAFETY: in bounds; `dst + i` is 8-aligned by the loop above.
        unsafe { AtomicU64::from_ptr(dst.add(i).cast()).store(word, Ordering::Relaxed) };
        i += 8;
    }
    while i < len {
        // SAFETY: in bounds; alignment 1.
        unsafe { AtomicU8::from_ptr(dst.add(i)).store(*src.add(i), Ordering::Relaxed) };
        i += 1;
    }
}

/// `len` if it is 2, 4 or 8 and `at` is aligned to it; otherwise 0.
fn exact(at: *const u8, len: usize) -> usize {
    if matches!(len, 2 | 4 | 8) && (at as usize).is_multiple_of(len) { len } else { 0 }
}

/// A stable hash of a type's name, stored in a segment so that a handle
/// decoded as the wrong element type is refused.
pub(crate) use crate::code::type_hash as type_tag;

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn copies_round_trip_at_every_alignment() {
        let mut shared = [0u64; 8];
        let base = shared.as_mut_ptr().cast::<u8>();
        for offset in 0..8 {
            for len in [0usize, 1, 7, 8, 9, 23] {
                let src: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37).wrapping_add(offset as u8)).collect();
                let mut back = vec![0u8; len];
                // SAFETY: offset + len <= 31 < 64 bytes of `shared`.
                unsafe {
                    copy_out(src.as_ptr(), base.add(offset), len);
                    copy_in(base.add(offset), back.as_mut_ptr(), len);
                }
                assert_eq!(back, src);
            }
        }
    }

    #[test]
    fn load_and_store_values() {
        let mut cell = [0u64; 4];
        let p = cell.as_mut_ptr().cast::<[f32; 5]>();
        // SAFETY: 20 bytes inside 32 bytes of `cell`, aligned for f32.
        unsafe {
            store(p, [1.0, 2.0, 3.0, 4.0, 5.5]);
            assert_eq!(load(p), [1.0, 2.0, 3.0, 4.0, 5.5]);
        }
    }
}
