//! Seed 003's Event, Value and Array examples run across real processes and
//! show what the Python programs show.

use std::time::Duration;

use multiproc_seeds::seed_003_sync;

#[test]
fn event_wait_blocks_one_child_and_times_out_the_other() {
    let report = seed_003_sync::event_wait().unwrap();
    let o = &report.outcome;
    assert!(o.block_saw_set, "the child without a timeout returns once the parent sets the event");
    assert!(!o.nonblock_saw_set, "the child with a timeout gives up before the event is set");
    assert!(o.nonblock_waited >= o.timeout, "waited {:?}, less than its timeout", o.nonblock_waited);
    // Not until the event was set: the parent sets it only after this
    // child has returned, so any bound is about slack (generous: a loaded
    // machine may be slow to wake the child).
    assert!(o.nonblock_waited < o.timeout + Duration::from_secs(3), "waited {:?}", o.nonblock_waited);
    assert_eq!(
        report.lines,
        [
            "main: waiting before calling Event.set()",
            "wait_for_event_timeout: starting",
            "wait_for_event_timeout: e.is_set()-> false",
            "main: event is set",
            "wait_for_event: starting",
            "wait_for_event: e.is_set()-> true",
        ]
    );
}

#[test]
fn shared_value_and_array_written_by_a_child_are_seen_by_the_parent() {
    let report = seed_003_sync::shared_value_array().unwrap();
    assert_eq!(report.outcome.value, (10.0, 10.78));
    assert_eq!(report.outcome.array, (vec![1, 2, 3, 4, 5], vec![1, 2, 9999, 4, 5]));
    assert_eq!(report.lines, ["10.0", "10.78", "[1, 2, 3, 4, 5]", "[1, 2, 9999, 4, 5]"]);
}

#[test]
fn the_tour_lists_both_examples() {
    for name in ["event_wait", "shared_value_array"] {
        let e = multiproc_seeds::example(name).unwrap_or_else(|| panic!("{name} is in the tour"));
        assert_eq!(e.seed, "003");
        assert!(!(e.run)().unwrap().is_empty());
    }
}

#[test]
fn globals_changed_by_children_stay_in_each_child() {
    use multiproc_seeds::seed_globals::globals_not_shared;
    // Twice: the second run must show the same (the parent's globals start
    // over, and the children never saw them).
    for _ in 0..2 {
        let report = globals_not_shared().unwrap();
        let o = &report.outcome;
        assert_eq!(o.child_list, ["+++", "1", "2", "3"], "the child changed its own list");
        assert_ne!(o.child_pid, std::process::id(), "adddata ran in a child");
        assert_eq!(o.parent_list, ["+++", "a", "b", "c"], "the child's appends did not reach the parent");
        let names: Vec<String> = (0..10).map(|i| format!("process_{i}")).collect();
        assert_eq!(o.counts.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), names);
        assert!(o.counts.iter().all(|(_, c)| *c == 1), "each child counted from its own 0: {:?}", o.counts);
        assert_eq!(o.parent_count, 0, "the children's count += 1 did not reach the parent");
        assert_eq!(report.lines.last().unwrap(), "this main process: count:0");
    }
    assert_eq!(multiproc_seeds::example("globals_not_shared").unwrap().seed, "003");
}
