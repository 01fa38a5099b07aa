//! One registered model: its declared versions, which of them are served,
//! and the routing of a request to a version.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::error::ServeError;
use crate::metrics::VersionMetrics;
use crate::model::{ErasedSpec, IoTypes};
use crate::settings::{ModelSettings, StartMode};
use crate::status::{EndpointKind, ModelStatus, VersionState};
use crate::version::VersionGroup;

/// Why a model is unloaded: said by the error of a load it cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnloadCause {
    /// `Server::unload`.
    Unloaded,
    /// The model was removed, or replaced by a reload.
    Removed,
    /// The server is shutting down.
    ShuttingDown,
}

impl UnloadCause {
    fn as_str(self) -> &'static str {
        match self {
            UnloadCause::Unloaded => "the model was unloaded",
            UnloadCause::Removed => "the model was removed or replaced",
            UnloadCause::ShuttingDown => "the server is shutting down",
        }
    }
}

/// Why a load of `version` is cancelled by `unload_version`.
fn version_unloaded(version: u64) -> String {
    format!("version {version} was unloaded")
}

/// The unloads waiting for a model's `admin` lock, and whether the model
/// is retired.
#[derive(Debug, Default)]
struct WaitingUnloads {
    /// Unloads of the model.
    count: usize,
    /// The cause of the latest; `None` when none waits (`count` is 0).
    cause: Option<UnloadCause>,
    /// The versions of `unload_version` calls (one entry each): they
    /// cancel the loads of those versions only.
    versions: Vec<u64>,
    /// Removed or shut down: it loads no more (a load that took the
    /// entry before would start workers nothing stops).
    retired: Option<UnloadCause>,
}

/// A model and its versions.
pub(crate) struct ModelEntry {
    pub name: String,
    pub settings: Arc<ModelSettings>,
    pub io: IoTypes,
    /// Every declared version (started or not).
    groups: BTreeMap<u64, Arc<VersionGroup>>,
    /// The versions requests may go to, ascending; swapped atomically.
    served: RwLock<Vec<u64>>,
    unloaded: AtomicBool,
    /// Serializes load, unload and switch: each reads and sets `served`
    /// and `unloaded` and starts or drains versions, which must not
    /// interleave (a drain under a start, a version served but stopped).
    admin: Mutex<()>,
    /// Unloads waiting for `admin`: a load holding it (`load`,
    /// `load_version`, `switch`) gives up for them at once, rather than
    /// keep them (a shutdown) waiting up to its startup timeout. The
    /// unload then stops the versions it was loading.
    waiting_unloads: Mutex<WaitingUnloads>,
}

impl ModelEntry {
    pub fn new(spec: ErasedSpec) -> Arc<ModelEntry> {
        let settings = Arc::new(spec.settings);
        let groups: BTreeMap<u64, Arc<VersionGroup>> = spec
            .versions
            .into_iter()
            .map(|(v, spawner)| (v, VersionGroup::new(&spec.name, v, Arc::clone(&settings), spawner)))
            .collect();
        let declared: Vec<u64> = groups.keys().copied().collect();
        let served = settings.version_policy.select(&declared);
        Arc::new(ModelEntry {
            name: spec.name,
            settings,
            io: spec.io,
            groups,
            served: RwLock::new(served),
            unloaded: AtomicBool::new(false),
            admin: Mutex::new(()),
            waiting_unloads: Mutex::new(WaitingUnloads::default()),
        })
    }

    pub fn is_eager(&self) -> bool {
        self.settings.start == StartMode::Eager
    }

    fn served(&self) -> Vec<u64> {
        self.served.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn group(&self, version: u64) -> Result<&Arc<VersionGroup>, ServeError> {
        self.groups.get(&version).ok_or_else(|| ServeError::UnknownVersion { model: self.name.clone(), version })
    }

    /// The version a request goes to: the one named (if served), or the
    /// highest ready served version, or the highest served version that is
    /// still coming up (starting, or ready with its workers restarting).
    pub fn resolve(&self, version: Option<u64>) -> Result<Arc<VersionGroup>, ServeError> {
        if self.unloaded.load(Ordering::Acquire) {
            return Err(ServeError::NotReady {
                model: self.name.clone(),
                version,
                reason: "the model is unloaded; load it first".into(),
            });
        }
        let served = self.served.read().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = version {
            let group = self.group(v)?;
            if !served.contains(&v) {
                return Err(ServeError::NotReady {
                    model: self.name.clone(),
                    version: Some(v),
                    reason: format!("version {v} is not loaded (loaded: {:?})", *served),
                });
            }
            return Ok(Arc::clone(group));
        }
        let mut groups = served.iter().rev().filter_map(|v| self.groups.get(v));
        if let Some(g) = groups.clone().find(|g| g.is_ready()) {
            return Ok(Arc::clone(g));
        }
        let coming = groups.find(|g| {
            matches!(
                g.state(),
                VersionState::NotStarted | VersionState::Loading | VersionState::Ready | VersionState::CrashLooping
            )
        });
        coming.map(Arc::clone).ok_or_else(|| ServeError::NotReady {
            model: self.name.clone(),
            version: None,
            reason: format!("no loaded version is ready (loaded: {served:?})"),
        })
    }

    /// Starts the policy's versions if the model starts eagerly, and waits.
    pub fn load_if_eager(&self) -> Result<(), ServeError> {
        if self.is_eager() { self.load() } else { Ok(()) }
    }

    /// Takes `admin` for a load of `version` (or of the model): refused,
    /// as cancelled, while an unload waits for it.
    fn admin_to_load(&self, version: Option<u64>) -> Result<MutexGuard<'_, ()>, ServeError> {
        let admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        match self.cancelled(version) {
            Some(why) => Err(ServeError::NotReady {
                model: self.name.clone(),
                version,
                reason: format!("the load was cancelled: {why}"),
            }),
            None => Ok(admin),
        }
    }

    /// Takes `admin` for an unload: a load holding it gives up first.
    fn admin_to_unload(&self, cause: UnloadCause) -> MutexGuard<'_, ()> {
        let enter = |waiting: &mut WaitingUnloads| {
            waiting.count += 1;
            waiting.cause = Some(cause);
            if cause != UnloadCause::Unloaded {
                waiting.retired = Some(cause);
            }
        };
        let leave = |waiting: &mut WaitingUnloads| {
            waiting.count -= 1;
            if waiting.count == 0 {
                waiting.cause = None;
            }
        };
        self.admin_while_waiting(self.groups.values(), enter, leave)
    }

    /// Takes `admin` for an unload of `group`: a load of that version
    /// holding it gives up first (a load of other versions does not).
    fn admin_to_unload_version(&self, group: &Arc<VersionGroup>) -> MutexGuard<'_, ()> {
        let version = group.version;
        let enter = |waiting: &mut WaitingUnloads| waiting.versions.push(version);
        let leave = |waiting: &mut WaitingUnloads| {
            if let Some(i) = waiting.versions.iter().position(|v| *v == version) {
                waiting.versions.swap_remove(i);
            }
        };
        self.admin_while_waiting([group], enter, leave)
    }

    /// Takes `admin`, said (by `enter`, undone by `leave`) in
    /// `waiting_unloads` while it waits, after waking the loads of
    /// `groups` to look at it.
    fn admin_while_waiting<'a>(
        &self,
        groups: impl IntoIterator<Item = &'a Arc<VersionGroup>>,
        enter: impl FnOnce(&mut WaitingUnloads),
        leave: impl FnOnce(&mut WaitingUnloads),
    ) -> MutexGuard<'_, ()> {
        enter(&mut self.waiting_unloads.lock().unwrap_or_else(|e| e.into_inner()));
        for g in groups {
            g.wake_waiters();
        }
        let admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        leave(&mut self.waiting_unloads.lock().unwrap_or_else(|e| e.into_inner()));
        admin
    }

    /// Why a load (of `version`, or of the model) holding `admin` gives up
    /// now: an unload of the model or of that version waits for it (and
    /// will stop what the load started), or the model is retired.
    fn cancelled(&self, version: Option<u64>) -> Option<String> {
        let waiting = self.waiting_unloads.lock().unwrap_or_else(|e| e.into_inner());
        let cause = waiting.cause.or(waiting.retired);
        match (cause, version) {
            (Some(c), _) => Some(c.as_str().to_string()),
            (None, Some(v)) if waiting.versions.contains(&v) => Some(version_unloaded(v)),
            (None, _) => None,
        }
    }

    /// Waits until `group` is ready, up to the startup timeout, unless an
    /// unload of the model or of that version cancels the wait.
    fn wait_ready(&self, group: &VersionGroup) -> Result<(), ServeError> {
        group.wait_ready(self.settings.startup_timeout, || self.cancelled(Some(group.version)))
    }

    /// Starts the served versions and waits until each is ready.
    pub fn load(&self) -> Result<(), ServeError> {
        let _admin = self.admin_to_load(None)?;
        self.unloaded.store(false, Ordering::Release);
        let served = self.served();
        let served = if served.is_empty() {
            let declared: Vec<u64> = self.groups.keys().copied().collect();
            let again = self.settings.version_policy.select(&declared);
            *self.served.write().unwrap_or_else(|e| e.into_inner()) = again.clone();
            again
        } else {
            served
        };
        for v in &served {
            self.groups[v].start();
        }
        let mut first_error = None;
        for v in &served {
            if let Err(e) = self.wait_ready(&self.groups[v]) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Drains and stops every version; requests fail with `NotReady` until
    /// `load`. A load in progress is cancelled (it fails, saying `cause`),
    /// and the versions it started stop with the others.
    pub fn unload(&self, cause: UnloadCause) {
        let _admin = self.admin_to_unload(cause);
        self.unloaded.store(true, Ordering::Release);
        tracing::info!(model = %self.name, "unload");
        for g in self.groups.values() {
            g.unload(cause.as_str());
        }
    }

    /// Stops every version at once, ending in `Failed` with `why` (a new
    /// entry that failed to load and was never routed to).
    pub fn stop(&self, why: &str) {
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        for g in self.groups.values() {
            g.stop_hard(VersionState::Failed, why);
        }
    }

    pub fn load_version(&self, version: u64) -> Result<(), ServeError> {
        let group = Arc::clone(self.group(version)?);
        let _admin = self.admin_to_load(Some(version))?;
        group.start();
        if let Err(e) = self.wait_ready(&group) {
            // Cancelled: the unload that waits stops it.
            if self.cancelled(Some(version)).is_none() {
                group.stop_hard(VersionState::Failed, &e.to_string());
            }
            return Err(e);
        }
        let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
        // An unloaded model serves again, this version alone (the ones it
        // served before the unload stay stopped).
        if self.unloaded.swap(false, Ordering::AcqRel) {
            served.clear();
        }
        if !served.contains(&version) {
            served.push(version);
            served.sort_unstable();
        }
        Ok(())
    }

    /// Stops serving `version` and stops it; a load of that version in
    /// progress is cancelled (it fails, saying so), a load of others is not.
    pub fn unload_version(&self, version: u64) -> Result<(), ServeError> {
        let group = Arc::clone(self.group(version)?);
        let _admin = self.admin_to_unload_version(&group);
        self.served.write().unwrap_or_else(|e| e.into_inner()).retain(|v| *v != version);
        group.unload(&version_unloaded(version));
        Ok(())
    }

    /// Loads `to`, swaps all traffic to it, drains the others (one still
    /// loading fails its queued requests at once, see [`VersionGroup::unload`]).
    pub fn switch(&self, to: u64) -> Result<(), ServeError> {
        let group = Arc::clone(self.group(to)?);
        let _admin = self.admin_to_load(Some(to))?;
        let old = self.served();
        tracing::info!(model = %self.name, from = ?old, to, "switch: loading the new version");
        group.start();
        if let Err(e) = self.wait_ready(&group) {
            // Cancelled: the unload that waits stops it (and, an unload of
            // the model, the old versions too).
            match (self.cancelled(None), self.cancelled(Some(to))) {
                (Some(why), _) => {
                    tracing::info!(model = %self.name, to, "switch cancelled: {why}; every version stops");
                }
                (None, Some(why)) => {
                    tracing::info!(model = %self.name, to, "switch cancelled: {why}; the old versions keep serving");
                }
                (None, None) => {
                    tracing::warn!(model = %self.name, to, "switch failed; the old versions keep serving: {e}");
                    if !old.contains(&to) {
                        group.stop_hard(VersionState::Failed, &e.to_string());
                    }
                }
            }
            return Err(e);
        }
        *self.served.write().unwrap_or_else(|e| e.into_inner()) = vec![to];
        self.unloaded.store(false, Ordering::Release);
        tracing::info!(model = %self.name, from = ?old, to, "switch: traffic moved; draining the old versions");
        // An old version still loading never served: its queued requests
        // fail at once, as on an unload (it could answer them only after
        // its load, up to the drain timeout), and say where to send them.
        let why = format!("the model switched to version {to}; send the request again");
        for v in old.iter().filter(|v| **v != to) {
            self.groups[v].unload(&why);
        }
        Ok(())
    }

    /// True while no served version has been ready since it started (each
    /// loads, or was never started): what waits for the model waits for a
    /// load, which an unload cancels.
    pub fn still_loading(&self) -> bool {
        let served = self.served.read().unwrap_or_else(|e| e.into_inner());
        served.iter().all(|v| matches!(self.groups[v].state(), VersionState::NotStarted | VersionState::Loading))
    }

    pub fn is_ready(&self, version: Option<u64>) -> Result<bool, ServeError> {
        match version {
            Some(v) => {
                Ok(self.served().contains(&v) && self.group(v)?.is_ready() && !self.unloaded.load(Ordering::Acquire))
            }
            None => Ok(self.resolve(None).map(|g| g.is_ready()).unwrap_or(false)),
        }
    }

    pub fn status(&self) -> ModelStatus {
        let unloaded = self.unloaded.load(Ordering::Acquire);
        let default = self.resolve(None).ok().filter(|g| g.is_ready()).map(|g| g.version);
        ModelStatus {
            name: self.name.clone(),
            kind: EndpointKind::Model,
            ready: default.is_some(),
            default_version: default,
            unloaded,
            versions: self.groups.values().map(|g| g.status()).collect(),
            pipeline: None,
        }
    }

    pub fn metrics(&self) -> Vec<VersionMetrics> {
        self.groups.values().map(|g| g.metrics()).collect()
    }
}
