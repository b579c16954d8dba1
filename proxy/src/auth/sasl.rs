//! The SASL messages of the authentication exchange, framed for both legs: what the
//! client sends pgveil (SASLInitialResponse, SASLResponse) and what pgveil sends
//! PostgreSQL as a SASL client. The SCRAM payloads inside are `auth::scram`'s business.

use crate::wire::cursor::{Cursor, Malformed};
use crate::wire::messages::{encode, put_cstr};

/// Message type of PasswordMessage, SASLInitialResponse and SASLResponse.
pub const TAG: u8 = b'p';

/// Longest SASL payload PostgreSQL accepts (`PG_MAX_AUTH_TOKEN_LENGTH`); a bigger
/// message is refused before it is read.
pub const MAX_TOKEN_LEN: usize = 65535;

/// Largest whole frame (type, length, mechanism, length field, payload) worth reading.
pub const MAX_MESSAGE_LEN: usize = 5 + 64 + 4 + MAX_TOKEN_LEN;

/// A SASLInitialResponse body: the mechanism the client chose and its first payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialResponse<'a> {
    /// Name of the chosen mechanism, e.g. `SCRAM-SHA-256-PLUS`.
    pub mechanism: &'a str,
    /// The initial payload; `None` when the client sent length -1 and waits for an
    /// empty challenge before it sends its first message.
    pub data: Option<&'a [u8]>,
}

/// Decodes a SASLInitialResponse body. The length field must match the bytes that
/// follow it exactly, as PostgreSQL checks.
pub fn initial_response(body: &[u8]) -> Result<InitialResponse<'_>, Malformed> {
    const WHAT: &str = "SASLInitialResponse";
    let mut c = Cursor::new(body, WHAT);
    let mechanism = c.str()?;
    let len = c.i32()?;
    let data = match len {
        -1 => None,
        n if n >= 0 => Some(c.take(n as usize)?),
        _ => return Err(Malformed(WHAT)),
    };
    if !c.is_empty() {
        return Err(Malformed(WHAT));
    }
    Ok(InitialResponse { mechanism, data })
}

/// Appends a SASLInitialResponse choosing `mechanism` with first payload `data`.
pub fn encode_initial_response(out: &mut Vec<u8>, mechanism: &str, data: &[u8]) {
    encode(out, TAG, |b| {
        put_cstr(b, mechanism.as_bytes());
        // Payloads come from our own SCRAM client: a few hundred bytes at most.
        let len = i32::try_from(data.len()).unwrap_or(i32::MAX);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(data);
    });
}

/// Appends a SASLResponse carrying `data`.
pub fn encode_response(out: &mut Vec<u8>, data: &[u8]) {
    encode(out, TAG, |b| b.extend_from_slice(data));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame;

    #[test]
    fn initial_response_round_trip() {
        let mut out = Vec::new();
        encode_initial_response(&mut out, "SCRAM-SHA-256", b"n,,n=,r=abc");
        assert_eq!(out[0], TAG);
        let parsed = initial_response(frame::body(&out)).expect("valid");
        assert_eq!(parsed.mechanism, "SCRAM-SHA-256");
        assert_eq!(parsed.data, Some(&b"n,,n=,r=abc"[..]));
    }

    #[test]
    fn initial_response_without_data() {
        let body = b"SCRAM-SHA-256\0\xff\xff\xff\xff";
        assert_eq!(
            initial_response(body),
            Ok(InitialResponse {
                mechanism: "SCRAM-SHA-256",
                data: None
            })
        );
    }

    #[test]
    fn initial_response_lengths_must_match() {
        let bad: [&[u8]; 6] = [
            b"",
            b"SCRAM-SHA-256",
            b"SCRAM-SHA-256\0\0\0\0\x05abc",
            b"SCRAM-SHA-256\0\0\0\0\x01abc",
            b"SCRAM-SHA-256\0\xff\xff\xff\xfe",
            b"SCRAM-SHA-256\0\xff\xff\xff\xffx",
        ];
        for body in bad {
            assert!(initial_response(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn response_is_the_payload() {
        let mut out = Vec::new();
        encode_response(&mut out, b"c=biws,r=x,p=y");
        assert_eq!(frame::body(&out), b"c=biws,r=x,p=y");
    }
}
