//! The Redis layout and message schema, version [`SCHEMA_VERSION`]: every
//! key, stream, group and field name this crate uses is here, and so is every
//! decoder of bytes read from Redis.
//!
//! # Keys
//!
//! With prefix `P` (default `multiproc`) and queue `Q` (default `default`):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:Q:tasks` | stream, group [`GROUP`] | one entry per chunk of tasks; workers read it with `XREADGROUP`, and `XACK` + `XDEL` an entry once its result is written, so it holds only unfinished work |
//! | `P:Q:dead` | stream, capped at [`DEAD_LETTER_MAXLEN`] (approximately), no expiry | dead letters: tasks that failed [`TaskMsg::max_attempts`] deliveries, tasks of another build, garbage entries; each with a `reason`; an entry holds under 9 KiB ([`DeadMessage`]), so the stream stays under about 90 MB |
//! | `P:Q:blob:C:T` | string, with expiry | the arguments of chunk `T` of caller `C` when they are too large for an entry ([`BLOB_THRESHOLD`]) |
//! | `P:Q:batch:C:T` | string, with expiry | the entry ids (space-separated) of the batch of chunks caller `C` queued in one script, `T` being the batch's first chunk id: the script sets it when it queues the batch, and queues nothing when it is set already (the caller sent it again after its reply was lost), returning these ids; the caller's next batch script deletes it when this batch's script was answered at its first try (no copy of it can run again); otherwise it expires once the caller can no longer send the batch again: its reconnect timeout plus two command attempts and a pause after the batch (about a minute by default), at most a day after it; a caller whose batch sent again failed for good sets it to the empty string if it is not set (`SET NX`: no try ran, and none still on its way will queue anything), or reads the ids an earlier try set and withdraws those entries |
//! | `P:Q:withdrawn:C` | sorted set, with expiry | the ids ([`TaskMsg::task`]) of the chunks caller `C` withdrew while they were in flight (a call terminated, out of wait time or dropped), each scored with the time (ms since the Unix epoch, the caller's clock) after which it is forgotten: a worker host checks it before it runs a delivery after the first (an entry whose id the caller does not know), and deletes a withdrawn chunk's entry unrun, with no result and no dead letter; each withdrawal removes the ids past their time and sets the key's expiry to [`TaskMsg::result_ttl_ms`], so the set holds only the withdrawals of the last TTL |
//! | `P:Q:visibility` | string, with expiry | the longest visibility timeout (ms) a live worker host of the queue declared: each host sets it when its own is at least the value held, and renews it every quarter of its timeout; it expires twice that host's timeout after the last renewal; hosts reclaim entries idle longer than this value (or their own timeout, if longer) |
//! | `P:results:C` | stream, with expiry | the results for caller `C`; the caller deletes what it has read, and the key expires [`TaskMsg::result_ttl_ms`] after the last write if the caller is gone |
//!
//! Each worker host is a consumer of [`GROUP`] named `hostname-pid-random`;
//! it joins at start (`XGROUP CREATECONSUMER`), keeps the entries it holds
//! with heartbeats (`XCLAIM … JUSTID` every quarter of its visibility
//! timeout), reclaims (`XAUTOCLAIM`) entries idle longer than the queue's
//! visibility timeout (`P:Q:visibility`), and removes consumers that hold
//! nothing and have been idle for an hour (hosts that are gone).
//!
//! # Entries
//!
//! A task entry has the fields `v` ([`SCHEMA_VERSION`]), `m` (a [`TaskMsg`]
//! in postcard) and `mac` (HMAC-SHA256 of `m` under the pool's key). A result
//! entry has `v` and `m` (a [`ResultMsg`]). A dead letter has `reason`
//! (at most [`DEAD_LETTER_REASON_MAX`] bytes), `id` (the task entry's id)
//! and, when the entry had an `m`, either that `m` whole (at most
//! [`DEAD_LETTER_MESSAGE_MAX`] bytes) or, for a larger one, its first
//! [`DEAD_LETTER_MESSAGE_MAX`] bytes in `head` and its length in `size`
//! (see [`DeadMessage`]). Nothing reads dead letters back to run them
//! again: they are kept for inspection only.
//!
//! Everything read from Redis is untrusted: a decoder here returns an error
//! on any input, sizes are checked before allocation, and a task's function
//! reference is used only after its build id and its MAC are checked.

use hmac::{Hmac, Mac};
use multiproc::RemoteFn;
use redis::Value;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::Sha256;

use crate::error::TaskFailure;

mod reply;
pub use reply::{Autoclaim, StreamEntry, autoclaim_reply, read_reply};

/// The version of this layout and schema, in the `v` field of every entry.
pub const SCHEMA_VERSION: &str = "1";
/// The consumer group of the workers on a task stream.
pub const GROUP: &str = "workers";
/// The approximate length cap of a dead-letter stream.
pub const DEAD_LETTER_MAXLEN: usize = 10_000;
/// The largest message a dead letter keeps whole (field `m`); of a larger
/// one it keeps only the first this many bytes (field `head`) and its
/// length (field `size`). A task's arguments stay in its entry up to
/// [`BLOB_THRESHOLD`], so without this bound a full dead-letter stream
/// could hold gigabytes.
pub const DEAD_LETTER_MESSAGE_MAX: usize = 4096;
/// The longest `reason` of a dead letter in bytes: a longer one (the last
/// error of a task may be long) is cut.
pub const DEAD_LETTER_REASON_MAX: usize = 4096;
/// Chunks whose encoded arguments are larger than this travel in a separate
/// key (`P:Q:blob:C:T`) rather than in the entry.
pub const BLOB_THRESHOLD: usize = 256 * 1024;
/// The largest entry body or blob a worker or caller accepts.
pub const MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// The field names of entries.
pub mod field {
    /// Schema version.
    pub const VERSION: &str = "v";
    /// The postcard message.
    pub const MESSAGE: &str = "m";
    /// HMAC-SHA256 of the message.
    pub const MAC: &str = "mac";
    /// Why an entry is a dead letter.
    pub const REASON: &str = "reason";
    /// The id of the task entry a dead letter was.
    pub const ID: &str = "id";
    /// The first bytes of a dead letter's message too large to keep whole.
    pub const HEAD: &str = "head";
    /// The length in bytes (in decimal) of that message.
    pub const SIZE: &str = "size";
}

/// The key names of one queue under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    queue: String,
}

impl Keys {
    /// Keys for `queue` under `prefix`.
    ///
    /// ```
    /// let k = multiproc_redis::schema::Keys::new("mp", "q");
    /// assert_eq!(k.tasks(), "mp:q:tasks");
    /// assert_eq!(k.dead_letters(), "mp:q:dead");
    /// assert_eq!(k.results("c1"), "mp:results:c1");
    /// assert_eq!(k.blob("c1", 7), "mp:q:blob:c1:7");
    /// assert_eq!(k.visibility(), "mp:q:visibility");
    /// assert_eq!(k.withdrawn("c1"), "mp:q:withdrawn:c1");
    /// assert_eq!(k.batch("c1", 7), "mp:q:batch:c1:7");
    /// ```
    pub fn new(prefix: &str, queue: &str) -> Keys {
        Keys { prefix: prefix.to_string(), queue: queue.to_string() }
    }

    /// The task stream.
    pub fn tasks(&self) -> String {
        format!("{}:{}:tasks", self.prefix, self.queue)
    }

    /// The dead-letter stream.
    pub fn dead_letters(&self) -> String {
        format!("{}:{}:dead", self.prefix, self.queue)
    }

    /// The results stream of caller `caller`.
    pub fn results(&self, caller: &str) -> String {
        format!("{}:results:{caller}", self.prefix)
    }

    /// The key holding the longest visibility timeout a live worker host of
    /// the queue declared.
    pub fn visibility(&self) -> String {
        format!("{}:{}:visibility", self.prefix, self.queue)
    }

    /// The sorted set of the chunks caller `caller` withdrew while they
    /// were in flight: a worker host drops a later delivery of any of them
    /// unrun.
    pub fn withdrawn(&self, caller: &str) -> String {
        format!("{}:{}:withdrawn:{caller}", self.prefix, self.queue)
    }

    /// The key marking queued the batch of chunks of caller `caller` whose
    /// first chunk is `first_task` (it holds their entry ids): sending the
    /// batch again queues nothing more.
    pub fn batch(&self, caller: &str, first_task: u64) -> String {
        format!("{}:{}:batch:{caller}:{first_task}", self.prefix, self.queue)
    }

    /// The key holding the arguments of chunk `task` of caller `caller`.
    pub fn blob(&self, caller: &str, task: u64) -> String {
        format!("{}:{}:blob:{caller}:{task}", self.prefix, self.queue)
    }
}

/// The arguments of a chunk: one postcard argument tuple per item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Args {
    /// In the entry.
    Inline(Vec<ByteBuf>),
    /// In a separate key: the postcard encoding of `Vec<ByteBuf>`, `len`
    /// bytes long.
    Blob {
        /// The key.
        key: String,
        /// Its length in bytes.
        len: u64,
    },
}

/// A chunk of tasks: the `m` field of a task entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMsg {
    /// The build id of the caller ([`multiproc::build_id`]); a worker of
    /// another build refuses the task.
    pub build_id: String,
    /// The function's stable name (its type name), for errors and logs.
    pub function: String,
    /// The function, valid only in a process of `build_id`.
    pub remote: RemoteFn,
    /// The caller's id: results go to `P:results:<caller>`.
    pub caller: String,
    /// The chunk's id, unique for the caller; results are deduplicated by it.
    pub task: u64,
    /// This delivery's number, from 1.
    pub attempt: u32,
    /// After this many deliveries the chunk becomes a dead letter.
    pub max_attempts: u32,
    /// The longest one item may run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// How long the results stream lives after the last result is written.
    pub result_ttl_ms: u64,
    /// Why the previous delivery failed, if it did.
    pub last_error: Option<String>,
    /// The arguments.
    pub args: Args,
}

/// What became of a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// One outcome per item: the postcard encoding of the result, or why it
    /// failed.
    Items(Vec<Result<ByteBuf, TaskFailure>>),
    /// The whole chunk failed.
    Failed(TaskFailure),
}

/// One chunk's outcome in a [`ResultMsg`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkResult {
    /// The chunk's id ([`TaskMsg::task`]).
    pub task: u64,
    /// What became of it.
    pub outcome: Outcome,
}

/// The `m` field of a result entry: outcomes of one or more chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultMsg {
    /// The outcomes.
    pub results: Vec<ChunkResult>,
}

/// Why an entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A field is missing or not bytes.
    #[error("entry has no byte field {0:?}")]
    MissingField(&'static str),
    /// The schema version is not ours.
    #[error("entry has schema version {found:?}, this build reads {SCHEMA_VERSION:?}; upgrade the older side")]
    Version {
        /// What the entry says.
        found: String,
    },
    /// The message does not decode.
    #[error("entry message does not decode: {0}")]
    Decode(String),
    /// Larger than [`MAX_MESSAGE`].
    #[error("entry message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    /// The MAC does not match: garbage, or written without the pool's key.
    #[error("entry MAC does not match: not written by a pool with this key")]
    BadMac,
}

/// The bytes of field `name` of an entry's fields.
pub fn bytes_field<'a>(fields: &'a [(String, Value)], name: &'static str) -> Result<&'a [u8], EntryError> {
    match fields.iter().find(|(k, _)| k == name).map(|(_, v)| v) {
        Some(Value::BulkString(b)) => Ok(b),
        Some(Value::SimpleString(s)) => Ok(s.as_bytes()),
        _ => Err(EntryError::MissingField(name)),
    }
}

fn check_version(fields: &[(String, Value)]) -> Result<(), EntryError> {
    let v = bytes_field(fields, field::VERSION)?;
    if v != SCHEMA_VERSION.as_bytes() {
        return Err(EntryError::Version { found: String::from_utf8_lossy(&v[..v.len().min(32)]).into_owned() });
    }
    Ok(())
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, EntryError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(EntryError::TooLarge(bytes.len()));
    }
    postcard::from_bytes(bytes).map_err(|e| EntryError::Decode(e.to_string()))
}

/// Decodes a task entry's fields, without checking its MAC (see
/// [`verify_mac`]): the build id is read first, so a task of another build
/// can be refused with a clear error.
///
/// # Errors
///
/// [`EntryError`] for any entry that is not a task of this schema.
pub fn decode_task(fields: &[(String, Value)]) -> Result<TaskMsg, EntryError> {
    check_version(fields)?;
    decode(bytes_field(fields, field::MESSAGE)?)
}

/// Checks the `mac` field against the `m` field under `key`.
///
/// # Errors
///
/// [`EntryError::BadMac`] or a missing field.
pub fn verify_mac(fields: &[(String, Value)], key: &[u8]) -> Result<(), EntryError> {
    let m = bytes_field(fields, field::MESSAGE)?;
    let tag = bytes_field(fields, field::MAC)?;
    mac(key).chain_update(m).verify_slice(tag).map_err(|_| EntryError::BadMac)
}

/// Decodes a result entry's fields.
///
/// # Errors
///
/// [`EntryError`] for any entry that is not a result of this schema.
pub fn decode_result(fields: &[(String, Value)]) -> Result<ResultMsg, EntryError> {
    check_version(fields)?;
    decode(bytes_field(fields, field::MESSAGE)?)
}

/// Decodes the arguments stored in a blob key.
///
/// # Errors
///
/// [`EntryError::TooLarge`] or [`EntryError::Decode`].
pub fn decode_blob(bytes: &[u8]) -> Result<Vec<ByteBuf>, EntryError> {
    decode(bytes)
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// The fields of a task entry for `msg`, signed with `key`.
///
/// ```
/// use multiproc_redis::schema::{self, Args, TaskMsg};
///
/// fn double(x: u64) -> u64 { 2 * x }
///
/// let msg = TaskMsg {
///     build_id: multiproc::build_id().to_string(),
///     function: "double".into(),
///     remote: multiproc::RemoteFn::of::<_, (u64,), u64>(double),
///     caller: "c".into(), task: 1, attempt: 1, max_attempts: 3, timeout_ms: None,
///     result_ttl_ms: 60_000, last_error: None, args: Args::Inline(vec![]),
/// };
/// let fields: Vec<(String, redis::Value)> = schema::task_fields(&msg, b"key")
///     .into_iter().map(|(k, v)| (k.to_string(), redis::Value::BulkString(v))).collect();
/// assert_eq!(schema::decode_task(&fields).unwrap(), msg);
/// assert!(schema::verify_mac(&fields, b"key").is_ok());
/// assert!(schema::verify_mac(&fields, b"other key").is_err());
/// ```
pub fn task_fields(msg: &TaskMsg, key: &[u8]) -> [(&'static str, Vec<u8>); 3] {
    let m = encode_task(msg);
    let tag = mac(key).chain_update(&m).finalize().into_bytes().to_vec();
    [(field::VERSION, SCHEMA_VERSION.as_bytes().to_vec()), (field::MESSAGE, m), (field::MAC, tag)]
}

/// The postcard encoding of a task message (the `m` field).
pub fn encode_task(msg: &TaskMsg) -> Vec<u8> {
    postcard::to_allocvec(msg).unwrap_or_else(|e| unreachable!("a TaskMsg always encodes: {e}"))
}

/// The fields of a result entry holding `results` (a [`ResultMsg`]).
pub fn result_fields(results: &[ChunkResult]) -> [(&'static str, Vec<u8>); 2] {
    // Encodes exactly as a `ResultMsg`, without copying the results into one.
    #[derive(Serialize)]
    struct ResultRef<'a> {
        results: &'a [ChunkResult],
    }
    let m =
        postcard::to_allocvec(&ResultRef { results }).unwrap_or_else(|e| unreachable!("results always encode: {e}"));
    [(field::VERSION, SCHEMA_VERSION.as_bytes().to_vec()), (field::MESSAGE, m)]
}

/// The postcard encoding of a chunk's arguments, for a blob key.
pub fn encode_blob(items: &[ByteBuf]) -> Vec<u8> {
    postcard::to_allocvec(items).unwrap_or_else(|e| unreachable!("bytes always encode: {e}"))
}

/// What a dead letter keeps of the message (the `m` field) of the entry it
/// was: the whole message when it is small, else its head and its length.
///
/// The head of a large task's message still names the task: its fields are
/// encoded in order, and all but the arguments ([`TaskMsg::args`], the
/// last) usually fit in [`DEAD_LETTER_MESSAGE_MAX`] bytes. It does not
/// decode as a [`TaskMsg`], and the task cannot be run again from it.
///
/// ```
/// use multiproc_redis::schema::{DEAD_LETTER_MESSAGE_MAX, DeadMessage, field};
///
/// assert_eq!(DeadMessage::of(b"small"), DeadMessage::Whole(b"small".to_vec()));
/// let large = vec![7u8; 1 << 20];
/// let kept = DeadMessage::of(&large);
/// assert_eq!(kept, DeadMessage::Head { head: vec![7; DEAD_LETTER_MESSAGE_MAX], size: 1 << 20 });
/// let fields = kept.fields();
/// assert_eq!((fields[0].0, fields[1].0), (field::HEAD, field::SIZE));
/// assert_eq!(fields[1].1, b"1048576");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadMessage {
    /// A message of at most [`DEAD_LETTER_MESSAGE_MAX`] bytes (field `m`).
    Whole(Vec<u8>),
    /// The first [`DEAD_LETTER_MESSAGE_MAX`] bytes of a larger message
    /// (field `head`) and its length in bytes (field `size`).
    Head {
        /// The first bytes.
        head: Vec<u8>,
        /// The length of the whole message.
        size: usize,
    },
}

impl DeadMessage {
    /// What a dead letter keeps of message `m`.
    pub fn of(m: &[u8]) -> DeadMessage {
        if m.len() <= DEAD_LETTER_MESSAGE_MAX {
            DeadMessage::Whole(m.to_vec())
        } else {
            DeadMessage::Head { head: m[..DEAD_LETTER_MESSAGE_MAX].to_vec(), size: m.len() }
        }
    }

    /// Its fields in a dead letter.
    pub fn fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        match self {
            DeadMessage::Whole(m) => vec![(field::MESSAGE, m.clone())],
            DeadMessage::Head { head, size } => {
                vec![(field::HEAD, head.clone()), (field::SIZE, size.to_string().into_bytes())]
            }
        }
    }
}

/// `reason` cut to at most [`DEAD_LETTER_REASON_MAX`] bytes (at a
/// character boundary), for the `reason` field of a dead letter.
pub fn dead_letter_reason(reason: &str) -> &str {
    let mut end = reason.len().min(DEAD_LETTER_REASON_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The default key of a pool and its workers: derived from the build id,
/// so it keeps out garbage and other builds but is no secret. Set your own
/// key when others can write to the Redis server.
pub fn default_key() -> Vec<u8> {
    format!("multiproc-redis/{}", multiproc::build_id()).into_bytes()
}

/// Fields of a stream entry as pairs (the form Redis returns them in).
pub fn entry_fields(map: std::collections::HashMap<String, Value>) -> Vec<(String, Value)> {
    map.into_iter().collect()
}

#[cfg(test)]
mod test;
