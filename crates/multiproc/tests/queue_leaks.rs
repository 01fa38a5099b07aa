//! A queue gives its memory back: a put that fails leaves nothing behind in
//! the queue's memory file. Every blocking call has a timeout.

mod queue_support;

use multiproc::{Process, Queue};
use queue_support::{Child, queue_blocks};
use serde_bytes::ByteBuf;

/// Where the queue's file starts holding large items (1 TiB; see
/// `src/queue/README.md`).
const BLOB_BASE: u64 = 1 << 40;

/// In a child: limits the size of files it writes so that the blob of a
/// 16 MiB item is cut off after 4 MiB (as when memory runs out mid-write),
/// then puts one. Returns whether the put failed, and the queue file's
/// bytes in memory before and after.
fn put_cut_off(q: Queue<ByteBuf>) -> (bool, u64, u64) {
    // SAFETY: ignoring SIGXFSZ (so the cut-off write fails with EFBIG rather
    // than killing us) and setting a resource limit of our own process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit { rlim_cur: BLOB_BASE + (4 << 20), rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let before = queue_blocks();
    let failed = q.put(ByteBuf::from(vec![1u8; 16 << 20])).is_err();
    (failed, before, queue_blocks())
}

#[test]
fn a_large_put_that_fails_midway_leaves_no_memory_behind() {
    let q = Queue::new().unwrap();
    let mut child = Child(Process::spawn(put_cut_off, (q.clone(),)).unwrap());
    let (failed, before, after) = child.join();
    assert!(failed, "the put past the file size limit succeeded");
    assert!(after < before + (1 << 20), "{} KiB left in the queue's memory", (after - before) >> 10);
    assert!(q.empty());
}
