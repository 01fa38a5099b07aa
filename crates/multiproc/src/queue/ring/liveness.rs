//! When a thread recorded as an owner in the queue (of a slot, a sleeper
//! entry or the frame lock) is certainly dead, and when to ask.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::queue::layout::Header;
use crate::sys::imp::thread::{self, tid_alive};

/// How long an owner may sit on a slot or the frame lock before its thread
/// is checked for life (and then how often it is re-checked).
pub(in crate::queue) const LIVENESS_DELAY: Duration = Duration::from_millis(2);

/// True when thread `tid`, recorded in the queue as the owner of a slot, a
/// sleeper entry or the frame lock, is certainly gone: every user of the
/// queue is in our pid namespace (so the tid names the same thread here) and
/// the kernel says the thread no longer exists.
pub(in crate::queue) fn owner_gone(hdr: &Header, tid: u32) -> bool {
    let mine = thread::current().pidns;
    // ORDERING: Relaxed: the namespace mark is written before the marking
    // process records any owner.
    mine != 0 && hdr.pidns.0.load(Relaxed) == mine && !tid_alive(tid)
}

/// Tracks how long the same owner has blocked us, to decide when to check
/// whether it is alive.
#[derive(Debug, Default)]
pub(in crate::queue) struct Watch {
    seen: Option<(u64, Instant)>,
}

impl Watch {
    /// True once `word` has been seen unchanged for [`LIVENESS_DELAY`] (then
    /// again every `LIVENESS_DELAY`).
    pub(in crate::queue) fn stuck(&mut self, word: u64) -> bool {
        let now = Instant::now();
        match self.seen {
            Some((w, since)) if w == word => {
                if now.duration_since(since) >= LIVENESS_DELAY {
                    self.seen = Some((word, now));
                    true
                } else {
                    false
                }
            }
            _ => {
                self.seen = Some((word, now));
                false
            }
        }
    }
}
