//! `RedisPool::imap` starts its work when it is called, as `Pool::imap`
//! and Python's do: the tasks run on the worker hosts while the caller does
//! something else before the first `next`. Ported from multiproc's
//! tests/pool_imap_eager.rs.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{local_worker, pool, server};

/// Generous bound for waits that should finish quickly (loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(30);

/// Writes a file at `path`: proof that the task ran.
fn mark(path: String) -> String {
    std::fs::write(&path, b"started").expect("the marker directory is writable");
    path
}

/// A fresh directory for one case's markers (removed by the caller).
fn marker_dir(case: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("multiproc-redis-imap-eager-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
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
    let server = server();
    let _w = local_worker(&server, "imapeager", 2);
    let pool = pool(&server, "imapeager").connect().unwrap();
    for unordered in [false, true] {
        let dir = marker_dir(if unordered { "unordered" } else { "ordered" });
        let paths: Vec<String> = (0..4).map(|i| dir.join(i.to_string()).to_string_lossy().into_owned()).collect();
        let it = if unordered { pool.imap_unordered(mark, paths.clone()) } else { pool.imap(mark, paths.clone()) };
        let started = all_marked(&paths);
        let mut got: Vec<String> = std::iter::from_fn({
            let mut it = it;
            move || it.next_timeout(WAIT)
        })
        .map(Result::unwrap)
        .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(started, "imap (unordered: {unordered}) ran no task before its iterator was advanced");
        got.sort();
        assert_eq!(got, paths);
    }
    pool.close();
    pool.join_timeout(WAIT).unwrap();
}
