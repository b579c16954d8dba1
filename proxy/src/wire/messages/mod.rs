//! Decoders for the messages the proxy reads and encoders for those it writes.
//!
//! Each decoder takes exactly one frame cut by [`super::frame`] and validates what it
//! reads through [`super::cursor::Cursor`]. File names say the direction: frontend
//! (client → server), backend (server → client), startup (before the first regular
//! message), error (ErrorResponse / NoticeResponse, both directions' concern).

pub mod backend;
pub mod error;
pub mod frontend;
pub mod startup;

/// Append a regular message `tag` whose body is written by `body` to `out`.
pub fn encode(out: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = (out.len() - len_at) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Append a NUL-terminated string.
pub fn put_cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}
