//! The `pgveil` binary: parses the command line and hands over to [`pgveil::cli`].

fn main() -> std::process::ExitCode {
    pgveil::cli::main()
}
