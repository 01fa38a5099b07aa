//! A child of another build refuses the parent's task with
//! `ProcessError::BuildMismatch` instead of running code at a wrong address.
//!
//! "Another build" is made here from this very test binary: a copy of it with
//! one byte of its GNU build-id note changed. The copy is the same code at the
//! same offsets, so the *only* thing that can stop it from running the task is
//! the build-id check, which is what this test must prove. (Were the note
//! missing, the library would fall back to a fingerprint of the executable
//! file, which a copy also changes.) The `multiproc-cli` package has the
//! companion test with a genuinely different program.

mod process_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use multiproc::{Process, ProcessError};
use process_support::{JOIN, TempDir};

fn secret() -> u32 {
    42
}

/// Changes the first byte of the descriptor of the first GNU build-id note in
/// an ELF file (`namesz` 4, `type` 3 (NT_GNU_BUILD_ID), name "GNU\0").
/// Returns false if the file has no such note.
fn patch_build_id(bytes: &mut [u8]) -> bool {
    let header_at = |i: usize| {
        bytes[i..i + 4] == 4u32.to_le_bytes()
            && bytes[i + 8..i + 12] == 3u32.to_le_bytes()
            && &bytes[i + 12..i + 16] == b"GNU\0"
            && (8..=64).contains(&u32::from_le_bytes(bytes[i + 4..i + 8].try_into().unwrap()))
    };
    let Some(at) = (0..bytes.len().saturating_sub(16)).find(|i| header_at(*i)) else {
        return false;
    };
    bytes[at + 16] ^= 0xFF;
    true
}

fn copy_with_other_build_id(dir: &Path) -> std::path::PathBuf {
    let me = std::fs::read("/proc/self/exe").expect("read own executable");
    let mut other = me.clone();
    let patched = patch_build_id(&mut other);
    eprintln!("build-id note {}", if patched { "patched" } else { "absent: relying on the file fingerprint" });
    assert_eq!(other.len(), me.len());
    let path = dir.join("other-build");
    std::fs::write(&path, &other).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_child_of_another_build_refuses_with_build_mismatch() {
    let dir = TempDir::new("build-id");
    let other = copy_with_other_build_id(&dir.0);

    // Exec of a file just written can fail with ETXTBSY while a descriptor
    // opened for writing is still being closed somewhere: retry briefly.
    let mut attempt = 0;
    let mut p = loop {
        match Process::builder().executable(&other).spawn(secret, ()) {
            Ok(p) => break p,
            Err(ProcessError::Start(e)) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 50 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("could not start the other build: {e}"),
        }
    };
    let err = p.join_timeout(JOIN).unwrap_err();
    let ProcessError::BuildMismatch { parent, child } = &err else {
        panic!("expected BuildMismatch, got {err:?}");
    };
    assert_ne!(parent, child);
    let shown = err.to_string();
    assert!(shown.contains(parent.as_str()) && shown.contains(child.as_str()), "{shown}");
    assert!(shown.contains("same executable"), "{shown}");
    // The child refused: like a Python exception, its exit code is 1.
    assert_eq!(p.exitcode(), Some(1));
}

#[test]
fn an_identical_copy_runs_the_task() {
    // The control: the same bytes under another path are the same build.
    let dir = TempDir::new("same-build");
    let path = dir.0.join("same-build");
    std::fs::copy("/proc/self/exe", &path).unwrap();
    let mut attempt = 0;
    let mut p = loop {
        match Process::builder().executable(&path).spawn(secret, ()) {
            Ok(p) => break p,
            Err(ProcessError::Start(e)) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 50 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("could not start the copy: {e}"),
        }
    };
    match p.join_timeout(JOIN) {
        Ok(v) => assert_eq!(v, 42),
        // Without a GNU build-id the fingerprint of a copy differs; then the
        // copy must refuse rather than run.
        Err(ProcessError::BuildMismatch { child, .. }) => assert!(child.starts_with("exe-"), "{child}"),
        Err(e) => panic!("{e:?}"),
    }
}
