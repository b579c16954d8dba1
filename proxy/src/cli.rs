//! The command line.

use std::process::ExitCode;

/// Entry point of the `pgveil` binary.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
