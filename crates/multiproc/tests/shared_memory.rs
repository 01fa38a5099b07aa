//! `SharedMemory`: anonymous and named segments, create / attach by name /
//! unlink, size checks and Python's `FileExists`/`NotFound` errors, handles
//! passed to children. SPEC.md, "Shared state".

mod sync_support;

use std::sync::atomic::{AtomicUsize, Ordering};

use multiproc::{SharedMemory, SharedMemoryError};
use sync_support::Kid;

fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("multiproc-test-{}-{what}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

fn write_greeting(shm: SharedMemory, at: usize) {
    shm.write_at(at, b"written by a child").unwrap();
}

fn read_back(shm: SharedMemory, at: usize, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    shm.read_at(at, &mut buf).unwrap();
    buf
}

#[test]
fn anonymous_segments_are_zeroed_and_shared_with_children() {
    let shm = SharedMemory::new(10_000).unwrap();
    assert_eq!((shm.size(), shm.name()), (10_000, None));
    assert_eq!(read_back(shm.clone(), 0, 10_000), vec![0; 10_000]);
    Kid::spawn(write_greeting, (shm.clone(), 4000usize)).join();
    assert_eq!(read_back(shm.clone(), 4000, 18), b"written by a child");
    // SAFETY: no other process or thread touches the segment now.
    assert_eq!(&unsafe { shm.as_slice() }[4000..4007], b"written");
    // SAFETY: as above, and no other view of it exists.
    unsafe { shm.as_mut_slice()[0] = 1 };
    // SAFETY: the segment has at least one byte; nobody writes it now.
    let first = unsafe { *shm.as_ptr() };
    assert_eq!(first, 1);
    shm.unlink().expect("nothing to do for an anonymous segment");
}

#[test]
fn size_checks() {
    assert!(matches!(SharedMemory::new(0), Err(SharedMemoryError::InvalidSize)));
    assert!(matches!(SharedMemory::create(&unique("zero"), 0), Err(SharedMemoryError::InvalidSize)));
    let shm = SharedMemory::new(16).unwrap();
    assert!(shm.write_at(10, &[0; 6]).is_ok());
    let err = shm.write_at(10, &[0; 7]).unwrap_err();
    assert!(matches!(err, SharedMemoryError::OutOfRange { start: 10, end: 17, size: 16 }));
    assert_eq!(err.to_string(), "bytes 10..17 are outside the 16-byte shared memory");
    assert!(shm.read_at(usize::MAX, &mut [0; 2]).is_err());
}

#[test]
fn a_segment_too_large_to_map_is_an_error_naming_its_size_and_leaves_no_name() {
    // The file can be that long (sparse), but no address space holds it.
    const HUGE: usize = 1 << 60;
    let name = unique("huge");
    let err = SharedMemory::create(&name, HUGE).map(|_| ()).unwrap_err().to_string();
    // The file holds a small trailer after the bytes asked for.
    assert!(err.contains("cannot make a shared memory segment of 11529215046068") && err.contains("bytes"), "{err}");
    assert!(!exists(&name), "the name stayed in /dev/shm after the failed create");
    let err = SharedMemory::new(HUGE).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains(&format!("{HUGE} bytes")), "{err}");
}

/// Cuts the named segment's file to nothing (as any process that can open
/// the name may), then reads and writes past the new end.
fn cut_then_touch(name: String) -> (String, String) {
    let shm = SharedMemory::open(&name).unwrap();
    std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/{name}")).unwrap().set_len(0).unwrap();
    let read = shm.read_at(4096, &mut [0u8; 8]).map_err(|e| e.to_string());
    let write = shm.write_at(0, b"x").map_err(|e| e.to_string());
    (format!("{read:?}"), format!("{write:?}"))
}

#[test]
fn a_named_segment_cut_short_by_another_process_is_an_error_not_a_sigbus() {
    let name = unique("cut");
    let shm = SharedMemory::create(&name, 3 * 4096).unwrap();
    // The child plays the peer and the victim (a SIGBUS kills it, not the test).
    let (read, write) = Kid::spawn(cut_then_touch, (name.clone(),)).join();
    for what in [read, write] {
        assert!(what.contains("cut to 0 bytes by another process"), "{what}");
    }
    drop(shm);
    assert!(!exists(&name));
}

/// Size of the segment `copy_until_stopped` copies whole, again and again:
/// large, so that each copy takes a while and a cut lands during one.
const LARGE: usize = 32 << 20;

/// Opens `name` and copies all of it out (`write` false) or in (`write`
/// true) until `stop` is set, counting the copies done in `copies`; returns
/// how many copies failed (a SIGBUS would kill this process instead).
fn copy_until_stopped(
    name: String,
    write: bool,
    ready: multiproc::Event,
    stop: multiproc::Event,
    copies: multiproc::RawValue<u64>,
) -> usize {
    let shm = SharedMemory::open(&name).unwrap();
    let mut buf = vec![7u8; LARGE];
    let mut failed = 0;
    ready.set();
    while !stop.is_set() {
        let copied = if write { shm.write_at(0, &buf) } else { shm.read_at(0, &mut buf) };
        match copied {
            Ok(()) => {}
            Err(SharedMemoryError::Truncated { .. }) => failed += 1,
            Err(e) => panic!("{e}"),
        }
        copies.as_atomic().fetch_add(1, Ordering::SeqCst);
    }
    failed
}

#[test]
fn a_named_segment_cut_short_during_a_copy_is_not_a_sigbus() {
    use std::time::Duration;
    for write in [false, true] {
        let name = unique("cut-during-copy");
        let shm = SharedMemory::create(&name, LARGE).unwrap();
        let (ready, stop) = (multiproc::Event::new().unwrap(), multiproc::Event::new().unwrap());
        let copies = multiproc::RawValue::new(0u64).unwrap();
        let args = (name.clone(), write, ready.clone(), stop.clone(), copies.clone());
        let kid = Kid::<usize>::spawn(copy_until_stopped, args);
        assert!(ready.wait_timeout(sync_support::LONG));
        // The copier spends nearly all its time inside a copy: cut then.
        std::thread::sleep(Duration::from_millis(100));
        std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/{name}")).unwrap().set_len(0).unwrap();
        // Two more copies ended: the second began after the cut (however
        // slowly the copier is scheduled).
        let at_cut = copies.get();
        sync_support::wait_until("a copy begun after the cut", || copies.get() >= at_cut + 2);
        stop.set();
        // A copier killed by SIGBUS fails the join.
        let failed = kid.join();
        if !write {
            assert!(failed > 0, "reads after the cut are refused");
        }
        drop(shm);
        assert!(!exists(&name));
    }
}

/// Opens `name` again and again until `stop` is set; returns how many
/// opens succeeded (a SIGBUS would kill this process instead).
fn open_until_stopped(name: String, ready: multiproc::Event, stop: multiproc::Event) -> usize {
    let mut opened = 0;
    ready.set();
    while !stop.is_set() {
        if SharedMemory::open(&name).is_ok() {
            opened += 1;
        }
    }
    opened
}

#[test]
fn a_named_segment_cut_short_while_it_is_opened_is_not_a_sigbus() {
    use std::time::{Duration, Instant};
    let name = unique("cut-while-opened");
    let shm = SharedMemory::create(&name, 4096).unwrap();
    let (ready, stop) = (multiproc::Event::new().unwrap(), multiproc::Event::new().unwrap());
    let kid = Kid::<usize>::spawn(open_until_stopped, (name.clone(), ready.clone(), stop.clone()));
    assert!(ready.wait_timeout(sync_support::LONG));
    let file = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/{name}")).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        file.set_len(0).unwrap();
        file.set_len(4096 + 40).unwrap();
    }
    stop.set();
    // An opener killed by SIGBUS fails the join.
    let opened = kid.join();
    assert!(opened > 0);
    drop(shm);
    assert!(!exists(&name));
}

#[test]
fn named_create_attach_exists_not_found_unlink() {
    let name = unique("named");
    assert!(matches!(SharedMemory::open(&name), Err(SharedMemoryError::NotFound { .. })));
    let a = SharedMemory::create(&name, 1000).unwrap();
    assert_eq!(a.name(), Some(name.as_str()));
    assert!(exists(&name));
    let err = SharedMemory::create(&name, 1000).unwrap_err();
    assert!(matches!(&err, SharedMemoryError::FileExists { name: n } if *n == name));
    assert_eq!(err.to_string(), format!("shared memory {name:?} already exists"));
    // A leading '/' is accepted, as in Python.
    let b = SharedMemory::open(&format!("/{name}")).unwrap();
    assert_eq!(b.size(), 1000, "attach sees the size asked at creation");
    a.write_at(999, &[7]).unwrap();
    assert_eq!(read_back(b.clone(), 999, 1), [7]);
    // Unlink: the name goes, the mappings stay.
    b.unlink().unwrap();
    assert!(!exists(&name));
    assert!(matches!(SharedMemory::open(&name), Err(SharedMemoryError::NotFound { .. })));
    assert!(matches!(b.unlink(), Err(SharedMemoryError::NotFound { .. })));
    assert_eq!(read_back(a.clone(), 999, 1), [7]);
    // The name is free for a new segment, which the old creator's drop leaves alone.
    let c = SharedMemory::create(&name, 10).unwrap();
    drop((a, b));
    assert!(exists(&name));
    drop(c);
    assert!(!exists(&name));
}

#[test]
fn invalid_names_are_refused() {
    for bad in ["", "/", "a/b", "nul\0here", "new\nline", &"x".repeat(251)] {
        assert!(
            matches!(SharedMemory::create(bad, 8), Err(SharedMemoryError::InvalidName { .. })),
            "{bad:?} must be refused"
        );
        assert!(matches!(SharedMemory::open(bad), Err(SharedMemoryError::InvalidName { .. })));
    }
}

fn attach_and_write(name: String) -> usize {
    let shm = SharedMemory::open(&name).unwrap();
    shm.write_at(0, b"by name").unwrap();
    shm.size()
}

fn keep_handle(shm: SharedMemory) -> Option<String> {
    shm.write_at(0, b"by handle").unwrap();
    shm.name().map(str::to_string)
    // Dropping a received handle must not remove the creator's name.
}

#[test]
fn named_segments_reach_children_by_name_and_by_handle() {
    let name = unique("child");
    let shm = SharedMemory::create(&name, 64).unwrap();
    assert_eq!(Kid::spawn(attach_and_write, (name.clone(),)).join(), 64);
    assert_eq!(read_back(shm.clone(), 0, 7), b"by name");
    assert_eq!(Kid::spawn(keep_handle, (shm.clone(),)).join(), Some(name.clone()));
    assert_eq!(read_back(shm.clone(), 0, 9), b"by handle");
    assert!(exists(&name), "only the creator removes the name");
    drop(shm);
    assert!(!exists(&name));
}

#[test]
fn a_foreign_segment_with_a_corrupt_trailer_is_not_a_panic() {
    // Any program may write /dev/shm/<name>: here one whose last 40 bytes
    // look like our trailer (the magic) but claim an absurd size.
    let name = unique("bad-trailer");
    let mut bytes = vec![0u8; 48];
    bytes[8..16].copy_from_slice(b"mpshm\x01\0\0");
    bytes[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(std::path::Path::new("/dev/shm").join(&name), &bytes).unwrap();
    let opened = std::panic::catch_unwind(|| SharedMemory::open(&name).map(|s| s.size()));
    let created = std::panic::catch_unwind(|| SharedMemory::create(&name, 10).map(|s| s.size()));
    std::fs::remove_file(std::path::Path::new("/dev/shm").join(&name)).unwrap();
    // Without a valid trailer the segment is foreign: opened whole, not reclaimed.
    assert_eq!(opened.expect("open panicked").unwrap(), 48);
    assert!(matches!(created.expect("create panicked"), Err(SharedMemoryError::FileExists { .. })));
    // A size whose trailer would lie past the end of the address space.
    let huge = std::panic::catch_unwind(|| SharedMemory::create(&unique("huge"), usize::MAX).map(|s| s.size()));
    assert!(huge.expect("create of usize::MAX bytes panicked").is_err());
}
