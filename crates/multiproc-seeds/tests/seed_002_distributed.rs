//! Seed 002's distributed master/worker on Redis: a host killed mid-run,
//! every result exactly once, the other host took over.

use multiproc_seeds::seed_002_distributed::{self, TASKS};

#[test]
fn every_result_arrives_exactly_once_after_a_host_is_killed() {
    let report = seed_002_distributed::redis_master_worker().unwrap();
    let o = report.outcome.expect("redis-server is installed here (CI installs it)");
    assert_eq!(o.results.len() as u64, TASKS);
    for (n, (line, times)) in &o.results {
        assert_eq!(*times, 1, "{line}");
        assert_eq!(line, &format!("{n} * {n} = {}", n * n));
    }
    assert!(o.from_survivor >= (TASKS as usize) / 2, "host-b ran only {} results", o.from_survivor);
    assert_ne!(o.killed_host, o.surviving_host);
    assert!(report.lines.iter().any(|l| l.contains("SIGKILLed")), "{:?}", report.lines);
}
