//! A PostgreSQL-faithful scanner for the lexical structure that matters to security:
//! where comments, string literals, dollar quotes and quoted identifiers begin and end.
//!
//! sqlparser's tokenizer is not PostgreSQL's. If the two disagree about where a comment
//! or literal ends, text that the analyser never saw could run on the server (or the
//! reverse). [`check_against`] compares both views and any disagreement refuses the
//! statement for restricted roles. The scanner also flags escapes the proxy does not
//! model (`U&"…"` identifiers, control characters).

use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Whitespace};

/// One opaque region (comment, literal, quoted identifier), byte offsets `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Region {
    pub start: usize,
    pub end: usize,
}

/// The scanner's view of a SQL text.
#[derive(Debug, Default)]
pub struct Scan {
    /// Opaque regions in text order.
    pub regions: Vec<Region>,
    /// Numeric constants outside opaque regions, in text order (PostgreSQL's extent:
    /// digits, `_`, a fraction and an exponent).
    pub numbers: Vec<Region>,
    /// Why the text must not be trusted to mean the same to sqlparser and PostgreSQL.
    pub problem: Option<String>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

const fn ident_part_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
        b += 1;
    }
    t
}

/// Bytes that continue an identifier (a table: the scanner's inner loop).
static IDENT_PART: [bool; 256] = ident_part_table();

const fn plain_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let special = matches!(c, b'-' | b'/' | b'\'' | b'"' | b'$' | b'.')
            || c.is_ascii_alphanumeric()
            || c == b'_'
            || c >= 0x7f
            || (c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r' | 0x0c));
        t[b] = !special;
        b += 1;
    }
    t
}

/// Bytes the scanner passes over without a decision: white space and operators that
/// start no comment, literal, identifier or number and are not control characters.
static PLAIN: [bool; 256] = plain_table();

fn is_ident_part(b: u8) -> bool {
    IDENT_PART[b as usize]
}

/// Scans `text` the way PostgreSQL's lexer delimits comments, literals and identifiers.
pub fn scan(text: &str) -> Scan {
    let b = text.as_bytes();
    let n = b.len();
    let mut out = Scan::default();
    let mut i = 0;
    let fail = |out: &mut Scan, msg: String| {
        if out.problem.is_none() {
            out.problem = Some(msg);
        }
    };
    while i < n {
        let c = b[i];
        if PLAIN[c as usize] {
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied();
        if c == b'-' && next == Some(b'-') {
            let mut j = i + 2;
            while j < n && b[j] != b'\n' && b[j] != b'\r' {
                j += 1;
            }
            out.regions.push(Region { start: i, end: j });
            i = j;
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 1usize;
            let mut j = i + 2;
            while j < n && depth > 0 {
                if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            if depth > 0 {
                fail(&mut out, "unterminated comment".into());
            }
            out.regions.push(Region { start: i, end: j });
            i = j;
        } else if c == b'\'' {
            let j = end_of_quoted(b, i + 1, b'\'', false);
            if j.is_none() {
                fail(&mut out, "unterminated string literal".into());
            }
            let j = j.unwrap_or(n);
            out.regions.push(Region { start: i, end: j });
            i = j;
        } else if c == b'"' {
            let j = end_of_quoted(b, i + 1, b'"', false);
            if j.is_none() {
                fail(&mut out, "unterminated quoted identifier".into());
            }
            let j = j.unwrap_or(n);
            out.regions.push(Region { start: i, end: j });
            i = j;
        } else if is_ident_start(c) {
            // Literal prefixes: E'', B'', X'', N'', U&'' (and the refused U&"").
            let lower = c.to_ascii_lowercase();
            if next == Some(b'\'') && matches!(lower, b'e' | b'b' | b'x' | b'n') {
                let j = end_of_quoted(b, i + 2, b'\'', lower == b'e');
                if j.is_none() {
                    fail(&mut out, "unterminated string literal".into());
                }
                let j = j.unwrap_or(n);
                out.regions.push(Region { start: i, end: j });
                i = j;
                continue;
            }
            if lower == b'u' && next == Some(b'&') {
                match b.get(i + 2) {
                    Some(b'"') => fail(
                        &mut out,
                        "identifiers written as U&\"…\" are not accepted".into(),
                    ),
                    Some(b'\'') => fail(
                        &mut out,
                        "string literals written as U&'…' are not accepted".into(),
                    ),
                    _ => {}
                }
            }
            let mut j = i + 1;
            while j < n && is_ident_part(b[j]) {
                j += 1;
            }
            i = j;
        } else if c.is_ascii_digit() || (c == b'.' && next.is_some_and(|d| d.is_ascii_digit())) {
            let j = end_of_number(b, i);
            out.numbers.push(Region { start: i, end: j });
            i = j;
        } else if c == b'$' {
            if next.is_some_and(|d| d.is_ascii_digit()) {
                let mut j = i + 1;
                while j < n && b[j].is_ascii_digit() {
                    j += 1;
                }
                i = j;
            } else if let Some(tag_end) = dollar_tag_end(b, i) {
                let tag = &b[i..tag_end];
                let close = find_sub(b, tag_end, tag);
                match close {
                    Some(k) => {
                        let j = k + tag.len();
                        out.regions.push(Region { start: i, end: j });
                        i = j;
                    }
                    None => {
                        fail(&mut out, "unterminated dollar-quoted string".into());
                        out.regions.push(Region { start: i, end: n });
                        i = n;
                    }
                }
            } else {
                i += 1;
            }
        } else {
            if c == 0 {
                fail(&mut out, "NUL byte in statement text".into());
            } else if (c < 0x20 && !matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'))
                || c == 0x7f
            {
                fail(
                    &mut out,
                    format!("control character 0x{c:02x} outside a literal"),
                );
            }
            i += 1;
        }
    }
    out
}

/// End (exclusive) of a quoted run starting after its opening quote; doubled quotes
/// continue it, and with `backslash` a backslash escapes the next byte.
fn end_of_quoted(b: &[u8], mut j: usize, quote: u8, backslash: bool) -> Option<usize> {
    while j < b.len() {
        let c = b[j];
        if backslash && c == b'\\' {
            j += 2;
            continue;
        }
        if c == quote {
            if b.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return Some(j + 1);
        }
        j += 1;
    }
    None
}

fn end_of_number(b: &[u8], mut j: usize) -> usize {
    let n = b.len();
    while j < n && (b[j].is_ascii_digit() || b[j] == b'_') {
        j += 1;
    }
    if j < n && b[j] == b'.' && b.get(j + 1) != Some(&b'.') {
        j += 1;
        while j < n && (b[j].is_ascii_digit() || b[j] == b'_') {
            j += 1;
        }
    }
    if j < n && (b[j] == b'e' || b[j] == b'E') {
        let mut k = j + 1;
        if k < n && (b[k] == b'+' || b[k] == b'-') {
            k += 1;
        }
        if k < n && b[k].is_ascii_digit() {
            while k < n && b[k].is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    j
}

/// If a dollar-quote tag (`$$` or `$tag$`) starts at `i`, the end (exclusive) of that tag.
fn dollar_tag_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j) == Some(&b'$') {
        return Some(j + 1);
    }
    if !b.get(j).is_some_and(|&c| is_ident_start(c)) {
        return None;
    }
    while j < b.len() && (is_ident_start(b[j]) || b[j].is_ascii_digit()) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

fn find_sub(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

fn is_comment(text: &str, r: &Region) -> bool {
    text[r.start..].starts_with("--") || text[r.start..].starts_with("/*")
}

/// The offset of the first byte at or after `pos` that is neither white space nor part of
/// a comment (`text.len()` at the end). `pos` must be at a token boundary.
pub fn skip_blank_forward(text: &str, pos: usize) -> usize {
    let Some(rest) = text.get(pos..) else {
        return text.len();
    };
    let scan = scan(rest);
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if is_blank(b[i]) {
            i += 1;
        } else if let Some(r) = scan
            .regions
            .iter()
            .find(|r| r.start == i && is_comment(rest, r))
        {
            i = r.end;
        } else {
            break;
        }
    }
    pos + i
}

/// The offset just past the last byte before `pos` that is neither white space nor part of
/// a comment (0 when there is none). `pos` must be at a token boundary.
pub fn skip_blank_backward(text: &str, pos: usize) -> usize {
    let Some(head) = text.get(..pos) else {
        return 0;
    };
    let scan = scan(head);
    let b = head.as_bytes();
    let mut j = pos;
    loop {
        while j > 0 && is_blank(b[j - 1]) {
            j -= 1;
        }
        match scan
            .regions
            .iter()
            .find(|r| r.end == j && is_comment(head, r))
        {
            Some(r) if r.start < j => j = r.start,
            _ => return j,
        }
    }
}

/// Whether the text just before `end` is the keyword `kw` (ASCII, any case) standing
/// alone as a word; its start if so.
pub fn keyword_before(text: &str, end: usize, kw: &str) -> Option<usize> {
    let start = end.checked_sub(kw.len())?;
    let word = text.get(start..end)?;
    let alone = start == 0 || !is_ident_part(text.as_bytes()[start - 1]);
    (word.eq_ignore_ascii_case(kw) && alone).then_some(start)
}

/// Converts sqlparser locations (1-based line, 1-based column in characters, lines split
/// at `\n`) into byte offsets of the text.
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { text, starts }
    }

    /// Byte offset of `loc`, or `None` when it is outside the text (or empty).
    pub fn offset(&self, loc: Location) -> Option<usize> {
        if loc.line == 0 || loc.column == 0 {
            return None;
        }
        let line_start = *self.starts.get(usize::try_from(loc.line - 1).ok()?)?;
        let col = usize::try_from(loc.column - 1).ok()?;
        let rest = &self.text[line_start..];
        if rest.is_ascii() || rest.as_bytes().iter().take(col).all(|b| b.is_ascii()) {
            let off = line_start + col;
            return (off <= self.text.len()).then_some(off);
        }
        let mut count = 0;
        for (k, _) in rest.char_indices() {
            if count == col {
                return Some(line_start + k);
            }
            count += 1;
        }
        (count == col).then_some(self.text.len())
    }
}

fn is_opaque(tok: &Token) -> bool {
    match tok {
        Token::Whitespace(Whitespace::SingleLineComment { .. })
        | Token::Whitespace(Whitespace::MultiLineComment(_)) => true,
        Token::Word(w) => w.quote_style.is_some(),
        other => is_literal_text(other),
    }
}

/// Tokens that carry literal text (strings of every quoting style, hex, COPY data):
/// opaque to the lexical cross-check and replaced by placeholders in the audit log.
pub(crate) fn is_literal_text(tok: &Token) -> bool {
    matches!(
        tok,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::CopyData { .. }
    )
}

/// Checks that sqlparser's tokens delimit comments, literals and quoted identifiers
/// exactly where PostgreSQL does. `Err` carries the reason to refuse.
pub fn check_against(
    idx: &LineIndex<'_>,
    scan: &Scan,
    tokens: &[TokenWithSpan],
) -> Result<(), String> {
    if let Some(p) = &scan.problem {
        return Err(p.clone());
    }
    let mut theirs = Vec::new();
    for t in tokens {
        if matches!(t.token, Token::CopyData { .. }) {
            return Err("inline COPY data is not accepted".into());
        }
        if !is_opaque(&t.token) {
            continue;
        }
        let (Some(s), Some(e)) = (idx.offset(t.span.start), idx.offset(t.span.end)) else {
            return Err("token positions could not be mapped".into());
        };
        theirs.push(Region { start: s, end: e });
    }
    if theirs != scan.regions {
        return Err("comments, literals or quoted identifiers are delimited ambiguously".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn agree(sql: &str) -> Result<(), String> {
        let toks = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .map_err(|e| e.to_string())?;
        check_against(&LineIndex::new(sql), &scan(sql), &toks)
    }

    #[test]
    fn ordinary_sql_agrees() {
        for sql in [
            "SELECT 'a''b', \"Q\"\"x\", $$x$$, $t$ a $ b $t$, E'\\'', $1 -- c\n/* a /* b */ c */ FROM t",
            "SELECT x'ff', b'01', n'x', 1.5e3, .5, 1e, a$b FROM \"Ü\" WHERE y <> 2",
            "select 'x'\n'y'",
            "SELECT '\\' , 1 --'",
            "SELECT 2*--x\n3",
        ] {
            assert_eq!(agree(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn escapes_and_controls_are_refused() {
        assert!(agree("SELECT U&\"d\\0061t\" FROM t").is_err());
        assert!(agree("SELECT a\x0bFROM t").is_err());
        assert!(agree("SELECT 1\0").is_err());
        assert!(agree("SELECT '").is_err());
        assert!(agree("SELECT 1 /* /* */").is_err());
    }

    #[test]
    fn plain_bytes_are_exactly_those_no_branch_handles() {
        for c in 0..=255u8 {
            let handled = matches!(c, b'-' | b'/' | b'\'' | b'"' | b'$' | b'.')
                || is_ident_start(c)
                || c.is_ascii_digit()
                || c == 0
                || c == 0x7f
                || (c < 0x20 && !matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'));
            assert_eq!(PLAIN[c as usize], !handled, "byte 0x{c:02x}");
            let part = is_ident_start(c) || c.is_ascii_digit() || c == b'$';
            assert_eq!(is_ident_part(c), part, "byte 0x{c:02x}");
        }
    }

    #[test]
    fn blanks_and_comments_are_skipped_both_ways() {
        let t = "FROM ONLY /* x */ -- y\n customers TABLESAMPLE";
        let name = t.find("customers").unwrap_or_default();
        let only_end = skip_blank_backward(t, name);
        assert_eq!(keyword_before(t, only_end, "only"), Some(5));
        assert_eq!(keyword_before(t, only_end, "ly"), None);
        let after = skip_blank_forward(t, name + "customers".len());
        assert_eq!(&t[after..], "TABLESAMPLE");
        assert_eq!(skip_blank_backward("  x", 1), 0);
        assert_eq!(skip_blank_forward("a  ", 1), 3);
    }

    #[test]
    fn carriage_return_ends_line_comments() {
        assert_eq!(agree("SELECT 1 --x\rFROM t"), Ok(()));
    }

    #[test]
    fn line_index_maps_multibyte_columns() {
        let text = "ab\n中文x";
        let idx = LineIndex::new(text);
        assert_eq!(idx.offset(Location::new(2, 3)), Some(3 + 6));
        assert_eq!(idx.offset(Location::new(1, 1)), Some(0));
        assert_eq!(idx.offset(Location::new(9, 1)), None);
    }
}
