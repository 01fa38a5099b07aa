//! Pseudo-random bytes for the stable-toolchain runs of the fuzz entry points
//! (xorshift64: deterministic, no dependency).

/// Fills `out` from the generator state `state` (never 0), advancing it.
pub(crate) fn fill(state: &mut u64, out: &mut [u8]) {
    for b in out {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *b = *state as u8;
    }
}
