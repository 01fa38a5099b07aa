//! Managers: shared dicts, lists, queues, locks and your own objects, served
//! by a process and used through proxies, on one machine or over TCP
//! (Python's `multiprocessing.Manager()` and `BaseManager`).
//!
//! A [`Manager`] is a server that owns objects; a proxy ([`Dict`], [`List`],
//! [`Namespace`], [`Queue`], [`JoinableQueue`], [`Value`], [`Lock`],
//! [`RLock`], [`Semaphore`], [`Event`], [`Condition`], [`Barrier`], or
//! [`SharedObject`] for a [`Shared`] type of yours) is a cheap handle that
//! sends each call to the manager and waits for its answer. A proxy is
//! `Serialize`: pass it to a child, a pool task or a process on another
//! machine, and it reaches the same object (it carries the manager's
//! address, its auth key, the manager's id and the object's id, and
//! connects on first use).
//!
//! - [`Manager::start`] starts the server in a child process (it dies with
//!   its parent; [`Manager::shutdown`] stops it with exit code 0).
//! - [`serve`] runs it on a thread of this process, on a TCP or Unix address
//!   with an auth key, and [`Manager::connect`] reaches it from anywhere;
//!   objects are found by name ([`Manager::publish`], [`Manager::get`], with
//!   a type check).
//!
//! Each call is one round trip to the manager: over a network, the round
//! trips are the cost. A [`Queue`] moves many items per round trip with
//! [`Queue::put_many`] (a batch goes in whole, with no other client's item
//! between) and [`Queue::get_many`] (what is there, up to a maximum), which
//! Python's proxies lack.
//!
//! Values read through a proxy are **copies** ([`Dict::get`] returns the
//! value, not a reference into the manager); change an entry in place with
//! `update`, which runs a plain `fn` inside the manager, atomically. A proxy
//! stored inside another object stays a proxy: nested proxies share.
//!
//! Objects live until [`Manager::remove`] or the manager's end: dropping
//! every proxy of one does not free it (Python counts references across
//! processes; here a proxy is plain data that can be copied anywhere, even
//! to another machine, so no count could be trusted). A long-lived manager
//! that makes objects as it goes removes them when it is done with them.
//!
//! Every client connection has a thread of its own, so a call that blocks
//! (a `get` on an empty queue, a held lock, a condition wait) blocks only
//! its caller. A client on the same machine (a Unix address, as
//! [`Manager::start`] uses) calls through a shared-memory lane beside its
//! socket, and one dispatcher thread serves every lane's calls that cannot
//! wait: a call then costs no system call while both sides are busy (see
//! `lane.rs` and `dispatch.rs`). Larger messages go on the socket, through
//! shared memory. A value of 64 KiB or more is copied as few times as the
//! trust between processes allows: the manager keeps it in the buffer it
//! arrived in and answers reads with that buffer, written straight into
//! the shared memory (see `blob.rs`), so a 1 MiB value set and read back
//! is copied 6 times, where it was 11. Hold byte buffers as
//! `serde_bytes::ByteBuf` (a `Vec<u8>` is encoded a byte at a time). Moving
//! large values tunes the allocator of each process involved, as a pool
//! does (see [`crate::allow_allocator_tuning`]); [`Dict::set`] does not send
//! back the value it replaces, as [`Dict::insert`] does.
//!
//! A function given to `update` runs where the call is served (for a local
//! client, on the dispatcher thread, so that an update costs no thread
//! hand-off) and holds its object while it runs: keep it short, as a slow
//! one holds back every local client's lane calls meanwhile. A [`Shared`]
//! type's `call` and a barrier's action run on their caller's connection
//! thread and hold back only the calls on their own object; so does an
//! update from a client over TCP (the dispatcher never waits for an
//! object another thread holds). A function that panics fails its call
//! with [`RemoteError::Panicked`] and leaves its object as it was; the
//! manager goes on. A function running in the manager (an
//! `update`, a [`Shared`] type's `call`, a barrier's action) that calls a
//! proxy of its own manager gets [`ManagerError::CallsItsOwnManager`] at
//! once rather than waiting for itself; in a manager process, so does every
//! thread of it (one such a function started; see [`Shared`] for a manager
//! [`serve`]d on a thread of the program).
//!
//! **The auth key is the whole of a manager's security.** A peer without it
//! gets no further than the handshake (at most 256 connections in their
//! first steps at once, each for at most 10 s). A peer with it is trusted
//! as a process of the same program: the functions it ships (`update`, a
//! [`Shared`] type's `call`, a barrier's action) travel as code offsets
//! into the manager's binary, checked against the build id the client
//! states, so a peer that lies about its build can make the manager run
//! any code of it — as a Python manager unpickles whatever an
//! authenticated peer sends. Keep the key secret, and serve over TCP only
//! on loopback or a network you trust.
//!
//! Over TCP, a peer that vanishes without a word (its machine lost power,
//! the network between went away) is found by keepalive probes (after
//! 10 s of silence, 5 s apart; the kernel gives up 30 s after it last
//! heard from the peer): a call pending on such a link fails with a
//! connection error within about 35 s, and the manager counts such a
//! client gone (its locks are freed) as soon. A killed manager fails every
//! pending and later call with a connection error; a client killed while
//! holding a manager lock leaves it to the next acquirer with
//! [`AcquireError::OwnerDied`].
//! Connections are authenticated both ways (HMAC-SHA256, as
//! [`Listener`](crate::Listener)); before that, a peer can make the manager
//! read only a few hundred bytes.
//!
//! # Examples
//!
//! ```
//! use multiproc::manager::{Dict, List, Manager};
//! use multiproc::Process;
//!
//! fn work(d: Dict<u32, String>, l: List<u32>, i: u32) {
//!     d.insert(i, format!("child {i}")).unwrap();
//!     l.push(i).unwrap();
//! }
//!
//! let manager = Manager::start().unwrap();
//! let (d, l) = (manager.dict().unwrap(), manager.list().unwrap());
//! let mut children: Vec<_> = (0..3).map(|i| Process::spawn(work, (d.clone(), l.clone(), i)).unwrap()).collect();
//! for c in &mut children {
//!     c.join().unwrap();
//! }
//! assert_eq!(d.len().unwrap(), 3);
//! let mut items = l.to_vec().unwrap();
//! items.sort();
//! assert_eq!(items, [0, 1, 2]);
//! manager.shutdown().unwrap();
//! ```

mod blob;
mod client;
mod code;
mod collections;
mod dict;
mod dispatch;
mod error;
mod handle;
mod lane;
mod list;
mod locks;
mod protocol;
mod proxy;
mod queue;
mod queues;
mod server;
mod signals;
mod signals_proxy;
mod start;
mod store;
mod sync;
#[cfg(test)]
mod test;
#[cfg(test)]
mod test_lane;
mod user;
mod waiting;

pub use dict::{Dict, Namespace};
pub use error::ManagerError;
pub use handle::Manager;
pub use list::{List, Value};
pub use protocol::{Kind, RemoteError, fuzz_request};
pub use proxy::{ObjectRef, Proxy};
pub use queue::{JoinableQueue, Queue};
pub use signals_proxy::{Barrier, Condition, ConditionGuard, Event};
pub use start::{ManagerBuilder, serve};
pub use sync::{AcquireError, AcquireResult, Lock, LockGuard, RLock, Semaphore};
pub use user::{Shared, SharedObject};

use handle::{Owned, SHUTDOWN_TIMEOUT};
pub(crate) use proxy::value_bytes;
