//! The manager's request/response protocol: one [`Request`] frame from a
//! client, one [`Response`] frame back, on an authenticated
//! [`Connection`](crate::Connection).
//!
//! Keys, values and items travel as their own encoded bytes (postcard), so
//! the server stores and compares bytes and never needs the user's types;
//! only shipped functions ([`CodeRef`]) decode them, inside the manager.
//! Every decoder here returns an error on bad bytes (see [`fuzz_request`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use super::blob::Gathered;

/// Bytes of one encoded key, value or item (a large value may share the
/// buffer of the frame it came in).
pub(crate) type Bytes = super::blob::Blob;

/// A function shipped to the manager (same build): a code offset and a
/// hash of its types (see `code.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CodeRef {
    pub offset: i64,
    pub type_hash: u64,
}

/// What a client asks.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// First request of every connection: who is calling.
    Hello { session: u64, pid: i32, build_id: String },
    /// Make a new object.
    Create { init: Init, type_name: String, type_hash: u64 },
    /// Give an object a name that other clients can look up.
    Publish { name: String, object: u64 },
    /// Find an object by name.
    Lookup { name: String },
    /// Work on an object.
    Call { object: u64, op: Op },
    /// Stop the manager.
    Shutdown,
    /// Carry this connection's later calls through a shared-memory lane
    /// (see `lane`); answered by [`Reply::Lane`] with the lane's memory and
    /// the dispatcher's bell attached, or an error (then the socket goes on
    /// carrying the calls).
    OpenLane,
    /// Forget an object (and the names it was published under).
    Remove { object: u64 },
    /// How many calls wait in the manager now (answered with a count).
    Waiting,
}

/// The kind and initial state of a new object.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Init {
    Dict,
    List(Vec<Bytes>),
    Namespace,
    Queue { maxsize: Option<u64>, joinable: bool },
    Value(Bytes),
    Lock,
    RLock,
    Semaphore { value: u32, bounded: bool },
    Event,
    Condition,
    Barrier { parties: u32, action: Option<CodeRef> },
    User { state: Bytes, dispatch: CodeRef },
}

/// The kinds of objects a manager holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A [`Dict`](super::Dict).
    Dict,
    /// A [`List`](super::List).
    List,
    /// A [`Namespace`](super::Namespace).
    Namespace,
    /// A [`Queue`](super::Queue).
    Queue,
    /// A [`JoinableQueue`](super::JoinableQueue).
    JoinableQueue,
    /// A [`Value`](super::Value).
    Value,
    /// A [`Lock`](super::Lock).
    Lock,
    /// An [`RLock`](super::RLock).
    RLock,
    /// A [`Semaphore`](super::Semaphore) (bounded or not).
    Semaphore,
    /// An [`Event`](super::Event).
    Event,
    /// A [`Condition`](super::Condition).
    Condition,
    /// A [`Barrier`](super::Barrier).
    Barrier,
    /// A user type (a [`Shared`](super::Shared) implementation).
    User,
}

impl Init {
    /// The kind of object this makes.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Init::Dict => Kind::Dict,
            Init::List(_) => Kind::List,
            Init::Namespace => Kind::Namespace,
            Init::Queue { joinable: false, .. } => Kind::Queue,
            Init::Queue { joinable: true, .. } => Kind::JoinableQueue,
            Init::Value(_) => Kind::Value,
            Init::Lock => Kind::Lock,
            Init::RLock => Kind::RLock,
            Init::Semaphore { .. } => Kind::Semaphore,
            Init::Event => Kind::Event,
            Init::Condition => Kind::Condition,
            Init::Barrier { .. } => Kind::Barrier,
            Init::User { .. } => Kind::User,
        }
    }
}

/// Who holds a lock: a client process (its session) and its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub session: u64,
    pub thread: u64,
}

/// An operation on one object. `timeout`: `None` waits as long as it takes,
/// `Some(ZERO)` does not wait.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    // Dict and Namespace (keys are encoded keys; a namespace's are names).
    Get(Bytes),
    Insert(Bytes, Bytes),
    Remove(Bytes),
    ContainsKey(Bytes),
    Keys,
    Values,
    Items,
    Extend(Vec<(Bytes, Bytes)>),
    /// Run a shipped function on one entry (`key`), one list item (`index`)
    /// or a value (neither), atomically.
    Update {
        key: Option<Bytes>,
        index: Option<u64>,
        code: CodeRef,
        args: Bytes,
    },
    // Dict, List, Namespace, Queue.
    Len,
    Clear,
    // List.
    Push(Bytes),
    ExtendList(Vec<Bytes>),
    GetIndex(u64),
    SetIndex(u64, Bytes),
    InsertAt(u64, Bytes),
    RemoveAt(u64),
    Pop,
    ToVec,
    // Queue and JoinableQueue.
    Put {
        item: Bytes,
        timeout: Option<Duration>,
    },
    Take {
        timeout: Option<Duration>,
    },
    Full,
    Close,
    TaskDone,
    Join {
        timeout: Option<Duration>,
    },
    // Value.
    Load,
    Store(Bytes),
    // Lock, RLock, Condition, Semaphore.
    Acquire {
        owner: Owner,
        timeout: Option<Duration>,
    },
    Release {
        owner: Owner,
    },
    IsLocked,
    /// How many times `owner` holds an `RLock` (0: not its owner).
    Depth {
        owner: Owner,
    },
    SemaphoreValue,
    // Event.
    Set,
    ClearEvent,
    IsSet,
    Wait {
        timeout: Option<Duration>,
    },
    // Condition.
    CondWait {
        owner: Owner,
        timeout: Option<Duration>,
    },
    Notify(u64),
    NotifyAll,
    // Barrier.
    BarrierWait {
        timeout: Option<Duration>,
    },
    Abort,
    Reset,
    Parties,
    NWaiting,
    IsBroken,
    // User types.
    UserCall(Bytes),
    // Queue and JoinableQueue, many items per call (last: the variants
    // above keep their numbers on the wire).
    /// Puts every item at once, when the queue has room for all of them.
    PutMany {
        items: Vec<Bytes>,
        timeout: Option<Duration>,
    },
    /// Takes the oldest items, at least one (waiting for it as `timeout`
    /// says) and at most `max`, as many as are there and fit one answer.
    TakeMany {
        max: u64,
        timeout: Option<Duration>,
    },
    /// Dict and Namespace: sets the entry as `Insert` does, answering
    /// `Unit` instead of sending the replaced value back.
    Assign(Bytes, Bytes),
}

/// What the manager answers.
pub(crate) type Response = Result<Reply, RemoteError>;

/// A successful answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Unit,
    Bool(bool),
    Count(u64),
    Bytes(Bytes),
    MaybeBytes(Option<Bytes>),
    Many(Vec<Bytes>),
    Pairs(Vec<(Bytes, Bytes)>),
    Created(u64),
    Found {
        object: u64,
        kind: Kind,
        type_name: String,
        type_hash: u64,
    },
    /// A lock was acquired; `owner_died`: its previous holder died holding it.
    Acquired {
        owner_died: bool,
    },
    /// The lane asked for with `OpenLane` is attached; from the next
    /// request on, calls go through it.
    Lane,
    /// The answer to `Hello`: the server's id (random, fresh in every
    /// server), by which a client in the manager's own process tells that
    /// a call would go back to the server that runs it.
    Welcome {
        server: u64,
    },
}

/// A failed call, as the manager reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The call's timeout passed.
    #[error("timed out")]
    Timeout,
    /// `get` on an empty queue without waiting.
    #[error("the queue is empty")]
    Empty,
    /// `put` on a full queue without waiting.
    #[error("the queue is full")]
    Full,
    /// The queue was closed.
    #[error("the queue is closed")]
    Closed,
    /// A list index past the end.
    #[error("list index {index} out of range (length {len})")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The list's length.
        len: u64,
    },
    /// A release that is not allowed (unheld lock, another owner's RLock,
    /// a bounded semaphore released too often).
    #[error(transparent)]
    Release(#[from] crate::ReleaseError),
    /// `task_done` called more times than items were put.
    #[error("task_done() called more times than there were items")]
    TooManyTaskDone,
    /// The barrier is broken (aborted, reset, or another party timed out).
    #[error("the barrier is broken")]
    BarrierBroken,
    /// No object with this id: it was removed ([`Manager::remove`](super::Manager::remove)),
    /// the manager restarted, or the proxy is forged.
    #[error("the manager has no object {0} (it was removed, or the manager was restarted)")]
    NoSuchObject(u64),
    /// No object published under this name.
    #[error("the manager has no object named {0:?}")]
    NoSuchName(String),
    /// The name is already taken.
    #[error("the name {0:?} is already taken")]
    NameTaken(String),
    /// The operation does not apply to this kind of object.
    #[error("{op} is not an operation of a {kind:?}")]
    WrongOperation {
        /// The operation.
        op: String,
        /// The object's kind.
        kind: Kind,
    },
    /// A shipped function or a user object's `call` panicked; the object is
    /// unchanged (for `update`) and the manager goes on.
    #[error("panicked in the manager: {0}")]
    Panicked(String),
    /// The client is another build of the program, so the manager cannot
    /// run its functions.
    #[error("the manager runs another build ({manager}) than this client ({client}); functions cannot be shipped")]
    BuildMismatch {
        /// The manager's build id.
        manager: String,
        /// The client's build id.
        client: String,
    },
    /// A request the manager could not read or run (malformed, undecodable
    /// bytes for the object's types, …).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The object was removed ([`Manager::remove`](super::Manager::remove))
    /// while this call waited on it.
    #[error("the object was removed from the manager while this call waited on it")]
    Removed,
    /// A condition wait took its lock back from a holder that died holding
    /// it: the lock is held again (by the waiter), and the data it protects
    /// may be inconsistent.
    #[error("the previous owner of the condition's lock died while holding it; the lock is held again")]
    OwnerDied,
    /// The answer is larger than a client reads in one message (read the
    /// object in parts: items one at a time, say).
    #[error(
        "the answer is too large for a client: {size} bytes, at most {limit}; read the object in parts \
         (a list by index, a dict by key) or keep bulk data in shared memory (`multiproc::shared`) and \
         only its name in the manager"
    )]
    AnswerTooLarge {
        /// The encoded answer's size.
        size: u64,
        /// The most a client reads.
        limit: u64,
    },
}

/// Largest request frame the manager reads (64 MiB): larger ones end the
/// connection that sent them (a client of this crate does not send them:
/// [`ManagerError::TooLarge`](super::ManagerError::TooLarge)).
pub(crate) const MAX_REQUEST: u64 = 64 << 20;

/// Largest answer frame a client reads (256 MiB): the manager answers
/// [`RemoteError::AnswerTooLarge`] instead of a larger one.
pub(crate) const MAX_RESPONSE: u64 = 256 << 20;

/// The most item bytes one `TakeMany` answer carries (a MiB under
/// [`MAX_RESPONSE`], room for the answer's own framing): items past it stay
/// in the queue for the next call, instead of being taken into an answer
/// too large to send.
pub(crate) const MANY_ITEMS_BUDGET: u64 = MAX_RESPONSE - (1 << 20);

/// The most bytes an item of a `TakeMany` answer adds beside its own: its
/// length, encoded as a varint of at most 10 bytes.
pub(crate) const MANY_ITEM_PREFIX: u64 = 10;

/// Encodes `response` into this thread's buffer and runs `f` on the
/// encoding; a response larger than a client reads is replaced by the
/// error saying so (sending it would end the connection, and with the
/// client's last one, the locks it holds). `f` may take the encoding (see
/// [`with_encoded`]).
pub(crate) fn with_encoded_answer<R>(
    response: &Response,
    mut f: impl FnMut(&mut Gathered) -> Result<R, crate::ConnectionError>,
) -> Result<R, crate::ConnectionError> {
    let mut size = 0;
    let sent = with_encoded(response, |message| {
        size = message.len() as u64;
        if size > MAX_RESPONSE { Ok(None) } else { f(message).map(Some) }
    })?;
    match sent {
        Some(done) => Ok(done),
        None => with_encoded(&Err::<Reply, _>(RemoteError::AnswerTooLarge { size, limit: MAX_RESPONSE }), f),
    }
}

/// The largest encoding buffer a thread keeps for its next message.
const KEPT_REQUEST: usize = 1 << 20;

/// Encodes `message` into this thread's buffer, its large shared values
/// left out (see [`Gathered`]), and runs `f` on the encoding. `f` may take
/// it (`std::mem::take`) to keep the message, rather than copy it; the
/// thread's next message then starts a new buffer.
pub(crate) fn with_encoded<T: Serialize, R>(
    message: &T,
    f: impl FnOnce(&mut Gathered) -> Result<R, crate::ConnectionError>,
) -> Result<R, crate::ConnectionError> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    crate::thread_buffer::with_kept(&BUF, KEPT_REQUEST, |buf| {
        let mut encoded = Gathered::encode(message, std::mem::take(buf))?;
        crate::allocator::moved(encoded.len());
        let done = f(&mut encoded);
        *buf = encoded.bytes;
        done
    })
}

/// Decodes a request frame; an error for bytes that are not one.
pub(crate) fn decode_request(bytes: &[u8]) -> Result<Request, String> {
    crate::allocator::moved(bytes.len());
    crate::wire::decode::<Request>(bytes, Vec::new()).map_err(|e| e.to_string())
}

/// As [`decode_request`], taking the frame: a large value in it keeps the
/// frame's buffer instead of being copied out (see `blob`).
pub(crate) fn decode_request_frame(bytes: Vec<u8>) -> Result<Request, String> {
    crate::allocator::moved(bytes.len());
    super::blob::decode_framed::<Request>(bytes).map_err(|e| e.to_string())
}

/// Feeds arbitrary bytes to the request and response decoders; for the
/// fuzz target and the robustness tests. Never panics, but for a framed
/// decode that disagrees with a plain one.
///
/// The framed decoders (which let a large value share its frame) see the
/// bytes padded with zeros to twice [`SHARE_MIN`](super::blob::SHARE_MIN):
/// a fuzzer's short input can then name a value long enough to share. Each
/// must decode what the plain decoder does, to the same bytes.
#[doc(hidden)]
pub fn fuzz_request(data: &[u8]) {
    let _ = decode_request(data);
    let _ = crate::wire::decode::<Response>(data, Vec::new());
    let mut frame = vec![0u8; data.len().max(2 * super::blob::SHARE_MIN)];
    frame[..data.len()].copy_from_slice(data);
    let plain = decode_request(&frame).ok().map(|r| reencoded(&r));
    let framed = decode_request_frame(frame.clone()).ok().map(|r| reencoded(&r));
    assert!(plain == framed, "a framed request decoded otherwise than a plain one");
    let plain = crate::wire::decode::<Response>(&frame, Vec::new()).ok().map(|r| reencoded(&r));
    let framed = super::blob::decode_framed::<Response>(frame).ok().map(|r| reencoded(&r));
    assert!(plain == framed, "a framed response decoded otherwise than a plain one");
}

/// A decoded message encoded again (what it holds, for comparisons).
fn reencoded<T: Serialize>(message: &T) -> Option<Vec<u8>> {
    crate::wire::encode(message).ok().map(|e| e.bytes)
}
