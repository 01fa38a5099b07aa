//! Seed 001: `queue_producers`. Run with `cargo run -p multiproc-seeds --example queue_producers`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("queue_producers")
}
