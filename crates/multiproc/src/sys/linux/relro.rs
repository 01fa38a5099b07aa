//! The fork server's read-only relocated data, shared with its children
//! instead of copied into each (see [`share_program_relro`]).

use std::ffi::{c_int, c_void};
use std::io;

use rustix::mm::{MapFlags, ProtFlags};

/// The page-aligned range `[start, end)` of the program's `PT_GNU_RELRO`
/// segment that the dynamic loader made read-only after relocating it (it
/// rounds both ends down to a page), or `None` if the program has none.
fn program_relro() -> Option<(usize, usize)> {
    unsafe extern "C" fn first_object(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: `dl_iterate_phdr` passes a valid `info` for the duration of
        // the call, and `data` is the `Option` passed below.
        let (info, out) = unsafe { (&*info, &mut *data.cast::<Option<(usize, usize)>>()) };
        let page = rustix::param::page_size();
        for i in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_GNU_RELRO {
                let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
                let end = start + ph.p_memsz as usize;
                *out = Some((start & !(page - 1), end & !(page - 1)));
            }
        }
        // The first object is the program itself; the libraries keep theirs.
        1
    }
    let mut found: Option<(usize, usize)> = None;
    // SAFETY: the callback only reads the headers it is given and writes
    // `found`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(first_object), (&raw mut found).cast()) };
    found.filter(|(start, end)| end > start)
}

/// Moves the program's relocated read-only data (`PT_GNU_RELRO`: vtables and
/// other tables of pointers, fixed up by the dynamic loader at start) from
/// private pages into a sealed memory file mapped shared, read-only, at the
/// same addresses with the same bytes. Private pages written at start-up are
/// copied, page-table entry by entry, into every fork and freed again at
/// every exit; a shared file mapping is neither (a child maps the few pages
/// it reads on first touch). Returns the bytes moved (0: nothing to move).
///
/// Call it only in a process that forks many short-lived children and runs
/// none of their code itself while it runs (the fork server).
pub(crate) fn share_program_relro() -> io::Result<usize> {
    let Some((start, end)) = program_relro() else {
        return Ok(0);
    };
    let len = end - start;
    // SAFETY: [start, end) lies in the program's relro segment, mapped
    // readable for the life of the process.
    let bytes = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
    let file = super::memfd::sealed_with("multiproc-relro", bytes)?;
    // SAFETY: replaces read-only pages with a read-only mapping of a sealed
    // file holding the same bytes: every read before, during (the kernel
    // swaps the mappings under its lock) and after it sees the same data,
    // and nothing writes there (the pages were read-only).
    unsafe {
        rustix::mm::mmap(start as *mut c_void, len, ProtFlags::READ, MapFlags::SHARED | MapFlags::FIXED, &file, 0)?;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relro_range_is_read_only_memory_of_this_program() {
        let (start, end) = program_relro().expect("a Rust test binary has relocated read-only data");
        let page = rustix::param::page_size();
        assert_eq!((start % page, end % page), (0, 0), "page-aligned");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        // The mappings covering [start, end): read-only, of this program (or
        // the shared file, if a test of this binary moved them already).
        let mut covered = start;
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let range = fields.next().unwrap();
            let perms = fields.next().unwrap();
            let path = line.split_whitespace().nth(5).unwrap_or("");
            let (lo, hi) = range.split_once('-').unwrap();
            let (lo, hi) = (usize::from_str_radix(lo, 16).unwrap(), usize::from_str_radix(hi, 16).unwrap());
            if lo <= covered && covered < hi && covered < end {
                assert!(perms.starts_with("r--"), "read-only: {line}");
                assert!(path == exe.to_str().unwrap() || path.contains("multiproc-relro"), "this program's: {line}");
                covered = hi;
            }
        }
        assert!(covered >= end, "mapped up to {covered:#x}, the range ends at {end:#x}");
    }

    #[test]
    fn moving_the_tables_keeps_their_bytes_and_maps_them_shared() {
        let (start, end) = program_relro().unwrap();
        // SAFETY: the range is mapped readable for the life of the process.
        let before = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) }.to_vec();
        assert_eq!(share_program_relro().unwrap(), end - start);
        // SAFETY: as above (now the shared mapping, same range).
        let after = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
        assert!(before == after, "the same bytes");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps.lines().find(|l| l.starts_with(&format!("{start:x}-"))).expect("a mapping at the start");
        assert!(line.contains("r--s") && line.contains("multiproc-relro"), "{line}");
        // Code that goes through the moved tables still works.
        let shapes: Vec<Box<dyn Fn(u32) -> String>> =
            vec![Box::new(|x| x.to_string()), Box::new(|x| format!("{x:#x}"))];
        assert_eq!(shapes.iter().map(|f| f(255)).collect::<Vec<_>>(), ["255", "0xff"]);
    }
}
