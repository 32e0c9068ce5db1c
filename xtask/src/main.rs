//! `cargo xtask …`: see `xtask::cli` for the commands.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    xtask::cli::main(&args)
}
