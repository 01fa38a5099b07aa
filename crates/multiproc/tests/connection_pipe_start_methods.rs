//! A connection passed to a child works under every start method, `Fork`
//! included (alone in its binary: forking is only sound while no other test
//! thread is in the library).

mod process_support;

use multiproc::{Connection, Pipe, Process};
use process_support::{JOIN as LONG, METHODS, join_or_kill as join};

fn ping_pong(conn: Connection<u64>) -> u64 {
    let mut last = 0;
    while let Ok(x) = conn.recv_timeout(LONG) {
        conn.send(&(x + 1)).unwrap();
        last = x;
    }
    last
}

fn hold_until_closed(conn: Connection<u8>) {
    while conn.recv_timeout(LONG).is_ok() {}
}

#[test]
fn a_child_given_a_connection_ping_pongs_with_every_start_method() {
    // Another child stays alive throughout: a forked child inherits the
    // record of it and must still exit promptly.
    let (keep, theirs) = Pipe::<u8>::duplex().unwrap();
    let bystander = Process::spawn(hold_until_closed, (theirs,)).unwrap();
    for method in METHODS {
        let (ours, theirs) = Pipe::<u64>::duplex().unwrap();
        let child = Process::builder().start_method(method).spawn(ping_pong, (theirs,)).unwrap();
        let mut x = 0;
        for _ in 0..100 {
            ours.send(&x).unwrap();
            let y = ours.recv_timeout(LONG).unwrap_or_else(|e| panic!("{method:?}: {e}"));
            assert_eq!(y, x + 1, "{method:?}");
            x = y + 1;
        }
        drop(ours);
        assert_eq!(join(child), x - 2, "{method:?}");
    }
    drop(keep);
    join(bystander);
}
