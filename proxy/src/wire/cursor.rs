//! A bounds-checked reader over one message body.
//!
//! Every decoder reads through this, so a truncated or lying message yields an error
//! instead of a panic or a read past the end of the frame.

use thiserror::Error;

/// A message body ended early or held an unterminated string.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed {0} message")]
pub struct Malformed(pub &'static str);

/// Reads big-endian integers and NUL-terminated strings from a byte slice.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor over `buf`; `what` names the message in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, what }
    }

    fn err(&self) -> Malformed {
        Malformed(self.what)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    /// True when everything has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        let (&b, rest) = self.buf.split_first().ok_or(self.err())?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i16(&mut self) -> Result<i16, Malformed> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A NUL-terminated string, without the NUL.
    pub fn cstr(&mut self) -> Result<&'a [u8], Malformed> {
        let end = memchr::memchr(0, self.buf).ok_or(self.err())?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// A NUL-terminated string that must be valid UTF-8.
    pub fn str(&mut self) -> Result<&'a str, Malformed> {
        let what = self.what;
        std::str::from_utf8(self.cstr()?).map_err(|_| Malformed(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_bounds() {
        let mut c = Cursor::new(b"ab\0\0\x01\x02", "test");
        assert_eq!(c.str(), Ok("ab"));
        assert_eq!(c.i16(), Ok(1));
        assert!(c.i16().is_err());
        let mut c = Cursor::new(b"abc", "test");
        assert!(c.cstr().is_err());
    }
}
