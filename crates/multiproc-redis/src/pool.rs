//! The caller's side: [`RedisPool`] and its calls.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use multiproc::{RemoteFn, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::{EncodedItem, Engine, Plan};
use crate::conn::Conn;
use crate::dispatch::{Dispatcher, Options, Shared};
use crate::error::{RedisPoolError, TaskFailure};
use crate::schema::{self, Keys};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "multiproc";
/// The default queue name.
pub const DEFAULT_QUEUE: &str = "default";

/// Options for a new [`RedisPool`]. Created by [`RedisPool::builder`].
#[derive(Clone)]
pub struct RedisPoolBuilder {
    url: String,
    prefix: String,
    queue: String,
    key: Vec<u8>,
    options: Options,
}

impl fmt::Debug for RedisPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPoolBuilder")
            .field("prefix", &self.prefix)
            .field("queue", &self.queue)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedisPoolBuilder {
    /// The key prefix (default [`DEFAULT_PREFIX`]): pools and workers with
    /// different prefixes share nothing.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// The queue (default [`DEFAULT_QUEUE`]); workers serve one queue each.
    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = queue.to_string();
        self
    }

    /// The key that signs tasks; workers must have the same one. Default:
    /// [`schema::default_key`], derived from the build id (not a secret: set
    /// one when others can write to the Redis server).
    pub fn auth_key(mut self, key: &[u8]) -> Self {
        self.key = key.to_vec();
        self
    }

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
    /// otherwise wait for one). Default: no limit.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.options.wait_timeout = Some(timeout);
        self
    }

    /// How long Redis may be unreachable (a restart, a network cut) before
    /// the calls waiting on it fail with [`RedisPoolError::Redis`]. Default
    /// 30 s.
    pub fn reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.options.reconnect_timeout = timeout;
        self
    }

    /// How long unread results (and large arguments) stay in Redis. Default
    /// one hour.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.options.result_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// At most this many chunks of one call are queued at a time (default
    /// 4096): a long `imap` input is read lazily.
    pub fn window(mut self, chunks: usize) -> Self {
        self.options.window = chunks.max(1);
        self
    }

    /// Connects.
    ///
    /// # Errors
    ///
    /// [`RedisPoolError::Redis`] if the URL is bad or the server cannot be
    /// reached.
    pub fn connect(self) -> Result<RedisPool, RedisPoolError> {
        let submit = Conn::open(&self.url)?;
        let reader = submit.another()?;
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).map_err(|e| RedisPoolError::Redis(format!("no randomness for a caller id: {e}")))?;
        let caller: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let keys = Keys::new(&self.prefix, &self.queue);
        let shared = Arc::new(Shared {
            results_key: keys.results(&caller),
            keys,
            caller,
            key: self.key,
            options: self.options,
            submit: Mutex::new(submit),
            pending: Mutex::default(),
            next_task: AtomicU64::new(1),
            stop: AtomicBool::new(false),
        });
        let dispatcher = Dispatcher::start(shared.clone(), reader)
            .map_err(|e| RedisPoolError::Redis(format!("could not start the result thread: {e}")))?;
        Ok(RedisPool { shared, _dispatcher: dispatcher })
    }
}

/// A pool whose tasks run on worker hosts, carried by Redis Streams.
///
/// The calls are those of [`multiproc::Pool`], for the same plain `fn`
/// items and `serde` arguments; the workers must run this same build of
/// the program (see [`crate::Worker`]). Every result arrives exactly once.
/// Dropping the pool stops its result thread and deletes its result stream.
pub struct RedisPool {
    shared: Arc<Shared>,
    _dispatcher: Dispatcher,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool").field("caller", &self.shared.caller).field("queue", &self.shared.keys).finish()
    }
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
            url: url.to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
            queue: DEFAULT_QUEUE.to_string(),
            key: schema::default_key(),
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

    /// Runs `f(args…)` on a worker and waits for it.
    ///
    /// # Errors
    ///
    /// [`RedisPoolError::Task`] when the task failed, or as for
    /// [`RedisPool::map`].
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<R, RedisPoolError>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.call().apply(f, args)
    }

    /// Runs `f(args…)` on a worker in the background.
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> RedisAsync<R>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.call().apply_async(f, args)
    }

    /// `f(x)` for every item, in order.
    ///
    /// # Errors
    ///
    /// The first failed task ([`RedisPoolError::Task`] with its index),
    /// [`RedisPoolError::Redis`] when Redis stayed away longer than the
    /// reconnect timeout, [`RedisPoolError::Timeout`] past the wait timeout.
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>, RedisPoolError>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.call().map(f, items)
    }

    /// [`RedisPool::map`] in the background.
    pub fn map_async<F, A, R, I>(&self, f: F, items: I) -> RedisAsync<Vec<R>>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.call().map_async(f, items)
    }

    /// `f(a, b, …)` for every tuple, in order.
    ///
    /// # Errors
    ///
    /// As for [`RedisPool::map`].
    pub fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>, RedisPoolError>
    where
        F: Task<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.call().starmap(f, items)
    }

    /// `f(x)` for every item, yielded in order; the input is read lazily.
    pub fn imap<'a, F, A, R, I>(&'a self, f: F, items: I) -> RedisImap<'a, R>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.call().imap(f, items)
    }

    /// As [`RedisPool::imap`], yielded in the order they finish.
    pub fn imap_unordered<'a, F, A, R, I>(&'a self, f: F, items: I) -> RedisImap<'a, R>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.call().imap_unordered(f, items)
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

    /// The longest the call waits for its results.
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

    /// As [`RedisPool::apply`].
    ///
    /// # Errors
    ///
    /// As for [`RedisPool::apply`].
    pub fn apply<F, A, R>(self, f: F, args: A) -> Result<R, RedisPoolError>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let mut all = self.starmap(f, [args])?;
        Ok(all.pop().unwrap_or_else(|| unreachable!("one item in, one result out")))
    }

    /// As [`RedisPool::apply_async`].
    pub fn apply_async<F, A, R>(self, f: F, args: A) -> RedisAsync<R>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let engine = self.engine::<F, A, R>(f, 1, std::iter::once(encode_one(&args)));
        RedisAsync::spawn(move || {
            let mut it = RedisImap::<R>::new(engine, true);
            it.next().unwrap_or_else(|| unreachable!("one item in, one result out"))
        })
    }

    /// As [`RedisPool::map`].
    ///
    /// # Errors
    ///
    /// As for [`RedisPool::map`].
    pub fn map<F, A, R, I>(self, f: F, items: I) -> Result<Vec<R>, RedisPoolError>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = items.len().div_ceil(32).clamp(1, 1024);
        let encoded: Vec<EncodedItem> = items.iter().map(|x| encode_one(&(x,))).collect();
        RedisImap::new(self.engine::<F, (A,), R>(f, chunksize, encoded.into_iter()), true).collect()
    }

    /// As [`RedisPool::map_async`].
    pub fn map_async<F, A, R, I>(self, f: F, items: I) -> RedisAsync<Vec<R>>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = items.len().div_ceil(32).clamp(1, 1024);
        let encoded: Vec<EncodedItem> = items.iter().map(|x| encode_one(&(x,))).collect();
        let engine = self.engine::<F, (A,), R>(f, chunksize, encoded.into_iter());
        RedisAsync::spawn(move || RedisImap::new(engine, true).collect())
    }

    /// As [`RedisPool::starmap`].
    ///
    /// # Errors
    ///
    /// As for [`RedisPool::map`].
    pub fn starmap<F, A, R, I>(self, f: F, items: I) -> Result<Vec<R>, RedisPoolError>
    where
        F: Task<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let encoded: Vec<EncodedItem> = items.into_iter().map(|a| encode_one(&a)).collect();
        let chunksize = encoded.len().div_ceil(32).clamp(1, 1024);
        RedisImap::new(self.engine::<F, A, R>(f, chunksize, encoded.into_iter()), true).collect()
    }

    /// As [`RedisPool::imap`].
    pub fn imap<'a, F, A, R, I>(self, f: F, items: I) -> RedisImap<'a, R>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let encoded = items.into_iter().map(|x| encode_one(&(x,)));
        RedisImap::new(self.engine::<F, (A,), R>(f, 1, encoded), true)
    }

    /// As [`RedisPool::imap_unordered`].
    pub fn imap_unordered<'a, F, A, R, I>(self, f: F, items: I) -> RedisImap<'a, R>
    where
        F: Task<(A,), R>,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let encoded = items.into_iter().map(|x| encode_one(&(x,)));
        RedisImap::new(self.engine::<F, (A,), R>(f, 1, encoded), false)
    }
}

/// The results of an `imap` call, one `Result` per item: in input order
/// ([`RedisPool::imap`]) or as they finish ([`RedisPool::imap_unordered`]).
pub struct RedisImap<'a, R> {
    engine: Engine<'a>,
    ordered: bool,
    early: BTreeMap<usize, Result<Vec<u8>, RedisPoolError>>,
    next: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for RedisImap<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisImap").field("engine", &self.engine).field("ordered", &self.ordered).finish()
    }
}

impl<'a, R: DeserializeOwned> RedisImap<'a, R> {
    fn new(engine: Engine<'a>, ordered: bool) -> Self {
        RedisImap { engine, ordered, early: BTreeMap::new(), next: 0, _result: PhantomData }
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
        if !self.ordered {
            let (index, r) = self.engine.next_outcome()?;
            return Some(Self::decode(index, r));
        }
        loop {
            if let Some(r) = self.early.remove(&self.next) {
                self.next += 1;
                return Some(Self::decode(self.next - 1, r));
            }
            match self.engine.next_outcome() {
                Some((index, r)) => {
                    self.early.insert(index, r);
                }
                None => {
                    // Only after a failure of the whole call: the rest in order.
                    let (index, r) = self.early.pop_first()?;
                    self.next = index + 1;
                    return Some(Self::decode(index, r));
                }
            }
        }
    }
}

/// A result that arrives in the background ([`RedisPool::apply_async`],
/// [`RedisPool::map_async`]).
pub struct RedisAsync<T> {
    rx: mpsc::Receiver<Result<T, RedisPoolError>>,
    value: Option<Result<T, RedisPoolError>>,
    taken: bool,
}

impl<T> fmt::Debug for RedisAsync<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAsync").field("arrived", &self.value.is_some()).field("taken", &self.taken).finish()
    }
}

impl<T: Send + 'static> RedisAsync<T> {
    fn spawn(work: impl FnOnce() -> Result<T, RedisPoolError> + Send + 'static) -> RedisAsync<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let started = std::thread::Builder::new().name("multiproc-redis call".into()).spawn(move || {
            let _ = tx.send(work());
        });
        let value = started.err().map(|e| Err(RedisPoolError::Redis(format!("could not start a call thread: {e}"))));
        RedisAsync { rx: mpsc_receiver(rx), value, taken: false }
    }

    /// True once the result has arrived.
    pub fn ready(&mut self) -> bool {
        if self.value.is_none()
            && let Ok(v) = self.rx.try_recv()
        {
            self.value = Some(v);
        }
        self.value.is_some()
    }

    /// Waits for the result.
    ///
    /// # Errors
    ///
    /// As for the call that made it.
    pub fn get(self) -> Result<T, RedisPoolError> {
        if self.taken {
            return Err(RedisPoolError::Taken);
        }
        match self.value {
            Some(v) => v,
            None => self.rx.recv().unwrap_or_else(|_| Err(RedisPoolError::Redis("the call thread died".into()))),
        }
    }

    /// Waits at most `timeout` for the result.
    ///
    /// # Errors
    ///
    /// [`RedisPoolError::Timeout`] (ask again later), [`RedisPoolError::Taken`]
    /// after an earlier successful wait, or as for the call.
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<T, RedisPoolError> {
        if self.taken {
            return Err(RedisPoolError::Taken);
        }
        let v = match self.value.take() {
            Some(v) => v,
            None => match self.rx.recv_timeout(timeout) {
                Ok(v) => v,
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(RedisPoolError::Timeout(timeout)),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(RedisPoolError::Redis("the call thread died".into())),
            },
        };
        self.taken = true;
        v
    }
}

fn mpsc_receiver<T>(rx: mpsc::Receiver<T>) -> mpsc::Receiver<T> {
    rx
}
