//! Policy errors and diagnostics (placeholder: replaced by the loader work).

/// A problem found in a policy file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}
