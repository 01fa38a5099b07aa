//! The hook that runs before `main`, so a re-executed binary can become a child
//! (or the fork server) without the user's `main` ever running.

/// Placed in `.init_array`: the C runtime calls it before `main` in every
/// program that links this object file.
#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;

extern "C" fn on_load() {
    crate::process::bootstrap::on_load();
}

/// Makes sure the object file holding the hook is linked: every code path that
/// starts a child calls this, so a binary that can start children also carries
/// the hook that lets those children run.
pub(crate) fn keep_linked() {
    std::hint::black_box(&ON_LOAD);
}
