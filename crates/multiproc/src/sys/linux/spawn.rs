//! Starting a fresh copy of the running executable with `posix_spawn`.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::signal::Pid;

/// The descriptor number at which a spawned child finds its channel to the parent.
pub(crate) const CHILD_CHANNEL_FD: i32 = 3;

/// What to start and how.
#[derive(Debug)]
pub(crate) struct SpawnRequest<'a> {
    /// Executable to run.
    pub exe: &'a Path,
    /// Full environment of the child, as `KEY=VALUE` entries.
    pub env: Vec<OsString>,
    /// Working directory, if different from ours.
    pub cwd: Option<&'a Path>,
    /// The descriptor the child receives as [`CHILD_CHANNEL_FD`]; every other
    /// descriptor above stderr is closed in the child.
    pub channel: BorrowedFd<'a>,
}

/// Starts the executable; returns the child's pid.
pub(crate) fn spawn(req: &SpawnRequest<'_>) -> io::Result<Pid> {
    let exe = cstring(req.exe.as_os_str().as_bytes())?;
    let argv_storage = [exe.clone()];
    let env_storage: Vec<CString> = req.env.iter().map(|e| cstring(e.as_bytes())).collect::<io::Result<_>>()?;
    let argv = null_terminated(&argv_storage);
    let envp = null_terminated(&env_storage);
    let cwd = req.cwd.map(|c| cstring(c.as_os_str().as_bytes())).transpose()?;

    let mut actions = FileActions::new()?;
    actions.dup2(req.channel.as_raw_fd(), CHILD_CHANNEL_FD)?;
    actions.close_from(CHILD_CHANNEL_FD + 1)?;
    if let Some(cwd) = &cwd {
        actions.chdir(cwd)?;
    }
    let attr = SpawnAttr::with_default_signals()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer passed is valid for the duration of the call: the
    // file actions and attributes are initialised, argv/envp are null-terminated
    // arrays of pointers into CStrings that outlive the call.
    let rc = unsafe { libc::posix_spawn(&mut pid, exe.as_ptr(), &actions.0, &attr.0, argv.as_ptr(), envp.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(pid)
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path or environment entry"))
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings.iter().map(|s| s.as_ptr().cast_mut()).chain(std::iter::once(std::ptr::null_mut())).collect()
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        let mut raw = std::mem::MaybeUninit::uninit();
        // SAFETY: init writes a valid object into `raw`.
        check(unsafe { libc::posix_spawn_file_actions_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialised just above.
        Ok(FileActions(unsafe { raw.assume_init() }))
    }

    fn dup2(&mut self, from: i32, to: i32) -> io::Result<()> {
        // SAFETY: `self.0` is initialised; the call only records the action.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from, to) })
    }

    fn close_from(&mut self, first: i32) -> io::Result<()> {
        // SAFETY: `self.0` is initialised; the call only records the action.
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, first) })
    }

    fn chdir(&mut self, dir: &CString) -> io::Result<()> {
        // SAFETY: `self.0` is initialised; glibc copies the path.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialised by `new` and is destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

struct SpawnAttr(libc::posix_spawnattr_t);

impl SpawnAttr {
    /// Attributes that give the child an empty signal mask and default handlers
    /// (but for an ignored SIGINT, which stays ignored).
    fn with_default_signals() -> io::Result<SpawnAttr> {
        let mut raw = std::mem::MaybeUninit::uninit();
        // SAFETY: init writes a valid object into `raw`.
        check(unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialised just above.
        let mut attr = SpawnAttr(unsafe { raw.assume_init() });
        // SAFETY: sigset_t values are plain data; the libc calls fill them.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            // An ignored SIGINT stays ignored, as across a plain exec: a
            // program started in the background by a shell (which ignores
            // SIGINT there) keeps that in its children, and the fork server
            // passes it on to the children it forks.
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGINT, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_IGN
            {
                libc::sigdelset(&mut all, libc::SIGINT);
            }
            libc::sigemptyset(&mut none);
            check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &all))?;
            check(libc::posix_spawnattr_setsigmask(&mut attr.0, &none))?;
            let flags = libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK;
            check(libc::posix_spawnattr_setflags(&mut attr.0, flags as libc::c_short))?;
        }
        Ok(attr)
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialised by `with_default_signals` and is destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) }
}

/// Forks the calling process. In the child, `child` runs and must not return.
///
/// # Safety
///
/// In a multi-threaded process the child may only call async-signal-safe
/// functions until it execs or exits; the caller takes responsibility for
/// what `child` does (this is the documented hazard of the `fork` start method).
pub(crate) unsafe fn fork(child: impl FnOnce()) -> io::Result<Pid> {
    // SAFETY: the caller accepts fork's restrictions (see above).
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // A panic must not unwind into the copy of the forking thread's
            // frames (its thread would end, and with it the child, through
            // `exit` and the parent image's exit handlers).
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
            // SAFETY: _exit ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(1) }
        }
        pid => Ok(pid),
    }
}

/// Closes every descriptor from `first` upwards except `keep`, in a freshly
/// forked child.
pub(crate) fn close_fds_from_except(first: i32, keep: &[i32]) {
    let mut start = first as u32;
    let mut keep: Vec<u32> = keep.iter().map(|k| *k as u32).filter(|k| *k >= start).collect();
    keep.sort_unstable();
    for k in keep {
        if k > start {
            // SAFETY: close_range only closes descriptors; nothing borrows them in
            // a freshly forked child that is about to run its bootstrap.
            unsafe { libc::close_range(start, k - 1, 0) };
        }
        start = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::close_range(start, u32::MAX, 0) };
}
