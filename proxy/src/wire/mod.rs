//! The PostgreSQL wire protocol, as much of it as the proxy must read or write.
//!
//! [`frame`] cuts messages out of the byte stream; [`messages`] decodes the few message
//! types the proxy inspects and encodes the ones it originates. Everything else is
//! relayed as received.

pub mod cursor;
pub mod frame;
pub mod io;
pub mod messages;
