//! A supervisor's doorbell: how an idle supervisor sleeps on its worker and
//! its version's queue at once.
//!
//! A thread cannot wait on a condition variable and a descriptor together,
//! so an idle supervisor that waited for requests on the queue's condition
//! variable had to wake up every so often to look at its worker. Instead it
//! sleeps in [`Bell::sleep`] on its worker's reply pipe, its worker's exit
//! and the read end of its bell, whose [`Ringer`] the queue holds while it
//! sleeps and rings when a request comes or the version stops taking them
//! (see `BatchQueue::sleep_while_empty`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use multiproc::{Connection, ConnectionError, Pipe, Waitable};

/// How long a failed sleep pauses (see [`Bell::sleep`]).
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(20);

/// Gives each bell its identity.
static NEXT_BELL: AtomicU64 = AtomicU64::new(0);

/// The sleeping side of a doorbell (one per supervisor thread).
#[derive(Debug)]
pub(crate) struct Bell {
    id: u64,
    rings: Connection<u8>,
    ringer: Connection<u8>,
}

/// The ringing side of a [`Bell`].
#[derive(Debug)]
pub(crate) struct Ringer {
    bell: u64,
    line: Connection<u8>,
}

impl Bell {
    /// A new bell (a pair of sockets).
    pub(crate) fn new() -> Result<Bell, ConnectionError> {
        let (rings, ringer) = Pipe::<u8>::one_way()?;
        // ORDERING: Relaxed: only a unique number is needed.
        Ok(Bell { id: NEXT_BELL.fetch_add(1, Ordering::Relaxed), rings, ringer })
    }

    /// What rings this bell.
    pub(crate) fn ringer(&self) -> Ringer {
        Ringer { bell: self.id, line: self.ringer.clone() }
    }

    /// Sleeps until the bell rings or one of `also` is ready, at most
    /// `backstop`. An error ends the sleep after a short pause (the caller
    /// looks at what it waits for anyway when it wakes, and a wait that
    /// keeps failing does not make it spin).
    pub(crate) fn sleep(&self, also: &[&dyn Waitable], backstop: Duration) {
        let mut objects: Vec<&dyn Waitable> = Vec::with_capacity(also.len() + 1);
        objects.push(&self.rings);
        objects.extend_from_slice(also);
        if multiproc::wait(&objects, Some(backstop)).is_err() {
            std::thread::sleep(backstop.min(PAUSE_AFTER_ERROR));
        }
    }

    /// Takes the rings heard (and any that came late: a ring meant for a
    /// sleep that ended for another reason).
    pub(crate) fn clear(&self) {
        while self.rings.recv_timeout(Duration::ZERO).is_ok() {}
    }
}

impl Ringer {
    /// Wakes the bell's sleeper (a bell whose supervisor is gone rings
    /// nobody; that is no error).
    pub(crate) fn ring(&self) {
        let _ = self.line.send(&1);
    }

    /// True if this rings `bell`.
    pub(crate) fn rings(&self, bell: &Bell) -> bool {
        self.bell == bell.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_ends_the_sleep_and_clear_takes_it() {
        let bell = Bell::new().unwrap();
        let ringer = bell.ringer();
        assert!(ringer.rings(&bell));
        assert!(!Bell::new().unwrap().ringer().rings(&bell));
        ringer.ring();
        let start = std::time::Instant::now();
        bell.sleep(&[], Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(10), "the ring did not wake the sleeper");
        bell.clear();
        let start = std::time::Instant::now();
        bell.sleep(&[], Duration::from_millis(50));
        assert!(start.elapsed() >= Duration::from_millis(45), "a cleared ring still woke the sleeper");
    }
}
