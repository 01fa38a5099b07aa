//! User types in a manager: the [`Shared`] trait and its proxy,
//! [`SharedObject`].

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ManagerError;
use super::protocol::{Kind, Op};
use super::proxy::{ObjectRef, encode, proxy};

/// A type whose one instance lives in a manager and is called through a
/// [`SharedObject`] proxy (Python's `BaseManager.register(typeid, callable,
/// exposed=…)`).
///
/// The methods a client may call are the variants of [`Shared::Request`]:
/// that enum is the explicit list of exposed methods, and anything that is
/// not one of them is refused by the manager with an error. Calls run one
/// at a time on the instance. A call that panics is an error for its caller
/// ([`RemoteError::Panicked`](super::RemoteError::Panicked)); the manager,
/// this object and every other object go on (the object keeps whatever
/// state the panicking call left).
///
/// A call must not use a proxy of its own manager (to this object or any
/// other): the manager would wait for itself, so such a call is refused at
/// once with [`ManagerError::CallsItsOwnManager`] (the same holds for the
/// functions given to `update` and a barrier's action). Keep what the type
/// needs inside it, or make those calls in the client. In a manager
/// process ([`Manager::start`](super::Manager::start)) every thread is
/// checked, so a thread the call starts (and may wait for) is refused too.
/// A manager [`serve`](super::serve)d on a thread of your program cannot
/// tell such a thread from the program's own threads, which use it: there,
/// a thread that the call starts and waits for must not use the manager
/// (it would wait for ever, for this very object or, when the function is
/// an `update` from a local client, for the dispatcher that serves lanes).
///
/// The manager runs the type's code, so it must be the same build of the
/// program as the client that creates the object (a manager started with
/// [`Manager::start`](super::Manager::start) is); another build is refused
/// with [`RemoteError::BuildMismatch`](super::RemoteError::BuildMismatch).
///
/// # Examples
///
/// ```
/// use multiproc::manager::{Manager, Shared};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Counter { n: u64 }
///
/// #[derive(Serialize, Deserialize)]
/// enum Call { Add(u64), Get }
///
/// impl Shared for Counter {
///     type Request = Call;
///     type Response = u64;
///     fn call(&mut self, request: Call) -> u64 {
///         match request {
///             Call::Add(k) => { self.n += k; self.n }
///             Call::Get => self.n,
///         }
///     }
/// }
///
/// let manager = Manager::start().unwrap();
/// let counter = manager.create(Counter { n: 1 }).unwrap();
/// assert_eq!(counter.call(Call::Add(2)).unwrap(), 3);
/// assert_eq!(counter.call(Call::Get).unwrap(), 3);
/// ```
pub trait Shared: Serialize + DeserializeOwned + Send + 'static {
    /// What a client may ask: the exposed methods, usually an enum.
    type Request: Serialize + DeserializeOwned + 'static;
    /// What the object answers.
    type Response: Serialize + DeserializeOwned + 'static;

    /// Answers one request, in the manager.
    fn call(&mut self, request: Self::Request) -> Self::Response;
}

/// A proxy for a [`Shared`] user type's instance in a manager.
pub struct SharedObject<S> {
    object: ObjectRef,
    _type: PhantomData<fn(S) -> S>,
}

proxy!(SharedObject<S>, Kind::User);

impl<S: Shared> SharedObject<S> {
    /// Sends `request` to the instance and returns its response.
    ///
    /// # Errors
    ///
    /// [`RemoteError::Panicked`](super::RemoteError::Panicked) when the call
    /// panicked in the manager; the manager cannot be reached; the request
    /// or the response cannot be encoded or decoded.
    pub fn call(&self, request: S::Request) -> Result<S::Response, ManagerError> {
        self.object.value(Op::UserCall(encode(&request)?))
    }
}
