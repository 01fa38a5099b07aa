//! The manager's side of `Queue` and `JoinableQueue`: a FIFO of encoded
//! items with an optional bound, a closed flag and a count of unfinished
//! tasks.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::collections::wrong;
use super::protocol::{Bytes, Kind, MANY_ITEMS_BUDGET, Op, RemoteError, Reply, Response};
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
    items: VecDeque<Vec<u8>>,
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

    pub(crate) fn call(&self, op: Op, caller: &Caller<'_>) -> Response {
        let maxsize = self.maxsize.unwrap_or(u64::MAX);
        let g = lock(&self.inner);
        Ok(match op {
            Op::Put { item, timeout } => {
                if g.closed {
                    return Err(RemoteError::Closed);
                }
                let (mut g, waited) =
                    wait_while(&self.changed, g, timeout, caller, |q| !q.closed && q.items.len() as u64 >= maxsize);
                match waited {
                    Err(RemoteError::Timeout) if timeout.is_some_and(|t| t.is_zero()) => return Err(RemoteError::Full),
                    Err(e) => return Err(e),
                    Ok(()) if g.closed => return Err(RemoteError::Closed),
                    Ok(()) => {}
                }
                g.items.push_back(item.into_vec());
                g.unfinished += 1;
                self.changed.notify_all();
                Reply::Unit
            }
            Op::Take { timeout } => {
                let (mut g, waited) =
                    wait_while(&self.changed, g, timeout, caller, |q| !q.closed && q.items.is_empty());
                match waited {
                    Err(RemoteError::Timeout) if timeout.is_some_and(|t| t.is_zero()) => {
                        return Err(RemoteError::Empty);
                    }
                    Err(e) => return Err(e),
                    Ok(()) => {}
                }
                let Some(item) = g.items.pop_front() else {
                    return Err(RemoteError::Closed);
                };
                self.changed.notify_all();
                Reply::Bytes(Bytes::from(item))
            }
            Op::PutMany { items, timeout } => {
                if g.closed {
                    return Err(RemoteError::Closed);
                }
                let n = items.len() as u64;
                if n > maxsize {
                    return Err(RemoteError::BadRequest(format!(
                        "{n} items never fit at once in a queue of at most {maxsize}: put them in parts"
                    )));
                }
                let (mut g, waited) = wait_while(&self.changed, g, timeout, caller, |q| {
                    !q.closed && (q.items.len() as u64).saturating_add(n) > maxsize
                });
                match waited {
                    Err(RemoteError::Timeout) if timeout.is_some_and(|t| t.is_zero()) => return Err(RemoteError::Full),
                    Err(e) => return Err(e),
                    Ok(()) if g.closed => return Err(RemoteError::Closed),
                    Ok(()) => {}
                }
                g.items.extend(items.into_iter().map(Bytes::into_vec));
                g.unfinished += n;
                self.changed.notify_all();
                Reply::Unit
            }
            Op::TakeMany { max: 0, .. } => Reply::Many(Vec::new()),
            Op::TakeMany { max, timeout } => {
                let (mut g, waited) =
                    wait_while(&self.changed, g, timeout, caller, |q| !q.closed && q.items.is_empty());
                match waited {
                    Err(RemoteError::Timeout) if timeout.is_some_and(|t| t.is_zero()) => {
                        return Err(RemoteError::Empty);
                    }
                    Err(e) => return Err(e),
                    Ok(()) => {}
                }
                if g.items.is_empty() {
                    return Err(RemoteError::Closed);
                }
                // At least one item (a put item always fits an answer), then
                // as many as fit the answer's budget.
                let (mut taken, mut bytes) = (Vec::new(), 0u64);
                while (taken.len() as u64) < max
                    && let Some(front) = g.items.front()
                {
                    bytes = bytes.saturating_add(front.len() as u64 + 10);
                    if !taken.is_empty() && bytes > MANY_ITEMS_BUDGET {
                        break;
                    }
                    taken.extend(g.items.pop_front().map(Bytes::from));
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
