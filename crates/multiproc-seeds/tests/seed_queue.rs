//! The queue programs of seeds 001–004 run across real processes and show
//! what the Python programs show.

use multiproc_seeds::seed_queue;

#[test]
fn three_producers_and_the_parent_exchange_three_messages() {
    let report = seed_queue::queue_producers().unwrap();
    assert_eq!(
        report.outcome,
        ["I am 0, talking through a Queue", "I am 1, talking through a Queue", "I am 2, talking through a Queue"]
    );
    assert_eq!(report.lines.len(), 3 + 1 + 3 + 1);
    assert_eq!(report.lines[3], "the parent gets the Queue's data");
}

#[test]
fn two_writers_two_readers_every_value_once_and_readers_terminated() {
    let report = seed_queue::queue_writers_readers().unwrap();
    let o = &report.outcome;
    assert_eq!(o.got, [1, 2, 3, 4, 5, 6], "each value got exactly once");
    assert_eq!(o.per_reader.iter().sum::<usize>(), 6);
    assert_eq!(o.reader_exit_codes, [Some(-15), Some(-15)], "readers end by SIGTERM");
    assert_eq!(report.lines.iter().filter(|l| l.contains(":Put ")).count(), 6);
    assert_eq!(report.lines.iter().filter(|l| l.contains(":Get ")).count(), 6);
}

#[test]
fn pool_workers_share_a_plain_queue() {
    let report = seed_queue::pool_shared_queue().unwrap();
    let o = &report.outcome;
    assert_eq!(o.written, [0, 1, 2, 3, 4]);
    assert_eq!(o.read, [0, 1, 2, 3, 4], "the reader tasks got what the writer tasks put");
    assert!((1..=2).contains(&o.worker_pids.len()), "a pool of 2 ran the tasks: {:?}", o.worker_pids);
    assert!(!o.worker_pids.contains(&o.parent_pid), "the tasks ran in the pool's workers, not the parent");
    assert_eq!(o.parent_pid, std::process::id());
}

#[test]
fn an_object_through_a_queue_runs_its_method_in_the_child() {
    let report = seed_queue::queue_object().unwrap();
    let (said, child_name) = &report.outcome;
    assert!(child_name.starts_with("Process-"), "{child_name}");
    assert_eq!(said, &format!("Doing something fancy in {child_name} for Fancy Dan!"));
    assert_eq!(report.lines, std::slice::from_ref(said));
}

#[test]
fn joinable_queue_join_returns_after_every_task_and_pill_is_done() {
    let report = seed_queue::joinable_queue().unwrap();
    let o = &report.outcome;
    let mut expected: Vec<String> = (0..10).map(|i| format!("{i} * {i} = {}", i * i)).collect();
    expected.sort();
    assert_eq!(o.results, expected);
    assert_eq!(o.unfinished_after_join, 0);
    assert_eq!(o.exited_on_pill, o.consumers, "one poison pill per consumer");
    assert_eq!(o.consumers, multiproc::cpu_count() * 2);
}

#[test]
fn two_files_hold_the_records_forward_and_each_reversed() {
    let dir = std::env::temp_dir().join(format!("multiproc-seed-queue-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = seed_queue::queue_two_files_in(&dir);
    let files_existed = dir.join("forward.txt").is_file() && dir.join("reversed.txt").is_file();
    std::fs::remove_dir_all(&dir).unwrap();
    let report = report.unwrap();
    assert!(files_existed, "both files are real files");
    let records = seed_queue::dialogues();
    let forward: String = records.iter().map(|r| r.concat() + "\n").collect();
    let reversed: String = records.iter().map(|r| r.iter().rev().cloned().collect::<String>() + "\n").collect();
    assert_eq!(report.outcome.forward_text, forward);
    assert_eq!(report.outcome.reversed_text, reversed);
    assert_eq!(report.outcome.records_written_by_child, records.len());
}

#[test]
fn the_tour_lists_the_queue_examples() {
    for (name, seed) in [
        ("queue_producers", "001"),
        ("queue_writers_readers", "002"),
        ("pool_shared_queue", "002"),
        ("queue_object", "003"),
        ("joinable_queue", "003"),
        ("queue_two_files", "004"),
    ] {
        let e = multiproc_seeds::example(name).unwrap_or_else(|| panic!("{name} is in the tour"));
        assert_eq!(e.seed, seed);
    }
    // The tour's variant of the two-files example cleans up after itself.
    let lines = (multiproc_seeds::example("queue_two_files").unwrap().run)().unwrap();
    assert_eq!(lines.len(), 2);
}
