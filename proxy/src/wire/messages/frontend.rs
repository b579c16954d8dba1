//! (F) Frontend messages the proxy reads: Query, Parse, Bind, Execute, Describe, Close.
//!
//! SQL texts and names are returned as bytes: PostgreSQL reads them in the session's
//! client_encoding (LATIN1, SJIS, GBK, ...), so they need not be UTF-8, and a message
//! the server accepts must not be malformed to the proxy.

use crate::wire::cursor::{Cursor, Malformed};

/// The SQL text of a Query body.
pub fn query(body: &[u8]) -> Result<&[u8], Malformed> {
    let mut c = Cursor::new(body, "Query");
    let sql = c.cstr()?;
    if !c.is_empty() {
        return Err(Malformed("Query"));
    }
    Ok(sql)
}

/// A decoded Parse body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Prepared statement name ("" = unnamed).
    pub name: &'a [u8],
    pub query: &'a [u8],
    /// The parameter type OIDs as sent (raw, count included), forwarded unchanged.
    pub param_types: &'a [u8],
}

impl<'a> Parse<'a> {
    /// Decode a Parse body.
    pub fn decode(body: &'a [u8]) -> Result<Self, Malformed> {
        let mut c = Cursor::new(body, "Parse");
        let name = c.cstr()?;
        let query = c.cstr()?;
        let param_types = c.remaining();
        let mut t = Cursor::new(param_types, "Parse");
        let n = t.i16()?;
        if n < 0 || t.remaining().len() != n as usize * 4 {
            return Err(Malformed("Parse"));
        }
        Ok(Parse {
            name,
            query,
            param_types,
        })
    }

    /// Encode a Parse message with the same name and types but another query text.
    pub fn encode_with_query(&self, out: &mut Vec<u8>, query: &str) {
        super::encode(out, b'P', |b| {
            super::put_cstr(b, self.name);
            super::put_cstr(b, query.as_bytes());
            b.extend_from_slice(self.param_types);
        });
    }
}

/// The portal and statement names of a Bind body.
pub fn bind_names(body: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let mut c = Cursor::new(body, "Bind");
    Ok((c.cstr()?, c.cstr()?))
}

/// The portal name and row limit of an Execute body.
pub fn execute(body: &[u8]) -> Result<(&[u8], i32), Malformed> {
    let mut c = Cursor::new(body, "Execute");
    let portal = c.cstr()?;
    let max_rows = c.i32()?;
    Ok((portal, max_rows))
}

/// The target ('S' statement or 'P' portal) and name of a Describe or Close body.
pub fn target(body: &[u8]) -> Result<(u8, &[u8]), Malformed> {
    let mut c = Cursor::new(body, "Describe/Close");
    let kind = c.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(Malformed("Describe/Close"));
    }
    Ok((kind, c.cstr()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame;

    #[test]
    fn parse_round_trip() {
        let body = b"s1\0SELECT $1\0\0\x01\0\0\0\x17";
        let p = Parse::decode(body).unwrap();
        assert_eq!(p.name, b"s1");
        assert_eq!(p.query, b"SELECT $1");
        let mut out = Vec::new();
        p.encode_with_query(&mut out, "SELECT $1::int");
        let again = Parse::decode(frame::body(&out)).unwrap();
        assert_eq!(again.query, b"SELECT $1::int");
        assert_eq!(again.param_types, p.param_types);
    }

    #[test]
    fn parse_rejects_lying_counts() {
        assert!(Parse::decode(b"\0SELECT 1\0\0\x02\0\0\0\x17").is_err());
        assert!(Parse::decode(b"\0SELECT 1\0\xff\xff").is_err());
    }

    #[test]
    fn query_and_targets() {
        assert_eq!(query(b"SELECT 1\0"), Ok(&b"SELECT 1"[..]));
        assert!(query(b"SELECT 1").is_err());
        assert_eq!(target(b"Sname\0"), Ok((b'S', &b"name"[..])));
        assert!(target(b"Xname\0").is_err());
        assert_eq!(execute(b"p\0\0\0\0\x05"), Ok((&b"p"[..], 5)));
        // Not UTF-8 (a LATIN1 client): still well formed.
        assert_eq!(query(b"SELECT '\xe9'\0"), Ok(&b"SELECT '\xe9'"[..]));
        assert_eq!(
            bind_names(b"\xe9\0\xff\0"),
            Ok((&b"\xe9"[..], &b"\xff"[..]))
        );
    }
}
