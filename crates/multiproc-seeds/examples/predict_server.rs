//! Seed 000: `predict_server`. Run with `cargo run -p multiproc-seeds --example predict_server`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("predict_server")
}
