//! pgveil: a transparent PostgreSQL wire-protocol proxy that protects personal data.
//!
//! Modules, one job each:
//! - [`app`]: assembling policy, catalog cache and hooks from the config.
//! - [`catalog`]: the shared catalog cache (relations, columns, views, functions).
//! - [`enforce`]: policy enforcement per session, decision cache, reload, scrubbing.
//! - [`demo`]: `pgveil demo`: embedded PostgreSQL with a sample shop behind the proxy.
//! - [`explain`]: `pgveil explain`.
//! - [`metrics`]: Prometheus metrics, verbs over bounded labels.
//! - [`health`]: HTTP endpoint for /metrics, /healthz, /readyz.
//! - [`logging`]: tracing setup (text or JSON).
//! - [`audit`]: audit events, hash chain, sinks, `audit verify`.
//! - [`cli`]: the command line (`run`, `check`, `explain`, `audit verify`, `demo`).
//! - [`config`]: `pgveil.toml`, parsed and validated.
//! - [`server`]: the listener, connection cap and per-connection tasks.
//! - [`shutdown`]: graceful stop (stop accepting, grace period, close).
//! - [`startup`]: SSLRequest / GSSENCRequest / direct TLS / CancelRequest / StartupMessage.
//! - [`tls`]: rustls configs for both legs.
//! - [`stream`]: plain / TLS / Unix streams behind one type per leg.
//! - [`upstream`]: opening connections to PostgreSQL.
//! - [`auth`]: authentication: relayed (passthrough) or SCRAM terminated at pgveil.
//! - [`session`]: one session's relay loop.
//! - [`protocol_state`]: replies the server still owes, to stay in step.
//! - [`hook`]: the seam where policy enforcement plugs in.
//! - [`cancel`]: proxy-issued cancel keys.
//! - [`wire`]: framing and the few message decoders/encoders the proxy needs.

pub mod app;
pub mod audit;
pub mod auth;
pub mod cancel;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo;
pub mod enforce;
pub mod explain;
pub mod health;
pub mod hook;
pub mod logging;
pub mod metrics;
pub mod protocol_state;
pub mod race;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod startup;
pub mod stream;
pub mod tls;
pub mod upstream;
pub mod wire;
