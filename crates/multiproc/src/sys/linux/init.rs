//! Running code before `main`, so a re-executed binary can take another role
//! (a child, the fork server, the shm tracker) without the user's `main`
//! ever running.

/// Places a hook in `.init_array` that calls `$f` before `main` in every
/// program that links the calling module (the C runtime runs the entries in
/// every loaded object), and defines `keep_linked()` beside it: every code
/// path that starts a helper process calls it, so a binary that can start
/// one also carries the hook that lets the helper run.
macro_rules! before_main {
    ($f:path) => {
        #[used]
        #[unsafe(link_section = ".init_array")]
        static ON_LOAD: extern "C" fn() = {
            extern "C" fn before_main_hook() {
                $f()
            }
            before_main_hook
        };

        /// Makes sure the object file holding the `.init_array` hook is linked.
        pub(crate) fn keep_linked() {
            std::hint::black_box(&ON_LOAD);
        }
    };
}
pub(crate) use before_main;
