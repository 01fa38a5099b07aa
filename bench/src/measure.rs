//! Sampling and statistics, shared by every workload.
//!
//! The subjects of one workload (multiproc, its floor, CPython) are measured
//! **interleaved**: round after round, each subject in turn takes samples for
//! a short time slice. On a shared, noisy machine every subject then sees the
//! same conditions, so the ratios hold even when absolute times drift.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::BenchError;

/// How long to measure one workload.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Untimed samples each subject takes first (first fork-server start,
    /// page faults, caches).
    pub warmup: usize,
    /// Rounds continue until this much time has passed...
    pub budget: Duration,
    /// ...and every subject has at least this many samples...
    pub min_samples: usize,
    /// ...but a subject never takes more than this many.
    pub max_samples: usize,
    /// In each round a subject samples for about this long (at least once).
    pub slice: Duration,
}

impl Plan {
    /// `warmup` untimed samples per subject, then rounds of `slice_ms` per
    /// subject for `budget_secs` in all, with `min`..=`max` samples each.
    pub fn new(warmup: usize, budget_secs: f64, min: usize, max: usize, slice_ms: u64) -> Plan {
        Plan {
            warmup,
            budget: Duration::from_secs_f64(budget_secs),
            min_samples: min,
            max_samples: max,
            slice: Duration::from_millis(slice_ms),
        }
    }
}

/// Something measured: each call to `sample` does one timed unit of work
/// (checking its result) and returns the figure, in the row's unit.
pub trait Subject {
    /// One timed, checked unit of work.
    fn sample(&mut self) -> Result<f64, BenchError>;
}

impl<F: FnMut() -> Result<f64, BenchError>> Subject for F {
    fn sample(&mut self) -> Result<f64, BenchError> {
        self()
    }
}

/// Measures `subjects` interleaved as `plan` says; returns their statistics
/// in the same order. Errors name the subject that failed.
pub fn interleave(plan: &Plan, subjects: &mut [(&str, &mut dyn Subject)]) -> Result<Vec<Stats>, BenchError> {
    let named = |name: &str, e: BenchError| BenchError::new(format!("{name}: {e}"));
    for (name, subject) in subjects.iter_mut() {
        for _ in 0..plan.warmup {
            subject.sample().map_err(|e| named(name, e))?;
        }
    }
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
    let start = Instant::now();
    loop {
        let enough_time = start.elapsed() >= plan.budget;
        let all_min = values.iter().all(|v| v.len() >= plan.min_samples);
        let all_max = values.iter().all(|v| v.len() >= plan.max_samples);
        if all_max || (enough_time && all_min) {
            break;
        }
        for ((name, subject), taken) in subjects.iter_mut().zip(values.iter_mut()) {
            // After the budget, only the subjects still short of `min` go on.
            if taken.len() >= plan.max_samples || (enough_time && taken.len() >= plan.min_samples) {
                continue;
            }
            let slice_start = Instant::now();
            loop {
                taken.push(subject.sample().map_err(|e| named(name, e))?);
                if taken.len() >= plan.max_samples || slice_start.elapsed() >= plan.slice {
                    break;
                }
            }
        }
    }
    Ok(values.into_iter().map(Stats::of).collect())
}

/// Summary of one figure's samples. The figure reported is the median, which
/// shrugs off the outliers a shared 2-core machine produces.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Number of samples.
    pub n: usize,
    /// Median sample: the figure reported.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Stats {
    /// Summarises `values` (must not be empty).
    pub fn of(mut values: Vec<f64>) -> Stats {
        assert!(!values.is_empty(), "a figure needs at least one sample");
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
        let mean = values.iter().sum::<f64>() / n as f64;
        Stats { n, median, min: values[0], max: values[n - 1], mean }
    }

    /// The reported figure (the median).
    pub fn value(&self) -> f64 {
        self.median
    }
}

/// Microseconds in `d`.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Gigabytes (10^9 bytes) per second for `bytes` moved in `d`.
pub fn gb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Stats::of(vec![3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(Stats::of(vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
        let s = Stats::of(vec![5.0, 1.0, 9.0]);
        assert_eq!((s.n, s.min, s.max, s.mean), (3, 1.0, 9.0, 5.0));
    }

    #[test]
    fn interleaving_respects_warmup_min_and_max() {
        let (mut a_calls, mut b_calls) = (0, 0);
        let mut a = || {
            a_calls += 1;
            Ok(1.0)
        };
        let mut b = || {
            b_calls += 1;
            Ok(2.0)
        };
        // No budget: stop as soon as both have `min`; a zero slice means one sample per round.
        let plan = Plan::new(2, 0.0, 5, 7, 0);
        let stats = interleave(&plan, &mut [("a", &mut a), ("b", &mut b)]).unwrap();
        assert_eq!((stats[0].n, stats[1].n), (5, 5));
        assert_eq!((stats[0].median, stats[1].median), (1.0, 2.0));
        assert_eq!((a_calls, b_calls), (7, 7), "two warm-up calls plus five samples each");
        // A long budget: stop at `max`.
        let plan = Plan::new(0, 60.0, 1, 3, 1000);
        let stats = interleave(&plan, &mut [("c", &mut || Ok(3.0))]).unwrap();
        assert_eq!(stats[0].n, 3);
    }

    #[test]
    fn a_failing_subject_is_named() {
        let plan = Plan::new(0, 0.0, 1, 1, 0);
        let err = interleave(&plan, &mut [("broken", &mut || Err(BenchError::new("echo differs")))]).unwrap_err();
        assert_eq!(err.to_string(), "broken: echo differs");
    }
}
