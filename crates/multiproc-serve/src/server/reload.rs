//! Adding a model, and reloading one: `add` under a taken name loads a
//! new entry beside the registered one and swaps it in once ready. Until
//! then the new entry is listed in `Inner::reloading`, where an unload of
//! the model or of a version (and shutdown) finds and cancels it.

use std::sync::Arc;

use super::{Endpoint, Inner, Server};
use crate::error::ServeError;
use crate::model::{Model, ModelSpec};
use crate::registry::{ModelEntry, UnloadCause};

/// Keeps a reloaded entry in [`Inner::reloading`] until dropped.
struct Reloading<'a> {
    inner: &'a Inner,
    entry: &'a Arc<ModelEntry>,
}

impl Drop for Reloading<'_> {
    fn drop(&mut self) {
        let mut list = self.inner.reloading.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|e| !Arc::ptr_eq(e, self.entry));
    }
}

impl Server {
    /// Adds a model. With [`StartMode::Eager`](crate::StartMode::Eager) its
    /// versions (by the version policy) start now and this waits until they
    /// are ready (up to the startup timeout). Adding a name that exists
    /// reloads it without downtime: the new workers start, traffic moves
    /// when they are ready, the old ones drain; if the new ones fail, the
    /// old ones keep serving and the error says why.
    ///
    /// # Errors
    ///
    /// Invalid settings, no version, or (eager) the model did not become
    /// ready; it stays registered and `status()` shows why. A reload
    /// fails, saying so, when the model is [unloaded](Server::unload)
    /// while it loads (the new versions stop with the old ones), or every
    /// version it loads is [unloaded](Server::unload_version) meanwhile (a
    /// version unloaded among others is left out, and the reload serves
    /// the rest).
    pub fn add<M: Model>(&self, spec: ModelSpec<M>) -> Result<(), ServeError> {
        self.check_running()?;
        let spec = spec.erase()?;
        let name = spec.name.clone();
        let entry = ModelEntry::new(spec);
        let old = self.endpoints().get(&name).cloned();
        match old {
            Some(Endpoint::Model(old)) => {
                // No request reached the new versions: stop them all, or
                // their workers would go on restarting unseen.
                let (reloading, loaded) = self.load_reload(&entry);
                if let Err(e) = loaded {
                    drop(reloading);
                    entry.stop(&e.to_string());
                    return Err(e);
                }
                // What is replaced is what is registered now: `old`, or
                // the entry of another add that swapped in meanwhile.
                let replaced = self.register(name, Endpoint::Model(Arc::clone(&entry)), true);
                drop(reloading);
                let replaced = replaced?;
                tracing::info!(model = %old.name, "switch: reloaded model; draining the old versions");
                replaced.into_iter().for_each(|e| e.retire(UnloadCause::Removed));
                Ok(())
            }
            Some(Endpoint::Pipeline(_)) => Err(ServeError::Internal(format!(
                "'{name}' is a pipeline; remove it before adding a model of that name"
            ))),
            None => {
                // Another add of the name may have come first: this one
                // replaces it, as a reload.
                let replaced = self.register(name, Endpoint::Model(Arc::clone(&entry)), true)?;
                replaced.into_iter().for_each(|e| e.retire(UnloadCause::Removed));
                entry.load_if_eager()
            }
        }
    }

    /// Loads `entry`, the new entry of a model reloaded (not registered
    /// until it is ready), where a shutdown finds and cancels it. Refused
    /// once shutdown began: the check is made under the lock that
    /// `shutdown` takes to cancel the reloads.
    ///
    /// The entry stays findable there (by `unload`, `unload_version` and
    /// `shutdown`) until the returned guard drops, after it is registered:
    /// an unload that comes before the register cancels the load or stops
    /// the loaded entry, one that comes after finds it registered.
    fn load_reload<'a>(&'a self, entry: &'a Arc<ModelEntry>) -> (Reloading<'a>, Result<(), ServeError>) {
        let reloading = Reloading { inner: &self.inner, entry };
        // Taken before the entry is findable: every unload that finds it
        // then cancels the load, or comes after it.
        let admin = match entry.lock_to_load() {
            Ok(admin) => admin,
            Err(e) => return (reloading, Err(e)),
        };
        {
            let mut list = self.inner.reloading.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = self.check_running() {
                return (reloading, Err(e));
            }
            list.push(Arc::clone(entry));
        }
        let loaded = entry.load_holding(admin);
        (reloading, loaded)
    }

    /// The new entries of `model` being reloaded (see [`Server::load_reload`]).
    pub(super) fn reloads_of(&self, model: &str) -> Vec<Arc<ModelEntry>> {
        let reloading = self.inner.reloading.lock().unwrap_or_else(|e| e.into_inner());
        reloading.iter().filter(|e| e.name == model).cloned().collect()
    }
}
