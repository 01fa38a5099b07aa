//! Marker files: proof, visible from the test, that tasks ran in other
//! processes (a pool's workers, a remote worker host on this machine) before
//! their results were asked for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Writes a file at `path` and returns the path: a task (pass it to a
/// pool's `map`, `imap`, ...) whose file proves that it ran.
///
/// # Panics
///
/// If the file cannot be written (the marker directory is gone or not
/// writable).
pub fn mark(path: String) -> String {
    std::fs::write(&path, b"started").expect("the marker directory is writable");
    path
}

/// A fresh, empty directory for the markers of one case of test `test`:
/// `multiproc-<test>-<pid>-<case>` in the temporary directory (emptied
/// first if a crashed run left it). The caller removes it.
///
/// # Panics
///
/// If the directory cannot be made.
pub fn marker_dir(test: &str, case: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("multiproc-{test}-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("cannot make the marker directory");
    dir
}

/// The paths of `count` markers in `dir` (named 0, 1, ...), none written
/// yet: the arguments for [`mark`].
pub fn markers(dir: &Path, count: usize) -> Vec<String> {
    (0..count).map(|i| dir.join(i.to_string()).to_string_lossy().into_owned()).collect()
}

/// Waits at most `wait` until every marker of `paths` exists; true if they
/// all do. Give `wait` seconds of room: the tasks run on a loaded machine.
pub fn all_marked(paths: &[String], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
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
