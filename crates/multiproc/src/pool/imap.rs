//! `imap` and `imap_unordered`: results as they finish, input pulled a
//! bounded window ahead (the first window when the call is made).

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::buffers::Buffers;
use super::chunk::{EncodedChunk, encode_chunk};
use super::error::PoolError;
use super::job::{Chunk, ImapShared, Job};
use super::progress::Progress;
use super::protocol::RunnerRef;
use super::scheduler::Shared;

/// Items in flight (pulled but not yet yielded) at most: the window.
pub(crate) const MIN_WINDOW: usize = 8192;
/// Encoded input bytes in flight at most (the window shrinks for big items).
const WINDOW_BYTES: usize = 8 << 20;

/// What one pull from the input gave.
pub(crate) struct Pulled {
    pub chunk: Option<(EncodedChunk, usize)>,
    pub fault: Option<InputFault>,
    pub exhausted: bool,
}

/// Why the input stopped before its end. The input is not read again.
pub(crate) enum InputFault {
    /// It yielded an `Err` (its text), reported as [`PoolError::Input`].
    Error(String),
    /// Reading it (or serializing an item) panicked: the panic is raised
    /// again where its item would have come.
    Panic(Box<dyn Any + Send>),
}

/// Pulls up to `n` items from the input and encodes them as one chunk.
pub(crate) type Puller<'p> = Box<dyn FnMut(usize) -> Pulled + 'p>;

/// Makes the puller for an input of `Result<A, E>` items.
pub(crate) fn puller<'p, I, A, E>(items: I, buffers: Arc<Buffers>) -> Puller<'p>
where
    I: Iterator<Item = Result<A, E>> + 'p,
    A: serde::Serialize,
    E: fmt::Display,
{
    let mut items = items;
    let mut hint = 0;
    Box::new(move |n| {
        let mut batch = Vec::with_capacity(n.min(1024));
        let mut exhausted = false;
        // The input runs on the caller's thread, ahead of what it consumed: a
        // panic is caught here (the items before it are kept) and raised
        // again where its item would come. AssertUnwindSafe: after a panic
        // the input is never called again, only dropped.
        let read = catch_unwind(AssertUnwindSafe(|| {
            while batch.len() < n {
                match items.next() {
                    Some(Ok(a)) => batch.push(a),
                    Some(Err(e)) => return Some(InputFault::Error(e.to_string())),
                    None => {
                        exhausted = true;
                        return None;
                    }
                }
            }
            None
        }));
        let mut fault = read.unwrap_or_else(|panic| Some(InputFault::Panic(panic)));
        let mut chunk = None;
        if !batch.is_empty() {
            // An item whose Serialize panics loses its batch: the panic comes
            // where the batch's first item would.
            match catch_unwind(AssertUnwindSafe(|| encode_chunk(&batch, &buffers, hint))) {
                Ok(input) => chunk = Some((input, batch.len())),
                Err(panic) => fault = Some(InputFault::Panic(panic)),
            }
        }
        hint = chunk.as_ref().map_or(0, |(c, _)| c.len());
        Pulled { chunk, fault, exhausted }
    })
}

/// The iterator of [`Pool::imap`](super::Pool::imap) and
/// [`Pool::imap_unordered`](super::Pool::imap_unordered): one
/// `Result<R, PoolError>` per input item, in input order (`imap`) or as they
/// finish (`imap_unordered`).
///
/// The input is read only as far as a bounded window ahead of what has been
/// yielded — at most 8,192 items (or 4 chunks per worker, if more) and about
/// 8 MiB of encoded input — so an endless input is fine. The first window is
/// read and submitted by the call that makes the iterator, so the tasks start
/// at once, before the first `next` (as Python's, whose task handler reads
/// the input in the background). The input runs on the caller's thread (it
/// need not be `Send`): the call returns once that first window is read, and
/// an input that blocks keeps it waiting; later windows are read by `next`,
/// as results are yielded, so results never pile up beyond the window while
/// nobody reads them. When the input
/// yields an `Err` (see [`Pool::try_imap`](super::Pool::try_imap)), the
/// results before it are yielded, then one [`PoolError::Input`], then the
/// iterator ends. When the input panics, the results before the panic are
/// yielded, then the `next` call that would have returned the item's
/// result panics with the input's panic, and the iterator ends (the input
/// is read on the caller's thread a window ahead, so the panic's message is
/// printed when it happens, before that call).
///
/// Dropping it before its end reads no more input, and its items that no
/// worker has received yet are not sent (as Python's `Executor.map`
/// cancels its futures when its iterator is closed); items already running
/// finish, their results unread.
pub struct Imap<'p, R> {
    shared: &'p Shared,
    job: Arc<ImapShared<R>>,
    pull: Puller<'p>,
    runner: RunnerRef,
    chunksize: usize,
    window: usize,
    /// Items handed to the pool / yielded back.
    submitted: usize,
    yielded: usize,
    next_chunk: usize,
    bytes_per_item: usize,
    exhausted: bool,
    /// Where the input stopped early, and why.
    input_fault: Option<(usize, InputFault)>,
    refused: Option<PoolError>,
    progress: Option<Progress>,
    done: bool,
    /// Registered with the pool (`Shared::open_call`): its chunks are
    /// accepted after `close` until it read its input to the end.
    open: bool,
}

impl<R> fmt::Debug for Imap<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.job.ordered)
            .field("chunksize", &self.chunksize)
            .field("submitted", &self.submitted)
            .field("yielded", &self.yielded)
            .finish()
    }
}

impl<'p, R: serde::de::DeserializeOwned + Send + 'static> Imap<'p, R> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: &'p Shared,
        pull: Puller<'p>,
        runner: RunnerRef,
        ordered: bool,
        chunksize: usize,
        processes: usize,
        progress: Option<Progress>,
    ) -> Imap<'p, R> {
        let chunksize = chunksize.max(1);
        Imap {
            shared,
            job: Arc::new(ImapShared::new(ordered, chunksize)),
            pull,
            runner,
            chunksize,
            window: MIN_WINDOW.max(processes.saturating_mul(4).saturating_mul(chunksize)),
            submitted: 0,
            yielded: 0,
            next_chunk: 0,
            bytes_per_item: 0,
            exhausted: false,
            input_fault: None,
            refused: None,
            progress,
            done: false,
            open: false,
        }
    }

    /// An iteration registered with the pool (see `Shared::open_call`). It
    /// submits its first window at once, so the work starts before the
    /// first `next` (as Python's, whose task handler reads the input in the
    /// background); later windows are read as results are yielded.
    pub(crate) fn opened(mut self) -> Self {
        self.open = true;
        self.top_up();
        self
    }

    /// An iteration that yields `error` and ends, reading no input.
    pub(crate) fn refuse(mut self, error: PoolError) -> Self {
        self.exhausted = true;
        self.refused = Some(error);
        self
    }

    fn window(&self) -> usize {
        if self.bytes_per_item == 0 {
            return self.window;
        }
        (WINDOW_BYTES / self.bytes_per_item).clamp(self.chunksize, self.window)
    }

    /// Pulls and submits input until the window is full.
    fn top_up(&mut self) {
        let mut chunks = Vec::new();
        // The window is recomputed after every chunk: the first one tells
        // how large items are (pulling a whole MIN_WINDOW of 1 MiB items
        // would encode them all before the first is sent).
        while !self.exhausted && self.input_fault.is_none() && self.submitted - self.yielded < self.window() {
            let pulled = (self.pull)(self.chunksize);
            if let Some((input, n)) = pulled.chunk {
                let per = input.len() / n;
                self.bytes_per_item =
                    if self.bytes_per_item == 0 { per.max(1) } else { (self.bytes_per_item + per) / 2 };
                let job: Arc<dyn Job> = self.job.clone();
                chunks.push(Chunk::new(job, self.next_chunk, self.runner, n, input));
                self.next_chunk += 1;
                self.submitted += n;
            }
            if let Some(fault) = pulled.fault {
                self.input_fault = Some((self.submitted, fault));
            }
            self.exhausted |= pulled.exhausted;
        }
        if !chunks.is_empty() {
            let n: usize = chunks.iter().map(|c| c.items as usize).sum();
            if let Err(e) = self.shared.submit_open(chunks) {
                self.submitted -= n;
                self.exhausted = true;
                self.refused = Some(e);
            }
        }
        if self.exhausted || self.input_fault.is_some() {
            self.release();
        }
    }
}

impl<R> Imap<'_, R> {
    /// Tells the pool this iteration submits nothing more.
    fn release(&mut self) {
        if std::mem::take(&mut self.open) {
            self.shared.close_call();
        }
    }
}

impl<R> Drop for Imap<'_, R> {
    fn drop(&mut self) {
        self.release();
        if !self.done && self.submitted > self.yielded {
            // ORDERING: Relaxed: published by the inbox lock in `abandon`.
            self.job.abandoned.store(true, std::sync::atomic::Ordering::Relaxed);
            self.shared.abandon();
        }
        // Dropped before its end: the bar ends where it is.
        if !self.done
            && let Some(p) = &self.progress
        {
            p.abandon();
        }
    }
}

impl<R: serde::de::DeserializeOwned + Send + 'static> Imap<'_, R> {
    /// The next result, waiting at most `timeout` for it (Python's
    /// `IMapIterator.next(timeout)`). On a timeout it returns
    /// `Some(Err(PoolError::Timeout))` and the iteration goes on: the result
    /// comes with a later call. `None` at the end, as [`Iterator::next`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Pool;
    ///
    /// fn slow(x: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(if x == 0 { 500 } else { 0 }));
    ///     x
    /// }
    ///
    /// let pool = Pool::new(1).unwrap();
    /// let mut results = pool.imap(slow, 0..2u64);
    /// assert!(results.next_timeout(Duration::from_millis(10)).unwrap().unwrap_err().is_timeout());
    /// assert_eq!(results.next_timeout(Duration::from_secs(20)).unwrap().unwrap(), 0);
    /// assert_eq!(results.next_timeout(Duration::from_secs(20)).unwrap().unwrap(), 1);
    /// assert!(results.next_timeout(Duration::from_secs(20)).is_none());
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, PoolError>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.next_until(Some((deadline, timeout))),
            None => self.next_until(None),
        }
    }

    fn next_until(&mut self, deadline: Option<(Instant, Duration)>) -> Option<Result<R, PoolError>> {
        if self.done {
            return None;
        }
        loop {
            self.top_up();
            let mut st = self.job.lock();
            let got = if self.job.ordered {
                if matches!(st.items.front(), Some(Some(_))) {
                    st.base += 1;
                    st.items.pop_front().flatten()
                } else {
                    None
                }
            } else {
                st.items.pop_front().flatten()
            };
            if let Some(item) = got {
                drop(st);
                self.yielded += 1;
                if let Some(p) = &self.progress {
                    p.inc(1);
                }
                return Some(self.job.open(item));
            }
            if self.submitted == self.yielded {
                if !self.exhausted && self.input_fault.is_none() && self.refused.is_none() {
                    continue; // the window is empty: pull more
                }
                drop(st);
                self.done = true;
                if let Some(p) = &self.progress {
                    // A call that ends with an error ends its bar where it is.
                    if self.refused.is_some() || self.input_fault.is_some() { p.abandon() } else { p.finish() }
                }
                if let Some(e) = self.refused.take() {
                    return Some(Err(e));
                }
                return match self.input_fault.take() {
                    Some((index, InputFault::Error(message))) => Some(Err(PoolError::Input { index, message })),
                    Some((_, InputFault::Panic(panic))) => std::panic::resume_unwind(panic),
                    None => None,
                };
            }
            st.waiting = true;
            // The scheduler delivers every submitted chunk (results, or an
            // error such as `Terminated`), so this wait ends.
            match deadline {
                None => drop(self.job.cond.wait(st).unwrap_or_else(|e| e.into_inner())),
                Some((at, timeout)) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Some(Err(PoolError::Timeout(timeout)));
                    }
                    drop(self.job.cond.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()));
                }
            }
        }
    }
}

impl<R: serde::de::DeserializeOwned + Send + 'static> Iterator for Imap<'_, R> {
    type Item = Result<R, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(None)
    }
}
