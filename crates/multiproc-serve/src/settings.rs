//! What a deployment can tune per model: batching, instances, versions,
//! queues, timeouts and restarts. Checked by [`ModelSettings::validate`],
//! whose errors name the field.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which of a model's versions are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionPolicy {
    /// The `n` highest versions.
    Latest(usize),
    /// Every version.
    All,
    /// Exactly these versions.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions of `available` (ascending) this policy serves.
    ///
    /// ```
    /// use multiproc_serve::VersionPolicy;
    ///
    /// assert_eq!(VersionPolicy::Latest(2).select(&[1, 2, 3]), [2, 3]);
    /// assert_eq!(VersionPolicy::Specific(vec![1, 9]).select(&[1, 2, 3]), [1]);
    /// ```
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::Latest(n) => available[available.len().saturating_sub(*n)..].to_vec(),
            VersionPolicy::All => available.to_vec(),
            VersionPolicy::Specific(list) => available.iter().copied().filter(|v| list.contains(v)).collect(),
        }
    }
}

/// When a version's workers start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StartMode {
    /// When the model is added or loaded.
    #[default]
    Eager,
    /// On the first request for the version (seed 000's `PredictServer`).
    Lazy,
}

/// Restart backoff and the crash-loop limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Wait before the first restart after a crash.
    pub initial_backoff: Duration,
    /// Cap of the exponential backoff.
    pub max_backoff: Duration,
    /// This many crashes within `crash_window` make a version crash-looping.
    pub crash_loop_threshold: u32,
    /// The window for `crash_loop_threshold`.
    pub crash_window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(10),
            crash_loop_threshold: 3,
            crash_window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The wait before restart number `attempt` (0 = first): doubling from
    /// `initial_backoff`, capped at `max_backoff`.
    ///
    /// ```
    /// use multiproc_serve::RestartPolicy;
    /// use std::time::Duration;
    ///
    /// let p = RestartPolicy { initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_millis(350), ..Default::default() };
    /// assert_eq!(p.backoff(0), Duration::from_millis(100));
    /// assert_eq!(p.backoff(1), Duration::from_millis(200));
    /// assert_eq!(p.backoff(5), Duration::from_millis(350));
    /// ```
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// The most worker processes a version may have ([`ModelSettings::instances`]):
/// far more than a machine runs usefully, and a bound on what a typo in a
/// configuration can ask for.
pub const MAX_INSTANCES: usize = 1024;

/// Per-model settings (Triton's `config.pbtxt`, the parts that apply).
///
/// ```
/// use multiproc_serve::{MAX_INSTANCES, ModelSettings};
/// use std::time::Duration;
///
/// let s = ModelSettings { max_batch_size: 128, max_queue_delay: Duration::from_secs(1), ..Default::default() };
/// assert!(s.validate().is_ok());
/// for instances in [0, MAX_INSTANCES + 1] {
///     let bad = ModelSettings { instances, ..Default::default() };
///     assert_eq!(bad.validate().unwrap_err().field, "instances");
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelSettings {
    /// Largest batch sent to a worker, in rows (1 = no batching). A typed
    /// request is one row; a request with a batch dimension says how many
    /// it carries ([`Request::rows`](crate::Request::rows)), and a batch is
    /// cut before the next request would take it past this many rows.
    pub max_batch_size: usize,
    /// How long a partial batch waits for more requests (Triton's
    /// `max_queue_delay_microseconds`): an idle worker takes a batch that
    /// is neither full nor at a preferred size only once its oldest request
    /// has waited this long (or the version drains). Zero (the default):
    /// an idle worker takes what is queued at once, so a lone request never
    /// waits for company.
    pub max_queue_delay: Duration,
    /// Batch sizes the model prefers, in rows: a partial batch leaves at
    /// once, without waiting for `max_queue_delay`, cut at the most requests
    /// whose rows add up to a preferred size.
    pub preferred_batch_sizes: Vec<usize>,
    /// Worker processes per version (1 to [`MAX_INSTANCES`]).
    pub instances: usize,
    /// Which versions are served.
    pub version_policy: VersionPolicy,
    /// Requests a version's queue holds; more are rejected at once (503).
    pub queue_capacity: usize,
    /// Time a worker has to load the model and say it is ready.
    pub startup_timeout: Duration,
    /// Time a worker has for one batch; past it the worker is killed.
    pub call_timeout: Option<Duration>,
    /// Default deadline of a request (queue wait + run), unless the request sets one.
    pub request_timeout: Option<Duration>,
    /// Eager or lazy start.
    pub start: StartMode,
    /// Restart backoff and crash-loop limit.
    pub restart: RestartPolicy,
    /// Time a draining version has to finish its queued and running requests.
    pub drain_timeout: Duration,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            max_batch_size: 1,
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: Vec::new(),
            instances: 1,
            version_policy: VersionPolicy::default(),
            queue_capacity: 1024,
            startup_timeout: Duration::from_secs(60),
            call_timeout: None,
            request_timeout: None,
            start: StartMode::Eager,
            restart: RestartPolicy::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A setting out of range: names the field and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting `{field}`: {reason}")]
pub struct SettingsError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl ModelSettings {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let err = |field, reason: &str| Err(SettingsError { field, reason: reason.to_string() });
        if self.max_batch_size == 0 {
            return err("max_batch_size", "must be at least 1");
        }
        if self.instances == 0 {
            return err("instances", "must be at least 1");
        }
        if self.instances > MAX_INSTANCES {
            return Err(SettingsError {
                field: "instances",
                reason: format!("{} is over the limit of {MAX_INSTANCES} worker processes per version", self.instances),
            });
        }
        if self.queue_capacity == 0 {
            return err("queue_capacity", "must be at least 1");
        }
        if let Some(p) = self.preferred_batch_sizes.iter().find(|p| **p == 0 || **p > self.max_batch_size) {
            return Err(SettingsError {
                field: "preferred_batch_sizes",
                reason: format!("{p} is not within 1..={}", self.max_batch_size),
            });
        }
        if matches!(self.version_policy, VersionPolicy::Latest(0)) {
            return err("version_policy", "latest must serve at least one version");
        }
        if self.startup_timeout.is_zero() {
            return err("startup_timeout", "must be positive");
        }
        if self.call_timeout.is_some_and(|t| t.is_zero()) {
            return err("call_timeout", "must be positive");
        }
        if self.request_timeout.is_some_and(|t| t.is_zero()) {
            return err("request_timeout", "must be positive (None: no deadline)");
        }
        if self.restart.crash_loop_threshold == 0 {
            return err("restart.crash_loop_threshold", "must be at least 1");
        }
        if self.restart.initial_backoff > self.restart.max_backoff {
            return err("restart.initial_backoff", "is larger than restart.max_backoff");
        }
        Ok(())
    }
}
