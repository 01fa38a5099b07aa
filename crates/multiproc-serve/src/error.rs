//! The one error type of the server, with kinds that map to HTTP statuses.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The kind of a [`ServeError`], for metrics labels and HTTP statuses.
///
/// ```
/// use multiproc_serve::ErrorKind;
///
/// assert_eq!(ErrorKind::UnknownModel.http_status(), 404);
/// assert_eq!(ErrorKind::Overloaded.http_status(), 503);
/// assert_eq!(ErrorKind::WorkerLost.as_str(), "worker_lost");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No model of that name (404).
    UnknownModel,
    /// The model has no such version (404).
    UnknownVersion,
    /// The input is malformed or of the wrong type (400).
    BadInput,
    /// The model or version is not loaded, or failed to load (503).
    NotReady,
    /// The queue is full; retry later (503, `Retry-After`).
    Overloaded,
    /// The version crashes again and again; requests fail fast (503).
    CrashLooping,
    /// The server is shutting down (503).
    ShuttingDown,
    /// The model returned an error or panicked for this input (500).
    ModelFailed,
    /// The worker process died while it held the request (500).
    WorkerLost,
    /// The worker took longer than the call timeout and was killed (500).
    CallTimeout,
    /// The request's deadline passed before it was answered (504).
    DeadlineExceeded,
    /// The request was cancelled by its caller (499, as nginx).
    Cancelled,
    /// Something else went wrong in the server (500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status for this kind: 400, 404, 499, 500, 503 or 504.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::UnknownModel | ErrorKind::UnknownVersion => 404,
            ErrorKind::BadInput => 400,
            ErrorKind::NotReady | ErrorKind::Overloaded | ErrorKind::CrashLooping | ErrorKind::ShuttingDown => 503,
            ErrorKind::ModelFailed | ErrorKind::WorkerLost | ErrorKind::CallTimeout | ErrorKind::Internal => 500,
            ErrorKind::DeadlineExceeded => 504,
            ErrorKind::Cancelled => 499,
        }
    }

    /// A short label (`"worker_lost"`), used as the `reason` of failure metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnknownModel => "unknown_model",
            ErrorKind::UnknownVersion => "unknown_version",
            ErrorKind::BadInput => "bad_input",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::CrashLooping => "crash_looping",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::ModelFailed => "model_failed",
            ErrorKind::WorkerLost => "worker_lost",
            ErrorKind::CallTimeout => "call_timeout",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
        }
    }
}

/// What went wrong with a request or a management call.
///
/// Messages name the model and version (or the pipeline and its stage)
/// and say what to do.
///
/// ```
/// use multiproc_serve::{ErrorKind, ServeError};
///
/// let e = ServeError::WorkerLost { model: "m".into(), version: 2, pid: 41, status: "killed by signal 9".into() };
/// assert_eq!(e.kind(), ErrorKind::WorkerLost);
/// assert_eq!(e.http_status(), 500);
/// assert!(e.to_string().contains("'m' version 2"));
///
/// // A pipeline's errors name the pipeline and the stage; their kinds (and
/// // so their HTTP statuses) are those of the model's errors.
/// let e = ServeError::PipelineOverloaded { pipeline: "p".into(), capacity: 8 };
/// assert_eq!(e.kind(), ErrorKind::Overloaded);
/// assert_eq!(e.http_status(), 503);
/// assert!(e.retry_after().is_some());
/// let e = ServeError::PipelineFailed { pipeline: "p".into(), stage: "preprocessing", message: "bad".into() };
/// assert_eq!(e.to_string(), "pipeline 'p': preprocessing failed: bad");
/// assert_eq!(e.http_status(), 500);
/// let e = ServeError::PipelineCancelled { pipeline: "p".into() };
/// assert_eq!((e.kind(), e.http_status()), (ErrorKind::Cancelled, 499));
/// assert_eq!(e.to_string(), "pipeline 'p': the request was cancelled by its caller");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// No model of that name is registered.
    #[error("unknown model '{model}': register it first (status() lists the models)")]
    UnknownModel {
        /// The name asked for.
        model: String,
    },
    /// The model has no such version.
    #[error("model '{model}' has no version {version}")]
    UnknownVersion {
        /// The model.
        model: String,
        /// The version asked for.
        version: u64,
    },
    /// The input is malformed or of the wrong type.
    #[error("bad input for model '{model}': {reason}")]
    BadInput {
        /// The model.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// Not loaded, still loading past the request's patience, or failed to load.
    #[error("model '{model}'{} is not ready: {reason}", version_suffix(*.version))]
    NotReady {
        /// The model.
        model: String,
        /// The version, if one was resolved.
        version: Option<u64>,
        /// Why.
        reason: String,
    },
    /// The queue is full.
    #[error("model '{model}' version {version} is overloaded: its queue holds {capacity} requests; retry later")]
    Overloaded {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The version crashes again and again.
    #[error(
        "model '{model}' version {version} is crash-looping ({crashes} crashes); last failure: {last_failure}; next restart in {retry_in:?}"
    )]
    CrashLooping {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// Crashes within the window.
        crashes: u32,
        /// The last failure's reason.
        last_failure: String,
        /// Time until the next restart attempt.
        retry_in: Duration,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The model returned an error (or panicked) for this input.
    #[error("model '{model}' version {version} failed: {message}")]
    ModelFailed {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// The model's message.
        message: String,
    },
    /// The worker process died while it held this request.
    #[error("model '{model}' version {version}: worker process {pid} died ({status}) while running this request")]
    WorkerLost {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// Pid of the dead worker.
        pid: i32,
        /// How it ended ("killed by signal 9", "exit code 3"…).
        status: String,
    },
    /// The worker exceeded the call timeout and was killed.
    #[error("model '{model}' version {version}: worker {pid} exceeded the call timeout of {timeout:?} and was killed")]
    CallTimeout {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// Pid of the killed worker.
        pid: i32,
        /// The call timeout.
        timeout: Duration,
    },
    /// The request's deadline passed.
    #[error("model '{model}': the request's deadline passed after {waited:?} ({stage})")]
    DeadlineExceeded {
        /// The model.
        model: String,
        /// How long the request waited.
        waited: Duration,
        /// Where it was: "queued" (still in the model's or the pipeline's
        /// queue: it never reached a worker) or "waiting" (the deadline
        /// passed, or the caller's own `wait_timeout`/`infer` timeout ran
        /// out, while its answer was awaited; it may have been in a worker).
        stage: &'static str,
    },
    /// The caller gave up (dropped the future).
    #[error("model '{model}': the request was cancelled by its caller")]
    Cancelled {
        /// The model.
        model: String,
    },
    /// A stage of a pipeline failed for this request (a model's failure
    /// inside a pipeline is [`ServeError::ModelFailed`], naming the model).
    #[error("pipeline '{pipeline}': {stage} failed: {message}")]
    PipelineFailed {
        /// The pipeline.
        pipeline: String,
        /// The stage: "preprocessing", "postprocessing", "decoding the
        /// model's output" or "encoding the postprocessing output".
        stage: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A process of a pipeline's stage died while it held this request.
    #[error(
        "pipeline '{pipeline}': {stage} process {pid} died while running this request ({status}); the pipeline replaces it, so a retry may succeed"
    )]
    PipelineWorkerLost {
        /// The pipeline.
        pipeline: String,
        /// The stage whose process died: "preprocessing".
        stage: &'static str,
        /// Pid of the dead process.
        pid: i32,
        /// How it ended.
        status: String,
    },
    /// The pipeline holds as many requests as it may.
    #[error("pipeline '{pipeline}' is overloaded: it holds {capacity} requests in its stages; retry later")]
    PipelineOverloaded {
        /// The pipeline.
        pipeline: String,
        /// How many requests it may hold.
        capacity: usize,
    },
    /// A request for a pipeline is malformed: the wrong types, or a version asked for.
    #[error("bad input for pipeline '{pipeline}': {reason}")]
    PipelineBadInput {
        /// The pipeline.
        pipeline: String,
        /// What is wrong.
        reason: String,
    },
    /// The deadline of a request sent to a pipeline passed (once it left
    /// the pipeline for its model's queue and was dropped there, the error
    /// is [`ServeError::DeadlineExceeded`], naming the model).
    #[error("pipeline '{pipeline}': the request's deadline passed after {waited:?} ({stage})")]
    PipelineDeadlineExceeded {
        /// The pipeline.
        pipeline: String,
        /// How long the request waited.
        waited: Duration,
        /// Where it was: "queued" (in the pipeline's queue: it was never
        /// preprocessed) or "waiting" (as for [`ServeError::DeadlineExceeded`]).
        stage: &'static str,
    },
    /// The caller of a request sent to a pipeline gave up (dropped the future).
    #[error("pipeline '{pipeline}': the request was cancelled by its caller")]
    PipelineCancelled {
        /// The pipeline.
        pipeline: String,
    },
    /// A management call or the server itself failed.
    #[error("{0}")]
    Internal(String),
}

fn version_suffix(version: Option<u64>) -> String {
    version.map(|v| format!(" version {v}")).unwrap_or_default()
}

impl ServeError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServeError::UnknownModel { .. } => ErrorKind::UnknownModel,
            ServeError::UnknownVersion { .. } => ErrorKind::UnknownVersion,
            ServeError::BadInput { .. } | ServeError::PipelineBadInput { .. } => ErrorKind::BadInput,
            ServeError::NotReady { .. } => ErrorKind::NotReady,
            ServeError::Overloaded { .. } | ServeError::PipelineOverloaded { .. } => ErrorKind::Overloaded,
            ServeError::CrashLooping { .. } => ErrorKind::CrashLooping,
            ServeError::ShuttingDown => ErrorKind::ShuttingDown,
            ServeError::ModelFailed { .. } | ServeError::PipelineFailed { .. } => ErrorKind::ModelFailed,
            ServeError::WorkerLost { .. } | ServeError::PipelineWorkerLost { .. } => ErrorKind::WorkerLost,
            ServeError::CallTimeout { .. } => ErrorKind::CallTimeout,
            ServeError::DeadlineExceeded { .. } | ServeError::PipelineDeadlineExceeded { .. } => {
                ErrorKind::DeadlineExceeded
            }
            ServeError::Cancelled { .. } | ServeError::PipelineCancelled { .. } => ErrorKind::Cancelled,
            ServeError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status for this error (see [`ErrorKind::http_status`]).
    pub fn http_status(&self) -> u16 {
        self.kind().http_status()
    }

    /// For 503 answers: how long the client should wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ServeError::Overloaded { .. } | ServeError::PipelineOverloaded { .. } => Some(Duration::from_secs(1)),
            ServeError::CrashLooping { retry_in, .. } => Some((*retry_in).max(Duration::from_secs(1))),
            ServeError::NotReady { .. } | ServeError::ShuttingDown => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}
