//! A Redis user without the rights the pool needs gets an error that says
//! which rights to give, once.

mod support;

use multiproc_redis::{RedisPool, Worker};
use support::{raw, server};

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_user_without_stream_rights_is_told_which_to_give() {
    let server = server();
    // Any password does for a user without one.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("nostreams")
        .arg("on")
        .arg("nopass")
        .arg("~*")
        .arg("+@all")
        .arg("-@stream")
        .query(&mut raw(&server))
        .unwrap();
    let url = server.url().replace("redis://", "redis://nostreams:x@");
    let err = Worker::builder(&url).processes(1).start().expect_err("no stream rights, no worker");
    let text = err.to_string();
    assert!(text.contains("no permissions") && text.contains("ACL SETUSER <user> +@stream"), "{text}");
    assert!(!text.contains("check that the server is running"), "{text}");
    let pool = RedisPool::builder(&url).connect().unwrap();
    let text = pool.apply(square, (2u64,)).expect_err("no stream rights, no call").to_string();
    assert!(text.contains("can't run this command") && text.contains("ACL SETUSER <user> +@stream"), "{text}");
    assert_eq!(text.matches("none of").count(), 1, "said twice: {text}");
}
