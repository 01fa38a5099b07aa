//! `RedisPool::imap` starts its work when it is called, as `Pool::imap`
//! and Python's do: the tasks run on the worker hosts while the caller does
//! something else before the first `next`. Ported from multiproc's
//! tests/pool_imap_eager.rs.

mod support;

use std::time::Duration;

use multiproc_test_support::{all_marked, mark, marker_dir, markers};
use support::{local_worker, pool, server};

/// Generous bound for waits that should finish quickly (loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn imap_and_imap_unordered_run_tasks_before_the_first_next() {
    let server = server();
    let _w = local_worker(&server, "imapeager", 2);
    let pool = pool(&server, "imapeager").connect().unwrap();
    for unordered in [false, true] {
        let dir = marker_dir("redis-imap-eager", if unordered { "unordered" } else { "ordered" });
        let paths = markers(&dir, 4);
        let it = if unordered { pool.imap_unordered(mark, paths.clone()) } else { pool.imap(mark, paths.clone()) };
        let started = all_marked(&paths, WAIT);
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
