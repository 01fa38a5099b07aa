//! The server's own tests of paths the public API cannot time: a request
//! caught between looking a model up and queueing on it.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batcher::Pending;
use crate::items::Encoded;
use crate::name::Target;
use crate::request::InferFuture;
use crate::slot::Slot;
use crate::{LoadError, Model, ModelSettings, ModelSpec, Server, StartMode, WorkerContext};

/// Answers `x + 1000 × version`.
struct Versioned(u64);

impl Model for Versioned {
    type Config = u64;
    type Input = u64;
    type Output = u64;

    fn load(_: u64, ctx: &WorkerContext) -> Result<Self, LoadError> {
        Ok(Versioned(ctx.version))
    }

    fn predict(&mut self, batch: Vec<u64>) -> Vec<Result<u64, String>> {
        batch.into_iter().map(|x| Ok(x + 1000 * self.0)).collect()
    }
}

/// A model repository adds a model again, with a new version, under its
/// name; a request that had looked up the entry it replaces (the old one is
/// unloaded by then) is queued on the new entry instead of failing as
/// "unloaded" (seen under load in the HTTP repository test).
#[test]
fn a_request_that_looked_up_a_replaced_model_goes_to_its_successor() {
    let server = Server::new();
    let eager = ModelSettings { start: StartMode::Eager, ..Default::default() };
    server.add(ModelSpec::<Versioned>::new("m").version(1, 0).settings(eager.clone())).unwrap();
    let looked_up = server.model_entry("m").unwrap();
    server.add(ModelSpec::<Versioned>::new("m").version(1, 0).version(2, 0).settings(eager)).unwrap();

    let slot = Slot::new();
    let input = Encoded::Own(postcard::to_allocvec(&7u64).unwrap());
    let enqueued = Instant::now();
    let pending = Pending { input, slot: Arc::clone(&slot), enqueued, deadline: None, then: None, rows: 1, held: None };
    server.submit_bytes(&looked_up, None, pending, false).unwrap();
    let future = InferFuture::<u64> { target: Target::model("m".into()), slot: Ok(slot), _output: PhantomData };
    let reply = future.wait_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!((reply.version, reply.output), (2, 2007));
    server.shutdown();
}

/// What a request holds is dropped once it is answered, and at once when
/// it is refused; a pipeline-free request never keeps it past its answer.
#[test]
fn what_a_request_holds_is_dropped_when_it_is_answered_or_refused() {
    use crate::Request;
    use multiproc_test_support::Alive;
    let server = Server::new();
    let eager = ModelSettings { start: StartMode::Eager, ..Default::default() };
    server.add(ModelSpec::<Versioned>::new("m").version(1, 0).settings(eager)).unwrap();
    let alive = Alive::default();
    let reply = server.infer::<u64, u64>(Request::new("m", 7u64).hold(alive.guard())).unwrap();
    assert_eq!(reply.output, 1007);
    assert_eq!(alive.count(), 0, "dropped before the answer was published");
    let future = server.infer_async::<u64, u64>(Request::new("m", 8u64).hold(alive.guard()));
    assert_eq!(future.wait_timeout(Duration::from_secs(60)).unwrap().output, 1008);
    assert_eq!(alive.count(), 0);
    assert!(server.infer::<u64, u64>(Request::new("none", 1u64).hold(alive.guard())).is_err());
    assert!(server.infer::<u64, u64>(Request::new("m", 1u64).version(9).hold(alive.guard())).is_err());
    assert_eq!(alive.count(), 0, "refused: dropped at once");
    server.shutdown();
}
