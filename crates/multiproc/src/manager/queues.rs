//! The manager's side of `Queue` and `JoinableQueue`: a FIFO of encoded
//! items with an optional bound, a closed flag and a count of unfinished
//! tasks.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::collections::wrong;
use super::protocol::{Bytes, Kind, MANY_ITEM_PREFIX, MANY_ITEMS_BUDGET, Op, RemoteError, Reply, Response};
use super::server::Caller;
use super::waiting::{Waiters, lock, wait_while};

/// A queue in the manager.
#[derive(Debug)]
pub(crate) struct QueueState {
    inner: Mutex<Inner>,
    /// Signalled on every change (put, take, close, task done).
    changed: Waiters,
    maxsize: Option<u64>,
    joinable: bool,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Bytes>,
    closed: bool,
    unfinished: u64,
}

impl QueueState {
    pub(crate) fn new(maxsize: Option<u64>, joinable: bool) -> QueueState {
        QueueState { inner: Mutex::new(Inner::default()), changed: Waiters::default(), maxsize, joinable }
    }

    /// Ends the calls waiting on this removed object.
    pub(crate) fn retire(&self) {
        self.changed.retire(&self.inner);
    }

    fn kind(&self) -> Kind {
        if self.joinable { Kind::JoinableQueue } else { Kind::Queue }
    }

    /// Waits (as `timeout` says) until the open queue has room for `n`
    /// more items: `Closed` when it is closed (before or meanwhile), `Full`
    /// when a put that may not wait finds no room, or the wait's error.
    fn room_for<'a>(
        &self,
        g: MutexGuard<'a, Inner>,
        n: u64,
        timeout: Option<Duration>,
        caller: &Caller<'_>,
    ) -> Result<MutexGuard<'a, Inner>, RemoteError> {
        if g.closed {
            return Err(RemoteError::Closed);
        }
        let maxsize = self.maxsize.unwrap_or(u64::MAX);
        let (g, waited) = wait_while(&self.changed, g, timeout, caller, |q| {
            !q.closed && (q.items.len() as u64).saturating_add(n) > maxsize
        });
        match waited {
            Err(RemoteError::Timeout) if timeout.is_some_and(|t| t.is_zero()) => Err(RemoteError::Full),
            Err(e) => Err(e),
            Ok(()) if g.closed => Err(RemoteError::Closed),
            Ok(()) => Ok(g),
        }
    }

    /// Waits (as `timeout` says) until the queue holds an item: `Closed`
    /// when it is closed and empty, `Empty` when a get that may not wait
    /// finds none, or the wait's error.
    fn an_item<'a>(
        &self,
        g: MutexGuard<'a, Inner>,
        timeout: Option<Duration>,
        caller: &Caller<'_>,
    ) -> Result<MutexGuard<'a, Inner>, RemoteError> {
        let (g, waited) = wait_while(&self.changed, g, timeout, caller, |q| !q.closed && q.items.is_empty());
        match waited {
            Err(RemoteError::Timeout) if timeout.is_some_and(|t| t.is_zero()) => Err(RemoteError::Empty),
            Err(e) => Err(e),
            Ok(()) if g.items.is_empty() => Err(RemoteError::Closed),
            Ok(()) => Ok(g),
        }
    }

    pub(crate) fn call(&self, op: Op, caller: &Caller<'_>) -> Response {
        let maxsize = self.maxsize.unwrap_or(u64::MAX);
        let g = lock(&self.inner);
        Ok(match op {
            Op::Put { item, timeout } => {
                let mut g = self.room_for(g, 1, timeout, caller)?;
                g.items.push_back(item.kept());
                g.unfinished += 1;
                self.changed.notify_all();
                Reply::Unit
            }
            Op::Take { timeout } => {
                let mut g = self.an_item(g, timeout, caller)?;
                let item = g.items.pop_front().expect("an_item waits for one");
                self.changed.notify_all();
                Reply::Bytes(item)
            }
            Op::PutMany { items, timeout } => {
                let n = items.len() as u64;
                // (A closed queue says so first, in `room_for`.)
                if n > maxsize && !g.closed {
                    return Err(RemoteError::BadRequest(format!(
                        "{n} items never fit at once in a queue of at most {maxsize}: put them in parts"
                    )));
                }
                let mut g = self.room_for(g, n, timeout, caller)?;
                // Kept as the other objects keep values (see `Bytes::kept`):
                // a large item from a batch, copied out of its frame, then
                // leaves in its answer without another copy.
                g.items.extend(items.into_iter().map(Bytes::kept));
                g.unfinished += n;
                self.changed.notify_all();
                Reply::Unit
            }
            Op::TakeMany { max: 0, .. } => Reply::Many(Vec::new()),
            Op::TakeMany { max, timeout } => {
                let mut g = self.an_item(g, timeout, caller)?;
                // At least one item (a put item always fits an answer), then
                // as many as fit the answer's budget.
                let (mut taken, mut bytes) = (Vec::new(), 0u64);
                while (taken.len() as u64) < max
                    && let Some(front) = g.items.front()
                {
                    bytes = bytes.saturating_add(front.len() as u64 + MANY_ITEM_PREFIX);
                    if !taken.is_empty() && bytes > MANY_ITEMS_BUDGET {
                        break;
                    }
                    taken.extend(g.items.pop_front());
                }
                self.changed.notify_all();
                Reply::Many(taken)
            }
            Op::Len => Reply::Count(g.items.len() as u64),
            Op::Full => Reply::Bool(g.items.len() as u64 >= maxsize),
            Op::Close => {
                let mut g = g;
                g.closed = true;
                self.changed.notify_all();
                Reply::Unit
            }
            Op::IsSet => Reply::Bool(g.closed),
            Op::TaskDone if self.joinable => {
                let mut g = g;
                if g.unfinished == 0 {
                    return Err(RemoteError::TooManyTaskDone);
                }
                g.unfinished -= 1;
                if g.unfinished == 0 {
                    self.changed.notify_all();
                }
                Reply::Unit
            }
            Op::Join { timeout } if self.joinable => {
                let (_g, waited) = wait_while(&self.changed, g, timeout, caller, |q| q.unfinished > 0);
                waited?;
                Reply::Unit
            }
            Op::NWaiting if self.joinable => Reply::Count(g.unfinished),
            other => return Err(wrong(&other, self.kind())),
        })
    }
}
