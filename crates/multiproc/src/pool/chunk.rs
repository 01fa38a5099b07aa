//! Typed chunks: how the parent encodes a chunk's arguments and decodes its
//! results, and the monomorphic runners a worker calls for them.
//!
//! A runner is referenced by its code offset (see [`RunnerRef`]); the worker
//! resolves the offset in its own address space, which is valid because
//! parent and worker are the same build (checked by the process handshake),
//! and each runner checks a hash of its type names before touching the bytes.

use std::any::Any;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::buffers::Buffers;
use super::error::TaskError;
use super::protocol::{Format, Framed, RunnerRef};
use super::ring::monotonic_ns;
use super::slab::{self, SLAB_MIN, SlabLoan};
use super::status::StatusPage;
use crate::code::{code_address, code_offset};
use crate::process::Task;
use crate::process::task::{assert_stateless, conjure, type_hash};
use crate::wire::{self, encode_into};

/// A task that receives the worker's state: `fn(&mut S, A) -> R`, a plain
/// function or a closure that captures nothing.
///
/// The state is built once per worker by the pool's initializer (see
/// [`PoolBuilder::initializer`](super::PoolBuilder::initializer)).
pub trait StateTask<S, A, R>: Copy + Send + Sync + 'static {
    /// Calls the function.
    fn call(self, state: &mut S, arg: A) -> R;
}

impl<F, S, A, R> StateTask<S, A, R> for F
where
    F: Fn(&mut S, A) -> R + Copy + Send + Sync + 'static,
{
    fn call(self, state: &mut S, arg: A) -> R {
        self(state, arg)
    }
}

/// What a runner works with in the worker.
pub(crate) struct RunCx<'a> {
    /// The worker's state (from the initializer, `()` without one).
    pub state: &'a mut dyn Any,
    pub status: &'a StatusPage,
    /// Record each item's start time (the pool has a task timeout).
    pub timed: bool,
    pub skip: &'a [(u32, TaskError)],
    pub items: u32,
    /// The encoded results go here...
    pub out: &'a mut Vec<u8>,
    /// ...or here, a region of the output ring, if they fit.
    pub direct: Option<&'a mut [u8]>,
    /// How much of `direct` they took, if they went there.
    pub placed: Option<usize>,
}

/// The monomorphic entry a worker calls for a chunk; returns the results'
/// format and descriptors (their bytes are in `cx.out`).
pub(crate) type Runner = fn(&mut RunCx<'_>, &[u8], Vec<OwnedFd>, bool, u64) -> (Format, Vec<OwnedFd>);

/// The entry a worker calls to build its state.
pub(crate) type InitRunner = fn(&[u8], Vec<OwnedFd>, u64) -> Result<Box<dyn Any>, String>;

impl RunnerRef {
    /// `f(x)` for each item `x: A` (map, imap).
    pub(crate) fn map<F, A, R>() -> RunnerRef
    where
        F: Task<(A,), R>,
        A: DeserializeOwned,
        R: Serialize,
    {
        const { assert_stateless::<F>() };
        let runner: Runner = run_map::<F, A, R>;
        RunnerRef { offset: code_offset(runner as *const ()), hash: type_hash::<F, (A,), R>() }
    }

    /// `f(a, b, …)` for each item `(a, b, …)` (starmap, apply).
    pub(crate) fn star<F, A, R>() -> RunnerRef
    where
        F: Task<A, R>,
        A: DeserializeOwned,
        R: Serialize,
    {
        const { assert_stateless::<F>() };
        let runner: Runner = run_star::<F, A, R>;
        RunnerRef { offset: code_offset(runner as *const ()), hash: type_hash::<F, A, R>() }
    }

    /// `f(&mut state, x)` for each item `x: A`.
    pub(crate) fn with_state<F, S, A, R>() -> RunnerRef
    where
        F: StateTask<S, A, R>,
        S: 'static,
        A: DeserializeOwned,
        R: Serialize,
    {
        const { assert_stateless::<F>() };
        let runner: Runner = run_with_state::<F, S, A, R>;
        RunnerRef { offset: code_offset(runner as *const ()), hash: type_hash::<F, (S, A), R>() }
    }

    /// The initializer `f(args…) -> S`.
    pub(crate) fn init<F, A, S>() -> RunnerRef
    where
        F: Task<A, S>,
        A: DeserializeOwned,
        S: 'static,
    {
        const { assert_stateless::<F>() };
        let runner: InitRunner = run_init::<F, A, S>;
        RunnerRef { offset: code_offset(runner as *const ()), hash: type_hash::<F, A, S>() }
    }

    /// The chunk runner in this process.
    ///
    /// # Safety
    ///
    /// `self` must come from [`RunnerRef::map`], [`RunnerRef::star`] or
    /// [`RunnerRef::with_state`] in a process running the same build.
    pub(crate) unsafe fn resolve(self) -> Runner {
        // SAFETY: same build (caller's promise), so the offset names a function
        // of exactly the type `Runner`.
        unsafe { std::mem::transmute::<*const (), Runner>(code_address(self.offset)) }
    }

    /// The initializer in this process.
    ///
    /// # Safety
    ///
    /// `self` must come from [`RunnerRef::init`] in a process running the
    /// same build.
    pub(crate) unsafe fn resolve_init(self) -> InitRunner {
        // SAFETY: as in `resolve`, for `InitRunner`.
        unsafe { std::mem::transmute::<*const (), InitRunner>(code_address(self.offset)) }
    }
}

fn run_map<F, A, R>(
    cx: &mut RunCx<'_>,
    input: &[u8],
    fds: Vec<OwnedFd>,
    framed: bool,
    hash: u64,
) -> (Format, Vec<OwnedFd>)
where
    F: Task<(A,), R>,
    A: DeserializeOwned,
    R: Serialize,
{
    if hash != type_hash::<F, (A,), R>() {
        return mismatch(cx);
    }
    let f = conjure::<F>();
    run_items::<A, R>(cx, input, fds, framed, |_, a| f.call((a,)))
}

fn run_star<F, A, R>(
    cx: &mut RunCx<'_>,
    input: &[u8],
    fds: Vec<OwnedFd>,
    framed: bool,
    hash: u64,
) -> (Format, Vec<OwnedFd>)
where
    F: Task<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    if hash != type_hash::<F, A, R>() {
        return mismatch(cx);
    }
    let f = conjure::<F>();
    run_items::<A, R>(cx, input, fds, framed, |_, a| f.call(a))
}

fn run_with_state<F, S, A, R>(
    cx: &mut RunCx<'_>,
    input: &[u8],
    fds: Vec<OwnedFd>,
    framed: bool,
    hash: u64,
) -> (Format, Vec<OwnedFd>)
where
    F: StateTask<S, A, R>,
    S: 'static,
    A: DeserializeOwned,
    R: Serialize,
{
    if hash != type_hash::<F, (S, A), R>() {
        return mismatch(cx);
    }
    let f = conjure::<F>();
    run_items::<A, R>(cx, input, fds, framed, |state, a| {
        let state = state.downcast_mut::<S>().unwrap_or_else(|| {
            panic!(
                "the worker's state is not a {}; build the pool with a matching initializer",
                std::any::type_name::<S>()
            )
        });
        f.call(state, a)
    })
}

fn run_init<F, A, S>(args: &[u8], fds: Vec<OwnedFd>, hash: u64) -> Result<Box<dyn Any>, String>
where
    F: Task<A, S>,
    A: DeserializeOwned,
    S: 'static,
{
    if hash != type_hash::<F, A, S>() {
        return Err("the initializer's type does not match its entry point (parent and worker differ)".into());
    }
    let args: A = wire::decode(args, fds).map_err(|e| format!("could not decode the initializer's arguments: {e}"))?;
    Ok(Box::new(conjure::<F>().call(args)))
}

fn mismatch(cx: &mut RunCx<'_>) -> (Format, Vec<OwnedFd>) {
    let err = TaskError::Unserializable("type does not match its entry point (parent and worker differ)".into());
    let all: Vec<Result<(), TaskError>> = vec![Err(err); cx.items as usize];
    cx.out.clear();
    let fds = encode_into(&all, cx.out).unwrap_or_default();
    (Format::Mixed, fds)
}

/// Results of a chunk as they accumulate: a plain vector while every item
/// succeeds (the common case, and the cheap one to encode).
enum Outs<R> {
    Ok(Vec<R>),
    Mixed(Vec<Result<R, TaskError>>),
}

impl<R> Outs<R> {
    #[inline]
    fn push_ok(&mut self, r: R) {
        match self {
            Outs::Ok(v) => v.push(r),
            Outs::Mixed(v) => v.push(Ok(r)),
        }
    }

    #[inline]
    fn push(&mut self, result: Result<R, TaskError>) {
        match (self, result) {
            (Outs::Ok(v), Ok(r)) => v.push(r),
            (Outs::Mixed(v), r) => v.push(r),
            (this @ Outs::Ok(_), Err(e)) => {
                let Outs::Ok(v) = std::mem::replace(this, Outs::Mixed(Vec::new())) else { unreachable!() };
                let mut mixed: Vec<Result<R, TaskError>> = v.into_iter().map(Ok).collect();
                mixed.push(Err(e));
                *this = Outs::Mixed(mixed);
            }
        }
    }

    fn into_results(self) -> Vec<Result<R, TaskError>> {
        match self {
            Outs::Ok(v) => v.into_iter().map(Ok).collect(),
            Outs::Mixed(v) => v,
        }
    }
}

fn run_items<A, R>(
    cx: &mut RunCx<'_>,
    input: &[u8],
    fds: Vec<OwnedFd>,
    framed: bool,
    mut call: impl FnMut(&mut dyn Any, A) -> R,
) -> (Format, Vec<OwnedFd>)
where
    A: DeserializeOwned,
    R: Serialize,
{
    let n = cx.items as usize;
    let args = decode_args::<A>(input, fds, framed, n);
    let mut outs = Outs::Ok(Vec::with_capacity(n));
    let skip = cx.skip;
    let (status, timed, state) = (cx.status, cx.timed, &mut *cx.state);
    let caught =
        |payload: Box<dyn Any + Send>| TaskError::Panicked(crate::process::bootstrap::take_panic(payload.as_ref()));
    crate::process::bootstrap::quiet_panics(|| {
        if skip.is_empty() && !timed {
            // The common case: nothing to skip and no timeout, so the status
            // page only needs to say "in a chunk" (set by the caller).
            if let Args::Bulk(items) = args {
                // Every argument decoded: no `Result` per item until one panics.
                for a in items {
                    match panic::catch_unwind(AssertUnwindSafe(|| call(&mut *state, a))) {
                        Ok(r) => outs.push_ok(r),
                        Err(payload) => outs.push(Err(caught(payload))),
                    }
                }
                return;
            }
            for arg in args {
                outs.push(match arg {
                    Ok(a) => panic::catch_unwind(AssertUnwindSafe(|| call(&mut *state, a))).map_err(caught),
                    Err(e) => Err(e),
                });
            }
            return;
        }
        for (i, arg) in args.enumerate() {
            if !skip.is_empty()
                && let Some((_, err)) = skip.iter().find(|(k, _)| *k as usize == i)
            {
                outs.push(Err(err.clone()));
                continue;
            }
            let a = match arg {
                Ok(a) => a,
                Err(e) => {
                    outs.push(Err(e));
                    continue;
                }
            };
            status.begin_item(i as u32, timed.then(monotonic_ns));
            let result = panic::catch_unwind(AssertUnwindSafe(|| call(&mut *state, a)));
            status.end_item();
            outs.push(result.map_err(caught));
        }
    });
    encode_outs(cx, outs)
}

/// A chunk's arguments, item by item.
enum Args<A> {
    Bulk(std::vec::IntoIter<A>),
    Items(std::vec::IntoIter<Result<A, TaskError>>),
    Bad(TaskError, usize),
}

impl<A> Iterator for Args<A> {
    type Item = Result<A, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Args::Bulk(it) => it.next().map(Ok),
            Args::Items(it) => it.next(),
            Args::Bad(_, 0) => None,
            Args::Bad(e, left) => {
                *left -= 1;
                Some(Err(e.clone()))
            }
        }
    }
}

fn decode_args<A: DeserializeOwned>(input: &[u8], mut fds: Vec<OwnedFd>, framed: bool, n: usize) -> Args<A> {
    let bad = |e: String| Args::Bad(TaskError::Unserializable(e), n);
    if !framed {
        return match wire::decode::<Vec<A>>(input, fds) {
            Ok(v) if v.len() == n => Args::Bulk(v.into_iter()),
            Ok(v) => bad(format!("chunk holds {} arguments, {n} announced", v.len())),
            Err(e) => bad(format!("argument could not be deserialized: {e}")),
        };
    }
    let items: Vec<Framed<'_>> = match postcard::from_bytes(input) {
        Ok(v) => v,
        Err(e) => return bad(format!("chunk could not be decoded: {e}")),
    };
    let mut out = Vec::with_capacity(n);
    for item in items {
        out.push(match item {
            Framed::Value { bytes, nfds } => {
                let take = (nfds as usize).min(fds.len());
                let mine: Vec<OwnedFd> = fds.drain(..take).collect();
                wire::decode::<A>(bytes, mine)
                    .map_err(|e| TaskError::Unserializable(format!("argument could not be deserialized: {e}")))
            }
            Framed::Unserializable(message) => Err(TaskError::Unserializable(message)),
        });
    }
    if out.len() != n {
        return bad(format!("chunk holds {} arguments, {n} announced", out.len()));
    }
    Args::Items(out.into_iter())
}

/// Runs `f`, a serializer of values whose `Serialize` may panic; a panic is
/// caught, quietly (the caller reports it per item).
fn catch_serialize<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    crate::process::bootstrap::quiet_panics(|| panic::catch_unwind(AssertUnwindSafe(f)))
}

/// Encodes results into `out` (cleared first): bulk if possible, item by item
/// if some result cannot be serialized (its `Serialize` fails or panics).
fn encode_outs<R: Serialize>(cx: &mut RunCx<'_>, outs: Outs<R>) -> (Format, Vec<OwnedFd>) {
    if let Some(buf) = cx.direct.take() {
        let direct = catch_serialize(|| match &outs {
            Outs::Ok(v) => wire::encode_to_slice(v, buf).map(|(n, fds)| (Format::AllOk, n, fds)),
            Outs::Mixed(v) => wire::encode_to_slice(v, buf).map(|(n, fds)| (Format::Mixed, n, fds)),
        });
        if let Ok(Ok((format, n, fds))) = direct {
            cx.placed = Some(n);
            return (format, fds);
        }
    }
    let out = &mut *cx.out;
    out.clear();
    let bulk = catch_serialize(|| match &outs {
        Outs::Ok(v) => encode_into(v, out).map(|fds| (Format::AllOk, fds)),
        Outs::Mixed(v) => encode_into(v, out).map(|fds| (Format::Mixed, fds)),
    });
    if let Ok(Ok(done)) = bulk {
        return done;
    }
    let results = outs.into_results();
    match encode_framed(&results, "result", out) {
        Ok(all_fds) => (Format::Framed, all_fds),
        Err(e) => {
            // Cannot happen for plain bytes and strings; report it per item anyway.
            let err = TaskError::Unserializable(format!("results could not be framed: {e}"));
            let all: Vec<Result<(), TaskError>> = vec![Err(err); results.len()];
            out.clear();
            (Format::Mixed, encode_into(&all, out).unwrap_or_default())
        }
    }
}

/// A chunk's arguments encoded in the parent.
#[derive(Debug)]
pub(crate) struct EncodedChunk {
    pub framed: bool,
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    /// Where the buffer goes back when the chunk is done.
    recycle: Option<Arc<Buffers>>,
    /// The encoded bytes are in this shared slab instead of `bytes`.
    pub slab: Option<SlabLoan>,
}

impl EncodedChunk {
    /// The encoded bytes.
    pub(crate) fn data(&self) -> &[u8] {
        match &self.slab {
            Some(loan) => loan.slab.as_ref().expect("loaned").bytes(loan.len),
            None => &self.bytes,
        }
    }

    /// Their length.
    pub(crate) fn len(&self) -> usize {
        self.slab.as_ref().map_or(self.bytes.len(), |l| l.len)
    }
}

impl Drop for EncodedChunk {
    fn drop(&mut self) {
        if let Some(buffers) = &self.recycle {
            buffers.give(std::mem::take(&mut self.bytes));
        }
    }
}

/// Encodes a chunk's arguments: all at once, or item by item when some item
/// cannot be serialized (that item then fails alone, in the worker).
///
/// `hint` is the encoded size of the call's previous chunk: when it is
/// large, the chunk is encoded straight into a shared slab with some room to
/// spare and room for the results (and the ordinary way if it does not fit).
pub(crate) fn encode_chunk<A: Serialize>(items: &[A], buffers: &Arc<Buffers>, hint: usize) -> EncodedChunk {
    if hint >= SLAB_MIN
        && let Some(mut slab) = buffers.slabs.take(slab::capacity_for(hint))
    {
        let cap = slab.capacity();
        match wire::encode_to_slice(items, slab.bytes_mut(cap)) {
            Ok((len, fds)) => {
                buffers.saw_encoded(len);
                let loan = SlabLoan { slab: Some(slab), len, home: buffers.slabs.clone() };
                return EncodedChunk { framed: false, bytes: Vec::new(), fds, recycle: None, slab: Some(loan) };
            }
            Err(_) => buffers.slabs.give(slab),
        }
    }
    let mut bytes = buffers.take();
    let recycle = Some(buffers.clone());
    if let Ok(fds) = encode_into(items, &mut bytes) {
        buffers.saw_encoded(bytes.len());
        return EncodedChunk { framed: false, bytes, fds, recycle, slab: None };
    }
    let fds = encode_framed(items, "argument", &mut bytes).expect("bytes and strings always serialize");
    EncodedChunk { framed: true, bytes, fds, recycle, slab: None }
}

/// A chunk's results decoded in the parent.
pub(crate) enum Decoded<R> {
    /// Every item succeeded.
    AllOk(Vec<R>),
    /// Item by item.
    Items(Vec<Result<R, TaskError>>),
}

impl<R> Decoded<R> {
    pub(crate) fn into_results(self) -> Vec<Result<R, TaskError>> {
        match self {
            Decoded::AllOk(v) => v.into_iter().map(Ok).collect(),
            Decoded::Items(v) => v,
        }
    }
}

/// Decodes a chunk's results of `n` items.
pub(crate) fn decode_results<R: DeserializeOwned>(
    format: Format,
    bytes: &[u8],
    mut fds: Vec<OwnedFd>,
    n: usize,
) -> Decoded<R> {
    let bad = |e: String| Decoded::Items((0..n).map(|_| Err(TaskError::Unserializable(e.clone()))).collect());
    let decoded = match format {
        Format::AllOk => wire::decode::<Vec<R>>(bytes, fds).map(Decoded::AllOk),
        Format::Mixed => wire::decode::<Vec<Result<R, TaskError>>>(bytes, fds).map(Decoded::Items),
        Format::Framed => {
            let items: Vec<Framed<'_>> = match postcard::from_bytes(bytes) {
                Ok(v) => v,
                Err(e) => return bad(format!("results could not be decoded: {e}")),
            };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(match item {
                    Framed::Value { bytes, nfds } => {
                        let take = (nfds as usize).min(fds.len());
                        let mine: Vec<OwnedFd> = fds.drain(..take).collect();
                        wire::decode::<Result<R, TaskError>>(bytes, mine).unwrap_or_else(|e| {
                            Err(TaskError::Unserializable(format!("result could not be deserialized: {e}")))
                        })
                    }
                    Framed::Unserializable(message) => Err(TaskError::Unserializable(message)),
                });
            }
            Ok(Decoded::Items(out))
        }
    };
    match decoded {
        Ok(Decoded::AllOk(v)) if v.len() == n => Decoded::AllOk(v),
        Ok(Decoded::Items(v)) if v.len() == n => Decoded::Items(v),
        Ok(_) => bad(format!("the worker returned the wrong number of results (expected {n})")),
        Err(e) => bad(format!("result could not be deserialized: {e}")),
    }
}

/// Encodes each value on its own, so that one that cannot be serialized
/// (its `Serialize` fails or panics) becomes a `Framed::Unserializable` message ("{what} could not be
/// serialized (…)") instead of failing the whole batch, then encodes the
/// framed list into `out` (cleared first). Returns the descriptors of every
/// value, in order.
fn encode_framed<T: Serialize>(values: &[T], what: &str, out: &mut Vec<u8>) -> Result<Vec<OwnedFd>, wire::WireError> {
    type Body = Result<(Vec<u8>, Vec<OwnedFd>), String>;
    let mut bodies: Vec<Body> = values
        .iter()
        .map(|v| {
            let mut body = Vec::new();
            match catch_serialize(|| encode_into(v, &mut body)) {
                Ok(Ok(fds)) => Ok((body, fds)),
                Ok(Err(e)) => Err(format!("{what} could not be serialized ({})", reason(&e))),
                Err(payload) => Err(format!(
                    "{what} could not be serialized (its Serialize panicked: {})",
                    crate::process::bootstrap::take_panic(payload.as_ref())
                )),
            }
        })
        .collect();
    let mut all_fds = Vec::new();
    let framed: Vec<Framed<'_>> = bodies
        .iter_mut()
        .map(|b| match b {
            Ok((bytes, fds)) => {
                let nfds = fds.len() as u32;
                all_fds.append(fds);
                Framed::Value { bytes, nfds }
            }
            Err(message) => Framed::Unserializable(message.clone()),
        })
        .collect();
    out.clear();
    encode_into(&framed, out)?;
    Ok(all_fds)
}

/// The codec's own words for a serialization failure.
fn reason(e: &wire::WireError) -> String {
    match e {
        wire::WireError::Encode(m) => m.clone(),
        other => other.to_string(),
    }
}
