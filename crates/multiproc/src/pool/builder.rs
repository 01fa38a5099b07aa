//! `PoolBuilder`: the options of a new pool, and starting it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::RunnerRef;
use super::scheduler::{self, InitTemplate, PoolConfig};
use super::{Pool, PoolError, buffers};
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
    tune_allocator: bool,
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
            .field("keep_freed_memory", &self.tune_allocator)
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
            tune_allocator: true,
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
    /// If the initializer fails (panics, returns an error or ends the
    /// worker) three times in a row, the pool stops starting workers and
    /// every task fails with
    /// [`TaskError::NoWorkers`](super::TaskError::NoWorkers). A worker
    /// killed while initializing by a signal that usually comes from outside
    /// (SIGKILL, SIGTERM, SIGINT, SIGHUP: kill(1), the OOM killer) is not
    /// counted as such a failure: it is replaced, as Python replaces it. Only
    /// after five such deaths in a row per worker does the pool give up (the
    /// error then names the signal), so that an initializer that SIGKILLs
    /// its own worker does not have the pool start workers forever.
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
            tune_allocator: self.tune_allocator,
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
    /// [`TaskError::Timeout`](super::TaskError::Timeout); its worker is killed and replaced. Default:
    /// no limit (as is a limit of centuries, `Duration::MAX` included).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many times a task whose worker died while running it is run again
    /// before it fails with [`TaskError::WorkerLost`](super::TaskError::WorkerLost). Default 0.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Whether the pool may tune this process's C allocator the first time
    /// it moves a large buffer (default `true`); see [`keep_freed_memory`](super::keep_freed_memory),
    /// which it calls then. `false` leaves the allocator alone, as does
    /// [`allow_allocator_tuning(false)`](crate::allow_allocator_tuning) for
    /// the whole process.
    ///
    /// Measured with `pool_1mib` (1 MiB buffers through `imap`): glibc hands
    /// the pages of the consumed inputs back to the kernel in the middle of
    /// the call (one `brk` that unmaps them all) and faults fresh ones in
    /// for the next; tuned, the same process moves about 1.7 times the bytes.
    pub fn keep_freed_memory(mut self, tune: bool) -> Self {
        self.tune_allocator = tune;
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
        let buffers = Arc::new(buffers::Buffers::new(self.tune_allocator));
        Ok(Pool { shared, buffers, thread: Mutex::new(Some(thread)), processes, _state: PhantomData })
    }
}
