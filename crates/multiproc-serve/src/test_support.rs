//! Helpers shared by the crate's unit tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the guards it handed out that are still alive: what a request
/// holds (see [`crate::Request::hold`]), to see when it is dropped.
#[derive(Clone, Default)]
pub(crate) struct Alive(Arc<AtomicUsize>);

impl Alive {
    /// A guard, counted until it is dropped.
    pub fn guard(&self) -> impl std::any::Any + Send + Sync {
        self.0.fetch_add(1, Ordering::Relaxed);
        Guard(Arc::clone(&self.0))
    }

    /// The guards alive.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
