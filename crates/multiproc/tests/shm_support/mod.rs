//! What of `/dev/shm` this test process holds: its descriptors and mappings
//! of files there. Unlike the machine-wide directory listing, this does not
//! change when other programs (or other test binaries) run.

#![allow(dead_code)] // each test file uses a different subset

/// Descriptors and mappings of this process that name a file in /dev/shm.
pub fn own_dev_shm_handles() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && target.starts_with("/dev/shm")
        {
            found.push(format!("fd {}: {}", entry.file_name().to_string_lossy(), target.display()));
        }
    }
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    found.extend(maps.lines().filter(|l| l.contains(" /dev/shm/")).map(|l| format!("map: {l}")));
    found
}
