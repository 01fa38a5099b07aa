//! Seed 004: `imap_progress`. Run with `cargo run -p multiproc-seeds --example imap_progress`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("imap_progress")
}
