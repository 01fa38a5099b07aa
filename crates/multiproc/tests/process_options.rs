//! Builder options a child cannot use — a working directory that is not
//! there, an environment variable name the OS cannot hold, an executable
//! that does not exist — are refused by `start` with an error naming the
//! option, under every start method (the child used to die of them with
//! exit code 1, or the OS error named no path).

mod process_support;

use multiproc::{Process, ProcessBuilder, ProcessError};
use process_support::{JOIN, METHODS, serial};

fn seven() -> u32 {
    7
}

/// The error `start` gives for `builder`, as text (panics if it started).
fn refusal(builder: ProcessBuilder) -> String {
    match builder.spawn(seven, ()) {
        Err(ProcessError::Start(e)) => e.to_string(),
        Err(other) => panic!("not a start error: {other}"),
        Ok(mut child) => panic!("started, joined: {:?}", child.join_timeout(JOIN).map_err(|e| e.to_string())),
    }
}

#[test]
fn a_missing_working_directory_is_refused_naming_it() {
    let _serial = serial();
    for method in METHODS {
        let why = refusal(Process::builder().start_method(method).current_dir("/no/such/dir-mp"));
        assert!(why.contains("/no/such/dir-mp") && why.contains("working directory"), "{method:?}: {why}");
    }
}

#[test]
fn environment_names_the_os_cannot_hold_are_refused_naming_them() {
    let _serial = serial();
    for method in METHODS {
        for (key, value) in [("A=B", "x"), ("", "x"), ("A\0B", "x"), ("OK_NAME", "nul\0inside")] {
            let why = refusal(Process::builder().start_method(method).env(key, value));
            assert!(why.contains("environment variable") && why.contains(&format!("{key:?}")), "{method:?}: {why}");
        }
        let why = refusal(Process::builder().start_method(method).env_remove("A=B"));
        assert!(why.contains("\"A=B\""), "{method:?}: {why}");
    }
}

#[test]
fn a_missing_executable_is_refused_naming_it() {
    let why = refusal(Process::builder().executable("/no/such/exe-mp"));
    assert!(why.contains("/no/such/exe-mp"), "{why}");
}

#[test]
fn a_relative_executable_is_found_from_the_childs_working_directory() {
    let exe = std::env::current_exe().unwrap();
    let (dir, file) = (exe.parent().unwrap(), exe.file_name().unwrap());
    let mut child = Process::builder().current_dir(dir).executable(file).spawn(seven, ()).unwrap();
    assert_eq!(child.join_timeout(JOIN).unwrap(), 7);
}

#[test]
fn valid_options_still_run() {
    let _serial = serial();
    for method in METHODS {
        let dir = std::env::temp_dir();
        let mut child =
            Process::builder().start_method(method).current_dir(&dir).env("MP_OK", "1").spawn(seven, ()).unwrap();
        assert_eq!(child.join_timeout(JOIN).unwrap(), 7, "{method:?}");
    }
}
