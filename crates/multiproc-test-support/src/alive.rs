//! Counting values alive: what a test hands to code that should drop it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the guards it handed out that are still alive, to see when the
/// code a test gave them to drops them (what a serving request holds, for
/// one).
#[derive(Clone, Debug, Default)]
pub struct Alive(Arc<AtomicUsize>);

impl Alive {
    /// A guard, counted until it is dropped.
    pub fn guard(&self) -> impl std::any::Any + Send + Sync + use<> {
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
