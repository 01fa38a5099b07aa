//! Functions that run in a child: plain `fn` items and non-capturing closures,
//! shipped as a code offset (see [`crate::code`]) inside the same build.

use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{self, Encoded};

/// A function that can run in another process with arguments `Args` (a tuple
/// of 0 to 8 values) and return an `R`.
///
/// It is implemented for every `fn` item and non-capturing closure whose
/// arguments and result are `serde` types. A closure that captures state is
/// rejected at compile time: pass the state as an argument instead.
///
/// ```compile_fail
/// // error: a function sent to a child must not capture state
/// let offset = 5u64;
/// let p = multiproc::Process::spawn(move |x: u64| x + offset, (1u64,));
/// ```
pub trait Task<Args, R>: Copy + Send + Sync + 'static {
    /// Calls the function.
    fn call(self, args: Args) -> R;
}

macro_rules! impl_task {
    ($($a:ident),*) => {
        impl<F, R, $($a,)*> Task<($($a,)*), R> for F
        where
            F: Fn($($a),*) -> R + Copy + Send + Sync + 'static,
        {
            #[allow(non_snake_case)]
            fn call(self, ($($a,)*): ($($a,)*)) -> R {
                self($($a),*)
            }
        }
    };
}

impl_task!();
impl_task!(A1);
impl_task!(A1, A2);
impl_task!(A1, A2, A3);
impl_task!(A1, A2, A3, A4);
impl_task!(A1, A2, A3, A4, A5);
impl_task!(A1, A2, A3, A4, A5, A6);
impl_task!(A1, A2, A3, A4, A5, A6, A7);
impl_task!(A1, A2, A3, A4, A5, A6, A7, A8);

/// What a trampoline returns: the encoded result, or why the task could not run.
pub(crate) type EntryResult = Result<Encoded, String>;

/// The monomorphic entry point a child calls.
pub(crate) type EntryFn = fn(args: &[u8], fds: Vec<OwnedFd>, type_hash: u64) -> EntryResult;

/// A function reference that can cross to a child of the same build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) struct EntryRef {
    /// Code offset of the trampoline (see [`crate::code`]).
    pub offset: i64,
    /// Hash of the function, argument and result type names.
    pub type_hash: u64,
}

use crate::code::{code_address, code_offset};

/// Rejects, at compile time, a function type that carries state.
pub(crate) const fn assert_stateless<F>() {
    assert!(
        std::mem::size_of::<F>() == 0,
        "multiproc: a function sent to a child must not capture state; pass state as arguments instead"
    )
}

/// The function value of a stateless function type.
pub(crate) fn conjure<F: Copy + 'static>() -> F {
    const { assert_stateless::<F>() };
    // SAFETY: `F` is zero-sized (asserted at compile time) and `Copy`, so it has
    // no state, no drop glue and no invalid bit patterns: the zero-sized value
    // is the function itself.
    unsafe { std::mem::zeroed() }
}

impl EntryRef {
    /// The entry reference for task `F` with arguments `A` returning `R`.
    pub(crate) fn of<F, A, R>() -> EntryRef
    where
        F: Task<A, R>,
        A: DeserializeOwned,
        R: Serialize,
    {
        const {
            assert!(
                std::mem::size_of::<F>() == 0,
                "multiproc: a function sent to a child must not capture state; pass state as arguments instead"
            )
        };
        crate::process::bootstrap::keep_linked();
        let entry: EntryFn = trampoline::<F, A, R>;
        EntryRef { offset: code_offset(entry as *const ()), type_hash: type_hash::<F, A, R>() }
    }

    /// Resolves the entry point in this process.
    ///
    /// # Safety
    ///
    /// `self` must have been made by [`EntryRef::of`] in a process running the
    /// same build of the same executable (checked by the build-id handshake).
    pub(crate) unsafe fn resolve(self) -> EntryFn {
        // SAFETY: in the same build, anchor + offset is the address of the
        // trampoline the parent named, whose type is `EntryFn` (caller's promise).
        unsafe { std::mem::transmute::<*const (), EntryFn>(code_address(self.offset)) }
    }
}

/// Hash of the function, argument and result type names, to check that
/// both ends mean the same types.
pub(crate) fn type_hash<F, A, R>() -> u64 {
    crate::code::fnv1a(&[std::any::type_name::<F>(), std::any::type_name::<A>(), std::any::type_name::<R>()])
}

fn trampoline<F, A, R>(args: &[u8], fds: Vec<OwnedFd>, hash: u64) -> EntryResult
where
    F: Task<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    if hash != type_hash::<F, A, R>() {
        return Err("the task's type does not match its entry point (parent and child differ)".into());
    }
    let args: A = wire::decode(args, fds).map_err(|e| format!("could not decode the task's arguments: {e}"))?;
    let result = conjure::<F>().call(args);
    wire::encode(&result).map_err(|e| format!("the task's result could not be serialized: {e}"))
}

/// Runs an entry in this process (the child side), for the pool and bootstrap.
pub(crate) fn run_entry(entry: EntryRef, args: &[u8], fds: Vec<OwnedFd>) -> EntryResult {
    // SAFETY: the build-id handshake happened before any entry is resolved.
    let f = unsafe { entry.resolve() };
    f(args, fds, entry.type_hash)
}

/// A task as a value that crosses to another process of the same build as
/// bytes: the hook for brokers (such as `multiproc-redis`) that carry tasks
/// between hosts.
///
/// Arguments and results travel as plain `postcard` bytes; handles (pipes,
/// queues, shared memory) cannot travel this way and fail to encode.
///
/// # Examples
///
/// ```
/// use multiproc::RemoteFn;
///
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// let f = RemoteFn::of::<_, (u64, u64), u64>(add);
/// let args = postcard::to_allocvec(&(2u64, 3u64)).unwrap();
/// // SAFETY: `f` was made by this process, which is the same build.
/// let out = unsafe { f.call(&args) }.unwrap();
/// assert_eq!(postcard::from_bytes::<u64>(&out).unwrap(), 5);
/// // Bytes that are not the arguments: an error, not a call.
/// // SAFETY: as above.
/// assert!(unsafe { f.call(&[0xff]) }.unwrap_err().contains("could not decode"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RemoteFn(EntryRef);

impl RemoteFn {
    /// The reference to task `f` with arguments `A` (a tuple) returning `R`.
    pub fn of<F, A, R>(f: F) -> RemoteFn
    where
        F: Task<A, R>,
        A: DeserializeOwned,
        R: Serialize,
    {
        let _ = f;
        RemoteFn(EntryRef::of::<F, A, R>())
    }

    /// Runs the task in this process on `args` (the postcard encoding of the
    /// argument tuple) and returns the postcard encoding of its result. A
    /// panic in the task unwinds out of this call.
    ///
    /// # Errors
    ///
    /// The arguments do not decode, the result does not encode, or the
    /// types do not match the reference (a message text).
    ///
    /// # Safety
    ///
    /// `self` must have been made by [`RemoteFn::of`] in a process running
    /// the same build as this one (compare [`build_id`](crate::build_id)), and
    /// must come from a trusted source: the reference is a code address.
    pub unsafe fn call(self, args: &[u8]) -> Result<Vec<u8>, String> {
        // SAFETY: same build, trusted source (caller's promise).
        let f = unsafe { self.0.resolve() };
        let encoded = f(args, Vec::new(), self.0.type_hash)?;
        if !encoded.fds.is_empty() {
            return Err("the task's result holds a handle (fd), which cannot leave this host".into());
        }
        Ok(encoded.bytes)
    }
}

/// The id of this build of the program (the GNU build id, or a fingerprint
/// of the executable): two processes can exchange [`RemoteFn`]s only when
/// their ids are equal.
///
/// ```
/// assert!(!multiproc::build_id().is_empty());
/// ```
pub fn build_id() -> &'static str {
    crate::sys::imp::build_id::build_id()
}
