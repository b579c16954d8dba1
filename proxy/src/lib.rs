//! pgveil: a transparent PostgreSQL wire-protocol proxy that protects personal data.
//!
//! Modules, one job each:
//! - [`cli`]: the command line (`run`, `check`, `explain`, `audit verify`, `demo`).
//! - [`config`]: `pgveil.toml`, parsed and validated.
//! - [`server`]: the listener, connection cap and per-connection tasks.
//! - [`shutdown`]: graceful stop (stop accepting, grace period, close).
//! - [`startup`]: SSLRequest / GSSENCRequest / direct TLS / CancelRequest / StartupMessage.
//! - [`tls`]: rustls configs for both legs.
//! - [`stream`]: plain / TLS / Unix streams behind one type per leg.
//! - [`upstream`]: opening connections to PostgreSQL.
//! - [`auth`]: authentication relay.
//! - [`session`]: one session's relay loop.
//! - [`protocol_state`]: replies the server still owes, to stay in step.
//! - [`hook`]: the seam where policy enforcement plugs in.
//! - [`cancel`]: proxy-issued cancel keys.
//! - [`wire`]: framing and the few message decoders/encoders the proxy needs.

pub mod auth;
pub mod cancel;
pub mod cli;
pub mod config;
pub mod demo;
pub mod hook;
pub mod protocol_state;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod startup;
pub mod stream;
pub mod tls;
pub mod upstream;
pub mod wire;
