//! `<repo>/<model>/config.toml`: what a model takes and returns, and how it
//! is served. Every field is checked; an error names the file, the field
//! and what was expected.
//!
//! ```toml
//! platform = "onnx"            # or "command": an executable speaking multiproc-serve's protocol
//! max_batch_size = 32          # 0: no batch dimension; n > 0: requests are batched, n rows per model call at most
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
//! labels = "labels.txt"        # optional, a file beside config.toml: the name of class i on line i + 1,
//!                              # added to the answers of Triton's classification extension
//!
//! [batching]
//! max_queue_delay_us = 500     # a partial batch waits up to this long for more rows; 0: an idle worker takes it at once
//! preferred_batch_sizes = [8, 16]   # in rows: a batch that reaches one leaves without waiting
//! max_queue_size = 1024        # requests waiting; more are refused with 503
//!
//! [version_policy]
//! latest = 1                   # or: all = true, or: specific = [1, 3]
//!
//! [timeouts]
//! startup_ms = 60000
//! call_ms = 10000              # a worker past it is killed and restarted
//! request_ms = 30000           # a request waiting longer fails
//! drain_ms = 30000             # an unloaded version's time to finish what it holds
//!
//! [restart]                    # after a worker crash
//! initial_backoff_ms = 50      # the first restart waits this long, each next one twice as long...
//! max_backoff_ms = 10000       # ...up to this
//! crash_loop_threshold = 3     # this many crashes within crash_window_ms: the version is
//! crash_window_ms = 60000      # crash-looping and fails its requests at once
//! ```
//!
//! `batching.dispatch_when_idle` (Triton-style, optional) only restates
//! what `max_queue_delay_us` says: `true` (an idle worker takes a partial
//! batch at once) needs a delay of 0, `false` a delay above 0; a pair that
//! contradicts itself is refused, naming the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use multiproc_serve::{MAX_INSTANCES, RestartPolicy};
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
    /// An output's class names (see [`Labels`]).
    pub labels: Option<Labels>,
}

/// The class names of an output, from a file beside `config.toml` (Triton's
/// `label_filename`): line `i + 1` names class `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// The file's name, in the model's directory.
    pub file: String,
    /// The names, one per line of the file (empty until
    /// [`ModelConfig::load`] reads it; [`ModelConfig::parse`] does not).
    pub names: Vec<String>,
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
    /// 0: no batch dimension; otherwise the most rows (the batch dimension
    /// of the inputs, summed over a batch's requests) in one model call.
    pub max_batch_size: usize,
    /// Worker processes per version.
    pub instances: usize,
    /// Start workers on the first request instead of at load.
    pub lazy: bool,
    /// The inputs.
    pub inputs: Vec<TensorConfig>,
    /// The outputs.
    pub outputs: Vec<TensorConfig>,
    /// Longest wait of a partial batch for more rows, in µs (0: none).
    pub max_queue_delay_us: u64,
    /// Batch sizes to prefer, in rows.
    pub preferred_batch_sizes: Vec<usize>,
    /// Requests that may wait; more are refused.
    pub max_queue_size: usize,
    /// Which versions are served.
    pub version_policy: VersionChoice,
    /// Longest load, in ms.
    pub startup_ms: u64,
    /// Longest model call, in ms.
    pub call_ms: Option<u64>,
    /// Longest wait of a request, in ms.
    pub request_ms: Option<u64>,
    /// Time an unloaded version has to finish its requests, in ms.
    pub drain_ms: u64,
    /// Restart backoff and crash-loop limit.
    pub restart: RestartPolicy,
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
    #[serde(default)]
    restart: RawRestart,
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
    #[serde(default)]
    labels: Option<String>,
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
    #[serde(default)]
    dispatch_when_idle: Option<bool>,
}

impl Default for RawBatching {
    fn default() -> Self {
        RawBatching {
            max_queue_delay_us: 0,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: default_queue(),
            dispatch_when_idle: None,
        }
    }
}

fn default_queue() -> usize {
    1024
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
    drain_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    crash_loop_threshold: Option<u32>,
    crash_window_ms: Option<u64>,
}

impl RawRestart {
    /// The checked policy; unset fields keep [`RestartPolicy::default`].
    fn policy(self) -> Result<RestartPolicy, String> {
        let d = RestartPolicy::default();
        let ms = |v: Option<u64>, default| v.map_or(default, Duration::from_millis);
        let policy = RestartPolicy {
            initial_backoff: ms(self.initial_backoff_ms, d.initial_backoff),
            max_backoff: ms(self.max_backoff_ms, d.max_backoff),
            crash_loop_threshold: self.crash_loop_threshold.unwrap_or(d.crash_loop_threshold),
            crash_window: ms(self.crash_window_ms, d.crash_window),
        };
        if policy.crash_loop_threshold == 0 {
            return Err("field `restart.crash_loop_threshold`: 0; expected at least 1 crash".into());
        }
        if policy.crash_window.is_zero() {
            return Err("field `restart.crash_window_ms`: 0; expected a positive number of milliseconds".into());
        }
        if policy.initial_backoff > policy.max_backoff {
            return Err(format!(
                "field `restart.initial_backoff_ms`: {} is over restart.max_backoff_ms ({}); expected at most that",
                policy.initial_backoff.as_millis(),
                policy.max_backoff.as_millis()
            ));
        }
        Ok(policy)
    }
}

impl ModelConfig {
    /// Reads and checks `file`.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not TOML, or a field is missing, unknown
    /// or out of range.
    pub fn load(file: &Path) -> Result<ModelConfig, ConfigError> {
        let error = |reason| ConfigError { file: file.to_path_buf(), reason };
        let text = std::fs::read_to_string(file).map_err(|e| error(format!("cannot read: {e}")))?;
        let mut config = ModelConfig::parse(&text).map_err(error)?;
        let dir = file.parent().unwrap_or(Path::new("."));
        for (i, output) in config.outputs.iter_mut().enumerate() {
            let Some(labels) = &mut output.labels else { continue };
            let path = dir.join(&labels.file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| error(format!("field `output[{i}].labels`: cannot read {}: {e}", path.display())))?;
            labels.names = text.lines().map(str::to_string).collect();
        }
        Ok(config)
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
        if raw.instances == 0 || raw.instances > MAX_INSTANCES {
            return Err(format!("field `instances`: {}; expected 1 to {MAX_INSTANCES}", raw.instances));
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
        match (b.dispatch_when_idle, b.max_queue_delay_us) {
            (Some(true), delay) if delay > 0 => {
                return Err(format!(
                    "field `batching.dispatch_when_idle`: true, but max_queue_delay_us = {delay} holds a partial batch \
                     that long for more rows; expected one of them: max_queue_delay_us = 0 to send it to an idle \
                     worker at once, or no dispatch_when_idle to honour the delay"
                ));
            }
            (Some(false), 0) => {
                return Err("field `batching.dispatch_when_idle`: false, but max_queue_delay_us = 0 sends a partial \
                     batch to an idle worker at once; expected max_queue_delay_us > 0, how long a partial batch \
                     waits for more rows"
                    .into());
            }
            _ => {}
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
        let timeouts = [
            ("startup_ms", t.startup_ms),
            ("call_ms", t.call_ms),
            ("request_ms", t.request_ms),
            ("drain_ms", t.drain_ms),
        ];
        for (field, v) in timeouts {
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
            version_policy,
            startup_ms: t.startup_ms.unwrap_or(60_000),
            call_ms: t.call_ms,
            request_ms: t.request_ms,
            drain_ms: t.drain_ms.unwrap_or(30_000),
            restart: raw.restart.policy()?,
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
        let labels = match t.labels {
            None => None,
            Some(_) if kind == "input" => return Err(format!("field `{field}.labels`: only an output has labels")),
            Some(_) if !datatype.is_numeric() => {
                return Err(format!("field `{field}.labels`: a {datatype} output has no classes to name"));
            }
            Some(file) if file.is_empty() || file.starts_with('.') || file.contains(['/', '\\']) => {
                return Err(format!(
                    "field `{field}.labels`: {file:?}; expected the name of a file beside config.toml"
                ));
            }
            Some(file) => Some(Labels { file, names: Vec::new() }),
        };
        out.push(TensorConfig { name: t.name, datatype, dims: t.dims, labels });
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
        for n in [0u64, 1025, i64::MAX as u64] {
            let e = ModelConfig::parse(&format!("instances = {n}\n{GOOD}")).unwrap_err();
            assert_eq!(e, format!("field `instances`: {n}; expected 1 to 1024"));
        }
        assert!(ModelConfig::parse(&format!("instances = 1024\n{GOOD}")).is_ok());
    }

    #[test]
    fn dispatch_when_idle_must_agree_with_the_delay() {
        let with = |batching: &str| ModelConfig::parse(&format!("{GOOD}[batching]\n{batching}\n"));
        let e = with("max_queue_delay_us = 500\ndispatch_when_idle = true").unwrap_err();
        assert!(e.starts_with("field `batching.dispatch_when_idle`: true, but max_queue_delay_us = 500"), "{e}");
        let e = with("dispatch_when_idle = false").unwrap_err();
        assert!(e.starts_with("field `batching.dispatch_when_idle`: false, but max_queue_delay_us = 0"), "{e}");
        for agreeing in [
            "max_queue_delay_us = 500",
            "max_queue_delay_us = 500\ndispatch_when_idle = false",
            "dispatch_when_idle = true",
        ] {
            assert!(with(agreeing).is_ok(), "{agreeing}");
        }
        let delayed = crate::repository::settings(&with("max_queue_delay_us = 500").unwrap());
        assert_eq!(delayed.max_queue_delay, Duration::from_micros(500));
    }

    #[test]
    fn restart_and_drain_are_set_and_checked() {
        let c = ModelConfig::parse(GOOD).unwrap();
        assert_eq!((c.restart.clone(), c.drain_ms), (RestartPolicy::default(), 30_000));
        let text = format!(
            "{GOOD}[timeouts]\ndrain_ms = 1500\n[restart]\ninitial_backoff_ms = 10\nmax_backoff_ms = 400\n\
             crash_loop_threshold = 5\ncrash_window_ms = 2000\n"
        );
        let s = crate::repository::settings(&ModelConfig::parse(&text).unwrap());
        assert_eq!(s.drain_timeout, Duration::from_millis(1500));
        let expected = RestartPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(400),
            crash_loop_threshold: 5,
            crash_window: Duration::from_secs(2),
        };
        assert_eq!(s.restart, expected);
        assert!(s.validate().is_ok());
        let bad = |table: &str| ModelConfig::parse(&format!("{GOOD}{table}\n")).unwrap_err();
        let e = bad("[restart]\ninitial_backoff_ms = 500\nmax_backoff_ms = 100");
        assert_eq!(
            e,
            "field `restart.initial_backoff_ms`: 500 is over restart.max_backoff_ms (100); expected at most that"
        );
        assert!(bad("[restart]\ncrash_loop_threshold = 0").starts_with("field `restart.crash_loop_threshold`: 0"));
        assert!(bad("[restart]\ncrash_window_ms = 0").starts_with("field `restart.crash_window_ms`: 0"));
        assert!(bad("[timeouts]\ndrain_ms = 0").starts_with("field `timeouts.drain_ms`: 0"));
        assert!(bad("[restart]\nbackoff_ms = 5").contains("unknown field `backoff_ms`"));
    }

    #[test]
    fn an_outputs_labels_are_read_from_beside_the_config_and_checked() {
        let labelled = GOOD.replace("dims = [3]", "dims = [3]\nlabels = \"classes.txt\"");
        // Removed however the test ends.
        struct Scratch(std::path::PathBuf);
        impl Drop for Scratch {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let scratch = Scratch(std::env::temp_dir().join(format!("multiproc-labels-{}", std::process::id())));
        let dir = &scratch.0;
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(&file, &labelled).unwrap();
        let missing = ModelConfig::load(&file).unwrap_err();
        assert!(missing.reason.starts_with("field `output[0].labels`: cannot read"), "{missing}");
        std::fs::write(dir.join("classes.txt"), "cat\ndog\r\nbird\n").unwrap();
        let labels = ModelConfig::load(&file).unwrap().outputs[0].labels.clone().unwrap();
        assert_eq!(
            (labels.file.as_str(), &labels.names[..]),
            ("classes.txt", &["cat", "dog", "bird"].map(String::from)[..])
        );
        let bad = |from: &str, to: &str| ModelConfig::parse(&GOOD.replace(from, to)).unwrap_err();
        assert!(bad("dims = [-1, 3]", "dims = [-1, 3]\nlabels = \"l.txt\"").contains("only an output has labels"));
        let e = ModelConfig::parse(&labelled.replace("\"FP32\"\ndims = [3]", "\"BYTES\"\ndims = [3]")).unwrap_err();
        assert!(e.contains("a BYTES output has no classes to name"), "{e}");
        for path in ["../up.txt", "sub/l.txt", ".hidden", ""] {
            let e = bad("dims = [3]", &format!("dims = [3]\nlabels = {path:?}"));
            assert!(e.contains("expected the name of a file beside config.toml"), "{path}: {e}");
        }
    }
}
