//! Triton's model configuration extension: `GET
//! /v2/models/{name}[/versions/{v}]/config` gives a model's `config.toml`
//! as the JSON form of Triton's `ModelConfig`, so that clients that read a
//! model's batch size, dims and batching from Triton (`get_model_config`
//! in Triton's clients) read them from this server unchanged.
//!
//! The fields are Triton's names for what `config.toml` says: `dims` leave
//! out the batch dimension when `max_batch_size` is above 0, as in
//! `config.toml`; datatypes are Triton's `TYPE_*` (BYTES is
//! `TYPE_STRING`); the worker processes of a version are one CPU
//! `instance_group`; `dynamic_batching` is there only for a batching model.
//! What has no Triton field (timeouts, restart backoff, the command of a
//! command model) is left out.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::app::{App, PathParams, model_at, parse_version};
use crate::error::ApiError;
use crate::repository::{ModelConfig, Platform, TensorConfig, VersionChoice};

/// Triton's name of a datatype (`TYPE_FP32`, …; BYTES is `TYPE_STRING`).
fn triton_type(t: &TensorConfig) -> String {
    match t.datatype.as_str() {
        "BYTES" => "TYPE_STRING".to_string(),
        other => format!("TYPE_{other}"),
    }
}

/// The JSON of Triton's `ModelConfig` for the model `name` configured by `c`.
pub fn triton_config(name: &str, c: &ModelConfig) -> Value {
    let input = c
        .inputs
        .iter()
        .map(|t| {
            json!({"name": t.name, "data_type": triton_type(t), "format": "FORMAT_NONE", "dims": t.dims,
                "is_shape_tensor": false, "allow_ragged_batch": false, "optional": false})
        })
        .collect::<Vec<_>>();
    let output = c
        .outputs
        .iter()
        .map(|t| {
            let label_filename = t.labels.as_ref().map_or("", |l| l.file.as_str());
            json!({"name": t.name, "data_type": triton_type(t), "dims": t.dims, "label_filename": label_filename,
                "is_shape_tensor": false})
        })
        .collect::<Vec<_>>();
    let version_policy = match &c.version_policy {
        VersionChoice::Latest(n) => json!({"latest": {"num_versions": n}}),
        VersionChoice::All => json!({"all": {}}),
        VersionChoice::Specific(versions) => json!({"specific": {"versions": versions}}),
    };
    let (backend, default_model_filename) = match c.platform {
        Platform::Onnx => ("onnxruntime", "model.onnx"),
        Platform::Command(_) => ("multiproc_command", ""),
    };
    let mut config = json!({
        "name": name,
        "platform": c.platform_name(),
        "backend": backend,
        "version_policy": version_policy,
        "max_batch_size": c.max_batch_size,
        "input": input,
        "output": output,
        "instance_group": [{"name": format!("{name}_0"), "kind": "KIND_CPU", "count": c.instances}],
        "default_model_filename": default_model_filename,
    });
    if c.max_batch_size > 0 {
        config["dynamic_batching"] = json!({
            "preferred_batch_size": c.preferred_batch_sizes,
            "max_queue_delay_microseconds": c.max_queue_delay_us,
            "default_queue_policy": {"max_queue_size": c.max_queue_size},
        });
    }
    config
}

fn config(app: &App, name: &str, version: Option<u64>) -> Result<Json<Value>, ApiError> {
    let (config, _) = model_at(app, name, version)?;
    Ok(Json(triton_config(name, &config)))
}

/// `GET /v2/models/{name}/config`.
pub(crate) async fn model(
    State(app): State<Arc<App>>,
    PathParams(name): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    config(&app, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}/config`: the model's
/// configuration (one for all its versions), 404 for a version not served.
pub(crate) async fn model_version(
    State(app): State<Arc<App>>,
    PathParams((name, version)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    config(&app, &name, Some(parse_version(&version)?))
}
