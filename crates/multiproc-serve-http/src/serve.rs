//! Running the front end: bind the listeners, load the repository into a
//! core server, serve, and on the shutdown signal stop accepting, finish
//! the requests in flight, then stop the workers.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use multiproc_serve::Server;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{App, HttpOptions, metrics_router, router};
use crate::repository::{add_model, scan};

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

/// A started server: its addresses, and the future that runs it.
#[derive(Debug)]
pub struct Running {
    /// The inference address actually bound (port 0 resolved).
    pub http_addr: SocketAddr,
    /// The metrics address actually bound.
    pub metrics_addr: Option<SocketAddr>,
    /// The shared state (core server, repository).
    pub app: Arc<App>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

/// Binds the listeners, then loads every model of the repository (a bad
/// one is listed with its reason and the others go on). Binding comes
/// first so that an address in use is reported at once, before any model
/// loads; nothing is served until [`Running::run`], so readiness is never
/// answered before the models are loaded (a connection made meanwhile waits
/// in the listener's backlog).
///
/// # Errors
///
/// An address cannot be bound or the repository cannot be read.
pub async fn start(options: ServeOptions) -> Result<Running, StartError> {
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
    let core = Server::new();
    let loading = models.clone();
    let loader = core.clone();
    // Loading waits for the workers to be ready: off the async threads.
    let _ = tokio::task::spawn_blocking(move || {
        for m in &loading {
            match (&m.loaded, add_model(&loader, m)) {
                (Err(e), _) => tracing::warn!(model = %m.name, "unavailable: {e}"),
                (Ok(_), Err(e)) => tracing::warn!(model = %m.name, "did not load: {e}"),
                (Ok(_), Ok(())) => tracing::info!(model = %m.name, "ready"),
            }
        }
    })
    .await;
    let app = App::new(core, repo, models, options.http);
    Ok(Running { http_addr, metrics_addr, app, listener, metrics_listener })
}

impl Running {
    /// Serves until `shutdown` completes; then stops accepting, lets the
    /// requests in flight finish, and stops every worker.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let header_timeout = self.app.options.header_timeout;
        let metrics = self.metrics_listener.map(|l| {
            let router = metrics_router(Arc::clone(&self.app));
            tokio::spawn(crate::listen::serve(l, router, None, header_timeout, stop_rx.clone()))
        });
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing the requests in flight");
            let _ = stop_tx.send(true);
        });
        let router = router(Arc::clone(&self.app));
        crate::listen::serve(self.listener, router, Some(Arc::clone(&self.app)), header_timeout, stop_rx).await;
        if let Some(m) = metrics {
            let _ = m.await;
        }
        let core = self.app.core.clone();
        let _ = tokio::task::spawn_blocking(move || core.shutdown()).await;
    }
}
