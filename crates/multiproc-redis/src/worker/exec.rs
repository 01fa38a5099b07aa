//! Running tasks on the worker host: each task in a local multiproc
//! [`Pool`], so a task that crashes its process fails alone, and a task
//! with a timeout in a pool with that task timeout (one pool per distinct
//! timeout, created when first needed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A local pool and how many of its tasks are unfinished.
#[derive(Debug)]
struct Slot {
    pool: Arc<Pool>,
    busy: Arc<AtomicUsize>,
}

/// The local pools of a worker host.
#[derive(Debug)]
pub(crate) struct Executors {
    processes: usize,
    pools: Mutex<HashMap<Option<u64>, Slot>>,
}

impl Executors {
    pub(crate) fn new(processes: usize) -> Result<Executors, PoolError> {
        let ex = Executors { processes, pools: Mutex::default() };
        ex.pool(None)?.1.fetch_sub(1, Ordering::AcqRel);
        Ok(ex)
    }

    /// The pool for `timeout_ms`, with one more task counted as busy in it.
    /// With [`MAX_POOLS`] pools already, an idle one (not the default) makes
    /// room: the cap is on timeouts in use at once, not over the host's life.
    fn pool(&self, timeout_ms: Option<u64>) -> Result<(Arc<Pool>, Arc<AtomicUsize>), PoolError> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = pools.get(&timeout_ms) {
            s.busy.fetch_add(1, Ordering::AcqRel);
            return Ok((s.pool.clone(), s.busy.clone()));
        }
        let mut evicted = None;
        if pools.len() >= MAX_POOLS {
            // ORDERING: Acquire pairs with the release of the last task's count.
            let idle = pools.iter().find(|(t, s)| t.is_some() && s.busy.load(Ordering::Acquire) == 0).map(|(t, _)| *t);
            match idle {
                Some(t) => evicted = pools.remove(&t),
                None => {
                    return Err(PoolError::Input {
                        index: 0,
                        message: format!("a worker host runs at most {MAX_POOLS} distinct task timeouts at once"),
                    });
                }
            }
        }
        // Pool workers ignore SIGINT and SIGTERM: a terminal's Ctrl-C or a
        // service manager's SIGTERM reaches every process of the group, and
        // is for the host, which stops its workers once the tasks in hand
        // are done (a worker still dies with the host).
        let ignoring = Pool::builder().initializer(multiproc::process::ignore_stop_signals, ());
        let mut b = ignoring.processes(self.processes);
        if let Some(ms) = timeout_ms {
            b = b.task_timeout(Duration::from_millis(ms.max(1)));
        }
        let slot = Slot { pool: Arc::new(b.build()?), busy: Arc::new(AtomicUsize::new(1)) };
        let got = (slot.pool.clone(), slot.busy.clone());
        pools.insert(timeout_ms, slot);
        drop(pools);
        drop(evicted); // stops its idle processes, outside the lock
        Ok(got)
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
        let (pool, busy) = match self.pool(timeout_ms) {
            Ok(p) => p,
            Err(e) => return done((Err(TaskFailure::WorkerLost(format!("no local pool: {e}"))), true)),
        };
        let done = move |r: ItemResult| {
            // ORDERING: Release pairs with the Acquire of an eviction.
            busy.fetch_sub(1, Ordering::AcqRel);
            done(r)
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
