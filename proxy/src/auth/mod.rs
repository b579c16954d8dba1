//! Client authentication: SCRAM termination at pgveil and upstream login with the
//! recovered ClientKey (the lead merges these lines into the full auth module).

pub mod limiter;
pub mod mock;
pub mod scram;
pub mod scram_config;
pub mod verifier;
