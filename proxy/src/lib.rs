//! pgveil: a transparent PostgreSQL wire-protocol proxy that protects personal data.
//!
//! Modules, one job each:
//! - [`cli`]: the command line (`run`, `check`, `explain`, `audit verify`, `demo`).

pub mod cli;
pub mod health;
pub mod logging;
pub mod metrics;
