//! The CLI's error type: what was being done, and why it failed.

use std::fmt;

/// An error shown to the user as `oxblob: <what>: <why>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// What the command was doing, e.g. `opening device 'file:/x'`.
    pub what: String,
    /// Why it failed, e.g. `No such file or directory (os error 2)`.
    pub why: String,
}

impl CliError {
    /// An error for `what` that failed because of `why`.
    pub fn new(what: impl Into<String>, why: impl fmt::Display) -> Self {
        CliError {
            what: what.into(),
            why: why.to_string(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

impl std::error::Error for CliError {}

/// Result alias for the CLI.
pub type CliResult<T> = Result<T, CliError>;
