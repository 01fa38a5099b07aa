//! `imap` starts its work when it is called, as Python's does (its task
//! handler reads the input in the background): tasks run while the caller
//! does something else before the first `next`.

mod pool_support;

use multiproc::{Executor, Pool};
use multiproc_test_support::{all_marked, mark, marker_dir, markers};
use pool_support::WAIT;

/// Names this test's marker directories.
const TEST: &str = "imap-eager";

#[test]
fn imap_and_imap_unordered_run_tasks_before_the_first_next() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    for unordered in [false, true] {
        let dir = marker_dir(TEST, if unordered { "unordered" } else { "ordered" });
        let paths = markers(&dir, 4);
        let it = if unordered { pool.imap_unordered(mark, paths.clone()) } else { pool.imap(mark, paths.clone()) };
        let started = all_marked(&paths, WAIT);
        let mut got: Vec<String> = it.map(Result::unwrap).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(started, "imap (unordered: {unordered}) ran no task before its iterator was advanced");
        got.sort();
        assert_eq!(got, paths);
    }
    pool.close();
    pool.join_timeout(WAIT).unwrap();
}

#[test]
fn executor_map_runs_tasks_before_the_first_next() {
    let _watchdog = pool_support::watchdog();
    let ex = Executor::new(2).unwrap();
    let dir = marker_dir(TEST, "executor");
    let paths = markers(&dir, 4);
    let it = ex.map(mark, paths.clone()).unwrap();
    let started = all_marked(&paths, WAIT);
    let got: Vec<String> = it.map(Result::unwrap).collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(started, "Executor::map ran no task before its iterator was advanced");
    assert_eq!(got, paths);
    ex.shutdown(true, false);
}
