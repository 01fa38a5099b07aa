//! The queue programs of seeds 001–004, rebuilt with [`Queue`] and
//! [`JoinableQueue`]:
//!
//! - seed 001: three producer processes and the parent on a `Queue`
//!   ([`queue_producers`]);
//! - seed 002: two writers and two readers on a `Queue`, the readers
//!   terminated at the end ([`queue_writers_readers`]), and pool workers
//!   sharing a plain `Queue`, which Python can only do through a `Manager`
//!   ([`pool_shared_queue`]);
//! - seed 003: an object sent through a `Queue` whose method runs in the
//!   child ([`queue_object`]), and a `JoinableQueue` with consumers,
//!   `task_done` and a poison pill per consumer ([`joinable_queue`]);
//! - seed 004: two processes writing the same records to two files, forward
//!   and reversed, linked by a `Queue` closed with a sentinel
//!   ([`queue_two_files`]).
//!
//! The Python programs sleep random amounts to interleave their processes;
//! these use short fixed pauses, so that every run shows the same thing.
//! What children print comes back to the parent (as return values or through
//! a second queue), so a report holds every line of every process.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use multiproc::{GetError, JoinableQueue, Pool, Process, Queue, cpu_count, current_process};
use serde::{Deserialize, Serialize};

use crate::{Error, PATIENCE, Report};

fn queue_error(e: impl std::fmt::Display) -> Error {
    Error::Unexpected(format!("queue: {e}"))
}

fn pid() -> u32 {
    std::process::id()
}

// ------------------------------------------------------------------ seed 001

/// Seed 001: three producer processes each put one message; the parent joins
/// them (a `put` never waits for a reader: no feeder thread to flush) and
/// then gets the three messages.
///
/// ```python
/// def fun1(q, i):
///     print('子进程%s 开始put数据' % i)
///     q.put('我是%s 通过Queue通信' % i)
/// q = Queue()
/// for i in range(3): Process(target=fun1, args=(q, i)).start()   # then join them
/// print('主进程获取Queue数据'); print(q.get()); print(q.get()); print(q.get())
/// ```
///
/// The outcome is the set of messages got, sorted.
///
/// # Errors
///
/// A child could not start or failed, or a message did not arrive.
pub fn queue_producers() -> Result<Report<Vec<String>>, Error> {
    fn fun1(q: Queue<String>, i: u32) -> String {
        q.put(format!("I am {i}, talking through a Queue")).expect("put");
        format!("child {i} starts putting data")
    }
    let q = Queue::new()?;
    let mut children = Vec::new();
    for i in 0..3u32 {
        children.push(Process::spawn(fun1, (q.clone(), i))?);
    }
    let mut lines = Vec::new();
    for child in &mut children {
        lines.push(child.join_timeout(PATIENCE)?);
    }
    lines.push("the parent gets the Queue's data".to_string());
    let mut got = Vec::new();
    for _ in 0..3 {
        let message = q.get_timeout(PATIENCE).map_err(queue_error)?;
        lines.push(message.clone());
        got.push(message);
    }
    lines.push("end of test".to_string());
    got.sort();
    Ok(Report { lines, outcome: got })
}

// ------------------------------------------------------------------ seed 002

/// What [`queue_writers_readers`] showed.
#[derive(Debug, Clone, PartialEq)]
pub struct WritersReaders {
    /// Every value the readers got, sorted.
    pub got: Vec<u32>,
    /// How many values each reader got (they share the work).
    pub per_reader: Vec<usize>,
    /// Exit codes of the two readers after `terminate` (−15: SIGTERM).
    pub reader_exit_codes: Vec<Option<i32>>,
}

/// Writes `data` to the queue, pausing between items.
fn write(q: Queue<u32>, data: Vec<u32>) -> Vec<String> {
    let mut lines = vec![format!("Process to write: {}", pid())];
    for value in data {
        lines.push(format!("{} :Put {value} to queue...", pid()));
        q.put(value).expect("put");
        std::thread::sleep(Duration::from_millis(10));
    }
    lines
}

/// Reads forever (the parent terminates it), logging each value it gets.
fn read(q: Queue<u32>, log: Queue<(u32, u32)>) {
    loop {
        match q.get_timeout(PATIENCE) {
            Ok(value) => log.put((pid(), value)).expect("log"),
            Err(_) => return,
        }
    }
}

/// Seed 002: two writers put `[1, 2, 3]` and `[4, 5, 6]`; two readers get in
/// an endless loop; the parent joins the writers and terminates the readers.
///
/// ```python
/// def write(q, data):
///     for value in data: q.put(value); time.sleep(random.random())
/// def read(q):
///     while True: value = q.get(True); print('Get %s from queue.' % value)
/// pw1 = Process(target=write, args=(q, [1,2,3])); pw2 = … [4,5,6]
/// pr1 = Process(target=read, args=(q,)); pr2 = …
/// start all; pw1.join(); pw2.join(); pr1.terminate(); pr2.terminate()
/// ```
///
/// Before terminating the readers, the parent waits until they have logged
/// all six values (Python terminates them whenever, and may cut one off
/// between its `get` and its `print`).
///
/// # Errors
///
/// A child could not start or failed, or a value did not arrive.
pub fn queue_writers_readers() -> Result<Report<WritersReaders>, Error> {
    let (q, log) = (Queue::new()?, Queue::new()?);
    let mut writers = vec![
        Process::spawn(write, (q.clone(), vec![1u32, 2, 3]))?,
        Process::spawn(write, (q.clone(), vec![4u32, 5, 6]))?,
    ];
    let mut readers =
        vec![Process::spawn(read, (q.clone(), log.clone()))?, Process::spawn(read, (q.clone(), log.clone()))?];
    let mut lines = Vec::new();
    for w in &mut writers {
        lines.extend(w.join_timeout(PATIENCE)?);
    }
    let reader_pids: Vec<u32> = readers.iter().filter_map(|r| r.pid()).map(|p| p as u32).collect();
    for &reader in &reader_pids {
        lines.push(format!("Process to read: {reader}"));
    }
    let mut got = Vec::new();
    let mut per_reader = vec![0; readers.len()];
    for _ in 0..6 {
        let (reader, value) = log.get_timeout(PATIENCE).map_err(queue_error)?;
        lines.push(format!("{reader} :Get {value} from queue."));
        if let Some(i) = reader_pids.iter().position(|&p| p == reader) {
            per_reader[i] += 1;
        }
        got.push(value);
    }
    // The readers loop forever: stop them, as the Python program does.
    let mut reader_exit_codes = Vec::new();
    for r in &mut readers {
        r.terminate()?;
        let _ = r.join_timeout(PATIENCE); // a terminated child is an error; its exit code is the fact
        reader_exit_codes.push(r.exitcode());
    }
    lines.push(format!("readers terminated, exit codes {reader_exit_codes:?}"));
    got.sort();
    Ok(Report { lines, outcome: WritersReaders { got, per_reader, reader_exit_codes } })
}

/// Writes `data` to a queue it got as a pool task argument; returns it and
/// the pid of the worker that ran it.
fn pool_write(q: Queue<u32>, data: Vec<u32>) -> (Vec<u32>, u32) {
    for &value in &data {
        q.put(value).expect("put");
    }
    (data, pid())
}

/// Reads one value from a queue it got as a pool task argument; returns it
/// (`None` if nothing came) and the pid of the worker that ran it.
fn pool_read(q: Queue<u32>) -> (Option<u32>, u32) {
    (q.get_timeout(PATIENCE).ok(), pid())
}

/// What [`pool_shared_queue`] showed.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSharedQueue {
    /// What the writer tasks wrote, sorted.
    pub written: Vec<u32>,
    /// What the reader tasks read, sorted.
    pub read: Vec<u32>,
    /// Pids of the pool workers that ran the writer and reader tasks.
    pub worker_pids: BTreeSet<u32>,
    /// Pid of the parent (the tasks ran elsewhere).
    pub parent_pid: u32,
}

/// Seed 002: pool workers sharing a queue. Python cannot pass a
/// `multiprocessing.Queue` to a pool task ("Queue objects should only be
/// shared between processes through inheritance") and needs
/// `Manager().Queue()`; here a plain [`Queue`] is an ordinary task argument.
///
/// ```python
/// p = Pool(2); q = Manager().Queue()
/// for i in range(5): p.apply_async(write, args=(q, [i]))
/// for i in range(5): p.apply_async(read, args=(q,))
/// p.close(); p.join()
/// ```
///
/// The seed's readers loop for ever, so its `p.join()` never returns; here
/// each reader task takes one value.
///
/// # Errors
///
/// The pool could not start or a task failed.
pub fn pool_shared_queue() -> Result<Report<PoolSharedQueue>, Error> {
    let pool = Pool::new(2)?;
    let q = Queue::<u32>::new()?;
    let mut lines = vec![format!("Parent process {}.", pid())];
    let writers: Vec<_> = (0..5u32).map(|i| pool.apply_async(pool_write, (q.clone(), vec![i]))).collect();
    let readers: Vec<_> = (0..5).map(|_| pool.apply_async(pool_read, (q.clone(),))).collect();
    lines.push("Waiting for all subprocesses done...".to_string());
    let mut written = Vec::new();
    let mut worker_pids = BTreeSet::new();
    for mut w in writers {
        let (data, worker) = w.get_timeout(PATIENCE)?;
        lines.push(format!("{worker} :Put {data:?} to queue..."));
        written.extend(data);
        worker_pids.insert(worker);
    }
    let mut read = Vec::new();
    for mut r in readers {
        let (value, worker) = r.get_timeout(PATIENCE)?;
        let value = value.ok_or_else(|| Error::Unexpected("a reader task got nothing".into()))?;
        lines.push(format!("{worker} :Get {value} from queue."));
        read.push(value);
        worker_pids.insert(worker);
    }
    pool.close();
    pool.join_timeout(PATIENCE)?;
    lines.push("All subprocesses done.".to_string());
    written.sort();
    read.sort();
    Ok(Report { lines, outcome: PoolSharedQueue { written, read, worker_pids, parent_pid: pid() } })
}

// ------------------------------------------------------------------ seed 003

/// Seed 003's `MyFancyClass`: an object sent through a queue, whose method
/// runs in the process that got it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MyFancyClass {
    /// Who the fancy thing is done for.
    pub name: String,
}

impl MyFancyClass {
    /// Says which process does it, for whom.
    pub fn do_something(&self) -> String {
        format!("Doing something fancy in {} for {}!", current_process().name, self.name)
    }
}

/// Gets one object from the queue and calls its method.
fn fancy_worker(q: Queue<MyFancyClass>) -> Result<String, String> {
    let obj = q.get_timeout(PATIENCE).map_err(|e| e.to_string())?;
    Ok(obj.do_something())
}

/// Seed 003: an object put on a queue by the parent, got by a child, whose
/// method then runs in the child.
///
/// ```python
/// class MyFancyClass(object):
///     def __init__(self, name): self.name = name
///     def do_something(self):
///         proc_name = multiprocessing.current_process().name
///         print('Doing something fancy in %s for %s!' % (proc_name, self.name))
/// def worker(q):
///     obj = q.get(); obj.do_something()
/// queue = multiprocessing.Queue()
/// p = multiprocessing.Process(target=worker, args=(queue,)); p.start()
/// queue.put(MyFancyClass('Fancy Dan'))
/// queue.close(); queue.join_thread(); p.join()
/// ```
///
/// The outcome is the child's line and its process name.
///
/// # Errors
///
/// The child could not start, or did not get the object.
pub fn queue_object() -> Result<Report<(String, String)>, Error> {
    let queue = Queue::new()?;
    let mut p = Process::spawn(fancy_worker, (queue.clone(),))?;
    queue.put(MyFancyClass { name: "Fancy Dan".into() }).map_err(queue_error)?;
    let said = p.join_timeout(PATIENCE)?.map_err(Error::Unexpected)?;
    Ok(Report { lines: vec![said.clone()], outcome: (said, p.name().to_string()) })
}

/// A unit of work: multiply two numbers (Python's `Task.__call__`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Task {
    a: u32,
    b: u32,
}

impl Task {
    fn call(self) -> String {
        std::thread::sleep(Duration::from_millis(10)); // pretend to take some time
        format!("{} * {} = {}", self.a, self.b, self.a * self.b)
    }
}

/// Takes tasks until its poison pill, marking each done.
fn consumer(tasks: JoinableQueue<Option<Task>>, results: Queue<String>) -> Vec<String> {
    let name = current_process().name;
    let mut lines = Vec::new();
    loop {
        match tasks.get_timeout(PATIENCE) {
            Ok(Some(task)) => {
                lines.push(format!("{name}: {} * {}", task.a, task.b));
                let answer = task.call();
                tasks.task_done().expect("task_done");
                results.put(answer).expect("put");
            }
            Ok(None) => {
                // Poison pill means shutdown.
                lines.push(format!("{name}: Exiting"));
                tasks.task_done().expect("task_done");
                return lines;
            }
            Err(e) => {
                lines.push(format!("{name}: {e}"));
                return lines;
            }
        }
    }
}

/// What [`joinable_queue`] showed.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinableQueueRun {
    /// Consumers started (twice the CPU count, as in Python).
    pub consumers: usize,
    /// Results got after `join`, sorted.
    pub results: Vec<String>,
    /// Unfinished tasks right after `join` returned (0).
    pub unfinished_after_join: usize,
    /// Consumers that exited on their poison pill.
    pub exited_on_pill: usize,
}

/// Seed 003: a `JoinableQueue` of tasks, consumers that mark each task done,
/// a poison pill per consumer, `join` on the queue, then the results.
///
/// ```python
/// tasks = multiprocessing.JoinableQueue(); results = multiprocessing.Queue()
/// consumers = [Consumer(tasks, results) for i in range(cpu_count() * 2)]
/// for i in range(10): tasks.put(Task(i, i))
/// for i in range(num_consumers): tasks.put(None)
/// tasks.join()
/// while num_jobs: print('Result:', results.get())
/// ```
///
/// # Errors
///
/// A consumer could not start or failed, or a result did not arrive.
pub fn joinable_queue() -> Result<Report<JoinableQueueRun>, Error> {
    let tasks = JoinableQueue::new()?;
    let results = Queue::new()?;
    let n = cpu_count() * 2;
    let mut lines = vec![format!("Creating {n} consumers")];
    let mut consumers = Vec::new();
    for i in 1..=n {
        let name = format!("Consumer-{i}");
        consumers.push(Process::builder().name(name).spawn(consumer, (tasks.clone(), results.clone()))?);
    }
    let jobs = 10u32;
    for i in 0..jobs {
        tasks.put(Some(Task { a: i, b: i })).map_err(queue_error)?;
    }
    for _ in 0..n {
        tasks.put(None).map_err(queue_error)?; // a poison pill for each consumer
    }
    tasks.join_timeout(PATIENCE).map_err(queue_error)?;
    let unfinished_after_join = tasks.unfinished_tasks();
    let mut got = Vec::new();
    for _ in 0..jobs {
        let result = results.get_timeout(PATIENCE).map_err(queue_error)?;
        lines.push(format!("Result: {result}"));
        got.push(result);
    }
    let mut exited_on_pill = 0;
    for c in &mut consumers {
        let said = c.join_timeout(PATIENCE)?;
        exited_on_pill += said.iter().filter(|l| l.ends_with(": Exiting")).count();
        lines.extend(said);
    }
    got.sort();
    Ok(Report {
        lines,
        outcome: JoinableQueueRun { consumers: n, results: got, unfinished_after_join, exited_on_pill },
    })
}

// ------------------------------------------------------------------ seed 004

/// What [`queue_two_files`] showed.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoFiles {
    /// The file the parent wrote, every record in order.
    pub forward_text: String,
    /// The file the child wrote, every record reversed.
    pub reversed_text: String,
    /// Records the child wrote before the sentinel.
    pub records_written_by_child: usize,
}

/// The child: writes each record it gets to `path`, until the sentinel (an
/// empty record). Returns how many records it wrote.
fn save_reversed(q: Queue<Vec<String>>, path: PathBuf) -> Result<usize, String> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| e.to_string())?);
    let mut written = 0;
    loop {
        let record = match q.get_timeout(PATIENCE) {
            Ok(record) => record,
            Err(GetError::Closed) => break,
            Err(e) => return Err(e.to_string()),
        };
        if record.is_empty() {
            break; // the sentinel: the parent is done
        }
        for line in record {
            file.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        }
        written += 1;
    }
    file.flush().map_err(|e| e.to_string())?;
    Ok(written)
}

/// The records of the example: dialogues, each a list of turns.
pub fn dialogues() -> Vec<Vec<String>> {
    (0..50)
        .map(|d| {
            (0..3 + d % 4)
                .map(|t| format!("{}: dialogue {d}, turn {t}\n", if t % 2 == 0 { "agent" } else { "client" }))
                .collect()
        })
        .collect()
}

/// Seed 004: the parent writes every record (a dialogue) to one file in
/// order, and sends each record reversed through a queue to a child that
/// writes them to a second file; an empty record is the sentinel that ends
/// the child. Both files are real, in `dir`; the outcome holds their text.
///
/// ```python
/// def save_mmi_train_data(queue):
///     with open('train.txt', 'w') as f:
///         while True:
///             save_list = queue.get()
///             if len(save_list) == 0: break
///             for line in save_list: f.write(line)
/// p = Process(target=fun, args=(queue,)); p.start()
/// with open(save_std_path, 'w') as f:
///     for group in groups:
///         ...; f.write(line); save_list.append(line)
///         queue.put(save_list[::-1] + ['\n'])
/// queue.put([]); p.join()
/// ```
///
/// # Errors
///
/// A file could not be written, or the child failed.
pub fn queue_two_files_in(dir: &std::path::Path) -> Result<Report<TwoFiles>, Error> {
    use std::io::Write;
    let forward = dir.join("forward.txt");
    let reversed = dir.join("reversed.txt");
    let q = Queue::new()?;
    let mut child = Process::spawn(save_reversed, (q.clone(), reversed.clone()))?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&forward)?);
    let records = dialogues();
    for record in &records {
        for line in record {
            file.write_all(line.as_bytes())?;
        }
        file.write_all(b"\n")?;
        let mut back: Vec<String> = record.iter().rev().cloned().collect();
        back.push("\n".to_string());
        q.put(back).map_err(queue_error)?;
    }
    file.flush()?;
    q.put(Vec::new()).map_err(queue_error)?; // the sentinel ends the child's loop
    let written = child.join_timeout(PATIENCE)?.map_err(Error::Unexpected)?;
    let lines = vec![
        format!("{} records written forward to {}", records.len(), forward.display()),
        format!("{written} records written reversed to {} by the child", reversed.display()),
    ];
    let outcome = TwoFiles {
        forward_text: std::fs::read_to_string(&forward)?,
        reversed_text: std::fs::read_to_string(&reversed)?,
        records_written_by_child: written,
    };
    Ok(Report { lines, outcome })
}

/// [`queue_two_files_in`] in a fresh directory under the system's temporary
/// directory, removed afterwards (the outcome holds both files' text).
///
/// # Errors
///
/// As for [`queue_two_files_in`].
pub fn queue_two_files() -> Result<Report<TwoFiles>, Error> {
    let dir = std::env::temp_dir().join(format!("multiproc-queue-two-files-{}", pid()));
    std::fs::create_dir_all(&dir)?;
    let report = queue_two_files_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    report
}
