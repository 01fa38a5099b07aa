//! Shared state: [`Value`] and [`Array`] of plain data (with a lock), their
//! lock-free [`RawValue`] and [`RawArray`] forms, and [`SharedMemory`]
//! blocks of bytes (Python's `multiprocessing.Value`, `Array`,
//! `sharedctypes.RawValue`/`RawArray` and `shared_memory.SharedMemory`).
//!
//! Everything here is a handle to memory shared by processes: `Clone` shares
//! it within a process, and passing it to
//! [`Process::spawn`](crate::Process::spawn) (or in a message) shares it with
//! another process. New memory is zeroed.
//!
//! **Nothing leaks**: `Value`, `Array` and anonymous `SharedMemory` live in
//! memfds, which the kernel frees when the last process using them lets go,
//! however it ends. A named `SharedMemory` (in `/dev/shm`) is removed by its
//! creator when the creator's last handle drops, or by a tracker process if
//! the creator dies first, even by `kill -9`.
//!
//! Element types implement [`Plain`]: integers, floats, arrays of them and
//! `#[repr(C)]` structs of them without padding.
//!
//! # Examples
//!
//! ```
//! use multiproc::{Array, Process, Value};
//!
//! fn child(total: Value<f64>, cells: Array<u32>) {
//!     total.set(3.5);
//!     cells.set(2, 9);
//! }
//!
//! let total = Value::new(0.0f64).unwrap();
//! let cells = Array::<u32>::zeroed(4).unwrap();
//! Process::spawn(child, (total.clone(), cells.clone())).unwrap().join().unwrap();
//! assert_eq!(total.get(), 3.5);
//! assert_eq!(cells.to_vec(), [0, 0, 9, 0]);
//! ```

mod array;
pub(crate) mod data;
mod error;
mod memory;
pub(crate) mod tracker;
mod value;

pub use crate::memory::plain::Plain;
pub use array::{Array, ArrayGuard, RawArray};
pub use error::SharedMemoryError;
pub use memory::SharedMemory;
pub use value::{AtomicPlain, RawValue, Value, ValueGuard};
