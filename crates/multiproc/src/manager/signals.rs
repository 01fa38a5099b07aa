//! The manager's side of `Event` and `Barrier`.

use std::sync::Mutex;

use super::code;
use super::collections::wrong;
use super::protocol::{Kind, Op, RemoteError, Reply, Response};
use super::server::Caller;
use super::waiting::{Waiters, lock, wait_while};

/// An `Event`: a flag that waiters wait to see set.
#[derive(Debug, Default)]
pub(crate) struct EventState {
    set: Mutex<bool>,
    changed: Waiters,
}

impl EventState {
    /// Ends the calls waiting on this removed object.
    pub(crate) fn retire(&self) {
        self.changed.retire(&self.set);
    }

    pub(crate) fn call(&self, op: Op, caller: &Caller<'_>) -> Response {
        let mut set = lock(&self.set);
        Ok(match op {
            Op::Set => {
                *set = true;
                self.changed.notify_all();
                Reply::Unit
            }
            Op::ClearEvent => {
                *set = false;
                Reply::Unit
            }
            Op::IsSet => Reply::Bool(*set),
            Op::Wait { timeout } => {
                let (set, waited) = wait_while(&self.changed, set, timeout, caller, |s| !*s);
                match waited {
                    Ok(()) | Err(RemoteError::Timeout) => Reply::Bool(*set),
                    Err(e) => return Err(e),
                }
            }
            other => return Err(wrong(&other, Kind::Event)),
        })
    }
}

/// A `Barrier` for a fixed number of parties.
#[derive(Debug)]
pub(crate) struct BarrierState {
    inner: Mutex<BarrierInner>,
    changed: Waiters,
    parties: u32,
    /// Runs once per pass, in the manager, when the last party arrives.
    action: Option<fn()>,
}

#[derive(Debug, Default)]
struct BarrierInner {
    /// Parties waiting in the current pass.
    count: u32,
    /// Number of the current pass.
    generation: u64,
    broken: bool,
    /// The pass whose waiters a `reset` broke.
    reset: Option<u64>,
}

impl BarrierState {
    pub(crate) fn new(parties: u32, action: Option<fn()>) -> BarrierState {
        BarrierState { inner: Mutex::new(BarrierInner::default()), changed: Waiters::default(), parties, action }
    }

    /// Ends the calls waiting on this removed object.
    pub(crate) fn retire(&self) {
        self.changed.retire(&self.inner);
    }

    pub(crate) fn call(&self, op: Op, caller: &Caller<'_>) -> Response {
        let mut b = lock(&self.inner);
        Ok(match op {
            Op::BarrierWait { timeout } => {
                if b.broken {
                    return Err(RemoteError::BarrierBroken);
                }
                let (pass, index) = (b.generation, b.count);
                b.count += 1;
                if b.count >= self.parties {
                    if let Some(action) = self.action
                        && let Err(e) = code::guarded(action)
                    {
                        // A failed action breaks the barrier for every party.
                        b.broken = true;
                        b.count = 0;
                        self.changed.notify_all();
                        return Err(e);
                    }
                    b.count = 0;
                    b.generation += 1;
                    self.changed.notify_all();
                    return Ok(Reply::Count(index.into()));
                }
                let (mut b, waited) =
                    wait_while(&self.changed, b, timeout, caller, |b| b.generation == pass && !b.broken);
                if b.reset == Some(pass) || (b.broken && b.generation == pass && waited.is_ok()) {
                    return Err(RemoteError::BarrierBroken);
                }
                if let Err(e) = waited {
                    // A timeout (or a party gone) breaks the barrier for everyone.
                    if b.generation == pass {
                        b.broken = true;
                        b.count = 0;
                        self.changed.notify_all();
                    }
                    return Err(e);
                }
                Reply::Count(index.into())
            }
            Op::Abort => {
                b.broken = true;
                b.count = 0;
                self.changed.notify_all();
                Reply::Unit
            }
            Op::Reset => {
                if b.count > 0 {
                    b.reset = Some(b.generation);
                }
                b.generation += 1;
                b.count = 0;
                b.broken = false;
                self.changed.notify_all();
                Reply::Unit
            }
            Op::Parties => Reply::Count(self.parties.into()),
            Op::NWaiting => Reply::Count(b.count.into()),
            Op::IsBroken => Reply::Bool(b.broken),
            other => return Err(wrong(&other, Kind::Barrier)),
        })
    }
}
