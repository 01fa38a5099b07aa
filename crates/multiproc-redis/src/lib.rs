//! # multiproc-redis
//!
//! multiproc's [`Pool`](multiproc::Pool) across machines: the same `map`,
//! `imap`, `apply_async` calls for the same plain `fn` items, with the tasks
//! carried by Redis Streams to worker hosts — any number of them, each
//! running the tasks in a local multiproc pool.
//!
//! ## Hello, cluster
//!
//! ```
//! use std::time::Duration;
//! use multiproc_redis::{RedisPool, RedisServer, Worker};
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! let server = RedisServer::start().unwrap();        // a private redis-server
//! let worker = Worker::builder(&server.url()).processes(2).start().unwrap();
//! let pool = RedisPool::builder(&server.url()).wait_timeout(Duration::from_secs(60)).connect().unwrap();
//! assert_eq!(pool.map(square, 0..10u64).unwrap(), (0..10u64).map(square).collect::<Vec<_>>());
//! assert_eq!(pool.apply(square, (12,)).unwrap(), 144);
//! let mut r = pool.apply_async(square, (3,));
//! assert_eq!(r.get_timeout(Duration::from_secs(60)).unwrap(), 9);
//! worker.stop();
//! ```
//!
//! A worker host is the caller's own program, started in worker mode:
//! [`Worker::builder`]`(url).start()` (or `.run()`) in your binary, or the
//! `multiproc worker --redis URL` command for the functions built into it.
//! A task names its function by a stable name and the build id: a worker
//! of another build refuses it with [`TaskFailure::Refused`] rather than run
//! other code: the task fails at once, naming both builds (it is not left
//! for another host), so hosts of one queue must all be the caller's build;
//! during a rolling upgrade, give each build a queue of its own
//! (`.queue(name)` on both builders).
//!
//! ## Background calls and the pool's end
//!
//! `apply_async`, `map_async` and `starmap_async` give a [`RedisAsync`]
//! with the calls of the local [`AsyncResult`](multiproc::AsyncResult):
//! `ready`, `wait`, `wait_timeout`, `successful`, `get`, `get_timeout`,
//! `callback`, `error_callback`, and `.await` (it is a [`Future`]);
//! `imap` gives a [`RedisImap`] with `next_timeout`, and `try_imap` takes
//! an input that can fail, as on the local pool.
//! [`RedisPool::close`], [`RedisPool::terminate`] and [`RedisPool::join`]
//! end a pool as on the local one, on the caller's side: the worker hosts
//! serve any number of callers and stop only when told
//! ([`Worker::stop`]), so `terminate` cannot kill a task a host already
//! runs (its result is dropped), and a queued task cannot be cancelled on
//! its own (there is no `cancel`). Its tasks not yet running are deleted,
//! also those queued again after their host died (see Delivery below).
//! Dropping the pool does the same to the background calls and iterators
//! still in flight, which fail with [`RedisPoolError::Dropped`]: nobody
//! could read their results any more. It waits for Redis at most a second
//! for this (a Redis that does not answer leaves those tasks to run, and
//! says so in a `tracing` warning), so a drop never hangs.
//!
//! ```
//! use std::time::Duration;
//! use multiproc_redis::{RedisPool, RedisServer, Worker};
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! let server = RedisServer::start().unwrap();
//! let worker = Worker::builder(&server.url()).processes(1).start().unwrap();
//! let pool = RedisPool::builder(&server.url()).wait_timeout(Duration::from_secs(60)).connect().unwrap();
//! let (tx, rx) = std::sync::mpsc::channel();
//! let r = pool.apply_async(square, (4,)).callback(move |v| tx.send(*v).unwrap());
//! pool.close();
//! pool.join_timeout(Duration::from_secs(60)).unwrap(); // the callback ran
//! assert_eq!(rx.try_recv().unwrap(), 16);
//! assert!(r.successful().unwrap());
//! worker.stop();
//! ```
//!
//! ## Delivery
//!
//! Each chunk of tasks is one entry of a stream read by a consumer group;
//! a host acknowledges and deletes the entry in the same transaction that
//! writes its result to the caller's result stream. A host that dies leaves
//! its entries pending: after the visibility timeout another host claims
//! them (`XAUTOCLAIM`) and runs them again, while a live host's heartbeats
//! keep its long tasks its own. A chunk whose worker process died is
//! delivered again up to [`RedisPoolBuilder::retries`] times, then goes to
//! the dead-letter stream with its last error ([`TaskFailure::DeadLettered`]).
//! A task may run more than once; its result reaches the caller exactly
//! once (the caller drops duplicates by chunk id).
//! A call dropped before it finishes (an `imap` left unread, a `map`
//! stopped by its first failure), out of wait time, terminated or whose
//! pool was dropped deletes
//! its chunks still queued, and marks all its chunks in flight withdrawn
//! (in its set `P:Q:withdrawn:C`, see [`schema`]): a chunk delivered again
//! after its host died is a new entry the caller cannot delete, and the
//! host that takes it acknowledges and deletes it unrun, with no result
//! and no dead letter. A chunk a host is already running finishes there,
//! and its result is dropped.
//!
//! ## Faults
//!
//! - a task that panics, crashes its process or runs over its timeout fails
//!   alone ([`TaskFailure`]); the host goes on;
//! - a Redis restart: calls and workers reconnect and go on (with Redis's
//!   append-only file, nothing is lost); a restart that lost the data, or a
//!   Redis gone longer than [`RedisPoolBuilder::reconnect_timeout`], fails
//!   the waiting calls with [`RedisPoolError::Redis`] saying so;
//! - a Redis that refuses every command for a while (`LOADING` its data
//!   after a restart, or `BUSY` with another client's script running past
//!   `busy-reply-threshold`) is waited out as a Redis gone is: by calls up
//!   to [`RedisPoolBuilder::reconnect_timeout`], by a running worker host
//!   until it answers again (a starting one, 10 s);
//! - a failure of the caller's or the worker's own host (a thread that
//!   cannot start, no randomness from the OS) is [`RedisPoolError::Local`],
//!   which says what to do; Redis is not blamed for it;
//! - a result Redis refuses to store (out of memory under `maxmemory` with
//!   `noeviction`) fails its items with [`TaskFailure::ResultRefused`],
//!   written by the host in its place, so the caller does not wait out its
//!   timeout;
//! - a pool dropped while a background call or an iterator still waits
//!   fails that call with [`RedisPoolError::Dropped`] (not a Redis error),
//!   and withdraws its tasks as [`RedisPool::terminate`] does;
//! - a batch of chunks whose reply was lost after Redis queued it (a
//!   network cut, a reply later than the reply timeout) is sent again and
//!   queued once: its script marks the batch queued (see [`schema`]), so
//!   its tasks do not run twice; should the batch sent again fail for
//!   good (`NOPERM`, `READONLY`), the caller asks Redis whether an earlier
//!   try queued it, withdraws it if so, and otherwise marks it so that no
//!   try still on its way queues it; its call's error says which (or,
//!   when Redis could not be asked, that the tasks may run);
//! - garbage in the task stream is logged, acknowledged and moved to the
//!   dead-letter stream; a task signed with another key
//!   ([`RedisPoolBuilder::auth_key`]) is refused the same way, and its
//!   caller gets [`TaskFailure::WrongKey`].
//!
//! ## Layout
//!
//! Needs Redis 6.2 or newer (`XAUTOCLAIM`, `XGROUP CREATECONSUMER`), and
//! `EVAL` allowed to the users of the pool and of the worker hosts (a batch
//! of chunks is queued by one script, whole or not at all, and once however
//! often it is sent; a host declares its visibility timeout by another);
//! tested with Debian's 7.0.
//!
//! The keys, streams, group and message schema are in [`schema`],
//! versioned ([`schema::SCHEMA_VERSION`]). Nothing grows without bound:
//! finished task entries are deleted, read results are deleted, result
//! streams, large-argument keys, withdrawn sets, the markers of queued
//! batches and the queue's visibility timeout expire,
//! the dead-letter stream is capped in length and keeps at most a few KiB
//! of each entry.

#![warn(missing_docs)]

mod call;
mod conn;
mod dispatch;
mod endpoint;
mod enqueue;
mod error;
mod inspect;
mod life;
mod pool;
mod results;
pub mod schema;
mod server;
mod withdraw;
mod worker;

pub use endpoint::{DEFAULT_PREFIX, DEFAULT_QUEUE};
pub use error::{RedisPoolError, TaskFailure};
pub use inspect::{HostInfo, QUEUE_INFO_TIMEOUT, QueueInfo, queue_info, queue_info_timeout};
pub use pool::{Call, RedisPool, RedisPoolBuilder};
pub use results::{RedisAsync, RedisImap};
pub use server::{INSTALL_HINT, PausedServer, RedisServer};
pub use worker::{Worker, WorkerBuilder};
