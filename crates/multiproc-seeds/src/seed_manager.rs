//! Managers in the seeds: a dict and a list mutated by ten processes (seed
//! 001), a dict and a list written by a child (seed 003), and the
//! distributed master/worker of seed 002, whose master serves a task queue
//! and a result queue over TCP with an auth key.
//!
//! Seed 001, shortened:
//!
//! ```python
//! def fun1(dic, lis, index):
//!     dic[index] = 'a'; dic['2'] = 'b'; lis.append(index)
//! with Manager() as manager:
//!     dic = manager.dict(); l = manager.list(range(5))
//!     for i in range(10): Process(target=fun1, args=(dic, l, i)).start()  # … join
//!     print(dic); print(l)
//! ```
//!
//! Seed 002 (the classic `task_master.py` / `task_worker.py`), shortened:
//!
//! ```python
//! class QueueManager(BaseManager): pass
//! QueueManager.register('get_task_queue', callable=lambda: task_queue)
//! QueueManager.register('get_result_queue', callable=lambda: result_queue)
//! manager = QueueManager(address=('', 5000), authkey=b'abc'); manager.start()
//! task = manager.get_task_queue(); result = manager.get_result_queue()
//! for i in range(10): task.put(random.randint(0, 10000))
//! for i in range(10): print('Result: %s' % result.get(timeout=10))
//! # worker, on another machine:
//! m = QueueManager(address=(server_addr, 5000), authkey=b'abc'); m.connect()
//! while True: n = task.get(timeout=1); result.put('%d * %d = %d' % (n, n, n*n))
//! ```

use multiproc::Process;
use multiproc::manager::{self, Dict, List, Manager, Queue};

use crate::{Error, PATIENCE, Report};

/// What [`manager_dict_list`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictList {
    /// The dict's entries, sorted by key.
    pub dict: Vec<(String, u64)>,
    /// The list, in order.
    pub list: Vec<u64>,
}

/// How many atomic increments each of the ten processes makes.
pub const INCREMENTS: u64 = 100;

/// One of the ten processes: the seed's writes, and [`INCREMENTS`] atomic
/// increments of `"count"` (Python's `dic['count'] += 1` is a get and a set
/// through the proxy, and loses updates when processes race; `update` runs
/// in the manager, in one call).
fn fun1(dic: Dict<String, u64>, lis: List<u64>, index: u64) -> Result<(), String> {
    dic.insert(index.to_string(), index).map_err(|e| e.to_string())?;
    dic.insert("2".into(), 2).map_err(|e| e.to_string())?;
    lis.push(index).map_err(|e| e.to_string())?;
    for _ in 0..INCREMENTS {
        dic.update("count", |n: &mut Option<u64>| *n.get_or_insert(0) += 1).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Seed 001: a manager dict and list mutated by ten processes.
///
/// # Errors
///
/// The manager or a child failed.
pub fn manager_dict_list() -> Result<Report<DictList>, Error> {
    let manager = Manager::start()?;
    let dic = manager.dict::<String, u64>()?;
    let lis = manager.list_from(0..5u64)?;
    let mut children = Vec::new();
    for i in 0..10u64 {
        children.push(Process::spawn(fun1, (dic.clone(), lis.clone(), i))?);
    }
    for child in &mut children {
        child.join_timeout(PATIENCE)?.map_err(Error::Unexpected)?;
    }
    let mut dict = dic.items()?;
    dict.sort_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
    let list = lis.to_vec()?;
    manager.shutdown()?;
    let lines = vec![
        format!("dict: {{{}}}", dict.iter().map(|(k, v)| format!("{k:?}: {v}")).collect::<Vec<_>>().join(", ")),
        format!("list: {list:?}"),
        format!("count = {} (10 processes x {INCREMENTS} atomic updates)", dict_count(&dict)),
    ];
    Ok(Report { lines, outcome: DictList { dict, list } })
}

fn dict_count(dict: &[(String, u64)]) -> u64 {
    dict.iter().find(|(k, _)| k == "count").map_or(0, |(_, v)| *v)
}

/// What [`manager_written_by_child`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenByChild {
    /// The dict's entries, sorted by key.
    pub dict: Vec<(String, String)>,
    /// The list, in order.
    pub list: Vec<u32>,
}

fn func(mydict: Dict<String, String>, mylist: List<u32>) -> Result<(), String> {
    mydict.insert("index1".into(), "aaaaaa".into()).map_err(|e| e.to_string())?;
    mydict.insert("index2".into(), "bbbbbb".into()).map_err(|e| e.to_string())?;
    mylist.extend([11, 22, 33]).map_err(|e| e.to_string())
}

/// Seed 003: a manager dict and list written by a child, read by the parent.
///
/// # Errors
///
/// The manager or the child failed.
pub fn manager_written_by_child() -> Result<Report<WrittenByChild>, Error> {
    let manager = Manager::start()?;
    let mydict = manager.dict::<String, String>()?;
    let mylist = manager.list_from(0..5u32)?;
    let mut p = Process::spawn(func, (mydict.clone(), mylist.clone()))?;
    p.join_timeout(PATIENCE)?.map_err(Error::Unexpected)?;
    let list = mylist.to_vec()?;
    let mut dict = mydict.items()?;
    dict.sort();
    manager.shutdown()?;
    let lines = vec![format!("{list:?}"), format!("{dict:?}")];
    Ok(Report { lines, outcome: WrittenByChild { dict, list } })
}

/// What [`distributed_master_worker`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterWorker {
    /// The tasks the master put.
    pub tasks: Vec<u64>,
    /// The results it collected: `(n, n * n, worker index)`, in arrival order.
    pub results: Vec<(u64, u64, u32)>,
    /// How many tasks each worker did.
    pub per_worker: Vec<u32>,
}

/// The auth key of seed 002.
const AUTHKEY: &[u8] = b"abc";

/// A worker that knows only the master's address and key.
fn task_worker(address: String, authkey: Vec<u8>, me: u32) -> Result<u32, String> {
    let m = Manager::connect(&address, Some(&authkey)).map_err(|e| e.to_string())?;
    let task: Queue<Option<u64>> = m.get("task_queue").map_err(|e| e.to_string())?;
    let result: Queue<(u64, u64, u32)> = m.get("result_queue").map_err(|e| e.to_string())?;
    let mut done = 0;
    while let Some(n) = task.get_timeout(PATIENCE).map_err(|e| e.to_string())? {
        result.put((n, n * n, me)).map_err(|e| e.to_string())?;
        done += 1;
    }
    Ok(done)
}

/// Seed 002: the master serves a task queue and a result queue on TCP
/// (loopback here) with an auth key; two worker processes connect knowing
/// only the address and the key, take tasks and put results; the master
/// collects every result exactly once.
///
/// # Errors
///
/// The manager or a worker failed, or a result was missing or repeated.
pub fn distributed_master_worker() -> Result<Report<MasterWorker>, Error> {
    let master = manager::serve("tcp:127.0.0.1:0", Some(AUTHKEY))?;
    let task = master.queue::<Option<u64>>()?;
    let result = master.queue::<(u64, u64, u32)>()?;
    master.publish("task_queue", &task)?;
    master.publish("result_queue", &result)?;
    let address = master.address().to_string();
    let mut lines = vec![format!("master serving on {address}")];
    let mut workers = Vec::new();
    for me in 0..2u32 {
        workers.push(Process::spawn(task_worker, (address.clone(), AUTHKEY.to_vec(), me))?);
    }
    // Deterministic "random" tasks, so the report is stable.
    let tasks: Vec<u64> = (0..10u64).map(|i| (i * 7919 + 13) % 10_000).collect();
    for &n in &tasks {
        lines.push(format!("Put task {n}..."));
        task.put(Some(n))?;
    }
    let mut results = Vec::new();
    for _ in 0..tasks.len() {
        let (n, square, by) = result.get_timeout(PATIENCE)?;
        lines.push(format!("Result: {n} * {n} = {square} (worker {by})"));
        results.push((n, square, by));
    }
    for _ in &workers {
        task.put(None)?;
    }
    let mut per_worker = Vec::new();
    for w in &mut workers {
        per_worker.push(w.join_timeout(PATIENCE)?.map_err(Error::Unexpected)?);
    }
    let mut got: Vec<u64> = results.iter().map(|r| r.0).collect();
    let mut want = tasks.clone();
    got.sort();
    want.sort();
    if got != want || results.iter().any(|&(n, sq, _)| sq != n * n) {
        return Err(Error::Unexpected(format!("results {results:?} do not answer tasks {tasks:?} exactly once")));
    }
    lines.push(format!("every result collected once; tasks per worker: {per_worker:?}"));
    master.shutdown()?;
    Ok(Report { lines, outcome: MasterWorker { tasks, results, per_worker } })
}
