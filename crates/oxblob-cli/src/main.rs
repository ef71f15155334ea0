//! The `oxblob` binary: parses the command line, runs the subcommand, reports errors as
//! `oxblob: <what>: <why>` with a non-zero exit code.

use clap::error::ErrorKind;
use clap::Parser;
use oxblob_cli::cmd::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                eprintln!("oxblob: usage: a subcommand is required\n");
                let _ = e.print();
                return ExitCode::from(2);
            }
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                // A failed write of the help text (a closed pipe) is not worth reporting.
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            _ => {
                let text = e.render().to_string();
                let text = text.trim_end();
                let text = text.strip_prefix("error: ").unwrap_or(text);
                eprintln!("oxblob: usage: {text}");
                return ExitCode::from(2);
            }
        },
    };
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxblob: {e}");
            ExitCode::FAILURE
        }
    }
}
