//! The manager seed examples: exact counts from ten processes, a child's
//! writes seen by the parent, and every result of the distributed
//! master/worker collected exactly once.

use multiproc_seeds::seed_manager::{self, INCREMENTS};

#[test]
fn ten_processes_mutate_the_dict_and_list_with_exact_counts() {
    let report = seed_manager::manager_dict_list().unwrap();
    let o = &report.outcome;
    let count = o.dict.iter().find(|(k, _)| k == "count").map(|(_, v)| *v);
    assert_eq!(count, Some(10 * INCREMENTS), "{:?}", o.dict);
    for i in 0..10u64 {
        assert!(o.dict.contains(&(i.to_string(), i)), "{:?}", o.dict);
    }
    assert_eq!(o.dict.len(), 11, "0..9 (\"2\" included) and count: {:?}", o.dict);
    assert_eq!(&o.list[..5], [0, 1, 2, 3, 4]);
    let mut appended = o.list[5..].to_vec();
    appended.sort();
    assert_eq!(appended, (0..10).collect::<Vec<_>>());
    assert!(report.lines[2].starts_with(&format!("count = {}", 10 * INCREMENTS)));
}

#[test]
fn a_child_writes_the_dict_and_list_the_parent_reads() {
    let report = seed_manager::manager_written_by_child().unwrap();
    let o = &report.outcome;
    assert_eq!(o.list, [0, 1, 2, 3, 4, 11, 22, 33]);
    assert_eq!(o.dict, [("index1".to_string(), "aaaaaa".to_string()), ("index2".to_string(), "bbbbbb".to_string())]);
}

#[test]
fn distributed_workers_answer_every_task_exactly_once() {
    let report = seed_manager::distributed_master_worker().unwrap();
    let o = &report.outcome;
    assert_eq!(o.tasks.len(), 10);
    let mut answered: Vec<u64> = o.results.iter().map(|r| r.0).collect();
    answered.sort();
    let mut tasks = o.tasks.clone();
    tasks.sort();
    assert_eq!(answered, tasks);
    assert!(o.results.iter().all(|&(n, sq, w)| sq == n * n && w < 2));
    assert_eq!(o.per_worker.iter().sum::<u32>(), 10);
    assert!(report.lines[0].starts_with("master serving on tcp:127.0.0.1:"));
}
