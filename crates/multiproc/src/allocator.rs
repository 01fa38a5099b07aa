//! When multiproc tunes a process's C allocator on its own: the first time
//! the process moves a large message through a queue or a manager (and a
//! pool, the first time it moves a large input; see
//! [`PoolBuilder::keep_freed_memory`](crate::PoolBuilder::keep_freed_memory)).

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

/// Messages of at least this many bytes tune the allocator (see [`moved`]).
const LARGE_MESSAGE: usize = 16 << 10;

/// Whether multiproc may tune this process's allocator.
static ALLOWED: AtomicBool = AtomicBool::new(true);

/// Whether multiproc may tune this process's C allocator on its own
/// (default `true`). When it may, the first item or manager message of
/// 16 KiB or more that this process puts, gets, sends or receives makes it
/// do what [`keep_freed_memory`](crate::keep_freed_memory) does, and a pool
/// does the same the first time it moves a large input. Each large value
/// moved allocates buffers of its size, and with glibc's defaults their
/// pages go back to the kernel between calls and fault in again: a 1 MiB
/// item through a [`Queue`](crate::Queue) took 1.56 ms with glibc's
/// defaults in both processes and 0.59 ms tuned; a 1 MiB manager dict
/// insert + get, 2.9 ms and 0.96 ms. A manager process started by
/// [`Manager::start`](crate::Manager::start) and pool workers are tuned
/// from their start.
///
/// When it may, the processes it starts by running this program again (the
/// `Spawn` start method, the fork server that `ForkServer` children come
/// from, and the shared-memory tracker) also start with glibc's cache of freed blocks raised from 7 to 256
/// blocks of each size per thread: `glibc.malloc.tcache_count` is added to
/// their `GLIBC_TUNABLES`, which their environment, and so what they run in
/// turn, carries. A worker that frees a batch of small values and then
/// allocates the next batch's otherwise pays for glibc to merge the blocks
/// and split them again: the `serve_pipeline` benchmark ran 2.07 M
/// requests/s against 1.90 without. The cache holds at worst about 8 MiB
/// per thread (256 blocks of each size up to 1 KiB), until the thread ends.
/// A `tcache_count` the program set in `GLIBC_TUNABLES` is left as it is,
/// and a child whose environment removes `GLIBC_TUNABLES` is not given
/// one; a `GLIBC_TUNABLES` given to a single child
/// ([`ProcessBuilder::env`](crate::ProcessBuilder::env)) sets its allocator
/// only under `Spawn`, as fork-server children share the server's.
///
/// Call with `false` before the first large message, and before the first
/// process starts, to leave the allocator alone (a pool built with
/// `keep_freed_memory(false)` leaves its own process alone too). The
/// setting is for this process only: a fork server already started keeps
/// what it started with, and the processes this one starts tune theirs
/// unless they call this too.
///
/// ```
/// multiproc::allow_allocator_tuning(false);
/// ```
pub fn allow_allocator_tuning(allow: bool) {
    // ORDERING: Relaxed: a setting, with no data behind it.
    ALLOWED.store(allow, Ordering::Relaxed);
}

/// Whether the program lets multiproc tune the allocator.
pub(crate) fn tuning_allowed() -> bool {
    // ORDERING: as in `allow_allocator_tuning`.
    ALLOWED.load(Ordering::Relaxed)
}

/// Notes a message of `len` bytes moved by this process: the first large
/// one makes the C allocator keep freed memory, unless the program said
/// not to (see [`allow_allocator_tuning`]).
pub(crate) fn moved(len: usize) {
    if len >= LARGE_MESSAGE && tuning_allowed() {
        static TUNED: Once = Once::new();
        TUNED.call_once(crate::sys::imp::malloc::keep_freed_memory);
    }
}
