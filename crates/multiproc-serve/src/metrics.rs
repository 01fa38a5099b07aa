//! Counters per model version and their snapshot: what Triton's
//! `nv_inference_*` metrics need, plus batching and supervision figures.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

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
///
/// A caller that holds its answer or its error finds it counted: a batch's
/// outcomes and its execution are added before any of them can be read.
/// The exception is a deadline: a caller whose deadline passed has its
/// error at once, and the request is counted when the server next handles
/// it (drops it from the queue, or its late answer comes back).
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
    /// Sum of failed requests' durations, µs: arrival to failure, or to the
    /// deadline that failed the request first (as its caller saw it); a
    /// request refused before it was queued counts no time.
    pub request_failure_duration_us: u64,
    /// When the model last answered a batch, in milliseconds since the Unix
    /// epoch (0: never). Triton's `last_inference`.
    pub last_inference_ms: u64,
    /// Inferences the model ran: the rows of the batches it executed (a
    /// request of [`rows`](crate::Request::rows) `n` counts `n`).
    pub inference_count: u64,
    /// Model executions: batches run, whatever their rows.
    pub execution_count: u64,
    /// Sum of request durations, arrival to answer (successes), µs.
    pub request_duration_us: u64,
    /// Sum of queue waits, µs.
    pub queue_duration_us: u64,
    /// Requests the model computed (what the three compute durations
    /// below count, one per request of each batch run).
    pub compute_count: u64,
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
    /// Batches the model ran, by size in rows, with the worker's time for
    /// them: Triton's `batch_stats`. Ascending by size.
    pub batch_stats: Vec<BatchStats>,
    /// Worker restarts.
    pub restarts: u64,
    /// Workers by state (`"idle"`, `"busy"`, `"starting"`, `"backing_off"`, `"stopped"`).
    pub workers: BTreeMap<String, u64>,
}

/// The batches of one size that a model version ran, and the worker's
/// time for them (summed per batch, not per request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStats {
    /// The batches' size in rows.
    pub batch_size: usize,
    /// Batches of this size run.
    pub count: u64,
    /// Sum of the time spent decoding their inputs, µs.
    pub compute_input_us: u64,
    /// Sum of the time spent in `predict`, µs.
    pub compute_infer_us: u64,
    /// Sum of the time spent encoding their outputs, µs.
    pub compute_output_us: u64,
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
    failure_us: AtomicU64,
    last_inference_ms: AtomicU64,
    computed: AtomicU64,
    input_us: AtomicU64,
    infer_us: AtomicU64,
    output_us: AtomicU64,
    pub restarts: AtomicU64,
    failures: Mutex<BTreeMap<ErrorKind, u64>>,
    batches: Mutex<(BTreeMap<usize, u64>, BTreeMap<BatchReason, u64>)>,
    /// Batches run, by rows.
    executed: Mutex<BTreeMap<usize, BatchStats>>,
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

    /// A request failed with `kind`, `took` after it arrived.
    pub fn failure(&self, kind: ErrorKind, took: Duration) {
        *self.failures.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
        self.failure_us.fetch_add(us(took), Relaxed);
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
        self.computed.fetch_add(n, Relaxed);
        self.input_us.fetch_add(input_us.saturating_mul(n), Relaxed);
        self.infer_us.fetch_add(infer_us.saturating_mul(n), Relaxed);
        self.output_us.fetch_add(output_us.saturating_mul(n), Relaxed);
        let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        self.last_inference_ms.fetch_max(u64::try_from(now_ms).unwrap_or(u64::MAX), Relaxed);
        let mut executed = self.executed.lock().unwrap_or_else(|e| e.into_inner());
        let stats = executed.entry(rows).or_insert(BatchStats { batch_size: rows, ..BatchStats::default() });
        stats.count += 1;
        stats.compute_input_us = stats.compute_input_us.saturating_add(input_us);
        stats.compute_infer_us = stats.compute_infer_us.saturating_add(infer_us);
        stats.compute_output_us = stats.compute_output_us.saturating_add(output_us);
    }

    pub fn snapshot(&self, model: &str, version: u64, pending: u64, workers: BTreeMap<String, u64>) -> VersionMetrics {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let executed = self.executed.lock().unwrap_or_else(|e| e.into_inner());
        VersionMetrics {
            model: model.to_string(),
            version,
            request_success: self.success.load(Relaxed),
            request_failure: failures.iter().map(|(k, v)| (k.as_str().to_string(), *v)).collect(),
            request_failure_duration_us: self.failure_us.load(Relaxed),
            last_inference_ms: self.last_inference_ms.load(Relaxed),
            inference_count: self.inference.load(Relaxed),
            execution_count: self.execution.load(Relaxed),
            request_duration_us: self.request_us.load(Relaxed),
            queue_duration_us: self.queue_us.load(Relaxed),
            compute_count: self.computed.load(Relaxed),
            compute_input_duration_us: self.input_us.load(Relaxed),
            compute_infer_duration_us: self.infer_us.load(Relaxed),
            compute_output_duration_us: self.output_us.load(Relaxed),
            pending_requests: pending,
            batch_sizes: batches.0.iter().map(|(k, v)| (*k, *v)).collect(),
            batch_reasons: batches.1.iter().map(|(k, v)| (k.as_str().to_string(), *v)).collect(),
            batch_stats: executed.values().copied().collect(),
            restarts: self.restarts.load(Relaxed),
            workers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_are_counted_per_batch_size_and_failures_with_their_time() {
        let c = Counters::default();
        let before = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        c.executed(3, 4, 10, 100, 1);
        c.executed(1, 4, 20, 200, 2);
        c.executed(2, 2, 5, 50, 0);
        c.failure(ErrorKind::ModelFailed, Duration::from_millis(3));
        c.failure(ErrorKind::ModelFailed, Duration::from_micros(250));
        c.failure(ErrorKind::BadInput, Duration::ZERO);
        let m = c.snapshot("m", 1, 0, BTreeMap::new());
        let stats = |batch_size, count, compute_input_us, compute_infer_us, compute_output_us| BatchStats {
            batch_size,
            count,
            compute_input_us,
            compute_infer_us,
            compute_output_us,
        };
        assert_eq!(m.batch_stats, vec![stats(2, 1, 5, 50, 0), stats(4, 2, 30, 300, 3)], "per batch, by rows");
        assert_eq!((m.execution_count, m.inference_count, m.compute_count), (3, 10, 6));
        assert_eq!(m.compute_infer_duration_us, 3 * 100 + 200 + 2 * 50, "per request");
        assert_eq!(m.request_failure_duration_us, 3_250);
        assert_eq!(m.request_failure.values().sum::<u64>(), 3);
        let after = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!((before..=after).contains(&m.last_inference_ms), "{before} ≤ {} ≤ {after}", m.last_inference_ms);
        assert_eq!(Counters::default().snapshot("m", 1, 0, BTreeMap::new()).last_inference_ms, 0, "never: 0");
    }
}
