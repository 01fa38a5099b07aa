//! What every proxy is made of: an [`ObjectRef`] (the manager's address and
//! key, its server's id, and the object's id), and the [`Proxy`] trait that lets
//! [`Manager::get`](super::Manager::get) check an object's type.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ManagerError;
use super::client::{self, Endpoint};
use super::protocol::{Bytes, Init, Kind, Op, Reply, Request};
use crate::wire;

/// Where a proxy's object lives: the manager (address and auth key) and the
/// object's id there. Cheap to clone; serializing it carries the address,
/// the key and the id, so a proxy passed to another process (a child, a pool
/// task, a process on another machine) reaches the same object.
#[derive(Clone)]
pub struct ObjectRef {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) id: u64,
    /// The id of the server that made the object (its `Welcome`): tells a
    /// manager's proxies from another's without connecting to the address
    /// they name, which may be one this process cannot reach.
    pub(crate) server: u64,
}

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRef({} at {})", self.id, self.endpoint.address)
    }
}

impl PartialEq for ObjectRef {
    fn eq(&self, other: &ObjectRef) -> bool {
        self.id == other.id && self.endpoint == other.endpoint
    }
}

impl Eq for ObjectRef {}

impl Serialize for ObjectRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&*self.endpoint, self.id, self.server).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ObjectRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ObjectRef, D::Error> {
        let (endpoint, id, server) = <(Endpoint, u64, u64)>::deserialize(d)?;
        Ok(ObjectRef { endpoint: Arc::new(endpoint), id, server })
    }
}

impl ObjectRef {
    /// The object's id in its manager.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::manager::{Manager, Proxy};
    ///
    /// let manager = Manager::start().unwrap();
    /// let (a, b) = (manager.event().unwrap(), manager.event().unwrap());
    /// assert_ne!(a.object_ref().id(), b.object_ref().id());
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn call(&self, op: Op) -> Result<Reply, ManagerError> {
        client::call(&self.endpoint, &Request::Call { object: self.id, op })
    }

    pub(crate) fn unit(&self, op: Op) -> Result<(), ManagerError> {
        match self.call(op)? {
            Reply::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn bool(&self, op: Op) -> Result<bool, ManagerError> {
        match self.call(op)? {
            Reply::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn count(&self, op: Op) -> Result<u64, ManagerError> {
        match self.call(op)? {
            Reply::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn value<T: DeserializeOwned>(&self, op: Op) -> Result<T, ManagerError> {
        match self.call(op)? {
            Reply::Bytes(b) => decode(&b),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn maybe<T: DeserializeOwned>(&self, op: Op) -> Result<Option<T>, ManagerError> {
        match self.call(op)? {
            Reply::MaybeBytes(b) => b.as_deref().map(|b| decode(b)).transpose(),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn many<T: DeserializeOwned>(&self, op: Op) -> Result<Vec<T>, ManagerError> {
        match self.call(op)? {
            Reply::Many(items) => items.iter().map(|b| decode(b)).collect(),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn pairs<K: DeserializeOwned, V: DeserializeOwned>(&self, op: Op) -> Result<Vec<(K, V)>, ManagerError> {
        match self.call(op)? {
            Reply::Pairs(items) => items.iter().map(|(k, v)| Ok((decode(k)?, decode(v)?))).collect(),
            other => Err(unexpected(other)),
        }
    }

    /// Runs the shipped function `g` on one entry (`key`), one list item
    /// (`index`) or the value (neither), in the manager; returns its result.
    pub(crate) fn update<G, V, A, R>(
        &self,
        key: Option<Bytes>,
        index: Option<u64>,
        arg: &A,
        g: G,
    ) -> Result<R, ManagerError>
    where
        G: Fn(&mut Option<V>, A) -> R + Copy + Send + Sync + 'static,
        V: Serialize + DeserializeOwned,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let code = super::code::update_ref::<G, V, A, R>(g);
        self.value(Op::Update { key, index, code, args: encode(arg)? })
    }

    /// True when the lock was acquired with its previous holder dead.
    pub(crate) fn acquired(&self, op: Op) -> Result<bool, ManagerError> {
        match self.call(op)? {
            Reply::Acquired { owner_died } => Ok(owner_died),
            other => Err(unexpected(other)),
        }
    }
}

/// A typed handle on an object in a manager. Implemented by every proxy of
/// this module ([`Dict`](super::Dict), [`Queue`](super::Queue), …, and
/// [`SharedObject`](super::SharedObject) for user types); it lets
/// [`Manager::get`](super::Manager::get) check that a published object is of
/// the type asked for.
pub trait Proxy: Sized + sealed::Sealed {
    /// The kind of object this proxy works on.
    const KIND: Kind;

    /// The object this proxy works on.
    fn object_ref(&self) -> &ObjectRef;

    #[doc(hidden)]
    fn from_object_ref(object: ObjectRef) -> Self;

    /// The name of the proxy's type, recorded by the manager at creation
    /// and compared on [`Manager::get`](super::Manager::get).
    fn type_name() -> &'static str {
        std::any::type_name::<Self>()
    }
}

pub(crate) mod sealed {
    /// Only this module's proxies are [`Proxy`](super::Proxy)s.
    pub trait Sealed {}
}

/// Implements `Proxy` (and `Clone`, `Debug`, serde) for a proxy struct whose
/// only field is `object: ObjectRef` plus a `PhantomData`.
macro_rules! proxy {
    ($name:ident $(<$($t:ident),*>)?, $kind:expr) => {
        impl$(<$($t),*>)? $crate::manager::proxy::sealed::Sealed for $name$(<$($t),*>)? {}

        impl$(<$($t),*>)? $crate::manager::Proxy for $name$(<$($t),*>)? {
            const KIND: $crate::manager::Kind = $kind;

            fn object_ref(&self) -> &$crate::manager::ObjectRef {
                &self.object
            }

            fn from_object_ref(object: $crate::manager::ObjectRef) -> Self {
                $name { object, _type: std::marker::PhantomData }
            }
        }

        impl$(<$($t),*>)? Clone for $name$(<$($t),*>)? {
            fn clone(&self) -> Self {
                $name { object: self.object.clone(), _type: std::marker::PhantomData }
            }
        }

        impl$(<$($t),*>)? std::fmt::Debug for $name$(<$($t),*>)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.object).finish()
            }
        }

        impl$(<$($t),*>)? serde::Serialize for $name$(<$($t),*>)? {
            fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
                self.object.serialize(s)
            }
        }

        impl<'de $($(, $t)*)?> serde::Deserialize<'de> for $name$(<$($t),*>)? {
            fn deserialize<De: serde::Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
                Ok(<Self as $crate::manager::Proxy>::from_object_ref($crate::manager::ObjectRef::deserialize(d)?))
            }
        }
    };
}
pub(crate) use proxy;

/// Asks the manager at `endpoint` for a new object; returns its proxy.
pub(crate) fn create<P: Proxy>(endpoint: &Arc<Endpoint>, init: Init) -> Result<P, ManagerError> {
    debug_assert_eq!(init.kind(), P::KIND);
    let request = Request::Create { init, type_name: P::type_name().to_string(), type_hash: type_hash::<P>() };
    match client::call_naming_server(endpoint, &request)? {
        (Reply::Created(id), server) => Ok(P::from_object_ref(ObjectRef { endpoint: endpoint.clone(), id, server })),
        (other, _) => Err(unexpected(other)),
    }
}

/// The hash of a proxy type's name, checked by `Manager::get`.
pub(crate) fn type_hash<P: Proxy>() -> u64 {
    crate::process::task::type_hash::<P, (), ()>()
}

/// Encodes a key, value or item for the manager.
///
/// # Errors
///
/// The value cannot be serialized, or holds handles (file descriptors),
/// which a manager cannot store: store a proxy instead.
pub(crate) fn value_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ManagerError> {
    let encoded = wire::encode(value)?;
    if !encoded.fds.is_empty() {
        return Err(ManagerError::Codec(wire::WireError::Encode(
            "a value stored in a manager cannot hold handles (queues, pipes, shared memory…); store a manager proxy instead"
                .into(),
        )));
    }
    Ok(encoded.bytes)
}

/// [`value_bytes`] as the protocol's byte buffer (a large one shared, so
/// that the request carrying it is sent without copying it again).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, ManagerError> {
    value_bytes(value).map(|v| Bytes::from(v).kept())
}

/// Decodes bytes from the manager as a `T`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ManagerError> {
    Ok(wire::decode(bytes, Vec::new())?)
}

pub(crate) fn unexpected(reply: Reply) -> ManagerError {
    ManagerError::Protocol(format!("{reply:?}"))
}
