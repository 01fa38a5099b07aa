//! A request, its reply, and the future that brings the reply.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::ServeError;
use crate::lone::{PollerLimit, poll_for};
use crate::name::{ModelName, Target};
use crate::slot::{Answer, Slot};

/// One request: the model, an optional version, the input, an optional
/// deadline and, for a model whose input has a batch dimension, the rows it
/// carries.
///
/// ```
/// use multiproc_serve::Request;
/// use std::time::Duration;
///
/// let r = Request::new("classifier", "good".to_string()).version(2).timeout(Duration::from_secs(1));
/// assert_eq!(r.model(), "classifier");
/// ```
#[derive(Debug, Clone)]
pub struct Request<I> {
    pub(crate) model: ModelName,
    pub(crate) version: Option<u64>,
    pub(crate) input: I,
    pub(crate) timeout: Option<Duration>,
    pub(crate) rows: usize,
    pub(crate) held: Option<Held>,
}

/// A value a request keeps for its caller while the server holds the
/// request (see [`Request::hold`]); no allocation when none is given.
#[derive(Clone)]
pub(crate) struct Held {
    // Only ever dropped: what it is does not matter to the server.
    _guard: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl<I> Request<I> {
    /// A request for the default version of `model`.
    pub fn new(model: impl Into<ModelName>, input: I) -> Request<I> {
        Request { model: model.into(), version: None, input, timeout: None, rows: 1, held: None }
    }

    /// Gives the server `guard` to keep as long as it holds the request,
    /// and to drop when it is done with it: once the request is answered,
    /// has failed (its batch failed, its worker was lost), was dropped from
    /// its queue because its caller gave up or its deadline passed (after
    /// the caller had its error: a queue is swept as its batches leave
    /// and, while none leaves because its workers load, back off after a
    /// crash or run a long batch, about every 100 ms, so within about
    /// 200 ms then), or its version was drained, unloaded or shut down; at
    /// once if it is refused when sent. A request given to a
    /// pipeline drops it once the pipeline has taken the request in.
    ///
    /// What for: to account for the memory a queued request holds (its
    /// encoded input) for exactly as long as it is held, with a guard that
    /// gives its share back when dropped; a front end that counts request
    /// bytes against a budget moves its lease in here, so that a caller who
    /// goes away (or whose deadline passes) does not give the share back
    /// while the request still waits in the queue. A second call replaces
    /// the first guard (dropping it); clones of a request share the guard,
    /// which is dropped when the server is done with all of them.
    ///
    /// ```
    /// use multiproc_serve::Request;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// struct Lease(Arc<AtomicUsize>);
    /// impl Drop for Lease {
    ///     fn drop(&mut self) {
    ///         self.0.fetch_sub(1, Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// let held = Arc::new(AtomicUsize::new(1));
    /// let r = Request::new("classifier", 7u32).hold(Lease(Arc::clone(&held)));
    /// assert_eq!(held.load(Ordering::Relaxed), 1);
    /// drop(r); // a request never sent drops its guard with it
    /// assert_eq!(held.load(Ordering::Relaxed), 0);
    /// ```
    pub fn hold(mut self, guard: impl Any + Send + Sync) -> Self {
        self.held = Some(Held { _guard: Arc::new(guard) });
        self
    }

    /// Asks for a specific version.
    pub fn version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }

    /// Sets the version, or the default with `None`.
    pub fn maybe_version(mut self, version: Option<u64>) -> Self {
        self.version = version;
        self
    }

    /// Fails the request with `DeadlineExceeded` if it is not answered within
    /// `timeout` (overrides the model's `request_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Says the input carries `rows` rows of the model's batch dimension
    /// (default 1; 0 counts as 1). The batcher counts `max_batch_size` and
    /// the preferred batch sizes in rows, so one model call never gets more
    /// than `max_batch_size` rows: requests of 3 and 5 rows share a batch
    /// of 8, two of 8 rows do not. A pipeline's requests count 1 each.
    /// The metrics count them too: a request of `n` rows that runs adds `n`
    /// to [`inference_count`](crate::VersionMetrics::inference_count), and
    /// one to the request counters.
    ///
    /// A request of more rows than the model's `max_batch_size` fails with
    /// [`ErrorKind::BadInput`](crate::ErrorKind::BadInput).
    ///
    /// ```
    /// use multiproc_serve::Request;
    ///
    /// let r = Request::new("classifier", vec![[0.5f32; 4]; 3]).rows(3);
    /// assert_eq!(r.row_count(), 3);
    /// ```
    pub fn rows(mut self, rows: usize) -> Self {
        self.rows = rows.max(1);
        self
    }

    /// The rows it carries (see [`Request::rows`]).
    pub fn row_count(&self) -> usize {
        self.rows
    }

    /// The model named.
    pub fn model(&self) -> &str {
        self.model.as_str()
    }
}

/// A model's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<O> {
    /// The model that answered (for a pipeline: its model).
    pub model: ModelName,
    /// The version that produced the output.
    pub version: u64,
    /// The output.
    pub output: O,
    /// Time the request waited for its batch.
    pub queue_time: Duration,
    /// Size of the batch it ran in, in requests.
    pub batch_size: usize,
    /// Time from the call to the moment its answer was ready (not when the
    /// caller looked at it).
    pub latency: Duration,
}

pub(crate) fn decode_reply<O: DeserializeOwned>(answer: Answer, arrived: Instant) -> Result<Reply<O>, ServeError> {
    let output = postcard::from_bytes(answer.bytes.as_bytes()).map_err(|e| {
        ServeError::Internal(format!("model '{}' returned an output that does not decode: {e}", answer.model))
    })?;
    Ok(Reply {
        model: answer.model,
        version: answer.version,
        output,
        queue_time: answer.queued,
        batch_size: answer.batch_size,
        latency: answer.answered.saturating_duration_since(arrived),
    })
}

/// The outcome for a caller whose wait for `slot` ran out: its deadline
/// error, set in the slot too, so that an answer that comes later goes
/// nowhere and counts as the deadline its caller saw; or the answer that
/// claimed the slot just before, which is the reply.
pub(crate) fn gave_up<O: DeserializeOwned>(slot: &Arc<Slot>, target: Target) -> Result<Reply<O>, ServeError> {
    slot.cancel();
    let e = target.deadline_exceeded(slot.arrived.elapsed(), "waiting");
    if slot.complete(Err(e.clone())) {
        return Err(e);
    }
    slot.after_claimed().map_or(Err(e), |r| r.and_then(|a| decode_reply(a, slot.arrived)))
}

/// Longest [`InferFuture::wait_timeout`] polls for a reply before its
/// thread sleeps.
const BLOCKING_POLL: Duration = Duration::from_micros(50);

/// Threads polling in [`InferFuture::wait_timeout`] now: at most half the
/// CPUs (at least one) do at once, so that many threads waiting for
/// replies do not take the CPUs from the threads answering them.
static BLOCKING_POLLERS: PollerLimit = PollerLimit::new();

/// Polls for `slot`'s answer to be claimed for at most `budget`, when few
/// enough other threads are polling (see [`BLOCKING_POLLERS`]). Claimed,
/// not published: a batch's answers are all claimed, then published
/// together, and a caller that sleeps from the claim until the batch's
/// wake-up leaves the CPU to the thread publishing them (polling on until
/// the answer was there ran `serve_pipeline` about 5 % slower).
fn poll_briefly(slot: &Slot, budget: Duration) {
    static MOST: OnceLock<usize> = OnceLock::new();
    let most = *MOST.get_or_init(|| (multiproc::cpu_count() / 2).max(1));
    if let Some(_turn) = BLOCKING_POLLERS.enter(most) {
        poll_for(budget, || slot.is_done().then_some(()), || true);
    }
}

/// A reply still to come; runtime-agnostic (works on tokio or any executor).
/// Dropping it cancels the request if it has not reached a worker yet.
#[must_use = "a future does nothing unless polled; dropping it cancels the request"]
pub struct InferFuture<O> {
    /// What the request went to, for its deadline's error.
    pub(crate) target: Target,
    pub(crate) slot: Result<Arc<Slot>, Option<ServeError>>,
    pub(crate) _output: PhantomData<fn() -> O>,
}

impl<O> std::fmt::Debug for InferFuture<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferFuture").finish_non_exhaustive()
    }
}

impl<O: DeserializeOwned> Future for InferFuture<O> {
    type Output = Result<Reply<O>, ServeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.slot {
            Err(e) => {
                Poll::Ready(Err(e.take().unwrap_or_else(|| ServeError::Internal("polled after completion".into()))))
            }
            Ok(slot) => match slot.poll(cx.waker()) {
                Some(result) => Poll::Ready(result.and_then(|a| decode_reply(a, slot.arrived))),
                None => Poll::Pending,
            },
        }
    }
}

impl<O: DeserializeOwned> InferFuture<O> {
    /// Waits for the reply on this thread, without an async runtime, at
    /// most `timeout`; past it the request is cancelled and the error is
    /// `DeadlineExceeded`. A reply not there yet is first polled for, up to
    /// 50 µs (yielding the CPU between looks; by at most half the CPUs'
    /// worth of threads at a time, at least one), before the thread sleeps: a
    /// caller that keeps many requests in flight and waits for each in turn
    /// finds most replies coming within that, and a sleeping thread woken
    /// costs several µs of CPU and tens of µs of delay on a VM
    /// (`serve_pipeline` gained about 4 %).
    ///
    /// # Errors
    ///
    /// As [`Server::infer`](crate::Server::infer).
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Reply<O>, ServeError> {
        match std::mem::replace(&mut self.slot, Err(None)) {
            Err(e) => Err(e.unwrap_or_else(|| ServeError::Internal("the reply was already taken".into()))),
            Ok(slot) => {
                let answer = if slot.is_done() {
                    slot.wait_for(timeout)
                } else {
                    let deadline = Instant::now().checked_add(timeout);
                    poll_briefly(&slot, timeout.min(BLOCKING_POLL));
                    slot.wait(deadline)
                };
                match answer {
                    Some(result) => result.and_then(|a| decode_reply(a, slot.arrived)),
                    None => gave_up(&slot, std::mem::take(&mut self.target)),
                }
            }
        }
    }
}

impl<O> Drop for InferFuture<O> {
    fn drop(&mut self) {
        if let Ok(slot) = &self.slot
            && !slot.is_done()
        {
            slot.cancel();
        }
    }
}
