//! Seed 004: `queue_two_files`. Run with `cargo run -p multiproc-seeds --example queue_two_files`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("queue_two_files")
}
