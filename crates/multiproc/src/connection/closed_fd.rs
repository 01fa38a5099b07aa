//! The descriptor a closed [`Connection`](super::Connection) lends through
//! `AsFd`: one end of a socket pair whose other end is closed, so it always
//! reads as end of stream. Waiting on it returns at once, and the next call
//! on the connection reports `HandleClosed`.
//!
//! One per process, made on first use and never closed. A child made by
//! `fork` does not keep its parent's descriptors, so the placeholder records
//! the pid it was made in and a child makes its own.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::sys::imp;

/// The placeholder of this process: the pid it was made in and the socket.
static PLACEHOLDER: AtomicPtr<(imp::Pid, OwnedFd)> = AtomicPtr::new(std::ptr::null_mut());

/// This process's placeholder, made if needed; `None` if the OS refused a
/// socket pair (descriptor table full).
pub(super) fn placeholder() -> Option<BorrowedFd<'static>> {
    let pid = imp::getpid();
    // ORDERING: Acquire pairs with the AcqRel publication below.
    let current = PLACEHOLDER.load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from `Box::into_raw` below and is never
    // freed (a replaced one is leaked), so it is valid for 'static.
    if let Some((made_in, fd)) = unsafe { current.as_ref() }
        && *made_in == pid
    {
        return Some(fd.as_fd());
    }
    let (ours, peer) = imp::socketpair().ok()?;
    drop(peer);
    let fresh = Box::into_raw(Box::new((pid, ours)));
    let winner = match PLACEHOLDER.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh,
        Err(other) => {
            // SAFETY: `fresh` came from Box::into_raw above and was never shared.
            drop(unsafe { Box::from_raw(fresh) });
            other
        }
    };
    // SAFETY: as above: a published pointer is never freed.
    unsafe { winner.as_ref() }.filter(|(made_in, _)| *made_in == pid).map(|(_, fd)| fd.as_fd())
}

/// What `AsFd` lends when there is no placeholder: only in a child forked
/// after the close, with no descriptor left to make its own. Standard input,
/// rather than a panic.
pub(super) fn last_resort() -> BorrowedFd<'static> {
    // SAFETY: descriptor 0 is standard input, which std treats as open for
    // the whole life of the program (its own `Stdin` borrows it the same
    // way); the borrow never closes it.
    unsafe { BorrowedFd::borrow_raw(0) }
}

#[cfg(test)]
mod test {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use crate::sys::{Deadline, imp};

    #[test]
    fn the_placeholder_is_shared_and_reads_as_end_of_stream() {
        let fd = super::placeholder().expect("a socket pair");
        assert_eq!(fd.as_raw_fd(), super::placeholder().unwrap().as_raw_fd());
        assert!(imp::wait_readable(fd, Deadline::after(Duration::ZERO)).unwrap());
    }
}
