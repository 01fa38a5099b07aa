//! SIGTERM and SIGINT as a request to stop: the `worker` command finishes
//! the tasks it holds, writes their results, and exits.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The handler: only stores to an atomic, which is async-signal-safe.
extern "C" fn on_signal(_: libc::c_int) {
    // ORDERING: Relaxed is enough; the main thread polls the flag.
    REQUESTED.store(true, Ordering::Relaxed);
}

/// Catches SIGTERM and SIGINT from now on. Children the program starts
/// later are not affected: `exec` resets caught signals to their default.
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only stores
        // to an atomic; installing it with signal(2) is sound.
        let old = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        if old == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// True once SIGTERM or SIGINT arrived.
pub fn requested() -> bool {
    // ORDERING: see `on_signal`.
    REQUESTED.load(Ordering::Relaxed)
}
