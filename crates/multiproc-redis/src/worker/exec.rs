//! Running tasks on the worker host: each task in a local multiproc
//! [`Pool`], so a task that crashes its process fails alone, and a task
//! with a timeout in a pool with that task timeout (one pool per distinct
//! timeout, created when first needed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use multiproc::{Pool, PoolError, RemoteFn, TaskError};
use serde_bytes::ByteBuf;

use crate::error::TaskFailure;

/// The most distinct task timeouts a host keeps a pool for.
const MAX_POOLS: usize = 8;

/// Runs one task in a pool worker process: the function the task names, on
/// its encoded arguments.
fn run_remote(remote: RemoteFn, args: ByteBuf) -> Result<ByteBuf, String> {
    // SAFETY: the host calls this only for a task whose build id equals this
    // build's and whose MAC it verified under the pool's key (see
    // `intake::admit`); pool workers run the host's executable.
    unsafe { remote.call(&args) }.map(ByteBuf::from)
}

/// What became of one item: `true` in the second place when it may succeed
/// on another delivery (its process died).
pub(crate) type ItemResult = (Result<ByteBuf, TaskFailure>, bool);

/// The local pools of a worker host.
#[derive(Debug)]
pub(crate) struct Executors {
    processes: usize,
    pools: Mutex<HashMap<Option<u64>, Arc<Pool>>>,
}

impl Executors {
    pub(crate) fn new(processes: usize) -> Result<Executors, PoolError> {
        let ex = Executors { processes, pools: Mutex::default() };
        ex.pool(None)?;
        Ok(ex)
    }

    fn pool(&self, timeout_ms: Option<u64>) -> Result<Arc<Pool>, PoolError> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(&timeout_ms) {
            return Ok(p.clone());
        }
        if pools.len() >= MAX_POOLS {
            return Err(PoolError::Input {
                index: 0,
                message: format!("a worker host runs at most {MAX_POOLS} distinct task timeouts at once"),
            });
        }
        let mut b = Pool::builder().processes(self.processes);
        if let Some(ms) = timeout_ms {
            b = b.task_timeout(Duration::from_millis(ms.max(1)));
        }
        let pool = Arc::new(b.build()?);
        pools.insert(timeout_ms, pool.clone());
        Ok(pool)
    }

    /// Runs `args` through `remote`; `done` gets the outcome on the pool's
    /// scheduler thread.
    pub(crate) fn submit(
        &self,
        remote: RemoteFn,
        timeout_ms: Option<u64>,
        args: ByteBuf,
        done: impl FnOnce(ItemResult) + Send + 'static,
    ) {
        let pool = match self.pool(timeout_ms) {
            Ok(p) => p,
            Err(e) => return done((Err(TaskFailure::WorkerLost(format!("no local pool: {e}"))), true)),
        };
        let done = Arc::new(Mutex::new(Some(done)));
        let on_err = done.clone();
        // The callbacks report the outcome; the handle itself is not needed.
        drop(
            pool.apply_async(run_remote, (remote, args))
                .callback(move |r: &Result<ByteBuf, String>| {
                    let r = r.clone().map_err(TaskFailure::Unserializable);
                    finish(&done, (r, false))
                })
                .error_callback(move |e| finish(&on_err, failure(e))),
        );
    }
}

/// Calls the completion once (exactly one of the two callbacks runs, but
/// both hold it).
fn finish<F: FnOnce(ItemResult)>(slot: &Mutex<Option<F>>, r: ItemResult) {
    if let Some(f) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
        f(r)
    }
}

/// A pool error as a task failure, and whether another delivery may help.
fn failure(e: &PoolError) -> ItemResult {
    let f = match e.task_error() {
        Some(TaskError::Panicked(p)) => {
            return (Err(TaskFailure::Panicked { message: p.message.clone(), location: p.location.clone() }), false);
        }
        Some(TaskError::Timeout(d)) => return (Err(TaskFailure::Timeout(*d)), false),
        Some(TaskError::Unserializable(s)) => return (Err(TaskFailure::Unserializable(s.clone())), false),
        Some(other) => TaskFailure::WorkerLost(other.to_string()),
        None => TaskFailure::WorkerLost(e.to_string()),
    };
    (Err(f), true)
}
