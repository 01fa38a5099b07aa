//! The server handle: models and pipelines by name, requests in, replies out.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batcher::Pending;
use crate::deadline::{Deadlines, after};
use crate::error::ServeError;
use crate::items::Encoded;
use crate::lone::LoneWait;
use crate::metrics::MetricsSnapshot;
use crate::name::Target;
use crate::pipeline::PipelineDyn;
use crate::pipeline_spec::{PipelineItem, PipelineSpec};
use crate::registry::{ModelEntry, UnloadCause};
use crate::request::{InferFuture, Reply, Request, decode_reply, gave_up};
use crate::settings::ModelSettings;
use crate::slot::Slot;
use crate::status::{EndpointKind, ModelStatus, ServerStatus};
use crate::tensor::Tensor;

mod reload;

/// A registered endpoint.
#[derive(Clone)]
pub(crate) enum Endpoint {
    Model(Arc<ModelEntry>),
    Pipeline(Arc<dyn PipelineDyn>),
}

impl Endpoint {
    /// Stops an endpoint no longer registered: a model drains (a load in
    /// progress is cancelled, saying `cause`), a pipeline stops.
    fn retire(self, cause: UnloadCause) {
        match self {
            Endpoint::Model(m) => m.unload(cause),
            Endpoint::Pipeline(p) => p.stop(ServeError::ShuttingDown),
        }
    }
}

pub(crate) struct Inner {
    endpoints: RwLock<BTreeMap<String, Endpoint>>,
    shutting_down: AtomicBool,
    /// New entries of models being reloaded, loading before they are
    /// registered: shutdown cancels their loads too.
    reloading: Mutex<Vec<Arc<ModelEntry>>>,
    deadlines: Deadlines,
    /// Blocking callers that are alone poll for their answer.
    lone: LoneWait,
}

/// A model server: models and pipelines by name, each version served by
/// supervised worker processes. Cheap to clone (a handle); everything stops
/// when [`Server::shutdown`] is called or the last handle is dropped.
///
/// See the crate documentation for a tour.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.endpoints().keys().cloned().collect();
        f.debug_struct("Server").field("models", &names).finish()
    }
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// A server with no model.
    ///
    /// It makes this process's allocator keep freed memory for reuse
    /// ([`multiproc::keep_freed_memory`]): requests with large tensors
    /// allocate and free big buffers over and over, and fresh pages cost
    /// more than the copies (16 MiB requests ran 5× faster with it here).
    pub fn new() -> Server {
        multiproc::keep_freed_memory();
        Server {
            inner: Arc::new(Inner {
                endpoints: RwLock::new(BTreeMap::new()),
                shutting_down: AtomicBool::new(false),
                reloading: Mutex::new(Vec::new()),
                deadlines: Deadlines::new(),
                lone: LoneWait::default(),
            }),
        }
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Server {
        Server { inner }
    }

    /// Lets go of this handle where stopping the server may not run: if it
    /// is the last handle (its owner dropped theirs meanwhile), the server
    /// stops on a thread of its own. For handles taken on a pipeline's lane
    /// thread, where stopping the server would stop that pipeline, which
    /// waits for its lanes to end, from one of them.
    pub(crate) fn release_elsewhere(self) {
        // Atomic: of two handles let go at once, exactly one is the last.
        if let Some(inner) = Arc::into_inner(self.inner) {
            let stopping = std::thread::Builder::new().name("serve-stop".into()).spawn(move || drop(inner));
            if let Err(e) = stopping {
                tracing::error!("could not start a thread to stop the server: {e}");
            }
        }
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    fn endpoints(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Endpoint>> {
        self.inner.endpoints.read().unwrap_or_else(|e| e.into_inner())
    }

    fn endpoint(&self, name: &str) -> Result<Endpoint, ServeError> {
        self.endpoints().get(name).cloned().ok_or_else(|| ServeError::UnknownModel { model: name.to_string() })
    }

    pub(crate) fn model_entry(&self, name: &str) -> Result<Arc<ModelEntry>, ServeError> {
        match self.endpoint(name)? {
            Endpoint::Model(m) => Ok(m),
            Endpoint::Pipeline(_) => Err(ServeError::BadInput {
                model: name.to_string(),
                reason: "this is a pipeline; versions and loading apply to its model".to_string(),
            }),
        }
    }

    fn check_running(&self) -> Result<(), ServeError> {
        if self.inner.shutting_down.load(Ordering::Acquire) { Err(ServeError::ShuttingDown) } else { Ok(()) }
    }

    /// Registers `endpoint` under `name` and gives back the endpoint it
    /// replaced (only with `replace`; otherwise a name taken is an error).
    /// Refused once shutdown began: the check is made under the lock that
    /// `shutdown` takes to empty the endpoints, so an endpoint registered
    /// after that, which nothing would stop, cannot be; so is a retired
    /// model (see [`Server::remove`]). A refused endpoint is stopped.
    fn register(&self, name: String, endpoint: Endpoint, replace: bool) -> Result<Option<Endpoint>, ServeError> {
        let mut endpoints = self.inner.endpoints.write().unwrap_or_else(|e| e.into_inner());
        let (refused, cause) = if self.inner.shutting_down.load(Ordering::Acquire) {
            (ServeError::ShuttingDown, UnloadCause::ShuttingDown)
        } else if let Endpoint::Model(m) = &endpoint
            && m.is_retired()
        {
            // A reload's entry, the model removed while it loaded.
            let reason = "the reload was cancelled: the model was removed meanwhile".to_string();
            (ServeError::NotReady { model: name.clone(), version: None, reason }, UnloadCause::Removed)
        } else if replace || !endpoints.contains_key(&name) {
            return Ok(endpoints.insert(name, endpoint));
        } else {
            (ServeError::Internal(format!("'{name}' is already registered")), UnloadCause::Removed)
        };
        drop(endpoints);
        endpoint.retire(cause);
        Err(refused)
    }

    /// Adds a pipeline: preprocessing processes feeding a model already added,
    /// then optional postprocessing.
    ///
    /// # Errors
    ///
    /// The name is taken, the model is unknown or has other input/output
    /// types, or the pools could not start.
    pub fn add_pipeline<R, I, O, P>(&self, spec: PipelineSpec<R, I, O, P>) -> Result<(), ServeError>
    where
        R: PipelineItem,
        I: PipelineItem,
        O: PipelineItem,
        P: PipelineItem,
    {
        self.check_running()?;
        if self.endpoints().contains_key(spec.name()) {
            return Err(ServeError::Internal(format!("'{}' is already registered", spec.name())));
        }
        let model = self.model_entry(spec.model())?;
        model.io.check::<I, O>(spec.model())?;
        let name = spec.name().to_string();
        let pipeline = spec.start(self.downgrade())?;
        self.register(name, Endpoint::Pipeline(pipeline), false)?;
        Ok(())
    }

    /// Removes a model or pipeline: drains its versions and stops them; the
    /// name becomes unknown. A reload in progress (an `add` under the name)
    /// is cancelled: it fails, saying the model was removed, and does not
    /// bring the name back.
    ///
    /// # Errors
    ///
    /// Unknown name.
    pub fn remove(&self, name: &str) -> Result<(), ServeError> {
        // Retired before the name goes: a reload that registers after
        // that is refused (see `register`), one before is what is removed.
        let reloads = self.reloads_of(name);
        reloads.iter().for_each(|r| r.retire(UnloadCause::Removed));
        for reload in &reloads {
            reload.unload(UnloadCause::Removed);
        }
        let endpoint = self
            .inner
            .endpoints
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| ServeError::UnknownModel { model: name.to_string() })?;
        match endpoint {
            Endpoint::Pipeline(p) => {
                let reason = "the pipeline was removed".to_string();
                p.stop(ServeError::NotReady { model: name.to_string(), version: None, reason });
            }
            model => model.retire(UnloadCause::Removed),
        }
        Ok(())
    }

    /// Loads a model's versions by its policy (again, after `unload`) and
    /// waits until they are ready.
    ///
    /// A version [unloaded](Server::unload_version) while this waits is
    /// left out: its load is cancelled at once, the other versions go on
    /// loading, and this succeeds if they become ready, as if that version
    /// was unloaded just after the load (the model serves what is left).
    ///
    /// # Errors
    ///
    /// Unknown model, or a version did not become ready, or every version
    /// was unloaded while this waited (the load was cancelled), or the
    /// model was unloaded, removed or the server shut down meanwhile.
    pub fn load(&self, model: &str) -> Result<(), ServeError> {
        self.check_running()?;
        self.model_entry(model)?.load()
    }

    /// Unloads a model: its versions drain and stop; requests then fail
    /// with `NotReady` until [`Server::load`] (or a version is loaded with
    /// [`Server::load_version`] or [`Server::switch`]). It stays listed.
    /// A load of the model in progress (`load`, `load_version`, `switch`,
    /// an eager `add`) does not hold it up: that load fails at once, saying
    /// it was cancelled, and the workers it started stop with the others;
    /// requests queued on a version that never became ready fail at once.
    /// A reload in progress (an `add` under the name) is cancelled the
    /// same way: once this returns, nothing of the model is served.
    ///
    /// # Errors
    ///
    /// Unknown model.
    pub fn unload(&self, model: &str) -> Result<(), ServeError> {
        // The reloads first: one that ends meanwhile is registered then.
        let reloads = self.reloads_of(model);
        let entry = self.model_entry(model)?;
        for reload in reloads.iter().filter(|r| !Arc::ptr_eq(r, &entry)) {
            reload.unload(UnloadCause::Unloaded);
        }
        entry.unload(UnloadCause::Unloaded);
        Ok(())
    }

    /// Starts one more version of a model (beside those served) and waits
    /// until it is ready. On a model [unloaded](Server::unload), it is the
    /// one version served.
    ///
    /// # Errors
    ///
    /// Unknown model or version, or it did not become ready.
    pub fn load_version(&self, model: &str, version: u64) -> Result<(), ServeError> {
        self.check_running()?;
        self.model_entry(model)?.load_version(version)
    }

    /// Drains and stops one version. A load in progress does not hold it
    /// up: a load of that version (`load_version`, `switch`) fails at once,
    /// saying the version was unloaded; a [`Server::load`] of the model
    /// leaves that version out and goes on with the others (see there);
    /// requests queued on the version, which never became ready, fail at
    /// once. A load of another version is neither cancelled nor waited
    /// for: this goes ahead beside it. A reload in progress (an `add`
    /// under the name) leaves the version out as a `load` does: once this
    /// returns, the version is not served.
    ///
    /// # Errors
    ///
    /// Unknown model or version (known if the served entry or a reload
    /// in progress declares it).
    pub fn unload_version(&self, model: &str, version: u64) -> Result<(), ServeError> {
        // The reloads first: one that ends meanwhile is registered then.
        let reloads = self.reloads_of(model);
        let entry = self.model_entry(model)?;
        // A reload may declare versions the served entry does not: the
        // version is known if either has it.
        let mut unloaded = false;
        for reload in reloads.iter().filter(|r| !Arc::ptr_eq(r, &entry)) {
            unloaded |= reload.unload_version(version).is_ok();
        }
        match entry.unload_version(version) {
            Err(ServeError::UnknownVersion { .. }) if unloaded => Ok(()),
            done => done,
        }
    }

    /// Zero-downtime switch: starts `version`, waits until it is ready,
    /// moves all traffic to it at once, then drains and stops every other
    /// version. If `version` fails to load, the old versions keep serving.
    /// An old version that was still loading (never ready) is not waited
    /// for: its load is cancelled and the requests queued on it fail at
    /// once (`NotReady`, saying the model switched to `version` and to send
    /// them again), as an [unload](Server::unload) fails them.
    ///
    /// # Errors
    ///
    /// Unknown model or version, or the new version did not become ready
    /// (the error says why).
    pub fn switch(&self, model: &str, version: u64) -> Result<(), ServeError> {
        self.check_running()?;
        self.model_entry(model)?.switch(version)
    }

    /// Queues a request; gives back its deadline and the model's name (the
    /// caller keeps it for errors, without a copy per request).
    fn submit<I: Serialize + Send + 'static, O: 'static>(
        &self,
        request: Request<I>,
        slot: &Arc<Slot>,
    ) -> Result<(Option<Instant>, Target), ServeError> {
        self.check_running()?;
        // `held` (see `Request::hold`) stays with the queued request, or is
        // dropped here if it is refused or goes to a pipeline.
        let Request { model, version, input, timeout, rows, held } = request;
        match self.endpoint(&model)? {
            Endpoint::Model(entry) => {
                entry.io.check::<I, O>(&model)?;
                if rows > entry.settings.max_batch_size {
                    return Err(entry.refused(
                        version,
                        ServeError::BadInput {
                            model: model.to_string(),
                            reason: format!(
                                "a request of {rows} rows is over the model's max_batch_size of {}: split it",
                                entry.settings.max_batch_size
                            ),
                        },
                    ));
                }
                let deadline = timeout.or(entry.settings.request_timeout).map(|t| after(slot.arrived, t));
                // The input is dropped once encoded, and a large encoding
                // kept at its length (see `Encoded::input`).
                let input = Encoded::input(input).map_err(|e| {
                    let reason = format!("input does not encode: {e}");
                    entry.refused(version, ServeError::BadInput { model: model.to_string(), reason })
                })?;
                let enqueued = Instant::now();
                let pending = Pending { input, slot: Arc::clone(slot), enqueued, deadline, then: None, rows, held };
                self.submit_bytes(&entry, version, pending, false)?;
                Ok((deadline, Target::model(model)))
            }
            Endpoint::Pipeline(p) => {
                if version.is_some() {
                    let pipeline = model.into();
                    let reason = "a pipeline has no versions: send the request without one".to_string();
                    return Err(ServeError::PipelineBadInput { pipeline, reason });
                }
                p.check_types(std::any::TypeId::of::<I>(), std::any::TypeId::of::<O>())?;
                let deadline = timeout.map(|t| after(slot.arrived, t));
                p.submit(&mut Some(input), Arc::clone(slot), deadline)?;
                Ok((deadline, Target::pipeline(model)))
            }
        }
    }

    /// Runs one request and waits for its reply (blocking).
    ///
    /// # Errors
    ///
    /// See [`ServeError`]: unknown model or version, bad input (including a
    /// call with other types than the model's), not ready, overloaded,
    /// crash-looping, the model's own error, the worker lost, a call timeout
    /// or the deadline.
    pub fn infer<I, O>(&self, request: Request<I>) -> Result<Reply<O>, ServeError>
    where
        I: Serialize + Send + 'static,
        O: DeserializeOwned + 'static,
    {
        let slot = Slot::new();
        let (deadline, target) = self.submit::<I, O>(request, &slot)?;
        // A lone request polls for its answer a short while before it sleeps.
        match self.inner.lone.wait_blocking(|| slot.try_take().map(Some), || slot.wait(deadline)) {
            Some(result) => result.and_then(|a| decode_reply(a, slot.arrived)),
            None => gave_up(&slot, target),
        }
    }

    /// Runs one request; the reply comes through a runtime-agnostic future.
    /// Errors found before queueing (unknown model, overload…) come out of
    /// the future at its first poll.
    pub fn infer_async<I, O>(&self, request: Request<I>) -> InferFuture<O>
    where
        I: Serialize + Send + 'static,
        O: DeserializeOwned + 'static,
    {
        let slot = Slot::new();
        match self.submit::<I, O>(request, &slot) {
            Ok((deadline, target)) => {
                if let Some(d) = deadline {
                    self.inner.deadlines.watch(d, &slot, target.clone());
                }
                InferFuture { target, slot: Ok(slot), _output: PhantomData }
            }
            // The error names the model; the future's target is for deadlines.
            Err(e) => InferFuture { target: Target::default(), slot: Err(Some(e)), _output: PhantomData },
        }
    }

    /// The generic path: named tensors in, named tensors out, for models
    /// whose `Input` and `Output` are `Vec<Tensor>` (ONNX, external commands).
    ///
    /// # Errors
    ///
    /// As [`Server::infer`].
    pub fn infer_tensors(
        &self,
        model: &str,
        version: Option<u64>,
        inputs: Vec<Tensor>,
    ) -> Result<Reply<Vec<Tensor>>, ServeError> {
        self.infer(Request::new(model, inputs).maybe_version(version))
    }

    /// Every model, version and worker with its state.
    pub fn status(&self) -> ServerStatus {
        let shutting_down = self.inner.shutting_down.load(Ordering::Acquire);
        let endpoints: Vec<Endpoint> = self.endpoints().values().cloned().collect();
        let models: Vec<ModelStatus> = endpoints
            .iter()
            .map(|e| match e {
                Endpoint::Model(m) => m.status(),
                Endpoint::Pipeline(p) => {
                    let model_ready = self.model_entry(&p.status().model).map(|m| m.status().ready).unwrap_or(false);
                    ModelStatus {
                        name: p.name().to_string(),
                        kind: EndpointKind::Pipeline,
                        ready: model_ready,
                        default_version: None,
                        unloaded: false,
                        versions: Vec::new(),
                        pipeline: Some(p.status()),
                    }
                }
            })
            .collect();
        let ready = !shutting_down
            && endpoints.iter().zip(&models).all(|(e, s)| match e {
                Endpoint::Model(m) => s.ready || s.unloaded || !m.is_eager(),
                Endpoint::Pipeline(_) => true,
            });
        ServerStatus { ready, models }
    }

    /// True when the server takes requests and every eagerly started,
    /// loaded model is ready (`/v2/health/ready`).
    pub fn is_ready(&self) -> bool {
        self.status().ready
    }

    /// True until shutdown (`/v2/health/live`).
    pub fn is_live(&self) -> bool {
        !self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Whether `model` (at `version`, or its default version) is ready.
    ///
    /// # Errors
    ///
    /// Unknown model or version (404).
    pub fn model_ready(&self, model: &str, version: Option<u64>) -> Result<bool, ServeError> {
        match self.endpoint(model)? {
            Endpoint::Model(m) => m.is_ready(version),
            Endpoint::Pipeline(p) => {
                let inner = p.status().model;
                self.model_ready(&inner, None)
            }
        }
    }

    /// Every version's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        let endpoints: Vec<Endpoint> = self.endpoints().values().cloned().collect();
        let mut versions = Vec::new();
        for e in endpoints {
            if let Endpoint::Model(m) = e {
                versions.extend(m.metrics());
            }
        }
        MetricsSnapshot { versions }
    }

    /// Stops taking requests, drains every pipeline and then every model
    /// (each up to its model's drain timeout) and stops every worker.
    /// A model still loading does not hold it up: its load fails at once,
    /// saying it was cancelled by the shutdown, its workers stop, and the
    /// requests waiting for it (directly or through a pipeline) fail at
    /// once, saying so. Idempotent.
    pub fn shutdown(&self) {
        if self.inner.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!("server shutting down");
        // Reloads first: they serve nothing yet (their `add` stops them).
        let reloading = std::mem::take(&mut *self.inner.reloading.lock().unwrap_or_else(|e| e.into_inner()));
        for entry in reloading {
            entry.unload(UnloadCause::ShuttingDown);
        }
        // Pipelines first, while their models still serve: the requests
        // they hold are answered (each up to its model's drain timeout).
        let pipelines: Vec<Arc<dyn PipelineDyn>> = self
            .endpoints()
            .values()
            .filter_map(|e| match e {
                Endpoint::Pipeline(p) => Some(Arc::clone(p)),
                Endpoint::Model(_) => None,
            })
            .collect();
        // A pipeline whose model is still loading could answer only after
        // the load, which this shutdown cancels: it stops at once.
        for p in pipelines {
            let model = self.model_entry(&p.status().model);
            p.drain(model.map_or(ModelSettings::default().drain_timeout, |m| {
                if m.still_loading() { Duration::ZERO } else { m.settings.drain_timeout }
            }));
        }
        let endpoints: Vec<Endpoint> =
            std::mem::take(&mut *self.inner.endpoints.write().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        for e in &endpoints {
            if let Endpoint::Pipeline(p) = e {
                p.stop(ServeError::ShuttingDown);
            }
        }
        for e in &endpoints {
            if let Endpoint::Model(m) = e {
                m.unload(UnloadCause::ShuttingDown);
            }
        }
        self.inner.deadlines.stop();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let endpoints = std::mem::take(self.endpoints.get_mut().unwrap_or_else(|e| e.into_inner()));
        endpoints.into_values().for_each(|e| e.retire(UnloadCause::ShuttingDown));
        self.deadlines.stop();
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
