//! One registered model: its declared versions, which of them are served,
//! and the routing of a request to a version.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::admin::{AdminLock, Held, version_unloaded};
use crate::error::ServeError;
use crate::metrics::VersionMetrics;
use crate::model::{ErasedSpec, IoTypes};
use crate::settings::{ModelSettings, StartMode};
use crate::status::{EndpointKind, ModelStatus, VersionState};
use crate::version::VersionGroup;

pub(crate) use crate::admin::UnloadCause;

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
    /// Serializes load, unload and switch (see [`AdminLock`]).
    admin: AdminLock,
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
            admin: AdminLock::default(),
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

    /// Counts `e`, a request refused before it reached a queue (a bad
    /// input), on the version it was for (as a failure in a queue is
    /// counted), and gives it back. Nothing is counted when no version
    /// would take it: a version number the model does not serve gets no
    /// series.
    pub fn refused(&self, version: Option<u64>, e: ServeError) -> ServeError {
        if let Ok(group) = self.resolve(version) {
            group.counters.failure(e.kind(), std::time::Duration::ZERO);
        }
        e
    }

    /// Starts the policy's versions if the model starts eagerly, and waits.
    pub fn load_if_eager(&self) -> Result<(), ServeError> {
        if self.is_eager() { self.load() } else { Ok(()) }
    }

    /// Takes `admin` for a load of `version` (or of the model): refused,
    /// as cancelled, while an unload waits for it.
    fn admin_to_load(&self, version: Option<u64>) -> Result<Held<'_>, ServeError> {
        self.admin.to_load(version).map_err(|why| ServeError::NotReady {
            model: self.name.clone(),
            version,
            reason: format!("the load was cancelled: {why}"),
        })
    }

    /// Why a load (of `version`, or of the model) holding `admin` gives up
    /// now (see [`AdminLock::cancelled`]).
    fn cancelled(&self, version: Option<u64>) -> Option<String> {
        self.admin.cancelled(version)
    }

    /// Waits until `group` is ready, up to the startup timeout, unless an
    /// unload of the model or of that version cancels the wait.
    fn wait_ready(&self, group: &VersionGroup) -> Result<(), ServeError> {
        group.wait_ready(self.settings.startup_timeout, || self.cancelled(Some(group.version)))
    }

    /// Starts the served versions and waits until each is ready. A version
    /// unloaded meanwhile (`unload_version`, which goes ahead at once) is
    /// left out, as if it was unloaded just after the load; if every one
    /// was, the load fails, saying so.
    pub fn load(&self) -> Result<(), ServeError> {
        self.load_holding(self.lock_to_load()?)
    }

    /// Takes the admin lock for a [`ModelEntry::load_holding`]: from then
    /// on an unload of the model or of a version cancels that load or
    /// leaves the version out (a reload takes it before the entry can be
    /// found, so no unload comes between and is missed).
    pub fn lock_to_load(&self) -> Result<Held<'_>, ServeError> {
        self.admin_to_load(None)
    }

    /// [`ModelEntry::load`] with the lock taken by
    /// [`ModelEntry::lock_to_load`].
    pub fn load_holding(&self, admin: Held<'_>) -> Result<(), ServeError> {
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
        admin.only_waits(Vec::new());
        let waits: Vec<(u64, Result<(), ServeError>)> =
            served.iter().map(|v| (*v, self.wait_ready(&self.groups[v]))).collect();
        // A wait that failed because its version was unloaded is left out.
        let still = self.served();
        let gone = |v: u64| !still.contains(&v) || self.admin.unloading_version(v);
        let (unloaded, kept): (Vec<_>, Vec<_>) = waits.into_iter().partition(|(v, w)| w.is_err() && gone(*v));
        if kept.is_empty() && !unloaded.is_empty() {
            let versions: Vec<u64> = unloaded.iter().map(|(v, _)| *v).collect();
            return Err(ServeError::NotReady {
                model: self.name.clone(),
                version: None,
                reason: format!(
                    "the load was cancelled: every version it loaded was unloaded ({versions:?}); load the model again to serve it"
                ),
            });
        }
        kept.into_iter().find_map(|(_, waited)| waited.err()).map_or(Ok(()), Err)
    }

    /// Drains and stops every version; requests fail with `NotReady` until
    /// `load`. A load in progress is cancelled (it fails, saying `cause`),
    /// and the versions it started stop with the others.
    pub fn unload(&self, cause: UnloadCause) {
        let _admin = self.admin.to_unload(cause, || self.groups.values().for_each(|g| g.wake_waiters()));
        self.unloaded.store(true, Ordering::Release);
        tracing::info!(model = %self.name, "unload");
        for g in self.groups.values() {
            g.unload(cause.as_str());
        }
    }

    /// Retires the model now, before its [`ModelEntry::unload`]: a load in
    /// progress gives up, and it can no more be registered (a reload's new
    /// entry, when the model is removed meanwhile).
    pub fn retire(&self, cause: UnloadCause) {
        self.admin.retire(cause, || self.groups.values().for_each(|g| g.wake_waiters()));
    }

    /// True once the model is retired: removed, replaced or shut down.
    pub fn is_retired(&self) -> bool {
        self.admin.is_retired()
    }

    /// Stops every version at once, ending in `Failed` with `why` (a new
    /// entry that failed to load and was never routed to).
    pub fn stop(&self, why: &str) {
        let _admin = self.admin.lock();
        for g in self.groups.values() {
            g.stop_hard(VersionState::Failed, why);
        }
    }

    pub fn load_version(&self, version: u64) -> Result<(), ServeError> {
        let group = Arc::clone(self.group(version)?);
        let admin = self.admin_to_load(Some(version))?;
        group.start();
        admin.only_waits(vec![version]);
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
    /// progress is cancelled (it fails, saying so), a load of others is
    /// not, nor waited for (this goes ahead beside it).
    pub fn unload_version(&self, version: u64) -> Result<(), ServeError> {
        let group = Arc::clone(self.group(version)?);
        let _admin = self.admin.to_unload_version(version, || group.wake_waiters());
        self.served.write().unwrap_or_else(|e| e.into_inner()).retain(|v| *v != version);
        group.unload(&version_unloaded(version));
        Ok(())
    }

    /// Loads `to`, swaps all traffic to it, drains the others (one still
    /// loading fails its queued requests at once, see [`VersionGroup::unload`]).
    pub fn switch(&self, to: u64) -> Result<(), ServeError> {
        let group = Arc::clone(self.group(to)?);
        let admin = self.admin_to_load(Some(to))?;
        let old = self.served();
        tracing::info!(model = %self.name, from = ?old, to, "switch: loading the new version");
        group.start();
        admin.only_waits(vec![to]);
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
