//! Prometheus metrics named after Triton's (`nv_inference_*`), per model and
//! version, encoded by `prometheus-client` from multiproc-serve's counters
//! at each scrape.
//!
//! Triton's cumulative metrics keep their exact names (no `_total`
//! suffix, which OpenMetrics adds to every `counter`), so they are exposed
//! with the `unknown` type: existing dashboards and `rate()` queries work
//! unchanged. Batch sizes are a histogram; why batches were closed, worker
//! restarts and worker states are `multiproc_*` series.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use multiproc_serve::{MetricsSnapshot, VersionMetrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Failures the HTTP layer saw before a request reached a model (a body
/// that is not the protocol, an unknown output…), by model, version, reason.
#[derive(Debug, Default)]
pub struct HttpFailures(Mutex<BTreeMap<(String, String, String), u64>>);

impl HttpFailures {
    /// Counts one failure.
    pub fn count(&self, model: &str, version: &str, reason: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((model.to_string(), version.to_string(), reason.to_string())).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<(String, String, String), u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Renders the metrics as Prometheus/OpenMetrics text.
pub fn render(snapshot: MetricsSnapshot, http: &HttpFailures) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { versions: snapshot.versions, http: http.snapshot() }));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[derive(Debug)]
struct Snapshot {
    versions: Vec<VersionMetrics>,
    http: BTreeMap<(String, String, String), u64>,
}

type Field = fn(&VersionMetrics) -> u64;

const CUMULATIVE: &[(&str, &str, Field)] = &[
    ("nv_inference_request_success", "Number of successful inference requests", |m| m.request_success),
    ("nv_inference_count", "Number of inferences performed (a batch of n counts n)", |m| m.inference_count),
    ("nv_inference_exec_count", "Number of model executions (batches)", |m| m.execution_count),
    ("nv_inference_request_duration_us", "Cumulative end-to-end request duration in microseconds", |m| {
        m.request_duration_us
    }),
    ("nv_inference_queue_duration_us", "Cumulative time requests waited in the queue, in microseconds", |m| {
        m.queue_duration_us
    }),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds", |m| {
        m.compute_input_duration_us
    }),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds", |m| {
        m.compute_infer_duration_us
    }),
    ("nv_inference_compute_output_duration_us", "Cumulative compute output duration in microseconds", |m| {
        m.compute_output_duration_us
    }),
    ("multiproc_worker_restarts", "Worker processes restarted after they died or timed out", |m| m.restarts),
];

fn labels(m: &VersionMetrics) -> [(&'static str, String); 2] {
    [("model", m.model.clone()), ("version", m.version.to_string())]
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for (name, help, field) in CUMULATIVE {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Unknown)?;
            for m in &self.versions {
                ConstGauge::new(field(m) as i64).encode(family.encode_family(&labels(m))?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "nv_inference_request_failure",
                "Number of failed inference requests, by reason",
                None,
                MetricType::Unknown,
            )?;
            for m in &self.versions {
                for (reason, n) in &m.request_failure {
                    let l =
                        [("model", m.model.clone()), ("version", m.version.to_string()), ("reason", reason.clone())];
                    ConstGauge::new(*n as i64).encode(family.encode_family(&l)?)?;
                }
            }
            for ((model, version, reason), n) in &self.http {
                let l = [("model", model.clone()), ("version", version.clone()), ("reason", reason.clone())];
                ConstGauge::new(*n as i64).encode(family.encode_family(&l)?)?;
            }
        }
        let mut pending = encoder.encode_descriptor(
            "nv_inference_pending_request_count",
            "Requests waiting or running",
            None,
            MetricType::Gauge,
        )?;
        for m in &self.versions {
            ConstGauge::new(m.pending_requests as i64).encode(pending.encode_family(&labels(m))?)?;
        }
        let mut hist = encoder.encode_descriptor(
            "multiproc_inference_batch_size",
            "Requests per batch sent to a worker",
            None,
            MetricType::Histogram,
        )?;
        for m in &self.versions {
            let l = labels(m);
            let mut fam = hist.encode_family(&l)?;
            let count: u64 = m.batch_sizes.iter().map(|(_, n)| n).sum();
            let sum: f64 = m.batch_sizes.iter().map(|(s, n)| *s as f64 * *n as f64).sum();
            let mut buckets = Vec::new();
            let mut below = 0u64;
            for bound in [1usize, 2, 4, 8, 16, 32, 64, 128, 256] {
                below = m.batch_sizes.iter().filter(|(s, _)| *s <= bound).map(|(_, n)| n).sum();
                buckets.push((bound as f64, below));
            }
            buckets.push((f64::INFINITY, count.max(below)));
            fam.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        let mut reasons = encoder.encode_descriptor(
            "multiproc_inference_batch_close",
            "Batches sent, by why they were closed (full, preferred, delay, idle_worker, drain)",
            None,
            MetricType::Counter,
        )?;
        for m in &self.versions {
            for (reason, n) in &m.batch_reasons {
                let l = [("model", m.model.clone()), ("version", m.version.to_string()), ("reason", reason.clone())];
                ConstCounter::new(*n).encode(reasons.encode_family(&l)?)?;
            }
        }
        let mut states = encoder.encode_descriptor(
            "multiproc_worker_state",
            "Worker processes in each state",
            None,
            MetricType::Gauge,
        )?;
        for m in &self.versions {
            for (state, n) in &m.workers {
                let l = [("model", m.model.clone()), ("version", m.version.to_string()), ("state", state.clone())];
                ConstGauge::new(*n as i64).encode(states.encode_family(&l)?)?;
            }
        }
        Ok(())
    }
}
