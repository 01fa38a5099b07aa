//! Limits: requests larger than a manager reads (64 MiB) and answers larger
//! than a client reads (256 MiB) are refused with a clear error in the
//! caller, and nothing else of the caller's changes (its connections and
//! the locks it holds stay); a manager out of descriptors waits for them
//! instead of spinning. Every wait is bounded.

use std::time::Duration;

use multiproc::manager::{AcquireError, Lock, Manager, ManagerError, RemoteError};

/// More than the manager reads in one request.
const TOO_BIG: usize = 65 << 20;

#[test]
fn a_request_too_large_is_refused_and_the_callers_locks_stay_held() {
    for m in [Manager::start().unwrap(), Manager::builder().address("tcp:127.0.0.1:0").start().unwrap()] {
        let (d, lock) = (m.dict::<u8, Vec<u8>>().unwrap(), m.lock().unwrap());
        lock.acquire().unwrap().leak();
        let err = d.insert(1, vec![7; TOO_BIG]).unwrap_err();
        assert!(!err.is_connection(), "a request too large broke the connection: {err}");
        assert!(err.to_string().contains("too large") && err.to_string().contains("smaller parts"), "{err}");
        // The caller is still the holder: nobody else may take the lock.
        assert!(held_by_someone(&lock), "the caller's lock was freed");
        // And the manager goes on.
        d.insert(2, vec![1; 1 << 20]).unwrap();
        assert_eq!(d.len().unwrap(), 1);
        assert!(matches!(d.get(&1), Ok(None)), "{:?}", d.get(&1).map(|v| v.map(|v| v.len())));
        let _: Result<(), ManagerError> = lock.release();
        m.shutdown().unwrap();
    }
}

/// True if another thread (on a connection of its own) cannot take `lock`
/// within a moment.
fn held_by_someone(lock: &Lock) -> bool {
    let lock = lock.clone();
    let other = std::thread::spawn(move || match lock.acquire_timeout(Duration::from_millis(300)) {
        Err(AcquireError::Timeout) => true,
        Ok(g) => {
            g.leak();
            false
        }
        Err(_) => false,
    });
    other.join().unwrap()
}

#[test]
fn an_answer_too_large_is_an_error_and_the_callers_locks_stay_held() {
    let m = Manager::start().unwrap();
    let (l, lock) = (m.list::<Vec<u8>>().unwrap(), m.lock().unwrap());
    // Five items of 55 MiB: each fits a request, all together do not fit an answer.
    for i in 0..5 {
        l.push(vec![i; 55 << 20]).unwrap();
    }
    lock.acquire().unwrap().leak();
    match l.to_vec() {
        Err(e @ ManagerError::Remote(RemoteError::AnswerTooLarge { size, limit })) => {
            assert!(size > limit);
            assert!(e.to_string().contains("read the object in parts"), "the error says what to do: {e}");
        }
        Err(e) => panic!("{e}"),
        Ok(v) => panic!("{} items read", v.len()),
    }
    assert!(held_by_someone(&lock), "the caller's lock was freed");
    // The items are there, one at a time.
    assert_eq!(l.get(4).unwrap()[0], 4);
    m.shutdown().unwrap();
}

/// CPU time (user + system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which ends with the last ')'): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Sets the soft limit of open files of process `pid`; returns the old one.
fn set_open_files_limit(pid: i32, limit: u64) -> u64 {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit writes the current limits into `old`, a valid rlimit.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: limit, rlim_max: old.rlim_max };
    // SAFETY: prlimit reads `new`, a valid rlimit, and writes nothing.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

#[test]
fn a_manager_out_of_descriptors_waits_instead_of_spinning() {
    let m = Manager::builder().address("tcp:127.0.0.1:0").authkey(b"fds").start().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    let pid = m.pid().unwrap();
    let multiproc::Address::Tcp(addr) = m.address().clone() else { panic!("not TCP") };
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64;
    let limit = set_open_files_limit(pid, open + 4);
    // Peers that connect and never speak: a few take the manager's last
    // descriptors (until their handshake times out), the rest wait in the
    // listener's backlog, which stays readable while accept fails.
    let peers: Vec<std::net::TcpStream> = (0..16).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200)); // the manager took what it could
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    drop(peers);
    set_open_files_limit(pid, limit);
    assert!(used < 30, "the manager used {used} ticks of CPU in one idle second");
    // It accepts again once descriptors are free.
    Manager::connect(m.address(), Some(b"fds")).unwrap();
    d.insert(1, 1).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(1));
    m.shutdown().unwrap();
}
