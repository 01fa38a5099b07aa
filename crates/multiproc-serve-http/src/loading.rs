//! The repository's first load, which runs while the server already
//! answers (as Triton and KServe do; a Kubernetes liveness probe must not
//! wait for big models): the server is live at once and ready once every
//! model has been through its load; a model not through it yet answers 503
//! "loading", and the repository's load and unload are refused until then.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::watch;

use crate::app::App;
use crate::error::ApiError;
use crate::repository::{ModelDir, add_model};

/// The `Retry-After` of a 503 "loading" (the core's "not ready" sends the
/// same).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Which models the first load has not been through yet, and whether it
/// has ended.
#[derive(Debug)]
pub(crate) struct InitialLoad {
    waiting: Mutex<BTreeSet<String>>,
    /// Whether it has ended: what every request asks, without a lock.
    ended: AtomicBool,
    /// The same, for those awaiting the end.
    done: watch::Sender<bool>,
}

impl InitialLoad {
    /// A first load of `models` (those whose configuration is good), or, if
    /// there are none, one already done.
    pub(crate) fn of(models: &[ModelDir]) -> InitialLoad {
        let waiting: BTreeSet<String> = models.iter().filter(|m| m.loaded.is_ok()).map(|m| m.name.clone()).collect();
        let (done, _) = watch::channel(false);
        let load = InitialLoad { waiting: Mutex::new(waiting), ended: AtomicBool::new(false), done };
        load.end_if_empty();
        load
    }

    /// A first load with nothing to load: done.
    pub(crate) fn none() -> InitialLoad {
        InitialLoad::of(&[])
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn end_if_empty(&self) {
        if self.waiting().is_empty() {
            self.ended.store(true, Ordering::Release);
            self.done.send_replace(true);
        }
    }

    /// Whether the first load has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Whether the first load has not been through `name` yet.
    pub(crate) fn is_waiting(&self, name: &str) -> bool {
        !self.is_done() && self.waiting().contains(name)
    }

    /// The first load has been through `name` (it loaded, or failed to).
    fn went_through(&self, name: &str) {
        self.waiting().remove(name);
        self.end_if_empty();
    }

    /// The first load stops (the server is stopping): what it did not reach
    /// is no longer waited for.
    fn abandon(&self) {
        self.waiting().clear();
        self.end_if_empty();
    }

    /// Resolves once the first load has ended.
    pub(crate) fn ended(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut done = self.done.subscribe();
        async move {
            // The sender lives in the app; if it is gone, so is the load.
            let _ = done.wait_for(|done| *done).await;
        }
    }

    /// The answer about `name` while the first load has not been through
    /// it: 503 with `Retry-After`, as the core's own "not ready".
    pub(crate) fn model_loading(name: &str) -> ApiError {
        ApiError {
            retry_after: Some(RETRY_AFTER),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "loading",
                format!("model '{name}' is loading (the server is loading its repository); retry later"),
            )
        }
    }

    /// Refuses a repository `action` (load, unload) until the first load
    /// has ended.
    pub(crate) fn check_done(&self, action: &str, name: &str) -> Result<(), ApiError> {
        match self.is_done() {
            true => Ok(()),
            false => Err(ApiError {
                retry_after: Some(RETRY_AFTER),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "loading",
                    format!(
                        "cannot {action} model '{name}' yet: the server is still loading its repository; \
                         retry once GET /v2/health/ready answers 200"
                    ),
                )
            }),
        }
    }
}

/// Ends the first load when dropped, also by a panic: whoever awaits its
/// end must not wait for ever.
struct EndOnDrop<'a>(&'a InitialLoad);

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// Loads `models` into the app's core server one by one (a bad one is
/// logged and the others go on), marking each as gone through. Blocking:
/// loading waits for the workers to be ready. Stops before the next model
/// once `stop` is true or its sender is gone.
pub(crate) fn load_repository(app: &Arc<App>, models: &[ModelDir], stop: &watch::Receiver<bool>) {
    let _end = EndOnDrop(&app.initial_load);
    for m in models {
        if *stop.borrow() || stop.has_changed().is_err() {
            tracing::info!("stopping: the models not loaded yet are not loaded");
            break;
        }
        match (&m.loaded, add_model(&app.core, m)) {
            (Err(e), _) => tracing::warn!(model = %m.name, "unavailable: {e}"),
            (Ok(_), Err(e)) => tracing::warn!(model = %m.name, "did not load: {e}"),
            (Ok(_), Ok(())) => tracing::info!(model = %m.name, "ready"),
        }
        app.initial_load.went_through(&m.name);
    }
}
