//! `Call`: a pool call with options (chunk size, progress), and the code
//! every call method of `Pool` shares.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::chunk::{StateTask, encode_chunk};
use super::job::{ApplyJob, Chunk, Job, MapJob};
use super::progress::Progress;
use super::protocol::RunnerRef;
use super::result::{Slot, TASK_PENDING};
use super::{AsyncResult, Imap, Pool, PoolError, ProgressBar, imap};
use crate::process::Task;

/// A pool call with options: [`Pool::with_chunksize`],
/// [`Pool::with_progress`], [`Pool::with_progress_bar`]. It has every call
/// method of [`Pool`].
pub struct Call<'p, S = ()> {
    pub(super) pool: &'p Pool<S>,
    pub(super) chunksize: Option<usize>,
    pub(super) progress: Option<Option<ProgressBar>>,
}

impl<S> fmt::Debug for Call<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").field("chunksize", &self.chunksize).field("progress", &self.progress.is_some()).finish()
    }
}

impl<'p, S: 'static> Call<'p, S> {
    /// Items per chunk (at least 1).
    pub fn chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = Some(chunksize.max(1));
        self
    }

    /// Shows a progress bar on stderr (see [`Pool::with_progress_bar`] for
    /// how it ends).
    pub fn progress(mut self) -> Self {
        self.progress = Some(None);
        self
    }

    /// Drives `bar` (see [`Pool::with_progress_bar`]).
    pub fn progress_bar(mut self, bar: ProgressBar) -> Self {
        self.progress = Some(Some(bar));
        self
    }

    fn make_progress(&self, len: Option<u64>) -> Option<Progress> {
        self.progress.clone().map(|bar| Progress::new(bar, len))
    }

    fn single<A: Serialize, R>(&self, runner: RunnerRef, args: &A) -> AsyncResult<R>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let slot = Arc::new(Slot::new());
        let cancel = Arc::new(AtomicU8::new(TASK_PENDING));
        let job: Arc<dyn Job> = Arc::new(ApplyJob { slot: slot.clone() });
        let mut chunk = Chunk::new(job, 0, runner, 1, encode_chunk(std::slice::from_ref(args), &self.pool.buffers, 0));
        chunk.cancel = Some(cancel.clone());
        if let Err(e) = self.pool.shared.submit(vec![chunk]) {
            return AsyncResult::failed(e);
        }
        AsyncResult::new(slot, Some(cancel))
    }

    fn many<I, A, R>(&self, runner: RunnerRef, items: I) -> AsyncResult<Vec<R>>
    where
        I: IntoIterator<Item = A>,
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        let items = items.into_iter();
        // The length decides the chunk size. An input that knows its length
        // is chunked as it is read; any other is read whole first, as Python does.
        match items.size_hint() {
            (lo, Some(hi)) if lo == hi => self.many_of(runner, items, lo),
            _ => {
                let all: Vec<A> = items.collect();
                let n = all.len();
                self.many_of(runner, all.into_iter(), n)
            }
        }
    }

    fn many_of<A: Serialize, R>(
        &self,
        runner: RunnerRef,
        mut items: impl Iterator<Item = A>,
        n: usize,
    ) -> AsyncResult<Vec<R>>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let slot = Arc::new(Slot::new());
        if n == 0 {
            // Nothing to submit: a closed pool refuses it all the same. The
            // bar shows 0 of 0 done, as imap's does.
            if let Some(p) = self.make_progress(Some(0)) {
                p.finish();
            }
            slot.complete(match items.next() {
                _ if self.pool.shared.is_closed() => Err(PoolError::Closed),
                None => Ok(Vec::new()),
                Some(_) => Err(miscounted(0)),
            });
            return AsyncResult::new(slot, None);
        }
        let chunksize = self.chunksize.unwrap_or_else(|| n.div_ceil(4 * self.pool.processes));
        let chunks = n.div_ceil(chunksize);
        let progress = self.make_progress(Some(n as u64));
        let job = Arc::new(MapJob::new(slot.clone(), n, chunksize, progress));
        // Chunks go to the scheduler as they are encoded, so the workers
        // start while the rest is being encoded.
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut hint = 0;
        let mut part = Vec::with_capacity(chunksize.min(n));
        for index in 0..chunks {
            part.clear();
            part.extend(items.by_ref().take(chunksize.min(n - index * chunksize)));
            let last = index + 1 == chunks;
            if part.len() != chunksize.min(n - index * chunksize) || (last && items.next().is_some()) {
                job.fail_call(miscounted(n));
                break;
            }
            let input = encode_chunk(&part, &self.pool.buffers, hint);
            hint = input.len();
            batch_bytes += input.len();
            batch.push(Chunk::new(job.clone(), index, runner, part.len(), input));
            if index == 0 || batch.len() >= 256 || batch_bytes >= 64 * 1024 || last {
                if let Err(e) = self.pool.shared.submit(std::mem::take(&mut batch)) {
                    job.fail_call(e);
                    break;
                }
                batch_bytes = 0;
            }
        }
        AsyncResult::new(slot, None)
    }

    fn lazy<I, A, E, R>(&self, runner: RunnerRef, items: I, ordered: bool) -> Imap<'p, R>
    where
        I: IntoIterator<Item = Result<A, E>>,
        I::IntoIter: 'p,
        A: Serialize,
        E: fmt::Display,
        R: DeserializeOwned + Send + 'static,
    {
        let items = items.into_iter();
        let len = match items.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo as u64),
            _ => None,
        };
        let progress = self.make_progress(len);
        let pull = imap::puller(items, self.pool.buffers.clone());
        let imap = Imap::new(
            &self.pool.shared,
            pull,
            runner,
            ordered,
            self.chunksize.unwrap_or(1),
            self.pool.processes,
            progress,
        );
        // Refused now, not at the first submit: an empty input submits nothing.
        if self.pool.shared.open_call() { imap.opened() } else { imap.refuse(PoolError::Closed) }
    }

    /// As [`Pool::apply`].
    ///
    /// # Errors
    ///
    /// As for [`Pool::apply`].
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<R, PoolError>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async(f, args).get()
    }

    /// As [`Pool::apply_async`].
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> AsyncResult<R>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.single(RunnerRef::star::<F, A, R>(), &args)
    }

    /// As [`Pool::map`].
    ///
    /// # Errors
    ///
    /// As for [`Pool::map`].
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>, PoolError>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, items).get()
    }

    /// As [`Pool::map_async`].
    pub fn map_async<F, A, R, I>(&self, f: F, items: I) -> AsyncResult<Vec<R>>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.many(RunnerRef::map::<F, A, R>(), items)
    }

    /// As [`Pool::starmap`].
    ///
    /// # Errors
    ///
    /// As for [`Pool::map`].
    pub fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>, PoolError>
    where
        F: Task<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.starmap_async(f, items).get()
    }

    /// As [`Pool::starmap_async`].
    pub fn starmap_async<F, A, R, I>(&self, f: F, items: I) -> AsyncResult<Vec<R>>
    where
        F: Task<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.many(RunnerRef::star::<F, A, R>(), items)
    }

    /// As [`Pool::imap`].
    pub fn imap<F, A, R, I>(&self, f: F, items: I) -> Imap<'p, R>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.lazy(RunnerRef::map::<F, A, R>(), Infallibly(items.into_iter()), true)
    }

    /// As [`Pool::imap_unordered`].
    pub fn imap_unordered<F, A, R, I>(&self, f: F, items: I) -> Imap<'p, R>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.lazy(RunnerRef::map::<F, A, R>(), Infallibly(items.into_iter()), false)
    }

    /// As [`Pool::try_imap`].
    pub fn try_imap<F, A, R, I, E>(&self, f: F, items: I) -> Imap<'p, R>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = Result<A, E>>,
        I::IntoIter: 'p,
        E: fmt::Display,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.lazy(RunnerRef::map::<F, A, R>(), items, true)
    }

    /// As [`Pool::try_imap_unordered`].
    pub fn try_imap_unordered<F, A, R, I, E>(&self, f: F, items: I) -> Imap<'p, R>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = Result<A, E>>,
        I::IntoIter: 'p,
        E: fmt::Display,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.lazy(RunnerRef::map::<F, A, R>(), items, false)
    }

    /// As [`Pool::apply_with_state`].
    ///
    /// # Errors
    ///
    /// As for [`Pool::apply`].
    pub fn apply_with_state<F, A, R>(&self, f: F, arg: A) -> Result<R, PoolError>
    where
        F: StateTask<S, A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async_with_state(f, arg).get()
    }

    /// As [`Pool::apply_async_with_state`].
    pub fn apply_async_with_state<F, A, R>(&self, f: F, arg: A) -> AsyncResult<R>
    where
        F: StateTask<S, A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.single(RunnerRef::with_state::<F, S, A, R>(), &arg)
    }

    /// As [`Pool::map_with_state`].
    ///
    /// # Errors
    ///
    /// As for [`Pool::map`].
    pub fn map_with_state<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>, PoolError>
    where
        F: StateTask<S, A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_with_state(f, items).get()
    }

    /// As [`Pool::map_async_with_state`].
    pub fn map_async_with_state<F, A, R, I>(&self, f: F, items: I) -> AsyncResult<Vec<R>>
    where
        F: StateTask<S, A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.many(RunnerRef::with_state::<F, S, A, R>(), items)
    }

    /// As [`Pool::imap_with_state`].
    pub fn imap_with_state<F, A, R, I>(&self, f: F, items: I) -> Imap<'p, R>
    where
        F: StateTask<S, A, R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.lazy(RunnerRef::with_state::<F, S, A, R>(), Infallibly(items.into_iter()), true)
    }

    /// As [`Pool::imap_unordered_with_state`].
    pub fn imap_unordered_with_state<F, A, R, I>(&self, f: F, items: I) -> Imap<'p, R>
    where
        F: StateTask<S, A, R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.lazy(RunnerRef::with_state::<F, S, A, R>(), Infallibly(items.into_iter()), false)
    }
}

/// An input that cannot fail, as one that can (for the shared `imap` code).
struct Infallibly<I>(I);

impl<I: Iterator> Iterator for Infallibly<I> {
    type Item = Result<I::Item, Infallible>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(Ok)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// The error for an input whose length differs from the exact length it
/// announced (`size_hint`).
fn miscounted(announced: usize) -> PoolError {
    PoolError::Input {
        index: announced,
        message: format!("the input announced exactly {announced} items (size_hint) but had another number"),
    }
}
