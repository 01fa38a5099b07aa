//! Process pools: Python's `multiprocessing.Pool` and
//! `concurrent.futures.ProcessPoolExecutor`, with workers that may keep
//! state, and a pool that survives its workers.
//!
//! ```
//! use multiproc::Pool;
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! let pool = Pool::new(2).unwrap();
//! assert_eq!(pool.map(square, 0..5u64).unwrap(), vec![0, 1, 4, 9, 16]);
//! ```
//!
//! # Calls
//!
//! | Python | here | returns |
//! |---|---|---|
//! | `apply(f, args)` | [`Pool::apply`] | `Result<R, PoolError>` |
//! | `apply_async(f, args, callback, error_callback)` | [`Pool::apply_async`], then [`AsyncResult::callback`] / [`AsyncResult::error_callback`] | [`AsyncResult<R>`] |
//! | `map(f, xs, chunksize)` | [`Pool::map`], [`Pool::with_chunksize`] | `Result<Vec<R>, PoolError>` (the first failure) |
//! | `map_async` | [`Pool::map_async`] | [`AsyncResult<Vec<R>>`] |
//! | `starmap`, `starmap_async` | [`Pool::starmap`], [`Pool::starmap_async`] | as `map` |
//! | `imap`, `imap_unordered` | [`Pool::imap`], [`Pool::imap_unordered`] | [`Imap`]: one `Result<R, PoolError>` per item |
//! | `close`, `terminate`, `join` | [`Pool::close`], [`Pool::terminate`], [`Pool::join_timeout`] | |
//!
//! A task is a plain `fn` or a closure that captures nothing, as for
//! [`Process`](crate::Process); arguments and results are `serde` types, and
//! handles ([`Connection`](crate::Connection), queues, events…) are ordinary
//! arguments. `map` fails with the first failed task; `imap` gives the outcome
//! of each item, so one lost task does not hide the others.
//!
//! # Stateful workers
//!
//! An initializer runs once in each worker and its return value is the
//! worker's state; `*_with_state` calls pass `&mut` to it — load a model once
//! per worker, not once per task:
//!
//! ```
//! use multiproc::Pool;
//!
//! struct Model { weights: Vec<f64> }
//! fn load(n: usize) -> Model { Model { weights: (0..n).map(|i| i as f64).collect() } }
//! fn predict(m: &mut Model, x: f64) -> f64 { m.weights.iter().map(|w| w * x).sum() }
//!
//! let pool = Pool::builder().processes(2).initializer(load, (3usize,)).build().unwrap();
//! assert_eq!(pool.map_with_state(predict, vec![1.0, 2.0]).unwrap(), vec![3.0, 6.0]);
//! ```
//!
//! # Faults
//!
//! A worker that dies — killed, crashed, aborted, out of memory — fails only
//! the chunk it was running, with [`TaskError::WorkerLost`], within
//! milliseconds (or runs it again, with [`PoolBuilder::retries`]); the chunks
//! queued behind it go to other workers and a new worker takes its place
//! (`imap` shows the outcome of every item; `map` fails with the first
//! failure). A task over the [`PoolBuilder::task_timeout`] gets
//! [`TaskError::Timeout`] and its worker is replaced; the other items of its
//! chunk run again. A panic is [`TaskError::Panicked`] with message,
//! location and backtrace, and the worker goes on. An argument or result that
//! cannot be serialized fails that task alone. Nothing here waits forever on
//! a dead worker.
//!
//! A task may run twice only when its worker died or timed out after running
//! it but before its result was sent back (the worker had finished it and
//! was holding its result to send it with the next ones).
//!
//! # Scheduling
//!
//! One scheduler thread per pool hands chunks to workers through one socket
//! each, several chunks ahead (about 2 ms of work per worker, measured as
//! results come back), many chunks per write; a worker reads everything
//! waiting and answers in one write. Large payloads skip the socket: a large
//! argument is encoded by the caller straight into a shared slab the worker
//! maps, a large result is encoded by the worker straight into the same slab
//! (after the argument) or into a shared ring the scheduler maps, and an
//! `imap` caller decodes it from there.
//!
//! # Large buffers
//!
//! Moving megabyte buffers, most of the time goes to the C allocator of the
//! calling process: glibc gives the pages of freed large buffers back to the
//! kernel and faults fresh, zeroed ones in for the next. Workers are tuned
//! not to; call [`keep_freed_memory`] to tune the calling process too (it
//! doubled `pool_1mib` in the benchmark).

mod chunk;
mod error;
mod executor;
mod imap;
mod job;
mod link;
mod progress;
mod protocol;
mod result;
mod ring;
mod scheduler;
mod slab;
mod worker;

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use chunk::StateTask;
pub use error::{PoolError, TaskError};
pub use executor::{Executor, ExecutorBuilder};
pub use imap::Imap;
pub use indicatif::{ProgressBar, ProgressStyle};
pub use result::AsyncResult;

/// Makes the C allocator of the calling process keep freed memory for reuse
/// instead of handing it back to the kernel: blocks up to 32 MiB come from
/// the heap, and up to 64 MiB of free heap is kept (glibc's
/// `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD`). A program that passes large
/// buffers to a pool or through pipes allocates and frees them over and
/// over, and each fresh page costs a fault and a zeroing (several µs on a
/// VM), more than copying it. Pool workers do this themselves.
///
/// The setting is process-wide and stays; it turns off glibc's own dynamic
/// adjustment of those thresholds. No effect with another allocator or C
/// library.
///
/// ```
/// multiproc::pool::keep_freed_memory();
/// ```
pub fn keep_freed_memory() {
    crate::sys::imp::malloc::keep_freed_memory();
}

use chunk::encode_chunk;
use job::{ApplyJob, Chunk, Job, MapJob};
use progress::Progress;
use protocol::RunnerRef;
use result::{Slot, TASK_PENDING};
use scheduler::{InitTemplate, PoolConfig, Shared};

use crate::process::{ProcessError, StartMethod, Task, cpu_count};

/// Options for a new [`Pool`]. Created by [`Pool::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Pool, StartMethod};
///
/// let pool = Pool::builder()
///     .processes(2)
///     .max_tasks_per_child(1000)
///     .start_method(StartMethod::ForkServer)
///     .task_timeout(Duration::from_secs(60))
///     .retries(1)
///     .build()
///     .unwrap();
/// assert_eq!(pool.processes(), 2);
/// ```
pub struct PoolBuilder<S = ()> {
    processes: Option<usize>,
    method: Option<StartMethod>,
    max_tasks_per_child: Option<u64>,
    timeout: Option<Duration>,
    retries: u32,
    init: Option<Result<InitTemplate, crate::WireError>>,
    _state: PhantomData<fn() -> S>,
}

impl<S> fmt::Debug for PoolBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("method", &self.method)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("initializer", &self.init.is_some())
            .finish()
    }
}

impl Default for PoolBuilder<()> {
    fn default() -> Self {
        PoolBuilder {
            processes: None,
            method: None,
            max_tasks_per_child: None,
            timeout: None,
            retries: 0,
            init: None,
            _state: PhantomData,
        }
    }
}

impl PoolBuilder<()> {
    /// Runs `f(args…)` once in each worker before any task (Python's
    /// `initializer` and `initargs`); its return value is the worker's state,
    /// which the `*_with_state` calls receive as `&mut S`. An initializer
    /// that returns `()` just prepares the process.
    ///
    /// If the initializer fails (panics or kills the worker) three times in a
    /// row, the pool stops starting workers and every task fails with
    /// [`TaskError::Initializer`].
    pub fn initializer<F, A, S>(self, f: F, args: A) -> PoolBuilder<S>
    where
        F: Task<A, S>,
        A: Serialize + DeserializeOwned,
        S: 'static,
    {
        let _ = f;
        let init = crate::wire::encode(&args).map(|e| InitTemplate {
            runner: RunnerRef::init::<F, A, S>(),
            args: e.bytes,
            fds: e.fds,
        });
        PoolBuilder {
            processes: self.processes,
            method: self.method,
            max_tasks_per_child: self.max_tasks_per_child,
            timeout: self.timeout,
            retries: self.retries,
            init: Some(init),
            _state: PhantomData,
        }
    }
}

impl<S: 'static> PoolBuilder<S> {
    /// The number of worker processes (default [`cpu_count`]); 0 is an error.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// How workers are started (default: [`crate::get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// A worker is replaced after this many chunks (Python counts a chunk of
    /// a `map` as one task), to contain leaks. Default: never.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n.max(1));
        self
    }

    /// The longest one task may run. A task over it fails with
    /// [`TaskError::Timeout`]; its worker is killed and replaced. Default:
    /// no limit.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many times a task whose worker died while running it is run again
    /// before it fails with [`TaskError::WorkerLost`]. Default 0.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// [`PoolError::NoProcesses`] for `processes(0)`, [`PoolError::Start`]
    /// when a worker cannot start or the initializer's arguments cannot be
    /// serialized.
    pub fn build(self) -> Result<Pool<S>, PoolError> {
        let processes = self.processes.unwrap_or_else(cpu_count);
        if processes == 0 {
            return Err(PoolError::NoProcesses);
        }
        let init = self.init.transpose().map_err(|e| PoolError::Start(ProcessError::Wire(e)))?;
        let config = PoolConfig {
            processes,
            method: self.method.unwrap_or_else(crate::get_start_method),
            max_tasks_per_child: self.max_tasks_per_child,
            timeout: self.timeout,
            retries: self.retries,
            init,
        };
        let (shared, thread) = scheduler::start(config)?;
        Ok(Pool { shared, buffers: Arc::default(), thread: Mutex::new(Some(thread)), processes, _state: PhantomData })
    }
}

/// A pool of worker processes. `S` is the workers' state, built by the
/// initializer (`()` without one).
///
/// Dropping a pool that was not joined terminates it (Python's `with Pool()
/// as p:`); to let queued work finish, call [`Pool::close`] then
/// [`Pool::join`]. A pool can be shared between threads.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::Pool;
///
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// let pool = Pool::new(2).unwrap();
/// assert_eq!(pool.apply(add, (2, 3)).unwrap(), 5);
/// assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)]).unwrap(), vec![3, 7]);
/// pool.close();
/// pool.join_timeout(Duration::from_secs(10)).unwrap();
/// ```
pub struct Pool<S = ()> {
    shared: Arc<Shared>,
    buffers: Arc<chunk::Buffers>,
    thread: Mutex<Option<JoinHandle<()>>>,
    processes: usize,
    _state: PhantomData<fn() -> S>,
}

impl<S> fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("processes", &self.processes).field("closed", &self.shared.is_closed()).finish()
    }
}

impl Pool<()> {
    /// A pool of `processes` workers with default options.
    ///
    /// # Errors
    ///
    /// As for [`PoolBuilder::build`].
    pub fn new(processes: usize) -> Result<Pool<()>, PoolError> {
        Pool::builder().processes(processes).build()
    }

    /// Options for a new pool.
    pub fn builder() -> PoolBuilder<()> {
        PoolBuilder::default()
    }
}

/// Generates the `Pool` method that forwards to `Call` with default options.
macro_rules! forward {
    ($(#[$doc:meta])* $name:ident ($($arg:ident : $ty:ty),*) -> $ret:ty where [$($bounds:tt)*]) => {
        $(#[$doc])*
        pub fn $name<$($bounds)*>(&self, $($arg: $ty),*) -> $ret {
            self.call().$name($($arg),*)
        }
    };
    ($(#[$doc:meta])* $name:ident <$lt:lifetime> ($($arg:ident : $ty:ty),*) -> $ret:ty where [$($bounds:tt)*] [$($wc:tt)*]) => {
        $(#[$doc])*
        pub fn $name<$lt, $($bounds)*>(&$lt self, $($arg: $ty),*) -> $ret where $($wc)* {
            self.call().$name($($arg),*)
        }
    };
}

impl<S: 'static> Pool<S> {
    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    fn call(&self) -> Call<'_, S> {
        Call { pool: self, chunksize: None, progress: None }
    }

    /// Calls with a chunk size: items sent to a worker together (default for
    /// `map`: `ceil(n / (4 × processes))`, as Python; for `imap`: 1).
    ///
    /// ```
    /// # fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// assert_eq!(pool.with_chunksize(1).map(square, 0..3u64).unwrap(), vec![0, 1, 4]);
    /// ```
    pub fn with_chunksize(&self, chunksize: usize) -> Call<'_, S> {
        self.call().chunksize(chunksize)
    }

    /// Calls that show a progress bar on stderr (count, rate and time left).
    pub fn with_progress(&self) -> Call<'_, S> {
        self.call().progress()
    }

    /// Calls that drive `bar` (position = items done).
    pub fn with_progress_bar(&self, bar: ProgressBar) -> Call<'_, S> {
        self.call().progress_bar(bar)
    }

    forward! {
        /// Runs `f(args…)` in a worker and waits for it (Python's `apply`).
        ///
        /// # Errors
        ///
        /// [`PoolError::Task`] when the task failed, [`PoolError::Closed`]
        /// after `close`.
        apply(f: F, args: A) -> Result<R, PoolError> where [F: Task<A, R>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static]
    }
    forward! {
        /// Runs `f(args…)` in a worker in the background (Python's
        /// `apply_async`). The result can be cancelled until a worker takes it.
        apply_async(f: F, args: A) -> AsyncResult<R> where [F: Task<A, R>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static]
    }
    forward! {
        /// `f(x)` for every item, in order (Python's `map`). The input is read
        /// whole first; for a lazy input use [`Pool::imap`].
        ///
        /// # Errors
        ///
        /// The first task failure to arrive ([`PoolError::Task`] with its
        /// index); [`PoolError::Closed`] after `close`.
        map(f: F, items: I) -> Result<Vec<R>, PoolError> where [F: Task<(A,), R>, I: IntoIterator<Item = A>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static]
    }
    forward! {
        /// [`Pool::map`] in the background.
        map_async(f: F, items: I) -> AsyncResult<Vec<R>> where [F: Task<(A,), R>, I: IntoIterator<Item = A>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static]
    }
    forward! {
        /// `f(a, b, …)` for every tuple `(a, b, …)` (Python's `starmap`).
        ///
        /// # Errors
        ///
        /// As for [`Pool::map`].
        starmap(f: F, items: I) -> Result<Vec<R>, PoolError> where [F: Task<A, R>, I: IntoIterator<Item = A>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static]
    }
    forward! {
        /// [`Pool::starmap`] in the background.
        starmap_async(f: F, items: I) -> AsyncResult<Vec<R>> where [F: Task<A, R>, I: IntoIterator<Item = A>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static]
    }
    forward! {
        /// `f(x)` for every item, yielded in order as they finish; the input is
        /// read lazily, a bounded window ahead.
        imap<'a>(f: F, items: I) -> Imap<'a, R> where [F: Task<(A,), R>, I: IntoIterator<Item = A>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static] [I::IntoIter: 'a]
    }
    forward! {
        /// As [`Pool::imap`], yielded in the order they finish.
        imap_unordered<'a>(f: F, items: I) -> Imap<'a, R> where [F: Task<(A,), R>, I: IntoIterator<Item = A>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static] [I::IntoIter: 'a]
    }
    forward! {
        /// As [`Pool::imap`] over an input that can fail: at its first `Err`,
        /// the results before it are yielded, then [`PoolError::Input`].
        try_imap<'a>(f: F, items: I) -> Imap<'a, R> where [F: Task<(A,), R>, I: IntoIterator<Item = Result<A, E>>, E: fmt::Display, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static] [I::IntoIter: 'a]
    }
    forward! {
        /// As [`Pool::try_imap`], yielded in the order they finish.
        try_imap_unordered<'a>(f: F, items: I) -> Imap<'a, R> where [F: Task<(A,), R>, I: IntoIterator<Item = Result<A, E>>, E: fmt::Display, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static] [I::IntoIter: 'a]
    }
    forward! {
        /// `f(&mut state, x)` in a worker, waiting for it.
        ///
        /// # Errors
        ///
        /// As for [`Pool::apply`].
        apply_with_state(f: F, arg: A) -> Result<R, PoolError> where [F: StateTask<S, A, R>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static]
    }
    forward! {
        /// `f(&mut state, x)` in a worker, in the background.
        apply_async_with_state(f: F, arg: A) -> AsyncResult<R> where [F: StateTask<S, A, R>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static]
    }
    forward! {
        /// `f(&mut state, x)` for every item, with each worker's own state.
        ///
        /// # Errors
        ///
        /// As for [`Pool::map`].
        map_with_state(f: F, items: I) -> Result<Vec<R>, PoolError> where [F: StateTask<S, A, R>, I: IntoIterator<Item = A>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static]
    }
    forward! {
        /// [`Pool::map_with_state`] in the background.
        map_async_with_state(f: F, items: I) -> AsyncResult<Vec<R>> where [F: StateTask<S, A, R>, I: IntoIterator<Item = A>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static]
    }
    forward! {
        /// [`Pool::imap`] with each worker's state.
        imap_with_state<'a>(f: F, items: I) -> Imap<'a, R> where [F: StateTask<S, A, R>, I: IntoIterator<Item = A>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static] [I::IntoIter: 'a]
    }
    forward! {
        /// [`Pool::imap_unordered`] with each worker's state.
        imap_unordered_with_state<'a>(f: F, items: I) -> Imap<'a, R> where [F: StateTask<S, A, R>, I: IntoIterator<Item = A>, A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Send + 'static] [I::IntoIter: 'a]
    }

    /// No new work: later calls fail with [`PoolError::Closed`]; the workers
    /// exit once the queued work is done.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Stops the workers now (SIGKILL) — promptly, however much work is
    /// queued. Unfinished tasks fail with [`TaskError::Terminated`].
    pub fn terminate(&self) {
        self.shared.terminate();
    }

    /// Waits until every worker has exited (after [`Pool::close`] or
    /// [`Pool::terminate`]).
    ///
    /// # Errors
    ///
    /// [`PoolError::NotClosed`] before `close` or `terminate`.
    pub fn join(&self) -> Result<(), PoolError> {
        self.join_until(None, Duration::MAX)
    }

    /// As [`Pool::join`], giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`PoolError::NotClosed`], or [`PoolError::Timeout`] after ≈`timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), PoolError> {
        self.join_until(Instant::now().checked_add(timeout), timeout)
    }

    fn join_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<(), PoolError> {
        if !self.shared.is_closed() {
            return Err(PoolError::NotClosed);
        }
        if !self.shared.wait_finished(deadline) {
            return Err(PoolError::Timeout(timeout));
        }
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
        Ok(())
    }
}

impl<S> Drop for Pool<S> {
    fn drop(&mut self) {
        let thread = self.thread.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            self.shared.terminate();
            let _ = thread.join();
        }
    }
}

/// A pool call with options: [`Pool::with_chunksize`],
/// [`Pool::with_progress`], [`Pool::with_progress_bar`]. It has every call
/// method of [`Pool`].
pub struct Call<'p, S = ()> {
    pool: &'p Pool<S>,
    chunksize: Option<usize>,
    progress: Option<Option<ProgressBar>>,
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

    /// Shows a progress bar on stderr.
    pub fn progress(mut self) -> Self {
        self.progress = Some(None);
        self
    }

    /// Drives `bar`.
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
        let slot = Slot::new();
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
        let slot = Slot::new();
        if n == 0 {
            slot.complete(match items.next() {
                None => Ok(Vec::new()),
                Some(_) => Err(miscounted(0)),
            });
            return AsyncResult::new(slot, None);
        }
        let chunksize = self.chunksize.unwrap_or_else(|| n.div_ceil(4 * self.pool.processes));
        let chunks = n.div_ceil(chunksize);
        let progress = self.make_progress(Some(n as u64));
        let job: Arc<dyn Job> = Arc::new(MapJob::new(slot.clone(), n, chunksize, progress));
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
                slot.complete(Err(miscounted(n)));
                break;
            }
            let input = encode_chunk(&part, &self.pool.buffers, hint);
            hint = input.len();
            batch_bytes += input.len();
            batch.push(Chunk::new(job.clone(), index, runner, part.len(), input));
            if index == 0 || batch.len() >= 256 || batch_bytes >= 64 * 1024 || last {
                if let Err(e) = self.pool.shared.submit(std::mem::take(&mut batch)) {
                    slot.complete(Err(e));
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
        Imap::new(&self.pool.shared, pull, runner, ordered, self.chunksize.unwrap_or(1), self.pool.processes, progress)
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
