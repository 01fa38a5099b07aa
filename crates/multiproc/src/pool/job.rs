//! Jobs: the typed receivers of chunk results (one per pool call), and the
//! chunks the scheduler moves around without knowing their types.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde::de::DeserializeOwned;

use super::chunk::{Decoded, EncodedChunk, decode_results};
use super::error::{PoolError, TaskError};
use super::progress::Progress;
use super::protocol::{Format, RunnerRef};
use super::result::Slot;

/// The results of one chunk, as the scheduler hands them to its job.
pub(crate) enum ChunkResult<'a> {
    /// Encoded by the worker.
    Encoded { format: Format, bytes: &'a [u8], fds: Vec<OwnedFd> },
    /// Made by the scheduler: one error per item.
    Failed(Vec<TaskError>),
}

impl ChunkResult<'_> {
    fn decode<R: DeserializeOwned>(self, items: usize) -> Decoded<R> {
        match self {
            ChunkResult::Encoded { format, bytes, fds } => decode_results(format, bytes, fds, items),
            ChunkResult::Failed(errors) => Decoded::Items(errors.into_iter().map(Err).collect()),
        }
    }
}

/// A pool call waiting for its chunks. `deliver` runs on the scheduler
/// thread, once per chunk (results, or errors the scheduler made).
pub(crate) trait Job: Send + Sync {
    fn deliver(&self, chunk: usize, items: usize, result: ChunkResult<'_>);
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
                Some(Err(error)) => Err(PoolError::Task { index: 0, error }),
                None => Err(PoolError::Task {
                    index: 0,
                    error: TaskError::Unserializable("result missing from the worker's reply".into()),
                }),
            },
        };
        self.slot.complete(outcome);
    }
}

/// A whole-input call (`map_async`, `starmap_async`, `map`).
pub(crate) struct MapJob<R> {
    pub slot: Arc<Slot<Vec<R>>>,
    pub chunksize: usize,
    pub state: Mutex<MapState<R>>,
    pub progress: Option<Progress>,
}

pub(crate) struct MapState<R> {
    pub chunks: Vec<Option<Vec<R>>>,
    pub remaining: usize,
    pub failed: bool,
}

impl<R> MapJob<R> {
    pub(crate) fn new(slot: Arc<Slot<Vec<R>>>, chunks: usize, chunksize: usize, progress: Option<Progress>) -> Self {
        let state = MapState { chunks: (0..chunks).map(|_| None).collect(), remaining: chunks, failed: false };
        MapJob { slot, chunksize, state: Mutex::new(state), progress }
    }
}

impl<R: DeserializeOwned + Send + 'static> Job for MapJob<R> {
    fn deliver(&self, chunk: usize, items: usize, result: ChunkResult<'_>) {
        let decoded = result.decode::<R>(items);
        if let Some(p) = &self.progress {
            p.inc(items as u64);
        }
        let values = match decoded {
            Decoded::AllOk(v) => v,
            Decoded::Items(v) => {
                let mut values = Vec::with_capacity(v.len());
                for (k, r) in v.into_iter().enumerate() {
                    match r {
                        Ok(x) => values.push(x),
                        Err(error) => {
                            let first = {
                                let mut st = lock(&self.state);
                                !std::mem::replace(&mut st.failed, true)
                            };
                            // As Python: the call fails with the first failure to arrive.
                            if first {
                                self.slot.complete(Err(PoolError::Task { index: chunk * self.chunksize + k, error }));
                            }
                            return;
                        }
                    }
                }
                values
            }
        };
        let mut st = lock(&self.state);
        if st.failed {
            return;
        }
        st.chunks[chunk] = Some(values);
        st.remaining -= 1;
        if st.remaining > 0 {
            return;
        }
        let parts = std::mem::take(&mut st.chunks);
        drop(st);
        let total = parts.iter().map(|p| p.as_ref().map_or(0, Vec::len)).sum();
        let mut all = Vec::with_capacity(total);
        for part in parts.into_iter().flatten() {
            all.extend(part);
        }
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
}

pub(crate) struct ImapState<R> {
    /// Ordered: slot `i` holds item `base + i` once it arrived.
    /// Unordered: arrived items in arrival order.
    pub items: VecDeque<Option<Result<R, PoolError>>>,
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
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ImapState<R>> {
        lock(&self.state)
    }
}

impl<R: DeserializeOwned + Send + 'static> Job for ImapShared<R> {
    fn deliver(&self, chunk: usize, items: usize, result: ChunkResult<'_>) {
        let start = chunk * self.chunksize;
        let results = result.decode::<R>(items).into_results();
        let mut st = self.lock();
        for (k, r) in results.into_iter().enumerate() {
            let index = start + k;
            let r = r.map_err(|error| PoolError::Task { index, error });
            if self.ordered {
                let at = index - st.base;
                if st.items.len() <= at {
                    st.items.resize_with(at + 1, || None);
                }
                st.items[at] = Some(r);
            } else {
                st.items.push_back(Some(r));
            }
        }
        if st.waiting {
            st.waiting = false;
            drop(st);
            self.cond.notify_one();
        }
    }
}
