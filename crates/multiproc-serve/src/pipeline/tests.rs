//! The lanes' sleep, seen from inside a running pipeline (its processes
//! are real; it has no server, so a chunk's requests fail on their way to
//! the model, which tells when a lane took them).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use multiproc_test_support::wait_until;

use super::feed::{BACKSTOP, IDLE_LOOK, Queued};
use super::{PipelineDyn, Runtime};
use crate::error::ServeError;
use crate::gauge::{InFlight, Releases};
use crate::pipeline_spec::PipelineSpec;
use crate::slot::Slot;

fn echo(text: String) -> Result<String, String> {
    Ok(text)
}

/// Stops the pipeline when the test ends, even one that fails (its lane
/// and process end with it).
struct Stops(Arc<Runtime<String, String, String>>);

impl Drop for Stops {
    fn drop(&mut self) {
        PipelineDyn::stop(&*self.0, ServeError::ShuttingDown);
    }
}

#[test]
fn a_lane_asleep_while_answers_stream_looks_again_within_the_backstop() {
    let spec = PipelineSpec::<String, String, String, String>::new("backstop", "model", echo, 1);
    let stops = Stops(spec.start_runtime(Weak::new()).unwrap());
    let runtime = &stops.0;
    let gauge = Arc::clone(&runtime.gauge);
    // A request past the queue (as if in the model) whose release does not
    // come while the test runs.
    let (_, admitted) = runtime.gauge.admit(10).unwrap();
    admitted.queued();
    let past: Vec<InFlight> = runtime.gauge.take_queued(1).collect();
    // The lane fell asleep in an empty pipeline, for `IDLE_LOOK`. An answer
    // leaves, and the lane is woken: it finds nothing to take and sleeps
    // again, now for `BACKSTOP` at most, answers streaming. Then a request
    // is queued and nobody woken, as by a caller that left the wake-up to
    // the release of the one past the queue (under the queue's lock, so
    // that the lane is still in that sleep). Again if the lane came to
    // look only after the answer was no longer recent.
    let slot = Slot::new();
    let mut queued_at = Instant::now();
    wait_until("the lane sleeps short", Duration::from_secs(10), || {
        let (_, admitted) = runtime.gauge.admit(10).unwrap();
        admitted.queued();
        let mut releases = Releases::default();
        runtime.gauge.take_queued(1).for_each(|g| releases.add(g));
        releases.flush();
        {
            let _q = runtime.queue.lock().unwrap();
            runtime.changed.notify_all();
        }
        std::thread::sleep(Duration::from_millis(1));
        let mut q = runtime.queue.lock().unwrap();
        if q.short_sleepers != 1 {
            return false;
        }
        let (_, admitted) = runtime.gauge.admit(10).unwrap();
        q.inputs.push_output(Ok(&"request".to_string()));
        q.jobs.push_back(Queued { slot: Arc::clone(&slot), deadline: None });
        admitted.queued();
        queued_at = Instant::now();
        true
    });
    // Taken and preprocessed, then failed for want of a server: long
    // before the lane's idle look would have come.
    let answer = slot.wait_for(Duration::from_secs(30)).expect("the request was not taken");
    let took = queued_at.elapsed();
    assert!(matches!(answer, Err(ServeError::ShuttingDown)), "{answer:?}");
    assert!(took < IDLE_LOOK / 2, "taken after {took:?}; the backstop is {BACKSTOP:?}");
    drop(past);
    drop(stops);
    assert_eq!(gauge.in_flight(), 0, "every request left the stopped pipeline");
}

#[test]
fn a_caller_wakes_a_lane_that_sleeps_long_even_with_answers_streaming() {
    let spec = PipelineSpec::<String, String, String, String>::new("no-short-sleeper", "model", echo, 1);
    let stops = Stops(spec.start_runtime(Weak::new()).unwrap());
    let runtime = &stops.0;
    let gauge = Arc::clone(&runtime.gauge);
    // The lane is asleep in an empty pipeline, for `IDLE_LOOK`.
    wait_until("the lane sleeps", Duration::from_secs(10), || {
        let q = runtime.queue.lock().unwrap();
        q.sleeping == 1 && q.short_sleepers == 0
    });
    // A request past the queue, and an answer just after the next request
    // arrived: a release is coming, and soon.
    let (_, admitted) = gauge.admit(10).unwrap();
    admitted.queued();
    let past: Vec<InFlight> = gauge.take_queued(1).collect();
    let slot = Slot::new();
    let (_, admitted) = gauge.admit(10).unwrap();
    admitted.queued();
    let mut releases = Releases::default();
    gauge.take_queued(1).for_each(|g| releases.add(g));
    releases.flush();
    assert!(gauge.release_will_wake(0, slot.arrived), "the release would be left to wake the lane");
    // No lane looks again soon of itself, so the caller wakes it.
    let queued_at = Instant::now();
    PipelineDyn::submit(&**runtime, &mut Some("request".to_string()), Arc::clone(&slot), None).unwrap();
    let answer = slot.wait_for(Duration::from_secs(30)).expect("the request was not taken");
    let took = queued_at.elapsed();
    assert!(matches!(answer, Err(ServeError::ShuttingDown)), "{answer:?}");
    assert!(took < IDLE_LOOK / 2, "taken after {took:?}: the caller left the wake-up to a lane asleep for long");
    drop(past);
    drop(stops);
    assert_eq!(gauge.in_flight(), 0, "every request left the stopped pipeline");
}
