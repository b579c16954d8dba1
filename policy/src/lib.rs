//! pgveil-policy: the pure half of pgveil.
//!
//! It turns a policy TOML into a validated [`model::Policy`], and for one SQL text, one
//! session and one catalog snapshot decides what may run and how it is rewritten so that
//! protected columns are only ever read through their masks. No I/O and no async runtime:
//! the proxy feeds it strings and snapshots and forwards what it returns.
//!
//! Modules:
//! - [`model`]: the validated policy (classes, column tags, roles, masks).
//! - [`load`]: TOML text → [`model::Policy`], collecting every error with file:line:col.
//! - [`error`]: [`error::PolicyError`] and diagnostics.
//! - [`check`]: `pgveil check`: every diagnostic, or a one-line summary and warnings.
//! - [`mask`]: a mask → SQL expression over a column.
//! - [`catalog`]: the [`catalog::Catalog`] trait and a static snapshot for tests and `explain`.
//! - [`analyze`]: SQL → statements with kind, relations, columns and functions.
//! - [`decide`]: analysis + role → allow / rewrite / deny with an access report.
//! - [`rewrite`]: derived-table rewrite spliced into the original SQL text.
//! - [`output`]: masks the proxy applies to bare output columns instead of a rewrite.
//! - [`shape`]: decisions reused for every value of a statement's numeric constants.
//! - [`redact`]: literal stripping and fingerprints for the audit log.
//! - [`lexical`]: PostgreSQL-faithful delimiting of comments/literals, checked against sqlparser.
//! - `parse_prep`: token adjustments for exact PostgreSQL equivalents sqlparser lacks.
//! - `write_guard`: writes whose success would tell a role values it may not read.
//! - [`functions`]: built-in functions and catalog relations refused to restricted roles.
//! - `testing` (feature `testing`): demo catalog, sample policy and cases for tests.

pub mod analyze;
pub mod catalog;
pub mod check;
pub mod decide;
pub mod error;
pub mod functions;
pub mod lexical;
pub mod load;
pub mod mask;
pub mod model;
pub mod output;
mod parse_prep;
pub mod ptrhash;
pub mod redact;
pub mod rewrite;
pub mod shape;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod write_guard;
