//! The `supervisor` binary: parse the command line, set up logging, run the
//! subcommand, turn the outcome into one of the fixed exit codes.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = supervisor::cli::Cli::parse();
    supervisor::cli::init_tracing(&args);
    match supervisor::cli::run(args) {
        Ok(code) => code.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            supervisor::cli::Exit::from_error(&error).into()
        }
    }
}
