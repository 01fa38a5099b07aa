//! A results stream that another client overwrote (any client may write
//! any key) fails the calls waiting on it with an error that says what
//! happened, not that Redis is unreachable.

mod support;

use std::time::Duration;

use support::{pool, raw, server};

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_results_key_of_another_type_fails_the_call_saying_so() {
    let server = server();
    let pool = pool(&server, "clobbered").connect().unwrap();
    let results = format!("clobbered:results:{}", pool.caller_id());
    redis::cmd("SET").arg(&results).arg("not a stream").exec(&mut raw(&server)).unwrap();
    // No worker runs: the call waits on its results stream.
    let err = pool.map_async(square, 0..4u64).get_timeout(Duration::from_secs(30)).unwrap_err().to_string();
    assert!(err.contains(&results) && err.contains("WRONGTYPE") && !err.contains("unreachable"), "{err}");
}
