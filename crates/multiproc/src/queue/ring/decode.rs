//! Reading a slot another process wrote: its kind, length and data are
//! untrusted bytes, decoded into ranges that are checked before use.

use std::io;

use super::super::layout::{
    ARENA_ITEM_MAX, BLOB_BASE, Geometry, INLINE_MAX, ITEM_MAX, KIND_ARENA, KIND_BLOB, KIND_INLINE,
};
use super::super::states::Stamp;
use crate::sys::imp::sparse::PAGE;

/// Where a slot's item is, as its owner described it.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::queue) enum SlotItem<'a> {
    /// In the slot itself.
    Inline(&'a [u8]),
    /// `len` bytes at `offset` in the segment's arena (in bounds).
    Arena { offset: u64, len: usize },
    /// A blob of `len` bytes in a range of `capacity` (whole pages, at
    /// least `len`), to be read with [`Ring::read_blob`] (which checks the
    /// range).
    Blob { offset: u64, len: u64, capacity: u64 },
}

/// Decodes a slot's `meta` word and data (written by another process): an
/// error for a kind or length that does not fit, never an out-of-bounds
/// range. `arena_len` is the segment's arena size.
pub(in crate::queue) fn decode_slot(meta: u64, data: &[u8; INLINE_MAX], arena_len: u64) -> io::Result<SlotItem<'_>> {
    let (kind, len) = (meta >> 56, meta & ((1 << 56) - 1));
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "corrupt queue slot");
    let offset = || u64::from_ne_bytes(data[..8].try_into().expect("8 bytes"));
    match kind {
        KIND_INLINE if len as usize <= INLINE_MAX => Ok(SlotItem::Inline(&data[..len as usize])),
        KIND_ARENA if len as usize <= ARENA_ITEM_MAX => {
            let offset = offset();
            if offset.checked_add(len).is_none_or(|end| end > arena_len) {
                return Err(corrupt());
            }
            Ok(SlotItem::Arena { offset, len: len as usize })
        }
        KIND_BLOB if len <= ITEM_MAX => {
            let capacity = u64::from_ne_bytes(data[8..16].try_into().expect("8 bytes"));
            let whole_pages = capacity.is_multiple_of(PAGE) && capacity >= len.next_multiple_of(PAGE);
            if !whole_pages || capacity > ITEM_MAX {
                return Err(corrupt());
            }
            Ok(SlotItem::Blob { offset: offset(), len, capacity })
        }
        _ => Err(corrupt()),
    }
}

/// The file offset and page-rounded length of the blob at `offset` (relative
/// to `BLOB_BASE`) of `len` bytes; an error if the numbers (read from shared
/// memory) overflow or exceed the largest item.
pub(super) fn blob_range(offset: u64, len: u64) -> io::Result<(u64, u64)> {
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "corrupt queue slot: blob out of range");
    if len > ITEM_MAX {
        return Err(corrupt());
    }
    let pages = len.next_multiple_of(PAGE);
    let start = BLOB_BASE.checked_add(offset).ok_or_else(corrupt)?;
    start.checked_add(pages).filter(|&end| end <= i64::MAX as u64).ok_or_else(corrupt)?;
    Ok((start, pages))
}

/// Feeds arbitrary bytes to the queue's slot decoder, as if another process
/// had written them into a slot and its stamp: the first 8 bytes are the
/// `meta` word, the next 48 the slot's data, the next 8 the stamp, the next
/// 8 the arena size. Used by the fuzz target and the robustness tests;
/// never panics and never yields a range outside the arena or blob area.
#[doc(hidden)]
pub fn fuzz_slot_decode(data: &[u8]) {
    let word = |at: usize| {
        let mut b = [0u8; 8];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = data.get(at + i).copied().unwrap_or(0);
        }
        u64::from_le_bytes(b)
    };
    let mut slot = [0u8; INLINE_MAX];
    for (i, byte) in slot.iter_mut().enumerate() {
        *byte = data.get(8 + i).copied().unwrap_or(0);
    }
    let stamp = Stamp::unpack(word(8 + INLINE_MAX));
    assert_eq!(Stamp::unpack(stamp.pack()), stamp, "a stamp survives a round trip");
    let arena_len = word(16 + INLINE_MAX) % (1 << 31);
    match decode_slot(word(0), &slot, arena_len) {
        Ok(SlotItem::Inline(bytes)) => assert!(bytes.len() <= INLINE_MAX),
        Ok(SlotItem::Arena { offset, len }) => assert!(offset + len as u64 <= arena_len),
        Ok(SlotItem::Blob { offset, len, capacity }) => {
            assert!(capacity >= len && capacity.is_multiple_of(PAGE));
            if let Ok((start, pages)) = blob_range(offset, capacity) {
                assert!(start >= BLOB_BASE && start.checked_add(pages).is_some());
            }
        }
        Err(_) => {}
    }
    let geometry = Geometry { slots: word(24 + INLINE_MAX), frames: word(32 + INLINE_MAX), arena: arena_len };
    if let Ok(g) = geometry.validate() {
        assert!(g.file_len() <= BLOB_BASE);
    }
}

#[cfg(test)]
mod fuzz_test {
    use super::*;

    #[test]
    fn slot_decoder_survives_pseudo_random_bytes() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000 {
            let mut data = vec![0u8; 16 + INLINE_MAX + 24];
            crate::test_bytes::fill(&mut x, &mut data);
            // Bias some rounds toward valid kinds and small lengths.
            data[7] = (round % 4) as u8;
            fuzz_slot_decode(&data);
        }
        let mut meta = (KIND_ARENA << 56 | 100).to_le_bytes().to_vec();
        meta.extend_from_slice(&u64::MAX.to_ne_bytes());
        let slot: [u8; INLINE_MAX] = meta[8..].iter().copied().chain([0; 40]).collect::<Vec<_>>().try_into().unwrap();
        assert!(decode_slot(KIND_ARENA << 56 | 100, &slot, 1 << 20).is_err(), "an arena offset that wraps");
    }
}
