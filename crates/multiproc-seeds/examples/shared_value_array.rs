//! Seed 003: `shared_value_array`. Run with `cargo run -p multiproc-seeds --example shared_value_array`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("shared_value_array")
}
