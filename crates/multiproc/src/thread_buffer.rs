//! Byte buffers a thread keeps from one message to the next (a message then
//! costs no allocation), with a fallback that never fails: a fresh buffer
//! when the thread's own is in use further up the stack (a `Serialize` impl
//! that sends) or already gone (a call from a thread-local's destructor as
//! the thread ends, where touching a destroyed thread-local would panic and
//! abort the process).

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread's kept buffer.
pub(crate) type Kept = LocalKey<RefCell<Vec<u8>>>;

/// Runs `f` with the thread's buffer in `key`, cleared, or with a fresh one
/// (see the module docs). A buffer grown past `keep_up_to` bytes is not
/// kept for the next call.
pub(crate) fn with_kept<R>(key: &'static Kept, keep_up_to: usize, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut f = Some(f);
    let kept = key.try_with(|cell| {
        let mut buf = cell.try_borrow_mut().ok()?;
        buf.clear();
        let out = f.take().expect("f runs once")(&mut buf);
        if buf.capacity() > keep_up_to {
            *buf = Vec::new();
        }
        Some(out)
    });
    match kept {
        Ok(Some(out)) => out,
        _ => f.take().expect("f has not run")(&mut Vec::new()),
    }
}
