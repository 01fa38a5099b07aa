//! What a version reports: its status, and its counters for the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::VersionGroup;
use crate::metrics::VersionMetrics;
use crate::status::{VersionState, VersionStatus, WorkerState, WorkerStatus};

impl VersionGroup {
    /// The version's status.
    pub fn status(&self) -> VersionStatus {
        let s = self.lock();
        let now = Instant::now();
        let workers: Vec<WorkerStatus> = s
            .workers
            .iter()
            .zip(&s.backoff_until)
            .map(|(w, until)| WorkerStatus { backoff: until.map(|t| t.saturating_duration_since(now)), ..w.clone() })
            .collect();
        let live = workers.iter().any(|w| matches!(w.state, WorkerState::Idle | WorkerState::Busy));
        VersionStatus {
            version: self.version,
            state: s.state,
            ready: s.state == VersionState::Ready && live,
            queue_depth: self.queue.len(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            restarts: workers.iter().map(|w| w.restarts).sum(),
            recent_crashes: s
                .crashes
                .iter()
                .filter(|t| now.duration_since(**t) <= self.settings.restart.crash_window)
                .count() as u32,
            last_failure: s.last_failure.clone(),
            workers,
        }
    }

    /// The version's counters.
    pub fn metrics(&self) -> VersionMetrics {
        let mut workers = BTreeMap::new();
        for w in &self.lock().workers {
            let label = match w.state {
                WorkerState::Starting => "starting",
                WorkerState::Idle => "idle",
                WorkerState::Busy => "busy",
                WorkerState::BackingOff => "backing_off",
                WorkerState::Stopped => "stopped",
            };
            *workers.entry(label.to_string()).or_insert(0u64) += 1;
        }
        let pending = (self.queue.len() + self.in_flight.load(Ordering::Relaxed)) as u64;
        self.counters.snapshot(&self.model, self.version, pending, workers)
    }
}
