//! The temporary directory of a `RedisServer`: removed on drop, and
//! removed by the next start when its owner died without dropping it.

use std::path::Path;
use std::time::{Duration, Instant};

use multiproc::{Process, StartMethod};
use multiproc_redis::RedisServer;

/// The body of a process that starts a server and ends without dropping
/// it, as a process killed or ended by `exit` does: its redis-server dies
/// with it, its directory stays. Returns the directory.
fn start_and_forget() -> String {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("this test needs redis-server: {e}"));
    let dir = server.dir().display().to_string();
    std::mem::forget(server);
    dir
}

#[test]
fn a_dropped_server_leaves_no_directory() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("this test needs redis-server: {e}"));
    let dir = server.dir().to_path_buf();
    assert!(dir.join("appendonlydir").is_dir(), "{dir:?}");
    drop(server);
    assert!(!dir.exists(), "{dir:?} is still there");
}

#[test]
fn the_directory_of_a_process_that_died_without_drop_is_removed_by_the_next_start() {
    let mut child = Process::builder()
        .start_method(StartMethod::Spawn)
        .name("forgets-its-server")
        .spawn(start_and_forget, ())
        .unwrap();
    let dir = child.join_timeout(Duration::from_secs(30)).unwrap();
    let dir = Path::new(&dir);
    let owner = format!("multiproc-redis-{}-", child.pid().unwrap());
    assert!(dir.file_name().unwrap().to_str().unwrap().starts_with(&owner), "{dir:?}");
    assert!(dir.is_dir(), "the child's server left no directory: {dir:?}");
    // The child's redis-server dies with it (a moment after); a start
    // removes the directory once nothing writes in it any more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.exists() && Instant::now() < deadline {
        drop(RedisServer::start().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.exists(), "{dir:?} outlived its owner");
}
