//! The caller's side: [`RedisPool`] and its calls.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiproc::{RemoteFn, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::{EncodedItem, Engine, Plan};
use crate::conn::Conn;
use crate::dispatch::{Dispatcher, Options, Shared, Submitter};
use crate::endpoint::{Endpoint, endpoint_setters};
use crate::error::{RedisPoolError, cannot_connect};
use crate::life::Life;
use crate::results::{InputFault, RedisAsync, RedisImap};

/// The longest result time to live: its milliseconds fit an expiry.
const MAX_RESULT_TTL: Duration = Duration::from_secs(u32::MAX as u64);

/// Options for a new [`RedisPool`]. Created by [`RedisPool::builder`].
#[derive(Clone)]
pub struct RedisPoolBuilder {
    endpoint: Endpoint,
    options: Options,
}

impl fmt::Debug for RedisPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPoolBuilder").field("endpoint", &self.endpoint).field("options", &self.options).finish()
    }
}

impl RedisPoolBuilder {
    endpoint_setters!();

    /// How many more times a chunk whose worker died (or whose host died) is
    /// delivered before it goes to the dead-letter stream. Default 2.
    pub fn retries(mut self, n: u32) -> Self {
        self.options.retries = n;
        self
    }

    /// The longest one task may run on a worker; its process is killed after
    /// it. Default: no limit.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.options.task_timeout = Some(timeout);
        self
    }

    /// The longest a blocking call waits for its results before it fails with
    /// [`RedisPoolError::Timeout`] (with no worker running, a call would
    /// otherwise wait for one); its tasks still queued are then deleted, as
    /// for a dropped call (which may take up to 1 s more). It bounds the
    /// whole call, queuing included, also when Redis stops answering.
    /// Default: no limit.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.options.wait_timeout = Some(timeout);
        self
    }

    /// How long Redis may be unreachable (a restart, a network cut) before
    /// the calls waiting on it fail with [`RedisPoolError::Redis`]. Default
    /// 30 s. A server that stops answering (rather than refusing
    /// connections) counts as unreachable once a reply is 10 s late, so a
    /// call without a [`wait_timeout`](Self::wait_timeout) notices it up to
    /// 10 s later. A batch of tasks whose reply was lost is sent again
    /// meanwhile, and queued once if within a day (its mark in Redis, see
    /// [`crate::schema`], lives no longer).
    pub fn reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.options.reconnect_timeout = timeout;
        self
    }

    /// How long unread results (and large arguments) stay in Redis. Default
    /// one hour; at least 1 s, at most about 136 years (what Redis takes as
    /// an expiry).
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.options.result_ttl = ttl.clamp(Duration::from_secs(1), MAX_RESULT_TTL);
        self
    }

    /// At most this many chunks of one call are queued at a time (default
    /// 4096): a long `imap` input is read a window ahead of its results. An
    /// ordered `imap` also reads at most a window of items (this many
    /// chunks' worth) ahead of the next result it yields, so that the
    /// results held behind a slow item stay bounded.
    pub fn window(mut self, chunks: usize) -> Self {
        self.options.window = chunks.max(1);
        self
    }

    /// Connects.
    ///
    /// # Errors
    ///
    /// [`RedisPoolError::Redis`] if the URL is bad or the server cannot be
    /// reached; [`RedisPoolError::Local`] if this host cannot start the
    /// pool's result thread or gives no randomness for its caller id.
    pub fn connect(self) -> Result<RedisPool, RedisPoolError> {
        let submit = Conn::open(&self.endpoint.url).map_err(cannot_connect)?;
        let reader = submit.another().map_err(cannot_connect)?;
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).map_err(|e| RedisPoolError::no_randomness("could not make a caller id", e))?;
        let caller: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let keys = self.endpoint.keys();
        let shared = Arc::new(Shared {
            results_key: keys.results(&caller),
            keys,
            caller,
            key: self.endpoint.key,
            options: self.options,
            submit: Mutex::new(Submitter::new(submit)),
            left_by_drop: Mutex::new(None),
            pending: Mutex::default(),
            next_task: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            life: Life::default(),
        });
        let dispatcher = Dispatcher::start(shared.clone(), reader)
            .map_err(|e| RedisPoolError::no_thread("could not start the pool's result thread", e))?;
        Ok(RedisPool { shared, _dispatcher: dispatcher })
    }
}

/// A pool whose tasks run on worker hosts, carried by Redis Streams.
///
/// The calls are those of [`multiproc::Pool`], for the same plain `fn`
/// items and `serde` arguments; the workers must run this same build of
/// the program (see [`crate::Worker`]). Every result arrives exactly once.
///
/// Dropping the pool ends the calls still in flight (background calls,
/// iterators that outlive it) as [`RedisPool::terminate`] does, failing
/// them with [`RedisPoolError::Dropped`]: their tasks still queued are
/// deleted, and all their tasks are marked withdrawn, so that none starts
/// later (a task a host already runs finishes there, its result dropped).
/// Then it deletes its result stream. To let the calls in flight finish
/// first, call [`RedisPool::close`] then [`RedisPool::join`], as with the
/// local pool.
///
/// A drop never hangs: its result thread stops once its command under way
/// ends, within about 2 s on a Redis that stopped answering (its reply
/// timeout; about 4 s should it be reconnecting then: a connect and a
/// reply), then the drop waits for Redis at most 1 s (or the [reconnect
/// timeout](RedisPoolBuilder::reconnect_timeout), if shorter, but at least
/// 250 ms) to withdraw the tasks and delete the stream: about 5 s at
/// worst. What it could not do is logged as a `tracing` warning: those
/// tasks may then run, and their results expire unread.
pub struct RedisPool {
    shared: Arc<Shared>,
    _dispatcher: Dispatcher,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool").field("caller", &self.shared.caller).field("queue", &self.shared.keys).finish()
    }
}

/// A call method: `A` (the arguments) and `R` (the result) are `serde`
/// types that can cross threads; the second bracket adds its own bounds.
macro_rules! serde_call {
    ($(#[$doc:meta])* fn $name:ident<$($lt:lifetime,)? $($g:ident),*>($($params:tt)*) -> $ret:ty where [$($wc:tt)*] $body:block) => {
        $(#[$doc])*
        pub fn $name<$($lt,)? $($g),*>($($params)*) -> $ret
        where
            A: Serialize + DeserializeOwned + Send + 'static,
            R: Serialize + DeserializeOwned + Send + 'static,
            $($wc)*
        $body
    };
}

impl RedisPool {
    /// A pool on the Redis server at `url` (`redis://host:port/db`), with
    /// default options.
    ///
    /// # Errors
    ///
    /// As for [`RedisPoolBuilder::connect`].
    pub fn connect(url: &str) -> Result<RedisPool, RedisPoolError> {
        RedisPool::builder(url).connect()
    }

    /// Options for a pool on the Redis server at `url`.
    pub fn builder(url: &str) -> RedisPoolBuilder {
        RedisPoolBuilder {
            endpoint: Endpoint::new(url),
            options: Options {
                retries: 2,
                task_timeout: None,
                wait_timeout: None,
                result_ttl: Duration::from_secs(3600),
                reconnect_timeout: Duration::from_secs(30),
                window: 4096,
            },
        }
    }

    /// This pool's caller id (its results arrive on `P:results:<id>`).
    pub fn caller_id(&self) -> &str {
        &self.shared.caller
    }

    /// No new calls: later calls fail with [`RedisPoolError::Closed`]
    /// (Python's `close()`). The calls begun before go on to their end;
    /// an `imap` begun before goes on reading its input. The worker hosts
    /// are not this pool's to stop: they go on serving other callers (stop
    /// them with [`Worker::stop`](crate::Worker::stop)).
    pub fn close(&self) {
        self.shared.life.close();
    }

    /// Closes the pool and ends every call in flight now (Python's
    /// `terminate()`): they fail with [`RedisPoolError::Terminated`], and
    /// their tasks still queued in Redis are deleted. Unlike the local
    /// pool, it cannot kill the worker processes: a task a worker host has
    /// already taken runs to its end there, and its result is dropped. A
    /// task queued again after its host died has a new entry, which the
    /// pool cannot delete: the pool marks it withdrawn (see
    /// [`crate::schema`]), and the host that takes it deletes it unrun. A
    /// dropped call, one out of wait time, and dropping the pool do the
    /// same.
    pub fn terminate(&self) {
        self.shared.life.terminate();
        self.shared.wake_all();
    }

    /// Waits until every call begun before [`RedisPool::close`] (or
    /// [`RedisPool::terminate`]) has ended, callbacks included. A call ends
    /// when its results are all in or it failed; an `imap` ends when it is
    /// read to its end or dropped, so join after reading or dropping it
    /// (or use [`RedisPool::join_timeout`]). Unlike the local pool's, it
    /// does not wait for worker processes: they belong to the hosts.
    ///
    /// # Errors
    ///
    /// [`RedisPoolError::NotClosed`] before `close` or `terminate`.
    pub fn join(&self) -> Result<(), RedisPoolError> {
        self.join_until(None, Duration::MAX)
    }

    /// As [`RedisPool::join`], giving up after `timeout` (the calls go on).
    ///
    /// # Errors
    ///
    /// [`RedisPoolError::NotClosed`], or [`RedisPoolError::Timeout`] after
    /// ≈`timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), RedisPoolError> {
        self.join_until(Instant::now().checked_add(timeout), timeout)
    }

    fn join_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<(), RedisPoolError> {
        if !self.shared.life.is_closed() {
            return Err(RedisPoolError::NotClosed);
        }
        match self.shared.life.wait_idle(deadline) {
            true => Ok(()),
            false => Err(RedisPoolError::Timeout(timeout)),
        }
    }

    fn call(&self) -> Call<'_> {
        Call { pool: self, chunksize: None, retries: None, task_timeout: None, wait_timeout: None }
    }

    /// Calls with `chunksize` items per task entry.
    pub fn with_chunksize(&self, chunksize: usize) -> Call<'_> {
        self.call().chunksize(chunksize)
    }

    /// Calls whose tasks may each run at most `timeout`.
    pub fn with_task_timeout(&self, timeout: Duration) -> Call<'_> {
        self.call().task_timeout(timeout)
    }

    /// Calls whose chunks are delivered at most `retries + 1` times.
    pub fn with_retries(&self, retries: u32) -> Call<'_> {
        self.call().retries(retries)
    }

    /// Calls that wait at most `timeout` for their results.
    pub fn with_wait_timeout(&self, timeout: Duration) -> Call<'_> {
        self.call().wait_timeout(timeout)
    }

    serde_call! {
        /// Runs `f(args…)` on a worker and waits for it.
        ///
        /// # Errors
        ///
        /// [`RedisPoolError::Task`] when the task failed, or as for
        /// [`RedisPool::map`].
        fn apply<F, A, R>(&self, f: F, args: A) -> Result<R, RedisPoolError> where [F: Task<A, R>] {
            self.call().apply(f, args)
        }
    }
    serde_call! {
        /// Runs `f(args…)` on a worker in the background.
        fn apply_async<F, A, R>(&self, f: F, args: A) -> RedisAsync<R> where [F: Task<A, R>] {
            self.call().apply_async(f, args)
        }
    }
    serde_call! {
        /// `f(x)` for every item, in order.
        ///
        /// # Errors
        ///
        /// The first failed task ([`RedisPoolError::Task`] with its index),
        /// [`RedisPoolError::Redis`] when Redis stayed away longer than the
        /// reconnect timeout, [`RedisPoolError::Timeout`] past the wait timeout.
        fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>, RedisPoolError>
        where [F: Task<(A,), R>, I: IntoIterator<Item = A>] {
            self.call().map(f, items)
        }
    }
    serde_call! {
        /// [`RedisPool::map`] in the background.
        fn map_async<F, A, R, I>(&self, f: F, items: I) -> RedisAsync<Vec<R>>
        where [F: Task<(A,), R>, I: IntoIterator<Item = A>] {
            self.call().map_async(f, items)
        }
    }
    serde_call! {
        /// `f(a, b, …)` for every tuple, in order.
        ///
        /// # Errors
        ///
        /// As for [`RedisPool::map`].
        fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>, RedisPoolError>
        where [F: Task<A, R>, I: IntoIterator<Item = A>] {
            self.call().starmap(f, items)
        }
    }
    serde_call! {
        /// [`RedisPool::starmap`] in the background.
        fn starmap_async<F, A, R, I>(&self, f: F, items: I) -> RedisAsync<Vec<R>>
        where [F: Task<A, R>, I: IntoIterator<Item = A>] {
            self.call().starmap_async(f, items)
        }
    }
    serde_call! {
        /// `f(x)` for every item, yielded in order. The input is read a window
        /// ahead (see [`RedisPoolBuilder::window`]): the first window is queued
        /// by this call, so the tasks run before the first `next`, as
        /// `Pool::imap`'s; the rest as results are yielded.
        fn imap<'a, F, A, R, I>(&'a self, f: F, items: I) -> RedisImap<'a, R>
        where [F: Task<(A,), R>, I: IntoIterator<Item = A>, I::IntoIter: Send + 'a] {
            self.call().imap(f, items)
        }
    }
    serde_call! {
        /// As [`RedisPool::imap`], yielded in the order they finish.
        fn imap_unordered<'a, F, A, R, I>(&'a self, f: F, items: I) -> RedisImap<'a, R>
        where [F: Task<(A,), R>, I: IntoIterator<Item = A>, I::IntoIter: Send + 'a] {
            self.call().imap_unordered(f, items)
        }
    }
    serde_call! {
        /// As [`RedisPool::imap`] over an input that can fail: at its first
        /// `Err`, the input is read no further; the results before it are
        /// yielded, then [`RedisPoolError::Input`].
        fn try_imap<'a, F, A, R, I, E>(&'a self, f: F, items: I) -> RedisImap<'a, R>
        where [F: Task<(A,), R>, I: IntoIterator<Item = Result<A, E>>, I::IntoIter: Send + 'a, E: fmt::Display + 'a] {
            self.call().try_imap(f, items)
        }
    }
    serde_call! {
        /// As [`RedisPool::try_imap`], yielded in the order they finish.
        fn try_imap_unordered<'a, F, A, R, I, E>(&'a self, f: F, items: I) -> RedisImap<'a, R>
        where [F: Task<(A,), R>, I: IntoIterator<Item = Result<A, E>>, I::IntoIter: Send + 'a, E: fmt::Display + 'a] {
            self.call().try_imap_unordered(f, items)
        }
    }
}

/// A call with options ([`RedisPool::with_chunksize`] and friends); it has
/// the call methods of [`RedisPool`].
#[derive(Debug, Clone)]
pub struct Call<'p> {
    pool: &'p RedisPool,
    chunksize: Option<usize>,
    retries: Option<u32>,
    task_timeout: Option<Duration>,
    wait_timeout: Option<Duration>,
}

fn encode_one<A: Serialize>(args: &A) -> EncodedItem {
    postcard::to_allocvec(args).map_err(|e| e.to_string())
}

impl<'p> Call<'p> {
    /// Items per task entry (at least 1). Default: 1 for `imap`; for `map`,
    /// the item count / 32, rounded up, at most 1024.
    pub fn chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = Some(chunksize.max(1));
        self
    }

    /// The longest one task may run.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Deliveries after the first one for a chunk whose worker died.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// The longest the call waits for its results (as
    /// [`RedisPoolBuilder::wait_timeout`]).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    fn plan<F, A, R>(&self, f: F, default_chunksize: usize) -> Plan
    where
        F: Task<A, R>,
        A: DeserializeOwned,
        R: Serialize,
    {
        let o = &self.pool.shared.options;
        Plan {
            remote: RemoteFn::of::<F, A, R>(f),
            function: std::any::type_name::<F>(),
            chunksize: self.chunksize.unwrap_or(default_chunksize).max(1),
            retries: self.retries.unwrap_or(o.retries),
            task_timeout: self.task_timeout.or(o.task_timeout),
            wait_timeout: self.wait_timeout.or(o.wait_timeout),
        }
    }

    fn engine<'a, F, A, R>(
        &self,
        f: F,
        default_chunksize: usize,
        items: impl Iterator<Item = EncodedItem> + Send + 'a,
    ) -> Engine<'a>
    where
        F: Task<A, R>,
        A: DeserializeOwned,
        R: Serialize,
    {
        Engine::new(self.pool.shared.clone(), self.plan(f, default_chunksize), items)
    }

    serde_call! {
        /// As [`RedisPool::apply`].
        ///
        /// # Errors
        ///
        /// As for [`RedisPool::apply`].
        fn apply<F, A, R>(self, f: F, args: A) -> Result<R, RedisPoolError> where [F: Task<A, R>] {
            let mut all = self.starmap(f, [args])?;
            Ok(all.pop().unwrap_or_else(|| unreachable!("one item in, one result out")))
        }
    }

    serde_call! {
        /// As [`RedisPool::apply_async`].
        fn apply_async<F, A, R>(self, f: F, args: A) -> RedisAsync<R> where [F: Task<A, R>] {
            let engine = self.engine::<F, A, R>(f, 1, std::iter::once(encode_one(&args)));
            RedisAsync::spawn(engine.hold(), move || {
                let mut it = RedisImap::<R>::new(engine, true);
                it.next().unwrap_or_else(|| unreachable!("one item in, one result out"))
            })
        }
    }

    serde_call! {
        /// As [`RedisPool::map`].
        ///
        /// # Errors
        ///
        /// As for [`RedisPool::map`].
        fn map<F, A, R, I>(self, f: F, items: I) -> Result<Vec<R>, RedisPoolError>
        where [F: Task<(A,), R>, I: IntoIterator<Item = A>] {
            self.starmap(f, items.into_iter().map(|x| (x,)))
        }
    }

    serde_call! {
        /// As [`RedisPool::map_async`].
        fn map_async<F, A, R, I>(self, f: F, items: I) -> RedisAsync<Vec<R>>
        where [F: Task<(A,), R>, I: IntoIterator<Item = A>] {
            let engine = self.whole::<F, (A,), R>(f, items.into_iter().map(|x| encode_one(&(x,))).collect());
            RedisAsync::spawn(engine.hold(), move || RedisImap::new(engine, true).collect())
        }
    }

    serde_call! {
        /// As [`RedisPool::starmap`].
        ///
        /// # Errors
        ///
        /// As for [`RedisPool::map`].
        fn starmap<F, A, R, I>(self, f: F, items: I) -> Result<Vec<R>, RedisPoolError>
        where [F: Task<A, R>, I: IntoIterator<Item = A>] {
            let engine = self.whole::<F, A, R>(f, items.into_iter().map(|a| encode_one(&a)).collect());
            RedisImap::new(engine, true).collect()
        }
    }

    serde_call! {
        /// As [`RedisPool::starmap_async`].
        fn starmap_async<F, A, R, I>(self, f: F, items: I) -> RedisAsync<Vec<R>>
        where [F: Task<A, R>, I: IntoIterator<Item = A>] {
            let engine = self.whole::<F, A, R>(f, items.into_iter().map(|a| encode_one(&a)).collect());
            RedisAsync::spawn(engine.hold(), move || RedisImap::new(engine, true).collect())
        }
    }

    /// The engine of a call whose input is read whole first (`map`,
    /// `starmap`): default chunk size `ceil(n / 32)`, at most 1024.
    fn whole<F, A, R>(&self, f: F, encoded: Vec<EncodedItem>) -> Engine<'static>
    where
        F: Task<A, R>,
        A: DeserializeOwned,
        R: Serialize,
    {
        let chunksize = encoded.len().div_ceil(32).clamp(1, 1024);
        self.engine::<F, A, R>(f, chunksize, encoded.into_iter())
    }

    serde_call! {
        /// As [`RedisPool::imap`].
        fn imap<'a, F, A, R, I>(self, f: F, items: I) -> RedisImap<'a, R>
        where [F: Task<(A,), R>, I: IntoIterator<Item = A>, I::IntoIter: Send + 'a] {
            self.lazy(f, items, true)
        }
    }

    serde_call! {
        /// As [`RedisPool::imap_unordered`].
        fn imap_unordered<'a, F, A, R, I>(self, f: F, items: I) -> RedisImap<'a, R>
        where [F: Task<(A,), R>, I: IntoIterator<Item = A>, I::IntoIter: Send + 'a] {
            self.lazy(f, items, false)
        }
    }

    serde_call! {
        /// As [`RedisPool::try_imap`].
        fn try_imap<'a, F, A, R, I, E>(self, f: F, items: I) -> RedisImap<'a, R>
        where [F: Task<(A,), R>, I: IntoIterator<Item = Result<A, E>>, I::IntoIter: Send + 'a, E: fmt::Display + 'a] {
            self.try_lazy(f, items, true)
        }
    }

    serde_call! {
        /// As [`RedisPool::try_imap_unordered`].
        fn try_imap_unordered<'a, F, A, R, I, E>(self, f: F, items: I) -> RedisImap<'a, R>
        where [F: Task<(A,), R>, I: IntoIterator<Item = Result<A, E>>, I::IntoIter: Send + 'a, E: fmt::Display + 'a] {
            self.try_lazy(f, items, false)
        }
    }

    /// `imap` over an input that can fail: read up to its first error,
    /// which the results yield last.
    fn try_lazy<'a, F, A, R, I, E>(self, f: F, items: I, ordered: bool) -> RedisImap<'a, R>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = Result<A, E>>,
        I::IntoIter: Send + 'a,
        E: fmt::Display + 'a,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let fault = InputFault::default();
        let items = fault.clone().cut(items.into_iter());
        self.lazy(f, items, ordered).with_fault(fault)
    }

    /// `imap` in input order or not; the input read a window ahead (the
    /// first at once), one item per entry unless a chunk size was given.
    fn lazy<'a, F, A, R, I>(self, f: F, items: I, ordered: bool) -> RedisImap<'a, R>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let encoded = items.into_iter().map(|x| encode_one(&(x,)));
        RedisImap::new(self.engine::<F, (A,), R>(f, 1, encoded), ordered)
    }
}
