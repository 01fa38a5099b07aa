//! Seed 001 (`python多进程`), "进程池不能使用Queue,而要用Pipe": producers and
//! consumers running inside two pools, talking over one `Pipe`, each
//! consumer stopped by a `None` poison pill. The Python program, shortened:
//!
//! ```python
//! def consumer(q, name):
//!     while True:
//!         food = q.recv()
//!         if food is None:
//!             print('got a None: the producer is done'); q.close(); break
//!         print('{} ate {}'.format(name, food))
//!
//! def producer(name, food, q):
//!     for i in range(10):
//!         f = '{} made {}{}'.format(name, food, i); print(f); q.send(f)
//!     q.send(None)
//!
//! q1, q2 = Pipe()
//! p1 = Pool(3); p2 = Pool(3)
//! p1.apply_async(func=producer, args=('fioman', 'baozi', q1))
//! p1.apply_async(func=producer, args=('jingjing', 'mantou', q1))
//! p2.apply_async(func=consumer, args=(q2, 'mengmeng'))
//! p2.apply_async(func=consumer, args=(q2, 'xiaoxiao'))
//! p1.close(); p2.close(); p1.join()
//! print('main program done')
//! ```
//!
//! One change makes it correct. Python's docs warn that a pipe end used by
//! two processes at once may corrupt the data, and the program above does
//! that (two producers write `q1`, two consumers read `q2`; with four
//! consumers, as in the seed, two of them never get a `None` and hang). Here
//! the duplex pipe carries one stream each way: `fioman` writes at one end
//! and `mengmeng` reads at the other, `jingjing` and `xiaoxiao` the other
//! way round, so each end has one writer and one reader, and each consumer
//! gets its producer's `None`. (A multiproc `Queue`, unlike Python's, works
//! inside a pool with any number of producers and consumers; see
//! `pool_shared_queue`.)

use multiproc::{Connection, Pipe, Pool};

use crate::{Error, PATIENCE, Report};

/// Items each producer makes.
pub const ITEMS: usize = 10;

/// What [`pipe_pools`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipePools {
    /// `(producer, the items it sent)`, per producer.
    pub produced: Vec<(String, Vec<String>)>,
    /// `(consumer, the items it got, whether it stopped at a None)`.
    pub consumed: Vec<(String, Vec<String>, bool)>,
}

/// Makes `ITEMS` items of `food`, sends each, then the poison pill.
fn producer(name: String, food: String, q: Connection<Option<String>>) -> Result<Vec<String>, String> {
    let mut made = Vec::with_capacity(ITEMS);
    for i in 0..ITEMS {
        let f = format!("{name} made {food}{i}");
        q.send(&Some(f.clone())).map_err(|e| e.to_string())?;
        made.push(f);
    }
    q.send(&None).map_err(|e| e.to_string())?;
    Ok(made)
}

/// Eats what comes until the poison pill; returns what it ate and whether
/// the pill came (rather than the pipe closing or the patience running out).
fn consumer(mut q: Connection<Option<String>>, name: String) -> (String, Vec<String>, bool) {
    let mut eaten = Vec::new();
    loop {
        match q.recv_timeout(PATIENCE) {
            Ok(Some(food)) => eaten.push(food),
            Ok(None) => {
                q.close();
                return (name, eaten, true);
            }
            Err(_) => return (name, eaten, false),
        }
    }
}

/// Two producers in one pool, two consumers in another, one duplex Pipe.
///
/// # Errors
///
/// A pool could not start, or a task failed.
pub fn pipe_pools() -> Result<Report<PipePools>, Error> {
    let (q1, q2) = Pipe::<Option<String>>::duplex()?;
    let p1 = Pool::new(3)?;
    let p2 = Pool::new(3)?;
    let makers = [("fioman", "baozi", q1.clone()), ("jingjing", "mantou", q2.clone())]
        .map(|(name, food, end)| (name, p1.apply_async(producer, (name.to_string(), food.to_string(), end))));
    let eaters =
        [(q2, "mengmeng"), (q1, "xiaoxiao")].map(|(end, name)| p2.apply_async(consumer, (end, name.to_string())));
    p1.close();
    p2.close();
    let mut lines = Vec::new();
    let mut produced = Vec::new();
    for (name, mut made) in makers {
        let made = made.get_timeout(PATIENCE)?.map_err(Error::Unexpected)?;
        lines.extend(made.iter().cloned());
        produced.push((name.to_string(), made));
    }
    let mut consumed = Vec::new();
    for mut eaten in eaters {
        let (name, eaten, pill) = eaten.get_timeout(PATIENCE)?;
        lines.extend(eaten.iter().map(|food| format!("{name} ate: {food}")));
        if pill {
            lines.push(format!("{name} got a None: the producer is done"));
        }
        consumed.push((name, eaten, pill));
    }
    p1.join_timeout(PATIENCE)?;
    p2.join_timeout(PATIENCE)?;
    lines.push("main program done".to_string());
    Ok(Report { lines, outcome: PipePools { produced, consumed } })
}
