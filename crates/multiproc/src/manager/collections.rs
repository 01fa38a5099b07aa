//! The manager's side of dicts, namespaces, lists and values: encoded bytes
//! behind a mutex, and `update` running a shipped function on them while
//! the mutex is held (so it is atomic with respect to every other call).
//!
//! An update runs on its caller's connection thread, never on the
//! dispatcher (see `dispatch`), which must not wait for a user's function
//! either: each object counts the updates that hold or wait for its mutex,
//! and the dispatcher leaves a call on an object so held to the caller's
//! connection thread ([`Caller::leave_to_connection`]). A slow update so
//! holds back only the calls on its own object.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use super::code;
use super::protocol::{Bytes, CodeRef, Kind, Op, RemoteError, Reply, Response};
use super::server::Caller;

/// An object's data behind its mutex, with the count of updates that hold
/// it or wait for it.
#[derive(Debug, Default)]
pub(crate) struct Guarded<T> {
    data: Mutex<T>,
    updates: AtomicUsize,
}

impl<T> Guarded<T> {
    /// `data`, unlocked.
    pub(crate) fn new(data: T) -> Guarded<T> {
        Guarded { data: Mutex::new(data), updates: AtomicUsize::new(0) }
    }
}

/// A dict's or a namespace's entries: encoded key → encoded value.
pub(crate) type Map = Guarded<HashMap<Vec<u8>, Vec<u8>>>;
/// A list's items, encoded.
pub(crate) type List = Guarded<Vec<Vec<u8>>>;
/// A value, encoded.
pub(crate) type Value = Guarded<Vec<u8>>;

fn bytes(v: &[u8]) -> Bytes {
    Bytes::from(v.to_vec())
}

/// A locked object; an update's lock leaves the count of updates on drop.
struct Held<'a, T> {
    guard: MutexGuard<'a, T>,
    update: Option<&'a AtomicUsize>,
}

impl<T> Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        if let Some(updates) = self.update {
            // ORDERING: Relaxed: the mutex orders the data; the count is a hint
            // the dispatcher re-reads while it finds the mutex taken.
            updates.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Locks `object` for `op`. A panic never happens while these are held
/// (shipped code runs under catch_unwind), but a poisoned lock must not
/// take the manager down.
///
/// # Errors
///
/// On the dispatcher, when an update holds or waits for the object: the
/// caller is told to leave the call to the connection's thread.
fn lock<'a, T>(object: &'a Guarded<T>, op: &Op, caller: &Caller<'_>) -> Result<Held<'a, T>, RemoteError> {
    if matches!(op, Op::Update { .. }) {
        // Counted before it waits, so that the dispatcher never queues
        // behind it.
        // ORDERING: Relaxed: see `Held::drop`.
        object.updates.fetch_add(1, Ordering::Relaxed);
        let guard = object.data.lock().unwrap_or_else(|e| e.into_inner());
        return Ok(Held { guard, update: Some(&object.updates) });
    }
    if !caller.is_on_dispatcher() {
        return Ok(Held { guard: object.data.lock().unwrap_or_else(|e| e.into_inner()), update: None });
    }
    loop {
        match object.data.try_lock() {
            Ok(guard) => return Ok(Held { guard, update: None }),
            Err(TryLockError::Poisoned(e)) => return Ok(Held { guard: e.into_inner(), update: None }),
            // ORDERING: Relaxed: see `Held::drop`.
            Err(TryLockError::WouldBlock) if object.updates.load(Ordering::Relaxed) > 0 => {
                return Err(caller.leave_to_connection());
            }
            // Another connection's short call holds it: a moment.
            Err(TryLockError::WouldBlock) => std::thread::yield_now(),
        }
    }
}

/// Runs a shipped update function on `slot`.
fn run_update(caller: &Caller<'_>, code: CodeRef, slot: &mut Option<Vec<u8>>, args: &[u8]) -> Response {
    caller.check_build()?;
    // SAFETY: the caller is the same build as this manager (checked above),
    // and `CodeRef`s in `Op::Update` are made by `code::update_ref`.
    let f = unsafe { code::resolve_update(code) };
    Ok(Reply::Bytes(Bytes::from(f(slot, args, code.type_hash)?)))
}

/// A dict or namespace operation.
pub(crate) fn map_call(map: &Map, kind: Kind, op: Op, caller: &Caller<'_>) -> Response {
    let mut m = lock(map, &op, caller)?;
    Ok(match op {
        Op::Get(k) => Reply::MaybeBytes(m.get(k.as_slice()).map(|v| bytes(v))),
        Op::Insert(k, v) => Reply::MaybeBytes(m.insert(k.into_vec(), v.into_vec()).map(Bytes::from)),
        Op::Remove(k) => Reply::MaybeBytes(m.remove(k.as_slice()).map(Bytes::from)),
        Op::ContainsKey(k) => Reply::Bool(m.contains_key(k.as_slice())),
        Op::Len => Reply::Count(m.len() as u64),
        Op::Keys => Reply::Many(m.keys().map(|k| bytes(k)).collect()),
        Op::Values => Reply::Many(m.values().map(|v| bytes(v)).collect()),
        Op::Items => Reply::Pairs(m.iter().map(|(k, v)| (bytes(k), bytes(v))).collect()),
        Op::Extend(pairs) => {
            m.extend(pairs.into_iter().map(|(k, v)| (k.into_vec(), v.into_vec())));
            Reply::Unit
        }
        Op::Clear => {
            m.clear();
            Reply::Unit
        }
        Op::Update { key: Some(k), index: None, code, args } => {
            let mut slot = m.get(k.as_slice()).cloned();
            let reply = run_update(caller, code, &mut slot, &args)?;
            match slot {
                Some(v) => m.insert(k.into_vec(), v),
                None => m.remove(k.as_slice()),
            };
            reply
        }
        other => return Err(wrong(&other, kind)),
    })
}

/// A list operation.
pub(crate) fn list_call(list: &List, op: Op, caller: &Caller<'_>) -> Response {
    let mut l = lock(list, &op, caller)?;
    let len = l.len() as u64;
    let check = |i: u64, limit: u64| {
        if i < limit { Ok(i as usize) } else { Err(RemoteError::IndexOutOfRange { index: i, len }) }
    };
    Ok(match op {
        Op::Push(v) => {
            l.push(v.into_vec());
            Reply::Unit
        }
        Op::ExtendList(items) => {
            l.extend(items.into_iter().map(Bytes::into_vec));
            Reply::Unit
        }
        Op::GetIndex(i) => Reply::Bytes(bytes(&l[check(i, len)?])),
        Op::SetIndex(i, v) => {
            let i = check(i, len)?;
            l[i] = v.into_vec();
            Reply::Unit
        }
        Op::InsertAt(i, v) => {
            l.insert(check(i, len + 1)?, v.into_vec());
            Reply::Unit
        }
        Op::RemoveAt(i) => Reply::Bytes(Bytes::from(l.remove(check(i, len)?))),
        Op::Pop => Reply::MaybeBytes(l.pop().map(Bytes::from)),
        Op::Len => Reply::Count(len),
        Op::ToVec => Reply::Many(l.iter().map(|v| bytes(v)).collect()),
        Op::Clear => {
            l.clear();
            Reply::Unit
        }
        Op::Update { key: None, index: Some(i), code, args } => {
            let i = check(i, len)?;
            let mut slot = Some(std::mem::take(&mut l[i]));
            let result = run_update(caller, code, &mut slot, &args);
            // The trampoline leaves the slot as it was on failure; a function
            // that emptied the slot of a list item is refused by the proxy's
            // types (it only sees `&mut T`).
            l[i] = slot.unwrap_or_default();
            result?
        }
        other => return Err(wrong(&other, Kind::List)),
    })
}

/// A value operation.
pub(crate) fn value_call(value: &Value, op: Op, caller: &Caller<'_>) -> Response {
    let mut v = lock(value, &op, caller)?;
    Ok(match op {
        Op::Load => Reply::Bytes(bytes(&v)),
        Op::Store(new) => {
            *v = new.into_vec();
            Reply::Unit
        }
        Op::Update { key: None, index: None, code, args } => {
            let mut slot = Some(std::mem::take(&mut *v));
            let result = run_update(caller, code, &mut slot, &args);
            *v = slot.unwrap_or_default();
            result?
        }
        other => return Err(wrong(&other, Kind::Value)),
    })
}

/// The error for an operation that does not apply to `kind`.
pub(crate) fn wrong(op: &Op, kind: Kind) -> RemoteError {
    let name = format!("{op:?}");
    let name = name.split(['(', ' ', '{']).next().unwrap_or("?").to_string();
    RemoteError::WrongOperation { op: name, kind }
}
