//! Seed 001: `pool_api`. Run with `cargo run -p multiproc-seeds --example pool_api`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("pool_api")
}
