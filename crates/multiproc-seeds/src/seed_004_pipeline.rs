//! Seed 004 (`python多进程及通信实现异步任务需求`): the asynchronous inference
//! pipeline — a network module hands requests to a pool of receiving
//! (preprocessing) processes, a cache process collects them into batches of
//! 128 or whatever came within 1 second, a model process loaded *inside*
//! itself predicts each batch, and every result goes back to its request.
//!
//! ```python
//! def receive(self, queue, cache_queue):        # c_pool_size of these
//!     while True:
//!         info = queue.get()
//!         cache_queue.put('receive_' + info)
//! def cache(self, cache_queue, infer_queue):
//!     while True:
//!         caches.append(cache_queue.get())
//!         if len(caches) > 128 or time.time() - timeLast > 1:
//!             infer_queue.put(caches); caches = []; timeLast = time.time()
//! def predict(self, infer_queue, result_queue):
//!     model = Model()                          # 模型必須在這里初始化: load it in the child
//!     while True:
//!         result_queue.put(['modelpredict_' + e for e in model(infer_queue.get())])
//! ```
//!
//! Rebuilt on `multiproc-serve`: a [`PipelineSpec`] with a preprocessing
//! pool of 2 processes, a model batched at 128 items or 1 s
//! (`max_queue_delay`, as the seed's cache), the model
//! built in its worker process, and each result routed back to the request
//! it answers. The producer sends 300 requests in one burst, then 5 more a
//! little later: the burst leaves as full batches of 128, the tail of the
//! burst and the late ones leave when their oldest has waited 1 s.

use std::time::{Duration, Instant};

use multiproc_serve::{
    LoadError, Model, ModelSettings, ModelSpec, PipelineSpec, Request, ServeError, Server, WorkerContext,
};
use serde::{Deserialize, Serialize};

use crate::{Error, PATIENCE, Report};

/// The seed's model: prefixes each item, and says which processes (its own
/// and the preprocessing one) and which batch did it.
struct Prefixer {
    pid: u32,
    batches: u64,
}

/// One prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predicted {
    /// `modelpredict_receive_<request>`.
    pub text: String,
    /// Pid of the model process.
    pub pid: u32,
    /// Which batch of that process (1-based).
    pub batch: u64,
    /// Size of that batch.
    pub batch_size: usize,
    /// Pid of the preprocessing process that made the item.
    pub preprocessed_by: u32,
}

impl Model for Prefixer {
    type Config = ();
    type Input = (String, u32);
    type Output = Predicted;

    fn load((): (), _: &WorkerContext) -> Result<Self, LoadError> {
        Ok(Prefixer { pid: std::process::id(), batches: 0 })
    }

    fn predict(&mut self, batch: Vec<(String, u32)>) -> Vec<Result<Predicted, String>> {
        self.batches += 1;
        let n = batch.len();
        batch
            .into_iter()
            .map(|(e, preprocessed_by)| {
                Ok(Predicted {
                    text: format!("modelpredict_{e}"),
                    pid: self.pid,
                    batch: self.batches,
                    batch_size: n,
                    preprocessed_by,
                })
            })
            .collect()
    }
}

/// The seed's `receive`: runs in the preprocessing pool (and says which
/// process it ran in).
fn receive(info: String) -> Result<(String, u32), String> {
    Ok((format!("receive_{info}"), std::process::id()))
}

/// What [`inference_pipeline`] showed.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOutcome {
    /// Requests sent.
    pub requests: usize,
    /// Answers whose text is the request's own, prefixed twice.
    pub matched: usize,
    /// Batches by size, in the order they ran.
    pub batch_sizes: Vec<usize>,
    /// Batch close reasons and counts.
    pub reasons: Vec<(String, u64)>,
    /// Pid of the model process (one for all).
    pub model_pids: Vec<u32>,
    /// Pids of the preprocessing processes that made the items.
    pub preprocess_pids: Vec<u32>,
    /// Pid of this process.
    pub parent_pid: u32,
    /// How long the late requests waited in the queue.
    pub late_waits: Vec<Duration>,
}

fn serve_error(e: ServeError) -> Error {
    Error::Unexpected(e.to_string())
}

/// Runs the seed's pipeline, made finite.
///
/// # Errors
///
/// The server or a request failed.
pub fn inference_pipeline() -> Result<Report<PipelineOutcome>, Error> {
    let server = Server::new();
    let settings = ModelSettings {
        max_batch_size: 128,
        max_queue_delay: Duration::from_secs(1),
        queue_capacity: 10_000,
        request_timeout: Some(PATIENCE),
        ..Default::default()
    };
    server.add(ModelSpec::<Prefixer>::new("model").version(1, ()).settings(settings)).map_err(serve_error)?;
    server
        .add_pipeline(PipelineSpec::<String, (String, u32), Predicted, Predicted>::new("C", "model", receive, 2))
        .map_err(serve_error)?;
    let mut lines = vec!["C: preprocessing pool of 2, batches of 128 or 1 s, one model process".to_string()];

    // The producer: a burst of 300, then 5 late ones.
    let started = Instant::now();
    let send = |i: usize| server.infer_async::<String, Predicted>(Request::new("C", format!("msg{i}")));
    let mut pending: Vec<_> = (0..300).map(send).collect();
    std::thread::sleep(Duration::from_millis(200));
    pending.extend((300..305).map(send));
    let requests = pending.len();

    let mut matched = 0;
    let mut late_waits = Vec::new();
    let mut model_pids = Vec::new();
    let mut preprocess_pids = Vec::new();
    let mut batches = std::collections::BTreeMap::new();
    for (i, f) in pending.into_iter().enumerate() {
        let reply = f.wait_timeout(PATIENCE).map_err(serve_error)?;
        let p = reply.output;
        if p.text == format!("modelpredict_receive_msg{i}") {
            matched += 1;
        }
        if i >= 300 {
            late_waits.push(reply.queue_time);
        }
        if !model_pids.contains(&p.pid) {
            model_pids.push(p.pid);
        }
        if !preprocess_pids.contains(&p.preprocessed_by) {
            preprocess_pids.push(p.preprocessed_by);
        }
        batches.insert(p.batch, p.batch_size);
    }
    let batch_sizes: Vec<usize> = batches.into_values().collect();
    let metrics = server.metrics();
    let reasons = metrics
        .get("model", 1)
        .map(|m| m.batch_reasons.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default();
    lines.push(format!(
        "{requests} requests answered in {:.2} s, {matched} routed back to their own request",
        started.elapsed().as_secs_f64()
    ));
    lines.push(format!("batches: {batch_sizes:?}, closed by {reasons:?}"));
    lines.push(format!("preprocessed in processes {preprocess_pids:?}, predicted in {model_pids:?}"));
    lines.push(format!("late requests waited {:?} for their batch", late_waits.first().copied().unwrap_or_default()));
    server.shutdown();
    let outcome = PipelineOutcome {
        requests,
        matched,
        batch_sizes,
        reasons,
        model_pids,
        preprocess_pids,
        parent_pid: std::process::id(),
        late_waits,
    };
    Ok(Report { lines, outcome })
}
