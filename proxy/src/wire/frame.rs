//! Cutting PostgreSQL messages out of a byte stream.
//!
//! Only this module decides where a message starts and ends. A regular message is a
//! one-byte type, a four-byte big-endian length that counts itself but not the type, and
//! a body; startup-phase packets have no type byte. Lengths are checked before anything
//! is allocated or decoded, so a decoder only ever sees one complete, bounded frame.

use thiserror::Error;

/// Size of a regular message header: type byte + length.
pub const HEADER_LEN: usize = 5;

/// Why a frame is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length field is below the 4 bytes it must count.
    #[error("invalid message length {0}")]
    LengthTooSmall(u32),
    /// The message is bigger than the configured limit.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
}

/// What the front of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// A whole message: its type and total size including the type byte.
    Complete { tag: u8, total: usize },
    /// Not enough bytes yet; at least `total` bytes are needed for the message.
    Incomplete { total: usize },
}

/// Look at the regular message at the start of `buf` without consuming it.
///
/// `limit` bounds the total message size (type byte included).
pub fn peek(buf: &[u8], limit: usize) -> Result<Peek, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(Peek::Incomplete { total: HEADER_LEN });
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::LengthTooSmall(len));
    }
    let total = len as usize + 1;
    if total > limit {
        return Err(FrameError::TooLarge { len: total, limit });
    }
    if buf.len() < total {
        Ok(Peek::Incomplete { total })
    } else {
        Ok(Peek::Complete { tag: buf[0], total })
    }
}

/// Look at a startup-phase packet (no type byte) at the start of `buf`.
///
/// Returns the total packet length when complete. Startup packets are small: PostgreSQL
/// caps them at 10000 bytes, and so do we.
pub fn peek_startup(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    const MAX_STARTUP_PACKET: usize = 10_000;
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < 8 {
        return Err(FrameError::LengthTooSmall(len as u32));
    }
    if len > MAX_STARTUP_PACKET {
        return Err(FrameError::TooLarge {
            len,
            limit: MAX_STARTUP_PACKET,
        });
    }
    Ok((buf.len() >= len).then_some(len))
}

/// The body of a complete message (after the 5-byte header).
pub fn body(msg: &[u8]) -> &[u8] {
    msg.get(HEADER_LEN..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_header_and_body() {
        assert_eq!(peek(b"Q\0\0", 100), Ok(Peek::Incomplete { total: 5 }));
        assert_eq!(
            peek(b"Q\0\0\0\x09SEL", 100),
            Ok(Peek::Incomplete { total: 10 })
        );
        assert_eq!(
            peek(b"Q\0\0\0\x09SELE\0extra", 100),
            Ok(Peek::Complete {
                tag: b'Q',
                total: 10
            })
        );
    }

    #[test]
    fn rejects_short_and_huge_lengths() {
        assert_eq!(
            peek(b"Q\0\0\0\x03", 100),
            Err(FrameError::LengthTooSmall(3))
        );
        assert!(matches!(
            peek(b"Q\x7f\xff\xff\xff", 100),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn startup_packets() {
        assert_eq!(peek_startup(&[0, 0, 0]), Ok(None));
        assert_eq!(peek_startup(&[0, 0, 0, 8, 4, 210, 22, 47]), Ok(Some(8)));
        assert!(peek_startup(&[0, 0, 0, 4]).is_err());
        assert!(peek_startup(&[0, 1, 0, 0]).is_err());
    }
}
