//! Literal stripping for the audit log: a logged query never carries constants (a
//! literal can be an ID number), and statements of the same shape share a fingerprint.
//!
//! Works on any text, including text that does not parse: it uses sqlparser's tokenizer
//! and falls back to pgveil's own scanner when even tokenizing fails.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::lexical;

/// The normalized text and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    /// Literals replaced by `?`, comments dropped, whitespace collapsed.
    pub normalized: String,
    /// First 16 hex digits of SHA-256 over the normalized shape (case-folded words).
    pub fingerprint: String,
}

/// Normalizes `sql` for the audit log.
pub fn redact(sql: &str) -> Redacted {
    let normalized = match Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() {
        Ok(tokens) => from_tokens(&tokens),
        Err(_) => from_scan(sql),
    };
    let fingerprint = fingerprint(&normalized);
    Redacted {
        normalized,
        fingerprint,
    }
}

/// Stable fingerprint of a normalized text: unquoted words are case-folded.
pub fn fingerprint(normalized: &str) -> String {
    // Byte-wise folding is the same as folding chars: `"` and ASCII letters never occur
    // inside a multi-byte UTF-8 sequence, and non-ASCII bytes are left as they are.
    // Folded through a block on the stack, so no copy of the text is allocated.
    let mut hasher = Sha256::new();
    let mut block = [0u8; 128];
    let mut in_quote = false;
    for chunk in normalized.as_bytes().chunks(block.len()) {
        for (out, &b) in block.iter_mut().zip(chunk) {
            if b == b'"' {
                in_quote = !in_quote;
            }
            *out = if in_quote { b } else { b.to_ascii_lowercase() };
        }
        hasher.update(&block[..chunk.len()]);
    }
    let digest = hasher.finalize();
    hex::encode(&digest[..8])
}

fn push_piece(out: &mut String, piece: &str, pending_space: &mut bool) {
    if *pending_space && !out.is_empty() {
        out.push(' ');
    }
    *pending_space = false;
    out.push_str(piece);
}

/// Normalizes each statement of an already tokenized text: tokens are split at
/// semicolons and segments without any token other than whitespace/comments are dropped.
pub fn redact_statements<'t>(tokens: impl IntoIterator<Item = &'t Token>) -> Vec<Redacted> {
    let mut out = Vec::new();
    let mut current = Normalizer::default();
    for t in tokens {
        if *t == Token::SemiColon {
            current.finish_into(&mut out);
        } else {
            current.push(t);
        }
    }
    current.finish_into(&mut out);
    out
}

fn from_tokens<'t>(tokens: impl IntoIterator<Item = &'t Token>) -> String {
    let mut n = Normalizer::default();
    for tok in tokens {
        n.push(tok);
    }
    n.out
}

/// Builds the normalized text of one statement token by token, writing each piece
/// straight into the output.
#[derive(Default)]
struct Normalizer {
    out: String,
    /// Whitespace or a comment since the last piece.
    space: bool,
}

impl Normalizer {
    fn push(&mut self, tok: &Token) {
        match tok {
            Token::Whitespace(_) => self.space = true,
            Token::EOF => {}
            Token::Number(..) => push_piece(&mut self.out, "?", &mut self.space),
            lit if crate::lexical::is_literal_text(lit) => {
                push_piece(&mut self.out, "?", &mut self.space)
            }
            // An unquoted word prints as its value.
            Token::Word(w) if w.quote_style.is_none() => {
                push_piece(&mut self.out, &w.value, &mut self.space)
            }
            other => {
                push_piece(&mut self.out, "", &mut self.space);
                // Writing into a String cannot fail.
                let _ = write!(self.out, "{other}");
            }
        }
    }

    /// Appends the statement (unless it is empty) to `out` and starts the next one.
    fn finish_into(&mut self, out: &mut Vec<Redacted>) {
        let normalized = std::mem::take(&mut self.out);
        self.space = false;
        if !normalized.is_empty() {
            let fingerprint = fingerprint(&normalized);
            out.push(Redacted {
                normalized,
                fingerprint,
            });
        }
    }
}

/// Conservative fallback: every literal region becomes `?`, comments go, digits go.
fn from_scan(sql: &str) -> String {
    let scan = lexical::scan(sql);
    let mut out = String::new();
    let mut space = false;
    let mut pos = 0;
    let plain = |out: &mut String, text: &str, space: &mut bool| {
        let mut last_digit = false;
        for ch in text.chars() {
            if ch.is_whitespace() {
                *space = true;
                last_digit = false;
            } else if ch.is_ascii_digit() {
                if !last_digit {
                    push_piece(out, "?", space);
                }
                last_digit = true;
            } else {
                last_digit = false;
                let mut buf = [0u8; 4];
                push_piece(out, ch.encode_utf8(&mut buf), space);
            }
        }
    };
    for r in &scan.regions {
        plain(&mut out, &sql[pos..r.start], &mut space);
        let region = &sql[r.start..r.end];
        if region.starts_with("--") || region.starts_with("/*") {
            space = true;
        } else if region.starts_with('"') {
            push_piece(&mut out, region, &mut space);
        } else {
            push_piece(&mut out, "?", &mut space);
        }
        pos = r.end;
    }
    plain(&mut out, &sql[pos..], &mut space);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_never_survive() {
        let r = redact(
            "SELECT name FROM customers /* c */ WHERE id_card = '110101199003077777' AND x = E'\\'a' \
             AND y = $$secret$$ AND z = 42 AND w = X'ff' AND d = DATE '2020-01-01'",
        );
        for secret in [
            "110101199003077777",
            "secret",
            "42",
            "ff",
            "2020",
            "/* c */",
        ] {
            assert!(!r.normalized.contains(secret), "{}", r.normalized);
        }
        assert!(r
            .normalized
            .starts_with("SELECT name FROM customers WHERE id_card = ?"));
    }

    #[test]
    fn same_shape_same_fingerprint() {
        let a = redact("select * from t where id = 1");
        let b = redact("SELECT *\n  FROM t -- x\n WHERE id = 99");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 16);
        assert_ne!(
            a.fingerprint,
            redact("select * from u where id = 1").fingerprint
        );
        assert_eq!(redact("select $1").normalized, "select $1");
    }

    #[test]
    fn untokenizable_text_is_still_redacted() {
        let r = redact("SELECT 'unterminated 13800138000");
        assert!(!r.normalized.contains("13800138000"));
        let r = redact("SELECT 13800138000 FROM t WHERE a = 'x");
        assert!(!r.normalized.contains("13800138000"), "{}", r.normalized);
        assert!(!from_scan("x = 1380013 /* 99 */ 'abc'").contains("13"));
    }

    #[test]
    fn statements_are_normalized_one_by_one() {
        let sql = "SELECT \"Mixed\"\"q\", a.b FROM t WHERE x = 'k' -- c\n; ; /* only */ ;\nUPDATE t SET y=1";
        let toks = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .expect("tokenizes");
        let got: Vec<String> = redact_statements(&toks)
            .into_iter()
            .map(|r| r.normalized)
            .collect();
        assert_eq!(
            got,
            [
                "SELECT \"Mixed\"\"q\", a.b FROM t WHERE x = ?",
                "UPDATE t SET y=?"
            ]
        );
        assert_eq!(
            fingerprint("SELECT \"Ab\" FROM Ü"),
            fingerprint("select \"Ab\" from Ü")
        );
        assert_ne!(fingerprint("SELECT \"Ab\""), fingerprint("SELECT \"ab\""));
    }
}
