//! What a call returns: [`RedisImap`] (one outcome per item, in order or
//! as they finish) and [`RedisAsync`] (a result that arrives in the
//! background).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use multiproc::pool::OutcomeSlot;
use serde::de::DeserializeOwned;

use crate::call::Engine;
use crate::error::{RedisPoolError, TaskFailure};
use crate::life::CallGuard;

/// The results of an `imap` call, one `Result` per item: in input order
/// ([`RedisPool::imap`](crate::RedisPool::imap)) or as they finish
/// ([`RedisPool::imap_unordered`](crate::RedisPool::imap_unordered)).
pub struct RedisImap<'a, R> {
    engine: Engine<'a>,
    ordered: bool,
    early: BTreeMap<usize, Result<Vec<u8>, RedisPoolError>>,
    next: usize,
    /// Where a `try_imap` input's first error lands (yielded last).
    fault: Option<InputFault>,
    _result: PhantomData<fn() -> R>,
}

/// The first error of a `try_imap` input: its index and message, set by
/// the input adapter (which then ends the input).
#[derive(Debug, Clone, Default)]
pub(crate) struct InputFault(Arc<Mutex<Option<(usize, String)>>>);

impl InputFault {
    /// `items` up to their first error, which is kept here.
    pub(crate) fn cut<A, E: fmt::Display, I: Iterator<Item = Result<A, E>>>(self, items: I) -> impl Iterator<Item = A> {
        items
            .enumerate()
            .map_while(move |(index, item)| {
                item.map_err(|e| *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((index, e.to_string()))).ok()
            })
            .fuse()
    }

    fn take(&self) -> Option<RedisPoolError> {
        let (index, message) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        Some(RedisPoolError::Input { index, message })
    }
}

impl<R> fmt::Debug for RedisImap<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisImap").field("engine", &self.engine).field("ordered", &self.ordered).finish()
    }
}

impl<'a, R: DeserializeOwned> RedisImap<'a, R> {
    /// The results of `engine`'s call, whose first window is submitted now.
    pub(crate) fn new(mut engine: Engine<'a>, ordered: bool) -> Self {
        engine.start();
        RedisImap { engine, ordered, early: BTreeMap::new(), next: 0, fault: None, _result: PhantomData }
    }

    /// Yields `fault`'s error, if any, after the last result.
    pub(crate) fn with_fault(mut self, fault: InputFault) -> Self {
        self.fault = Some(fault);
        self
    }

    fn decode(index: usize, r: Result<Vec<u8>, RedisPoolError>) -> Result<R, RedisPoolError> {
        let bytes = r?;
        postcard::from_bytes(&bytes).map_err(|e| RedisPoolError::Task {
            index,
            error: TaskFailure::Unserializable(format!(
                "result does not decode as {}: {e}",
                std::any::type_name::<R>()
            )),
        })
    }
}

impl<R: DeserializeOwned> Iterator for RedisImap<'_, R> {
    type Item = Result<R, RedisPoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(None).unwrap_or_else(|| unreachable!("no deadline"))
    }
}

impl<R: DeserializeOwned> RedisImap<'_, R> {
    /// The next result, waiting at most `timeout` for it (Python's
    /// `IMapIterator.next(timeout)`, the local
    /// [`Imap::next_timeout`](multiproc::Imap::next_timeout)). On a timeout
    /// it returns `Some(Err(RedisPoolError::Timeout))` and the iteration
    /// goes on: the result comes with a later call. `None` at the end, as
    /// [`Iterator::next`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc_redis::{RedisPool, RedisServer, Worker};
    ///
    /// fn slow(x: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(if x == 0 { 500 } else { 0 }));
    ///     x
    /// }
    ///
    /// let server = RedisServer::start().unwrap();
    /// let worker = Worker::builder(&server.url()).processes(1).start().unwrap();
    /// let pool = RedisPool::builder(&server.url()).wait_timeout(Duration::from_secs(60)).connect().unwrap();
    /// let mut results = pool.imap(slow, 0..2u64);
    /// assert!(results.next_timeout(Duration::from_millis(10)).unwrap().unwrap_err().is_timeout());
    /// assert_eq!(results.next_timeout(Duration::from_secs(60)).unwrap().unwrap(), 0);
    /// assert_eq!(results.next_timeout(Duration::from_secs(60)).unwrap().unwrap(), 1);
    /// assert!(results.next_timeout(Duration::from_secs(60)).is_none());
    /// drop(results);
    /// worker.stop();
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, RedisPoolError>> {
        self.next_until(Instant::now().checked_add(timeout)).unwrap_or(Some(Err(RedisPoolError::Timeout(timeout))))
    }

    /// The next result, waiting no later than `until`: `None` when it
    /// passed first.
    fn next_until(&mut self, until: Option<Instant>) -> Option<Option<Result<R, RedisPoolError>>> {
        let next = self.next_result_until(until)?;
        Some(next.or_else(|| self.fault.as_ref().and_then(InputFault::take).map(Err)))
    }

    /// As `next_until`, without the input's error.
    fn next_result_until(&mut self, until: Option<Instant>) -> Option<Option<Result<R, RedisPoolError>>> {
        if !self.ordered {
            return Some(self.engine.next_outcome_until(until)?.map(|(index, r)| Self::decode(index, r)));
        }
        loop {
            if let Some(r) = self.early.remove(&self.next) {
                self.next += 1;
                return Some(Some(Self::decode(self.next - 1, r)));
            }
            // Results behind a slow item wait here: the input is read at
            // most a window ahead of the next one to yield.
            self.engine.yielded_up_to(self.next);
            match self.engine.next_outcome_until(until)? {
                Some((index, r)) => {
                    self.early.insert(index, r);
                }
                None => {
                    // Only after a failure of the whole call: the rest in order.
                    let Some((index, r)) = self.early.pop_first() else { return Some(None) };
                    self.next = index + 1;
                    return Some(Some(Self::decode(index, r)));
                }
            }
        }
    }
}

/// A result that arrives in the background
/// ([`RedisPool::apply_async`](crate::RedisPool::apply_async),
/// [`RedisPool::map_async`](crate::RedisPool::map_async)): the calls of
/// [`multiproc::AsyncResult`], also a [`Future`].
///
/// Each background call runs on a thread of its own in the caller's
/// process, which waits for the results from Redis. Exactly one of the
/// callbacks runs per call: [`RedisAsync::callback`] with the value, or
/// [`RedisAsync::error_callback`] with the error. They run on that call's
/// thread (or at once, on the caller's thread, if the result is already
/// there) before the result counts as ready. A callback attached after
/// the outcome was taken out (by [`RedisAsync::get_timeout`] or by
/// awaiting) does not run: there is nothing left to give it.
///
/// Unlike the local pool's, a task on its way to a worker host cannot be
/// cancelled one by one (there is no `cancel`): a call whose wait timeout
/// passes, [`RedisPool::terminate`](crate::RedisPool::terminate), or
/// dropping the pool deletes the tasks still queued.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc_redis::{RedisPool, RedisServer, Worker};
///
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// let server = RedisServer::start().unwrap();
/// let worker = Worker::builder(&server.url()).processes(1).start().unwrap();
/// let pool = RedisPool::builder(&server.url()).wait_timeout(Duration::from_secs(60)).connect().unwrap();
/// let r = pool.apply_async(add, (2, 3));
/// assert!(r.wait_timeout(Duration::from_secs(60)));
/// assert!(r.ready());
/// assert!(r.successful().unwrap());
/// assert_eq!(r.get().unwrap(), 5);
/// worker.stop();
/// ```
pub struct RedisAsync<T> {
    slot: Arc<OutcomeSlot<T, RedisPoolError>>,
}

impl<T> fmt::Debug for RedisAsync<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAsync").field("ready", &self.ready()).finish()
    }
}

impl<T: Send + 'static> RedisAsync<T> {
    /// Runs `work` on a call thread; `held` (the call's count for
    /// `RedisPool::join`) is let go once the outcome is in, callbacks run.
    pub(crate) fn spawn(
        held: Option<CallGuard>,
        work: impl FnOnce() -> Result<T, RedisPoolError> + Send + 'static,
    ) -> RedisAsync<T> {
        let slot = Arc::new(OutcomeSlot::new());
        let s = slot.clone();
        let started = std::thread::Builder::new().name("multiproc-redis call".into()).spawn(move || {
            let outcome =
                panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| Err(RedisPoolError::call_thread_died()));
            s.complete(outcome);
            drop(held);
        });
        let value = started.err().map(|e| Err(RedisPoolError::no_thread("could not start the call's thread", e)));
        if let Some(v) = value {
            slot.complete(v);
        }
        RedisAsync { slot }
    }
}

impl<T> RedisAsync<T> {
    /// True once the outcome is known (Python's `ready()`).
    pub fn ready(&self) -> bool {
        self.slot.ready()
    }

    /// Whether the call succeeded (Python's `successful()`).
    ///
    /// # Errors
    ///
    /// [`RedisPoolError::NotReady`] before the outcome is known, or
    /// [`RedisPoolError::Taken`] after `get_timeout` took it.
    pub fn successful(&self) -> Result<bool, RedisPoolError> {
        self.slot.successful()
    }

    /// Waits until the outcome is known. Bounded by the call's wait
    /// timeout ([`RedisPoolBuilder::wait_timeout`](crate::RedisPoolBuilder::wait_timeout)),
    /// if it has one.
    pub fn wait(&self) {
        self.slot.wait();
    }

    /// Waits at most `timeout`; true when the outcome is known. The call
    /// goes on either way.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait_timeout(timeout)
    }

    /// Waits for the outcome and returns it.
    ///
    /// # Errors
    ///
    /// As for the call that made it, or [`RedisPoolError::Taken`] after an
    /// earlier successful `get_timeout`.
    pub fn get(self) -> Result<T, RedisPoolError> {
        self.slot.get()
    }

    /// Waits at most `timeout` for the outcome. On timeout the call goes on
    /// and this result can be asked again; once the outcome is returned, it
    /// is gone from here.
    ///
    /// # Errors
    ///
    /// [`RedisPoolError::Timeout`] (ask again later), [`RedisPoolError::Taken`]
    /// after an earlier successful wait, or as for the call.
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<T, RedisPoolError> {
        self.slot.get_timeout(timeout)
    }

    /// Runs `callback` with the value if the call succeeds (Python's
    /// `callback=`), on the call's thread.
    pub fn callback(self, callback: impl FnOnce(&T) + Send + 'static) -> Self {
        self.slot.attach(Some(Box::new(callback)), None);
        self
    }

    /// Runs `callback` with the error if the call fails (Python's
    /// `error_callback=`), on the call's thread.
    pub fn error_callback(self, callback: impl FnOnce(&RedisPoolError) + Send + 'static) -> Self {
        self.slot.attach(None, Some(Box::new(callback)));
        self
    }
}

impl<T> Future for RedisAsync<T> {
    type Output = Result<T, RedisPoolError>;

    /// Ready with the outcome; polling again after that gives
    /// [`RedisPoolError::Taken`]. The call's thread wakes the task when the
    /// outcome arrives (no polling loop).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.slot.poll_take(cx.waker())
    }
}
