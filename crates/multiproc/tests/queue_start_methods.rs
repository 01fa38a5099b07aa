//! A queue passed to a child started by each start method (spawn, fork
//! server, fork) is the same queue there. Alone in its file: `Fork` is only
//! safe while no other test thread is inside the library.

mod queue_support;

use multiproc::{JoinableQueue, Process, Queue, StartMethod};
use queue_support::{Child, LONG};

fn echo(input: Queue<String>, output: JoinableQueue<String>) -> usize {
    let mut n = 0;
    while let Ok(Some(s)) = input.get_timeout(LONG).map(|s| (s != "stop").then_some(s)) {
        output.put(s.to_uppercase()).unwrap();
        n += 1;
    }
    n
}

#[test]
fn every_start_method_shares_the_queue() {
    // SAFETY: this binary's only test forks; no other thread of it is in the
    // library or holds a lock the child needs.
    let fork = unsafe { StartMethod::fork() };
    for method in [StartMethod::Spawn, StartMethod::ForkServer, fork] {
        let input = Queue::new().unwrap();
        let output = JoinableQueue::new().unwrap();
        input.put("before start".to_string()).unwrap();
        let mut child =
            Child(Process::builder().start_method(method).spawn(echo, (input.clone(), output.clone())).unwrap());
        input.put("after start".to_string()).unwrap();
        input.put("stop".to_string()).unwrap();
        for expected in ["BEFORE START", "AFTER START"] {
            assert_eq!(output.get_timeout(LONG).unwrap(), expected, "{method:?}");
            output.task_done().unwrap();
        }
        output.join_timeout(LONG).unwrap();
        assert_eq!(child.join(), 2, "{method:?}");
    }
}
