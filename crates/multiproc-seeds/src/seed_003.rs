//! Seed 003 (`Python多进程库multiprocessing…`): names, daemons, terminate,
//! exit codes. The Python programs, shortened:
//!
//! ```python
//! def worker():                      # named processes
//!     name = multiprocessing.current_process().name
//!     print(name, 'Starting'); time.sleep(2); print(name, 'Exiting')
//! service = Process(name='my_service', target=my_service)
//! worker_1 = Process(name='worker 1', target=worker)
//! worker_2 = Process(target=worker)  # default name
//!
//! d = Process(name='daemon', target=daemon); d.daemon = True
//! n = Process(name='non-daemon', target=non_daemon)
//! d.start(); n.start(); d.join(1)
//! print('d.is_alive()', d.is_alive()); n.join()
//!
//! p = Process(target=slow_worker)
//! print('BEFORE:', p, p.is_alive()); p.start()
//! print('DURING:', p, p.is_alive()); p.terminate()
//! print('TERMINATED:', p, p.is_alive()); p.join()
//! print('JOINED:', p, p.is_alive())
//!
//! for f in [exit_error, exit_ok, return_value, raises, terminated]:  # sys.exit(1), return, return 1, raise, sleep
//!     j = Process(target=f, name=f.__name__); jobs.append(j); j.start()
//! jobs[-1].terminate()
//! for j in jobs: j.join(); print('%15s.exitcode = %s' % (j.name, j.exitcode))
//! ```
//!
//! Sleeps are shortened so the tour stays quick. Lines a child prints travel
//! to the parent (as its return value, or over a pipe when the child does not
//! return), so the report shows them in a stable order.

use std::time::{Duration, Instant};

use multiproc::{Connection, Pipe, Process, current_process};

use crate::{Error, PATIENCE, Report};

/// What [`named_processes`] showed: for each process, the name its handle
/// has and the name the child saw for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `(handle name, name seen in the child)`, in start order.
    pub processes: Vec<(String, String)>,
}

/// A child that says when it starts and exits, under its process name.
fn named_worker(nap_ms: u64) -> Vec<String> {
    let name = current_process().name;
    let first = format!("{name} Starting");
    std::thread::sleep(Duration::from_millis(nap_ms));
    vec![first, format!("{name} Exiting")]
}

/// Two named processes and one with the default name.
///
/// # Errors
///
/// A child could not start or did not return.
pub fn named_processes() -> Result<Report<Names>, Error> {
    let mut procs = vec![
        Process::builder().name("worker 1").spawn(named_worker, (100u64,))?,
        Process::spawn(named_worker, (100u64,))?, // default name: Process-N
        Process::builder().name("my_service").spawn(named_worker, (150u64,))?,
    ];
    let mut lines = Vec::new();
    let mut processes = Vec::new();
    for p in &mut procs {
        let said = p.join_timeout(PATIENCE)?;
        let seen = said.first().and_then(|l| l.strip_suffix(" Starting")).unwrap_or_default().to_string();
        lines.extend(said);
        processes.push((p.name().to_string(), seen));
    }
    Ok(Report { lines, outcome: Names { processes } })
}

/// What [`daemon_join_timeout`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonJoin {
    /// The daemon's `join_timeout` gave up (it was still working).
    pub timed_out: bool,
    /// How long that `join_timeout` waited.
    pub waited: Duration,
    /// `is_alive()` of the daemon right after the timeout.
    pub alive_after_timeout: bool,
    /// Exit code of the non-daemon process after its join.
    pub non_daemon_exitcode: Option<i32>,
    /// Exit code of the daemon after it was terminated.
    pub daemon_exitcode: Option<i32>,
}

/// How long the daemon works (the Python program's 2 s would do; 10 s
/// leaves a loaded machine room to see it still alive after the join
/// timed out, and costs nothing: it is terminated before), and how long
/// the parent waits for it.
const DAEMON_WORK: Duration = Duration::from_secs(10);
const DAEMON_WAIT: Duration = Duration::from_millis(500);

/// The daemon: says it started (over the pipe, since it will not return),
/// then works for longer than the parent waits.
fn daemon(log: Connection<String>) {
    let name = current_process().name;
    let _ = log.send(&format!("Starting: {name}"));
    std::thread::sleep(DAEMON_WORK);
    let _ = log.send(&format!("Exiting : {name}"));
}

fn non_daemon() -> Vec<String> {
    let name = current_process().name;
    vec![format!("Starting: {name}"), format!("Exiting : {name}")]
}

/// A daemon that outlives a `join_timeout`, and a non-daemon joined normally.
/// At the end the daemon is terminated, as the parent's exit would do.
///
/// # Errors
///
/// A child could not start, or a join failed in an unexpected way.
pub fn daemon_join_timeout() -> Result<Report<DaemonJoin>, Error> {
    let (log_rx, log_tx) = Pipe::<String>::one_way()?;
    let mut d = Process::builder().name("daemon").daemon(true).spawn(daemon, (log_tx,))?;
    let mut n = Process::builder().name("non-daemon").daemon(false).spawn(non_daemon, ())?;
    let mut lines = vec![log_rx.recv_timeout(PATIENCE)?];

    let start = Instant::now();
    let joined = d.join_timeout(DAEMON_WAIT);
    let waited = start.elapsed();
    let timed_out = matches!(&joined, Err(e) if e.is_timeout());
    if !timed_out {
        return Err(Error::Unexpected(format!("the daemon's join_timeout returned {joined:?}")));
    }
    let alive_after_timeout = d.is_alive();
    lines.push(format!("d.join_timeout({DAEMON_WAIT:?}) gave up after {waited:.2?}"));
    lines.push(format!("d.is_alive() {alive_after_timeout}"));

    lines.extend(n.join_timeout(PATIENCE)?);
    let non_daemon_exitcode = n.exitcode();
    lines.push(format!("n.exitcode = {non_daemon_exitcode:?}"));

    // At the parent's exit a daemon is terminated; do it now, explicitly.
    d.terminate()?;
    let _ = d.join_timeout(PATIENCE);
    let daemon_exitcode = d.exitcode();
    lines.push(format!("d terminated as the parent's exit would: d.exitcode = {daemon_exitcode:?}"));
    Ok(Report {
        lines,
        outcome: DaemonJoin { timed_out, waited, alive_after_timeout, non_daemon_exitcode, daemon_exitcode },
    })
}

/// What [`terminate_join`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminateJoin {
    /// `is_alive()` before start, after start, right after terminate, after join.
    pub alive: [bool; 4],
    /// The exit code after the join.
    pub exitcode: Option<i32>,
    /// The worker said it started (over the pipe).
    pub worker_started: bool,
}

/// The slow worker: says it started, then works far longer than the parent lets it.
fn slow_worker(log: Connection<String>) {
    let _ = log.send(&"Starting worker".to_string());
    std::thread::sleep(Duration::from_secs(10));
    let _ = log.send(&"Finished worker".to_string());
}

/// Terminate a running process, then join it to collect its status.
///
/// # Errors
///
/// The child could not start, or did not say it started.
pub fn terminate_join() -> Result<Report<TerminateJoin>, Error> {
    let (log_rx, log_tx) = Pipe::<String>::one_way()?;
    let mut p = Process::builder().build(slow_worker, (log_tx,))?;
    let show = |stage: &str, p: &Process| {
        format!("{stage:<11} {} alive={} exitcode={:?}", p.name(), p.is_alive(), p.exitcode())
    };
    let mut lines = vec![show("BEFORE:", &p)];
    let before = p.is_alive();
    p.start()?;
    let started = log_rx.recv_timeout(PATIENCE)?;
    lines.push(started.clone());
    lines.push(show("DURING:", &p));
    let during = p.is_alive();
    p.terminate()?;
    lines.push(show("TERMINATED:", &p));
    let after_terminate = p.is_alive();
    let joined = p.join_timeout(PATIENCE);
    lines.push(show("JOINED:", &p));
    if let Err(e) = joined {
        lines.push(format!("join: {e}"));
    }
    let exitcode = p.exitcode();
    Ok(Report {
        lines,
        outcome: TerminateJoin {
            alive: [before, during, after_terminate, p.is_alive()],
            exitcode,
            worker_started: started == "Starting worker",
        },
    })
}

fn exit_error() {
    std::process::exit(1)
}

fn exit_ok() {}

/// Returns 1: the value goes back to the parent's `join`, the exit code is 0.
fn return_value() -> i32 {
    1
}

fn raises() {
    panic!("There was an error!")
}

fn terminated() {
    std::thread::sleep(Duration::from_secs(10))
}

/// What [`exit_codes`] showed: `(name, exitcode)` per process, in start order.
pub type ExitCodes = Vec<(String, Option<i32>)>;

/// Joins `p` (its error is the point here: the exit code tells the story)
/// and returns its name and exit code.
fn join_for_exit_code<T: serde::Serialize + serde::de::DeserializeOwned>(p: &mut Process<T>) -> (String, Option<i32>) {
    let _ = p.join_timeout(PATIENCE);
    (p.name().to_string(), p.exitcode())
}

/// Python's exit codes: `exit(1)` → 1, a return → 0, a returned value → 0
/// (the value is not the exit code), a panic (an exception) → 1,
/// terminated → −15.
///
/// # Errors
///
/// A child could not start.
pub fn exit_codes() -> Result<Report<ExitCodes>, Error> {
    // Every function is its own type (a `fn()` pointer would carry state and
    // is refused at compile time), and `return_value` returns an `i32`, so
    // the five handles are started one by one, in the seed's order.
    let mut exit_error = Process::builder().name("exit_error").spawn(exit_error, ())?;
    let mut exit_ok = Process::builder().name("exit_ok").spawn(exit_ok, ())?;
    let mut return_value = Process::builder().name("return_value").spawn(return_value, ())?;
    let mut raises = Process::builder().name("raises").spawn(raises, ())?;
    let mut terminated = Process::builder().name("terminated").spawn(terminated, ())?;
    terminated.terminate()?;
    let outcome: ExitCodes = vec![
        join_for_exit_code(&mut exit_error),
        join_for_exit_code(&mut exit_ok),
        join_for_exit_code(&mut return_value),
        join_for_exit_code(&mut raises),
        join_for_exit_code(&mut terminated),
    ];
    let lines = outcome.iter().map(|(name, code)| format!("{name:>15}.exitcode = {code:?}")).collect();
    Ok(Report { lines, outcome })
}
