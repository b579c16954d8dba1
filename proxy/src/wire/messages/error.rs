//! (B) ErrorResponse and NoticeResponse: reading their fields, writing our own errors.

use super::{encode, put_cstr};
use crate::wire::cursor::{Cursor, Malformed};

/// Field code of the SQLSTATE.
pub const FIELD_CODE: u8 = b'C';
/// Field code of the primary message.
pub const FIELD_MESSAGE: u8 = b'M';
/// Field code of the localized severity.
pub const FIELD_SEVERITY: u8 = b'S';
/// Field code of the non-localized severity.
pub const FIELD_SEVERITY_V: u8 = b'V';

/// The fields of an ErrorResponse or NoticeResponse body, in order.
pub fn fields(body: &[u8]) -> Result<Vec<(u8, &[u8])>, Malformed> {
    let mut c = Cursor::new(body, "ErrorResponse");
    let mut out = Vec::with_capacity(8);
    loop {
        let code = c.u8()?;
        if code == 0 {
            return Ok(out);
        }
        out.push((code, c.cstr()?));
    }
}

/// The SQLSTATE of an ErrorResponse body, if present and well formed.
pub fn sqlstate(body: &[u8]) -> Option<String> {
    fields(body).ok()?.into_iter().find_map(|(code, value)| {
        (code == FIELD_CODE && value.len() == 5)
            .then(|| String::from_utf8_lossy(value).into_owned())
    })
}

/// Severity of an error the proxy originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement fails; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

impl Severity {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Severity::Error => b"ERROR",
            Severity::Fatal => b"FATAL",
        }
    }
}

/// An error the proxy sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    pub severity: Severity,
    pub sqlstate: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ProxyError {
    /// An ERROR (the session survives).
    pub fn error(sqlstate: &'static str, message: impl Into<String>) -> Self {
        ProxyError {
            severity: Severity::Error,
            sqlstate,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A FATAL error (the session ends after it).
    pub fn fatal(sqlstate: &'static str, message: impl Into<String>) -> Self {
        ProxyError {
            severity: Severity::Fatal,
            ..ProxyError::error(sqlstate, message)
        }
    }

    /// Add a HINT field.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Add a DETAIL field.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Append this error as an ErrorResponse message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode(out, b'E', |b| {
            b.push(FIELD_SEVERITY);
            put_cstr(b, self.severity.as_bytes());
            b.push(FIELD_SEVERITY_V);
            put_cstr(b, self.severity.as_bytes());
            b.push(FIELD_CODE);
            put_cstr(b, self.sqlstate.as_bytes());
            b.push(FIELD_MESSAGE);
            put_cstr(b, self.message.as_bytes());
            if let Some(d) = &self.detail {
                b.push(b'D');
                put_cstr(b, d.as_bytes());
            }
            if let Some(h) = &self.hint {
                b.push(b'H');
                put_cstr(b, h.as_bytes());
            }
            b.push(0);
        });
    }

    /// This error as a standalone ErrorResponse message.
    pub fn to_message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.message.len());
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame;

    #[test]
    fn encodes_and_decodes() {
        let msg = ProxyError::error("42501", "permission denied")
            .with_hint("ask the DBA")
            .to_message();
        let body = frame::body(&msg);
        assert_eq!(sqlstate(body).as_deref(), Some("42501"));
        let f = fields(body).unwrap();
        assert!(f.contains(&(b'M', &b"permission denied"[..])));
        assert!(f.contains(&(b'H', &b"ask the DBA"[..])));
    }

    #[test]
    fn truncated_fields_are_malformed() {
        assert!(fields(b"Cxx").is_err());
        assert!(fields(b"").is_err());
    }
}
