//! pgveil: a transparent PostgreSQL wire-protocol proxy that protects personal data.
//!
//! Modules, one job each:
//! - [`audit`]: audit events, hash chain, sinks, `audit verify`.
//! - [`cli`]: the command line (`run`, `check`, `explain`, `audit verify`, `demo`).

pub mod audit;
pub mod cli;
