//! How a process names its types and functions to another process of the
//! same build: hashes of type names (checked by the receiver) and code
//! offsets from an anchor (the same in every process running this build,
//! whatever the address-space layout). The one copy of each.

/// FNV-1a over `parts`, each followed by a 0 byte: stable within a build,
/// cheap.
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Hash of a type's name, to check that both ends mean the same type.
pub(crate) fn type_hash<T: ?Sized>() -> u64 {
    fnv1a(&[std::any::type_name::<T>()])
}

/// A fixed point in the code that every process of this build shares.
#[inline(never)]
fn anchor() {}

/// The offset of a code address from the anchor: the same in every process
/// running this build.
pub(crate) fn code_offset(addr: *const ()) -> i64 {
    (addr as usize as i64).wrapping_sub(anchor as *const () as usize as i64)
}

/// The code address for an offset made by [`code_offset`].
///
/// # Safety
///
/// `offset` must come from [`code_offset`] in a process running the same build
/// (checked by the build-id handshake), and the caller must transmute the
/// result to the exact function type whose address was taken.
pub(crate) unsafe fn code_address(offset: i64) -> *const () {
    (anchor as *const () as usize as i64).wrapping_add(offset) as usize as *const ()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn hashes_separate_parts_and_offsets_round_trip() {
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        assert_ne!(type_hash::<u32>(), type_hash::<i32>());
        let f: fn() -> u64 = || 5;
        // SAFETY: the offset was just made from `f` in this process.
        let back = unsafe { std::mem::transmute::<*const (), fn() -> u64>(code_address(code_offset(f as *const ()))) };
        assert_eq!(back(), 5);
    }
}
