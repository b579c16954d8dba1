//! `pgveil demo`.
pub mod data;
mod lists;
