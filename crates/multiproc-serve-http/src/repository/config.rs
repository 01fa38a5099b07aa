//! `<repo>/<model>/config.toml`: what a model takes and returns, and how it
//! is served. Every field is checked; an error names the file, the field
//! and what was expected.
//!
//! ```toml
//! platform = "onnx"            # or "command": an executable speaking multiproc-serve's protocol
//! max_batch_size = 32          # 0: the model has no batch dimension; n > 0: requests are batched
//! instances = 1                # worker processes per version
//! start = "eager"              # or "lazy": start workers on the first request
//! # command = ["python3", "model.py"]   # platform = "command": run in the version directory
//!
//! [[input]]
//! name = "input"
//! datatype = "FP32"
//! dims = [64]                  # without the batch dimension; -1 = variable
//!
//! [[output]]
//! name = "probabilities"
//! datatype = "FP32"
//! dims = [10]
//!
//! [batching]
//! max_queue_delay_us = 500
//! preferred_batch_sizes = [8, 16]
//! max_queue_size = 1024        # requests waiting; more are refused with 503
//! dispatch_when_idle = true
//!
//! [version_policy]
//! latest = 1                   # or: all = true, or: specific = [1, 3]
//!
//! [timeouts]
//! startup_ms = 60000
//! call_ms = 10000              # a worker past it is killed and restarted
//! request_ms = 30000           # a request waiting longer fails
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::protocol::{DataType, TensorMetadata};

/// A configuration file that cannot be used: which file, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// The field and what was expected.
    pub reason: String,
}

/// How a version is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platform {
    /// `<N>/model.onnx`, run by tract inside the worker process.
    Onnx,
    /// An executable (argv, run in `<N>/`) speaking multiproc-serve's
    /// stdin/stdout protocol.
    Command(Vec<String>),
}

/// An input or output: name, datatype and dimensions (-1 variable), not
/// counting the batch dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorConfig {
    /// The name.
    pub name: String,
    /// The datatype.
    pub datatype: DataType,
    /// The dimensions after the batch dimension; -1 = any size.
    pub dims: Vec<i64>,
}

/// Which versions are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionChoice {
    /// The highest `n`.
    Latest(usize),
    /// All of them.
    All,
    /// These.
    Specific(Vec<u64>),
}

/// A model's checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// How its versions run.
    pub platform: Platform,
    /// 0: no batch dimension; otherwise the most requests in one batch.
    pub max_batch_size: usize,
    /// Worker processes per version.
    pub instances: usize,
    /// Start workers on the first request instead of at load.
    pub lazy: bool,
    /// The inputs.
    pub inputs: Vec<TensorConfig>,
    /// The outputs.
    pub outputs: Vec<TensorConfig>,
    /// Longest wait for a fuller batch, in µs.
    pub max_queue_delay_us: u64,
    /// Batch sizes to prefer.
    pub preferred_batch_sizes: Vec<usize>,
    /// Requests that may wait; more are refused.
    pub max_queue_size: usize,
    /// Send a batch at once when a worker is idle.
    pub dispatch_when_idle: bool,
    /// Which versions are served.
    pub version_policy: VersionChoice,
    /// Longest load, in ms.
    pub startup_ms: u64,
    /// Longest model call, in ms.
    pub call_ms: Option<u64>,
    /// Longest wait of a request, in ms.
    pub request_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    platform: String,
    #[serde(default)]
    max_batch_size: usize,
    #[serde(default = "one")]
    instances: usize,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    input: Vec<RawTensor>,
    #[serde(default)]
    output: Vec<RawTensor>,
    #[serde(default)]
    batching: RawBatching,
    #[serde(default)]
    version_policy: RawPolicy,
    #[serde(default)]
    timeouts: RawTimeouts,
}

fn one() -> usize {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    name: String,
    datatype: String,
    dims: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatching {
    #[serde(default)]
    max_queue_delay_us: u64,
    #[serde(default)]
    preferred_batch_sizes: Vec<usize>,
    #[serde(default = "default_queue")]
    max_queue_size: usize,
    #[serde(default = "yes")]
    dispatch_when_idle: bool,
}

impl Default for RawBatching {
    fn default() -> Self {
        RawBatching {
            max_queue_delay_us: 0,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: default_queue(),
            dispatch_when_idle: true,
        }
    }
}

fn default_queue() -> usize {
    1024
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    latest: Option<usize>,
    all: Option<bool>,
    specific: Option<Vec<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    startup_ms: Option<u64>,
    call_ms: Option<u64>,
    request_ms: Option<u64>,
}

impl ModelConfig {
    /// Reads and checks `file`.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not TOML, or a field is missing, unknown
    /// or out of range.
    pub fn load(file: &Path) -> Result<ModelConfig, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError { file: file.to_path_buf(), reason: format!("cannot read: {e}") })?;
        ModelConfig::parse(&text).map_err(|reason| ConfigError { file: file.to_path_buf(), reason })
    }

    /// Parses and checks configuration text; the error names the field.
    ///
    /// ```
    /// use multiproc_serve_http::repository::ModelConfig;
    /// let err = ModelConfig::parse("platform = \"onnx\"\n[[input]]\nname = \"x\"\ndatatype = \"FP33\"\ndims = [2]\n").unwrap_err();
    /// assert!(err.starts_with("field `input[0].datatype`: \"FP33\" is not a datatype"), "{err}");
    /// ```
    ///
    /// # Errors
    ///
    /// What is wrong, naming the field and what was expected.
    pub fn parse(text: &str) -> Result<ModelConfig, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))?;
        let platform = match (raw.platform.as_str(), raw.command) {
            ("onnx", None) => Platform::Onnx,
            ("onnx", Some(_)) => return Err("field `command`: only for platform = \"command\"".into()),
            ("command", Some(argv)) if !argv.is_empty() => Platform::Command(argv),
            ("command", _) => {
                return Err("field `command`: platform \"command\" needs a non-empty argv list, e.g. [\"python3\", \"model.py\"]".into());
            }
            (other, _) => return Err(format!("field `platform`: {other:?}; expected \"onnx\" or \"command\"")),
        };
        let lazy = match raw.start.as_deref() {
            None | Some("eager") => false,
            Some("lazy") => true,
            Some(other) => return Err(format!("field `start`: {other:?}; expected \"eager\" or \"lazy\"")),
        };
        if raw.instances == 0 {
            return Err("field `instances`: 0; expected at least 1".into());
        }
        let inputs = tensors("input", raw.input)?;
        let outputs = tensors("output", raw.output)?;
        if inputs.is_empty() || outputs.is_empty() {
            return Err(
                "fields `input` and `output`: at least one [[input]] and one [[output]] table are needed".into()
            );
        }
        let b = raw.batching;
        let limit = raw.max_batch_size.max(1);
        if let Some(p) = b.preferred_batch_sizes.iter().find(|&&p| p == 0 || p > limit) {
            return Err(format!("field `batching.preferred_batch_sizes`: {p}; expected sizes within 1..={limit}"));
        }
        if b.max_queue_size == 0 {
            return Err("field `batching.max_queue_size`: 0; expected at least 1".into());
        }
        let p = raw.version_policy;
        let version_policy = match (p.latest, p.all, p.specific) {
            (None, None | Some(false), None) => VersionChoice::Latest(1),
            (Some(0), None, None) => return Err("field `version_policy.latest`: 0; expected at least 1".into()),
            (Some(n), None, None) => VersionChoice::Latest(n),
            (None, Some(true), None) => VersionChoice::All,
            (None, None, Some(list)) if !list.is_empty() => VersionChoice::Specific(list),
            _ => {
                return Err(
                    "table `version_policy`: expected exactly one of latest = N, all = true, specific = [versions]"
                        .into(),
                );
            }
        };
        let t = raw.timeouts;
        for (field, v) in [("startup_ms", t.startup_ms), ("call_ms", t.call_ms), ("request_ms", t.request_ms)] {
            if v == Some(0) {
                return Err(format!("field `timeouts.{field}`: 0; expected a positive number of milliseconds"));
            }
        }
        Ok(ModelConfig {
            platform,
            max_batch_size: raw.max_batch_size,
            instances: raw.instances,
            lazy,
            inputs,
            outputs,
            max_queue_delay_us: b.max_queue_delay_us,
            preferred_batch_sizes: b.preferred_batch_sizes,
            max_queue_size: b.max_queue_size,
            dispatch_when_idle: b.dispatch_when_idle,
            version_policy,
            startup_ms: t.startup_ms.unwrap_or(60_000),
            call_ms: t.call_ms,
            request_ms: t.request_ms,
        })
    }

    /// The metadata shape of a tensor: the batch dimension (-1) first when
    /// the model batches.
    pub fn metadata(&self, t: &TensorConfig) -> TensorMetadata {
        let mut shape = Vec::with_capacity(t.dims.len() + 1);
        if self.max_batch_size > 0 {
            shape.push(-1);
        }
        shape.extend_from_slice(&t.dims);
        TensorMetadata { name: t.name.clone(), datatype: t.datatype.as_str().to_string(), shape }
    }

    /// The platform name shown in model metadata.
    pub fn platform_name(&self) -> &'static str {
        match self.platform {
            Platform::Onnx => "onnxruntime_onnx",
            Platform::Command(_) => "multiproc_command",
        }
    }
}

fn tensors(kind: &str, raw: Vec<RawTensor>) -> Result<Vec<TensorConfig>, String> {
    let mut out: Vec<TensorConfig> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let field = format!("{kind}[{i}]");
        if t.name.is_empty() {
            return Err(format!("field `{field}.name`: empty; expected a name"));
        }
        if out.iter().any(|o| o.name == t.name) {
            return Err(format!("field `{field}.name`: {:?} is used twice", t.name));
        }
        let datatype: DataType = t.datatype.parse().map_err(|_| {
            format!(
                "field `{field}.datatype`: {:?} is not a datatype; expected one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES",
                t.datatype
            )
        })?;
        if let Some(d) = t.dims.iter().find(|&&d| d < -1) {
            return Err(format!("field `{field}.dims`: {d}; expected sizes >= 0, or -1 for a variable size"));
        }
        out.push(TensorConfig { name: t.name, datatype, dims: t.dims });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
platform = "onnx"
max_batch_size = 8
[[input]]
name = "x"
datatype = "FP32"
dims = [-1, 3]
[[output]]
name = "y"
datatype = "FP32"
dims = [3]
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = ModelConfig::parse(GOOD).unwrap();
        assert_eq!(c.version_policy, VersionChoice::Latest(1));
        assert_eq!(c.metadata(&c.inputs[0]).shape, [-1, -1, 3]);
    }

    #[test]
    fn errors_name_the_field() {
        let e = ModelConfig::parse(&GOOD.replace("max_batch_size = 8", "max_batch_size = \"8\"")).unwrap_err();
        assert!(e.contains("max_batch_size") && e.contains("expected"), "{e}");
        let e = ModelConfig::parse(&GOOD.replace("dims = [3]", "dims = [-3]")).unwrap_err();
        assert_eq!(e, "field `output[0].dims`: -3; expected sizes >= 0, or -1 for a variable size");
        let e = ModelConfig::parse(&format!("{GOOD}\nbogus = 1\n")).unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
    }
}
