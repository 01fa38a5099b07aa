//! The manager's side of `Event` and `Barrier`.

use std::collections::HashMap;
use std::sync::Mutex;

use super::code;
use super::collections::wrong;
use super::protocol::{Kind, Op, RemoteError, Reply, Response};
use super::server::Caller;
use super::waiting::{Waiters, lock, wait_while};

/// An `Event`: a flag that waiters wait to see set.
#[derive(Debug, Default)]
pub(crate) struct EventState {
    flag: Mutex<Flag>,
    changed: Waiters,
}

/// An event's flag, with how many times it was set: a waiter woken by a
/// `set` that a `clear` undid before it ran still knows it was set (as
/// Python's `threading.Event` wakes every waiter of a `set`).
#[derive(Debug, Default)]
struct Flag {
    set: bool,
    sets: u64,
}

impl EventState {
    /// Ends the calls waiting on this removed object.
    pub(crate) fn retire(&self) {
        self.changed.retire(&self.flag);
    }

    pub(crate) fn call(&self, op: Op, caller: &Caller<'_>) -> Response {
        let mut flag = lock(&self.flag);
        Ok(match op {
            Op::Set => {
                flag.set = true;
                flag.sets = flag.sets.wrapping_add(1);
                self.changed.notify_all();
                Reply::Unit
            }
            Op::ClearEvent => {
                flag.set = false;
                Reply::Unit
            }
            Op::IsSet => Reply::Bool(flag.set),
            Op::Wait { timeout } => {
                let seen = flag.sets;
                let (flag, waited) = wait_while(&self.changed, flag, timeout, caller, |f| !f.set && f.sets == seen);
                match waited {
                    Ok(()) | Err(RemoteError::Timeout) => Reply::Bool(flag.set || flag.sets != seen),
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
    /// Number of the current pass; every pass ends with a new one, passed
    /// or broken.
    generation: u64,
    /// New waits fail until a reset (after an abort, a timeout, a failed action).
    broken: bool,
    /// Passes that ended broken, with how many of their waiters have not
    /// yet woken to see it. A waiter learns its pass's end from here, not
    /// from `broken`, which a reset may have cleared before it woke.
    broken_passes: HashMap<u64, u32>,
}

impl BarrierInner {
    /// Ends the current pass as broken, for its `waiting` parties.
    fn break_pass(&mut self, waiting: u32) {
        if waiting > 0 {
            self.broken_passes.insert(self.generation, waiting);
        }
        self.generation += 1;
        self.count = 0;
    }

    /// True if pass `pass` ended broken; counts its waiter as told.
    fn told_broken(&mut self, pass: u64) -> bool {
        let Some(left) = self.broken_passes.get_mut(&pass) else { return false };
        *left -= 1;
        if *left == 0 {
            self.broken_passes.remove(&pass);
        }
        true
    }
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
        let mut b = caller.lock(&self.inner)?;
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
                        let others = b.count - 1;
                        b.break_pass(others);
                        b.broken = true;
                        self.changed.notify_all();
                        return Err(e);
                    }
                    b.count = 0;
                    b.generation += 1;
                    self.changed.notify_all();
                    return Ok(Reply::Count(index.into()));
                }
                let (mut b, waited) = wait_while(&self.changed, b, timeout, caller, |b| b.generation == pass);
                if let Err(RemoteError::Removed) = waited {
                    return Err(RemoteError::Removed);
                }
                if b.generation == pass {
                    // Still in its pass: this wait timed out (or its party
                    // is gone), which breaks the barrier for everyone.
                    let others = b.count - 1;
                    b.break_pass(others);
                    b.broken = true;
                    self.changed.notify_all();
                    return Err(waited.err().unwrap_or(RemoteError::Timeout));
                }
                if b.told_broken(pass) {
                    return Err(RemoteError::BarrierBroken);
                }
                waited?;
                Reply::Count(index.into())
            }
            Op::Abort => {
                let waiting = b.count;
                b.break_pass(waiting);
                b.broken = true;
                self.changed.notify_all();
                Reply::Unit
            }
            Op::Reset => {
                let waiting = b.count;
                b.break_pass(waiting);
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
