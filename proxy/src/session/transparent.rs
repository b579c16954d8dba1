//! The relay of a transparent session ([`crate::hook::SessionHook::is_transparent`]):
//! messages are only framed and checked, as the full relay would frame and check them,
//! and forwarded unchanged. Without a hook to ask or tell, the statement bookkeeping
//! (protocol state, settled replies, text decoding) would be read by no one, and it was
//! about a fifth of the proxy's instructions per round trip.

use bytes::BytesMut;

use super::{frame_violation, SessionError};
use crate::wire::cursor::Malformed;
use crate::wire::frame::{self, Peek};
use crate::wire::messages::error::ProxyError;
use crate::wire::messages::frontend;

/// The complete client messages at the front of a buffer.
pub(super) struct ClientBatch {
    /// Where the last complete message (or the Terminate) ends.
    pub end: usize,
    /// The batch ends with a Terminate.
    pub terminate: bool,
}

/// The error a client gets for a message whose body does not decode.
pub(super) fn malformed(m: Malformed) -> ProxyError {
    ProxyError::fatal("08P01", format!("invalid frontend message: {m}"))
}

/// The complete client messages at the front of `buf`, up to and including a
/// Terminate; room is reserved for the incomplete one after them. A message over `limit`
/// or whose body does not decode is the client's protocol violation, as in the full
/// relay, and nothing of the batch is forwarded.
pub(super) fn client_batch(buf: &mut BytesMut, limit: usize) -> Result<ClientBatch, ProxyError> {
    let mut pos = 0;
    loop {
        match frame::peek(&buf[pos..], limit) {
            Ok(Peek::Complete { tag, total }) => {
                check_client_message(tag, frame::body(&buf[pos..pos + total]))?;
                pos += total;
                if tag == b'X' {
                    return Ok(ClientBatch {
                        end: pos,
                        terminate: true,
                    });
                }
            }
            Ok(Peek::Incomplete { total }) => {
                reserve_for(buf, pos, total);
                return Ok(ClientBatch {
                    end: pos,
                    terminate: false,
                });
            }
            Err(e) => return Err(frame_violation(&e)),
        }
    }
}

/// Decode what the full relay decodes of a client message (the names and texts of
/// Query, Parse, Bind, Execute, Describe and Close), so that a malformed one is refused
/// alike.
fn check_client_message(tag: u8, body: &[u8]) -> Result<(), ProxyError> {
    match tag {
        b'Q' => frontend::query(body).map(drop),
        b'P' => frontend::Parse::decode(body).map(drop),
        b'B' => frontend::bind_names(body).map(drop),
        b'E' => frontend::execute(body).map(drop),
        b'D' | b'C' => frontend::target(body).map(drop),
        _ => Ok(()),
    }
    .map_err(malformed)
}

/// Where the complete backend messages at the front of `buf` end; room is reserved for
/// the incomplete one after them.
pub(super) fn backend_batch(buf: &mut BytesMut) -> Result<usize, SessionError> {
    let mut pos = 0;
    loop {
        match frame::peek(&buf[pos..], usize::MAX) {
            Ok(Peek::Complete { total, .. }) => pos += total,
            Ok(Peek::Incomplete { total }) => {
                reserve_for(buf, pos, total);
                return Ok(pos);
            }
            Err(_) => return Err(SessionError::UpstreamProtocol(Malformed("message"))),
        }
    }
}

/// Room for the whole of the `total`-byte message that starts at `pos`.
fn reserve_for(buf: &mut BytesMut, pos: usize, total: usize) {
    let have = buf.len() - pos;
    if total > have {
        buf.reserve(total - have);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn client_batch_ends_at_the_last_whole_message_or_terminate() {
        let mut bytes = msg(b'Q', b"SELECT 1\0");
        let first = bytes.len();
        bytes.extend_from_slice(&msg(b'Q', b"SELECT 2\0")[..7]);
        let mut buf = BytesMut::from(&bytes[..]);
        let batch = client_batch(&mut buf, usize::MAX).expect("well formed");
        assert_eq!((batch.end, batch.terminate), (first, false));

        let mut bytes = msg(b'X', b"");
        bytes.extend_from_slice(&msg(b'Q', b"SELECT 1\0"));
        let batch = client_batch(&mut BytesMut::from(&bytes[..]), usize::MAX).expect("ok");
        assert_eq!((batch.end, batch.terminate), (5, true));
    }

    #[test]
    fn client_batch_refuses_what_the_full_relay_refuses() {
        let no_nul = msg(b'Q', b"SELECT 1");
        let err = client_batch(&mut BytesMut::from(&no_nul[..]), usize::MAX)
            .err()
            .expect("a Query without its NUL");
        assert_eq!(err.sqlstate, "08P01");
        let big = msg(b'Q', b"SELECT 1\0");
        assert!(client_batch(&mut BytesMut::from(&big[..]), 8).is_err());
        let short = b"Q\0\0\0\x02".to_vec();
        assert!(client_batch(&mut BytesMut::from(&short[..]), usize::MAX).is_err());
    }

    #[test]
    fn backend_batch_frames_whole_messages() {
        let mut bytes = msg(b'C', b"SELECT 1\0");
        bytes.extend_from_slice(&msg(b'Z', b"I"));
        let whole = bytes.len();
        bytes.extend_from_slice(b"D\0\0");
        assert_eq!(
            backend_batch(&mut BytesMut::from(&bytes[..])).ok(),
            Some(whole)
        );
        let bad = b"Z\0\0\0\x01".to_vec();
        assert!(backend_batch(&mut BytesMut::from(&bad[..])).is_err());
    }
}
