//! Seed 001: `thumbnails`. Run with `cargo run -p multiproc-seeds --example thumbnails`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("thumbnails")
}
