//! `set_start_method` changes how children start when the builder does not
//! say. (Its own binary: the default is process-wide.) Every child's parent
//! is us; which method started it shows in who loaded its program image: the
//! child itself after `Spawn`, us after `Fork`, the fork server (a child of
//! ours) after `ForkServer`.

mod process_support;

use multiproc::{Process, StartMethod, get_start_method, set_start_method};
use process_support::{FORK, JOIN, image_loader};

/// The child's parent and the process that loaded its image.
fn parent_and_loader() -> (i32, i32, i32) {
    (std::process::id() as i32, std::os::unix::process::parent_id() as i32, image_loader())
}

/// How a child was started, judged from inside it.
fn started_by(p: &mut Process<(i32, i32, i32)>) -> (StartMethod, i32) {
    let me = std::process::id() as i32;
    let (pid, parent, loader) = p.join_timeout(JOIN).unwrap();
    assert_eq!(parent, me, "every child's parent is us");
    let method = if loader == pid {
        StartMethod::Spawn
    } else if loader == me {
        FORK
    } else {
        assert_eq!(process_support::ppid_of(loader), me, "the fork server is our child");
        StartMethod::ForkServer
    };
    (method, loader)
}

fn default_child() -> (StartMethod, i32) {
    started_by(&mut Process::spawn(parent_and_loader, ()).unwrap())
}

#[test]
fn set_start_method_changes_the_default() {
    assert_eq!(get_start_method(), StartMethod::ForkServer);
    let (method, server) = default_child();
    assert_eq!(method, StartMethod::ForkServer, "by default a child is forked by the fork server");

    for method in [StartMethod::Spawn, FORK] {
        set_start_method(method);
        assert_eq!(get_start_method(), method);
        assert_eq!(default_child().0, method);
        // A builder's own choice still wins over the default.
        let mut p = Process::builder().start_method(StartMethod::ForkServer).spawn(parent_and_loader, ()).unwrap();
        assert_eq!(started_by(&mut p), (StartMethod::ForkServer, server), "{method:?}");
    }

    set_start_method(StartMethod::ForkServer);
    assert_eq!(get_start_method(), StartMethod::ForkServer);
    assert_eq!(default_child(), (StartMethod::ForkServer, server));
}
