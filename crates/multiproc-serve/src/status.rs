//! What `Server::status` reports: every model, version and worker, with
//! its state, restarts, queue depth and last failure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The state of one model version. Transitions live in one place
/// (`version.rs`), each logged once through `tracing`.
///
/// ```text
/// NotStarted ──first request / load──▶ Loading ──a worker ready──▶ Ready
///     Loading/Ready ──K crashes in the window──▶ CrashLooping ──a worker ready──▶ Ready
///     Loading ──startup timeout or load error (during a switch)──▶ Failed
///     Ready/CrashLooping ──unload / switched away──▶ Draining ──queue empty──▶ Stopped
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VersionState {
    /// Lazy start: no worker until the first request.
    NotStarted,
    /// Workers are starting; none is ready yet.
    Loading,
    /// At least one worker is loaded and ready.
    Ready,
    /// Not taking new requests; finishing the queued and running ones.
    Draining,
    /// Crashed K times within the window: requests fail fast, restarts back off.
    CrashLooping,
    /// Could not load (the reason is in `last_failure`); stopped.
    Failed,
    /// Stopped (unloaded).
    Stopped,
}

impl VersionState {
    /// Lowercase name, as in logs and the repository index.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::NotStarted => "not-started",
            VersionState::Loading => "loading",
            VersionState::Ready => "ready",
            VersionState::Draining => "draining",
            VersionState::CrashLooping => "crash-looping",
            VersionState::Failed => "failed",
            VersionState::Stopped => "stopped",
        }
    }
}

/// The state of one worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkerState {
    /// Spawned, loading the model.
    Starting,
    /// Loaded, waiting for a batch.
    Idle,
    /// Running a batch.
    Busy,
    /// Dead; waiting out the restart backoff.
    BackingOff,
    /// Not running (never started, or stopped).
    Stopped,
}

/// One worker process of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Instance number within the version.
    pub instance: usize,
    /// Pid of the current process, if one runs.
    pub pid: Option<i32>,
    /// Its state.
    pub state: WorkerState,
    /// How many times this instance was restarted.
    pub restarts: u64,
    /// Batches this instance has answered.
    pub batches: u64,
    /// While backing off: time left before the next start.
    pub backoff: Option<Duration>,
    /// Why its last process ended abnormally.
    pub last_failure: Option<String>,
}

/// One version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStatus {
    /// The version number.
    pub version: u64,
    /// Its state.
    pub state: VersionState,
    /// True when at least one worker is loaded and ready.
    pub ready: bool,
    /// Requests waiting for a batch.
    pub queue_depth: usize,
    /// Requests inside a worker now.
    pub in_flight: usize,
    /// Restarts of all its workers.
    pub restarts: u64,
    /// Crashes within the current crash window.
    pub recent_crashes: u32,
    /// The last failure (crash, load error, timeout), if any.
    pub last_failure: Option<String>,
    /// The worker processes.
    pub workers: Vec<WorkerStatus>,
}

/// What kind of endpoint a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointKind {
    /// A model with versions.
    Model,
    /// A pipeline: preprocessing processes → a model → optional postprocessing.
    Pipeline,
}

/// A pipeline's own stages (its model is listed as a model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// The model the pipeline feeds.
    pub model: String,
    /// Preprocessing processes.
    pub preprocess_processes: usize,
    /// Postprocessing processes (0 = none).
    pub postprocess_processes: usize,
    /// Requests inside the pipeline now (all stages).
    pub in_flight: usize,
    /// The most requests it holds; more are rejected at once.
    pub capacity: usize,
}

/// One model (or pipeline) and its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// The name requests use.
    pub name: String,
    /// Model or pipeline.
    pub kind: EndpointKind,
    /// True if the default version (or, for a pipeline, its model) is ready.
    pub ready: bool,
    /// The version a request without a version goes to, if any is ready.
    pub default_version: Option<u64>,
    /// True after `unload` (until `load`).
    pub unloaded: bool,
    /// Every version declared, ascending (empty for a pipeline).
    pub versions: Vec<VersionStatus>,
    /// For a pipeline: its stages.
    pub pipeline: Option<PipelineStatus>,
}

/// Everything the server runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// True when not shutting down and every eagerly started, loaded model is ready.
    pub ready: bool,
    /// Every model and pipeline, by name.
    pub models: Vec<ModelStatus>,
}

impl ServerStatus {
    /// The model called `name`.
    pub fn model(&self, name: &str) -> Option<&ModelStatus> {
        self.models.iter().find(|m| m.name == name)
    }
}

impl ModelStatus {
    /// The version `version`.
    pub fn version(&self, version: u64) -> Option<&VersionStatus> {
        self.versions.iter().find(|v| v.version == version)
    }
}
