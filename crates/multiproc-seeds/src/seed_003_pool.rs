//! Seed 003 (`Python多进程库multiprocessing`): `apply_async` with `callback`
//! and `error_callback`, and pool workers' names with results in order.
//!
//! ```python
//! def work(i):
//!     print('child success')
//!     1/0
//! def cb(e):
//!     print('the child succeeded: the callback runs; a failed child runs no callback without error handling')
//! pool = multiprocessing.Pool(processes=10)
//! for i in range(0, 2):
//!     pool.apply_async(work, (i,), callback=cb)
//! pool.close(); pool.join(); print('success')
//! ```
//!
//! Here half the tasks divide by zero (a panic in Rust) and half succeed;
//! each call gets exactly one callback: `callback` with the value or
//! `error_callback` with the error, which carries the panic's message and location.

use std::sync::{Arc, Mutex};

use multiproc::{Pool, current_process};

use crate::{Error, PATIENCE, Report};

/// Divides 100 by `i % 2` — zero for even `i`, which panics.
fn work(i: u64) -> u64 {
    let divisor = std::hint::black_box(i % 2);
    if divisor == 0 {
        panic!("attempt to divide by zero");
    }
    100 / divisor + i
}

/// What [`pool_callbacks`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callbacks {
    /// `(i, value)` for each `callback` call.
    pub successes: Vec<(u64, u64)>,
    /// `(i, message)` for each `error_callback` call.
    pub errors: Vec<(u64, String)>,
}

/// Submits ten tasks with both callbacks, closes and joins the pool.
///
/// # Errors
///
/// The pool failed.
pub fn pool_callbacks() -> Result<Report<Callbacks>, Error> {
    let seen = Arc::new(Mutex::new(Callbacks { successes: Vec::new(), errors: Vec::new() }));
    let pool = Pool::new(4)?;
    let mut results = Vec::new();
    for i in 0..10u64 {
        let (ok, err) = (seen.clone(), seen.clone());
        let result = pool
            .apply_async(work, (i,))
            .callback(move |v| ok.lock().unwrap_or_else(|e| e.into_inner()).successes.push((i, *v)))
            .error_callback(move |e| err.lock().unwrap_or_else(|e| e.into_inner()).errors.push((i, e.to_string())));
        results.push(result);
    }
    pool.close();
    pool.join_timeout(PATIENCE)?;
    if !results.iter().all(|r| r.ready()) {
        return Err(Error::Unexpected("a task was not done after join".into()));
    }
    let mut outcome = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    outcome.successes.sort();
    outcome.errors.sort();
    let mut lines = Vec::new();
    for (i, v) in &outcome.successes {
        lines.push(format!("callback: task {i} returned {v}"));
    }
    for (i, e) in &outcome.errors {
        lines.push(format!("error_callback: task {i}: {e}"));
    }
    lines.push("success".into());
    Ok(Report { lines, outcome })
}

/// The task of [`pool_worker_names`]: the worker's name and the message.
fn hello(msg: String) -> String {
    format!("{}-{msg}", current_process().name)
}

/// Seed 003's pool of four: ten `apply_async` calls, `close`, `join`, then
/// each result's `get`, in the order submitted (whichever worker ran it).
///
/// ```python
/// def func(msg):
///     return multiprocessing.current_process().name + '-' + msg
/// pool = multiprocessing.Pool(processes=4)
/// results = [pool.apply_async(func, ("hello %d" % i,)) for i in range(10)]
/// pool.close(); pool.join(); print("Sub-process(es) done.")
/// for res in results: print(res.get())         # PoolWorker-37-hello 0, ...
/// ```
///
/// The outcome is the ten results, in submission order.
///
/// # Errors
///
/// The pool or a task failed.
pub fn pool_worker_names() -> Result<Report<Vec<String>>, Error> {
    let pool = Pool::new(4)?;
    let results: Vec<_> = (0..10).map(|i| pool.apply_async(hello, (format!("hello {i}"),))).collect();
    pool.close();
    pool.join_timeout(PATIENCE)?;
    let mut lines = vec!["Sub-process(es) done.".to_string()];
    let mut outcome = Vec::new();
    for mut r in results {
        let said = r.get_timeout(PATIENCE)?;
        lines.push(said.clone());
        outcome.push(said);
    }
    Ok(Report { lines, outcome })
}
