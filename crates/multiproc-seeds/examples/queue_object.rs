//! Seed 003: `queue_object`. Run with `cargo run -p multiproc-seeds --example queue_object`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("queue_object")
}
