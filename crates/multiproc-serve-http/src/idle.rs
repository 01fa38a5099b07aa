//! The watchdog of a connection: closes one on which no request has started
//! and none has been in flight for a while. A client that trickles its
//! request headers (slowloris), or connects and sends nothing, or keeps a
//! connection idle, or does not read its answer, holds it no longer than
//! that. (Bodies have their own limits, in `body::read_body`.)
//!
//! It costs a request two uncontended atomic additions and a reference
//! count, not a timer: one interval per connection looks at the counts.
//! (hyper's own header read timeout arms and drops a timer for every
//! request, which measured about 3 µs of server CPU per request.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

/// The requests of one connection: how many have started (their headers
/// were read) and how many are being answered.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    started: AtomicU64,
    in_flight: AtomicUsize,
}

/// A request in flight on a connection, for as long as it lives.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    /// Counts a request that has started on the connection of `activity`.
    pub(crate) fn enter(activity: &Arc<Activity>) -> InFlight {
        activity.started.fetch_add(1, Relaxed);
        activity.in_flight.fetch_add(1, Relaxed);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Resolves once no request has started and none has been in flight for
/// at least `limit` (at most one and a half times it) on `activity`'s
/// connection.
pub(crate) async fn idle_for(activity: &Activity, limit: Duration) {
    let tick = (limit / 2).max(Duration::from_millis(1));
    let Some(first) = Instant::now().checked_add(tick) else {
        // A limit past the clock's end (`Duration::MAX`) is no limit.
        return std::future::pending().await;
    };
    let mut interval = tokio::time::interval_at(first, tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut seen, mut quiet_ticks) = (activity.started.load(Relaxed), 0);
    loop {
        interval.tick().await;
        let started = activity.started.load(Relaxed);
        if started != seen || activity.in_flight.load(Relaxed) > 0 {
            (seen, quiet_ticks) = (started, 0);
        } else {
            quiet_ticks += 1;
            if quiet_ticks >= 2 {
                return;
            }
        }
    }
}

/// Resolves once a request has started on `activity`'s connection. Used
/// only while shutting down, for a second at most, on connections that
/// had none when the shutdown came: it looks every few milliseconds,
/// costing the requests nothing.
pub(crate) async fn first_request(activity: &Activity) {
    while activity.started.load(Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
    }

    #[test]
    fn a_quiet_connection_is_idle_after_its_limit_and_a_busy_one_is_not() {
        let quiet = Activity::default();
        let t = std::time::Instant::now();
        run(idle_for(&quiet, Duration::from_millis(40)));
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(40) && took < Duration::from_secs(5), "{took:?}");
        let busy = Arc::new(Activity::default());
        let _request = InFlight::enter(&busy);
        let waited = run(async {
            tokio::time::timeout(Duration::from_millis(150), idle_for(&busy, Duration::from_millis(40))).await
        });
        assert!(waited.is_err(), "a connection with a request in flight was called idle");
    }

    #[test]
    fn a_limit_past_the_clock_s_end_never_expires_and_does_not_panic() {
        let quiet = Activity::default();
        let waited =
            run(async { tokio::time::timeout(Duration::from_millis(100), idle_for(&quiet, Duration::MAX)).await });
        assert!(waited.is_err(), "Duration::MAX expired");
    }
}
