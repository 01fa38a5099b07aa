//! Messages carrying more descriptors than one `sendmsg` takes (64): a
//! hundred shared objects as a task's arguments, in a message on a pipe, and
//! in a child's result, as Python passes any number of them.

use std::time::Duration;

use multiproc::{Connection, ConnectionError, Pipe, Process, ProcessError, RawValue, SendFd};

mod process_support;

use process_support::{JOIN, METHODS, count_fds, join_or_kill, serial};

fn values(n: u64) -> Vec<RawValue<u64>> {
    (0..n).map(|i| RawValue::new(i).unwrap()).collect()
}

fn sum_and_bump(values: Vec<RawValue<u64>>) -> u64 {
    let sum = values.iter().map(RawValue::get).sum();
    for v in &values {
        v.set(v.get() + 1000);
    }
    sum
}

#[test]
fn a_task_may_take_hundreds_of_shared_objects_under_every_start_method() {
    let _serial = serial();
    for method in METHODS {
        let vals = values(300);
        let child = Process::builder().start_method(method).spawn(sum_and_bump, (vals.clone(),)).unwrap();
        assert_eq!(join_or_kill(child), (0..300).sum::<u64>(), "{method:?}");
        assert!(vals.iter().enumerate().all(|(i, v)| v.get() == i as u64 + 1000), "{method:?}: the child's writes");
    }
}

fn open_many(n: usize) -> Vec<SendFd> {
    (0..n).map(|_| SendFd::from(std::fs::File::open("/dev/null").unwrap())).collect()
}

#[test]
fn a_child_may_return_hundreds_of_descriptors() {
    let _serial = serial();
    let child = Process::spawn(open_many, (200,)).unwrap();
    assert_eq!(join_or_kill(child).len(), 200);
}

fn sum_over_pipe(conn: Connection<Vec<RawValue<u64>>>) -> u64 {
    let values = conn.recv_timeout(JOIN).unwrap();
    values.iter().map(RawValue::get).sum()
}

#[test]
fn a_message_on_a_pipe_may_carry_hundreds_of_descriptors_small_or_large() {
    let _serial = serial();
    let (ours, theirs) = Pipe::<Vec<RawValue<u64>>>::duplex().unwrap();
    let child = Process::spawn(sum_over_pipe, (theirs,)).unwrap();
    ours.send(&values(500)).unwrap();
    assert_eq!(join_or_kill(child), (0..500).sum::<u64>());

    // A payload large enough to travel out of band, with its descriptors.
    let (a, b) = Pipe::<(Vec<u8>, Vec<SendFd>)>::duplex().unwrap();
    a.send(&(vec![7u8; 1 << 20], open_many(150))).unwrap();
    let (bytes, fds) = b.recv_timeout(JOIN).unwrap();
    assert_eq!((bytes.len(), fds.len()), (1 << 20, 150));
}

/// Raises this process's soft open-files limit to at least `want` (as far as
/// the hard limit allows); false if it cannot.
fn allow_open_files(want: u64) -> bool {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into `limit`, a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    if limit.rlim_cur >= want {
        return true;
    }
    if limit.rlim_max < want {
        return false;
    }
    limit.rlim_cur = want;
    // SAFETY: setrlimit reads `limit`, a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 }
}

#[test]
fn too_many_descriptors_is_a_clear_error_and_the_connection_goes_on() {
    // Counts this process's descriptors: no other test of this binary may
    // open or close any meanwhile.
    let _serial = serial();
    if !allow_open_files(4096) {
        eprintln!("skipped: the open-files limit is below 4096");
        return;
    }
    let (a, b) = Pipe::<Vec<SendFd>>::duplex().unwrap();
    let before = count_fds();
    match a.send(&open_many(1000)) {
        Err(ConnectionError::Wire(e)) => {
            let text = e.to_string();
            assert!(text.contains("1000 handles") && text.contains("several messages"), "{text}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(count_fds(), before, "descriptors left open");
    a.send(&open_many(3)).unwrap();
    assert_eq!(b.recv_timeout(Duration::from_secs(10)).unwrap().len(), 3);
}

#[test]
fn a_result_that_cannot_be_sent_back_is_a_failure_that_says_why() {
    if !allow_open_files(4096) {
        eprintln!("skipped: the open-files limit is below 4096");
        return;
    }
    let _serial = serial();
    let child = Process::builder().start_method(multiproc::StartMethod::Spawn).spawn(open_many, (1000,)).unwrap();
    let mut child = child;
    match child.join_timeout(JOIN) {
        Err(ProcessError::Failed(why)) => assert!(why.contains("result") && why.contains("1000 handles"), "{why}"),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    assert_eq!(child.exitcode(), Some(1));
}
