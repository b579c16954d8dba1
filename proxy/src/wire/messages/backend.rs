//! (B) Backend messages the proxy reads: Authentication, BackendKeyData, ReadyForQuery,
//! CommandComplete, ParameterStatus.

use super::{encode, put_cstr};
use crate::wire::cursor::{Cursor, Malformed};

/// Authentication request subtypes.
pub mod auth {
    pub const OK: i32 = 0;
    pub const CLEARTEXT: i32 = 3;
    pub const MD5: i32 = 5;
    pub const GSS: i32 = 7;
    pub const GSS_CONTINUE: i32 = 8;
    pub const SSPI: i32 = 9;
    pub const SASL: i32 = 10;
    pub const SASL_CONTINUE: i32 = 11;
    pub const SASL_FINAL: i32 = 12;
}

/// The subtype of an Authentication ('R') body.
pub fn auth_kind(body: &[u8]) -> Result<i32, Malformed> {
    Cursor::new(body, "Authentication").i32()
}

/// The mechanisms listed by an AuthenticationSASL body.
pub fn sasl_mechanisms(body: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut c = Cursor::new(body, "AuthenticationSASL");
    if c.i32()? != auth::SASL {
        return Err(Malformed("AuthenticationSASL"));
    }
    let mut out = Vec::new();
    loop {
        let m = c.str()?;
        if m.is_empty() {
            return Ok(out);
        }
        out.push(m.to_owned());
    }
}

/// Encode an AuthenticationSASL message offering `mechanisms`.
pub fn encode_sasl(out: &mut Vec<u8>, mechanisms: &[&str]) {
    encode(out, b'R', |b| {
        b.extend_from_slice(&auth::SASL.to_be_bytes());
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.push(0);
    });
}

/// Encode an Authentication message with subtype `kind` and extra `data`.
pub fn encode_auth(out: &mut Vec<u8>, kind: i32, data: &[u8]) {
    encode(out, b'R', |b| {
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(data);
    });
}

/// BackendKeyData: the backend PID and the cancel secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendKeyData {
    pub pid: i32,
    /// 4 bytes in protocol 3.0; up to 256 bytes from protocol 3.2 on.
    pub secret: Vec<u8>,
}

impl BackendKeyData {
    /// Decode a BackendKeyData body.
    pub fn parse(body: &[u8]) -> Result<Self, Malformed> {
        let mut c = Cursor::new(body, "BackendKeyData");
        let pid = c.i32()?;
        let secret = c.remaining();
        if secret.len() < 4 || secret.len() > 256 {
            return Err(Malformed("BackendKeyData"));
        }
        Ok(BackendKeyData {
            pid,
            secret: secret.to_vec(),
        })
    }

    /// Append as a BackendKeyData message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode(out, b'K', |b| {
            b.extend_from_slice(&self.pid.to_be_bytes());
            b.extend_from_slice(&self.secret);
        });
    }
}

/// Transaction status of a ReadyForQuery body: b'I', b'T' or b'E'.
pub fn ready_status(body: &[u8]) -> Result<u8, Malformed> {
    match body {
        [s @ (b'I' | b'T' | b'E')] => Ok(*s),
        _ => Err(Malformed("ReadyForQuery")),
    }
}

/// Append a ReadyForQuery message.
pub fn encode_ready(out: &mut Vec<u8>, status: u8) {
    encode(out, b'Z', |b| b.push(status));
}

/// Rows reported by a command tag ("SELECT 3", "INSERT 0 1", "COPY 10", ...), if any:
/// the CommandComplete body as received (its NUL terminator may be included). Read from
/// the bytes, since every statement's completion passes here.
pub fn tag_rows(tag: &[u8]) -> Option<u64> {
    let tag = tag.strip_suffix(&[0]).unwrap_or(tag);
    // Tags are a few bytes: a plain scan beats memchr's set-up.
    let first = tag.iter().position(|&b| b == b' ')?;
    let last = tag.iter().rposition(|&b| b == b' ')?;
    match &tag[..first] {
        b"SELECT" | b"UPDATE" | b"DELETE" | b"INSERT" | b"COPY" | b"FETCH" | b"MOVE" | b"MERGE" => {
            let digits = &tag[last + 1..];
            if digits.is_empty() {
                return None;
            }
            digits.iter().try_fold(0u64, |n, &d| {
                if !d.is_ascii_digit() {
                    return None;
                }
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
        }
        _ => None,
    }
}

/// A ParameterStatus body's name and value.
pub fn parameter_status(body: &[u8]) -> Result<(&str, &str), Malformed> {
    let mut c = Cursor::new(body, "ParameterStatus");
    Ok((c.str()?, c.str()?))
}

/// Append a ParameterStatus message.
pub fn encode_parameter_status(out: &mut Vec<u8>, name: &str, value: &str) {
    encode(out, b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame;

    #[test]
    fn rows_from_tags() {
        assert_eq!(tag_rows(b"SELECT 12"), Some(12));
        assert_eq!(tag_rows(b"SELECT 12\0"), Some(12));
        assert_eq!(tag_rows(b"INSERT 0 3"), Some(3));
        assert_eq!(tag_rows(b"COPY 7"), Some(7));
        assert_eq!(tag_rows(b"SELECT 18446744073709551615"), Some(u64::MAX));
        assert_eq!(tag_rows(b"SELECT 18446744073709551616"), None);
        assert_eq!(
            tag_rows(b"SELECT 9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(tag_rows(b"SELECT -1"), None);
        assert_eq!(tag_rows(b"SELECT "), None);
        assert_eq!(tag_rows(b"CREATE TABLE"), None);
        assert_eq!(tag_rows(b"BEGIN"), None);
    }

    #[test]
    fn sasl_round_trip() {
        let mut out = Vec::new();
        encode_sasl(&mut out, &["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]);
        assert_eq!(
            sasl_mechanisms(frame::body(&out)).unwrap(),
            vec!["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]
        );
    }

    #[test]
    fn key_data() {
        let k = BackendKeyData {
            pid: 7,
            secret: vec![9; 4],
        };
        let mut out = Vec::new();
        k.encode(&mut out);
        assert_eq!(BackendKeyData::parse(frame::body(&out)).unwrap(), k);
        assert!(BackendKeyData::parse(&[0, 0, 0, 1, 2]).is_err());
    }

    #[test]
    fn ready_statuses() {
        assert_eq!(ready_status(b"T"), Ok(b'T'));
        assert!(ready_status(b"X").is_err());
        assert!(ready_status(b"").is_err());
    }
}
