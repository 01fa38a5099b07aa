//! Messages between the scheduler and a worker.
//!
//! One frame on a worker's socket carries a batch of records, each a
//! postcard-encoded [`ToWorker`] or [`FromWorker`] written back to back. File
//! descriptors are a separate FIFO stream: every frame's descriptors are
//! appended to it, and each record takes the number it announces, in order
//! (so a record may use more descriptors than one frame can carry).
//!
//! A chunk's input is postcard `Vec<A>` ("bulk"), or, when some item could
//! not be serialized, a `Vec<Framed>` with one separately encoded item each
//! ("framed"), so the failure stays with that item. Results come back as
//! `Vec<R>` when every item succeeded, `Vec<Result<R, TaskError>>` when some
//! failed, or framed when some result could not be serialized.

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use super::error::TaskError;
use crate::sys::imp::MAX_FDS_PER_MSG;
use crate::wire::{self, WireError};

/// Payloads larger than this go through the shared-memory ring.
pub(crate) const RING_THRESHOLD: usize = 8 * 1024;
/// Capacity of each ring (pages are touched only as they are used).
pub(crate) const RING_CAPACITY: usize = 16 << 20;
/// A frame is closed once its payload is this large.
pub(crate) const FRAME_TARGET: usize = 60 * 1024;

/// A function reference that crosses to a worker of the same build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunnerRef {
    /// Code offset of the monomorphic runner.
    pub offset: i64,
    /// Hash of the types it was made for.
    pub hash: u64,
}

/// Where a payload's bytes are.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Payload<'a> {
    /// In the record itself (as one byte string: serde's own `&[u8]` goes
    /// through its serializer a byte at a time).
    Inline(#[serde(borrow, with = "serde_bytes")] &'a [u8]),
    /// In the sender's ring.
    Ring { at: u64, len: u64 },
    /// In a sealed memory file: the record's first descriptor.
    Memfd { len: u64 },
    /// In a shared slab the worker was given earlier.
    Slab { id: u32, len: u64 },
}

/// Scheduler → worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker<'a> {
    /// Run a chunk of items.
    Chunk {
        id: u64,
        runner: RunnerRef,
        items: u32,
        framed: bool,
        /// Items not to run, with the error to report for each.
        skip: Vec<(u32, TaskError)>,
        #[serde(borrow)]
        input: Payload<'a>,
        /// Descriptors of the input's handles (after the memfd, if any).
        nfds: u32,
    },
    /// The ring for large inputs: the record's one descriptor.
    InputRing { cap: u64 },
    /// A slab for large inputs: the record's one descriptor.
    Slab { id: u32, cap: u64 },
}

/// How a chunk's results are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Format {
    /// `Vec<R>`: every item succeeded.
    AllOk,
    /// `Vec<Result<R, TaskError>>`.
    Mixed,
    /// `Vec<Framed>` of `Result<R, TaskError>` items.
    Framed,
}

/// Worker → scheduler.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker<'a> {
    /// The results of a chunk.
    Done {
        id: u64,
        format: Format,
        #[serde(borrow)]
        output: Payload<'a>,
        nfds: u32,
    },
    /// The ring for large results: the record's one descriptor.
    OutputRing { cap: u64 },
    /// The initializer failed; the worker exits.
    InitFailed(String),
}

/// One separately encoded item of a framed chunk.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Framed<'a> {
    /// The item's bytes and how many descriptors it owns.
    Value {
        #[serde(borrow, with = "serde_bytes")]
        bytes: &'a [u8],
        nfds: u32,
    },
    /// The item could not be serialized.
    Unserializable(String),
}

/// Splits a frame payload into its records.
pub(crate) fn records<'a, T: Deserialize<'a>>(mut payload: &'a [u8]) -> impl Iterator<Item = Result<T, String>> + 'a {
    std::iter::from_fn(move || {
        if payload.is_empty() {
            return None;
        }
        match postcard::take_from_bytes::<T>(payload) {
            Ok((record, rest)) => {
                payload = rest;
                Some(Ok(record))
            }
            Err(e) => {
                payload = &[];
                Some(Err(format!("corrupt pool record: {e}")))
            }
        }
    })
}

/// Records gathered into frames of about [`FRAME_TARGET`] bytes and at most
/// [`MAX_FDS_PER_MSG`](crate::sys::imp::MAX_FDS_PER_MSG) descriptors each.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Where finished frames go: payload and descriptors.
pub(crate) type Emit<'a> = dyn FnMut(&[u8], Vec<OwnedFd>) -> Result<(), WireError> + 'a;

impl Batch {
    /// Adds a record and the descriptors it claims; emits full frames.
    pub(crate) fn add<T: Serialize>(
        &mut self,
        record: &T,
        fds: Vec<OwnedFd>,
        emit: &mut Emit<'_>,
    ) -> Result<(), WireError> {
        for fd in fds {
            if self.fds.len() == MAX_FDS_PER_MSG {
                // Earlier records' descriptors come first in the stream, so a
                // frame may go out ahead of the record that claims its last ones.
                emit(&self.payload, std::mem::take(&mut self.fds))?;
                self.payload.clear();
            }
            self.fds.push(fd);
        }
        wire::encode_into(record, &mut self.payload)?;
        if self.payload.len() >= FRAME_TARGET {
            self.finish(emit)?;
        }
        Ok(())
    }

    /// Emits the frame being built, if any.
    pub(crate) fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), WireError> {
        if self.payload.is_empty() && self.fds.is_empty() {
            return Ok(());
        }
        let result = emit(&self.payload, std::mem::take(&mut self.fds));
        self.payload.clear();
        result
    }
}

/// Feeds arbitrary bytes to the pool protocol's decoders, as a frame from a
/// worker or from the scheduler: every record of both directions is decoded,
/// and every payload position it names is looked up in a real slab and a
/// real ring (as the receiver would), which must answer "out of bounds"
/// rather than wrap or overrun. Used by the fuzz target and the robustness
/// tests; never panics.
#[doc(hidden)]
pub fn fuzz_protocol(data: &[u8]) {
    use super::{ring, slab};
    use crate::sys::imp::shm::Mapping;
    use std::os::fd::AsFd;

    let Ok(mut slab_map) = Mapping::anonymous("fuzz-slab", 4096) else { return };
    let Ok(producer) = ring::Ring::new(4096) else { return };
    let check = |payload: &Payload<'_>, slab_map: &mut Mapping| match *payload {
        Payload::Slab { len, .. } => {
            if let Some((input, room)) = slab::mapped_split(slab_map, len as usize) {
                assert!(input.len() + room.len() <= 4096);
            }
        }
        Payload::Ring { at, len } => {
            let region = producer.region(at, len as usize);
            assert!(region.is_none_or(|r| r.len() == len as usize));
        }
        Payload::Inline(_) | Payload::Memfd { .. } => {}
    };
    let capacity = |cap: u64| {
        if let Ok(fd) = producer.as_fd().try_clone_to_owned() {
            // A capacity larger than the memory file is refused, not mapped.
            let _ = ring::Ring::from_fd(fd, cap as usize);
        }
    };
    for record in records::<ToWorker<'_>>(data).flatten() {
        match record {
            ToWorker::Chunk { input, .. } => check(&input, &mut slab_map),
            ToWorker::InputRing { cap } | ToWorker::Slab { cap, .. } => capacity(cap),
        }
    }
    for record in records::<FromWorker<'_>>(data).flatten() {
        match record {
            FromWorker::Done { output, .. } => check(&output, &mut slab_map),
            FromWorker::OutputRing { cap } => capacity(cap),
            FromWorker::InitFailed(_) => {}
        }
    }
}

#[cfg(test)]
mod fuzz_test {
    use super::*;

    #[test]
    fn protocol_decoders_survive_pseudo_random_bytes() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2_000 {
            let mut data = vec![0u8; 64];
            crate::test_bytes::fill(&mut x, &mut data);
            // Tags 0..3 make valid enum variants more often.
            data[0] %= 3;
            fuzz_protocol(&data);
        }
        // The lengths that used to wrap: a slab input near usize::MAX, a ring
        // capacity that overflows.
        let mut bytes = Vec::new();
        let record = ToWorker::Chunk {
            id: 1,
            runner: RunnerRef { offset: 0, hash: 0 },
            items: 1,
            framed: false,
            skip: Vec::new(),
            input: Payload::Slab { id: 1, len: u64::MAX - 3 },
            nfds: 0,
        };
        wire::encode_into(&record, &mut bytes).unwrap();
        wire::encode_into(&ToWorker::InputRing { cap: u64::MAX }, &mut bytes).unwrap();
        fuzz_protocol(&bytes);
    }
}
