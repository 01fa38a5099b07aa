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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
