//! A pool tunes the calling process's allocator the first time it moves a
//! large input (issue 13, item 7): a batch of 1 MiB inputs, consumed and
//! freed by the pool, stays in this process's heap for the next batch
//! instead of going back to the kernel (which glibc does by default, at the
//! cost of faulting it all in again). Alone in its file: the setting is
//! process-wide, and `PoolBuilder::keep_freed_memory(false)` leaves it alone.

mod pool_support;

use multiproc::Pool;
use pool_support::WAIT;
use serde_bytes::ByteBuf;

const MIB: usize = 1 << 20;
const BATCH: usize = 64;

fn identity(b: ByteBuf) -> ByteBuf {
    b
}

/// Bytes the main heap holds from the kernel (glibc's `mallinfo2().arena`).
fn heap_bytes() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    unsafe { libc::mallinfo2() }.arena
}

fn one_batch(pool: &Pool) {
    let inputs: Vec<ByteBuf> = (0..BATCH).map(|k| ByteBuf::from(vec![k as u8; MIB])).collect();
    for (k, back) in pool.with_chunksize(1).imap(identity, inputs).enumerate() {
        let back = back.unwrap();
        assert!(back.len() == MIB && back[MIB / 2] == k as u8);
    }
}

#[test]
fn a_consumed_batch_of_large_inputs_stays_in_the_heap() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    one_batch(&pool); // the first large input tunes the allocator
    one_batch(&pool); // allocated from the heap now, and freed by the pool
    let kept = heap_bytes();
    assert!(kept >= BATCH / 2 * MIB, "the heap shrank to {kept} bytes after the batch was freed");
    pool.close();
    pool.join_timeout(WAIT).unwrap();
}
