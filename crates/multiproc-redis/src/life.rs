//! A pool's life on the caller's side: open, closed (no new calls), or
//! terminated (the calls in flight fail now), and the count of calls in
//! flight that `join` waits for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::dispatch::Shared;

/// Whether a pool takes new calls, and how many are in flight.
#[derive(Debug, Default)]
pub(crate) struct Life {
    state: Mutex<LifeState>,
    idle: Condvar,
    /// Read by every call's wait loop, so it is an atomic as well.
    terminated: AtomicBool,
}

#[derive(Debug, Default)]
struct LifeState {
    closed: bool,
    calls: usize,
}

impl Life {
    fn lock(&self) -> MutexGuard<'_, LifeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No new calls from now on.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    /// Closed, and the calls in flight are to fail.
    pub(crate) fn terminate(&self) {
        self.close();
        // ORDERING: Release pairs with the Acquire in `is_terminated`.
        self.terminated.store(true, Ordering::Release);
    }

    /// True after `close` or `terminate`.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// True after `terminate`.
    pub(crate) fn is_terminated(&self) -> bool {
        // ORDERING: Acquire pairs with the Release in `terminate`.
        self.terminated.load(Ordering::Acquire)
    }

    /// Waits until no call is in flight, or `deadline`; true when none is.
    pub(crate) fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        let st = self.lock();
        let st = match deadline {
            None => self.idle.wait_while(st, |s| s.calls > 0).unwrap_or_else(|e| e.into_inner()),
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                self.idle.wait_timeout_while(st, left, |s| s.calls > 0).unwrap_or_else(|e| e.into_inner()).0
            }
        };
        st.calls == 0
    }
}

/// One call in flight: counted from its start until this is dropped.
#[derive(Debug)]
pub(crate) struct CallGuard(Arc<Shared>);

impl CallGuard {
    /// A new call, unless the pool is closed (`None` then). The check and
    /// the count are one step, so `join` cannot miss a call begun before
    /// `close`.
    pub(crate) fn begin(shared: &Arc<Shared>) -> Option<CallGuard> {
        let mut st = shared.life.lock();
        if st.closed {
            return None;
        }
        st.calls += 1;
        Some(CallGuard(shared.clone()))
    }

    /// One more hold on a call already begun (closed or not).
    pub(crate) fn hold(shared: &Arc<Shared>) -> CallGuard {
        shared.life.lock().calls += 1;
        CallGuard(shared.clone())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let life = &self.0.life;
        let mut st = life.lock();
        st.calls -= 1;
        if st.calls == 0 {
            drop(st);
            life.idle.notify_all();
        }
    }
}
