//! The manager's side of `Lock`, `RLock`, `Condition` and `Semaphore`.
//!
//! A lock records its owner: the client process (its session) and thread
//! that acquired it. When a client process's last connection closes (it
//! exited or was killed), the server calls [`LockState::session_gone`]: a
//! lock that process held is released and marked, and the next acquirer is
//! told `OwnerDied`, as with the shared-memory locks.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::collections::wrong;
use super::protocol::{Kind, Op, Owner, RemoteError, Reply, Response};
use super::server::Caller;
use super::waiting::{Waiters, lock, wait_while};
use crate::ReleaseError;

/// Who holds a lock, how many times (RLock), and whether a holder died.
#[derive(Debug, Default)]
struct Holder {
    owner: Option<Owner>,
    depth: u32,
    died: bool,
}

impl Holder {
    /// Takes a free lock for `owner`; true if its previous holder died.
    fn take(&mut self, owner: Owner, depth: u32) -> bool {
        self.owner = Some(owner);
        self.depth = depth;
        std::mem::take(&mut self.died)
    }

    /// Releases once; true when the lock became free.
    fn release(&mut self, owner: Owner, reentrant: bool) -> Result<bool, RemoteError> {
        match self.owner {
            None => Err(ReleaseError::NotHeld.into()),
            Some(o) if reentrant && o != owner => Err(ReleaseError::NotOwner.into()),
            Some(_) => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 || !reentrant {
                    self.owner = None;
                    self.depth = 0;
                }
                Ok(self.owner.is_none())
            }
        }
    }

    /// Frees the lock if a thread of `session` held it; true if it did.
    fn session_gone(&mut self, session: u64) -> bool {
        if self.owner.is_some_and(|o| o.session == session) {
            *self = Holder { owner: None, depth: 0, died: true };
            return true;
        }
        false
    }
}

/// A `Lock` (any thread may release it) or an `RLock` (reentrant, released
/// by its owner only).
#[derive(Debug, Default)]
pub(crate) struct LockState {
    holder: Mutex<Holder>,
    freed: Waiters,
    reentrant: bool,
}

impl LockState {
    pub(crate) fn new(reentrant: bool) -> LockState {
        LockState { reentrant, ..LockState::default() }
    }

    pub(crate) fn call(&self, op: Op, caller: &Caller<'_>) -> Response {
        let kind = if self.reentrant { Kind::RLock } else { Kind::Lock };
        let mut h = lock(&self.holder);
        Ok(match op {
            Op::Acquire { owner, timeout } => {
                if self.reentrant && h.owner == Some(owner) {
                    h.depth += 1;
                    return Ok(Reply::Acquired { owner_died: false });
                }
                let (mut h, waited) = wait_while(&self.freed, h, timeout, caller, |h| h.owner.is_some());
                waited?;
                Reply::Acquired { owner_died: h.take(owner, 1) }
            }
            Op::Release { owner } => {
                if h.release(owner, self.reentrant)? {
                    // All: a waiter whose client is gone leaves without the lock.
                    self.freed.notify_all();
                }
                Reply::Unit
            }
            Op::IsLocked => Reply::Bool(h.owner.is_some()),
            Op::Depth { owner } if self.reentrant => {
                Reply::Count(if h.owner == Some(owner) { h.depth.into() } else { 0 })
            }
            other => return Err(wrong(&other, kind)),
        })
    }

    /// Ends the calls waiting on this removed object.
    pub(crate) fn retire(&self) {
        self.freed.retire(&self.holder);
    }

    /// See the module docs.
    pub(crate) fn session_gone(&self, session: u64) {
        if lock(&self.holder).session_gone(session) {
            self.freed.notify_all();
        }
    }
}

/// A `Condition`: a reentrant lock and the tickets of its waiters.
#[derive(Debug, Default)]
pub(crate) struct ConditionState {
    inner: Mutex<CondInner>,
    changed: Waiters,
}

#[derive(Debug, Default)]
struct CondInner {
    holder: Holder,
    waiting: VecDeque<u64>,
    /// Notified tickets, each with the first ticket handed out after its
    /// notify (a notify passed on goes only to a waiter that was waiting).
    notified: HashMap<u64, u64>,
    next_ticket: u64,
}

impl ConditionState {
    pub(crate) fn call(&self, op: Op, caller: &Caller<'_>) -> Response {
        let mut c = lock(&self.inner);
        Ok(match op {
            Op::Acquire { owner, timeout } => {
                if c.holder.owner == Some(owner) {
                    c.holder.depth += 1;
                    return Ok(Reply::Acquired { owner_died: false });
                }
                let (mut c, waited) = wait_while(&self.changed, c, timeout, caller, |c| c.holder.owner.is_some());
                waited?;
                Reply::Acquired { owner_died: c.holder.take(owner, 1) }
            }
            Op::Release { owner } => {
                if c.holder.release(owner, true)? {
                    self.changed.notify_all();
                }
                Reply::Unit
            }
            Op::CondWait { owner, timeout } => {
                if c.holder.owner != Some(owner) {
                    return Err(ReleaseError::NotOwner.into());
                }
                let depth = c.holder.depth;
                c.holder = Holder { died: c.holder.died, ..Holder::default() };
                let ticket = c.next_ticket;
                c.next_ticket += 1;
                c.waiting.push_back(ticket);
                self.changed.notify_all();
                let (mut c, waited) =
                    wait_while(&self.changed, c, timeout, caller, |c| !c.notified.contains_key(&ticket));
                let notified = c.notified.remove(&ticket);
                c.waiting.retain(|t| *t != ticket);
                match waited {
                    // The condition was removed: there is no lock to take back.
                    Err(RemoteError::Removed) => return Err(RemoteError::Removed),
                    Err(_) if caller.gone() => {
                        // Nobody reads this answer, and a dead waiter takes
                        // no lock back.
                        self.pass_on(&mut c, notified);
                        return Err(RemoteError::Timeout);
                    }
                    _ => {}
                }
                // Take the lock back, as long as it takes (as Python does).
                let (mut c, back) = wait_while(&self.changed, c, None, caller, |c| c.holder.owner.is_some());
                match back {
                    Err(RemoteError::Removed) => return Err(RemoteError::Removed),
                    Err(e) => {
                        // Its client died while it waited for the lock.
                        self.pass_on(&mut c, notified);
                        return Err(e);
                    }
                    Ok(()) => {}
                }
                if c.holder.take(owner, depth) {
                    // Held again, from a holder that died: the waiter is told.
                    return Err(RemoteError::OwnerDied);
                }
                Reply::Bool(notified.is_some())
            }
            Op::Notify(n) => Reply::Count(self.notify(&mut c, n)),
            Op::NotifyAll => Reply::Count(self.notify(&mut c, u64::MAX)),
            Op::IsLocked => Reply::Bool(c.holder.owner.is_some()),
            other => return Err(wrong(&other, Kind::Condition)),
        })
    }

    /// A notify taken by a waiter whose client is gone (`bound`: the first
    /// ticket handed out after it) goes to the next waiter, if that one was
    /// already waiting at the notify, so that the notifier's count stays
    /// true.
    fn pass_on(&self, c: &mut CondInner, notified: Option<u64>) {
        if let Some(bound) = notified
            && let Some(&next) = c.waiting.front()
            && next < bound
        {
            c.waiting.pop_front();
            c.notified.insert(next, bound);
            self.changed.notify_all();
        }
    }

    fn notify(&self, c: &mut CondInner, n: u64) -> u64 {
        let mut woken = 0;
        while woken < n
            && let Some(ticket) = c.waiting.pop_front()
        {
            let bound = c.next_ticket;
            c.notified.insert(ticket, bound);
            woken += 1;
        }
        if woken > 0 {
            self.changed.notify_all();
        }
        woken
    }

    /// Ends the calls waiting on this removed object.
    pub(crate) fn retire(&self) {
        self.changed.retire(&self.inner);
    }

    /// See the module docs.
    pub(crate) fn session_gone(&self, session: u64) {
        if lock(&self.inner).holder.session_gone(session) {
            self.changed.notify_all();
        }
    }
}

/// A `Semaphore` or `BoundedSemaphore`.
#[derive(Debug)]
pub(crate) struct SemaphoreState {
    value: Mutex<u32>,
    released: Waiters,
    max: Option<u32>,
}

impl SemaphoreState {
    pub(crate) fn new(value: u32, bounded: bool) -> SemaphoreState {
        SemaphoreState { value: Mutex::new(value), released: Waiters::default(), max: bounded.then_some(value) }
    }

    /// Ends the calls waiting on this removed object.
    pub(crate) fn retire(&self) {
        self.released.retire(&self.value);
    }

    pub(crate) fn call(&self, op: Op, caller: &Caller<'_>) -> Response {
        let v = lock(&self.value);
        Ok(match op {
            Op::Acquire { timeout, .. } => {
                let (mut v, waited) = wait_while(&self.released, v, timeout, caller, |v| *v == 0);
                waited?;
                *v -= 1;
                Reply::Acquired { owner_died: false }
            }
            Op::Release { .. } => {
                let mut v = v;
                if self.max.is_some_and(|max| *v >= max) {
                    return Err(ReleaseError::TooManyReleases.into());
                }
                *v = v.saturating_add(1);
                self.released.notify_all();
                Reply::Unit
            }
            Op::SemaphoreValue => Reply::Count((*v).into()),
            other => return Err(wrong(&other, Kind::Semaphore)),
        })
    }
}
