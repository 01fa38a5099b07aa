//! Linux implementation of the OS layer.

pub(crate) mod build_id;
pub(crate) mod fd;
pub(crate) mod forkserver_sys;
pub(crate) mod futex;
pub(crate) mod init;
pub(crate) mod listen;
pub(crate) mod malloc;
pub(crate) mod memfd;
pub(crate) mod pidfd;
pub(crate) mod proc;
pub(crate) mod relro;
pub(crate) mod shm;
pub(crate) mod shm_tracker;
pub(crate) mod signal;
pub(crate) mod socket;
pub(crate) mod sparse;
pub(crate) mod spawn;
pub(crate) mod stdio;
pub(crate) mod thread;
pub(crate) mod wake;

pub(crate) use fd::*;
pub(crate) use signal::*;
pub(crate) use socket::*;
