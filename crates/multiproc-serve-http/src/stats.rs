//! Triton's statistics extension: `GET /v2/models/stats`,
//! `GET /v2/models/{name}/stats` and `GET /v2/models/{name}/versions/{v}/stats`
//! give each model version's cumulative counts and durations as JSON, the
//! figures `/metrics` gives as Prometheus text, with the per-batch-size
//! execution times besides. Triton's client reads them with
//! `get_inference_statistics`.
//!
//! As in Triton, `success`, `queue` and the three `compute_*` durations
//! count requests (a batch's worker time counts once for each of its
//! requests), and `batch_stats` counts executions (a batch's time once).
//! This server has no response cache: `cache_hit` and `cache_miss` are
//! always zero.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use multiproc_serve::VersionMetrics;
use serde::Serialize;

use crate::app::{App, PathParams, model_at, parse_version};
use crate::error::ApiError;

/// The body of a statistics answer.
#[derive(Debug, Clone, Serialize)]
pub struct StatsResponse {
    /// One entry per model version.
    pub model_stats: Vec<ModelStats>,
}

/// One model version's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStats {
    /// The model.
    pub name: String,
    /// The version.
    pub version: String,
    /// When the version last ran a batch, in ms since the Unix epoch (0: never).
    pub last_inference: u64,
    /// Rows inferred (a request of n rows counts n).
    pub inference_count: u64,
    /// Batches run.
    pub execution_count: u64,
    /// Counts and durations by stage.
    pub inference_stats: InferenceStats,
    /// Executions by batch size.
    pub batch_stats: Vec<BatchStatsEntry>,
}

/// A count and its cumulative duration in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DurationStat {
    /// How many.
    pub count: u64,
    /// Their total time, ns.
    pub ns: u64,
}

impl DurationStat {
    fn of(count: u64, us: u64) -> DurationStat {
        DurationStat { count, ns: us.saturating_mul(1000) }
    }
}

/// Requests by outcome and stage.
#[derive(Debug, Clone, Serialize)]
pub struct InferenceStats {
    /// Requests answered, arrival to answer.
    pub success: DurationStat,
    /// Requests failed, arrival to failure or to the deadline that failed
    /// them (refused before queueing: no time).
    pub fail: DurationStat,
    /// Time the answered requests waited for their batch.
    pub queue: DurationStat,
    /// Decoding inputs in the worker.
    pub compute_input: DurationStat,
    /// The model's `predict`.
    pub compute_infer: DurationStat,
    /// Encoding outputs in the worker.
    pub compute_output: DurationStat,
    /// Always zero: no response cache.
    pub cache_hit: DurationStat,
    /// Always zero: no response cache.
    pub cache_miss: DurationStat,
}

/// The executions of one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct BatchStatsEntry {
    /// Rows per batch.
    pub batch_size: usize,
    /// Decoding the batches' inputs (count: batches).
    pub compute_input: DurationStat,
    /// Running them.
    pub compute_infer: DurationStat,
    /// Encoding their outputs.
    pub compute_output: DurationStat,
}

impl From<&VersionMetrics> for ModelStats {
    fn from(m: &VersionMetrics) -> ModelStats {
        let compute = |us| DurationStat::of(m.compute_count, us);
        ModelStats {
            name: m.model.clone(),
            version: m.version.to_string(),
            last_inference: m.last_inference_ms,
            inference_count: m.inference_count,
            execution_count: m.execution_count,
            inference_stats: InferenceStats {
                success: DurationStat::of(m.request_success, m.request_duration_us),
                fail: DurationStat::of(m.request_failure.values().sum(), m.request_failure_duration_us),
                queue: DurationStat::of(m.request_success, m.queue_duration_us),
                compute_input: compute(m.compute_input_duration_us),
                compute_infer: compute(m.compute_infer_duration_us),
                compute_output: compute(m.compute_output_duration_us),
                cache_hit: DurationStat::default(),
                cache_miss: DurationStat::default(),
            },
            batch_stats: m
                .batch_stats
                .iter()
                .map(|b| BatchStatsEntry {
                    batch_size: b.batch_size,
                    compute_input: DurationStat::of(b.count, b.compute_input_us),
                    compute_infer: DurationStat::of(b.count, b.compute_infer_us),
                    compute_output: DurationStat::of(b.count, b.compute_output_us),
                })
                .collect(),
        }
    }
}

/// The statistics of `name` (every model when `None`), of `version` only
/// when given: 404 for a model or version the repository does not serve. A
/// served version that has not run yet has all its counts at zero.
fn stats(app: &App, name: Option<&str>, version: Option<u64>) -> Result<Json<StatsResponse>, ApiError> {
    if let Some(name) = name {
        model_at(app, name, version)?;
    }
    let snapshot = app.core().metrics();
    let mut model_stats: Vec<ModelStats> = snapshot
        .versions
        .iter()
        .filter(|m| name.is_none_or(|n| m.model == n) && version.is_none_or(|v| m.version == v))
        .map(ModelStats::from)
        .collect();
    if let (Some(name), Some(version), true) = (name, version, model_stats.is_empty()) {
        let never = VersionMetrics { model: name.to_string(), version, ..VersionMetrics::default() };
        model_stats.push(ModelStats::from(&never));
    }
    Ok(Json(StatsResponse { model_stats }))
}

/// `GET /v2/models/stats`.
pub(crate) async fn all_models(State(app): State<Arc<App>>) -> Result<Json<StatsResponse>, ApiError> {
    stats(&app, None, None)
}

/// `GET /v2/models/{name}/stats`.
pub(crate) async fn model(
    State(app): State<Arc<App>>,
    PathParams(name): PathParams<String>,
) -> Result<Json<StatsResponse>, ApiError> {
    stats(&app, Some(&name), None)
}

/// `GET /v2/models/{name}/versions/{version}/stats`.
pub(crate) async fn model_version(
    State(app): State<Arc<App>>,
    PathParams((name, version)): PathParams<(String, String)>,
) -> Result<Json<StatsResponse>, ApiError> {
    stats(&app, Some(&name), Some(parse_version(&version)?))
}
