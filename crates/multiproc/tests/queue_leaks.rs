//! A queue gives its memory back: a put that fails leaves nothing behind in
//! the queue's memory file. Every blocking call has a timeout.

mod queue_support;

use multiproc::{Process, Queue};
use queue_support::{Child, LONG, queue_blocks};
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

/// In a child: moves `rounds` items of 20–60 KB (kept in a segment's arena)
/// through the queue one at a time, each of its own bytes, so that segment
/// after segment reuses the kept arenas; returns the items that came back
/// wrong and the queue file's bytes in memory afterwards.
fn arena_items_through(q: Queue<ByteBuf>, rounds: u32) -> (u32, u64) {
    let mut wrong = 0;
    for round in 0..rounds {
        let len = 20_000 + (round as usize * 7_919) % 40_000;
        let item: Vec<u8> = (0..len).map(|i| (i as u32 ^ round) as u8).collect();
        q.put(ByteBuf::from(item.clone())).unwrap();
        if q.get_timeout(LONG).unwrap().into_vec() != item {
            wrong += 1;
        }
    }
    (wrong, queue_blocks())
}

#[test]
fn arena_items_reuse_two_kept_arenas_and_come_back_whole() {
    let q = Queue::new().unwrap();
    // About 50 items fill an arena: 800 go through 16 segments or so.
    let mut child = Child(Process::spawn(arena_items_through, (q.clone(), 800)).unwrap());
    let (wrong, blocks) = child.join();
    assert_eq!(wrong, 0, "items came back with other items' bytes");
    // The two kept arenas (2 MiB each), the warm frames' slots and the
    // headers: far below the 32 MiB that 800 items' arenas would hold.
    assert!(blocks <= 6 << 20, "{} KiB left in the queue's memory", blocks >> 10);
    assert!(q.empty());
}
