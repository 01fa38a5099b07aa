//! A batch whose queuing reply was lost after Redis queued it, and whose
//! script sent again is then refused for good, is not said to be "none
//! queued" (its tasks would run, and run again when the call is started
//! again): the caller asks Redis, withdraws the entries of the first try
//! and says so; when Redis refuses to be asked, the error says that the
//! tasks may run.

mod support;

use std::time::Duration;

use multiproc_redis::schema::Keys;
use support::proxy::LossyProxy;
use support::{pool_at, raw, server, xlen, zcard};

fn len(v: Vec<u8>) -> usize {
    v.len()
}

/// Three chunks, the second with its arguments in a key of their own.
fn items() -> Vec<Vec<u8>> {
    vec![vec![1u8; 10], vec![2u8; 300 * 1024], vec![3u8; 10]]
}

/// Runs `command` on a new connection to the server at `url`.
fn run(url: &str, command: &redis::Cmd) {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
    command.exec(&mut con).unwrap();
}

/// Maps [`items`] through a proxy that loses the reply to the batch's
/// script, once Redis ran it, and runs `refuse` before the cut; returns
/// the call's error. No host runs the tasks.
fn refused_after_a_lost_reply(
    server: &multiproc_redis::RedisServer,
    prefix: &str,
    refuse: impl FnOnce() + Send + 'static,
) -> String {
    let proxy = LossyProxy::start(server);
    let pool = pool_at(&proxy.url(), prefix).connect().unwrap();
    proxy.lose_next_reply_to_then("EVAL", refuse);
    let err = pool.with_chunksize(1).map(len, items()).unwrap_err().to_string();
    assert_eq!(proxy.replies_lost(), 1, "no reply was lost: the batch was not sent again ({err})");
    err
}

#[test]
fn a_batch_queued_then_refused_when_sent_again_is_withdrawn() {
    const PREFIX: &str = "resend-refused";
    let server = server();
    let mut con = raw(&server);
    let keys = Keys::new(PREFIX, "default");
    // The pool's user may no longer run scripts: the try sent again fails
    // with NOPERM; plain commands still pass.
    let url = server.url();
    let err = refused_after_a_lost_reply(&server, PREFIX, move || {
        run(&url, redis::cmd("ACL").arg("SETUSER").arg("default").arg("-eval"));
    });
    redis::cmd("ACL").arg("SETUSER").arg("default").arg("+eval").exec(&mut con).unwrap();

    assert!(err.contains("withdrawn") && !err.contains("none of them was queued"), "{err}");
    assert_eq!(xlen(&mut con, &keys.tasks()), 0, "the first try's entries were left queued: {err}");
    let caller: Vec<String> = redis::cmd("KEYS").arg(keys.withdrawn("*")).query(&mut con).unwrap();
    assert_eq!(caller.len(), 1, "{caller:?}");
    assert_eq!(zcard(&mut con, &caller[0]), 3, "the chunks were not marked withdrawn");
    let blobs: Vec<String> = redis::cmd("KEYS").arg(format!("{PREFIX}:default:blob:*")).query(&mut con).unwrap();
    assert!(blobs.is_empty(), "argument keys left: {blobs:?}");
}

#[test]
fn a_batch_refused_when_sent_again_by_a_server_that_cannot_be_asked_may_run() {
    const PREFIX: &str = "resend-noauth";
    let server = server();
    let mut con = raw(&server);
    let tasks = Keys::new(PREFIX, "default").tasks();
    // A password now: the try sent again, on a new connection, fails with
    // NOAUTH, and so does any question. This connection stays in.
    let url = server.url();
    let err = refused_after_a_lost_reply(&server, PREFIX, move || {
        run(&url, redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("secret"));
    });
    redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("").exec(&mut con).unwrap();

    assert!(err.contains("they may run") && !err.contains("none of them was queued"), "{err}");
    // The first try's entries are there indeed (for nobody: no host here).
    assert_eq!(xlen(&mut con, &tasks), 3, "{err}");
}
