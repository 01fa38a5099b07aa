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
//! not to, and so is the calling process, the first time a pool moves a
//! large input (see [`keep_freed_memory`]; it lifts `pool_1mib` from about
//! 4 to about 7 GB/s in the benchmark). A program that must keep glibc's
//! defaults builds its pools with
//! [`PoolBuilder::keep_freed_memory(false)`](PoolBuilder::keep_freed_memory).

mod buffers;
mod builder;
mod call;
mod chunk;
mod error;
mod executor;
mod imap;
mod job;
mod link;
mod outcome;
mod progress;
mod protocol;
mod result;
mod ring;
mod scheduler;
mod slab;
mod status;
mod worker;

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use builder::PoolBuilder;
pub use call::Call;
pub use chunk::StateTask;
pub use error::{PoolError, TaskError};
pub use executor::{Executor, ExecutorBuilder};
pub use imap::Imap;
pub use indicatif::{ProgressBar, ProgressStyle};
pub use outcome::{ErrCallback, OkCallback, OutcomeError, OutcomeSlot};
#[doc(hidden)]
pub use protocol::fuzz_protocol;
pub use result::AsyncResult;

/// Makes the C allocator of the calling process keep freed memory for reuse
/// instead of handing it back to the kernel: blocks up to 32 MiB come from
/// the heap, and up to 64 MiB of free heap is kept (glibc's
/// `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD`). A program that passes large
/// buffers to a pool or through pipes allocates and frees them over and
/// over, and each fresh page costs a fault and a zeroing (several µs on a
/// VM), more than copying it. Pool workers do this themselves, and a pool
/// does a variant of it in the calling process the first time it moves a
/// large input (unless built with
/// [`PoolBuilder::keep_freed_memory(false)`](PoolBuilder::keep_freed_memory)).
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

use scheduler::Shared;

use crate::process::Task;

/// Waits on `cond` while `waiting` holds, until `deadline` (none: for
/// ever); the guard either way (the caller reads the outcome from it).
/// Spurious wake-ups and a deadline already past are handled by std.
fn wait_while_until<'a, S>(
    cond: &Condvar,
    guard: MutexGuard<'a, S>,
    deadline: Option<Instant>,
    waiting: impl FnMut(&mut S) -> bool,
) -> MutexGuard<'a, S> {
    match deadline {
        None => cond.wait_while(guard, waiting).unwrap_or_else(|e| e.into_inner()),
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            cond.wait_timeout_while(guard, left, waiting).unwrap_or_else(|e| e.into_inner()).0
        }
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
    buffers: Arc<buffers::Buffers>,
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

    /// Calls that drive `bar` (position = items done). The bar is finished
    /// when the call ends with all its results; when it fails (a task's
    /// error ends a `map`, an `imap` ends with an error or is dropped before
    /// its end), it is abandoned where it is and no longer moves.
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
        /// read lazily, a bounded window ahead, and the first window is
        /// submitted at once, so the work starts before the first `next`
        /// (see [`Imap`]). If the input panics, the
        /// results before it are yielded, then the `next` call at the panic's
        /// position panics with it (see [`Imap`]).
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
    /// exit once the queued work is done. An `imap` begun before goes on
    /// reading its input and yields all its results, as Python's does.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Stops the workers now (SIGKILL) — promptly, however much work is
    /// queued. Unfinished tasks fail with [`TaskError::Terminated`].
    pub fn terminate(&self) {
        self.shared.terminate();
    }

    /// Waits until every worker has exited (after [`Pool::close`] or
    /// [`Pool::terminate`]). While an `imap` begun before `close` has input
    /// left to read, it returns once the work submitted so far is done (the
    /// workers stay for that `imap` and exit when it ends or is dropped), so
    /// joining before reading it does not wait for ever.
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

    /// True on the pool's own thread (in a result callback).
    fn on_own_thread(&self) -> bool {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        thread.as_ref().is_some_and(|t| t.thread().id() == std::thread::current().id())
    }

    fn join_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<(), PoolError> {
        if !self.shared.is_closed() {
            return Err(PoolError::NotClosed);
        }
        if self.on_own_thread() {
            return Err(PoolError::OnPoolThread);
        }
        if !self.shared.wait_finished(deadline) {
            return Err(PoolError::Timeout(timeout));
        }
        if !self.shared.ended() {
            return Ok(()); // an open imap keeps the workers for its input
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
            if thread.thread().id() == std::thread::current().id() {
                // Dropped in a result callback (its last handle was there),
                // on the pool's own thread, which cannot wait for itself: it
                // ends by itself once the callback returns, and reaps the
                // workers; a closed pool (an executor's shutdown) after the
                // work already submitted, as a join would have waited for.
                if !self.shared.is_closed() {
                    self.shared.terminate();
                }
                return;
            }
            self.shared.terminate();
            let _ = thread.join();
        }
    }
}
