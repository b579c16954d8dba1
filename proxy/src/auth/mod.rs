//! Authentication of the client and the login upstream.
//!
//! - [`passthrough`]: relays PostgreSQL's own exchange (trust, cleartext, md5,
//!   SCRAM-SHA-256); never offers `SCRAM-SHA-256-PLUS`, since channel binding cannot
//!   survive a proxy that terminates TLS.
//! - [`scram`]: sans-IO SCRAM-SHA-256(-PLUS) server (client leg) and ClientKey client
//!   (upstream leg), verifier parsing, `tls-server-end-point` hashing.
//! - [`mock`]: per-process secret for mock challenges to unknown users.
//! - [`verifier`]: where verifiers come from (`auth_query`, `auth_file`), TTL cache.
//! - [`limiter`]: per-client-address failed-login throttle.
//! - [`scram_config`]: the `[auth]` keys of `mode = "scram"`.

pub mod limiter;
pub mod mock;
pub mod passthrough;
pub mod scram;
pub mod scram_config;
pub mod verifier;
