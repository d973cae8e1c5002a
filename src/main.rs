//! The `supervisor` binary: parse the command line, set up logging, run the
//! subcommand, turn the outcome into one of the fixed exit codes.
//!
//! Owns nothing else: every behaviour is in the library (`supervisor::cli`
//! and below), so it can be tested without this binary.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = supervisor::cli::Cli::parse();
    if args.command.dies_on_closed_pipe() {
        // Like `cat` or `grep`: a reader that goes away (`plan | head -1`)
        // ends this process quietly instead of failing a print.
        // SAFETY: no other thread exists yet; SIG_DFL is always valid.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    supervisor::cli::init_tracing(&args);
    let result = supervisor::cli::run(args);
    // `up` queues its console lines (`process::console`): show the last
    // ones, unless the console is stalled.
    supervisor::process::console::drain(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            supervisor::cli::Exit::from_error(&error).into()
        }
    }
}
