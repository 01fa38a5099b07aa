//! Many children started at once from several threads: every one runs,
//! returns its own value, and the bookkeeping (active children, the fork
//! server) keeps up. `Fork` is left out: it is documented as unsafe in a
//! multi-threaded parent.

mod process_support;

use std::time::Duration;

use multiproc::{Process, StartMethod, active_children};
use process_support::{JOIN, count_zombie_children, wait_until};

fn echo_after(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x
}

#[test]
fn many_children_from_many_threads() {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let method = if t % 2 == 0 { StartMethod::ForkServer } else { StartMethod::Spawn };
                let mut kids: Vec<Process<u64>> = (0..8u64)
                    .map(|i| Process::builder().start_method(method).spawn(echo_after, (t * 100 + i, 50)).unwrap())
                    .collect();
                kids.iter_mut().map(|k| k.join_timeout(JOIN).unwrap()).collect::<Vec<u64>>()
            })
        })
        .collect();
    for (t, handle) in threads.into_iter().enumerate() {
        let got = handle.join().unwrap();
        assert_eq!(got, (0..8).map(|i| t as u64 * 100 + i).collect::<Vec<_>>());
    }
    assert!(wait_until(JOIN, || active_children().is_empty()).is_some(), "{:?}", active_children());
    assert_eq!(count_zombie_children(), 0);
}

#[test]
fn thirty_two_children_alive_at_once() {
    // Each lives 2 s: the first is still alive when the last has started,
    // however slowly a loaded machine starts them.
    let mut kids: Vec<Process<u64>> =
        (0..32u64).map(|i| Process::builder().spawn(echo_after, (i, 2_000)).unwrap()).collect();
    let alive = kids.iter().filter(|k| k.is_alive()).count();
    assert!(alive >= 16, "only {alive} of 32 children alive together");
    let pids: std::collections::HashSet<i32> = kids.iter().map(|k| k.pid().unwrap()).collect();
    assert_eq!(pids.len(), 32);
    for (i, k) in kids.iter_mut().enumerate() {
        assert_eq!(k.join_timeout(JOIN).unwrap(), i as u64);
    }
}
