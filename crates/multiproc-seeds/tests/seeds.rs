//! Every seed example runs and shows what it should: real pids, real exit
//! codes, real messages.

use std::collections::HashSet;
use std::time::Duration;

use multiproc_seeds::{EXAMPLES, seed_000, seed_001, seed_003};

#[test]
fn five_children_have_distinct_pids_that_are_not_the_parents() {
    let report = seed_000::five_children().unwrap();
    let o = &report.outcome;
    assert_eq!(o.parent_pid as u32, std::process::id());
    assert_eq!(o.children.len(), 5);
    let pids: HashSet<i32> = o.children.iter().map(|c| c.pid).collect();
    assert_eq!(pids.len(), 5, "distinct pids: {:?}", o.children);
    for c in &o.children {
        assert!(c.pid > 0 && c.pid != o.parent_pid, "{c:?}");
        assert_eq!(c.own_pid, c.pid, "the child saw the pid its handle reports");
        assert_eq!(c.parent_pid, o.parent_pid, "the child saw us as its parent");
    }
    assert_eq!(o.exit_codes, vec![Some(0); 5]);
    assert_eq!(report.lines.first().unwrap(), &format!("Parent process {} is Running", o.parent_pid));
    for (i, c) in o.children.iter().enumerate() {
        assert!(report.lines.contains(&format!("Child process {i} {} Running", c.pid)), "{:?}", report.lines);
    }
    assert_eq!(report.lines.last().unwrap(), "Process close");
}

#[test]
fn process_kinds_run_a_function_and_a_run_type() {
    let report = seed_001::process_kinds().unwrap();
    let o = &report.outcome;
    assert_eq!(o.from_functions.len(), 5);
    assert_eq!(o.from_types.len(), 5);
    for (i, line) in o.from_functions.iter().chain(&o.from_types).enumerate() {
        assert!(line.starts_with(&format!("testing Python {} multiprocessing in Process-", i % 5)), "{line}");
    }
    // Every child ran in its own process, each with its own default name.
    let names: HashSet<&str> =
        o.from_functions.iter().chain(&o.from_types).map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert_eq!(names.len(), 10);
    assert_eq!(o.exit_codes, vec![Some(0); 10]);
}

#[test]
fn pipe_ping_pong_exchanges_every_message_in_order() {
    let report = seed_001::pipe_ping_pong().unwrap();
    let o = &report.outcome;
    assert_eq!(o.parent_received, ["hello, parent", "thanks for \"hello, child\"", "pong 1", "pong 2", "pong 3"]);
    assert_eq!(o.child_received, ["hello, child", "ping 1", "ping 2", "ping 3"]);
}

#[test]
fn named_processes_see_their_names() {
    let report = seed_003::named_processes().unwrap();
    let p = &report.outcome.processes;
    assert_eq!(p.len(), 3);
    assert_eq!(p[0], ("worker 1".to_string(), "worker 1".to_string()));
    assert!(p[1].0.starts_with("Process-") && p[1].0 == p[1].1, "{:?}", p[1]);
    assert_eq!(p[2], ("my_service".to_string(), "my_service".to_string()));
    assert!(report.lines.contains(&"my_service Exiting".to_string()));
}

#[test]
fn daemon_outlives_join_timeout_and_non_daemon_finishes() {
    let report = seed_003::daemon_join_timeout().unwrap();
    let o = &report.outcome;
    assert!(o.timed_out);
    // At least the 500 ms asked for; well under the daemon's 10 s of work
    // (room for a loaded machine).
    assert!(o.waited >= Duration::from_millis(500) && o.waited < Duration::from_secs(5), "{:?}", o.waited);
    assert!(o.alive_after_timeout);
    assert_eq!(o.non_daemon_exitcode, Some(0));
    assert_eq!(o.daemon_exitcode, Some(-15));
    assert_eq!(report.lines[0], "Starting: daemon");
    assert!(report.lines.contains(&"Exiting : non-daemon".to_string()));
    assert!(!report.lines.iter().any(|l| l.starts_with("Exiting : daemon")), "{:?}", report.lines);
}

#[test]
fn terminate_then_join_collects_minus_15() {
    let report = seed_003::terminate_join().unwrap();
    let o = &report.outcome;
    assert!(o.worker_started);
    assert!(!o.alive[0], "not alive before start");
    assert!(o.alive[1], "alive while running");
    assert!(!o.alive[3], "not alive after join");
    assert_eq!(o.exitcode, Some(-15));
    assert!(!report.lines.iter().any(|l| l == "Finished worker"));
}

#[test]
fn exit_codes_are_pythons() {
    let report = seed_003::exit_codes().unwrap();
    let codes: Vec<(&str, Option<i32>)> = report.outcome.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    assert_eq!(
        codes,
        [
            ("exit_error", Some(1)),
            ("exit_ok", Some(0)),
            ("return_value", Some(0)), // a function's return value is not its exit code
            ("raises", Some(1)),
            ("terminated", Some(-15)),
        ]
    );
    assert_eq!(report.lines[2], "   return_value.exitcode = Some(0)");
    assert_eq!(report.lines[4], "     terminated.exitcode = Some(-15)");
}

#[test]
fn every_example_in_the_tour_runs() {
    let mut names = HashSet::new();
    for example in EXAMPLES {
        assert!(names.insert(example.name), "duplicate example {}", example.name);
        let lines = (example.run)().unwrap_or_else(|e| panic!("{} failed: {e}", example.name));
        assert!(!lines.is_empty(), "{} printed nothing", example.name);
        // Each example has its runnable examples/NAME.rs.
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(format!("{}.rs", example.name));
        assert!(file.exists(), "{} has no {}", example.name, file.display());
    }
    assert!(multiproc_seeds::example("five_children").is_some());
    assert!(multiproc_seeds::example("no_such_example").is_none());
}

#[test]
fn logging_shows_the_childs_life_with_its_name() {
    let report = multiproc_seeds::seed_003_logging::logging().unwrap();
    let o = &report.outcome;
    assert_eq!(o.stdout, ["Doing some work"]);
    assert_eq!(
        o.stderr,
        [
            "[INFO/Process-1] child process started, running its task",
            "[INFO/Process-1] process exiting with exitcode 0",
            "[INFO/MainProcess] process exiting with exitcode 0",
        ]
    );
}
