//! The slot stamp: one 64-bit word per ring slot that says which lap of the
//! ring the slot is on, what state it is in, and who owns it right now.
//!
//! ```text
//!  63                        27 26              5   4      3    2..0
//! +----------------------------+----------------+------+------+-------+
//! | lap (37 bits, wrapping)    | tid (22 bits)  | task | 0    | state |
//! +----------------------------+----------------+------+------+-------+
//! ```
//!
//! A slot of a fresh (all-zero) segment reads as `FREE` on lap 0, so a segment
//! needs no initialisation beyond its number. See `README.md` for the life of
//! a slot. Bit 3 is unused: it once marked a bounded queue's permit held by
//! the slot, before bounded queues admitted items by position (`README.md`,
//! "Accounting"); it is always 0.

/// Empty and claimable by the producer of position `lap * slots + index`.
pub(super) const FREE: u64 = 0;
/// Claimed by the producer whose thread id is in the stamp; it is writing the
/// item. Consumers wait for it, and skip the slot if that thread is dead.
pub(super) const WRITING: u64 = 1;
/// Holds a complete item.
pub(super) const READY: u64 = 2;
/// Holds nothing a consumer should return (an abandoned or withdrawn claim);
/// a consumer still takes it, to move past it in order.
pub(super) const SKIP: u64 = 3;
/// Claimed by the consumer whose thread id is in the stamp; it is copying the
/// item out. Freed for the next lap when it is done.
pub(super) const TAKING: u64 = 4;

const STATE_BITS: u32 = 3;
const TASK_SHIFT: u32 = 4;
const TID_SHIFT: u32 = 5;
const TID_BITS: u32 = 22;
const LAP_SHIFT: u32 = TID_SHIFT + TID_BITS;
/// Laps wrap at this many bits; they are compared modulo 2^37.
const LAP_BITS: u32 = 64 - LAP_SHIFT;
const LAP_MASK: u64 = (1 << LAP_BITS) - 1;

/// Largest thread id a stamp can hold (Linux's `pid_max` is at most 2^22).
pub(super) const MAX_TID: u32 = (1 << TID_BITS) - 1;

/// A decoded stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    /// Ring lap, modulo 2^37.
    pub lap: u64,
    /// One of the state constants above.
    pub state: u64,
    /// For `TAKING` (joinable queues): the consumer took an item and has
    /// counted its task among the taken ones (`Header::taken_tasks`), so
    /// whoever frees the slot for a dead consumer marks that task done.
    pub task: bool,
    /// Thread id of the owner while `WRITING` or `TAKING`, else 0.
    pub tid: u32,
}

impl Stamp {
    /// A stamp with no owner.
    pub(super) fn new(lap: u64, state: u64) -> Stamp {
        Stamp { lap: lap & LAP_MASK, state, task: false, tid: 0 }
    }

    /// A stamp owned by thread `tid`.
    pub(super) fn owned(lap: u64, state: u64, tid: u32) -> Stamp {
        Stamp { lap: lap & LAP_MASK, state, task: false, tid: tid & MAX_TID }
    }

    /// The packed word.
    pub(super) fn pack(self) -> u64 {
        (self.lap & LAP_MASK) << LAP_SHIFT
            | u64::from(self.tid & MAX_TID) << TID_SHIFT
            | u64::from(self.task) << TASK_SHIFT
            | (self.state & ((1 << STATE_BITS) - 1))
    }

    /// Unpacks a word.
    pub(super) fn unpack(word: u64) -> Stamp {
        Stamp {
            lap: (word >> LAP_SHIFT) & LAP_MASK,
            state: word & ((1 << STATE_BITS) - 1),
            task: (word >> TASK_SHIFT) & 1 == 1,
            tid: ((word >> TID_SHIFT) & u64::from(MAX_TID)) as u32,
        }
    }

    /// Where this stamp's lap stands relative to `lap` (both modulo 2^37).
    pub(super) fn lap_vs(self, lap: u64) -> LapOrder {
        let diff = self.lap.wrapping_sub(lap & LAP_MASK) & LAP_MASK;
        if diff == 0 {
            LapOrder::Same
        } else if diff < (1 << (LAP_BITS - 1)) {
            LapOrder::Newer
        } else {
            LapOrder::Older
        }
    }
}

/// A stamp's lap compared with the lap of the position being looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LapOrder {
    /// The slot is on an earlier lap: it still holds (or is still releasing)
    /// an item from a position one lap back.
    Older,
    /// The slot is on the position's lap.
    Same,
    /// The slot has moved past the position: the reader's position is stale.
    Newer,
}

/// Bit of a segment's tail word set when the segment takes no more items.
pub(super) const SEALED: u64 = 1 << 63;

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trips_and_zero_is_free_on_lap_zero() {
        assert_eq!(Stamp::unpack(0), Stamp::new(0, FREE));
        for s in [
            Stamp::new(0, READY),
            Stamp::owned(123_456, WRITING, MAX_TID),
            Stamp::owned(LAP_MASK, TAKING, 77),
            Stamp::owned(5, SKIP, 0),
            Stamp { task: true, ..Stamp::owned(9, TAKING, 12) },
        ] {
            assert_eq!(Stamp::unpack(s.pack()), s);
        }
    }

    #[test]
    fn laps_compare_modulo() {
        assert_eq!(Stamp::new(7, FREE).lap_vs(7), LapOrder::Same);
        assert_eq!(Stamp::new(6, FREE).lap_vs(7), LapOrder::Older);
        assert_eq!(Stamp::new(8, FREE).lap_vs(7), LapOrder::Newer);
        assert_eq!(Stamp::new(LAP_MASK, FREE).lap_vs(0), LapOrder::Older);
        assert_eq!(Stamp::new(0, FREE).lap_vs(LAP_MASK), LapOrder::Newer);
        assert_eq!(Stamp::new(0, FREE).lap_vs(LAP_MASK + 1), LapOrder::Same);
    }
}
