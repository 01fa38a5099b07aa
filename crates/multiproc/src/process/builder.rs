//! Options for a new process: [`ProcessBuilder`], and [`Run`] for a value
//! that runs as a process.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::launch::EnvChanges;
use super::{ChildOutput, EntryRef, Process, ProcessError, StartMethod, Task, get_start_method};
use crate::wire;

/// A value that can run as a process, like a Python `Process` subclass with
/// a `run` method: the value is sent to the child and `run` is called there.
///
/// # Examples
///
/// ```
/// use multiproc::{Process, Run};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Greeter { name: String }
///
/// impl Run for Greeter {
///     type Output = String;
///     fn run(self) -> String { format!("hello, {}", self.name) }
/// }
///
/// let mut p = Process::spawn_run(Greeter { name: "world".into() }).unwrap();
/// assert_eq!(p.join().unwrap(), "hello, world");
/// ```
pub trait Run: Serialize + DeserializeOwned + 'static {
    /// What `run` returns to the parent's `join`.
    type Output: Serialize + DeserializeOwned;
    /// The body of the process.
    fn run(self) -> Self::Output;
}

fn run_value<T: Run>(value: T) -> T::Output {
    value.run()
}

/// Options for a new process. Created by [`Process::builder`].
#[derive(Debug, Clone, Default)]
pub struct ProcessBuilder {
    pub(super) name: Option<String>,
    pub(super) daemon: bool,
    pub(super) env: EnvChanges,
    pub(super) cwd: Option<PathBuf>,
    pub(super) method: Option<StartMethod>,
    pub(super) executable: Option<PathBuf>,
    pub(super) stdout: ChildOutput,
    pub(super) stderr: ChildOutput,
}

impl ProcessBuilder {
    /// The process name (default `Process-N`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon child is terminated when the parent exits normally, and may
    /// not start children of its own. Non-daemon children are waited for.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Sets an environment variable in the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable in the child.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// The child's working directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Where the child's standard output goes: inherited from this process
    /// (the default), captured into the handle
    /// ([`Process::captured_stdout`]), or copied here with the process name
    /// in front of each line.
    pub fn stdout(mut self, how: ChildOutput) -> Self {
        self.stdout = how;
        self
    }

    /// Where the child's standard error goes; as [`ProcessBuilder::stdout`]
    /// ([`Process::captured_stderr`] for a captured one).
    pub fn stderr(mut self, how: ChildOutput) -> Self {
        self.stderr = how;
        self
    }

    /// How to start the child (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Runs another executable as the child (Python's `set_executable`). It
    /// must be the same build as this program, or the child refuses the task
    /// with [`ProcessError::BuildMismatch`].
    ///
    /// Only [`StartMethod::Spawn`] runs an executable: without a
    /// [`start_method`](ProcessBuilder::start_method) the child is spawned
    /// (whatever [`set_start_method`](crate::set_start_method) chose); with another method chosen
    /// explicitly, `start` fails rather than quietly using one of the two.
    pub fn executable(mut self, path: impl AsRef<Path>) -> Self {
        self.executable = Some(path.as_ref().to_path_buf());
        self
    }

    /// The start method this builder asks for.
    pub(super) fn method_to_use(&self) -> Result<StartMethod, ProcessError> {
        match (&self.executable, self.method) {
            (None, method) => Ok(method.unwrap_or_else(get_start_method)),
            (Some(_), None | Some(StartMethod::Spawn)) => Ok(StartMethod::Spawn),
            (Some(_), Some(method)) => Err(ProcessError::Start(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("an executable runs only with StartMethod::Spawn, not {method:?}; drop one of the two options"),
            ))),
        }
    }

    /// Prepares a process running `f(args…)` without starting it; call
    /// [`Process::start`].
    ///
    /// # Errors
    ///
    /// The arguments could not be serialized.
    pub fn build<F, A, R>(self, f: F, args: A) -> Result<Process<R>, ProcessError>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let _ = f;
        let args = wire::encode(&args)?;
        Ok(Process::unstarted(self, EntryRef::of::<F, A, R>(), args))
    }

    /// Starts a process running `f(args…)`; `args` is a tuple of 0 to 8 values.
    ///
    /// # Errors
    ///
    /// The arguments could not be serialized, this is a daemon process, or
    /// the OS could not start the child.
    pub fn spawn<F, A, R>(self, f: F, args: A) -> Result<Process<R>, ProcessError>
    where
        F: Task<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let mut p = self.build(f, args)?;
        p.start()?;
        Ok(p)
    }

    /// Starts a process that calls [`Run::run`] on `value`.
    ///
    /// # Errors
    ///
    /// As for [`ProcessBuilder::spawn`].
    pub fn spawn_run<T: Run>(self, value: T) -> Result<Process<T::Output>, ProcessError> {
        self.spawn(run_value::<T>, (value,))
    }
}
