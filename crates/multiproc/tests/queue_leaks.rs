//! A queue gives its memory back: a put that fails leaves nothing behind in
//! the queue's memory file. Every blocking call has a timeout.

mod queue_support;

use multiproc::{Process, Queue};
use queue_support::{Child, LONG, queue_blocks, queue_file_len};
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

/// Item `round` of [`blob_items_through`], a blob with bytes of its own:
/// 2 MB and a few KB more or less (`varied` false: as a stream of arrays of
/// one shape), or anything from 1.2 to 3 MB.
fn blob_item(round: u32, varied: bool) -> Vec<u8> {
    let len = if varied {
        1_200_000 + (round as usize * 611_953) % 1_800_000
    } else {
        2_000_000 + (round as usize % 7) * 1_000
    };
    (0..len).map(|i| (i as u32 ^ round.wrapping_mul(2_654_435_761)) as u8).collect()
}

/// In a child: moves `rounds` blob items through the queue with `ahead`
/// of them queued before each get, then one item too large to be kept;
/// returns the items that came back wrong, the queue file's bytes in
/// memory after the blob items and after the large one, and how far past
/// the start of the blobs writes reached.
fn blob_items_through(q: Queue<ByteBuf>, rounds: u32, ahead: u32, varied: bool) -> (u32, u64, u64, u64) {
    let mut wrong = 0;
    for round in 0..rounds + ahead {
        if round < rounds {
            q.put(ByteBuf::from(blob_item(round, varied))).unwrap();
        }
        if round >= ahead && q.get_timeout(LONG).unwrap().into_vec() != blob_item(round - ahead, varied) {
            wrong += 1;
        }
    }
    let (after_blobs, reach) = (queue_blocks(), queue_file_len().saturating_sub(BLOB_BASE));
    let large = vec![5u8; 12 << 20];
    q.put(ByteBuf::from(large.clone())).unwrap();
    if q.get_timeout(LONG).unwrap().into_vec() != large {
        wrong += 1;
    }
    (wrong, after_blobs, queue_blocks(), reach)
}

#[test]
fn blob_items_reuse_two_kept_blobs_and_come_back_whole() {
    for (ahead, varied) in [(0, false), (4, false), (0, true), (4, true)] {
        let q = Queue::new().unwrap();
        let mut child = Child(Process::spawn(blob_items_through, (q.clone(), 40, ahead, varied)).unwrap());
        let (wrong, after_blobs, after_large, reach) = child.join();
        let case = format!("{ahead} ahead, sizes varied: {varied}");
        assert_eq!(wrong, 0, "{case}: items came back with other items' bytes");
        // At most two kept blobs of at most 3 MB each, and the headers and
        // slots: 40 items' blobs would hold 80 MB.
        assert!(after_blobs <= 8 << 20, "{case}: {} KiB in the queue's memory", after_blobs >> 10);
        // A 12 MiB blob is freed once read, not kept.
        assert!(after_large <= after_blobs + (1 << 20), "{case}: {} KiB after a 12 MiB item", after_large >> 10);
        // Items of one size reuse the blobs of those before them: writes
        // reach no further than the blobs in flight at once, the two kept
        // and one more (the first items, growing by a few KB, each needed a
        // blob of its own), each 2 MB and a few KB: not 40 blobs further.
        if !varied {
            let most = (u64::from(ahead) + 4) * 2_100_000;
            assert!(reach <= most, "{case}: writes reached {} KiB into the blob area", reach >> 10);
        }
        assert!(q.empty());
    }
}
