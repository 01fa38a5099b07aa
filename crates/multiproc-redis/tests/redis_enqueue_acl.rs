//! A Redis user that may not run `DEL` still queues batches, each once:
//! deleting the keys of earlier batches is a courtesy (they expire), and
//! its refusal must not fail a batch the script has already queued.

mod support;

use multiproc_redis::schema::Keys;
use support::{local_worker, pool, raw, server, xlen};

const PREFIX: &str = "enqueue-acl";

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_refused_del_of_spent_batch_keys_does_not_fail_a_queued_batch() {
    let server = server();
    let mut con = raw(&server);
    let tasks = Keys::new(PREFIX, "default").tasks();
    let pool = pool(&server, PREFIX).connect().unwrap();
    let worker = local_worker(&server, PREFIX, 1);
    // The first call leaves its batch's key for the next script to delete.
    assert_eq!(pool.apply(square, (2,)).unwrap(), 4);
    redis::cmd("ACL").arg("SETUSER").arg("default").arg("-del").exec(&mut con).unwrap();
    let refused = redis::cmd("DEL").arg("anything").exec(&mut con).unwrap_err();
    assert_eq!(refused.code(), Some("NOPERM"), "{refused}");
    for x in 3..6u64 {
        assert_eq!(pool.apply(square, (x,)).unwrap(), x * x, "a call after DEL was refused");
    }
    worker.stop();
    assert_eq!(xlen(&mut con, &tasks), 0, "entries were left in the task stream");
    redis::cmd("ACL").arg("SETUSER").arg("default").arg("+del").exec(&mut con).unwrap();
}
