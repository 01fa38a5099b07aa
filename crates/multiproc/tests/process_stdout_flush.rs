//! A child's output is not lost when it ends: fork-server children end with
//! `_exit` (not running the exit handlers of the image they were forked
//! from), so the library flushes Rust's buffered stdout itself. (Its own
//! binary: it points this process's stdout at a pipe before the fork server
//! starts, so the server and its children write there too.)
//!
//! `Fork` is left out: under libtest, std hands the test's output capture to
//! the threads the test spawns (here the library's launcher thread, which
//! forks), so a `Fork` child's `print!` goes to the harness's buffer in the
//! child's memory, not to stdout. Outside a test harness it goes to stdout
//! and is flushed the same way.

mod process_support;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use multiproc::{Process, StartMethod};
use process_support::JOIN;

/// Prints a line without its newline, which stays in Rust's stdout buffer
/// until something flushes it.
fn print_unterminated(tag: String) {
    print!("[{tag} ends without a newline]");
}

#[test]
fn unterminated_output_of_a_child_reaches_stdout() {
    let (read_end, write_end) = rustix::pipe::pipe().expect("pipe");
    rustix::io::ioctl_fionbio(&read_end, true).expect("non-blocking read end");
    std::io::stdout().flush().unwrap();
    // SAFETY: dup/dup2 only rearrange this process's descriptor table; fd 1
    // is restored below before anything else prints.
    let saved = unsafe { OwnedFd::from_raw_fd(libc::dup(1)) };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::dup2(write_end.as_raw_fd(), 1) }, 1);
    drop(write_end);

    let methods = [StartMethod::ForkServer, StartMethod::Spawn];
    let tags: Vec<String> = methods.iter().map(|m| format!("{m:?}")).collect();
    for (method, tag) in methods.iter().zip(&tags) {
        let mut p = Process::builder().start_method(*method).spawn(print_unterminated, (tag.clone(),)).unwrap();
        p.join_timeout(JOIN).unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }

    std::io::stdout().flush().unwrap();
    // SAFETY: puts the saved stdout back.
    assert_eq!(unsafe { libc::dup2(saved.as_raw_fd(), 1) }, 1);
    // The fork server keeps the pipe open (it is its stdout), so read what is
    // there instead of waiting for the end: every child has exited.
    let mut out = String::new();
    let _ = std::fs::File::from(read_end).read_to_string(&mut out);
    for tag in &tags {
        assert!(out.contains(&format!("[{tag} ends without a newline]")), "{tag}: output lost: {out:?}");
    }
}
