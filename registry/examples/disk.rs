//! Runs the system-disk CLI directly:
//! `cargo run -p registry --features std --example disk -- <command> …`
//! (`cargo xtask disk …` is the usual route).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = registry::cli::cli_main(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
