//! The [`Manager`] handle: starts, serves or reaches a manager, makes its
//! objects, publishes and finds them by name, and shuts it down.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use super::client::{self, Endpoint};
use super::code;
use super::protocol::{Init, Reply, Request};
use super::proxy::{self, create, encode, unexpected};
use super::{
    Barrier, Condition, Dict, Event, JoinableQueue, List, Lock, ManagerBuilder, ManagerError, Namespace, ObjectRef,
    Proxy, Queue, RLock, Semaphore, Shared, SharedObject, Value, server,
};
use crate::{Address, IntoAddress, Process};

/// How long [`Manager::shutdown`] waits for the manager process to exit.
pub(super) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on a manager: makes objects, publishes and finds them by name,
/// and (for a manager it started or serves) shuts it down.
///
/// Dropping a handle that started or serves the manager shuts it down.
///
/// # Examples
///
/// ```
/// use multiproc::manager::{Manager, Queue};
///
/// let manager = Manager::builder().address("tcp:127.0.0.1:0").authkey(b"secret").start().unwrap();
/// let jobs = manager.queue::<String>().unwrap();
/// manager.publish("jobs", &jobs).unwrap();
///
/// // Anywhere else, knowing only the address and the key:
/// let remote = Manager::connect(manager.address(), Some(b"secret")).unwrap();
/// let q: Queue<String> = remote.get("jobs").unwrap();
/// q.put("resize".into()).unwrap();
/// assert_eq!(jobs.get().unwrap(), "resize");
/// assert!(remote.get::<Queue<u64>>("jobs").unwrap_err().to_string().contains("not a"));
/// manager.shutdown().unwrap();
/// ```
#[derive(Debug)]
pub struct Manager {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) address: Address,
    pub(super) owned: Owned,
}

#[derive(Debug)]
pub(super) enum Owned {
    /// A manager process this handle started.
    Process(Option<Box<Process<()>>>),
    /// A server this handle runs on a thread of this process.
    Thread { stopper: Arc<server::Shared>, thread: Option<JoinHandle<()>> },
    /// A manager reached with `connect`.
    Remote,
}

impl Manager {
    /// Starts a manager process with the defaults (a fresh abstract Unix
    /// address, a random auth key); see [`Manager::builder`]. Like Python's,
    /// the process ignores SIGINT (a terminal's Ctrl-C is for the program,
    /// which may still use the shared objects while it winds down); it dies
    /// with the program and stops on [`Manager::shutdown`].
    ///
    /// # Errors
    ///
    /// As [`ManagerBuilder::start`].
    pub fn start() -> Result<Manager, ManagerError> {
        ManagerBuilder::default().start()
    }

    /// A builder for a manager process or server.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Connects to a manager served elsewhere (a [`serve`](super::serve)d one, or one
    /// started with a known address and key). Proxies are then fetched with
    /// [`Manager::get`].
    ///
    /// # Errors
    ///
    /// Nothing listens there; the auth key is wrong
    /// ([`ManagerError::is_authentication_failed`]).
    pub fn connect(address: impl IntoAddress, authkey: Option<&[u8]>) -> Result<Manager, ManagerError> {
        let address = address.into_address().map_err(crate::ConnectionError::from)?;
        let endpoint = Arc::new(Endpoint::new(&address, authkey));
        client::connect(&endpoint)?;
        Ok(Manager { endpoint, address, owned: Owned::Remote })
    }

    /// The address the manager listens on. For a manager bound on every
    /// interface (`tcp:0.0.0.0:…`, `tcp:[::]:…`) that is not an address to
    /// connect to: the handle's proxies carry the loopback address with the
    /// same port instead, which reaches the manager from this machine. A
    /// process on another machine connects with the address it reaches the
    /// manager at, and its proxies then carry that one; proxies made by
    /// this handle and read there (stored inside a shared object) still
    /// name loopback, so to share them across machines give the manager an
    /// [advertise address](ManagerBuilder::advertise_address), or bind it
    /// on the address they use.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The manager process's pid, for a manager this handle started.
    pub fn pid(&self) -> Option<i32> {
        match &self.owned {
            Owned::Process(Some(p)) => p.pid(),
            _ => None,
        }
    }

    /// A new, empty [`Dict`].
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn dict<K, V>(&self) -> Result<Dict<K, V>, ManagerError> {
        create(&self.endpoint, Init::Dict)
    }

    /// A new, empty [`List`].
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn list<T>(&self) -> Result<List<T>, ManagerError> {
        create(&self.endpoint, Init::List(Vec::new()))
    }

    /// A new [`List`] holding `items`.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached, or an item cannot be encoded.
    pub fn list_from<T: Serialize>(&self, items: impl IntoIterator<Item = T>) -> Result<List<T>, ManagerError> {
        let items = items.into_iter().map(|i| encode(&i)).collect::<Result<_, _>>()?;
        create(&self.endpoint, Init::List(items))
    }

    /// A new, empty [`Namespace`].
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn namespace(&self) -> Result<Namespace, ManagerError> {
        create(&self.endpoint, Init::Namespace)
    }

    /// A new unbounded [`Queue`].
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn queue<T>(&self) -> Result<Queue<T>, ManagerError> {
        create(&self.endpoint, Init::Queue { maxsize: None, joinable: false })
    }

    /// A new [`Queue`] holding at most `maxsize` items.
    ///
    /// # Errors
    ///
    /// `maxsize` is 0 ([`RemoteError::BadRequest`](super::RemoteError::BadRequest): a queue with room for
    /// nothing; Python's `maxsize=0` means unbounded, [`Manager::queue`]);
    /// the manager cannot be reached.
    pub fn bounded_queue<T>(&self, maxsize: usize) -> Result<Queue<T>, ManagerError> {
        create(&self.endpoint, Init::Queue { maxsize: Some(maxsize as u64), joinable: false })
    }

    /// A new unbounded [`JoinableQueue`].
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn joinable_queue<T>(&self) -> Result<JoinableQueue<T>, ManagerError> {
        create(&self.endpoint, Init::Queue { maxsize: None, joinable: true })
    }

    /// A new [`Value`] holding `value`.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached, or the value cannot be encoded.
    pub fn value<T: Serialize>(&self, value: T) -> Result<Value<T>, ManagerError> {
        create(&self.endpoint, Init::Value(encode(&value)?))
    }

    /// A new [`Lock`].
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn lock(&self) -> Result<Lock, ManagerError> {
        create(&self.endpoint, Init::Lock)
    }

    /// A new [`RLock`].
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn rlock(&self) -> Result<RLock, ManagerError> {
        create(&self.endpoint, Init::RLock)
    }

    /// A new [`Semaphore`] with counter `value`.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn semaphore(&self, value: u32) -> Result<Semaphore, ManagerError> {
        create(&self.endpoint, Init::Semaphore { value, bounded: false })
    }

    /// A new bounded [`Semaphore`]: releasing it above `value` is an error.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn bounded_semaphore(&self, value: u32) -> Result<Semaphore, ManagerError> {
        create(&self.endpoint, Init::Semaphore { value, bounded: true })
    }

    /// A new [`Event`], not set.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn event(&self) -> Result<Event, ManagerError> {
        create(&self.endpoint, Init::Event)
    }

    /// A new [`Condition`] with its own lock.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn condition(&self) -> Result<Condition, ManagerError> {
        create(&self.endpoint, Init::Condition)
    }

    /// A new [`Barrier`] for `parties` callers (at least 1).
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn barrier(&self, parties: usize) -> Result<Barrier, ManagerError> {
        let parties = u32::try_from(parties.max(1)).unwrap_or(u32::MAX);
        create(&self.endpoint, Init::Barrier { parties, action: None })
    }

    /// A new [`Barrier`] whose `action` runs once per pass, **in the
    /// manager**, when the last party arrives and before any is released. An
    /// action that panics breaks the barrier: the last party gets
    /// [`RemoteError::Panicked`](super::RemoteError::Panicked), the others [`RemoteError::BarrierBroken`](super::RemoteError::BarrierBroken).
    ///
    /// # Errors
    ///
    /// The manager cannot be reached, or is another build of the program.
    pub fn barrier_with_action(&self, parties: usize, action: fn()) -> Result<Barrier, ManagerError> {
        let parties = u32::try_from(parties.max(1)).unwrap_or(u32::MAX);
        create(&self.endpoint, Init::Barrier { parties, action: Some(code::action_ref(action)) })
    }

    /// Moves `state` into the manager as the one instance of a [`Shared`]
    /// type; returns its proxy.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached, the state cannot be encoded, or the
    /// manager is another build of the program.
    pub fn create<S: Shared>(&self, state: S) -> Result<SharedObject<S>, ManagerError> {
        let init = Init::User { state: encode(&state)?, dispatch: code::dispatch_ref::<S>() };
        create(&self.endpoint, init)
    }

    /// Publishes an object of this manager under `name`, for
    /// [`Manager::get`] (here or in any process that connects).
    ///
    /// # Errors
    ///
    /// [`RemoteError::NameTaken`](super::RemoteError::NameTaken); the proxy belongs to another manager
    /// ([`ManagerError::ForeignProxy`]); the manager cannot be reached.
    pub fn publish<P: Proxy>(&self, name: &str, proxy: &P) -> Result<(), ManagerError> {
        let object = self.own(proxy)?;
        match client::call(&self.endpoint, &Request::Publish { name: name.to_string(), object })? {
            Reply::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Removes an object from the manager, with the names it was published
    /// under, and answers whether it was there. Its memory is freed once
    /// the calls running on it finish; calls waiting on it (a `get` on an
    /// empty queue, a held lock) end with [`RemoteError::Removed`](super::RemoteError::Removed), and
    /// later calls through any proxy of it with [`RemoteError::NoSuchObject`](super::RemoteError::NoSuchObject).
    /// A manager frees nothing by itself (see the module docs): remove what
    /// a long-lived manager no longer needs.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::manager::{Manager, ManagerError, RemoteError};
    ///
    /// let manager = Manager::start().unwrap();
    /// let d = manager.dict::<String, u32>().unwrap();
    /// d.insert("a".into(), 1).unwrap();
    /// assert!(manager.remove(&d).unwrap());
    /// assert!(matches!(d.len(), Err(ManagerError::Remote(RemoteError::NoSuchObject(_)))));
    /// assert!(!manager.remove(&d).unwrap());
    /// ```
    ///
    /// # Errors
    ///
    /// The proxy belongs to another manager ([`ManagerError::ForeignProxy`]);
    /// the manager cannot be reached.
    pub fn remove<P: Proxy>(&self, proxy: &P) -> Result<bool, ManagerError> {
        let object = self.own(proxy)?;
        match client::call(&self.endpoint, &Request::Remove { object })? {
            Reply::Bool(was_there) => Ok(was_there),
            other => Err(unexpected(other)),
        }
    }

    /// How many calls wait in the manager now: a `get` on an empty queue,
    /// an `acquire` of a held lock or semaphore, a wait on an event,
    /// condition or barrier, a `join`… from any client. For monitoring, and
    /// for a program that must know its clients wait before it acts (a
    /// call counted here sleeps on its object, so a change made after the
    /// count was read wakes it).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::manager::Manager;
    ///
    /// let manager = Manager::start().unwrap();
    /// let q = manager.queue::<u32>().unwrap();
    /// assert_eq!(manager.waiting_calls().unwrap(), 0);
    /// let taker = std::thread::spawn({
    ///     let q = q.clone();
    ///     move || q.get_timeout(Duration::from_secs(10))
    /// });
    /// let until = std::time::Instant::now() + Duration::from_secs(10);
    /// while manager.waiting_calls().unwrap() == 0 && std::time::Instant::now() < until {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// q.put(7).unwrap();
    /// assert_eq!(taker.join().unwrap().unwrap(), 7);
    /// ```
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn waiting_calls(&self) -> Result<usize, ManagerError> {
        match client::call(&self.endpoint, &Request::Waiting)? {
            Reply::Count(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            other => Err(unexpected(other)),
        }
    }

    /// The id of a proxy's object, if it is one of this manager's: the
    /// proxy carries the id of the server that made its object. Whatever
    /// address the proxy names (a manager has several: its advertise
    /// address, loopback and the machine's own for one bound on every
    /// interface…), nothing connects there: it may be one this process
    /// cannot reach, or that never answers. A proxy of an earlier manager
    /// at the same address is another manager's.
    fn own<P: Proxy>(&self, proxy: &P) -> Result<u64, ManagerError> {
        let object = proxy.object_ref();
        if object.server == client::server_id(&self.endpoint)? {
            return Ok(object.id);
        }
        Err(ManagerError::ForeignProxy {
            proxy: object.endpoint.address.to_string(),
            manager: self.endpoint.address.to_string(),
        })
    }

    /// The object published under `name`, as proxy type `P`.
    ///
    /// # Errors
    ///
    /// [`RemoteError::NoSuchName`](super::RemoteError::NoSuchName); [`ManagerError::TypeMismatch`] when the
    /// object is not a `P` (another kind, or other element types); the
    /// manager cannot be reached.
    pub fn get<P: Proxy>(&self, name: &str) -> Result<P, ManagerError> {
        match client::call_naming_server(&self.endpoint, &Request::Lookup { name: name.to_string() })? {
            (Reply::Found { object, kind, type_name, type_hash }, server) => {
                if kind != P::KIND || type_hash != proxy::type_hash::<P>() {
                    return Err(ManagerError::TypeMismatch {
                        name: name.to_string(),
                        expected_kind: P::KIND,
                        expected: P::type_name().to_string(),
                        found_kind: kind,
                        found: type_name,
                    });
                }
                Ok(P::from_object_ref(ObjectRef { endpoint: self.endpoint.clone(), id: object, server }))
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Stops the manager this handle started or serves (its process exits
    /// with code 0, even while a function of yours is stuck in it; one that
    /// does not answer within 10 s is killed); every proxy of it then fails
    /// with a connection error.
    /// For a handle made by [`Manager::connect`], only drops the handle.
    ///
    /// # Errors
    ///
    /// The manager could not be reached, or its process did not exit with 0.
    pub fn shutdown(mut self) -> Result<(), ManagerError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ManagerError> {
        let result = match &mut self.owned {
            // The process's connections stay: its proxies use them, and
            // closing its last one would free the locks it holds.
            Owned::Remote => return Ok(()),
            Owned::Thread { stopper, thread } => {
                stopper.stop();
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
                Ok(())
            }
            Owned::Process(process) => match process.take() {
                None => Ok(()),
                Some(mut p) => {
                    let asked = client::shutdown(&self.endpoint, SHUTDOWN_TIMEOUT);
                    if asked.is_err() {
                        let _ = p.kill();
                    }
                    let joined = p.join_timeout(SHUTDOWN_TIMEOUT);
                    if joined.is_err() && p.exitcode().is_none() {
                        let _ = p.kill();
                        let _ = p.join_timeout(SHUTDOWN_TIMEOUT);
                    }
                    asked.and(joined.map_err(ManagerError::from))
                }
            },
        };
        client::forget_endpoint(&self.endpoint);
        result
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
