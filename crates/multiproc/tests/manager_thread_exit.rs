//! Proxy calls from a thread-local's destructor, as a thread ends (a guard
//! that records something on exit): they must work, not abort the process.
//! Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::cell::RefCell;

use multiproc::manager::{Dict, Manager};
use sync_support::Kid;

thread_local! {
    /// A dict to write a last entry into when the thread ends.
    static ON_EXIT: RefCell<Option<InsertOnExit>> = const { RefCell::new(None) };
}

struct InsertOnExit(Dict<u32, u32>);

impl Drop for InsertOnExit {
    fn drop(&mut self) {
        self.0.insert(2, 20).unwrap();
    }
}

/// In a child: a thread that calls the manager once, and once more from a
/// thread-local destructor (set before the first call, so it runs after
/// the client's own thread-locals are gone).
fn call_from_a_thread_local_destructor(d: Dict<u32, u32>) {
    std::thread::spawn(move || {
        ON_EXIT.with(|g| *g.borrow_mut() = Some(InsertOnExit(d.clone())));
        d.insert(1, 10).unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn a_proxy_call_from_a_thread_local_destructor_works() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    Kid::<()>::spawn(call_from_a_thread_local_destructor, (d.clone(),)).join();
    assert_eq!(d.get(&1).unwrap(), Some(10));
    assert_eq!(d.get(&2).unwrap(), Some(20));
    m.shutdown().unwrap();
}
