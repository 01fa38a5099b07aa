//! Counters per model version and their snapshot: what Triton's
//! `nv_inference_*` metrics need, plus batching and supervision figures.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;

/// Why a batch left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BatchReason {
    /// It reached `max_batch_size` rows, or the next request would have
    /// taken it past them.
    Full,
    /// It reached a preferred batch size.
    Preferred,
    /// Its oldest request waited `max_queue_delay` (a non-zero one).
    Delay,
    /// No `max_queue_delay` is set and a worker was idle: what was queued
    /// went at once.
    IdleWorker,
    /// The version is draining: what is left goes.
    Drain,
}

impl BatchReason {
    /// Lowercase label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchReason::Full => "full",
            BatchReason::Preferred => "preferred",
            BatchReason::Delay => "delay",
            BatchReason::IdleWorker => "idle_worker",
            BatchReason::Drain => "drain",
        }
    }
}

/// A snapshot of one model version's counters (cumulative since it was added).
///
/// Triton names: `request_success` → `nv_inference_request_success`,
/// `request_failure` → `nv_inference_request_failure{reason}`,
/// `inference_count` → `nv_inference_count`, `execution_count` →
/// `nv_inference_exec_count`, the durations → `nv_inference_*_duration_us`,
/// `pending_requests` → `nv_inference_pending_request_count`. As in
/// Triton, the request counters and durations count requests, the
/// inference count counts rows (batch entries) and the execution count
/// counts model calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionMetrics {
    /// The model.
    pub model: String,
    /// The version.
    pub version: u64,
    /// Requests answered with an output (a request counts one, whatever
    /// its rows).
    pub request_success: u64,
    /// Failed requests by reason ([`ErrorKind::as_str`]); a request counts
    /// one, whatever its rows.
    pub request_failure: BTreeMap<String, u64>,
    /// Inferences the model ran: the rows of the batches it executed (a
    /// request of [`rows`](crate::Request::rows) `n` counts `n`).
    pub inference_count: u64,
    /// Model executions: batches run, whatever their rows.
    pub execution_count: u64,
    /// Sum of request durations, arrival to answer (successes), µs.
    pub request_duration_us: u64,
    /// Sum of queue waits, µs.
    pub queue_duration_us: u64,
    /// Sum of input decoding time in the workers, per request, µs.
    pub compute_input_duration_us: u64,
    /// Sum of `predict` time, per request, µs.
    pub compute_infer_duration_us: u64,
    /// Sum of output encoding time in the workers, per request, µs.
    pub compute_output_duration_us: u64,
    /// Requests queued or running now.
    pub pending_requests: u64,
    /// Batches by size in rows (what `max_batch_size` counts):
    /// `(rows, count)`, ascending.
    pub batch_sizes: Vec<(usize, u64)>,
    /// Batches by close reason ([`BatchReason::as_str`]).
    pub batch_reasons: BTreeMap<String, u64>,
    /// Worker restarts.
    pub restarts: u64,
    /// Workers by state (`"idle"`, `"busy"`, `"starting"`, `"backing_off"`, `"stopped"`).
    pub workers: BTreeMap<String, u64>,
}

/// Every version's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// One entry per model version, sorted by model then version.
    pub versions: Vec<VersionMetrics>,
}

impl MetricsSnapshot {
    /// The counters of `model` version `version`.
    pub fn get(&self, model: &str, version: u64) -> Option<&VersionMetrics> {
        self.versions.iter().find(|m| m.model == model && m.version == version)
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The live counters of one version.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    success: AtomicU64,
    inference: AtomicU64,
    execution: AtomicU64,
    request_us: AtomicU64,
    queue_us: AtomicU64,
    input_us: AtomicU64,
    infer_us: AtomicU64,
    output_us: AtomicU64,
    pub restarts: AtomicU64,
    failures: Mutex<BTreeMap<ErrorKind, u64>>,
    batches: Mutex<(BTreeMap<usize, u64>, BTreeMap<BatchReason, u64>)>,
}

/// A batch's successful requests, added to the counters once for the
/// whole batch (three shared atomics per request cost more than the rest
/// of a request's delivery).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    n: u64,
    total: Duration,
    queued: Duration,
}

impl Tally {
    /// One more request answered after `total`, of which `queued` waiting for its batch.
    pub fn add(&mut self, total: Duration, queued: Duration) {
        self.n += 1;
        self.total = self.total.saturating_add(total);
        self.queued = self.queued.saturating_add(queued);
    }
}

impl Counters {
    /// Adds a batch's successful requests.
    pub fn success(&self, tally: &Tally) {
        if tally.n == 0 {
            return;
        }
        self.success.fetch_add(tally.n, Relaxed);
        self.request_us.fetch_add(us(tally.total), Relaxed);
        self.queue_us.fetch_add(us(tally.queued), Relaxed);
    }

    pub fn failure(&self, kind: ErrorKind) {
        *self.failures.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
    }

    /// A batch of `rows` rows left the queue, closed for `reason`.
    pub fn batch(&self, rows: usize, reason: BatchReason) {
        let mut b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        *b.0.entry(rows).or_default() += 1;
        *b.1.entry(reason).or_default() += 1;
    }

    /// A batch came back: `requests` requests carrying `rows` rows, with
    /// the worker's timings (per batch, counted once per request as Triton
    /// does). An execution counts one, and its inferences are its rows.
    pub fn executed(&self, requests: usize, rows: usize, input_us: u64, infer_us: u64, output_us: u64) {
        let n = requests as u64;
        self.execution.fetch_add(1, Relaxed);
        self.inference.fetch_add(rows as u64, Relaxed);
        self.input_us.fetch_add(input_us.saturating_mul(n), Relaxed);
        self.infer_us.fetch_add(infer_us.saturating_mul(n), Relaxed);
        self.output_us.fetch_add(output_us.saturating_mul(n), Relaxed);
    }

    pub fn snapshot(&self, model: &str, version: u64, pending: u64, workers: BTreeMap<String, u64>) -> VersionMetrics {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        VersionMetrics {
            model: model.to_string(),
            version,
            request_success: self.success.load(Relaxed),
            request_failure: failures.iter().map(|(k, v)| (k.as_str().to_string(), *v)).collect(),
            inference_count: self.inference.load(Relaxed),
            execution_count: self.execution.load(Relaxed),
            request_duration_us: self.request_us.load(Relaxed),
            queue_duration_us: self.queue_us.load(Relaxed),
            compute_input_duration_us: self.input_us.load(Relaxed),
            compute_infer_duration_us: self.infer_us.load(Relaxed),
            compute_output_duration_us: self.output_us.load(Relaxed),
            pending_requests: pending,
            batch_sizes: batches.0.iter().map(|(k, v)| (*k, *v)).collect(),
            batch_reasons: batches.1.iter().map(|(k, v)| (k.as_str().to_string(), *v)).collect(),
            restarts: self.restarts.load(Relaxed),
            workers,
        }
    }
}
