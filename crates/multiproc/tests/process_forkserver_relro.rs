//! The fork server shares the program's relocated read-only data with its
//! children (a sealed memory file, mapped shared and read-only at the same
//! addresses) instead of private pages copied into each: the server and its
//! children map that one file, the program keeps its own pages, and children
//! that go through the relocated tables (trait objects, formatting, a sort
//! with a closure) compute what they did before.

mod process_support;

use multiproc::{Process, StartMethod};
use process_support::{JOIN, fork_server_pid};

/// A way to write a word.
type Shape = Box<dyn Fn(&str) -> String>;

/// Goes through tables the loader relocated: vtables of boxed closures,
/// formatting, a sort.
fn through_tables(words: Vec<String>) -> String {
    let shapes: Vec<Shape> = vec![Box::new(|w| w.to_uppercase()), Box::new(|w| format!("<{w}>"))];
    let mut out: Vec<String> = words.iter().flat_map(|w| shapes.iter().map(move |f| f(w))).collect();
    out.sort();
    out.join(",")
}

/// The lines of `/proc/<pid>/maps` that map the shared tables.
fn shared_tables(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read the maps");
    maps.lines().filter(|l| l.contains("multiproc-relro")).map(str::to_string).collect()
}

/// In a child: its own mappings of the shared tables.
fn my_shared_tables() -> Vec<String> {
    shared_tables(std::process::id())
}

#[test]
fn the_server_and_its_children_map_the_relocated_tables_shared_and_read_only() {
    let words = vec!["a".to_string(), "b".to_string()];
    let mut p = Process::builder().start_method(StartMethod::ForkServer).spawn(through_tables, (words,)).unwrap();
    assert_eq!(p.join_timeout(JOIN).unwrap(), "<a>,<b>,A,B");

    let server = shared_tables(fork_server_pid() as u32);
    assert_eq!(server.len(), 1, "the fork server maps its tables once: {server:?}");
    let perms = server[0].split_whitespace().nth(1).expect("a permissions field");
    assert_eq!(perms, "r--s", "shared and read-only: {}", server[0]);

    let mut child = Process::builder().start_method(StartMethod::ForkServer).spawn(my_shared_tables, ()).unwrap();
    assert_eq!(child.join_timeout(JOIN).unwrap(), server, "a child maps the server's file, at the same place");
    assert!(shared_tables(std::process::id()).is_empty(), "the program keeps its own pages");
}
