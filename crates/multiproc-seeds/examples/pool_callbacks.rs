//! Seed 003: `pool_callbacks`. Run with `cargo run -p multiproc-seeds --example pool_callbacks`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("pool_callbacks")
}
