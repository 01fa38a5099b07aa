//! The router and the thin handlers of everything but inference,
//! statistics, model configurations and shared memory: health, metadata,
//! readiness, the repository extension and `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use multiproc_serve::{Server, VersionState};

use crate::budget::BodyBudget;
use crate::control::{IndexRequest, LoadRequest, Overrides, json_request};
use crate::error::ApiError;
use crate::loading::InitialLoad;
use crate::metrics::{BodyMemory, HttpCounters, render};
use crate::protocol::{EXTENSIONS, ModelMetadata, RepositoryEntry, ServerMetadata};
use crate::repository::{ModelConfig, ModelDir, add_model, scan_model, settings};

/// Limits of the HTTP front end.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request body accepted (413 above it). Inputs read from
    /// client shared memory count as part of the body (400 above it).
    pub body_limit: usize,
    /// Longest time a request body may take to arrive (408 after it). The
    /// body is read whole before anything is queued, so a slow client holds
    /// only its own connection, never a worker.
    pub body_timeout: Duration,
    /// Longest time a connection may go without a request starting (its
    /// headers read) while none is in flight; it is closed after that (and
    /// at most half as long again). A client trickling its headers
    /// (slowloris), connected and silent, idle on a kept-alive connection,
    /// or not reading its answer, holds its connection no longer than this.
    pub header_timeout: Duration,
    /// Most bytes of request bodies the server holds at once, all requests
    /// together: bodies being read, and the inputs of requests read and not
    /// yet answered or dropped (what counts: the crate docs, "Memory held
    /// by request bodies"). A request that would take it over is refused at
    /// once with 503 and `Retry-After`: before its body is read when its
    /// `Content-Length` is over what is free, else as soon as what has
    /// arrived is over; one larger than the whole budget, 413. Should be
    /// at least `body_limit` (`multiproc serve` refuses to start with
    /// less): a body in between could never be held. The default, 1 GiB,
    /// holds sixteen bodies of the largest default size (64 MiB).
    pub body_budget: usize,
    /// Clients may register shared memory regions and pass tensors through
    /// them (Triton's system shared memory extension, see [`crate::shm`]).
    /// Off by default: a client that may do so may read and write every
    /// shared memory object this server's user can open.
    pub allow_client_shm: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            body_limit: 64 << 20,
            body_budget: 1 << 30,
            body_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            allow_client_shm: false,
        }
    }
}

/// What the handlers share: the core server, the repository and counters.
#[derive(Debug)]
pub struct App {
    pub(crate) core: Server,
    pub(crate) root: PathBuf,
    pub(crate) models: RwLock<BTreeMap<String, ModelDir>>,
    pub(crate) http_counters: HttpCounters,
    /// The bytes of request bodies held now, at most `options.body_budget`
    /// (shared with the leases, which may outlive a handler: a queued
    /// request's goes with it into the core).
    pub(crate) body_budget: Arc<BodyBudget>,
    pub(crate) options: HttpOptions,
    pub(crate) lone: multiproc_serve::LoneWait,
    /// The repository's first load, which runs while the server answers.
    pub(crate) initial_load: InitialLoad,
    /// Clients' shared memory regions.
    pub(crate) shm: crate::shm::Regions,
    /// One repository change (load or unload) at a time per model, so that
    /// of two loads the one asked last is the one left serving.
    changes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl App {
    /// An app over `core` serving the models of the repository at `root`,
    /// loaded into `core` already.
    pub fn new(core: Server, root: PathBuf, models: Vec<ModelDir>, options: HttpOptions) -> Arc<App> {
        App::with_load(core, root, models, options, InitialLoad::none())
    }

    /// An app over `core`, to which the models of the repository at `root`
    /// are still to be loaded (see [`crate::loading`]).
    pub(crate) fn loading(core: Server, root: PathBuf, models: Vec<ModelDir>, options: HttpOptions) -> Arc<App> {
        let load = InitialLoad::of(&models);
        App::with_load(core, root, models, options, load)
    }

    fn with_load(
        core: Server,
        root: PathBuf,
        models: Vec<ModelDir>,
        options: HttpOptions,
        initial_load: InitialLoad,
    ) -> Arc<App> {
        let models = models.into_iter().map(|m| (m.name.clone(), m)).collect();
        let shm = crate::shm::Regions::new(options.allow_client_shm);
        let body_budget = Arc::new(BodyBudget::new(options.body_budget));
        Arc::new(App {
            core,
            root,
            models: RwLock::new(models),
            http_counters: HttpCounters::default(),
            body_budget,
            options,
            lone: multiproc_serve::LoneWait::default(),
            initial_load,
            shm,
            changes: Mutex::default(),
        })
    }

    /// Waits for the repository changes of model `name` asked before this
    /// one to end; holds the next ones back until the guard is dropped.
    async fn change_of(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(changes.entry(name.to_string()).or_default())
        };
        lock.lock_owned().await
    }

    /// The core server.
    pub fn core(&self) -> &Server {
        &self.core
    }

    /// The checked configuration of `name`: 404 if unknown, 503 with the
    /// reason if its configuration is bad, 503 "loading" if the first load
    /// of the repository has not been through it yet.
    pub(crate) fn config(&self, name: &str) -> Result<Arc<ModelConfig>, ApiError> {
        self.with_model(name, |config, _| Arc::clone(config))
    }

    /// The checked configuration of `name` and the versions its policy
    /// serves; errors as [`App::config`].
    pub(crate) fn model(&self, name: &str) -> Result<(Arc<ModelConfig>, Vec<u64>), ApiError> {
        self.with_model(name, |config, on_disk| (Arc::clone(config), settings(config).version_policy.select(on_disk)))
    }

    /// Applies `f` to the configuration of `name` and its versions on disk,
    /// under the repository's read lock; errors as [`App::config`].
    fn with_model<T>(&self, name: &str, f: impl FnOnce(&Arc<ModelConfig>, &[u64]) -> T) -> Result<T, ApiError> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let model = models.get(name).ok_or_else(|| {
            ApiError::not_found(format!("unknown model '{name}': POST /v2/repository/index lists the models"))
        })?;
        match &model.loaded {
            Ok(_) if self.initial_load.is_waiting(name) => Err(InitialLoad::model_loading(name)),
            Ok((config, on_disk)) => Ok(f(config, on_disk)),
            Err(e) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("model '{name}' is unavailable: {e}"),
            )),
        }
    }
}

/// The parameters of a route's path, as axum's [`Path`] extracts them, but
/// failing (a segment that is not UTF-8 once percent-decoded) with an
/// [`ApiError`], so the answer is the protocol's `{"error": ...}` rather
/// than axum's plain text.
#[derive(Debug)]
pub(crate) struct PathParams<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(PathParams(t)),
            Err(e) => Err(ApiError::new(e.status(), "bad_request", e.body_text())),
        }
    }
}

/// Parses a `{version}` path segment.
pub(crate) fn parse_version(v: &str) -> Result<u64, ApiError> {
    v.parse().map_err(|_| ApiError::bad_request(format!("version '{v}' is not a number")))
}

/// The whole router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/stats", get(crate::stats::all_models))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_version_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_version_ready))
        .route("/v2/models/{name}/config", get(crate::model_config::model))
        .route("/v2/models/{name}/versions/{version}/config", get(crate::model_config::model_version))
        .route("/v2/models/{name}/stats", get(crate::stats::model))
        .route("/v2/models/{name}/versions/{version}/stats", get(crate::stats::model_version))
        .route("/v2/models/{name}/infer", post(crate::infer::infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(crate::infer::infer_version))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(repository_load))
        .route("/v2/repository/models/{name}/unload", post(repository_unload))
        .route("/v2/systemsharedmemory/status", get(crate::shm::status_all))
        .route("/v2/systemsharedmemory/region/{name}/status", get(crate::shm::status))
        .route("/v2/systemsharedmemory/region/{name}/register", post(crate::shm::register))
        .route("/v2/systemsharedmemory/unregister", post(crate::shm::unregister_all))
        .route("/v2/systemsharedmemory/region/{name}/unregister", post(crate::shm::unregister))
        .route("/metrics", get(metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(app)
}

/// A router with only `/metrics`, for `--metrics-port`.
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new().route("/metrics", get(metrics)).fallback(no_route).with_state(app)
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint {}: the Open Inference Protocol's are under /v2", uri.path()))
}

async fn wrong_method(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method", format!("{} does not take this method", uri.path()))
}

// Health answers carry the OIP's JSON objects (`{"live": true}`,
// `{"ready": true}`, `{"name": …, "ready": true}`): KServe's client reads
// them; Triton's reads only the status, which is 200 or 503.

async fn live(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    match app.core.is_live() {
        true => Ok(Json(serde_json::json!({ "live": true }))),
        false => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_live", "the server is shutting down")),
    }
}

async fn ready(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    if !app.initial_load.is_done() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is loading its models"));
    }
    match app.core.is_ready() {
        true => Ok(Json(serde_json::json!({ "ready": true }))),
        false => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is not ready")),
    }
}

async fn server_metadata(State(app): State<Arc<App>>) -> Json<ServerMetadata> {
    let mut extensions: Vec<String> = EXTENSIONS.iter().map(|s| s.to_string()).collect();
    if app.shm.allowed() {
        extensions.push("system_shared_memory".into());
    }
    Json(ServerMetadata { name: "multiproc".into(), version: env!("CARGO_PKG_VERSION").into(), extensions })
}

/// The configuration of `name` and the versions it serves; 404 if
/// `version` is given and not one of them.
pub(crate) fn model_at(app: &App, name: &str, version: Option<u64>) -> Result<(Arc<ModelConfig>, Vec<u64>), ApiError> {
    let (config, served) = app.model(name)?;
    if let Some(v) = version
        && !served.contains(&v)
    {
        return Err(ApiError::not_found(format!("model '{name}' has no version {v} (served: {served:?})")));
    }
    Ok((config, served))
}

fn metadata(app: &App, name: &str, version: Option<u64>) -> Result<Json<ModelMetadata>, ApiError> {
    let (config, served) = model_at(app, name, version)?;
    Ok(Json(ModelMetadata {
        name: name.to_string(),
        versions: served.iter().map(u64::to_string).collect(),
        platform: config.platform_name().to_string(),
        inputs: config.inputs.iter().map(|t| config.metadata(t)).collect(),
        outputs: config.outputs.iter().map(|t| config.metadata(t)).collect(),
    }))
}

async fn model_metadata(
    State(app): State<Arc<App>>,
    PathParams(name): PathParams<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    metadata(&app, &name, None)
}

async fn model_version_metadata(
    State(app): State<Arc<App>>,
    PathParams((name, version)): PathParams<(String, String)>,
) -> Result<Json<ModelMetadata>, ApiError> {
    metadata(&app, &name, Some(parse_version(&version)?))
}

fn readiness(app: &App, name: &str, version: Option<u64>) -> Result<Json<serde_json::Value>, ApiError> {
    model_at(app, name, version)?;
    match app.core.model_ready(name, version)? {
        true => Ok(Json(serde_json::json!({ "name": name, "ready": true }))),
        false => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", format!("model '{name}' is not ready")))
        }
    }
}

async fn model_ready(
    State(app): State<Arc<App>>,
    PathParams(name): PathParams<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    readiness(&app, &name, None)
}

async fn model_version_ready(
    State(app): State<Arc<App>>,
    PathParams((name, version)): PathParams<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    readiness(&app, &name, Some(parse_version(&version)?))
}

fn state_name(state: VersionState) -> &'static str {
    match state {
        VersionState::Ready => "READY",
        VersionState::Loading => "LOADING",
        VersionState::Draining => "UNLOADING",
        _ => "UNAVAILABLE",
    }
}

async fn repository_index(
    State(app): State<Arc<App>>,
    request: Request,
) -> Result<Json<Vec<RepositoryEntry>>, ApiError> {
    let index: IndexRequest = json_request(&app, request, "index", r#"{"ready": true or false}"#).await?;
    let ready_only = index.ready;
    let status = app.core.status();
    let models = app.models.read().unwrap_or_else(|e| e.into_inner()).clone();
    let mut rows = Vec::new();
    for (name, dir) in models {
        if let Err(e) = &dir.loaded {
            rows.push(RepositoryEntry { name, version: None, state: "UNAVAILABLE".into(), reason: e.to_string() });
            continue;
        }
        let Some(model) = status.model(&name) else {
            let (state, reason) = match app.initial_load.is_waiting(&name) {
                true => ("LOADING", "waiting for the models before it to load"),
                false => ("UNAVAILABLE", "not loaded"),
            };
            rows.push(RepositoryEntry { name, version: None, state: state.into(), reason: reason.into() });
            continue;
        };
        for v in &model.versions {
            let state = if model.unloaded { "UNAVAILABLE" } else { state_name(v.state) };
            let reason = match (&v.last_failure, model.unloaded, v.state) {
                (_, true, _) => "unloaded".to_string(),
                (_, _, VersionState::Ready) => String::new(),
                (Some(why), _, s) => format!("{}: {why}", s.as_str()),
                (None, _, s) => s.as_str().to_string(),
            };
            rows.push(RepositoryEntry {
                name: name.clone(),
                version: Some(v.version.to_string()),
                state: state.into(),
                reason,
            });
        }
    }
    if ready_only {
        rows.retain(|r| r.state == "READY");
    }
    Ok(Json(rows))
}

fn check_model_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(ApiError::bad_request(format!("'{name}' is not a model name")));
    }
    Ok(())
}

async fn repository_load(
    State(app): State<Arc<App>>,
    PathParams(name): PathParams<String>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    check_model_name(&name)?;
    app.initial_load.check_done("load", &name)?;
    // Triton's load may carry a configuration (and files) to use instead of
    // the directory's; this server loads only what is on disk, so it says
    // so rather than load something else than asked. The request is read
    // whole, and its body dropped, before the load waits its turn: what is
    // kept of it is the name of an override it asks for, if any.
    let expected = r#"{"parameters": {...}}, or an empty body"#;
    let load: LoadRequest = json_request(&app, request, "load", expected).await?;
    if let Overrides(Some(key)) = load.parameters {
        return Err(ApiError::bad_request(format!(
            "load parameter '{key}' is not supported: a model loads from {}, its config.toml and version \
             directories; change them there and load again",
            app.root.join(&name).display()
        )));
    }
    if !app.root.join(&name).is_dir() {
        return Err(ApiError::not_found(format!(
            "no model directory '{name}' in the repository {}",
            app.root.display()
        )));
    }
    // The directory is read under the model's turn: a load asked later
    // reads it later, and ends later.
    let _turn = app.change_of(&name).await;
    let dir = scan_model(&app.root, &name);
    let put = |dir: ModelDir| app.models.write().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), dir);
    // A failed load keeps what was serving: while the new configuration is
    // not serving, requests are checked against the old one (which the old
    // versions still serve). A model new to the server is listed at once.
    let serving = app.models.read().unwrap_or_else(|e| e.into_inner()).get(&name).is_some_and(|m| m.loaded.is_ok());
    if !serving {
        put(dir.clone());
    }
    if let Err(e) = &dir.loaded {
        return Err(ApiError::bad_request(format!("cannot load model '{name}': {e}")));
    }
    let core = app.core.clone();
    let loading = dir.clone();
    tokio::task::spawn_blocking(move || add_model(&core, &loading)).await.map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("load task failed: {e}"))
    })??;
    if serving {
        put(dir);
    }
    Ok(StatusCode::OK)
}

async fn repository_unload(
    State(app): State<Arc<App>>,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    check_model_name(&name)?;
    app.initial_load.check_done("unload", &name)?;
    app.config(&name)?;
    let _turn = app.change_of(&name).await;
    let core = app.core.clone();
    tokio::task::spawn_blocking(move || core.unload(&name)).await.map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("unload task failed: {e}"))
    })??;
    Ok(StatusCode::OK)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let budget = &app.body_budget;
    let bodies = BodyMemory { budget: budget.limit(), held: budget.held(), refused: budget.refused() };
    let text = render(app.core.metrics(), &app.http_counters, &bodies);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
