//! Authentication of the client and the login upstream.
//!
//! [`passthrough`] relays PostgreSQL's own exchange (trust, cleartext, md5,
//! SCRAM-SHA-256); the proxy only removes `SCRAM-SHA-256-PLUS` from the offer, since
//! channel binding cannot survive a proxy that terminates TLS.

pub mod passthrough;
