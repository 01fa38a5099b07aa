//! The model trait and the description of a model to serve.
//!
//! A model type is made known to its worker processes by a generic worker
//! entry, `worker::worker_main::<M>`, shipped to the child like any multiproc
//! task (a plain `fn`, same binary): the child builds `M` with
//! [`Model::load`] from the version's configuration, then answers batches.

use std::any::{TypeId, type_name};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use multiproc::{Process, ProcessBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ServeError;
use crate::pipeline_spec::PipelineItem;
use crate::settings::ModelSettings;
use crate::worker::{WorkerEnds, worker_main};

/// Where a worker runs: its model, version and instance number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerContext {
    /// The model's name.
    pub model: String,
    /// The version this worker serves.
    pub version: u64,
    /// The instance number within the version (0-based).
    pub instance: usize,
}

/// A model: built once inside its worker process, then called with batches.
///
/// ```
/// use multiproc_serve::{LoadError, Model, WorkerContext};
///
/// struct Doubler { factor: f64 }
///
/// impl Model for Doubler {
///     type Config = f64;
///     type Input = f64;
///     type Output = f64;
///     fn load(factor: f64, _: &WorkerContext) -> Result<Self, LoadError> {
///         Ok(Doubler { factor })
///     }
///     fn predict(&mut self, batch: Vec<f64>) -> Vec<Result<f64, String>> {
///         batch.into_iter().map(|x| Ok(x * self.factor)).collect()
///     }
/// }
/// # let mut m = Doubler::load(2.0, &WorkerContext { model: "d".into(), version: 1, instance: 0 }).unwrap();
/// # assert_eq!(m.predict(vec![1.5]), [Ok(3.0)]);
/// ```
pub trait Model: Sized + 'static {
    /// What a version needs to load (a path, weights, a command line…);
    /// known at run time, sent to the worker.
    type Config: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// One request's input.
    type Input: PipelineItem;
    /// One request's output.
    type Output: PipelineItem;

    /// Loads the model; runs once, in the worker process.
    ///
    /// A failure says whether it is for good: a [`LoadError::permanent`] (a
    /// configuration that does not match the model file, a format it cannot
    /// read) is not retried: the version ends `Failed` with the reason at
    /// once, its queued requests and the load waiting for it fail saying
    /// why, and it stays so until it is loaded again
    /// ([`Server::load`](crate::Server::load),
    /// [`Server::load_version`](crate::Server::load_version)…). Any other
    /// failure ([`LoadError::retry`], which a `String` or `&str` converts
    /// to, so `?` on a `Result<_, String>` and `Err("…".into())` both
    /// work) restarts the worker with backoff, as a crash does.
    ///
    /// # Errors
    ///
    /// Why the model cannot load, and whether trying again may help.
    fn load(config: Self::Config, context: &WorkerContext) -> Result<Self, LoadError>;

    /// Runs one batch: one result per input, in order.
    fn predict(&mut self, batch: Vec<Self::Input>) -> Vec<Result<Self::Output, String>>;

    /// Whether the model can still answer, asked once its worker is ready,
    /// then while it waits for a batch, as often as the answer says:
    /// `Ok(Some(d))` asks again after `d` without a batch; `Ok(None)` never
    /// again, so the idle worker sleeps until a batch comes (or its server
    /// is gone). `Err(why)` ends the worker process, which the server
    /// restarts (logging `why`) before a request reaches it. For a model that
    /// needs something outside its process that can fail while idle, such
    /// as an external command. The default: `Ok(None)`, a model in its own
    /// process is alive as long as the process is.
    ///
    /// # Errors
    ///
    /// Why the model can no longer answer.
    fn check_alive(&mut self) -> Result<Option<Duration>, String> {
        Ok(None)
    }
}

/// Why a model did not load ([`Model::load`]), and whether loading it
/// again may help.
///
/// ```
/// use multiproc_serve::LoadError;
///
/// let e = LoadError::permanent("input 'x' is FP32 in the graph; set datatype = \"FP32\"");
/// assert!(e.is_permanent());
/// assert!(!LoadError::from("the GPU is busy".to_string()).is_permanent());
/// assert_eq!(e.reason(), "input 'x' is FP32 in the graph; set datatype = \"FP32\"");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    reason: String,
    permanent: bool,
}

impl LoadError {
    /// A failure a later try may not have (a crash, a resource busy or not
    /// there yet): the worker is restarted with backoff.
    pub fn retry(reason: impl Into<String>) -> LoadError {
        LoadError { reason: reason.into(), permanent: false }
    }

    /// A failure every try would have: the version fails at once, without
    /// retries, until it is loaded again.
    pub fn permanent(reason: impl Into<String>) -> LoadError {
        LoadError { reason: reason.into(), permanent: true }
    }

    /// True for [`LoadError::permanent`].
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// Why the model did not load.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The reason, without the kind.
    pub fn into_reason(self) -> String {
        self.reason
    }
}

impl From<String> for LoadError {
    /// A failure retried ([`LoadError::retry`]).
    fn from(reason: String) -> LoadError {
        LoadError::retry(reason)
    }
}

impl From<&str> for LoadError {
    /// A failure retried ([`LoadError::retry`]).
    fn from(reason: &str) -> LoadError {
        LoadError::retry(reason)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for LoadError {}

/// Starts one worker process of a model version (type-erased).
pub(crate) type Spawner =
    Arc<dyn Fn(ProcessBuilder, WorkerEnds, WorkerContext) -> Result<Process<()>, String> + Send + Sync>;

/// A model to serve: its name, settings and versions with their configurations.
///
/// ```
/// use multiproc_serve::{LoadError, Model, ModelSpec, ModelSettings, WorkerContext};
///
/// struct Echo;
/// impl Model for Echo {
///     type Config = ();
///     type Input = String;
///     type Output = String;
///     fn load(_: (), _: &WorkerContext) -> Result<Self, LoadError> { Ok(Echo) }
///     fn predict(&mut self, batch: Vec<String>) -> Vec<Result<String, String>> {
///         batch.into_iter().map(Ok).collect()
///     }
/// }
///
/// let spec = ModelSpec::<Echo>::new("echo").version(1, ()).version(2, ()).settings(ModelSettings::default());
/// assert_eq!(spec.versions(), [1, 2]);
/// ```
pub struct ModelSpec<M: Model> {
    pub(crate) name: String,
    pub(crate) settings: ModelSettings,
    pub(crate) versions: BTreeMap<u64, M::Config>,
}

impl<M: Model> fmt::Debug for ModelSpec<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelSpec")
            .field("name", &self.name)
            .field("model", &type_name::<M>())
            .field("settings", &self.settings)
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<M: Model> ModelSpec<M> {
    /// A model called `name`, default settings, no version yet.
    pub fn new(name: impl Into<String>) -> Self {
        ModelSpec { name: name.into(), settings: ModelSettings::default(), versions: BTreeMap::new() }
    }

    /// Adds (or replaces) a version and its configuration.
    pub fn version(mut self, version: u64, config: M::Config) -> Self {
        self.versions.insert(version, config);
        self
    }

    /// Sets the settings.
    pub fn settings(mut self, settings: ModelSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The versions declared, ascending.
    pub fn versions(&self) -> Vec<u64> {
        self.versions.keys().copied().collect()
    }

    /// Erases the model type: the spawner of each version and the I/O types.
    pub(crate) fn erase(self) -> Result<ErasedSpec, ServeError> {
        self.settings.validate().map_err(|e| ServeError::Internal(format!("model '{}': {e}", self.name)))?;
        if self.versions.is_empty() {
            return Err(ServeError::Internal(format!("model '{}' declares no version", self.name)));
        }
        let versions = self
            .versions
            .into_iter()
            .map(|(v, config)| {
                let spawner: Spawner =
                    Arc::new(move |builder: ProcessBuilder, ends: WorkerEnds, ctx: WorkerContext| {
                        builder.spawn(worker_main::<M>, (ends, config.clone(), ctx)).map_err(|e| e.to_string())
                    });
                (v, spawner)
            })
            .collect();
        Ok(ErasedSpec { name: self.name, settings: self.settings, versions, io: IoTypes::of::<M::Input, M::Output>() })
    }
}

/// The input and output types of a model, checked on each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IoTypes {
    pub input: TypeId,
    pub output: TypeId,
    pub input_name: &'static str,
    pub output_name: &'static str,
}

impl IoTypes {
    pub fn of<I: 'static, O: 'static>() -> IoTypes {
        IoTypes {
            input: TypeId::of::<I>(),
            output: TypeId::of::<O>(),
            input_name: type_name::<I>(),
            output_name: type_name::<O>(),
        }
    }

    /// Checks that a call with `I` in and `O` out fits.
    pub fn check<I: 'static, O: 'static>(&self, model: &str) -> Result<(), ServeError> {
        if TypeId::of::<I>() != self.input || TypeId::of::<O>() != self.output {
            return Err(ServeError::BadInput {
                model: model.to_string(),
                reason: format!(
                    "the model takes {} and returns {}; the call used {} and {}",
                    self.input_name,
                    self.output_name,
                    type_name::<I>(),
                    type_name::<O>()
                ),
            });
        }
        Ok(())
    }
}

/// A model spec with its type erased, as the server keeps it.
pub(crate) struct ErasedSpec {
    pub name: String,
    pub settings: ModelSettings,
    pub versions: BTreeMap<u64, Spawner>,
    pub io: IoTypes,
}
