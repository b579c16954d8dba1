//! pgveil: a transparent PostgreSQL wire-protocol proxy that protects personal data.
//!
//! Modules, one job each:
//! - [`auth`]: client authentication (SCRAM termination, upstream login with the ClientKey).
//! - [`cli`]: the command line (`run`, `check`, `explain`, `audit verify`, `demo`).

pub mod auth;
pub mod cli;
