//! Policy diagnostics: every problem found in a policy file, with where and how to fix it.
//!
//! A DBA reads these in `pgveil check` output and in the proxy log after a failed reload,
//! so each one carries the file, 1-based line and column (in characters), the key path
//! (`roles.support.see.bank_card`) and a message that says what is wrong and what is allowed.

use std::fmt;

/// How serious a diagnostic is: errors reject the policy, warnings only inform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The policy is rejected; the running policy (if any) stays in force.
    Error,
    /// The policy loads, but something is probably not what the author meant.
    Warning,
}

impl Severity {
    /// The lowercase label printed in diagnostics.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a policy file.
///
/// Displays as `file:line:column: severity: key.path: message` (the key path is left out
/// when the problem is not tied to a key, e.g. a TOML syntax error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The file name as given to the loader (for messages only).
    pub file: String,
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// 1-based column, counted in characters (not bytes).
    pub column: usize,
    /// Whether this rejects the policy.
    pub severity: Severity,
    /// Dotted key path, e.g. `roles.support.see.bank_card`; empty when not tied to a key.
    pub path: String,
    /// What is wrong and what is allowed instead.
    pub message: String,
}

impl PolicyError {
    /// Is this an error (as opposed to a warning)?
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: ",
            self.file, self.line, self.column, self.severity
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// An ordered list of diagnostics; displays one per line.
///
/// Returned as the error of [`crate::load::load`] (it then holds at least one error, and
/// the warnings found alongside) and as the warnings of a successful load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    items: Vec<PolicyError>,
}

impl Diagnostics {
    /// An empty list.
    pub fn new() -> Self {
        Diagnostics::default()
    }

    /// Appends one diagnostic.
    pub fn push(&mut self, diagnostic: PolicyError) {
        self.items.push(diagnostic);
    }

    /// No diagnostics at all?
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of diagnostics (errors and warnings).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// All diagnostics in order.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.items.iter()
    }

    /// Does the list hold at least one error?
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(PolicyError::is_error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }

    /// Orders diagnostics by position in the file (stable, so equal positions keep the
    /// order in which they were found).
    pub fn sort(&mut self) {
        self.items.sort_by_key(|d| (d.line, d.column));
    }

    /// The diagnostics as a vector.
    pub fn into_vec(self) -> Vec<PolicyError> {
        self.items
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl IntoIterator for Diagnostics {
    type Item = PolicyError;
    type IntoIter = std::vec::IntoIter<PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl FromIterator<PolicyError> for Diagnostics {
    fn from_iter<I: IntoIterator<Item = PolicyError>>(iter: I) -> Self {
        Diagnostics {
            items: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(severity: Severity, line: usize, path: &str) -> PolicyError {
        PolicyError {
            file: "policy.toml".into(),
            line,
            column: 9,
            severity,
            path: path.into(),
            message: "something is wrong".into(),
        }
    }

    #[test]
    fn displays_file_position_severity_path_and_message() {
        let d = diag(Severity::Error, 12, "roles.support.statements");
        assert_eq!(
            d.to_string(),
            "policy.toml:12:9: error: roles.support.statements: something is wrong"
        );
        let d = diag(Severity::Warning, 3, "");
        assert_eq!(
            d.to_string(),
            "policy.toml:3:9: warning: something is wrong"
        );
    }

    #[test]
    fn list_prints_one_per_line_and_counts() {
        let mut list: Diagnostics = [
            diag(Severity::Warning, 5, "a"),
            diag(Severity::Error, 2, "b"),
        ]
        .into_iter()
        .collect();
        list.sort();
        assert_eq!(list.error_count(), 1);
        assert_eq!(list.warning_count(), 1);
        assert!(list.has_errors());
        assert_eq!(
            list.to_string(),
            "policy.toml:2:9: error: b: something is wrong\n\
             policy.toml:5:9: warning: a: something is wrong"
        );
    }
}
