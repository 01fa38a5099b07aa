//! The lanes' sleep, seen from inside a running pipeline (its processes
//! are real; it has no server, so a chunk's requests fail on their way to
//! the model, which tells when a lane took them).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use multiproc_test_support::wait_until;

use super::feed::{BACKSTOP, IDLE_LOOK, Queued};
use super::{PipelineDyn, Runtime};
use crate::error::ServeError;
use crate::gauge::{Gauge, InFlight, Releases};
use crate::pipeline_spec::PipelineSpec;
use crate::slot::Slot;

fn echo(text: String) -> Result<String, String> {
    Ok(text)
}

/// A pipeline of one preprocessing process, stopped when the test ends,
/// even one that fails (its lane and process end with it).
struct Stops(Arc<Runtime<String, String, String>>);

impl Stops {
    fn start(name: &str) -> Stops {
        let spec = PipelineSpec::<String, String, String, String>::new(name, "model", echo, 1);
        Stops(spec.start_runtime(Weak::new()).unwrap())
    }

    /// Stops the pipeline, after the requests made to stand past the
    /// queue leave: then nothing is left in it.
    fn stop_empty(self, past: Vec<InFlight>) {
        let gauge = Arc::clone(&self.0.gauge);
        drop(past);
        drop(self);
        assert_eq!(gauge.in_flight(), 0, "every request left the stopped pipeline");
    }
}

impl Drop for Stops {
    fn drop(&mut self) {
        PipelineDyn::stop(&*self.0, ServeError::ShuttingDown);
    }
}

/// A request standing past the queue (as if in the model), whose release
/// does not come while its guard lives.
fn past_the_queue(gauge: &Arc<Gauge>) -> Vec<InFlight> {
    let (_, admitted) = gauge.admit(10).unwrap();
    admitted.queued();
    gauge.take_queued(1).collect()
}

/// An answer leaves the pipeline now, as the model's supervisor delivers it.
fn an_answer_leaves(gauge: &Arc<Gauge>) {
    let mut releases = Releases::default();
    past_the_queue(gauge).into_iter().for_each(|g| releases.add(g));
    releases.flush();
}

/// The request of `slot`, queued at `queued_at`, is taken, preprocessed,
/// then failed for want of a server, long before the lane's idle look.
fn taken_soon(slot: &Slot, queued_at: Instant, why_late: &str) {
    let answer = slot.wait_for(Duration::from_secs(30)).expect("the request was not taken");
    let took = queued_at.elapsed();
    assert!(matches!(answer, Err(ServeError::ShuttingDown)), "{answer:?}");
    assert!(took < IDLE_LOOK / 2, "taken after {took:?}: {why_late}");
}

#[test]
fn a_lane_asleep_while_answers_stream_looks_again_within_the_backstop() {
    let stops = Stops::start("backstop");
    let runtime = &stops.0;
    let past = past_the_queue(&runtime.gauge);
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
        an_answer_leaves(&runtime.gauge);
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
    taken_soon(&slot, queued_at, &format!("the backstop is {BACKSTOP:?}"));
    stops.stop_empty(past);
}

#[test]
fn a_caller_wakes_a_lane_that_sleeps_long_even_with_answers_streaming() {
    let stops = Stops::start("no-short-sleeper");
    let runtime = &stops.0;
    // The lane is asleep in an empty pipeline, for `IDLE_LOOK`.
    wait_until("the lane sleeps", Duration::from_secs(10), || {
        let q = runtime.queue.lock().unwrap();
        q.sleeping == 1 && q.short_sleepers == 0
    });
    // A request past the queue, and an answer just after the next request
    // arrived: a release is coming, and soon.
    let past = past_the_queue(&runtime.gauge);
    let slot = Slot::new();
    an_answer_leaves(&runtime.gauge);
    assert!(runtime.gauge.release_will_wake(0, slot.arrived), "the release would be left to wake the lane");
    // No lane looks again soon of itself, so the caller wakes it.
    let queued_at = Instant::now();
    PipelineDyn::submit(&**runtime, &mut Some("request".to_string()), Arc::clone(&slot), None).unwrap();
    taken_soon(&slot, queued_at, "the caller left the wake-up to a lane asleep for long");
    stops.stop_empty(past);
}
