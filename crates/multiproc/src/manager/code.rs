//! Functions shipped to the manager: the `update` functions of dicts, lists,
//! namespaces and values, and the `call` of user types. The manager is the
//! same build as its clients, so a function travels the way
//! [`Process::spawn`](crate::Process::spawn) ships one: as the code offset
//! of a monomorphic trampoline from the crate's anchor, plus a hash of its
//! types, checked on arrival (`process::task`).
//!
//! An update's trampoline decodes the stored bytes into the user's type,
//! runs the function, and encodes the result, all under `catch_unwind`; the
//! stored bytes change only when everything succeeded, so a panic (of the
//! function, or of the type's `Serialize` or `Deserialize`) or a decode
//! error leaves the object as it was.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::{CodeRef, RemoteError};
use crate::code::{code_address, code_offset};
use crate::process::bootstrap;
use crate::process::task::{conjure, type_hash};
use crate::wire;

/// Runs an update: the stored slot (`None`: no entry), the encoded extra
/// argument, the type hash; returns the encoded result.
pub(crate) type UpdateFn = fn(&mut Option<Vec<u8>>, &[u8], u64) -> Result<Vec<u8>, RemoteError>;

/// A user object's state in the manager.
pub(crate) type UserState = Box<dyn Any + Send>;

/// The entry points of a user type: make the state from its encoded initial
/// value, and answer one encoded request.
pub(crate) type DispatchFn = fn(UserCall<'_>, u64) -> Result<Vec<u8>, RemoteError>;

/// What [`DispatchFn`] is asked to do.
#[derive(Debug)]
pub(crate) enum UserCall<'a> {
    /// Decode the initial state.
    Create(&'a [u8], &'a mut Option<UserState>),
    /// Answer a request.
    Call(&'a mut UserState, &'a [u8]),
}

/// The reference to `update_trampoline::<F, V, A, R>`.
pub(crate) fn update_ref<F, V, A, R>(_f: F) -> CodeRef
where
    F: Fn(&mut Option<V>, A) -> R + Copy + Send + Sync + 'static,
    V: Serialize + DeserializeOwned,
    A: DeserializeOwned,
    R: Serialize,
{
    bootstrap::keep_linked();
    let entry: UpdateFn = update_trampoline::<F, V, A, R>;
    CodeRef { offset: code_offset(entry as *const ()), type_hash: type_hash::<F, (V, A), R>() }
}

/// The reference to `dispatch_trampoline::<S>`.
pub(crate) fn dispatch_ref<S: super::Shared>() -> CodeRef {
    bootstrap::keep_linked();
    let entry: DispatchFn = dispatch_trampoline::<S>;
    CodeRef { offset: code_offset(entry as *const ()), type_hash: type_hash::<S, S::Request, S::Response>() }
}

/// The reference to a barrier's action.
pub(crate) fn action_ref(action: fn()) -> CodeRef {
    bootstrap::keep_linked();
    CodeRef { offset: code_offset(action as *const ()), type_hash: type_hash::<fn(), (), ()>() }
}

/// Resolves a barrier's action sent by a client of this build.
///
/// # Safety
///
/// As [`resolve_update`], for [`action_ref`].
pub(crate) unsafe fn resolve_action(code: CodeRef) -> Result<fn(), RemoteError> {
    if code.type_hash != type_hash::<fn(), (), ()>() {
        return Err(RemoteError::BadRequest("a barrier action must be a fn()".into()));
    }
    // SAFETY: same build (caller's promise): the offset is the address of a
    // `fn()` taken by `action_ref`.
    Ok(unsafe { std::mem::transmute::<*const (), fn()>(code_address(code.offset)) })
}

/// Resolves an update function sent by a client of this build.
///
/// # Safety
///
/// `code` must come from [`update_ref`] in a process running the same build
/// (the server checks the client's build id before it resolves anything).
pub(crate) unsafe fn resolve_update(code: CodeRef) -> UpdateFn {
    // SAFETY: same build (caller's promise): the offset names an
    // `update_trampoline`, whose type is `UpdateFn`.
    unsafe { std::mem::transmute::<*const (), UpdateFn>(code_address(code.offset)) }
}

/// Resolves a user type's dispatch function sent by a client of this build.
///
/// # Safety
///
/// As [`resolve_update`], for [`dispatch_ref`].
pub(crate) unsafe fn resolve_dispatch(code: CodeRef) -> DispatchFn {
    // SAFETY: same build (caller's promise): the offset names a
    // `dispatch_trampoline`, whose type is `DispatchFn`.
    unsafe { std::mem::transmute::<*const (), DispatchFn>(code_address(code.offset)) }
}

/// Calls `f(slot, ())` with `f: Fn(&mut Option<V>) -> R`: lets the
/// one-argument form of `update` share the trampoline of the two-argument one.
pub(crate) fn without_arg<F, V, R>(slot: &mut Option<V>, _: ()) -> R
where
    F: Fn(&mut Option<V>) -> R + Copy + 'static,
{
    conjure::<F>()(slot)
}

/// Calls `f(value, a)` on a slot that is always filled (a list item, a
/// value), for `f: Fn(&mut V, A) -> R`.
pub(crate) fn filled<F, V, A, R>(slot: &mut Option<V>, a: A) -> R
where
    F: Fn(&mut V, A) -> R + Copy + 'static,
{
    let value = slot.as_mut().expect("the manager passes a filled slot");
    conjure::<F>()(value, a)
}

/// Calls `f(value)` on a filled slot, for `f: Fn(&mut V) -> R`.
pub(crate) fn filled_without_arg<F, V, R>(slot: &mut Option<V>, _: ()) -> R
where
    F: Fn(&mut V) -> R + Copy + 'static,
{
    let value = slot.as_mut().expect("the manager passes a filled slot");
    conjure::<F>()(value)
}

/// A namespace field: its value's type name and encoded bytes, so that
/// reading it as another type is a clear error rather than garbage.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Tagged {
    type_name: String,
    bytes: serde_bytes::ByteBuf,
}

impl Tagged {
    /// Tags `value` with its type.
    pub(crate) fn new<V: Serialize + ?Sized>(value: &V) -> Result<Tagged, super::ManagerError> {
        let bytes = super::value_bytes(value)?;
        Ok(Tagged { type_name: comparable_name::<V>(), bytes: bytes.into() })
    }

    /// The value, if it is a `V`; `field` names it in the error.
    pub(crate) fn open<V: DeserializeOwned>(&self, field: &str) -> Result<V, super::ManagerError> {
        let wanted = comparable_name::<V>();
        if self.type_name != wanted {
            return Err(super::ManagerError::FieldType {
                field: field.to_string(),
                stored: self.type_name.clone(),
                asked: wanted,
            });
        }
        Ok(wire::decode(&self.bytes, Vec::new())?)
    }
}

/// A type's name, with a `str` (written) counted as the `String` it is
/// read as, which encodes the same.
fn comparable_name<V: ?Sized>() -> String {
    let name = std::any::type_name::<V>().replace("&str", "alloc::string::String");
    if name == "str" { "alloc::string::String".to_string() } else { name }
}

/// A namespace field's stored type and the type an update asked for.
pub(crate) type FieldMismatch = (String, String);

/// Calls `f(value, a)` on a namespace field: decodes the tagged slot as a
/// `V`, and tags the result. A field of another type is left alone, and
/// `f` does not run: the caller turns the mismatch into
/// [`ManagerError::FieldType`](super::ManagerError::FieldType).
pub(crate) fn tagged<F, V, A, R>(slot: &mut Option<Tagged>, a: A) -> Result<R, FieldMismatch>
where
    F: Fn(&mut Option<V>, A) -> R + Copy + 'static,
    V: Serialize + DeserializeOwned,
{
    let asked = comparable_name::<V>();
    if let Some(t) = slot.as_ref()
        && t.type_name != asked
    {
        return Err((t.type_name.clone(), asked));
    }
    let mut value: Option<V> = slot.as_ref().map(|t| t.open("").unwrap_or_else(|e| panic!("{e}")));
    let result = conjure::<F>()(&mut value, a);
    *slot = value.map(|v| Tagged::new(&v).unwrap_or_else(|e| panic!("{e}")));
    Ok(result)
}

fn update_trampoline<F, V, A, R>(slot: &mut Option<Vec<u8>>, args: &[u8], hash: u64) -> Result<Vec<u8>, RemoteError>
where
    F: Fn(&mut Option<V>, A) -> R + Copy + Send + Sync + 'static,
    V: Serialize + DeserializeOwned,
    A: DeserializeOwned,
    R: Serialize,
{
    if hash != type_hash::<F, (V, A), R>() {
        return Err(RemoteError::BadRequest("the update function's types do not match its entry point".into()));
    }
    // Guarded as a whole: the user's `Deserialize` and `Serialize` may panic
    // as well as the function. The slot is assigned last, so a panic
    // anywhere leaves it as it was.
    guarded(|| {
        let mut value: Option<V> = slot.as_deref().map(decode).transpose()?;
        let args: A = decode(args)?;
        let result = conjure::<F>()(&mut value, args);
        let stored = value.as_ref().map(encode).transpose()?;
        let result = encode(&result)?;
        *slot = stored;
        Ok(result)
    })?
}

fn dispatch_trampoline<S: super::Shared>(call: UserCall<'_>, hash: u64) -> Result<Vec<u8>, RemoteError> {
    if hash != type_hash::<S, S::Request, S::Response>() {
        return Err(RemoteError::BadRequest("the shared type does not match its entry point".into()));
    }
    match call {
        UserCall::Create(bytes, out) => {
            let state: S = decode(bytes)?;
            *out = Some(Box::new(state));
            Ok(Vec::new())
        }
        UserCall::Call(state, bytes) => {
            let state = state
                .downcast_mut::<S>()
                .ok_or_else(|| RemoteError::BadRequest("the object is of another shared type".into()))?;
            // An undecodable request is a method the type does not expose.
            let request: S::Request = decode(bytes).map_err(|e| {
                RemoteError::BadRequest(format!("not a request that {} exposes: {e}", std::any::type_name::<S>()))
            })?;
            let response = guarded(|| state.call(request))?;
            encode(&response)
        }
    }
}

/// Runs `f`, turning a panic into [`RemoteError::Panicked`] (message and
/// location), without printing it.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, RemoteError> {
    bootstrap::install_panic_hook();
    bootstrap::quiet_panics(|| panic::catch_unwind(AssertUnwindSafe(f)))
        .map_err(|payload| RemoteError::Panicked(bootstrap::take_panic(&*payload).to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RemoteError> {
    wire::decode(bytes, Vec::new()).map_err(|e| RemoteError::BadRequest(format!("undecodable value: {e}")))
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, RemoteError> {
    super::value_bytes(value).map_err(|e| RemoteError::BadRequest(e.to_string()))
}
