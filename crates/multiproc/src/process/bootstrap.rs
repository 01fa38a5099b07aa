//! What a re-executed or forked process does before (instead of) `main`:
//! the one dispatcher that decides a re-executed binary's role.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};

use super::protocol::{Reply, Start};
use super::{RemotePanic, identity};
use crate::log::lifecycle;
use crate::sys::Deadline;
use crate::sys::imp::{self, spawn::CHILD_CHANNEL_FD};
use crate::wire::{self, Channel, Frame, Kind, WireError};

/// Environment variable that tells a re-executed binary which role it has:
/// `<role>:<pid of the process that started it>` (see [`Role`]). It is the
/// only such variable; the binary removes it before anything else runs.
pub(crate) const ROLE_ENV: &str = "MULTIPROC_ROLE";

/// What a re-executed binary is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A child running one task for its parent.
    Child,
    /// The fork server of its parent.
    ForkServer,
    /// The shared-memory tracker of its creator (detaches at once).
    ShmTracker,
}

impl Role {
    /// The name in [`ROLE_ENV`].
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Child => "child",
            Role::ForkServer => "forkserver",
            Role::ShmTracker => "shm-tracker",
        }
    }

    fn parse(value: &str) -> Option<(Role, i32)> {
        let (name, pid) = value.split_once(':')?;
        let role = [Role::Child, Role::ForkServer, Role::ShmTracker].into_iter().find(|r| r.name() == name)?;
        Some((role, pid.parse().ok()?))
    }
}

imp::init::before_main!(on_load);

/// Exit code of a child whose task failed before or after running (bad
/// arguments, refused build, unserializable result): like a Python exception.
pub(crate) const EXIT_FAILED: i32 = 1;

/// Called from the `.init_array` hook before `main`: dispatches a
/// re-executed binary to its role; returns (and `main` runs) in a program
/// started normally.
fn on_load() {
    let Some(value) = std::env::var_os(ROLE_ENV) else {
        return;
    };
    // SAFETY: this runs before `main`, while the process is single-threaded, so
    // no other thread can be reading the environment.
    unsafe { std::env::remove_var(ROLE_ENV) };
    let value = value.to_string_lossy().into_owned();
    match Role::parse(&value) {
        Some((Role::Child, parent)) => {
            imp::die_with_parent(parent);
            let channel = adopt_channel();
            child_main(channel, Origin::Exec)
        }
        Some((Role::ForkServer, parent)) => {
            imp::die_with_parent(parent);
            let control = adopt_channel();
            super::forkserver::serve(control)
        }
        Some((Role::ShmTracker, creator)) => {
            // Not tied to its creator: it must outlive it.
            let channel = adopt_channel();
            imp::shm_tracker::detach();
            crate::shared::tracker::serve(channel, creator);
            imp::exit_immediately(0)
        }
        None => {
            eprintln!("multiproc: bad {ROLE_ENV} value {value:?}; exiting");
            std::process::exit(EXIT_FAILED)
        }
    }
}

fn adopt_channel() -> OwnedFd {
    match imp::adopt_inherited(CHILD_CHANNEL_FD) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("multiproc: started as a child but descriptor {CHILD_CHANNEL_FD} is not usable ({e}); exiting");
            std::process::exit(EXIT_FAILED)
        }
    }
}

/// How a child came to be, which decides how it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Re-executed: its own program image, which ends with `exit` like any
    /// program (exit handlers the task registered run).
    Exec,
    /// Forked (from the fork server or the parent): ends with `_exit` after
    /// flushing Rust's stdout and ending its own children, as Python's forked
    /// children do. The exit handlers and library destructors it would run
    /// belong to the image it was forked from, and skipping them spares the
    /// child some 15 page faults on the way out (measured).
    Forked,
}

/// In a spare child of the fork server, while it waits for its task: sets up
/// what does not depend on the task (the panic hook), so that its page faults
/// happen now and not while the parent waits. (Touching more ahead of time —
/// stack pages, thread locals, the standard streams — measured slower: the
/// spare's set-up then competes with the running child for the CPUs.)
pub(crate) fn prepare_forked_child() {
    install_panic_hook();
}

/// Runs the task the parent sends on `fd`, reports the outcome, exits.
pub(crate) fn child_main(fd: OwnedFd, origin: Origin) -> ! {
    run_child(Channel::unix(fd), None, origin)
}

/// Runs the task that arrived as `first`, or else the one the parent sends
/// on `channel`; reports the outcome, exits.
pub(crate) fn run_child(channel: Channel, first: Option<Frame>, origin: Origin) -> ! {
    let frame = match first.map_or_else(|| channel.recv(Deadline::NEVER, None).ok(), Some) {
        Some(f) if f.kind == Kind::Start => f,
        // The parent died before sending the task, or sent garbage: nothing to do.
        _ => end(origin, EXIT_FAILED),
    };
    let start: Start = match wire::decode(&frame.payload, Vec::new()) {
        Ok(s) => s,
        Err(e) => {
            let reply = Reply::Failed(format!("could not decode the start message: {e}"));
            finish(&channel, reply, Vec::new(), origin)
        }
    };
    let own = imp::build_id::build_id();
    if start.build_id != own {
        finish(&channel, Reply::Refused { child_build_id: own.to_string() }, Vec::new(), origin);
    }
    identity::become_child(&start);
    crate::log::adopt_state(start.log);
    let fds = super::output::take_child_ends(frame.fds, start.stdio);
    // As in any Rust program's `main` (and a Python child): a write to a
    // pipe whose reader left fails with BrokenPipe instead of killing us.
    imp::ignore_sigpipe();
    install_panic_hook();
    lifecycle!(INFO, "child process started, running its task");
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| super::task::run_entry(start.entry, &start.args, fds)));
    let (reply, fds) = match outcome {
        Ok(Ok(encoded)) => (Reply::Value(encoded.bytes), encoded.fds),
        Ok(Err(message)) => (Reply::Failed(message), Vec::new()),
        Err(payload) => (Reply::Panicked(take_panic(payload.as_ref())), Vec::new()),
    };
    finish(&channel, reply, fds, origin)
}

/// Sends the reply, then exits like Python: 0 after a value, 1 otherwise,
/// after joining non-daemon children and terminating daemon ones.
/// A value that cannot be sent (too many descriptors, no memory for it) is
/// reported as a failure that says why, with exit code 1.
fn finish(channel: &Channel, reply: Reply, fds: Vec<OwnedFd>, origin: Origin) -> ! {
    if let Reply::Panicked(p) = &reply {
        lifecycle!(DEBUG, "the task panicked: {}", p.message);
    }
    let is_value = matches!(reply, Reply::Value(_));
    let sent = wire::encode(&reply).and_then(|encoded| channel.send(Kind::Reply, &encoded.bytes, &fds));
    let code = match sent {
        // Closed: the parent is gone or dropped the handle; nothing to tell then.
        Ok(()) | Err(WireError::Closed) => {
            if is_value {
                0
            } else {
                EXIT_FAILED
            }
        }
        Err(e) if is_value => {
            let why = Reply::Failed(format!("the task's result could not be sent back to the parent: {e}"));
            if let Ok(encoded) = wire::encode(&why) {
                let _ = channel.send(Kind::Reply, &encoded.bytes, &[]);
            }
            EXIT_FAILED
        }
        Err(_) => EXIT_FAILED,
    };
    lifecycle!(INFO, "process exiting with exitcode {code}");
    end(origin, code)
}

/// Ends a child as its origin demands: a re-executed child with `exit`, a
/// forked one only with `_exit` (its exit handlers and library destructors
/// belong to the image it was forked from), after doing what `exit` would do
/// that matters to the task's output and children.
pub(crate) fn end(origin: Origin, code: i32) -> ! {
    match origin {
        Origin::Exec => std::process::exit(code),
        Origin::Forked => exit_forked(code),
    }
}

/// Ends a forked child: flushes Rust's standard streams, ends its own
/// children, then `_exit`s. The only way a forked child ends.
pub(crate) fn exit_forked(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    super::child::end_children();
    imp::exit_immediately(code)
}

thread_local! {
    /// The last panic on this thread, recorded by the hook.
    static LAST_PANIC: RefCell<Option<RemotePanic>> = const { RefCell::new(None) };
    /// True while `quiet_panics` runs code whose panics are reported to the
    /// parent rather than printed here.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Records message, location and backtrace of every panic on the thread that
/// raised it, then prints it as the default hook does (so the child's stderr
/// shows it, like a traceback) unless it happened inside [`quiet_panics`].
/// Installed once per process.
pub(crate) fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let record = RemotePanic {
                message: panic_message(info.payload()),
                location: info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
                backtrace: std::backtrace::Backtrace::force_capture().to_string(),
                process: identity::current_name(),
            };
            // Either thread-local may be gone already (a panic in another
            // thread-local's destructor, caught there): the record is then
            // dropped and the panic printed, not a panic in the hook (which
            // aborts).
            let _ = LAST_PANIC.try_with(|l| *l.borrow_mut() = Some(record));
            if !QUIET.try_with(Cell::get).unwrap_or(false) {
                default(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside is recorded for the parent (see [`take_panic`])
/// without being printed. For task code whose failures the caller reports.
pub(crate) fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
    QUIET.with(|q| q.set(true));
    let result = f();
    QUIET.with(|q| q.set(false));
    result
}

/// The record of the panic whose payload was caught on this thread.
pub(crate) fn take_panic(payload: &(dyn std::any::Any + Send)) -> RemotePanic {
    LAST_PANIC.try_with(|l| l.borrow_mut().take()).ok().flatten().unwrap_or_else(|| RemotePanic {
        message: panic_message(payload),
        location: None,
        backtrace: String::new(),
        process: identity::current_name(),
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
