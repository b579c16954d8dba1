//! Reading whole messages from a stream during the startup and authentication phases.
//!
//! The relay loop in `session` processes messages in place, batch by batch; before it
//! starts, the proxy converses one message at a time, which is what these helpers do.

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::frame::{self, FrameError, Peek};

/// Why a message could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Read one regular message (type + length + body) into a frame of its own.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<BytesMut, ReadError> {
    loop {
        match frame::peek(buf, limit)? {
            Peek::Complete { total, .. } => return Ok(buf.split_to(total)),
            Peek::Incomplete { total } => {
                buf.reserve(total.saturating_sub(buf.len()).max(1024));
                if stream.read_buf(buf).await? == 0 {
                    return Err(ReadError::Closed);
                }
            }
        }
    }
}

/// Read one startup-phase packet (no type byte).
pub async fn read_startup_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<BytesMut, ReadError> {
    loop {
        if let Some(total) = frame::peek_startup(buf)? {
            return Ok(buf.split_to(total));
        }
        buf.reserve(1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}
