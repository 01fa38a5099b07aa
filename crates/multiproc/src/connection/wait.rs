//! `wait()`: block until one of several connections, processes (or other
//! waitable handles) is ready.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Connection, ConnectionError};
use crate::process::Process;
use crate::sys::Deadline;
use crate::sys::imp::{self, Interest};

/// How often [`wait`] re-checks objects that have no descriptor.
const NO_FD_RECHECK: Duration = Duration::from_millis(1);

/// Something [`wait`] can wait for: a [`Connection`] (ready when a message
/// or the end of stream is waiting), a [`Process`] (ready when it has
/// exited), or any handle that implements it.
///
/// The trait is object-safe: mix kinds in one call as `&dyn Waitable`.
///
/// # Examples
///
/// ```
/// use multiproc::{Pipe, Waitable};
///
/// let (a, b) = Pipe::<u8>::duplex().unwrap();
/// assert!(!b.is_ready().unwrap());
/// a.send(&1).unwrap();
/// assert!(b.is_ready().unwrap());
/// assert!(b.wait_fd().is_some());
/// ```
pub trait Waitable {
    /// True when the object is ready now; never blocks. For a connection, a
    /// message already received into its buffer counts, even though its
    /// socket is no longer readable.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{ConnectionError, Pipe, Process, Waitable};
    ///
    /// let (rx, tx) = Pipe::<u8>::one_way().unwrap();
    /// assert!(!rx.is_ready().unwrap());
    /// assert!(matches!(tx.is_ready(), Err(ConnectionError::NotReadable)));
    /// let unstarted = Process::new(|| (), ()).unwrap();
    /// assert!(matches!(unstarted.is_ready(), Err(ConnectionError::NotWaitable(_))));
    /// ```
    ///
    /// # Errors
    ///
    /// The object cannot be waited on (a closed or send-only connection, a
    /// process that was never started), or the OS failed.
    fn is_ready(&self) -> Result<bool, ConnectionError>;

    /// A descriptor that becomes readable when the object may have become
    /// ready (readiness is then confirmed with [`Waitable::is_ready`]), or
    /// `None` if it has none: [`wait`] then re-checks it every millisecond.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Pipe, Waitable};
    ///
    /// let (mut a, _b) = Pipe::<u8>::duplex().unwrap();
    /// assert!(a.wait_fd().is_some());
    /// a.close();
    /// assert!(a.wait_fd().is_none());
    /// ```
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;
}

/// Waits until at least one of `objects` is ready, or `timeout` passes
/// (`None`: no limit); returns the indices of the ready ones, in order
/// (Python's `multiprocessing.connection.wait`, which returns the objects).
///
/// Returns at once if some are ready already. After ≈`timeout` with nothing
/// ready, returns an empty list. With no objects, it returns an empty list
/// after `timeout`, or at once when there is no timeout (rather than hang).
///
/// # Examples
///
/// ```
/// use multiproc::{Connection, Pipe, Process, wait};
/// use std::time::Duration;
///
/// fn run_until_closed(control: Connection<u8>) { while control.recv().is_ok() {} }
///
/// let (a, b) = Pipe::<String>::duplex().unwrap();
/// let (stop, control) = Pipe::<u8>::duplex().unwrap();
/// let mut child = Process::spawn(run_until_closed, (control,)).unwrap();
/// assert!(wait(&[&b, &child], Some(Duration::ZERO)).unwrap().is_empty());
/// a.send(&"hi".to_string()).unwrap();
/// assert_eq!(wait(&[&b, &child], Some(Duration::from_secs(10))).unwrap(), vec![0]);
/// b.recv().unwrap();
/// drop(stop); // the child returns
/// assert_eq!(wait(&[&b, &child], Some(Duration::from_secs(10))).unwrap(), vec![1]);
/// child.join_timeout(Duration::from_secs(10)).unwrap();
/// ```
///
/// # Errors
///
/// One of the objects cannot be waited on (see [`Waitable::is_ready`]), or
/// the OS failed.
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>, ConnectionError> {
    let deadline = Deadline::from_timeout(timeout);
    loop {
        let mut ready = Vec::new();
        for (i, object) in objects.iter().enumerate() {
            if object.is_ready()? {
                ready.push(i);
            }
        }
        if !ready.is_empty() || deadline.expired() || (objects.is_empty() && timeout.is_none()) {
            return Ok(ready);
        }
        let fds: Vec<(BorrowedFd<'_>, Interest)> =
            objects.iter().filter_map(|o| o.wait_fd()).map(|fd| (fd, Interest::Read)).collect();
        let until = if fds.len() < objects.len() {
            Deadline::after(deadline.remaining().map_or(NO_FD_RECHECK, |left| left.min(NO_FD_RECHECK)))
        } else {
            deadline
        };
        imp::poll_fds(&fds, until).map_err(|e| ConnectionError::Wire(e.into()))?;
    }
}

impl<T> Waitable for Connection<T> {
    fn is_ready(&self) -> Result<bool, ConnectionError> {
        self.poll(Duration::ZERO)
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.channel().ok().map(|c| c.as_fd())
    }
}

impl<R: Serialize + DeserializeOwned> Waitable for Process<R> {
    /// True once the process has exited (its exit code is then collected).
    fn is_ready(&self) -> Result<bool, ConnectionError> {
        if self.pid().is_none() {
            return Err(ConnectionError::NotWaitable("the process was not started"));
        }
        Ok(!self.is_alive())
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.exit_fd()
    }
}
