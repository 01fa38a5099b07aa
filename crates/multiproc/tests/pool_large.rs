//! Large arguments and results take other roads than the socket (a shared
//! ring, shared slabs, a sealed memory file); every byte must arrive.

mod pool_support;

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
        std::thread::sleep(std::time::Duration::from_millis(100));
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
