//! `set_start_method` changes how children start when the builder does not
//! say. (Its own binary: the default is process-wide.) Which method started a
//! child shows in its parent pid: a fork-server child's parent is the server,
//! the others' parent is us.

mod process_support;

use multiproc::{Process, StartMethod, get_start_method, set_start_method};
use process_support::JOIN;

fn parent_pid() -> i32 {
    std::os::unix::process::parent_id() as i32
}

fn default_child_parent() -> i32 {
    Process::spawn(parent_pid, ()).unwrap().join_timeout(JOIN).unwrap()
}

#[test]
fn set_start_method_changes_the_default() {
    let me = std::process::id() as i32;
    assert_eq!(get_start_method(), StartMethod::ForkServer);
    let server = default_child_parent();
    assert_ne!(server, me, "by default a child is forked by the fork server");
    assert_eq!(process_support::ppid_of(server), me, "the fork server is our child");

    for method in [StartMethod::Spawn, StartMethod::Fork] {
        set_start_method(method);
        assert_eq!(get_start_method(), method);
        assert_eq!(default_child_parent(), me, "{method:?}: the child is ours");
        // A builder's own choice still wins over the default.
        let mut p = Process::builder().start_method(StartMethod::ForkServer).spawn(parent_pid, ()).unwrap();
        assert_eq!(p.join_timeout(JOIN).unwrap(), server, "{method:?}");
    }

    set_start_method(StartMethod::ForkServer);
    assert_eq!(get_start_method(), StartMethod::ForkServer);
    assert_eq!(default_child_parent(), server);
}
