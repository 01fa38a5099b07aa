//! Large arguments and results take other roads than the socket (a shared
//! ring, shared slabs, a sealed memory file); every byte must arrive.

mod pool_support;

use std::io::Write as _;
use std::time::{Duration, Instant};

use multiproc::Pool;
use pool_support::WAIT;
use serde_bytes::ByteBuf;

/// Reverses the buffer and stamps its length at the front.
fn transform(b: ByteBuf) -> ByteBuf {
    let mut v = b.into_vec();
    v.reverse();
    let n = v.len() as u32;
    v.splice(0..0, n.to_le_bytes());
    ByteBuf::from(v)
}

fn make(len: usize, seed: u8) -> ByteBuf {
    ByteBuf::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
}

fn check(input: &ByteBuf, output: &ByteBuf) {
    let mut want = input.to_vec();
    want.reverse();
    assert_eq!(&output[..4], &(input.len() as u32).to_le_bytes());
    assert!(output[4..] == want[..], "content of a {}-byte buffer differs", input.len());
}

#[test]
fn buffers_of_every_size_arrive_intact_both_ways() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    // Socket (small), ring (tens of KiB), slabs (after the first large one), memfd (over the ring's half).
    let sizes = [0usize, 10, 5_000, 9_000, 60_000, 300_000, 1 << 20, 9 << 20];
    for &len in &sizes {
        let inputs: Vec<ByteBuf> = (0..4u8).map(|s| make(len, s)).collect();
        let outputs: Vec<ByteBuf> =
            pool.with_chunksize(1).imap(transform, inputs.clone()).map(Result::unwrap).collect();
        for (i, o) in inputs.iter().zip(&outputs) {
            check(i, o);
        }
        let mut r = pool.with_chunksize(2).map_async(transform, inputs.clone());
        for (i, o) in inputs.iter().zip(&r.get_timeout(WAIT).unwrap()) {
            check(i, o);
        }
    }
}

#[test]
fn many_large_buffers_stream_through_a_reused_ring_and_slabs() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let inputs = (0..200u32).map(|k| make(256 * 1024, k as u8));
    let mut n = 0;
    for (k, out) in pool.with_chunksize(1).imap(transform, inputs).enumerate() {
        let out = out.unwrap();
        check(&make(256 * 1024, k as u8), &out);
        n += 1;
    }
    assert_eq!(n, 200);
}

/// `transform`, except that item 0 is slow (so that each worker gets a queue
/// of chunks) and item 4 aborts its worker the first time it runs (`marker`
/// is created then, so the retry runs).
fn transform_slowly_or_die_once((b, k, marker): (ByteBuf, u32, String)) -> ByteBuf {
    if k == 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    if k == 4 && std::fs::create_dir(&marker).is_ok() {
        std::process::abort();
    }
    transform(b)
}

#[test]
fn a_worker_dying_among_large_chunks_loses_nothing_with_retries() {
    let _watchdog = pool_support::watchdog();
    // Large chunks carry their input in a slab, and their results come back
    // in the same slab, after the input: a chunk sent again (the one that
    // was running, and those queued behind it) finds its input intact.
    let marker = std::env::temp_dir().join(format!("multiproc-die-once-{}", std::process::id()));
    let _ = std::fs::remove_dir(&marker);
    let pool = Pool::builder().processes(2).retries(2).build().unwrap();
    let len = 80 * 1024;
    let inputs: Vec<(ByteBuf, u32, String)> =
        (0..40u32).map(|k| (make(len, k as u8), k, marker.display().to_string())).collect();
    let mut n = 0;
    for (k, out) in pool.with_chunksize(1).imap(transform_slowly_or_die_once, inputs).enumerate() {
        check(&make(len, k as u8), &out.unwrap());
        n += 1;
    }
    assert_eq!(n, 40);
    assert!(marker.exists(), "the worker died once");
    std::fs::remove_dir(&marker).unwrap();
}

/// Item 0 waits (up to two minutes) until `dir/go` exists; every other item
/// appends a byte to `dir/done`. Each returns 100 KiB of its number, a result
/// that travels in its worker's output ring.
fn held_up_behind_item_0((i, dir): (u32, String)) -> ByteBuf {
    let dir = std::path::Path::new(&dir);
    if i == 0 {
        let give_up = Instant::now() + Duration::from_secs(120);
        while !dir.join("go").exists() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
        }
    } else {
        let mut done = std::fs::OpenOptions::new().append(true).create(true).open(dir.join("done")).unwrap();
        done.write_all(&[1]).unwrap();
    }
    ByteBuf::from(vec![i as u8; 100 << 10])
}

/// Removes its directory when dropped (also when the test fails).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_ordered_imap_held_up_by_a_slow_item_does_not_hold_up_the_other_worker() {
    let _watchdog = pool_support::watchdog();
    // The results after item 0 wait for it in the other worker's output
    // ring (16 MiB: about 160 of them), which then fills. The worker must
    // then send its results another way at once, not wait for room in the
    // ring for each (that took 2 s a result: this run would take minutes).
    let dir = TempDir(std::env::temp_dir().join(format!("multiproc-held-up-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.display().to_string();
    let n = 600u32;
    let pool = Pool::new(2).unwrap();
    let mut results = pool.with_chunksize(1).imap(held_up_behind_item_0, (0..n).map(|i| (i, path.clone())));
    // A few items may wait in item 0's worker's queue; all the others run.
    let others = u64::from(n) - 1 - 64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = || std::fs::metadata(dir.0.join("done")).map_or(0, |m| m.len());
    while done() < others && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(done() >= others, "only {} of {others} items ran in 60 s behind the slow item", done());
    std::fs::write(dir.0.join("go"), b"").unwrap();
    for i in 0..n {
        let out = results.next_timeout(WAIT).expect("a result per item").unwrap();
        assert!(out.len() == 100 << 10 && out.iter().all(|&b| b == i as u8), "result {i}");
    }
    assert!(results.next_timeout(WAIT).is_none());
}
