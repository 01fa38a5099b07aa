//! Seed 002: `pool_shared_queue`. Run with `cargo run -p multiproc-seeds --example pool_shared_queue`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("pool_shared_queue")
}
