//! Seed 003: `joinable_queue`. Run with `cargo run -p multiproc-seeds --example joinable_queue`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("joinable_queue")
}
