//! A pipeline's preprocessing process, its own side: chunks of requests
//! in from its lane in the server (`lane.rs`), the step's outputs out, each
//! encoded for the model into one buffer ([`Items`]), until the lane closes
//! its pipe.
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

use multiproc::{Connection, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::items::{ITEM_BYTES_GUESS, Items};
use crate::worker::panic_message;

/// The body of a preprocessing process running the step `F` from `R` to
/// `I` (zero-sized, like `F`): it leaves stopping to the server, as model
/// workers do.
pub(crate) struct PreprocessLoop<F, R, I>(pub F, pub PhantomData<fn(R) -> I>);

impl<F: Copy, R, I> Clone for PreprocessLoop<F, R, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Copy, R, I> Copy for PreprocessLoop<F, R, I> {}

impl<F, R, I> Task<(Connection<Items>,), ()> for PreprocessLoop<F, R, I>
where
    F: Task<(R,), Result<I, String>>,
    R: DeserializeOwned + 'static,
    I: Serialize + 'static,
{
    fn call(self, (lane,): (Connection<Items>,)) {
        multiproc::process::ignore_stop_signals();
        // Ends when the lane closes its pipe (or is gone).
        while let Ok(chunk) = lane.recv() {
            let outputs = preprocess_chunk(self.0, &chunk);
            drop(chunk);
            if lane.send(&outputs).is_err() {
                break;
            }
        }
    }
}

/// The step `f` over a chunk of encoded requests, each output encoded for
/// the model (or its request's error).
fn preprocess_chunk<F, R, I>(f: F, chunk: &Items) -> Items
where
    F: Task<(R,), Result<I, String>>,
    R: DeserializeOwned,
    I: Serialize,
{
    let n = chunk.len();
    let mut items = Items::with_capacity(n, chunk.byte_len().saturating_add(n.saturating_mul(ITEM_BYTES_GUESS)));
    for i in 0..n {
        match chunk.decode::<R>(i, "request") {
            // A panic is that request's error: the chunk's other requests
            // (up to `chunk` of them) are not its.
            Ok(r) => match catch_unwind(AssertUnwindSafe(|| f.call((r,)))) {
                Ok(output) => items.push_output(output),
                Err(panic) => items.push_error(&format!("preprocessing panicked: {}", panic_message(&*panic))),
            },
            Err(message) => items.push_error(&message),
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shout(s: String) -> Result<String, String> {
        match s.as_str() {
            "panic" => panic!("told to"),
            "refuse" => Err("refused".to_string()),
            _ => Ok(s.to_uppercase()),
        }
    }

    #[test]
    fn each_request_gets_its_output_or_its_own_error() {
        let mut chunk = Items::default();
        for s in ["a", "panic", "refuse", "b"] {
            chunk.push_output(Ok(&s.to_string()));
        }
        chunk.push_bytes(&[0xff]);
        let out = preprocess_chunk(shout, &chunk);
        assert_eq!(out.len(), 5);
        assert_eq!(out.decode::<String>(0, "output").unwrap(), "A");
        assert!(matches!(out.get(1), Some(Err(m)) if m.contains("panicked: told to")), "{:?}", out.get(1));
        assert!(matches!(out.get(2), Some(Err("refused"))), "{:?}", out.get(2));
        assert_eq!(out.decode::<String>(3, "output").unwrap(), "B");
        assert!(matches!(out.get(4), Some(Err(_))), "an input that does not decode is its request's error");
    }
}
