//! Blobs kept for reuse: a consumer that read a blob of up to
//! [`KEPT_BLOB_MAX`] leaves its pages in the queue's memory, in one of the
//! header's `KEPT_BLOBS` slots (in place of a smaller one, if all are
//! taken), instead of punching them out; a producer writing a blob takes
//! the smallest kept one that is large enough. An item's slot records its
//! blob's capacity beside its length, so the blob goes back whole: items
//! of varying sizes reuse each other's blobs (a blob more than twice what
//! an item needs is cut down to it first). A queue carrying items of a few MiB then writes them
//! into pages already in memory: a 4 MiB put + get between two processes
//! took 3.5 ms with fresh pages (a page fault and a zeroing for each of
//! 1,024 pages), against 1.6–2.1 ms with kept ones.
//!
//! A slot holds a blob's offset and length in pages, packed in one word
//! (0: empty), and is taken or filled with a compare-and-swap, so each kept
//! blob has one owner at a time: the slot, then the producer that took it,
//! then its item's consumer. The words come from shared memory: a slot
//! whose blob lies outside the blob area is emptied and not used. A process
//! killed holding a kept blob leaves its pages in memory until the queue is
//! dropped, as a producer killed while writing a blob does.

use std::sync::atomic::Ordering::{AcqRel, Relaxed};

use super::super::layout::KEPT_BLOB_MAX;
use super::Ring;
use super::blob_range;
use crate::sys::imp::sparse::{self, PAGE};

/// Bits of a slot word holding the blob's length in pages (the rest: its
/// offset in pages).
const LEN_BITS: u32 = 24;

/// The slot word for a blob at `offset` of `pages` pages, if it can be
/// kept (page-aligned, at most `KEPT_BLOB_MAX`, an offset that fits).
fn pack(offset: u64, pages: u64) -> Option<u64> {
    let fits = offset.is_multiple_of(PAGE)
        && pages > 0
        && pages * PAGE <= KEPT_BLOB_MAX
        && offset / PAGE < 1 << (64 - LEN_BITS);
    fits.then_some((offset / PAGE) << LEN_BITS | pages)
}

/// A slot word's blob: (offset, bytes).
fn unpack(word: u64) -> (u64, u64) {
    ((word >> LEN_BITS) * PAGE, (word & ((1 << LEN_BITS) - 1)) * PAGE)
}

impl Ring {
    /// Takes a kept blob for an item of `len` bytes: its offset and the
    /// capacity the item gets (the whole blob, or, when it is more than
    /// twice what the item needs, the item's pages, the rest punched out);
    /// `None` if no kept blob is large enough.
    pub(super) fn take_kept_blob(&self, len: u64) -> Option<(u64, u64)> {
        let need = len.next_multiple_of(PAGE);
        if need > KEPT_BLOB_MAX {
            return None;
        }
        let slots = &self.header().kept_blobs.0;
        // The smallest that is large enough (a few tries: another producer
        // may take it first).
        for _ in 0..4 {
            // ORDERING: Relaxed: a look; the swap below decides.
            let best = slots
                .iter()
                .map(|slot| (slot, slot.load(Relaxed)))
                .filter(|&(_, word)| word != 0 && unpack(word).1 >= need)
                .min_by_key(|&(_, word)| unpack(word).1);
            let (slot, word) = best?;
            // ORDERING: AcqRel: after the consumer's read of the blob
            // (Release when it kept it), before our write into it.
            if slot.compare_exchange(word, 0, AcqRel, Relaxed).is_err() {
                continue;
            }
            let (offset, capacity) = unpack(word);
            let Ok((start, _)) = blob_range(offset, capacity) else { continue };
            if capacity > 2 * need {
                let _ = sparse::punch_hole(self.fd(), start + need, capacity - need);
                return Some((offset, need));
            }
            return Some((offset, capacity));
        }
        None
    }

    /// After its item was read: keeps the blob at `offset` (`capacity`
    /// bytes) in a free slot, or in place of a smaller kept one, which is
    /// freed; otherwise frees its pages. So the slots hold the largest
    /// blobs lately read, which the most items fit.
    pub(super) fn keep_or_free_blob(&self, offset: u64, capacity: u64) {
        let Some(word) = pack(offset, capacity / PAGE) else {
            return self.discard_blob(offset, capacity);
        };
        let slots = &self.header().kept_blobs.0;
        for _ in 0..4 {
            // ORDERING: Relaxed: a look; the swap below decides.
            let Some((slot, smallest)) = slots
                .iter()
                .map(|slot| (slot, slot.load(Relaxed)))
                .min_by_key(|&(_, word)| if word == 0 { 0 } else { unpack(word).1 })
            else {
                break;
            };
            if smallest != 0 && unpack(smallest).1 >= capacity {
                break;
            }
            // ORDERING: AcqRel: Release: our read of the blob comes before
            // the write of the producer that takes it (AcqRel there);
            // Acquire: the blob we put out is ours to free.
            if slot.compare_exchange(smallest, word, AcqRel, Relaxed).is_ok() {
                if smallest != 0 {
                    let (evicted, bytes) = unpack(smallest);
                    self.discard_blob(evicted, bytes);
                }
                return;
            }
        }
        self.discard_blob(offset, capacity);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use super::*;
    use crate::queue::Queue;

    #[test]
    fn slot_words_round_trip_and_refuse_what_cannot_be_kept() {
        let word = pack(7 * PAGE, 3).unwrap();
        assert_eq!(unpack(word), (7 * PAGE, 3 * PAGE));
        assert_ne!(pack(0, 1), Some(0), "a kept blob at offset 0 is not an empty slot");
        assert_eq!(pack(PAGE + 1, 1), None, "not page-aligned");
        assert_eq!(pack(0, 0), None);
        assert_eq!(pack(0, KEPT_BLOB_MAX / PAGE + 1), None, "too large to keep");
        assert_eq!(pack((1 << 40) * PAGE, 1), None, "an offset past the word");
        assert!(pack(((1 << 40) - 1) * PAGE, KEPT_BLOB_MAX / PAGE).is_some());
    }

    #[test]
    fn garbage_in_the_kept_blob_slots_costs_no_item() {
        let q = Queue::<serde_bytes::ByteBuf>::new().unwrap();
        let slots = &q.ring.header().kept_blobs.0;
        let item =
            |seed: u8| serde_bytes::ByteBuf::from((0..(2 << 20) + 77).map(|i| (i as u8) ^ seed).collect::<Vec<u8>>());
        // Words another process may write: a blob past the end of any file,
        // one of 64 GiB, one of a page at the very start, and ones that are
        // not blobs at all (length 0).
        let garbage = [u64::MAX, (1 << 24) - 1, 1, 1 << 40, 0xdead_beef << 24];
        for (round, pair) in garbage.windows(2).enumerate() {
            slots[0].store(pair[0], SeqCst);
            slots[1].store(pair[1], SeqCst);
            for seed in 0..3u8 {
                let seed = seed + 10 * round as u8;
                q.put(item(seed)).unwrap();
                assert_eq!(q.get_timeout(std::time::Duration::from_secs(20)).unwrap(), item(seed), "round {round}");
            }
        }
        assert!(q.empty());
    }
}
