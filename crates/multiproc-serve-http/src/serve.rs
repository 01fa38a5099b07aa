//! Running the front end: bind the listeners, answer, load the repository
//! into a core server meanwhile, and on the shutdown signal stop accepting,
//! finish the requests in flight (up to the longest drain timeout of the
//! models; those still running then fail), then stop the workers.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use multiproc_serve::{ModelSettings, Server};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{App, HttpOptions, metrics_router, router};
use crate::listen::FIRST_REQUEST_GRACE;
use crate::loading::load_repository;
use crate::repository::scan;

/// What to serve and where.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The model repository.
    pub repository: PathBuf,
    /// Where the Open Inference Protocol (and `/metrics`) listens.
    pub http_addr: SocketAddr,
    /// A second address with only `/metrics`, if wanted.
    pub metrics_addr: Option<SocketAddr>,
    /// Body size and time limits.
    pub http: HttpOptions,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The repository directory cannot be read.
    #[error("cannot read the model repository {path}: {source}")]
    Repository {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An address cannot be bound.
    #[error("cannot listen on {addr}: {source}; is another server using the port?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A started server: its addresses, answering; stopped by [`Running::run`]'s
/// shutdown (or, less gracefully, when dropped).
#[derive(Debug)]
pub struct Running {
    /// The inference address actually bound (port 0 resolved).
    pub http_addr: SocketAddr,
    /// The metrics address actually bound.
    pub metrics_addr: Option<SocketAddr>,
    /// The shared state (core server, repository).
    pub app: Arc<App>,
    /// Turned true (or dropped) to stop the listeners and the first load.
    stop: watch::Sender<bool>,
    /// The listeners' tasks.
    listeners: Vec<JoinHandle<()>>,
    /// The first load of the repository (blocking).
    loader: JoinHandle<()>,
}

/// Binds the listeners, starts answering, then loads every model of the
/// repository (a bad one is listed with its reason and the others go on),
/// and returns once they are loaded: requests sent after it returns find
/// them loaded. Binding comes first, so that an address in use is reported
/// at once, before any model loads. While the models load, the server is
/// live but not ready, and a model not loaded yet answers 503 "loading"
/// (see [`launch`]).
///
/// # Errors
///
/// An address cannot be bound or the repository cannot be read.
pub async fn start(options: ServeOptions) -> Result<Running, StartError> {
    let running = launch(options).await?;
    running.loaded().await;
    Ok(running)
}

/// As [`start`], but returns as soon as the listeners answer, with the
/// models still loading: for a caller that must stop promptly if told to
/// during the load (a signal), or tell where it listens meanwhile. Await
/// [`Running::loaded`] for the end of the load; [`Running::run`] may be
/// called at once (a shutdown during the load stops it: the load of the
/// model loading then is cancelled at once and its workers stop, the
/// others are not loaded).
///
/// # Errors
///
/// An address cannot be bound or the repository cannot be read.
pub async fn launch(options: ServeOptions) -> Result<Running, StartError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
    };
    let listener = bind(options.http_addr).await?;
    let metrics_listener = match options.metrics_addr {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let http_addr = listener.local_addr().map_err(|source| StartError::Bind { addr: options.http_addr, source })?;
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let repo = options.repository.clone();
    let models = scan(&repo).map_err(|source| StartError::Repository { path: repo.clone(), source })?;
    let app = App::loading(Server::new(), repo, models.clone(), options.http);
    let (stop, stopping) = watch::channel(false);
    let header_timeout = app.options.header_timeout;
    let mut listeners = Vec::new();
    if let Some(l) = metrics_listener {
        let router = metrics_router(Arc::clone(&app));
        listeners.push(tokio::spawn(crate::listen::serve(l, router, None, header_timeout, stopping.clone())));
    }
    let router = router(Arc::clone(&app));
    let fast_path = Some(Arc::clone(&app));
    listeners.push(tokio::spawn(crate::listen::serve(listener, router, fast_path, header_timeout, stopping.clone())));
    let loading = Arc::clone(&app);
    let loader = tokio::task::spawn_blocking(move || load_repository(&loading, &models, &stopping));
    Ok(Running { http_addr, metrics_addr, app, stop, listeners, loader })
}

impl Running {
    /// Resolves once the first load of the repository has ended (every
    /// model loaded or failed; or the server stopped first).
    pub fn loaded(&self) -> impl Future<Output = ()> + Send + 'static {
        self.app.initial_load.ended()
    }

    /// Serves until `shutdown` completes; then stops accepting, lets the
    /// requests in flight finish, stops the first load if it is still on,
    /// and stops every worker.
    ///
    /// The requests in flight are given the longest drain timeout of the
    /// repository's models (`drain_ms`), and at least the time a connection
    /// accepted with no request yet is given for its first one (1 s).
    /// Those still running after it (a model that
    /// hangs, with no call timeout) do not hold the shutdown up: the core
    /// server then stops, as it does on its own at the end of a drain, and
    /// they are answered with the error that stop gives them.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing the requests in flight");
        let _ = self.stop.send(true);
        let mut listeners = self.listeners;
        let drain = drain_timeout(&self.app).max(FIRST_REQUEST_GRACE);
        // Shutting the core down refuses the models the first load has not
        // reached and cancels the load of the one loading (it does not
        // wait for it).
        let core = self.app.core.clone();
        let drained = all_ended(&mut listeners, drain).await;
        if !drained {
            tracing::warn!(
                "requests still in flight {drain:?} after the shutdown began (the longest drain timeout); \
                 stopping the models: those requests fail"
            );
        }
        let _ = tokio::task::spawn_blocking(move || core.shutdown()).await;
        if !drained && !all_ended(&mut listeners, AFTER_THE_CORE_STOPPED).await {
            tracing::warn!("connections still open {AFTER_THE_CORE_STOPPED:?} after the models stopped; closing them");
            listeners.iter().for_each(JoinHandle::abort);
        }
        let _ = self.loader.await;
    }
}

/// How long the connections are given to send their answers once the core
/// server has stopped (every request it held has its answer by then).
const AFTER_THE_CORE_STOPPED: Duration = Duration::from_secs(5);

/// The longest drain timeout (`drain_ms`) among the repository's models
/// with a good configuration; the core server's default without any.
fn drain_timeout(app: &App) -> Duration {
    let models = app.models.read().unwrap_or_else(|e| e.into_inner());
    models
        .values()
        .filter_map(|m| m.loaded.as_ref().ok())
        .map(|(config, _)| Duration::from_millis(config.drain_ms))
        .max()
        .unwrap_or(ModelSettings::default().drain_timeout)
}

/// Waits up to `limit` for every task in `tasks` to end, taking those that
/// did out of it; true if all did.
async fn all_ended(tasks: &mut Vec<JoinHandle<()>>, limit: Duration) -> bool {
    let waited = tokio::time::timeout(limit, async {
        // A task is taken out right after it ended, with no await between:
        // one the time limit cuts short is still in `tasks`, unended.
        while let Some(task) = tasks.last_mut() {
            let _ = task.await;
            tasks.pop();
        }
    });
    waited.await.is_ok()
}
