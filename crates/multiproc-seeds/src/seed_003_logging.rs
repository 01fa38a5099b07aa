//! Seed 003 (`Python多进程库multiprocessing…`), "日志" (logging): turn on the
//! library's logging and watch a child's life in the records. The Python
//! program:
//!
//! ```python
//! def worker():
//!     print 'Doing some work'
//!     sys.stdout.flush()
//!
//! if __name__ == '__main__':
//!     multiprocessing.log_to_stderr()
//!     logger = multiprocessing.get_logger()
//!     logger.setLevel(logging.INFO)
//!     p = multiprocessing.Process(target=worker)
//!     p.start()
//!     p.join()
//! ```
//!
//! The program runs in a child of its own (named `MainProcess`, as Python's
//! would be), whose standard output and error are captured, so the report
//! shows exactly what it printed: the records on stderr, with the level and
//! process name in front (the child took the level its parent set), and the
//! worker's line on stdout.

use multiproc::{ChildOutput, Level, Process, log_to_stderr, logger};

use crate::{Error, PATIENCE, Report};

/// What [`logging`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The program's standard error: one record per line.
    pub stderr: Vec<String>,
    /// The program's standard output.
    pub stdout: Vec<String>,
}

fn worker() {
    println!("Doing some work");
}

/// Seed 003's `__main__`: logging on at INFO, one child, joined.
fn program() -> Result<(), String> {
    log_to_stderr(Level::INFO);
    logger().set_level(Some(Level::INFO));
    let mut p = Process::new(worker, ()).map_err(|e| e.to_string())?;
    p.start().map_err(|e| e.to_string())?;
    p.join_timeout(PATIENCE).map_err(|e| e.to_string())
}

/// Runs the program and returns what it printed.
///
/// # Errors
///
/// The program could not start, failed, or printed something that is not text.
pub fn logging() -> Result<Report<Logged>, Error> {
    let mut main = Process::builder()
        .name("MainProcess")
        .stdout(ChildOutput::Capture)
        .stderr(ChildOutput::Capture)
        .spawn(program, ())?;
    main.join_timeout(PATIENCE)?.map_err(Error::Unexpected)?;
    let text = |bytes: Option<Vec<u8>>| -> Result<Vec<String>, Error> {
        let bytes = bytes.ok_or_else(|| Error::Unexpected("the output was not captured".into()))?;
        let text = String::from_utf8(bytes).map_err(|e| Error::Unexpected(e.to_string()))?;
        Ok(text.lines().map(str::to_string).collect())
    };
    let logged = Logged { stderr: text(main.captured_stderr())?, stdout: text(main.captured_stdout())? };
    let mut lines = vec!["stderr:".to_string()];
    lines.extend(logged.stderr.iter().map(|l| format!("  {l}")));
    lines.push("stdout:".to_string());
    lines.extend(logged.stdout.iter().map(|l| format!("  {l}")));
    Ok(Report { lines, outcome: logged })
}
