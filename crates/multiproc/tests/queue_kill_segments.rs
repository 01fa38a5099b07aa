//! Producers and consumers SIGKILLed together while segments of two slots
//! turn over every other item, so that kills land while a process holds the
//! frame lock, creates or retires a segment, or is between claim and
//! commit: the survivors' `get_timeout` keeps its bound and the queue,
//! bounded or not, then works at full speed; a bounded one holds exactly
//! `maxsize` items again.

mod queue_support;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use multiproc::{GetError, Process, PutError, Queue, TryPutError};
use queue_support::{Child, LONG, SLACK, jitter};

/// Puts numbers for ever (until killed). The unbounded queue holds at most
/// 1024 segments (the default `max_segments`) of two slots, 2048 items: when
/// the consumers are descheduled for a moment (a loaded machine) the
/// producers reach that limit, and `put` says so (`OutOfMemory`, as
/// documented) instead of waiting; they retry.
fn flood(q: Queue<u64>) {
    let mut i = 0u64;
    loop {
        match q.put(i) {
            Ok(()) => i += 1,
            Err(PutError::Io(_, e)) if e.kind() == ErrorKind::OutOfMemory => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("put {i}: {e:?}"),
        }
    }
}

/// Gets for ever (until killed).
fn drain(q: Queue<u64>) {
    loop {
        let _ = q.get_timeout(LONG);
    }
}

#[test]
fn kills_while_two_slot_segments_turn_over_leave_the_queue_working() {
    for bounded in [false, true] {
        let b = Queue::<u64>::builder().segment_slots(2);
        let q = if bounded { b.maxsize(6).build().unwrap() } else { b.build().unwrap() };
        for round in 0..15 {
            let mut producers: Vec<_> = (0..2).map(|_| Child(Process::spawn(flood, (q.clone(),)).unwrap())).collect();
            let mut consumer = Child(Process::spawn(drain, (q.clone(),)).unwrap());
            let t = Instant::now();
            let mut got = 0;
            while got < 200 {
                assert!(t.elapsed() < SLACK, "bounded {bounded} round {round}: only {got} items came");
                match q.get_timeout(Duration::from_millis(200)) {
                    Ok(_) => got += 1,
                    Err(GetError::Timeout) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            std::thread::sleep(jitter(round, 3000));
            for p in &mut producers {
                p.0.kill().unwrap();
            }
            consumer.0.kill().unwrap();
            for p in &mut producers {
                let _ = p.0.join_timeout(LONG);
            }
            let _ = consumer.0.join_timeout(LONG);
            // What is left comes out, and then a timeout on time.
            loop {
                let s = Instant::now();
                match q.get_timeout(Duration::from_millis(100)) {
                    Ok(_) => {}
                    Err(GetError::Timeout) => {
                        assert!(
                            s.elapsed() < Duration::from_millis(100) + SLACK,
                            "bounded {bounded} round {round}: get_timeout took {:?}",
                            s.elapsed()
                        );
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            if bounded {
                // Exactly `maxsize` items fit: no kill took room with it
                // (room is a position, taken and given back in one atomic
                // step each).
                for i in 0..6u64 {
                    q.put_timeout(i, SLACK).unwrap_or_else(|e| {
                        panic!("round {round}: put {i} of 6 into the emptied queue: {e:?} qsize {}", q.qsize())
                    });
                }
                assert!(
                    matches!(q.put_nowait(6), Err(TryPutError::Full(_))),
                    "round {round}: a seventh item fit in a queue of maxsize 6"
                );
                for i in 0..6u64 {
                    assert_eq!(q.get_timeout(SLACK).unwrap(), i);
                }
            }
            let s = Instant::now();
            for i in 0..20u64 {
                q.put_timeout(i, SLACK)
                    .unwrap_or_else(|e| panic!("bounded {bounded} round {round}: put {i}: {e:?} qsize {}", q.qsize()));
                assert_eq!(q.get_timeout(SLACK).unwrap(), i);
            }
            assert!(s.elapsed() < SLACK, "bounded {bounded} round {round}: slow after kill: {:?}", s.elapsed());
        }
    }
}
