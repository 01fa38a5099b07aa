//! A model's admin lock. It serializes the model's loads, unloads and
//! switches: each reads and sets the versions served and starts or stops
//! versions, which must not interleave (a drain under a start, a version
//! served but stopped). It never keeps an unload waiting for a load:
//!
//! - an unload waiting for the lock cancels the load holding it (a model
//!   unload any load, a version unload a load of that version): the load
//!   gives up at once (its waits look at [`AdminLock::cancelled`]) and the
//!   unload then stops what it started;
//! - an unload of one version goes ahead beside a load that holds the lock
//!   but only waits for other versions to be ready (see
//!   [`Held::only_waits`]); the next holder takes the lock after it.

use std::sync::{Condvar, Mutex, MutexGuard};

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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UnloadCause::Unloaded => "the model was unloaded",
            UnloadCause::Removed => "the model was removed or replaced",
            UnloadCause::ShuttingDown => "the server is shutting down",
        }
    }
}

/// Why a load of `version` is cancelled by `unload_version`.
pub(crate) fn version_unloaded(version: u64) -> String {
    format!("version {version} was unloaded")
}

/// The unloads waiting for the lock (or, of a version, going on beside a
/// load), and whether the model is retired.
#[derive(Debug, Default)]
struct Unloads {
    /// Unloads of the model waiting for the lock.
    count: usize,
    /// The cause of the latest; `None` when none waits (`count` is 0).
    cause: Option<UnloadCause>,
    /// The versions of `unload_version` calls (one entry each) waiting for
    /// the lock or holding it or going on beside a load: they cancel the
    /// loads of those versions only.
    versions: Vec<u64>,
    /// Removed or shut down: it loads no more (a load that took the lock
    /// before would start workers nothing stops).
    retired: Option<UnloadCause>,
}

#[derive(Debug, Default)]
struct State {
    /// Held by a load, unload, switch or stop.
    held: bool,
    /// Set by a load holding the lock once it only waits for its versions
    /// to be ready: the versions it starts or serves after the wait. An
    /// unload of any other version goes ahead beside it meanwhile.
    only_waits: Option<Vec<u64>>,
    /// Unloads of a version going on beside a load: the lock is taken
    /// after they end.
    beside: usize,
    unloads: Unloads,
}

impl State {
    /// Why a load (of `version`, or of the model) gives up now.
    fn cancelled(&self, version: Option<u64>) -> Option<String> {
        let unloads = &self.unloads;
        match (unloads.cause.or(unloads.retired), version) {
            (Some(c), _) => Some(c.as_str().to_string()),
            (None, Some(v)) if unloads.versions.contains(&v) => Some(version_unloaded(v)),
            (None, _) => None,
        }
    }
}

/// A model's admin lock (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct AdminLock {
    state: Mutex<State>,
    changed: Condvar,
}

/// The lock, held until dropped.
#[derive(Debug)]
pub(crate) struct Held<'a>(&'a AdminLock);

impl Held<'_> {
    /// Says the load holding the lock only waits now for its versions to
    /// be ready, and after the wait starts or serves `keeps` only: an
    /// unload of another version goes ahead meanwhile.
    pub fn only_waits(&self, keeps: Vec<u64>) {
        self.0.state().only_waits = Some(keeps);
        self.0.changed.notify_all();
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.held = false;
        state.only_waits = None;
        self.0.changed.notify_all();
    }
}

/// What an unload of one version holds while it stops the version: the
/// lock, or a place beside a load that only waits for other versions.
#[derive(Debug)]
pub(crate) struct VersionUnload<'a> {
    lock: &'a AdminLock,
    version: u64,
    /// The lock (freed after the rest of the drop), or `None` beside a load.
    held: Option<Held<'a>>,
}

impl Drop for VersionUnload<'_> {
    fn drop(&mut self) {
        let mut state = self.lock.state();
        if self.held.is_none() {
            state.beside -= 1;
        }
        let versions = &mut state.unloads.versions;
        if let Some(i) = versions.iter().position(|v| *v == self.version) {
            versions.swap_remove(i);
        }
        self.lock.changed.notify_all();
    }
}

impl AdminLock {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&'a self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(state).unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the lock is free and nothing goes on beside, and marks
    /// it held (the caller makes the guard once `state` is dropped).
    fn take<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        while state.held || state.beside > 0 {
            state = self.wait(state);
        }
        state.held = true;
        state
    }

    /// Takes the lock (a stop).
    pub fn lock(&self) -> Held<'_> {
        drop(self.take(self.state()));
        Held(self)
    }

    /// Takes the lock for a load of `version` (or of the model): refused,
    /// saying why, while an unload that cancels it waits.
    pub fn to_load(&self, version: Option<u64>) -> Result<Held<'_>, String> {
        let state = self.take(self.state());
        let why = state.cancelled(version);
        drop(state);
        let held = Held(self);
        why.map_or(Ok(held), Err)
    }

    /// Takes the lock for an unload of the model: a load holding it gives
    /// up first. `wake` wakes the loads' waits, to look at
    /// [`AdminLock::cancelled`] again.
    pub fn to_unload(&self, cause: UnloadCause, wake: impl FnOnce()) -> Held<'_> {
        {
            let mut state = self.state();
            state.unloads.count += 1;
            state.unloads.cause = Some(cause);
            if cause != UnloadCause::Unloaded {
                state.unloads.retired = Some(cause);
            }
        }
        wake();
        let mut state = self.take(self.state());
        state.unloads.count -= 1;
        if state.unloads.count == 0 {
            state.unloads.cause = None;
        }
        drop(state);
        Held(self)
    }

    /// Takes the lock for an unload of `version`, or a place beside a load
    /// that only waits for other versions: a load of `version` holding it
    /// gives up first (`wake` wakes its wait). A load of the model waiting
    /// for `version` among others gives up on that version only.
    pub fn to_unload_version(&self, version: u64, wake: impl FnOnce()) -> VersionUnload<'_> {
        self.state().unloads.versions.push(version);
        wake();
        let mut state = self.state();
        loop {
            if !state.held && state.beside == 0 {
                state.held = true;
                return VersionUnload { lock: self, version, held: Some(Held(self)) };
            }
            if state.held && state.only_waits.as_ref().is_some_and(|keeps| !keeps.contains(&version)) {
                state.beside += 1;
                return VersionUnload { lock: self, version, held: None };
            }
            state = self.wait(state);
        }
    }

    /// Retires the model at once (it is removed): no load starts after
    /// this, and one in progress gives up (`wake` wakes its waits); the
    /// unload that follows stops what it started.
    pub fn retire(&self, cause: UnloadCause, wake: impl FnOnce()) {
        self.state().unloads.retired = Some(cause);
        wake();
    }

    /// True once the model is retired (removed, replaced or shut down).
    pub fn is_retired(&self) -> bool {
        self.state().unloads.retired.is_some()
    }

    /// Why a load (of `version`, or of the model) holding the lock gives up
    /// now: an unload of the model or of that version waits for it (and
    /// will stop what the load started), or the model is retired.
    pub fn cancelled(&self, version: Option<u64>) -> Option<String> {
        self.state().cancelled(version)
    }

    /// True while an unload of `version` waits, holds the lock or goes on
    /// beside a load.
    pub fn unloading_version(&self, version: u64) -> bool {
        self.state().unloads.versions.contains(&version)
    }
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
