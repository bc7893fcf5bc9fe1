//! The `kumo` binary: parse, run, and turn any error into one line and exit code 1.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with code 2.
    let cli = kumo_cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<kumo_cli::Error>().is_some_and(kumo_cli::Error::is_broken_pipe) => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{}", kumo_cli::error_line(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: kumo_cli::Cli) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(kumo_cli::run(cli))?;
    Ok(())
}
