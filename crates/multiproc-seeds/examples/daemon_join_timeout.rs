//! Seed 003: `daemon_join_timeout`. Run with `cargo run -p multiproc-seeds --example daemon_join_timeout`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("daemon_join_timeout")
}
