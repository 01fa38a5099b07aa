//! `Executor`: `concurrent.futures.ProcessPoolExecutor` on top of the pool.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AsyncResult, Imap, Pool, PoolBuilder, PoolError};
use crate::process::{StartMethod, Task};

/// A process pool in the `concurrent.futures` style: [`Executor::submit`]
/// returns a future ([`AsyncResult`], which can also be `.await`ed),
/// [`Executor::map`] yields results in order, [`Executor::shutdown`] ends it.
///
/// Dropping an executor shuts it down and waits for its running work, as
/// Python's `with ProcessPoolExecutor() as ex:` does.
///
/// # Examples
///
/// ```
/// use multiproc::Executor;
///
/// fn cube(x: u64) -> u64 { x * x * x }
///
/// let ex = Executor::new(2).unwrap();
/// let fut = ex.submit(cube, (3,)).unwrap();
/// assert_eq!(fut.get().unwrap(), 27);
/// let all: Vec<u64> = ex.map(cube, 1..=3u64).unwrap().map(Result::unwrap).collect();
/// assert_eq!(all, vec![1, 8, 27]);
/// ex.shutdown(true, false);
/// assert!(ex.submit(cube, (1,)).is_err());
/// ```
pub struct Executor {
    pool: Pool<()>,
    shut: AtomicBool,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("max_workers", &self.pool.processes())
            .field("shut_down", &self.shut.load(Ordering::Relaxed))
            .finish()
    }
}

/// Options for a new [`Executor`]. Created by [`Executor::builder`].
#[derive(Debug, Default)]
pub struct ExecutorBuilder {
    inner: PoolBuilder<()>,
}

impl ExecutorBuilder {
    /// The number of worker processes (default: the CPU count).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.inner = self.inner.processes(n);
        self
    }

    /// A worker is replaced after running this many tasks.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.inner = self.inner.max_tasks_per_child(n);
        self
    }

    /// How workers are started.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.inner = self.inner.start_method(method);
        self
    }

    /// Runs `f(args…)` once in each new worker (Python's `initializer`).
    pub fn initializer<F, A>(mut self, f: F, args: A) -> Self
    where
        F: Task<A, ()>,
        A: Serialize + DeserializeOwned,
    {
        self.inner = self.inner.initializer(f, args);
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// As for [`PoolBuilder::build`].
    pub fn build(self) -> Result<Executor, PoolError> {
        Ok(Executor { pool: self.inner.build()?, shut: AtomicBool::new(false) })
    }
}

impl Executor {
    /// An executor with `max_workers` processes.
    ///
    /// # Errors
    ///
    /// As for [`PoolBuilder::build`].
    pub fn new(max_workers: usize) -> Result<Executor, PoolError> {
        Executor::builder().max_workers(max_workers).build()
    }

    /// Options for a new executor.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    fn check(&self) -> Result<(), PoolError> {
        // ORDERING: a plain flag; the pool itself refuses work after close.
        if self.shut.load(Ordering::Acquire) { Err(PoolError::ShutDown) } else { Ok(()) }
    }

    /// Schedules `f(args…)`; the future can be waited on, polled, awaited or
    /// cancelled until the task is handed to a worker (a worker takes a few
    /// tasks ahead of the one it runs, as Python's executor queues a few
    /// calls ahead: see [`AsyncResult::cancel`]).
    ///
    /// # Errors
    ///
    /// [`PoolError::ShutDown`] after [`Executor::shutdown`].
    pub fn submit<F, A, R>(&self, f: F, args: A) -> Result<AsyncResult<R>, PoolError>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.check()?;
        Ok(self.pool.apply_async(f, args))
    }

    /// `f(x)` for every item, yielded in order (one task per item, as
    /// Python's default `chunksize=1`); the input is read a bounded window
    /// ahead, the first window at once, so the tasks start before the first
    /// `next` (see [`Imap`]).
    ///
    /// # Errors
    ///
    /// [`PoolError::ShutDown`] after [`Executor::shutdown`].
    pub fn map<'a, F, A, R, I>(&'a self, f: F, items: I) -> Result<Imap<'a, R>, PoolError>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.check()?;
        Ok(self.pool.imap(f, items))
    }

    /// Takes no more work; a [`Executor::map`] begun before goes on reading
    /// its input. With `cancel_futures`, tasks that no worker has received
    /// yet fail with [`TaskError::Cancelled`](super::TaskError::Cancelled),
    /// and such a map reads no more (it ends with [`PoolError::Closed`]);
    /// with `wait`, returns once the running ones finished and the workers
    /// exited.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        // ORDERING: see `check`.
        self.shut.store(true, Ordering::Release);
        if cancel_futures {
            self.pool.shared.cancel_pending();
        }
        self.pool.close();
        if wait {
            let _ = self.pool.join();
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}
