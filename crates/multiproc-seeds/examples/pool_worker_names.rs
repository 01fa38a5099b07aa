//! Seed 003: `pool_worker_names`. Run with `cargo run -p multiproc-seeds --example pool_worker_names`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("pool_worker_names")
}
