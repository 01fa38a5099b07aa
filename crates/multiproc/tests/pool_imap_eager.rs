//! `imap` starts its work when it is called, as Python's does (its task
//! handler reads the input in the background): tasks run while the caller
//! does something else before the first `next`.

mod pool_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use multiproc::{Executor, Pool};
use pool_support::WAIT;

/// Writes a file at `path`: proof that the task ran.
fn mark(path: String) -> String {
    std::fs::write(&path, b"started").expect("the marker directory is writable");
    path
}

/// A fresh directory for one case's markers (removed by the caller).
fn marker_dir(case: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("multiproc-imap-eager-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

fn markers(dir: &Path) -> Vec<String> {
    (0..4).map(|i| dir.join(i.to_string()).to_string_lossy().into_owned()).collect()
}

/// Waits (at most [`WAIT`]) until every marker exists; true if they all do.
fn all_marked(paths: &[String]) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if paths.iter().all(|p| Path::new(p).exists()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn imap_and_imap_unordered_run_tasks_before_the_first_next() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    for unordered in [false, true] {
        let dir = marker_dir(if unordered { "unordered" } else { "ordered" });
        let paths = markers(&dir);
        let it = if unordered { pool.imap_unordered(mark, paths.clone()) } else { pool.imap(mark, paths.clone()) };
        let started = all_marked(&paths);
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
    let dir = marker_dir("executor");
    let paths = markers(&dir);
    let it = ex.map(mark, paths.clone()).unwrap();
    let started = all_marked(&paths);
    let got: Vec<String> = it.map(Result::unwrap).collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(started, "Executor::map ran no task before its iterator was advanced");
    assert_eq!(got, paths);
    ex.shutdown(true, false);
}
