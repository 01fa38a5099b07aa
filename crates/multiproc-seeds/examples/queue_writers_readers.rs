//! Seed 002: `queue_writers_readers`. Run with `cargo run -p multiproc-seeds --example queue_writers_readers`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("queue_writers_readers")
}
