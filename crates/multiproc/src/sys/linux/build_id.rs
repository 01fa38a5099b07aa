//! The build id of the running executable, so that parent and child can check
//! that they are the same build before one runs the other's code.

use std::sync::OnceLock;

/// The GNU build-id of the main executable as hex, or, when the linker wrote
/// none, a digest of the executable's size and modification time.
pub(crate) fn build_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| gnu_build_id().unwrap_or_else(exe_fingerprint))
}

fn gnu_build_id() -> Option<String> {
    let mut found: Option<Vec<u8>> = None;
    // SAFETY: the callback only reads the program headers that the loader hands
    // it for the duration of the call, and `found` outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(first_object_callback), (&raw mut found).cast());
    }
    found.map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Looks at the first object only (the main executable) and stops.
unsafe extern "C" fn first_object_callback(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: the loader passes a valid `dl_phdr_info` and our `data` pointer.
    let (info, found) = unsafe { (&*info, &mut *data.cast::<Option<Vec<u8>>>()) };
    for i in 0..usize::from(info.dlpi_phnum) {
        // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
        let phdr = unsafe { &*info.dlpi_phdr.add(i) };
        if phdr.p_type != libc::PT_NOTE {
            continue;
        }
        let start = (info.dlpi_addr as usize).wrapping_add(phdr.p_vaddr as usize);
        // SAFETY: a PT_NOTE segment of a loaded object is mapped and readable
        // for `p_memsz` bytes at load address + p_vaddr.
        let notes = unsafe { std::slice::from_raw_parts(start as *const u8, phdr.p_memsz as usize) };
        if let Some(id) = find_gnu_build_id(notes) {
            *found = Some(id.to_vec());
            break;
        }
    }
    1
}

/// Walks ELF notes (4-byte aligned) looking for NT_GNU_BUILD_ID.
fn find_gnu_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    while notes.len() >= 12 {
        let namesz = word(&notes[0..]) as usize;
        let descsz = word(&notes[4..]) as usize;
        let kind = word(&notes[8..]);
        let name_end = 12 + namesz.div_ceil(4) * 4;
        let desc_end = name_end + descsz.div_ceil(4) * 4;
        if desc_end > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && notes.get(12..12 + namesz) == Some(b"GNU\0") {
            return Some(&notes[name_end..name_end + descsz]);
        }
        notes = &notes[desc_end..];
    }
    None
}

fn exe_fingerprint() -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self/exe") {
        Ok(m) => format!("exe-{:x}-{:x}-{:x}-{:x}", m.dev(), m.ino(), m.size(), m.mtime_nsec() ^ m.mtime()),
        Err(_) => "exe-unknown".to_string(),
    }
}

#[cfg(test)]
mod test {
    #[test]
    fn build_id_is_stable_and_hex() {
        let a = super::build_id();
        assert_eq!(a, super::build_id());
        assert!(a.len() >= 16, "{a}");
    }
}
