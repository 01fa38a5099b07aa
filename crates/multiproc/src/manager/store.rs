//! The objects a manager holds, by id and by published name, and the
//! registry of user types' entry points that came with them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::code::{self, DispatchFn, UserCall, UserState};
use super::collections::{self, wrong};
use super::locks::{ConditionState, LockState, SemaphoreState};
use super::protocol::{Bytes, Init, Kind, Op, RemoteError, Reply, Response};
use super::queues::QueueState;
use super::server::Caller;
use super::signals::{BarrierState, EventState};
use super::waiting::lock;

/// One object: what it is, the type its creator named, and its state.
#[derive(Debug)]
pub(crate) struct Object {
    pub kind: Kind,
    pub type_name: String,
    pub type_hash: u64,
    state: State,
    /// Removed from the store (a connection's cached handle on it is stale).
    removed: AtomicBool,
}

#[derive(Debug)]
enum State {
    Map(collections::Map),
    List(collections::List),
    Value(collections::Value),
    Queue(QueueState),
    Lock(LockState),
    Semaphore(SemaphoreState),
    Event(EventState),
    Condition(ConditionState),
    Barrier(BarrierState),
    User(Mutex<UserObject>),
}

/// A user type's one instance and the entry point that serves it.
struct UserObject {
    state: UserState,
    dispatch: DispatchFn,
    type_hash: u64,
}

impl std::fmt::Debug for UserObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserObject").finish_non_exhaustive()
    }
}

impl Object {
    /// True once the object was removed from its store.
    pub(crate) fn is_removed(&self) -> bool {
        // ORDERING: Relaxed: a call that raced with the removal may still
        // run on the object, as if it had come just before.
        self.removed.load(Ordering::Relaxed)
    }

    /// Marks the object removed and ends the calls waiting on it.
    fn retire(&self) {
        // ORDERING: Relaxed: see `is_removed`.
        self.removed.store(true, Ordering::Relaxed);
        match &self.state {
            State::Queue(q) => q.retire(),
            State::Lock(l) => l.retire(),
            State::Semaphore(s) => s.retire(),
            State::Event(e) => e.retire(),
            State::Condition(c) => c.retire(),
            State::Barrier(b) => b.retire(),
            State::Map(_) | State::List(_) | State::Value(_) | State::User(_) => {}
        }
    }

    /// Runs one operation on this object.
    pub(crate) fn call(&self, op: Op, caller: &Caller<'_>) -> Response {
        match &self.state {
            State::Map(m) => collections::map_call(m, self.kind, op, caller),
            State::List(l) => collections::list_call(l, op, caller),
            State::Value(v) => collections::value_call(v, op, caller),
            State::Queue(q) => q.call(op, caller),
            State::Lock(l) => l.call(op, caller),
            State::Semaphore(s) => s.call(op, caller),
            State::Event(e) => e.call(op, caller),
            State::Condition(c) => c.call(op, caller),
            State::Barrier(b) => b.call(op, caller),
            State::User(u) => match op {
                Op::UserCall(request) => {
                    let mut u = lock(u);
                    let (dispatch, hash) = (u.dispatch, u.type_hash);
                    Ok(Reply::Bytes(dispatch(UserCall::Call(&mut u.state, &request), hash)?.into()))
                }
                other => Err(wrong(&other, Kind::User)),
            },
        }
    }
}

/// Every object of one manager.
#[derive(Debug)]
pub(crate) struct Store {
    objects: RwLock<HashMap<u64, Arc<Object>>>,
    names: Mutex<HashMap<String, u64>>,
    next_id: AtomicU64,
}

impl Store {
    /// An empty store. Ids start at a random point, so that a proxy of an
    /// earlier manager at the same address finds no object here rather
    /// than another one.
    pub(crate) fn new() -> Store {
        let mut start = [0u8; 8];
        let _ = getrandom::fill(&mut start);
        Store {
            objects: RwLock::default(),
            names: Mutex::default(),
            next_id: AtomicU64::new(u64::from_le_bytes(start) >> 2),
        }
    }

    /// Makes a new object; answers its id.
    pub(crate) fn create(&self, init: Init, type_name: String, type_hash: u64, caller: &Caller<'_>) -> Response {
        let kind = init.kind();
        let state = match init {
            Init::Dict | Init::Namespace => State::Map(Mutex::default()),
            Init::List(items) => State::List(Mutex::new(items.into_iter().map(Bytes::kept).collect())),
            Init::Value(v) => State::Value(Mutex::new(v.kept())),
            Init::Queue { maxsize: Some(0), .. } => {
                return Err(RemoteError::BadRequest(
                    "a bounded queue holds at least 1 item (use Manager::queue for an unbounded one)".into(),
                ));
            }
            Init::Queue { maxsize, joinable } => State::Queue(QueueState::new(maxsize, joinable)),
            Init::Lock => State::Lock(LockState::new(false)),
            Init::RLock => State::Lock(LockState::new(true)),
            Init::Semaphore { value, bounded } => State::Semaphore(SemaphoreState::new(value, bounded)),
            Init::Event => State::Event(EventState::default()),
            Init::Condition => State::Condition(ConditionState::default()),
            Init::Barrier { parties, action } => {
                let action = match action {
                    Some(code) => {
                        caller.check_build()?;
                        // SAFETY: the caller is the same build as this manager
                        // (checked above); the reference comes from `code::action_ref`.
                        Some(unsafe { code::resolve_action(code) }?)
                    }
                    None => None,
                };
                State::Barrier(BarrierState::new(parties.max(1), action))
            }
            Init::User { state, dispatch: code } => {
                caller.check_build()?;
                // SAFETY: the caller is the same build as this manager (checked
                // above), and `Init::User` carries a `code::dispatch_ref`.
                let dispatch = unsafe { code::resolve_dispatch(code) };
                let mut made = None;
                dispatch(UserCall::Create(&state, &mut made), code.type_hash)?;
                let state = made.ok_or_else(|| RemoteError::BadRequest("the shared type made no state".into()))?;
                State::User(Mutex::new(UserObject { state, dispatch, type_hash: code.type_hash }))
            }
        };
        // ORDERING: Relaxed: ids only need to be unique.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let object = Arc::new(Object { kind, type_name, type_hash, state, removed: AtomicBool::new(false) });
        self.objects.write().unwrap_or_else(|e| e.into_inner()).insert(id, object);
        Ok(Reply::Created(id))
    }

    /// The object with this id.
    pub(crate) fn get(&self, id: u64) -> Result<Arc<Object>, RemoteError> {
        self.objects.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned().ok_or(RemoteError::NoSuchObject(id))
    }

    /// Publishes an object under a name (a name is given once).
    pub(crate) fn publish(&self, name: String, id: u64) -> Response {
        self.get(id)?;
        let mut names = lock(&self.names);
        if names.contains_key(&name) {
            return Err(RemoteError::NameTaken(name));
        }
        names.insert(name, id);
        Ok(Reply::Unit)
    }

    /// Finds a published object.
    pub(crate) fn lookup(&self, name: &str) -> Response {
        let id = *lock(&self.names).get(name).ok_or_else(|| RemoteError::NoSuchName(name.to_string()))?;
        let o = self.get(id)?;
        Ok(Reply::Found { object: id, kind: o.kind, type_name: o.type_name.clone(), type_hash: o.type_hash })
    }

    /// Removes an object and the names it was published under; answers
    /// whether it was there. Calls waiting on it end with `Removed`; its
    /// memory is freed when the calls running on it finish.
    pub(crate) fn remove(&self, id: u64) -> Response {
        let Some(object) = self.objects.write().unwrap_or_else(|e| e.into_inner()).remove(&id) else {
            return Ok(Reply::Bool(false));
        };
        lock(&self.names).retain(|_, named| *named != id);
        object.retire();
        Ok(Reply::Bool(true))
    }

    /// A client process is gone: free the locks it held (see `locks`).
    pub(crate) fn session_gone(&self, session: u64) {
        let objects: Vec<Arc<Object>> =
            self.objects.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for o in objects {
            match &o.state {
                State::Lock(l) => l.session_gone(session),
                State::Condition(c) => c.session_gone(session),
                _ => {}
            }
        }
    }
}
