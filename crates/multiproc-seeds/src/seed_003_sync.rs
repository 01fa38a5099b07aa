//! Seed 003 (`Python多进程库multiprocessing…`): an `Event` passed between
//! processes, and a shared `Value` and `Array` written by a child. The Python
//! programs, shortened:
//!
//! ```python
//! def wait_for_event(e):
//!     print('wait_for_event: starting'); e.wait()
//!     print('wait_for_event: e.is_set()->', e.is_set())
//! def wait_for_event_timeout(e, t):
//!     print('wait_for_event_timeout: starting'); e.wait(t)
//!     print('wait_for_event_timeout: e.is_set()->', e.is_set())
//! e = multiprocessing.Event()
//! w1 = Process(name='block', target=wait_for_event, args=(e,)); w1.start()
//! w2 = Process(name='nonblock', target=wait_for_event_timeout, args=(e, 2)); w2.start()
//! print('main: waiting before calling Event.set()'); time.sleep(3)
//! e.set(); print('main: event is set')
//!
//! def func(num): num.value = 10.78
//! num = multiprocessing.Value("d", 10.0); print(num.value)
//! p = Process(target=func, args=(num,)); p.start(); p.join(); print(num.value)
//! def func(num): num[2] = 9999
//! num = multiprocessing.Array("i", [1, 2, 3, 4, 5]); print(num[:])
//! p = Process(target=func, args=(num,)); p.start(); p.join(); print(num[:])
//! ```
//!
//! Instead of sleeping three seconds before `set`, the parent waits for the
//! non-blocking child to finish (its timeout, shortened to 200 ms, has then
//! certainly passed), so the outcome is the same on every run.

use std::time::{Duration, Instant};

use multiproc::{Array, Event, Process, Value};

use crate::{Error, PATIENCE, Report};

/// What [`event_wait`] showed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventWait {
    /// The child that waited without a timeout saw the event set.
    pub block_saw_set: bool,
    /// The child that waited with a timeout saw the event set (it did not:
    /// its timeout passed first).
    pub nonblock_saw_set: bool,
    /// How long the child with a timeout waited.
    pub nonblock_waited: Duration,
    /// The timeout it was given.
    pub timeout: Duration,
}

/// Waits for the event with no timeout.
fn wait_for_event(e: Event) -> (Vec<String>, bool) {
    let mut lines = vec!["wait_for_event: starting".to_string()];
    e.wait();
    let set = e.is_set();
    lines.push(format!("wait_for_event: e.is_set()-> {set}"));
    (lines, set)
}

/// Waits for the event at most `t`.
fn wait_for_event_timeout(e: Event, t: Duration) -> (Vec<String>, bool, Duration) {
    let mut lines = vec!["wait_for_event_timeout: starting".to_string()];
    let start = Instant::now();
    let set = e.wait_timeout(t);
    let waited = start.elapsed();
    lines.push(format!("wait_for_event_timeout: e.is_set()-> {set}"));
    (lines, set, waited)
}

/// An event set by the parent, waited for by one child without a timeout and
/// by another with one.
///
/// # Errors
///
/// A child could not start or did not return.
pub fn event_wait() -> Result<Report<EventWait>, Error> {
    let timeout = Duration::from_millis(200);
    let e = Event::new().map_err(|err| Error::Unexpected(format!("cannot create the event: {err}")))?;
    let mut block = Process::builder().name("block").spawn(wait_for_event, (e.clone(),))?;
    let mut nonblock = Process::builder().name("nonblock").spawn(wait_for_event_timeout, (e.clone(), timeout))?;
    let mut lines = vec!["main: waiting before calling Event.set()".to_string()];
    let (nonblock_lines, nonblock_saw_set, nonblock_waited) = nonblock.join_timeout(PATIENCE)?;
    lines.extend(nonblock_lines);
    e.set();
    lines.push("main: event is set".to_string());
    let (block_lines, block_saw_set) = block.join_timeout(PATIENCE)?;
    lines.extend(block_lines);
    Ok(Report { lines, outcome: EventWait { block_saw_set, nonblock_saw_set, nonblock_waited, timeout } })
}

/// What [`shared_value_array`] showed.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedState {
    /// The value before and after the child wrote it.
    pub value: (f64, f64),
    /// The array before and after the child wrote it.
    pub array: (Vec<i32>, Vec<i32>),
}

fn set_value(num: Value<f64>) {
    num.set(10.78);
}

fn set_element(num: Array<i32>) {
    num.set(2, 9999);
}

/// A `Value` and an `Array` written by a child, read by the parent.
///
/// # Errors
///
/// The shared memory could not be made, or a child could not start or did
/// not return.
pub fn shared_value_array() -> Result<Report<SharedState>, Error> {
    let shared = |err: std::io::Error| Error::Unexpected(format!("cannot create shared memory: {err}"));
    let num = Value::new(10.0f64).map_err(shared)?;
    let before = num.get();
    let mut lines = vec![format!("{before:?}")];
    Process::spawn(set_value, (num.clone(),))?.join_timeout(PATIENCE)?;
    let after = num.get();
    lines.push(format!("{after:?}"));

    let arr = Array::from_slice(&[1i32, 2, 3, 4, 5]).map_err(shared)?;
    let arr_before = arr.to_vec();
    lines.push(format!("{arr_before:?}"));
    Process::spawn(set_element, (arr.clone(),))?.join_timeout(PATIENCE)?;
    let arr_after = arr.to_vec();
    lines.push(format!("{arr_after:?}"));
    Ok(Report { lines, outcome: SharedState { value: (before, after), array: (arr_before, arr_after) } })
}
