//! The preprocessing task of a pipeline, run in its pool's processes: a
//! chunk of requests in, the step's outputs out, each encoded for the model
//! into one buffer ([`Items`]).

use std::marker::PhantomData;
use std::sync::Mutex;

use multiproc::Task;
use serde::Serialize;

use crate::items::{ITEM_BYTES_GUESS, Items};

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

/// The preprocessing step `F` over a chunk, each output encoded for the
/// model, as one pool task (zero-sized, like `F`).
pub(crate) struct PreprocessChunk<F, I>(pub F, pub PhantomData<fn() -> I>);

impl<F: Copy, I> Clone for PreprocessChunk<F, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Copy, I> Copy for PreprocessChunk<F, I> {}

impl<F, R, I> Task<(Vec<R>,), Preprocessed> for PreprocessChunk<F, I>
where
    F: Task<(R,), Result<I, String>>,
    I: Serialize + 'static,
{
    fn call(self, (chunk,): (Vec<R>,)) -> Preprocessed {
        let mut items = Items::with_capacity(chunk.len(), chunk.len().saturating_mul(ITEM_BYTES_GUESS));
        for r in chunk {
            items.push_output(self.0.call((r,)));
        }
        Preprocessed(Mutex::new(Some(items)))
    }
}
