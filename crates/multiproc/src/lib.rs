//! # multiproc
//!
//! Python's `multiprocessing`, rebuilt for Rust and without its sharp edges:
//! processes that run Rust functions, pipes and listeners, queues, locks and
//! their friends, shared memory, pools, an executor and managers. Typed, fast,
//! and a dead child is an error, never a hang.
//!
//! ## Hello, child
//!
//! ```
//! use multiproc::Process;
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! let mut p = Process::spawn(square, (7u64,)).unwrap();
//! assert_eq!(p.join().unwrap(), 49);
//! ```
//!
//! The child is a fresh copy of this program that runs `square` and nothing
//! else: no `init()` call is needed and the program's `main` never runs in the
//! child. A function sent to a child is a plain `fn` or a closure that
//! captures nothing; state travels as arguments (any `serde` type).
//!
//! ## Exit codes and failures
//!
//! ```
//! use multiproc::{Process, ProcessError};
//!
//! fn boom() { panic!("no model file") }
//!
//! let mut p = Process::spawn(boom, ()).unwrap();
//! let err = p.join().unwrap_err();
//! assert!(matches!(&err, ProcessError::Panicked(p) if p.message == "no model file"));
//! assert_eq!(p.exitcode(), Some(1));
//! ```
//!
//! ## Pipes
//!
//! ```
//! use multiproc::{Pipe, Process, Connection};
//!
//! fn echo(conn: Connection<String>) {
//!     while let Ok(msg) = conn.recv() {
//!         conn.send(&msg.to_uppercase()).unwrap();
//!     }
//! }
//!
//! let (parent, child) = Pipe::<String>::duplex().unwrap();
//! let mut p = Process::spawn(echo, (child,)).unwrap();
//! parent.send(&"ping".to_string()).unwrap();
//! assert_eq!(parent.recv().unwrap(), "PING");
//! drop(parent); // the child sees end of stream and returns
//! p.join().unwrap();
//! ```
//!
//! Messages, task arguments and shared objects are any serde type. Hold a
//! byte buffer as `serde_bytes::ByteBuf` (or mark the field
//! `#[serde(with = "serde_bytes")]`): serde sees a `Vec<u8>` as a sequence,
//! which the codec goes through a byte at a time. Encoding and decoding
//! 1 MiB took 1.75 ms as a `Vec<u8>`, 0.05 ms as a `ByteBuf`.
//!
//! ## Listeners, clients and `wait`
//!
//! Unrelated processes meet at an [`Address`] (a Unix socket file, a Linux
//! abstract name, or TCP): a [`Listener`] accepts, a [`Client`] connects, and
//! with an auth key each proves to the other that it knows it (HMAC-SHA256,
//! both ways). [`wait`] blocks until any of several connections or processes
//! is ready.
//!
//! ```
//! use multiproc::{Client, Connection, Listener, Process, wait};
//! use std::time::Duration;
//!
//! fn greet(address: String) {
//!     let conn: Connection<String> = Client::connect(&address, Some(b"key")).unwrap();
//!     conn.send(&"hello over TCP".to_string()).unwrap();
//! }
//!
//! let listener = Listener::bind("tcp:127.0.0.1:0", Some(b"key")).unwrap();
//! let mut p = Process::spawn(greet, (listener.address().to_string(),)).unwrap();
//! let conn: Connection<String> = listener.accept_timeout(Duration::from_secs(10)).unwrap();
//! assert_eq!(wait(&[&conn], Some(Duration::from_secs(10))).unwrap(), [0]);
//! assert_eq!(conn.recv().unwrap(), "hello over TCP");
//! p.join_timeout(Duration::from_secs(10)).unwrap();
//! ```
//!
//! ## Queues
//!
//! [`Queue`] is a FIFO between any number of producer and consumer processes,
//! in shared memory: `put` stores the item in the caller (no feeder thread),
//! so nothing is lost when a producer exits right after it, and a producer
//! killed mid-`put` never blocks consumers. [`JoinableQueue`] counts tasks
//! (`task_done`, `join`); [`SimpleQueue`] is the plain subset.
//!
//! ```
//! use multiproc::{GetError, Process, Queue};
//! use std::time::Duration;
//!
//! fn produce(q: Queue<u64>, first: u64) {
//!     for i in first..first + 3 {
//!         q.put(i).unwrap();
//!     }
//! }
//!
//! let q = Queue::bounded(100).unwrap();
//! let mut p = Process::spawn(produce, (q.clone(), 10u64)).unwrap();
//! let got: Vec<u64> = (0..3).map(|_| q.get_timeout(Duration::from_secs(10)).unwrap()).collect();
//! assert_eq!(got, [10, 11, 12]);
//! p.join_timeout(Duration::from_secs(10)).unwrap();
//! q.close();
//! assert!(matches!(q.get(), Err(GetError::Closed)));
//! ```
//!
//! ## Locks and friends
//!
//! [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Condition`],
//! [`Event`] and [`Barrier`] live in shared memory and work the same between
//! threads and between processes; pass them to a child like any argument.
//! Every blocking call has a timed form. Locks are robust: if a holder dies,
//! the next acquirer gets the lock with [`OwnerDied`] instead of a deadlock.
//!
//! ```
//! use std::time::Duration;
//! use multiproc::{Event, Lock, Process, Value};
//!
//! fn work(lock: Lock, done: Event, total: Value<u64>) {
//!     let _held = lock.acquire().unwrap();
//!     *total.lock().unwrap() += 10;
//!     done.set();
//! }
//!
//! let (lock, done, total) = (Lock::new().unwrap(), Event::new().unwrap(), Value::new(0u64).unwrap());
//! let mut p = Process::spawn(work, (lock.clone(), done.clone(), total.clone())).unwrap();
//! assert!(done.wait_timeout(Duration::from_secs(10)));
//! p.join().unwrap();
//! assert_eq!(total.get(), 10);
//! ```
//!
//! ## Shared state
//!
//! [`Value`] and [`Array`] hold plain data ([`Plain`]: numbers, arrays of
//! them, `#[repr(C)]` structs) in shared memory behind a lock; [`RawValue`]
//! and [`RawArray`] without one (with atomics for integers); and
//! [`SharedMemory`] is a block of bytes, anonymous or named. New memory is
//! zeroed, and no segment outlives its users, even after `kill -9`. A named
//! segment's `read_at` and `write_at` go through its file, so another
//! process cutting it short is an error ([`SharedMemoryError::Truncated`]),
//! never a crash.
//!
//! ```
//! use multiproc::{Array, Process, SharedMemory};
//!
//! fn fill(a: Array<u32>, shm: SharedMemory) {
//!     a.copy_from_slice(&[1, 2, 3]);
//!     shm.write_at(0, b"hi").unwrap();
//! }
//!
//! let a = Array::<u32>::zeroed(3).unwrap();
//! let shm = SharedMemory::new(4096).unwrap();
//! Process::spawn(fill, (a.clone(), shm.clone())).unwrap().join().unwrap();
//! assert_eq!(a.to_vec(), [1, 2, 3]);
//! let mut buf = [0; 2];
//! shm.read_at(0, &mut buf).unwrap();
//! assert_eq!(&buf, b"hi");
//! ```
//! <!-- end sync tour -->
//!
//! ## Logging and child output
//!
//! [`log_to_stderr`] prints the library's lifecycle records (a child
//! started, exiting with code N, a pool worker replaced, …) and your own
//! [`logger`] records as `[LEVEL/process name] message`, from every process:
//! children take the parent's level. The records are also `tracing` events
//! (target `multiproc`, field `process`). A child's standard output and error
//! are inherited, captured, or prefixed with its name ([`ChildOutput`]).
//!
//! ```
//! use multiproc::{ChildOutput, Process};
//!
//! fn hello() { println!("hello"); }
//!
//! let mut p = Process::builder().name("greeter").stdout(ChildOutput::Capture).spawn(hello, ()).unwrap();
//! p.join().unwrap();
//! assert_eq!(p.captured_stdout().unwrap(), b"hello\n");
//! ```
//!
//! ## Pools
//!
//! [`Pool`] is Python's `Pool`: `map`, `imap`, `apply_async` and the rest,
//! over worker processes that survive each other: a worker that dies fails
//! only the chunk it was running ([`TaskError::WorkerLost`]) and is
//! replaced; a panic is a [`TaskError::Panicked`] and the worker goes on.
//! Workers can keep state built once by an initializer (a model, a
//! connection), and [`Executor`] is the `concurrent.futures` flavour.
//!
//! ```
//! use multiproc::{Pool, PoolError, TaskError};
//!
//! fn square(x: u64) -> u64 { x * x }
//! fn picky(x: u64) -> u64 { assert!(x != 3, "no threes"); x }
//!
//! let pool = Pool::new(2).unwrap();
//! assert_eq!(pool.map(square, 0..4u64).unwrap(), [0, 1, 4, 9]);
//! let r = pool.apply_async(square, (7,));
//! assert_eq!(r.get().unwrap(), 49);
//! let each: Vec<_> = pool.imap(picky, 0..5u64).collect();
//! assert!(matches!(&each[3], Err(PoolError::Task { index: Some(3), error: TaskError::Panicked(p) }) if p.message == "no threes"));
//! assert_eq!(*each[4].as_ref().unwrap(), 4);
//! ```
//!
//! ## Managers
//!
//! A [`Manager`] is a server process that owns shared dicts, lists,
//! namespaces, queues, locks and objects of your own types; proxies to them
//! ([`manager::Dict`], [`manager::List`], …) pass to children, pool tasks
//! and other machines, and `update` runs a plain `fn` on an entry inside the
//! manager, atomically (Python's `d[k] += 1` through a proxy loses updates).
//! [`manager::serve`] serves one over TCP with an auth key, and
//! [`Manager::connect`] reaches it by address; a manager listening on every
//! interface tells its proxies the address other machines reach through
//! [`ManagerBuilder::advertise_address`](manager::ManagerBuilder::advertise_address).
//!
//! ```
//! use multiproc::manager::{Dict, Manager};
//! use multiproc::Process;
//!
//! fn count(d: Dict<String, u64>) {
//!     for _ in 0..50 {
//!         d.update("n", |n: &mut Option<u64>| *n.get_or_insert(0) += 1).unwrap();
//!     }
//! }
//!
//! let manager = Manager::start().unwrap();
//! let d = manager.dict().unwrap();
//! let mut kids: Vec<_> = (0..4).map(|_| Process::spawn(count, (d.clone(),)).unwrap()).collect();
//! for k in &mut kids {
//!     k.join().unwrap();
//! }
//! assert_eq!(d.get("n").unwrap(), Some(200));
//! manager.shutdown().unwrap();
//! ```
//!
//! ## Names
//!
//! Calls have Python's names where Python has them, with a `_timeout` (or
//! `_nowait`) variant where Python takes a `timeout` (or `block=False`). A
//! yes/no question about state is spelled as Python spells it when Python
//! has it (`empty`, `full`, `closed`, `readable`, `writable`, `locked`,
//! `broken`, `daemon`, `is_alive`, `is_set`, `is_shutdown`, `ready`,
//! `successful`, `cancelled`), and `is_<state>` otherwise (`is_closed` of a
//! queue handle, `is_owned`, and the errors' `is_timeout`, `is_closed`, …).

#![warn(missing_docs)]

pub(crate) mod allocator;
pub(crate) mod code;
pub mod connection;
pub mod log;
pub mod manager;
pub(crate) mod memory;
pub mod pool;
pub mod process;
pub(crate) mod process_local;
pub mod queue;
pub mod shared;
pub(crate) mod spin;
pub mod sync;
pub(crate) mod sys;
#[cfg(test)]
mod test_bytes;
pub(crate) mod thread_buffer;
pub mod wire;

pub use allocator::allow_allocator_tuning;
pub use connection::{
    Address, AddressError, Client, Connection, ConnectionError, IntoAddress, Listener, Pipe, Waitable, wait,
};
pub use log::{Level, Logger, log_to_stderr, logger};
pub use manager::Manager;
pub use pool::{AsyncResult, Executor, Imap, Pool, PoolBuilder, PoolError, StateTask, TaskError, keep_freed_memory};
pub use process::{
    ChildOutput, ForkContract, Process, ProcessBuilder, ProcessError, ProcessInfo, RemoteFn, RemotePanic, Run,
    StartMethod, Task, active_children, build_id, cpu_count, current_process, get_start_method, parent_process,
    set_start_method,
};
pub use queue::{
    GetError, JoinTimeoutError, JoinableQueue, PutError, Queue, QueueBuilder, SimpleQueue, TaskDoneError, TryPutError,
};
pub use shared::{
    Array, ArrayGuard, AtomicPlain, Plain, RawArray, RawValue, SharedMemory, SharedMemoryError, Value, ValueGuard,
};
pub use sync::{
    Barrier, BarrierError, BoundedSemaphore, Condition, ConditionGuard, Event, Lock, LockGuard, LockResult, OwnerDied,
    RLock, RLockGuard, ReleaseError, Semaphore, TryLockError, TryLockResult,
};
pub use wire::{SendFd, WireError};
