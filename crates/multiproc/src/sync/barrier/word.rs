//! The barrier's word: arrivals in the low 16 bits, then the outcomes
//! (passed or reset) of the last rounds, the generation, and the broken
//! flag; and what a waiter makes of a later word (see the notes of
//! `sync::barrier`).

pub(super) const COUNT_MASK: u32 = 0xFFFF;
pub(super) const HISTORY_SHIFT: u32 = 16;
/// How many past rounds' outcomes the word remembers.
pub(super) const HISTORY_LEN: u32 = 7;
pub(super) const HISTORY_MASK: u32 = (1 << HISTORY_LEN) - 1;
pub(super) const GEN_SHIFT: u32 = HISTORY_SHIFT + HISTORY_LEN;
pub(super) const GEN_MASK: u32 = 0xFF;
pub(super) const BROKEN: u32 = 1 << 31;

pub(super) fn generation(w: u32) -> u32 {
    (w >> GEN_SHIFT) & GEN_MASK
}

/// The word that ends the round of `w` (passed or reset): the next
/// generation, the outcome in the history, no arrivals, not broken.
pub(super) fn advanced(w: u32, passed: bool) -> u32 {
    let history = (((w >> HISTORY_SHIFT) << 1) | u32::from(passed)) & HISTORY_MASK;
    (((generation(w) + 1) & GEN_MASK) << GEN_SHIFT) | (history << HISTORY_SHIFT)
}

/// More rounds ended since an arrival than this: the generation may have
/// wrapped (see the module notes).
pub(super) const WRAP_SUSPECT: u32 = GEN_MASK / 2;

/// What a waiter noted when it arrived.
#[derive(Clone, Copy)]
pub(super) struct Arrival {
    pub generation: u32,
    pub resets_done: u32,
    pub rounds_ended: u32,
}

/// Whether the round of `arrival` passed, seen from a later word `w`
/// (`None` while it is still the current round). `long_ago` tells whether
/// the round surely ended (the generation may have wrapped);
/// `no_reset_since` whether a round out of the history could have been
/// ended by a reset.
pub(super) fn outcome(w: u32, arrival: Arrival, long_ago: bool, no_reset_since: impl FnOnce() -> bool) -> Option<bool> {
    let moved = generation(w).wrapping_sub(arrival.generation) & GEN_MASK;
    match moved {
        _ if long_ago => Some(no_reset_since()),
        0 => None,
        k if k > HISTORY_LEN => Some(no_reset_since()),
        k => Some((w >> (HISTORY_SHIFT + k - 1)) & 1 == 1),
    }
}
