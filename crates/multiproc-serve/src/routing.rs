//! Routing a request's encoded input to a version's queue: the version it
//! names or the model's default, again when a version is switched away
//! under it, and to the model's successor when the model was reloaded (a
//! new entry under its name) after the request looked it up.

use std::sync::Arc;

use crate::batcher::Pending;
use crate::error::ServeError;
use crate::registry::ModelEntry;
use crate::server::Server;

impl Server {
    /// Queues a request for a model version (also the pipelines' way in).
    pub(crate) fn submit_bytes(
        &self,
        entry: &Arc<ModelEntry>,
        version: Option<u64>,
        pending: Pending,
        force: bool,
    ) -> Result<(), ServeError> {
        let mut pending = pending;
        let mut entry = Arc::clone(entry);
        // A model reloaded with new versions (`add` under a taken name) is a
        // new entry; a request that looked up the old one just before the
        // swap goes to its successor instead of failing.
        for _ in 0..3 {
            match Self::admit(&entry, version, pending, force) {
                Ok(()) => return Ok(()),
                Err(refused) => {
                    let (p, e) = *refused;
                    match self.successor(&entry, &e) {
                        Some(next) => (entry, pending) = (next, p),
                        None => return Err(e),
                    }
                }
            }
        }
        Err(ServeError::NotReady { model: entry.name.clone(), version, reason: "the model is being reloaded".into() })
    }

    /// The entry that replaced `entry` under its name, when `e` says the
    /// request found `entry` unloaded or draining.
    fn successor(&self, entry: &Arc<ModelEntry>, e: &ServeError) -> Option<Arc<ModelEntry>> {
        if e.kind() != crate::ErrorKind::NotReady {
            return None;
        }
        self.model_entry(&entry.name).ok().filter(|next| !Arc::ptr_eq(next, entry))
    }

    /// Queues `pending` for a version of `entry`; gives it back on failure.
    fn admit(
        entry: &ModelEntry,
        version: Option<u64>,
        mut pending: Pending,
        force: bool,
    ) -> Result<(), Box<(Pending, ServeError)>> {
        // A default-version request that meets a version being switched away
        // looks again: the swap is atomic, so the second look finds the new one.
        for _ in 0..3 {
            let group = match entry.resolve(version) {
                Ok(g) => g,
                Err(e) => return Err(Box::new((pending, e))),
            };
            match group.admit(pending, force) {
                Ok(()) => return Ok(()),
                Err(refused) => {
                    let (p, e) = *refused;
                    if version.is_some() || e.kind() != crate::ErrorKind::NotReady {
                        group.counters.failure(e.kind(), p.failed_after(std::time::Instant::now()));
                        return Err(Box::new((p, e)));
                    }
                    pending = p;
                }
            }
        }
        let e =
            ServeError::NotReady { model: entry.name.clone(), version, reason: "no version accepts requests".into() };
        Err(Box::new((pending, e)))
    }

    /// Queues a pipeline's chunk of encoded inputs for a model's default
    /// version (or, if the model was reloaded meanwhile, its successor's).
    pub(crate) fn submit_many(
        &self,
        entry: &Arc<ModelEntry>,
        batch: Vec<Pending>,
    ) -> Result<(), (Vec<Pending>, ServeError)> {
        let mut entry = Arc::clone(entry);
        let mut batch = batch;
        for _ in 0..3 {
            match Self::admit_many(&entry, batch) {
                Ok(()) => return Ok(()),
                Err((b, e)) => match self.successor(&entry, &e) {
                    Some(next) => (entry, batch) = (next, b),
                    None => return Err((b, e)),
                },
            }
        }
        let e = ServeError::NotReady {
            model: entry.name.clone(),
            version: None,
            reason: "the model is being reloaded".into(),
        };
        Err((batch, e))
    }

    fn admit_many(entry: &ModelEntry, mut batch: Vec<Pending>) -> Result<(), (Vec<Pending>, ServeError)> {
        for _ in 0..3 {
            let group = match entry.resolve(None) {
                Ok(g) => g,
                Err(e) => return Err((batch, e)),
            };
            match group.admit_many(batch) {
                Ok(()) => return Ok(()),
                Err((b, e)) if e.kind() == crate::ErrorKind::NotReady => batch = b,
                Err((b, e)) => {
                    // Counted as a request sent to the version itself is (see `admit`).
                    let now = std::time::Instant::now();
                    b.iter().for_each(|p| group.counters.failure(e.kind(), p.failed_after(now)));
                    return Err((b, e));
                }
            }
        }
        let e = ServeError::NotReady {
            model: entry.name.clone(),
            version: None,
            reason: "no version accepts requests".into(),
        };
        Err((batch, e))
    }
}
