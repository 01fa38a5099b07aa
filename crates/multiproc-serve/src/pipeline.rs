//! Pipelines (seed 004): requests → N preprocessing processes → the
//! batched model → optional postprocessing pool → each result back to the
//! request it answers.
//!
//! The pipeline holds at most `capacity` requests in all its stages; one
//! more is rejected at once (`Overloaded`). Each preprocessing process has
//! a lane, a thread of the server that takes what is queued, up to `chunk`
//! requests (whole model batches when more than one), once the queue holds
//! half of the pipeline's requests or a full chunk, so chunks grow with the
//! load (a lone request at low load leaves at once); it hands the chunk to
//! its process and the outputs to the model. Under load the thread that
//! delivers the model's answers wakes the lanes, not the callers (see
//! `Runtime::wake_lane_for`; with postprocessing, the callers still do).
//! The process encodes the chunk's outputs for the model into one buffer,
//! so an item crosses to the model as the bytes it came back as, with no
//! allocation per request on the way. If a preprocessing process dies, only the requests of its chunk
//! fail (`WorkerLost`), its lane starts another, and the others go on; one
//! that dies while its lane has had no chunk for a second is replaced then,
//! before a request needs it (otherwise its lane's next chunk finds it dead
//! and goes to a new one).
//!
//! Lanes replaced a shared pool fed by a feeder thread, which cost per
//! chunk the feeder's wake-up and two of the pool's scheduler thread, and
//! ran most chunks on one of the two processes. Under a steady load a
//! variant of the pipeline example (`examples/pipeline_throughput.rs`)
//! ran 4–13 % more requests per second with lanes; the bench's
//! `serve_pipeline` row, whose samples each start from an idle pipeline,
//! measured about the same.

use std::any::TypeId;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use multiproc::{Pool, PoolError};

use crate::batcher::{Continuation, Pending};
use crate::error::ServeError;
use crate::gauge::{Gauge, InFlight, Lanes};
use crate::items::{Encoded, Items};
use crate::lane::{ChunkError, LaneProcess, LaneSpawner};
use crate::pipeline_spec::{PipelineItem, PipelineSpec, PostFn};
use crate::server::{Inner, Server};
use crate::slot::{Answer, Slot};
use crate::status::PipelineStatus;

mod feed;
use feed::{Feed, Job, Next, Queued};
#[cfg(test)]
mod tests;

// Starting is the runtime's part of a spec (it builds a `Runtime`).
impl<R: PipelineItem, I: PipelineItem, O: PipelineItem, P: PipelineItem> PipelineSpec<R, I, O, P> {
    /// Starts the preprocessing processes with their lanes, and the
    /// postprocessing pool.
    pub(crate) fn start(self, server: Weak<Inner>) -> Result<Arc<dyn PipelineDyn>, ServeError> {
        Ok(self.start_runtime(server)?)
    }

    /// [`PipelineSpec::start`], keeping the pipeline's types.
    fn start_runtime(self, server: Weak<Inner>) -> Result<Arc<Runtime<R, O, P>>, ServeError> {
        let name = self.name.clone();
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            ServeError::Internal(format!("pipeline '{name}': {what} did not start: {e}"))
        };
        // On an error, the processes started so far are stopped as they drop.
        let processes = (0..self.preprocess_processes)
            .map(|lane| LaneProcess::start(&self.preprocess, &self.name, lane))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed("a preprocessing process", &e))?;
        let post_pool = match &self.postprocess {
            // Its workers leave stopping to the server, as model workers do.
            Some((_, n)) => Some(
                Pool::builder()
                    .initializer(multiproc::process::ignore_stop_signals, ())
                    .processes(*n)
                    .build()
                    .map_err(|e| failed("the postprocessing pool", &e))?,
            ),
            None => None,
        };
        let runtime = Arc::new(Runtime {
            name: self.name,
            model: self.model,
            spawner: self.preprocess,
            post_pool: RwLock::new(post_pool),
            pre_processes: self.preprocess_processes,
            post: self.postprocess,
            queue: Mutex::new(Feed {
                jobs: VecDeque::new(),
                inputs: Items::default(),
                sleeping: 0,
                woken: 0,
                short_sleepers: 0,
            }),
            changed: Condvar::new(),
            gauge: Gauge::new(),
            capacity: self.capacity,
            chunk: self.chunk,
            server,
            stopped: AtomicBool::new(false),
            stopped_why: OnceLock::new(),
            lanes: Mutex::new(Vec::new()),
            _request: PhantomData,
        });
        let weak: Weak<Runtime<R, O, P>> = Arc::downgrade(&runtime);
        let weak: Weak<dyn Lanes> = weak;
        runtime.gauge.set_lanes(weak);
        for (lane, process) in processes.into_iter().enumerate() {
            let driver = Arc::clone(&runtime);
            let spawned = std::thread::Builder::new()
                .name(format!("serve-lane-{}-{lane}", runtime.name))
                .spawn(move || driver.lane(lane, process));
            match spawned {
                Ok(t) => runtime.lanes.lock().unwrap_or_else(|e| e.into_inner()).push(t),
                Err(e) => {
                    // The processes of the lanes not started are stopped
                    // with the closure that held them.
                    runtime.stop(ServeError::ShuttingDown);
                    return Err(failed("a preprocessing lane", &e));
                }
            }
        }
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

/// Answers every request of `jobs` with `error`.
fn fail_all(jobs: Vec<Job>, error: &ServeError) {
    for job in jobs {
        job.slot.complete(Err(error.clone()));
    }
}

struct Runtime<R, O, P> {
    name: String,
    model: String,
    /// Starts a preprocessing process (again, after one died).
    spawner: LaneSpawner,
    /// The postprocessing pool; taken out by `stop`, so that it is never
    /// dropped inside one of its own callbacks.
    post_pool: RwLock<Option<Pool>>,
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
    /// The lanes' threads, each driving one preprocessing process.
    lanes: Mutex<Vec<JoinHandle<()>>>,
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

    /// A lane: takes a chunk off the queue when it is worth one, hands it to
    /// its preprocessing process, and the outputs to the model; starts
    /// another process when its process dies (only the chunk's requests
    /// fail). Ends when the pipeline stops, stopping its process.
    ///
    /// (Handing the process its next chunk before the outputs go on, so
    /// that it works meanwhile, measured no faster: handing them on is
    /// short beside preprocessing.)
    fn lane(self: Arc<Self>, lane: usize, process: LaneProcess) {
        let mut process = Some(process);
        // The process was started by `replace_if_died_idle` and took no chunk since.
        let mut fresh = false;
        while let Some(next) = self.next_chunk() {
            let Next::Chunk(jobs, inputs) = next else {
                self.replace_if_died_idle(lane, &mut process, &mut fresh);
                continue;
            };
            let (jobs, inputs) = self.without_abandoned(jobs, inputs);
            if jobs.is_empty() {
                continue;
            }
            fresh = false;
            match self.preprocess(lane, &mut process, &inputs) {
                Ok(outputs) => self.to_model(jobs, outputs),
                Err(error) => fail_all(jobs, &error),
            }
        }
    }

    /// Runs a chunk on the lane's process. A process found dead before it
    /// took the chunk (it died idle) is replaced, and the chunk goes to the
    /// new one; one that dies holding the chunk is replaced too, and the
    /// chunk's requests fail with its pid and how it ended. No process is
    /// started once the pipeline stopped.
    fn preprocess(&self, lane: usize, process: &mut Option<LaneProcess>, inputs: &Items) -> Result<Items, ServeError> {
        let mut replaced = false;
        loop {
            // Out of the lane's hands while it runs the chunk: given back
            // if it answers; after an error it is gone (reaped or killed).
            let mut running = match process.take() {
                Some(p) => p,
                None => self.start_process(lane)?,
            };
            let (pid, status, took_chunk) = match running.run(inputs, &self.stopped) {
                Ok(outputs) => {
                    *process = Some(running);
                    return Ok(outputs);
                }
                Err(ChunkError::Stopped) => return Err(self.stopped_error()),
                Err(ChunkError::Failed(what)) => {
                    tracing::warn!(pipeline = %self.name, "preprocessing process killed: {what}");
                    return Err(self.failed("preprocessing", what));
                }
                Err(ChunkError::Lost { pid, status, took_chunk }) => (pid, status, took_chunk),
            };
            tracing::warn!(pipeline = %self.name, pid, "preprocessing process died ({status}); starting another");
            drop(running);
            if took_chunk {
                // Started now, so that the next chunk does not wait for it.
                *process = self.start_process(lane).inspect_err(|e| tracing::warn!(pipeline = %self.name, "{e}")).ok();
                return Err(ServeError::PipelineWorkerLost {
                    pipeline: self.name.clone(),
                    stage: "preprocessing",
                    pid,
                    status,
                });
            }
            if replaced {
                let message = format!(
                    "a new process ({pid}) died before it took the chunk ({status}): the step's processes may not \
                     be able to start; see the log"
                );
                return Err(self.failed("preprocessing", message));
            }
            replaced = true;
        }
    }

    /// Replaces the lane's process if it died while the lane slept. A
    /// replacement that dies idle too (`fresh`: started here, no chunk
    /// since) is not replaced again, so that a step whose processes cannot
    /// start is not restarted every second: the next chunk starts one and
    /// reports what happens. So does a lane whose last start failed.
    fn replace_if_died_idle(&self, lane: usize, process: &mut Option<LaneProcess>, fresh: &mut bool) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let Some((pid, status)) = process.as_mut().and_then(|p| p.ended().map(|status| (p.pid(), status))) else {
            return;
        };
        *process = None;
        if std::mem::take(fresh) {
            tracing::warn!(pipeline = %self.name, pid, "preprocessing process died idle ({status}) before it took a chunk; the next chunk starts another");
            return;
        }
        match self.start_process(lane) {
            Ok(replacement) => {
                tracing::warn!(pipeline = %self.name, pid, replacement = replacement.pid(), "preprocessing process died while idle ({status}); replaced");
                *process = Some(replacement);
                *fresh = true;
            }
            Err(e) => {
                tracing::warn!(pipeline = %self.name, pid, "preprocessing process died while idle ({status}); {e}")
            }
        }
    }

    /// A new preprocessing process for lane `lane`, unless the pipeline
    /// stopped.
    fn start_process(&self, lane: usize) -> Result<LaneProcess, ServeError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(self.stopped_error());
        }
        LaneProcess::start(&self.spawner, &self.name, lane)
            .map_err(|e| self.failed("preprocessing", format!("no process to run it: {e}")))
    }

    /// Hands preprocessed inputs to the model's batcher.
    fn to_model(self: &Arc<Self>, jobs: Vec<Job>, outputs: Items) {
        let Some(inner) = self.server.upgrade() else {
            fail_all(jobs, &ServeError::ShuttingDown);
            return;
        };
        let server = Server::from_inner(inner);
        self.submit_to_model(&server, jobs, outputs);
        // This runs on a lane's thread: the server must not stop here.
        server.release_elsewhere();
    }

    fn submit_to_model(self: &Arc<Self>, server: &Server, jobs: Vec<Job>, outputs: Items) {
        let entry = match server.model_entry(&self.model) {
            Ok(e) => e,
            Err(e) => {
                fail_all(jobs, &e);
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
            let pool = this.post_pool.read().unwrap_or_else(|e| e.into_inner());
            let Some(pool) = &*pool else {
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

impl<R, O, P> Lanes for Runtime<R, O, P>
where
    R: PipelineItem,
    O: PipelineItem,
    P: PipelineItem,
{
    fn nudge(&self) {
        self.wake_lane(self.queue.lock().unwrap_or_else(|e| e.into_inner()));
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
        let Some((_, admitted)) = self.gauge.admit(self.capacity) else {
            return Err(ServeError::PipelineOverloaded { pipeline: self.name.clone(), capacity: self.capacity });
        };
        let arrived = slot.arrived;
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // Again under the lock: a stop between the check above and here has
        // let the lanes empty the queue and end, so nobody would answer a
        // request queued now.
        if self.stopped.load(Ordering::Acquire) {
            return Err(self.stopped_error());
        }
        // Encoded here, by the thread that made the input (which frees it
        // too); an input that does not encode is its request's error.
        q.inputs.push_output(Ok(&input));
        q.jobs.push_back(Queued { slot, deadline });
        admitted.queued();
        // Only a sleeping lane's queue is read by releases (see `Gauge`),
        // and a lane notes its queue as it goes to sleep.
        if self.gauge.lane_sleeps() {
            self.gauge.set_queued(q.jobs.len());
        }
        self.wake_lane_for(q, arrived);
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
        let lanes = std::mem::take(&mut *self.lanes.lock().unwrap_or_else(|e| e.into_inner()));
        let me = std::thread::current().id();
        // A lane does not wait for itself: it ends once this returns.
        for lane in lanes.into_iter().filter(|t| t.thread().id() != me) {
            let _ = lane.join();
        }
        let post = self.post_pool.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(pool) = post {
            pool.terminate();
        }
    }
}
