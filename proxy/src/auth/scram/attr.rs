//! Reader for SCRAM's `a=value,b=value` attribute lists, following PostgreSQL's
//! `read_attr_value` / `read_any_attr` so errors carry the same DETAIL text.

/// Cursor over a SCRAM message. Errors are PostgreSQL-style DETAIL strings; the caller
/// wraps them in the error of its leg.
pub(super) struct Attrs<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Attrs<'a> {
    pub(super) fn new(input: &'a [u8]) -> Attrs<'a> {
        Attrs { input, pos: 0 }
    }

    /// Next unread byte, if any.
    pub(super) fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Byte offset of the cursor in the message.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// Everything not read yet.
    pub(super) fn rest(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// Consumes one byte, which must be `byte`.
    pub(super) fn expect_byte(&mut self, byte: u8) -> Result<(), String> {
        match self.peek() {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            found => Err(format!(
                "Comma expected, but found character \"{}\".",
                sanitize_char(found)
            )),
        }
    }

    /// Reads `attr=value` and the comma after it; the value may be empty.
    pub(super) fn expect(&mut self, attr: u8) -> Result<&'a [u8], String> {
        let found = self.peek();
        if found != Some(attr) {
            return Err(format!(
                "Expected attribute \"{}\" but found \"{}\".",
                attr as char,
                sanitize_char(found)
            ));
        }
        self.pos += 1;
        self.value_after_name(attr)
    }

    /// Reads any `x=value` attribute whose name is a letter, as optional extensions are.
    pub(super) fn any(&mut self) -> Result<(u8, &'a [u8]), String> {
        let found = self.peek();
        let attr = match found {
            Some(b) if b.is_ascii_alphabetic() => b,
            _ => {
                return Err(format!(
                    "Attribute expected, but found invalid character \"{}\".",
                    sanitize_char(found)
                ))
            }
        };
        self.pos += 1;
        Ok((attr, self.value_after_name(attr)?))
    }

    fn value_after_name(&mut self, attr: u8) -> Result<&'a [u8], String> {
        if self.peek() != Some(b'=') {
            return Err(format!(
                "Expected character \"=\" for attribute \"{}\".",
                attr as char
            ));
        }
        self.pos += 1;
        let rest = self.rest();
        let len = rest.iter().position(|b| *b == b',').unwrap_or(rest.len());
        let value = &rest[..len];
        self.pos += len;
        if self.peek() == Some(b',') {
            self.pos += 1;
        }
        Ok(value)
    }
}

/// A byte for an error message: itself when printable, else `0x..` (PostgreSQL's
/// `sanitize_char`); end of input reads as `0x00`, the C terminator.
fn sanitize_char(byte: Option<u8>) -> String {
    match byte {
        Some(b) if (0x21..=0x7e).contains(&b) => (b as char).to_string(),
        Some(b) => format!("0x{b:02x}"),
        None => "0x00".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_and_any_attributes() {
        let mut a = Attrs::new(b"n=,r=abc,x=1");
        assert_eq!(a.expect(b'n'), Ok(&b""[..]));
        assert_eq!(a.expect(b'r'), Ok(&b"abc"[..]));
        assert_eq!(a.any(), Ok((b'x', &b"1"[..])));
        assert!(a.is_empty());
    }

    #[test]
    fn errors_name_what_was_found() {
        let mut a = Attrs::new(b"q=1");
        assert_eq!(
            a.expect(b'r'),
            Err("Expected attribute \"r\" but found \"q\".".to_string())
        );
        let mut a = Attrs::new(b"r1");
        assert_eq!(
            a.expect(b'r'),
            Err("Expected character \"=\" for attribute \"r\".".to_string())
        );
        let mut a = Attrs::new(b"");
        assert!(a.expect(b'r').unwrap_err().contains("0x00"));
        let mut a = Attrs::new(b"1=x");
        assert!(a.any().is_err());
    }
}
