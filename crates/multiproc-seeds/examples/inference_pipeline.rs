//! Seed 004: `inference_pipeline`. Run with `cargo run -p multiproc-seeds --example inference_pipeline`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("inference_pipeline")
}
