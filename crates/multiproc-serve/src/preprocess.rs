//! The preprocessing task of a pipeline, run in its pool's processes: a
//! chunk of requests in, the step's outputs out, each encoded for the model
//! into one buffer ([`Items`]).
//!
//! The requests travel encoded in one buffer too (each encoded by its
//! caller as it was queued), and the process decodes
//! them one at a time, each just before its step runs: decoding the whole
//! chunk first made a few hundred allocations at once and freed them at
//! once, which the C allocator serves from its slow paths (and consolidates
//! on the next large allocation); one at a time, each input and output
//! reuses the memory the previous one freed.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use multiproc::Task;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::items::{ITEM_BYTES_GUESS, Items};
use crate::worker::panic_message;

/// A preprocessed chunk: each input already encoded for the model by the
/// preprocessing process (or its error), so that it reaches the model's
/// batch as it came: never decoded and encoded again here. The pool lends
/// the result to its callback; the lock lets the callback take it out
/// instead of copying it.
pub(crate) struct Preprocessed(Mutex<Option<Items>>);

impl Preprocessed {
    /// Takes the chunk's items out (none if already taken).
    pub fn take(&self) -> Items {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default()
    }
}

impl Serialize for Preprocessed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Preprocessed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::deserialize(d).map(|v| Preprocessed(Mutex::new(v)))
    }
}

/// The preprocessing step `F` from `R` to `I` over a chunk of encoded
/// requests, each output encoded for the model, as one pool task
/// (zero-sized, like `F`).
pub(crate) struct PreprocessChunk<F, R, I>(pub F, pub PhantomData<fn(R) -> I>);

impl<F: Copy, R, I> Clone for PreprocessChunk<F, R, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Copy, R, I> Copy for PreprocessChunk<F, R, I> {}

impl<F, R, I> Task<(Items,), Preprocessed> for PreprocessChunk<F, R, I>
where
    F: Task<(R,), Result<I, String>>,
    R: DeserializeOwned + 'static,
    I: Serialize + 'static,
{
    fn call(self, (chunk,): (Items,)) -> Preprocessed {
        let n = chunk.len();
        let mut items = Items::with_capacity(n, chunk.byte_len().saturating_add(n.saturating_mul(ITEM_BYTES_GUESS)));
        for i in 0..n {
            match chunk.decode::<R>(i, "request") {
                // A panic is that request's error: the chunk's other
                // requests (up to `chunk` of them) are not its.
                Ok(r) => match catch_unwind(AssertUnwindSafe(|| self.0.call((r,)))) {
                    Ok(output) => items.push_output(output),
                    Err(panic) => items.push_error(&format!("preprocessing panicked: {}", panic_message(&*panic))),
                },
                Err(message) => items.push_error(&message),
            }
        }
        Preprocessed(Mutex::new(Some(items)))
    }
}
