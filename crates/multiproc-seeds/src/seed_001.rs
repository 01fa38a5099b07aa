//! Seed 001 (`multiprocessing`): the two ways to define a process, and a
//! duplex `Pipe` between parent and child.
//!
//! ```python
//! def fun1(name):
//!     print('测试%s多进程' % name)            # "testing %s multiprocessing"
//!
//! class MyProcess(Process):
//!     def __init__(self, name):
//!         super(MyProcess, self).__init__()
//!         self.name = name
//!     def run(self):
//!         print('测试%s多进程' % self.name)
//!
//! def fun1(conn):                             # the Pipe example
//!     print('子进程发送消息：')                # "child sends"
//!     conn.send('你好主进程')                  # "hello, parent"
//!     print('子进程接受消息：')                # "child receives"
//!     print(conn.recv())
//!     conn.close()
//!
//! conn1, conn2 = Pipe()
//! p = Process(target=fun1, args=(conn2,))
//! p.start()
//! print(conn1.recv())
//! conn1.send("你好子进程")                     # "hello, child"
//! p.join()
//! ```

use multiproc::{Connection, Pipe, Process, Run, current_process};
use serde::{Deserialize, Serialize};

use crate::{Error, PATIENCE, Report};

/// What [`process_kinds`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessKinds {
    /// What each function process returned.
    pub from_functions: Vec<String>,
    /// What each process-type process returned.
    pub from_types: Vec<String>,
    /// Exit codes of all ten, function processes first.
    pub exit_codes: Vec<Option<i32>>,
}

/// A process given as a function (Python's `Process(target=fun1, args=…)`).
fn fun1(name: String) -> String {
    format!("testing {name} multiprocessing in {}", current_process().name)
}

/// A process given as a type with a `run` method (Python's `Process` subclass).
#[derive(Debug, Serialize, Deserialize)]
pub struct MyProcess {
    /// Shown by `run`.
    pub name: String,
}

impl Run for MyProcess {
    type Output = String;
    fn run(self) -> String {
        format!("testing {} multiprocessing in {}", self.name, current_process().name)
    }
}

/// Five function processes, then five process-type processes.
///
/// # Errors
///
/// A child could not start or did not return.
pub fn process_kinds() -> Result<Report<ProcessKinds>, Error> {
    let mut lines = vec!["-- method 1: a function".to_string()];
    let mut functions: Vec<Process<String>> =
        (0..5).map(|i| Process::spawn(fun1, (format!("Python {i}"),))).collect::<Result<_, _>>()?;
    let mut from_functions = Vec::new();
    let mut exit_codes = Vec::new();
    for p in &mut functions {
        from_functions.push(p.join_timeout(PATIENCE)?);
        exit_codes.push(p.exitcode());
    }
    lines.extend(from_functions.iter().cloned());

    lines.push("-- method 2: a process type (impl Run)".to_string());
    let mut types: Vec<Process<String>> =
        (0..5).map(|i| Process::spawn_run(MyProcess { name: format!("Python {i}") })).collect::<Result<_, _>>()?;
    let mut from_types = Vec::new();
    for p in &mut types {
        from_types.push(p.join_timeout(PATIENCE)?);
        exit_codes.push(p.exitcode());
    }
    lines.extend(from_types.iter().cloned());
    lines.push("end of test".to_string());
    Ok(Report { lines, outcome: ProcessKinds { from_functions, from_types, exit_codes } })
}

/// What [`pipe_ping_pong`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingPong {
    /// Messages the parent received, in order.
    pub parent_received: Vec<String>,
    /// Messages the child received, in order (its return value).
    pub child_received: Vec<String>,
}

/// Rounds of ping-pong after the greeting.
const ROUNDS: usize = 3;

/// The child: greets the parent, then answers every message (`ping N` with
/// `pong N`) until the parent closes its end; returns what it received.
fn pong(conn: Connection<String>) -> Vec<String> {
    let mut received = Vec::new();
    if conn.send(&"hello, parent".to_string()).is_err() {
        return received;
    }
    while let Ok(msg) = conn.recv_timeout(PATIENCE) {
        let reply = match msg.strip_prefix("ping ") {
            Some(n) => format!("pong {n}"),
            None => format!("thanks for \"{msg}\""),
        };
        received.push(msg);
        if conn.send(&reply).is_err() {
            break;
        }
    }
    received
}

/// A duplex pipe: the child greets, the parent greets back, then three rounds
/// of ping-pong; the parent closes its end and the child returns.
///
/// # Errors
///
/// The child could not start, a message did not arrive in time, or the child
/// did not return.
pub fn pipe_ping_pong() -> Result<Report<PingPong>, Error> {
    let (conn1, conn2) = Pipe::<String>::duplex()?;
    let mut p = Process::spawn(pong, (conn2,))?;
    let mut lines = Vec::new();
    let mut parent_received = Vec::new();

    let greeting = conn1.recv_timeout(PATIENCE)?;
    lines.push(format!("parent receives: {greeting}"));
    parent_received.push(greeting);
    let mut to_send = vec!["hello, child".to_string()];
    to_send.extend((1..=ROUNDS).map(|i| format!("ping {i}")));
    for msg in to_send {
        lines.push(format!("parent sends:    {msg}"));
        conn1.send(&msg)?;
        let answer = conn1.recv_timeout(PATIENCE)?;
        lines.push(format!("parent receives: {answer}"));
        parent_received.push(answer);
    }
    drop(conn1); // end of stream: the child's recv fails and it returns
    let child_received = p.join_timeout(PATIENCE)?;
    lines.push(format!("child received:  {}", child_received.join(" | ")));
    Ok(Report { lines, outcome: PingPong { parent_received, child_received } })
}
