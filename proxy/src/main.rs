//! The `pgveil` binary: parses the command line and hands over to [`pgveil::cli`].

/// mimalloc instead of the system allocator: a statement's analysis makes a few hundred
/// short-lived allocations (most inside sqlparser), and mimalloc serves them in a
/// fraction of glibc malloc's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pgveil::cli::main()
}
