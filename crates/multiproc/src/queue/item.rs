//! How an item becomes bytes in a queue: the serializer and the per-thread
//! buffer it writes into.

use std::cell::RefCell;

use serde::Serialize;

use crate::wire::{self, WireError};

/// Per-thread buffers larger than this are not kept between calls.
const KEEP_BUFFER: usize = 1 << 20;

thread_local! {
    /// Serialization buffer reused by this thread's puts and gets.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's cleared buffer, or with a fresh one (see
/// [`crate::thread_buffer`]).
pub(super) fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    crate::thread_buffer::with_kept(&BUFFER, KEEP_BUFFER, f)
}

/// Serializes `value` into `buf` (which is empty).
///
/// Items are plain postcard, without the descriptor side channel of
/// `wire::encode`: a handle inside an item fails to serialize, and only then
/// is the item serialized again through `wire` to say why.
pub(super) fn encode<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<(), WireError> {
    match postcard::serialize_with_flavor(value, Append(buf)) {
        Ok(()) => Ok(()),
        Err(fast) => match wire::encode(value) {
            Ok(e) if !e.fds.is_empty() => Err(WireError::Encode(
                "the item carries handles (file descriptors), which cannot travel through a queue; \
                 send them over a Pipe"
                    .into(),
            )),
            Ok(_) => Err(WireError::Encode(fast.to_string())),
            Err(e) => Err(e),
        },
    }
}

/// A postcard output that appends to a borrowed buffer with
/// `extend_from_slice` (a `memcpy` for byte strings, also in debug builds).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}
