//! `vtpm-sim --port N --state DIR`: the vTPM engine as a Microsoft-simulator
//! protocol server (commands on N, platform signals on N+1) for tpm2-tools.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut port: u16 = 2321;
    let mut state = PathBuf::from("vtpm-state");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--port", Some(v)) => match v.parse() {
                Ok(p) => port = p,
                Err(_) => {
                    eprintln!("vtpm-sim: bad port {v}");
                    return ExitCode::FAILURE;
                }
            },
            ("--state", Some(v)) => state = PathBuf::from(v),
            _ => {
                eprintln!("usage: vtpm-sim [--port N] [--state DIR]");
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!(
        "vtpm-sim: commands on 127.0.0.1:{port}, platform on {}, state in {}",
        port as u32 + 1,
        state.display()
    );
    match vtpm::run_simulator(port, &state) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vtpm-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
