//! A relative working directory is resolved against the parent's directory at
//! the time of the start, under every start method, also after the parent
//! changed directory. (Its own binary: the test changes this process's
//! directory.)

mod process_support;

use std::path::PathBuf;

use multiproc::{Process, StartMethod};
use process_support::{JOIN, METHODS, TempDir};

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap()
}

#[test]
fn a_relative_working_directory_follows_the_parents_directory() {
    // Start the fork server first, from the original directory.
    Process::builder().start_method(StartMethod::ForkServer).spawn(cwd, ()).unwrap().join_timeout(JOIN).unwrap();
    let original = std::env::current_dir().unwrap();

    let dir = TempDir::new("relative-cwd");
    std::fs::create_dir(dir.0.join("sub")).unwrap();
    let base = dir.0.canonicalize().unwrap();
    std::env::set_current_dir(&base).unwrap();
    let outcome: Vec<_> = METHODS
        .iter()
        .map(|m| {
            let relative = Process::builder().start_method(*m).current_dir("sub").spawn(cwd, ());
            let inherited = Process::builder().start_method(*m).spawn(cwd, ());
            (*m, relative.and_then(|mut p| p.join_timeout(JOIN)), inherited.and_then(|mut p| p.join_timeout(JOIN)))
        })
        .collect();
    std::env::set_current_dir(original).unwrap();

    for (method, relative, inherited) in outcome {
        assert_eq!(relative.unwrap_or_else(|e| panic!("{method:?}: {e}")), base.join("sub"), "{method:?}");
        assert_eq!(inherited.unwrap_or_else(|e| panic!("{method:?}: {e}")), base, "{method:?}");
    }
}
