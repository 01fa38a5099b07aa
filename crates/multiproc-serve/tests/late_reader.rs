//! A supervisor thread that reads its worker's pipe late (descheduled on a
//! busy machine; here held up by a slow log subscriber) must not take an
//! answer that came in time for a call timeout: the worker answered, and
//! killing it would fail its requests and reload its model for nothing.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use multiproc_serve::{CommandConfig, CommandModel, ModelSettings, ModelSpec, Server, Tensor};

#[test]
fn an_answer_that_came_in_time_is_not_taken_for_a_call_timeout() {
    // A log subscriber that takes 3 s over any event mentioning "stall"
    // (the answer, 100 ms behind the log line, is surely there by then).
    let slow_on_stall = common::OnEvent(|line: String| {
        if line.contains("stall") {
            std::thread::sleep(Duration::from_millis(3_000));
        }
    });
    tracing::subscriber::set_global_default(slow_on_stall).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python").display().to_string();
    // Each batch logs "stall" on stderr, then answers 100 ms later (well
    // within the call timeout; the log line is surely read first).
    let program = format!(
        "import sys, time\nsys.path.insert(0, {dir:?})\nimport multiproc_worker as mw\n\
         def load(model, version): return None\n\
         def predict(model, batch):\n    sys.stderr.write('stall\\n'); sys.stderr.flush(); time.sleep(0.1)\n    \
         return [list(inputs.values()) for inputs in batch]\n\
         mw.serve(load, predict)\n"
    );
    let config = CommandConfig::new("python3").arg("-c").arg(program);
    let settings = ModelSettings { call_timeout: Some(Duration::from_secs(1)), ..Default::default() };
    let server = Server::new();
    server.add(ModelSpec::<CommandModel>::new("m").version(1, config).settings(settings)).unwrap();
    let x = Tensor::from_slice("x", vec![1], &[5i64]).unwrap();
    let reply = server.infer_tensors("m", None, vec![x]).unwrap_or_else(|e| panic!("answered in time, yet: {e}"));
    assert_eq!(reply.output[0].to_vec::<i64>().unwrap(), [5]);
    assert_eq!(server.status().model("m").unwrap().versions[0].restarts, 0);
    server.shutdown();
}
