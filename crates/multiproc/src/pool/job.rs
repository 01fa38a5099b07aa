//! Jobs: the typed receivers of chunk results (one per pool call), and the
//! chunks the scheduler moves around without knowing their types.

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde::de::DeserializeOwned;

use super::chunk::{Decoded, EncodedChunk, decode_results};
use super::error::{PoolError, TaskError};
use super::progress::Progress;
use super::protocol::{Format, RunnerRef};
use super::result::Slot;
use super::ring::Lease;
use crate::wire::de_error;

/// The results of one chunk, as the scheduler hands them to its job.
pub(crate) enum ChunkResult<'a> {
    /// Encoded by the worker.
    Encoded { format: Format, bytes: &'a [u8], fds: Vec<OwnedFd> },
    /// Encoded by the worker, in its output ring until `lease` is dropped.
    Leased { format: Format, lease: Lease, fds: Vec<OwnedFd> },
    /// Made by the scheduler: one error per item.
    Failed(Vec<TaskError>),
}

/// Hands a leased result to `deliver` as plain bytes (the lease ends after).
macro_rules! unlease {
    ($self:ident, $chunk:ident, $items:ident, $result:ident) => {
        if let ChunkResult::Leased { format, lease, fds } = $result {
            return $self.deliver($chunk, $items, ChunkResult::Encoded { format, bytes: lease.bytes(), fds });
        }
    };
}

impl ChunkResult<'_> {
    fn decode<R: DeserializeOwned>(self, items: usize) -> Decoded<R> {
        match self {
            ChunkResult::Encoded { format, bytes, fds } => decode_results(format, bytes, fds, items),
            ChunkResult::Leased { format, lease, fds } => decode_results(format, lease.bytes(), fds, items),
            ChunkResult::Failed(errors) => Decoded::Items(errors.into_iter().map(Err).collect()),
        }
    }
}

/// A pool call waiting for its chunks. `deliver` runs on the scheduler
/// thread, once per chunk (results, or errors the scheduler made).
pub(crate) trait Job: Send + Sync {
    fn deliver(&self, chunk: usize, items: usize, result: ChunkResult<'_>);

    /// True once nobody will read the job's results (a dropped `imap`):
    /// its chunks that no worker has received are not sent.
    fn abandoned(&self) -> bool {
        false
    }
}

/// A chunk of one job, as the scheduler keeps it until its results arrive
/// (it is sent again if its worker dies before it started).
pub(crate) struct Chunk {
    pub job: Arc<dyn Job>,
    pub index: usize,
    pub runner: RunnerRef,
    pub items: u32,
    pub input: EncodedChunk,
    /// Items not to run again, with the error to report for each.
    pub skip: Vec<(u32, TaskError)>,
    /// How often its worker died while running it.
    pub lost: u32,
    /// Set for tasks that can be cancelled while they wait.
    pub cancel: Option<Arc<AtomicU8>>,
}

impl Chunk {
    pub(crate) fn new(job: Arc<dyn Job>, index: usize, runner: RunnerRef, items: usize, input: EncodedChunk) -> Chunk {
        Chunk { job, index, runner, items: items as u32, input, skip: Vec::new(), lost: 0, cancel: None }
    }

    /// Hands the chunk's results to its job. A panic while they are decoded
    /// (a result type whose `Deserialize` panics) fails the chunk's items
    /// instead of the scheduler thread, which would take the whole pool down
    /// and leave this chunk's caller waiting.
    pub(crate) fn deliver(self, result: ChunkResult<'_>) {
        let items = self.items as usize;
        let delivered = catch_unwind(AssertUnwindSafe(|| self.job.deliver(self.index, items, result)));
        if let Err(payload) = delivered {
            let panic = crate::process::bootstrap::take_panic(payload.as_ref());
            let error =
                TaskError::Unserializable(format!("result could not be deserialized: its decoding panicked: {panic}"));
            self.job.deliver(self.index, items, ChunkResult::Failed(vec![error; items]));
        }
    }

    /// Fails every item of the chunk with `error`.
    pub(crate) fn fail(self, error: TaskError) {
        let n = self.items as usize;
        self.job.deliver(self.index, n, ChunkResult::Failed(vec![error; n]));
    }

    /// Fails the chunk now: items already skipped keep their error, the
    /// others get `error`.
    pub(crate) fn fail_with(self, error: &TaskError) {
        let errors = (0..self.items)
            .map(|k| self.skip.iter().find(|(s, _)| *s == k).map_or_else(|| error.clone(), |(_, e)| e.clone()))
            .collect();
        self.job.deliver(self.index, self.items as usize, ChunkResult::Failed(errors));
    }

    /// True when every item already has its error.
    pub(crate) fn all_skipped(&self) -> bool {
        self.skip.len() >= self.items as usize
    }

    /// Delivers the errors of a chunk whose items are all skipped.
    pub(crate) fn fail_skipped(mut self) {
        self.skip.sort_by_key(|(k, _)| *k);
        let errors = self.skip.drain(..).map(|(_, e)| e).collect();
        self.job.deliver(self.index, self.items as usize, ChunkResult::Failed(errors));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One task (`apply_async`, `Executor::submit`).
pub(crate) struct ApplyJob<R> {
    pub slot: Arc<Slot<R>>,
}

impl<R: DeserializeOwned + Send + 'static> Job for ApplyJob<R> {
    fn deliver(&self, _chunk: usize, items: usize, result: ChunkResult<'_>) {
        let outcome = match result.decode::<R>(items) {
            Decoded::AllOk(mut v) if v.len() == 1 => Ok(v.remove(0)),
            d => match d.into_results().into_iter().next() {
                Some(Ok(v)) => Ok(v),
                Some(Err(error)) => Err(PoolError::Task { index: None, error }),
                None => Err(PoolError::Task {
                    index: None,
                    error: TaskError::Unserializable("result missing from the worker's reply".into()),
                }),
            },
        };
        self.slot.complete(outcome);
    }
}

/// A whole-input call (`map_async`, `starmap_async`, `map`). Each chunk's
/// results are decoded straight into their place in the final vector.
pub(crate) struct MapJob<R> {
    pub slot: Arc<Slot<Vec<R>>>,
    pub chunksize: usize,
    pub state: Mutex<MapState<R>>,
    pub progress: Option<Progress>,
}

pub(crate) struct MapState<R> {
    /// `n` slots; those of the chunks marked in `filled` are initialised.
    out: Vec<MaybeUninit<R>>,
    filled: Vec<bool>,
    chunksize: usize,
    remaining: usize,
    failed: bool,
}

impl<R> Drop for MapState<R> {
    fn drop(&mut self) {
        let cs = self.chunksize;
        for (i, done) in self.filled.iter().enumerate() {
            if *done {
                let end = ((i + 1) * cs).min(self.out.len());
                for slot in &mut self.out[i * cs..end] {
                    // SAFETY: the slots of a filled chunk were all written.
                    unsafe { slot.assume_init_drop() };
                }
            }
        }
    }
}

impl<R> MapJob<R> {
    pub(crate) fn new(slot: Arc<Slot<Vec<R>>>, n: usize, chunksize: usize, progress: Option<Progress>) -> Self {
        let chunks = n.div_ceil(chunksize);
        let mut out = Vec::with_capacity(n);
        out.resize_with(n, MaybeUninit::uninit);
        let state = MapState { out, filled: vec![false; chunks], chunksize, remaining: chunks, failed: false };
        MapJob { slot, chunksize, state: Mutex::new(state), progress }
    }

    /// Fails the call with `error`, unless it failed already (as Python:
    /// with the first failure to arrive). Its bar ends where it is; the
    /// chunks still out neither fill the result nor move the bar.
    fn fail(&self, st: &mut MapState<R>, error: PoolError) {
        if !std::mem::replace(&mut st.failed, true) {
            if let Some(p) = &self.progress {
                p.abandon();
            }
            self.slot.complete(Err(error));
        }
    }

    /// Fails the call for a reason of its own (its input, the pool refusing
    /// its chunks), not one of a task.
    pub(crate) fn fail_call(&self, error: PoolError) {
        self.fail(&mut lock(&self.state), error);
    }

    /// Fails the call with the error of the task at `index`.
    fn fail_task(&self, st: &mut MapState<R>, index: usize, error: TaskError) {
        self.fail(st, PoolError::Task { index: Some(index), error });
    }
}

/// Deserializes a sequence of exactly `slots.len()` values into `slots`;
/// on error, drops what it wrote.
struct IntoSlots<'a, R>(&'a mut [MaybeUninit<R>]);

impl<'de, R: serde::Deserialize<'de>> serde::de::DeserializeSeed<'de> for IntoSlots<'_, R> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, R: serde::Deserialize<'de>> serde::de::Visitor<'de> for IntoSlots<'_, R> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a sequence of {} results", self.0.len())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut written = 0;
        let outcome = loop {
            if written == self.0.len() {
                break match seq.next_element::<serde::de::IgnoredAny>() {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => Err(de_error("more results than items")),
                    Err(e) => Err(e),
                };
            }
            match seq.next_element::<R>() {
                Ok(Some(v)) => {
                    self.0[written].write(v);
                    written += 1;
                }
                Ok(None) => break Err(de_error("fewer results than items")),
                Err(e) => break Err(e),
            }
        };
        if outcome.is_err() {
            for slot in &mut self.0[..written] {
                // SAFETY: these slots were written above and are dropped once.
                unsafe { slot.assume_init_drop() };
            }
        }
        outcome
    }
}

impl<R: DeserializeOwned + Send + 'static> Job for MapJob<R> {
    fn deliver(&self, chunk: usize, items: usize, result: ChunkResult<'_>) {
        unlease!(self, chunk, items, result);
        let start = chunk * self.chunksize;
        let mut st = lock(&self.state);
        if st.failed || st.filled[chunk] {
            return;
        }
        if let Some(p) = &self.progress {
            p.inc(items as u64);
        }
        match result {
            ChunkResult::Encoded { format: Format::AllOk, bytes, fds } => {
                let slots = &mut st.out[start..start + items];
                if let Err(e) = crate::wire::decode_seed(IntoSlots(slots), bytes, fds) {
                    let error = TaskError::Unserializable(format!("result could not be deserialized: {e}"));
                    return self.fail_task(&mut st, start, error);
                }
            }
            other => {
                let values = match other.decode::<R>(items) {
                    Decoded::AllOk(v) => v.into_iter().map(Ok).collect(),
                    Decoded::Items(v) => v,
                };
                if let Some(k) = values.iter().position(Result::is_err) {
                    let error = values.into_iter().nth(k).and_then(Result::err).expect("an error at k");
                    return self.fail_task(&mut st, start + k, error);
                }
                for (slot, v) in st.out[start..start + items].iter_mut().zip(values) {
                    slot.write(v.unwrap_or_else(|_| unreachable!("no errors")));
                }
            }
        }
        st.filled[chunk] = true;
        st.remaining -= 1;
        if st.remaining > 0 {
            return;
        }
        st.filled.iter_mut().for_each(|f| *f = false);
        let out = std::mem::take(&mut st.out);
        drop(st);
        let mut out = std::mem::ManuallyDrop::new(out);
        // SAFETY: every chunk was filled, so every slot is initialised;
        // `MaybeUninit<R>` has the layout of `R`, and the allocation is handed
        // over whole (pointer, length, capacity).
        let all = unsafe { Vec::from_raw_parts(out.as_mut_ptr().cast::<R>(), out.len(), out.capacity()) };
        if let Some(p) = &self.progress {
            p.finish();
        }
        self.slot.complete(Ok(all));
    }
}

/// Results of an `imap` as they come in.
pub(crate) struct ImapShared<R> {
    pub state: Mutex<ImapState<R>>,
    pub cond: Condvar,
    pub ordered: bool,
    pub chunksize: usize,
    /// Set when its `Imap` is dropped before its end (see [`Job::abandoned`]).
    pub abandoned: AtomicBool,
}

/// One arrived item.
pub(crate) enum Arrived<R> {
    /// Decoded by the scheduler.
    Value(Result<R, PoolError>),
    /// A large single-item result, still in the worker's ring, decoded by
    /// the consumer: no copy out of the ring, and its allocations happen (and
    /// are freed) on the consumer's thread, where the allocator reuses them
    /// instead of faulting fresh pages in for every item.
    Leased { index: usize, format: Format, lease: Lease, fds: Vec<OwnedFd> },
}

pub(crate) struct ImapState<R> {
    /// Ordered: slot `i` holds item `base + i` once it arrived.
    /// Unordered: arrived items in arrival order.
    pub items: VecDeque<Option<Arrived<R>>>,
    pub base: usize,
    pub waiting: bool,
}

impl<R> ImapShared<R> {
    pub(crate) fn new(ordered: bool, chunksize: usize) -> ImapShared<R> {
        ImapShared {
            state: Mutex::new(ImapState { items: VecDeque::new(), base: 0, waiting: false }),
            cond: Condvar::new(),
            ordered,
            chunksize,
            abandoned: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ImapState<R>> {
        lock(&self.state)
    }

    fn place(&self, st: &mut ImapState<R>, index: usize, item: Arrived<R>) {
        if self.ordered {
            let at = index - st.base;
            if st.items.len() <= at {
                st.items.resize_with(at + 1, || None);
            }
            st.items[at] = Some(item);
        } else {
            st.items.push_back(Some(item));
        }
    }
}

impl<R: DeserializeOwned> ImapShared<R> {
    /// The value of an arrived item (decoding it if it came raw).
    pub(crate) fn open(&self, item: Arrived<R>) -> Result<R, PoolError> {
        match item {
            Arrived::Value(v) => v,
            Arrived::Leased { index, format, lease, fds } => {
                let value = decode_results::<R>(format, lease.bytes(), fds, 1).into_results().into_iter().next();
                drop(lease);
                match value {
                    Some(Ok(v)) => Ok(v),
                    Some(Err(error)) => Err(PoolError::Task { index: Some(index), error }),
                    None => Err(PoolError::Task {
                        index: Some(index),
                        error: TaskError::Unserializable("result missing from the worker's reply".into()),
                    }),
                }
            }
        }
    }
}

impl<R: DeserializeOwned + Send + 'static> Job for ImapShared<R> {
    fn abandoned(&self) -> bool {
        // ORDERING: Relaxed: a flag; the scheduler learns of it through the
        // inbox lock (`Shared::abandon`), and a late look only runs a chunk.
        self.abandoned.load(Ordering::Relaxed)
    }

    fn deliver(&self, chunk: usize, items: usize, result: ChunkResult<'_>) {
        let start = chunk * self.chunksize;
        let result = match result {
            ChunkResult::Leased { format, lease, fds } if items == 1 => {
                let mut st = self.lock();
                self.place(&mut st, start, Arrived::Leased { index: start, format, lease, fds });
                return self.wake(st);
            }
            other => other,
        };
        let results = result.decode::<R>(items).into_results();
        let mut st = self.lock();
        for (k, r) in results.into_iter().enumerate() {
            let index = start + k;
            self.place(
                &mut st,
                index,
                Arrived::Value(r.map_err(|error| PoolError::Task { index: Some(index), error })),
            );
        }
        self.wake(st);
    }
}

impl<R> ImapShared<R> {
    fn wake(&self, mut st: MutexGuard<'_, ImapState<R>>) {
        if st.waiting {
            st.waiting = false;
            drop(st);
            self.cond.notify_one();
        }
    }
}
