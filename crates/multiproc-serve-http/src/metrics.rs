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
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// What the HTTP layer counts itself: failures before a request reached a
/// model (a body that is not the protocol, an unknown output…), by model,
/// version and reason. (Rows, executions and the requests that reached a
/// model are counted by multiproc-serve, as Triton counts them.)
#[derive(Debug, Default)]
pub struct HttpCounters {
    failures: Mutex<BTreeMap<(String, String, String), u64>>,
}

impl HttpCounters {
    /// Counts one failure.
    pub fn failure(&self, model: &str, version: &str, reason: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((model.to_string(), version.to_string(), reason.to_string())).or_default() += 1;
    }
}

/// The server's request body budget (`--body-budget-bytes`) at one time,
/// exposed as `multiproc_http_body_*`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyMemory {
    /// The most bytes of request bodies held at once.
    pub budget: usize,
    /// The bytes of request bodies held now (read or being read, not yet answered).
    pub held: usize,
    /// Requests refused (503) since the start because the budget was spent.
    pub refused: u64,
}

/// Renders the metrics as Prometheus/OpenMetrics text.
pub fn render(snapshot: MetricsSnapshot, http: &HttpCounters, bodies: &BodyMemory) -> String {
    let versions = snapshot.versions;
    let failures = http.failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { versions, http: failures, bodies: *bodies }));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[derive(Debug)]
struct Snapshot {
    versions: Vec<VersionMetrics>,
    http: BTreeMap<(String, String, String), u64>,
    bodies: BodyMemory,
}

type Field = fn(&VersionMetrics) -> u64;

const CUMULATIVE: &[(&str, &str, Field)] = &[
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes", |m| m.request_success),
    ("nv_inference_count", "Number of inferences performed (rows: a request of batch n counts n)", |m| {
        m.inference_count
    }),
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
    [("model", label_value(&m.model)), ("version", m.version.to_string())]
}

/// A label value as the exposition format needs it: `\`, `"` and newlines
/// escaped (`prometheus-client` writes values as they are). A model is named
/// by its directory, which may hold any of them.
fn label_value(s: &str) -> String {
    if !s.contains(['\\', '"', '\n']) {
        return s.to_string();
    }
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Rows of a family labelled model, version and one more key.
type Keyed = Vec<(String, String, String, u64)>;

impl Snapshot {
    fn keyed(&self, map: fn(&VersionMetrics) -> &BTreeMap<String, u64>) -> Keyed {
        let rows = self.versions.iter().flat_map(|m| map(m).iter().map(move |(k, n)| (m, k, n)));
        rows.map(|(m, k, n)| (m.model.clone(), m.version.to_string(), k.clone(), *n)).collect()
    }
}

fn keyed(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    key: &'static str,
    rows: Keyed,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (model, version, value, n) in rows {
        let l = [("model", label_value(&model)), ("version", version), (key, value)];
        ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(family.encode_family(&l)?)?;
    }
    Ok(())
}

/// Upper bounds of the batch-size histogram's buckets.
const BATCH_BOUNDS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// The batch-size histogram's buckets as `prometheus-client` takes them:
/// each bucket's own count (it adds them up into the cumulative `le`
/// series), the last one unbounded (`f64::MAX` is written `+Inf`).
fn batch_buckets(sizes: &[(usize, u64)]) -> Vec<(f64, u64)> {
    let mut buckets: Vec<(f64, u64)> = BATCH_BOUNDS.iter().map(|&b| (b as f64, 0)).collect();
    buckets.push((f64::MAX, 0));
    for &(size, n) in sizes {
        let i = BATCH_BOUNDS.iter().position(|&b| size <= b).unwrap_or(BATCH_BOUNDS.len());
        buckets[i].1 += n;
    }
    buckets
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for (name, help, field) in CUMULATIVE {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Unknown)?;
            for m in &self.versions {
                ConstGauge::new(field(m) as i64).encode(family.encode_family(&labels(m))?)?;
            }
        }
        let mut failures = self.keyed(|m| &m.request_failure);
        failures.extend(self.http.iter().map(|((m, v, r), n)| (m.clone(), v.clone(), r.clone(), *n)));
        let failure_help = "Number of failed inference requests, all batch sizes, by reason";
        keyed(&mut encoder, "nv_inference_request_failure", failure_help, MetricType::Unknown, "reason", failures)?;
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
            "Rows per batch sent to a worker (what max_batch_size counts)",
            None,
            MetricType::Histogram,
        )?;
        for m in &self.versions {
            let l = labels(m);
            let mut fam = hist.encode_family(&l)?;
            let count: u64 = m.batch_sizes.iter().map(|(_, n)| n).sum();
            let sum: f64 = m.batch_sizes.iter().map(|(s, n)| *s as f64 * *n as f64).sum();
            fam.encode_histogram::<NoLabelSet>(sum, count, &batch_buckets(&m.batch_sizes), None)?;
        }
        let close_help = "Batches sent, by why they were closed (full, preferred, delay, idle_worker, drain)";
        let closes = self.keyed(|m| &m.batch_reasons);
        keyed(&mut encoder, "multiproc_inference_batch_close", close_help, MetricType::Unknown, "reason", closes)?;
        let states = self.keyed(|m| &m.workers);
        keyed(
            &mut encoder,
            "multiproc_worker_state",
            "Worker processes in each state",
            MetricType::Gauge,
            "state",
            states,
        )?;
        self.encode_bodies(&mut encoder)
    }
}

impl Snapshot {
    /// The server-wide series of the request body budget.
    fn encode_bodies(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let series: [(&str, &str, MetricType, u64); 3] = [
            (
                "multiproc_http_body_held_bytes",
                "Bytes of request bodies held now: read or being read, not yet answered",
                MetricType::Gauge,
                self.bodies.held as u64,
            ),
            (
                "multiproc_http_body_budget_bytes",
                "Most bytes of request bodies held at once (--body-budget-bytes)",
                MetricType::Gauge,
                self.bodies.budget as u64,
            ),
            (
                "multiproc_http_body_budget_refused",
                "Requests refused (503) because request bodies held the whole budget",
                MetricType::Unknown,
                self.bodies.refused,
            ),
        ];
        for (name, help, metric_type, value) in series {
            ConstGauge::new(as_i64(value)).encode(encoder.encode_descriptor(name, help, None, metric_type)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_histogram_is_cumulative_once() {
        let m = VersionMetrics {
            model: "m".into(),
            version: 1,
            batch_sizes: vec![(1, 5), (3, 2), (64, 7), (300, 1)],
            ..VersionMetrics::default()
        };
        let text = render(MetricsSnapshot { versions: vec![m] }, &HttpCounters::default(), &BodyMemory::default());
        let bucket = |le: &str| {
            let key = format!("multiproc_inference_batch_size_bucket{{le=\"{le}\",model=\"m\",version=\"1\"}} ");
            let line = text.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("no {key} in {text}"));
            line[key.len()..].parse::<u64>().unwrap()
        };
        assert_eq!([bucket("1.0"), bucket("2.0"), bucket("4.0"), bucket("32.0")], [5, 5, 7, 7]);
        assert_eq!([bucket("64.0"), bucket("256.0"), bucket("+Inf")], [14, 14, 15]);
        assert!(text.contains("multiproc_inference_batch_size_count{model=\"m\",version=\"1\"} 15"), "{text}");
    }

    #[test]
    fn the_body_budget_is_three_server_wide_series() {
        let bodies = BodyMemory { budget: 1 << 30, held: 4096, refused: 3 };
        let text = render(MetricsSnapshot::default(), &HttpCounters::default(), &bodies);
        for line in [
            "# TYPE multiproc_http_body_held_bytes gauge",
            "multiproc_http_body_held_bytes 4096",
            "multiproc_http_body_budget_bytes 1073741824",
            "# TYPE multiproc_http_body_budget_refused unknown",
            "multiproc_http_body_budget_refused 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in {text}");
        }
    }
}
