//! Pipelines (seed 004): requests → a preprocessing pool of N processes →
//! the batched model → optional postprocessing pool → each result back to
//! the request it answers.
//!
//! The pipeline holds at most `capacity` requests in all its stages; one
//! more is rejected at once (`Overloaded`). Preprocessing takes what is
//! queued, up to `chunk` requests (whole model batches when more than one),
//! as one pool task when the pool holds fewer chunks than it has processes
//! and the queue holds half of the pipeline's requests (or a full chunk, up
//! to two per process), so chunks grow with the load; a lone request at low
//! load goes to the pool at once from the caller's thread. The pool process
//! encodes the chunk's outputs for the model into one buffer, so an item
//! crosses to the model as the bytes it came back as, with no allocation
//! per request on the way. If a preprocessing process dies, only the
//! requests of its chunk fail (`WorkerLost`), the pool replaces it, and the
//! others go on.

use std::any::TypeId;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use multiproc::{Pool, PoolError, TaskError};

use crate::batcher::{Continuation, Pending};
use crate::error::ServeError;
use crate::gauge::{Feeder, Gauge, InFlight};
use crate::items::{Encoded, ITEM_BYTES_GUESS, Items};
use crate::pipeline_spec::{PipelineItem, PipelineSpec, PostFn, PreFn};
use crate::preprocess::Preprocessed;
use crate::server::{Inner, Server};
use crate::slot::{Answer, Slot};
use crate::status::PipelineStatus;

// Starting is the runtime's part of a spec (it builds a `Runtime`).
impl<R: PipelineItem, I: PipelineItem, O: PipelineItem, P: PipelineItem> PipelineSpec<R, I, O, P> {
    /// Starts the pools and the feeder thread.
    pub(crate) fn start(self, server: Weak<Inner>) -> Result<Arc<dyn PipelineDyn>, ServeError> {
        let pool = |n: usize| {
            // Its workers leave stopping to the server, as model workers do.
            let ignoring = Pool::builder().initializer(multiproc::process::ignore_stop_signals, ());
            ignoring
                .processes(n)
                .build()
                .map_err(|e| ServeError::Internal(format!("pipeline '{}': pool did not start: {e}", self.name)))
        };
        let pre_pool = pool(self.preprocess_processes)?;
        let (post, post_pool) = match self.postprocess {
            Some((f, n)) => (Some((f, n)), Some(pool(n)?)),
            None => (None, None),
        };
        let runtime = Arc::new_cyclic(|me: &Weak<Runtime<R, O, P>>| Runtime {
            me: me.clone(),
            name: self.name,
            model: self.model,
            pre: self.preprocess,
            pools: RwLock::new((Some(pre_pool), post_pool)),
            pre_processes: self.preprocess_processes,
            post,
            queue: Mutex::new(Feed { jobs: VecDeque::new(), inputs: Items::default(), chunks_out: 0 }),
            changed: Condvar::new(),
            gauge: Gauge::new(),
            capacity: self.capacity,
            chunk: self.chunk,
            server,
            stopped: AtomicBool::new(false),
            stopped_why: OnceLock::new(),
            thread: Mutex::new(None),
            _request: PhantomData,
        });
        let weak: Weak<dyn Feeder> = runtime.me.clone();
        runtime.gauge.set_feeder(weak);
        let feeder = Arc::clone(&runtime);
        let thread = std::thread::Builder::new()
            .name(format!("serve-pipeline-{}", runtime.name))
            .spawn(move || feeder.feed())
            .map_err(|e| ServeError::Internal(format!("could not start the pipeline thread: {e}")))?;
        *runtime.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(runtime)
    }
}

/// A pipeline with its types erased, as the server keeps it.
pub(crate) trait PipelineDyn: Send + Sync {
    fn name(&self) -> &str;
    fn check_types(&self, input: TypeId, output: TypeId) -> Result<(), ServeError>;
    /// Takes the request's input out of `input`, an `Option<R>` (borrowed,
    /// so that erasing its type costs no allocation per request).
    fn submit(
        &self,
        input: &mut dyn std::any::Any,
        slot: Arc<Slot>,
        deadline: Option<Instant>,
    ) -> Result<(), ServeError>;
    fn status(&self) -> PipelineStatus;
    /// Waits until the requests inside are answered, up to `timeout`, then
    /// stops (new requests are kept out by the caller).
    fn drain(&self, timeout: Duration);
    /// Stops now; the requests inside fail with `why`.
    fn stop(&self, why: ServeError);
}

/// A request waiting for preprocessing (its input is in [`Feed::inputs`]).
struct Job {
    slot: Arc<Slot>,
    deadline: Option<Instant>,
    guard: InFlight,
}

/// Requests waiting for preprocessing and the chunks in the pool now
/// (whether the feeder sleeps is in the gauge, written under this lock).
/// Each request's input is encoded by its caller into `inputs` (item `i`
/// is the input of `jobs[i]`), so that a chunk leaves as the buffer it
/// will cross in, and each input is freed by the thread that made it.
struct Feed {
    jobs: VecDeque<Job>,
    inputs: Items,
    chunks_out: usize,
}

struct Runtime<R, O, P> {
    /// Itself, for a caller that hands a lone request to the pool directly.
    me: Weak<Runtime<R, O, P>>,
    name: String,
    model: String,
    pre: PreFn,
    /// The preprocessing and postprocessing pools; taken out by `stop`, so
    /// that no pool is ever dropped inside one of its own callbacks.
    pools: RwLock<(Option<Pool>, Option<Pool>)>,
    pre_processes: usize,
    post: Option<(PostFn<O, P>, usize)>,
    queue: Mutex<Feed>,
    changed: Condvar,
    gauge: Arc<Gauge>,
    capacity: usize,
    chunk: usize,
    server: Weak<Inner>,
    stopped: AtomicBool,
    /// Why it stopped: the error of the requests it will not answer.
    stopped_why: OnceLock<ServeError>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The requests' type (they are queued encoded).
    _request: PhantomData<fn(R)>,
}

impl<R, O, P> Runtime<R, O, P>
where
    R: PipelineItem,
    O: PipelineItem,
    P: PipelineItem,
{
    fn failed(&self, stage: &'static str, message: impl std::fmt::Display) -> ServeError {
        ServeError::PipelineFailed { pipeline: self.name.clone(), stage, message: message.to_string() }
    }

    /// The error of a request the stopped pipeline will not answer (why it stopped).
    fn stopped_error(&self) -> ServeError {
        self.stopped_why.get().cloned().unwrap_or(ServeError::ShuttingDown)
    }

    /// The feeder: cuts the queue into chunks for the preprocessing pool.
    /// A chunk leaves when the pool has a process without one and the queue
    /// is worth one ([`Gauge::worth_a_chunk`]), or when it is full and the
    /// pool holds less than two per process; meanwhile requests gather, so
    /// that chunks grow with the load instead of a round trip through the
    /// pool for each few requests.
    fn feed(self: Arc<Self>) {
        loop {
            let (jobs, inputs) = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                // Says it sleeps before it looks (see `Gauge`): a request
                // leaving meanwhile nudges it.
                while !self.stopped.load(Ordering::Acquire) {
                    self.gauge.set_queued(q.jobs.len());
                    self.gauge.set_feeder_sleeps(true);
                    if self.chunk_ready(&q) {
                        break;
                    }
                    q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                self.gauge.set_feeder_sleeps(false);
                if self.stopped.load(Ordering::Acquire) {
                    let left: Vec<Job> = q.jobs.drain(..).collect();
                    q.inputs = Items::default();
                    self.gauge.set_queued(0);
                    drop(q);
                    for j in left {
                        j.slot.complete(Err(self.stopped_error()));
                    }
                    return;
                }
                self.take_chunk(&mut q)
            };
            self.preprocess(jobs, inputs);
        }
    }

    /// Whether the queue should leave as a chunk now (see [`Runtime::feed`]
    /// and [`Gauge::worth_a_chunk`]).
    fn chunk_ready(&self, q: &Feed) -> bool {
        let n = q.jobs.len();
        if n >= self.chunk {
            return q.chunks_out < 2 * self.pre_processes;
        }
        q.chunks_out < self.pre_processes && self.gauge.worth_a_chunk(n)
    }

    /// Sends a chunk to the pool: `inputs` holds the encoded input of each
    /// of `jobs`, in order.
    fn preprocess(self: &Arc<Self>, jobs: Vec<Job>, inputs: Items) {
        let (jobs, inputs) = self.without_abandoned(jobs, inputs);
        if jobs.is_empty() {
            // Nothing left for the pool: the chunk is done (a sleeping
            // feeder is woken if the next one is ready).
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.chunks_out = q.chunks_out.saturating_sub(1);
            self.wake_feeder(q);
            return;
        }
        let shared = Arc::new(Mutex::new(Some(jobs)));
        let (ok_jobs, err_jobs) = (Arc::clone(&shared), Arc::clone(&shared));
        let (ok_self, err_self) = (Arc::clone(self), Arc::clone(self));
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        let Some(pool) = &pools.0 else {
            drop(pools);
            self.chunk_done();
            for job in shared.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default() {
                job.slot.complete(Err(self.stopped_error()));
            }
            return;
        };
        // The callbacks do the work; the handle itself is not needed.
        drop(
            (self.pre)(pool, inputs)
                .callback(move |outputs: &Preprocessed| {
                    let jobs = ok_jobs.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
                    ok_self.chunk_done();
                    ok_self.to_model(jobs, outputs.take());
                })
                .error_callback(move |e: &PoolError| {
                    let jobs = err_jobs.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
                    err_self.chunk_done();
                    let error = match e {
                        // The process that died, by its pid; a task that
                        // failed otherwise is not a lost worker.
                        PoolError::Task { error: error @ TaskError::WorkerLost { pid, .. }, .. } => {
                            ServeError::PipelineWorkerLost {
                                pipeline: err_self.name.clone(),
                                stage: "preprocessing",
                                pid: *pid,
                                status: error.to_string(),
                            }
                        }
                        PoolError::Task { error: TaskError::Terminated, .. } => err_self.stopped_error(),
                        other => err_self.failed("preprocessing", other),
                    };
                    for job in jobs {
                        job.slot.complete(Err(error.clone()));
                    }
                }),
        );
    }

    /// Answers the requests of a chunk whose callers gave up (gone, or past
    /// their deadline) instead of preprocessing them; gives back the others
    /// with their inputs. Costs a clock read per chunk and a look at each
    /// request; the inputs are copied only when one was given up.
    fn without_abandoned(&self, jobs: Vec<Job>, inputs: Items) -> (Vec<Job>, Items) {
        let now = Instant::now();
        let expired = |j: &Job| j.deadline.is_some_and(|d| d <= now);
        if !jobs.iter().any(|j| j.slot.is_cancelled() || expired(j)) {
            return (jobs, inputs);
        }
        let mut kept = Vec::with_capacity(jobs.len());
        let mut kept_inputs = Items::with_capacity(jobs.len(), inputs.byte_len());
        for (i, job) in jobs.into_iter().enumerate() {
            if expired(&job) {
                let waited = job.slot.arrived.elapsed();
                job.slot.complete(Err(ServeError::PipelineDeadlineExceeded {
                    pipeline: self.name.clone(),
                    waited,
                    stage: "queued",
                }));
            } else if job.slot.is_cancelled() {
                job.slot.complete(Err(ServeError::PipelineCancelled { pipeline: self.name.clone() }));
            } else {
                match inputs.get(i) {
                    Some(Ok(bytes)) => kept_inputs.push_bytes(bytes),
                    Some(Err(message)) => kept_inputs.push_error(message),
                    None => kept_inputs.push_error("the request's input is missing"),
                }
                kept.push(job);
            }
        }
        (kept, kept_inputs)
    }

    /// A chunk left the pool: the next one, if ready, goes to the pool at
    /// once from this thread (the pool's own, in its callback), saving the
    /// feeder's wake-up and the pool's on every chunk under load.
    fn chunk_done(self: &Arc<Self>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.chunks_out = q.chunks_out.saturating_sub(1);
        if self.stopped.load(Ordering::Acquire) || !self.chunk_ready(&q) {
            return;
        }
        let (jobs, inputs) = self.take_chunk(&mut q);
        drop(q);
        self.preprocess(jobs, inputs);
    }

    /// Takes the next chunk off the queue, with its inputs, and counts it
    /// as in the pool.
    fn take_chunk(&self, q: &mut Feed) -> (Vec<Job>, Items) {
        q.chunks_out += 1;
        let n = self.gauge.chunk_len(q.jobs.len(), self.chunk);
        let chunk = q.jobs.drain(..n).collect();
        let inputs = q.inputs.split_front(n);
        self.gauge.set_queued(q.jobs.len());
        (chunk, inputs)
    }

    /// Wakes the feeder if it sleeps and a chunk may leave; once per sleep
    /// (the flag is cleared by whoever wakes it).
    fn wake_feeder(&self, q: std::sync::MutexGuard<'_, Feed>) {
        let wake = self.gauge.feeder_sleeps() && self.chunk_ready(&q);
        if wake {
            self.gauge.set_feeder_sleeps(false);
        }
        drop(q);
        if wake {
            self.changed.notify_one();
        }
    }

    /// Hands preprocessed inputs to the model's batcher.
    fn to_model(self: &Arc<Self>, jobs: Vec<Job>, outputs: Items) {
        let Some(inner) = self.server.upgrade() else {
            for job in jobs {
                job.slot.complete(Err(ServeError::ShuttingDown));
            }
            return;
        };
        let server = Server::from_inner(inner);
        self.submit_to_model(&server, jobs, outputs);
        // This runs on the pool's thread: the server must not stop here.
        server.release_elsewhere();
    }

    fn submit_to_model(self: &Arc<Self>, server: &Server, jobs: Vec<Job>, outputs: Items) {
        let entry = match server.model_entry(&self.model) {
            Ok(e) => e,
            Err(e) => {
                for job in jobs {
                    job.slot.complete(Err(e.clone()));
                }
                return;
            }
        };
        self.gauge.set_model_batch(entry.settings.max_batch_size);
        let now = Instant::now();
        let mut batch = Vec::with_capacity(jobs.len());
        let outputs = Arc::new(outputs);
        for (i, Job { slot, deadline, guard }) in jobs.into_iter().enumerate() {
            match Encoded::item(&outputs, i).map_err(|msg| self.failed("preprocessing", msg)) {
                Ok(b) => batch.push(Pending {
                    input: b,
                    slot,
                    enqueued: now,
                    deadline,
                    then: Some(self.continuation(guard)),
                    rows: 1,
                    held: None,
                }),
                Err(e) => {
                    drop(guard);
                    slot.complete(Err(e));
                }
            }
        }
        if let Err((batch, e)) = server.submit_many(&entry, batch) {
            for p in batch {
                p.slot.complete(Err(e.clone()));
            }
        }
    }

    /// What happens to the model's answer: straight back, or postprocessing.
    fn continuation(self: &Arc<Self>, guard: InFlight) -> Continuation {
        if self.post.is_none() {
            return Continuation::Answer(guard);
        }
        let this = Arc::clone(self);
        Continuation::Post(Box::new(move |answer: Answer, slot: Arc<Slot>| {
            let Some((post, _)) = &this.post else {
                drop(guard);
                slot.complete(Ok(answer));
                return;
            };
            // The request stays counted until postprocessing answers.
            let (ok_guard, err_guard) = {
                let shared = Arc::new(guard);
                (Arc::clone(&shared), shared)
            };
            let pools = this.pools.read().unwrap_or_else(|e| e.into_inner());
            let Some(pool) = &pools.1 else {
                slot.complete(Err(this.stopped_error()));
                return;
            };
            let output: O = match postcard::from_bytes(answer.bytes.as_bytes()) {
                Ok(o) => o,
                Err(e) => {
                    slot.complete(Err(this.failed("decoding the model's output", e)));
                    return;
                }
            };
            let meta = Answer { bytes: Encoded::default(), ..answer };
            let (ok_slot, err_slot) = (Arc::clone(&slot), slot);
            let (ok_this, err_this) = (Arc::clone(&this), Arc::clone(&this));
            drop(
                post(pool, output)
                    .callback(move |r: &Result<P, String>| {
                        drop(ok_guard);
                        let result = match r {
                            Ok(p) => postcard::to_allocvec(p)
                                .map(|bytes| Answer { bytes: Encoded::Own(bytes), answered: Instant::now(), ..meta })
                                .map_err(|e| ok_this.failed("encoding the postprocessing output", e)),
                            Err(msg) => Err(ok_this.failed("postprocessing", msg)),
                        };
                        ok_slot.complete(result);
                    })
                    .error_callback(move |e: &PoolError| {
                        drop(err_guard);
                        err_slot.complete(Err(err_this.failed("postprocessing", e)));
                    }),
            );
        }))
    }
}

impl<R, O, P> Feeder for Runtime<R, O, P>
where
    R: PipelineItem,
    O: PipelineItem,
    P: PipelineItem,
{
    fn nudge(&self) {
        self.wake_feeder(self.queue.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl<R, O, P> PipelineDyn for Runtime<R, O, P>
where
    R: PipelineItem,
    O: PipelineItem,
    P: PipelineItem,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn check_types(&self, input: TypeId, output: TypeId) -> Result<(), ServeError> {
        if input == TypeId::of::<R>() && output == TypeId::of::<P>() {
            return Ok(());
        }
        Err(ServeError::PipelineBadInput {
            pipeline: self.name.clone(),
            reason: format!(
                "the pipeline takes {} and returns {}",
                std::any::type_name::<R>(),
                std::any::type_name::<P>()
            ),
        })
    }

    fn submit(
        &self,
        input: &mut dyn std::any::Any,
        slot: Arc<Slot>,
        deadline: Option<Instant>,
    ) -> Result<(), ServeError> {
        let input = input
            .downcast_mut::<Option<R>>()
            .and_then(Option::take)
            .ok_or_else(|| ServeError::Internal("pipeline input of the wrong type".into()))?;
        if self.stopped.load(Ordering::Acquire) {
            return Err(self.stopped_error());
        }
        let Some((held, guard)) = self.gauge.admit(self.capacity) else {
            return Err(ServeError::PipelineOverloaded { pipeline: self.name.clone(), capacity: self.capacity });
        };
        let job = Job { slot, deadline, guard };
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // Again under the lock: a stop between the check above and here has
        // let the feeder empty the queue and end, so nobody would answer a
        // request queued now.
        if self.stopped.load(Ordering::Acquire) {
            return Err(self.stopped_error());
        }
        // Low load (nothing else in the pipeline, the feeder idle, a pool
        // slot free): the caller hands the request to the pool itself, saving
        // the feeder thread's wake-up. Under load requests go to the feeder,
        // which cuts them into large chunks (a chunk of one costs a whole
        // round trip through the pool).
        if held == 0
            && q.jobs.is_empty()
            && self.gauge.feeder_sleeps()
            && q.chunks_out < 2 * self.pre_processes
            && let Some(me) = self.me.upgrade()
        {
            q.chunks_out += 1;
            drop(q);
            let mut one = Items::with_capacity(1, ITEM_BYTES_GUESS);
            one.push_output(Ok(&input));
            me.preprocess(vec![job], one);
            return Ok(());
        }
        // Encoded here, by the thread that made the input (which frees it
        // too); an input that does not encode is its request's error.
        q.inputs.push_output(Ok(&input));
        q.jobs.push_back(job);
        // Only a sleeping feeder's queue is read by releases (see `Gauge`),
        // and a feeder notes its queue as it goes to sleep.
        if self.gauge.feeder_sleeps() {
            self.gauge.set_queued(q.jobs.len());
        }
        self.wake_feeder(q);
        Ok(())
    }

    fn status(&self) -> PipelineStatus {
        PipelineStatus {
            model: self.model.clone(),
            preprocess_processes: self.pre_processes,
            postprocess_processes: self.post.as_ref().map_or(0, |p| p.1),
            in_flight: self.gauge.in_flight(),
            capacity: self.capacity,
        }
    }

    fn drain(&self, timeout: Duration) {
        let until = crate::deadline::after(Instant::now(), timeout);
        while self.gauge.in_flight() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop(ServeError::ShuttingDown);
    }

    fn stop(&self, why: ServeError) {
        // Set before the flag: whoever sees the pipeline stopped finds why.
        let _ = self.stopped_why.set(why);
        self.stopped.store(true, Ordering::Release);
        {
            let _q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            self.changed.notify_all();
        }
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        let (pre, post) = std::mem::take(&mut *self.pools.write().unwrap_or_else(|e| e.into_inner()));
        for pool in [pre, post].into_iter().flatten() {
            pool.terminate();
        }
    }
}
