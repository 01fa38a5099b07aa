//! # multiproc
//!
//! Python's `multiprocessing`, rebuilt for Rust and without its sharp edges:
//! processes that run Rust functions, pipes, and (soon) queues, locks, shared
//! memory and pools. Typed, fast, and a dead child is an error, never a hang.
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

#![warn(missing_docs)]

pub mod connection;
pub mod process;
pub(crate) mod sys;
pub mod wire;

pub use connection::{
    Address, AddressError, Client, Connection, ConnectionError, IntoAddress, Listener, Pipe, Waitable, wait,
};
pub use process::{
    Process, ProcessBuilder, ProcessError, ProcessInfo, RemotePanic, Run, StartMethod, Task, active_children,
    cpu_count, current_process, get_start_method, parent_process, set_start_method,
};
pub use wire::{SendFd, WireError};
