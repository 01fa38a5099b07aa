//! Seed 000: `five_children`. Run with `cargo run -p multiproc-seeds --example five_children`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("five_children")
}
