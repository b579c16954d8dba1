//! Token-stream adjustments that let sqlparser parse PostgreSQL forms it lacks.
//!
//! Each adjustment is an exact equivalent under PostgreSQL's grammar and only changes
//! what the analyser is given: the text forwarded to the server is the client's (plus the
//! analyser's edits, which are placed by the original token positions, kept here).
//! - string continuation: `'a'⏎'b'` is the one literal `'ab'`;
//! - `TABLE name` at the start of a query is `SELECT * FROM name` (the analyser checks
//!   that nothing PostgreSQL would reject follows, and rewrites the keyword when the
//!   relation becomes a derived table);
//! - `WHERE CURRENT OF cursor` in UPDATE/DELETE reads no column: parsed as `WHERE TRUE`;
//! - `FETCH FIRST (expr) ROWS ONLY` is `LIMIT (expr)`; with `WITH TIES` only a
//!   parenthesised constant (numbers, `$n`, arithmetic) is accepted.

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Span, Token, TokenWithSpan, Whitespace};

use crate::lexical::LineIndex;

/// Applies every adjustment of this module to `tokens` (sqlparser's tokens of `sql`).
/// One pass finds which adjustments can apply, so ordinary statements pay for one scan.
pub(crate) fn prepare(sql: &str, lines: &LineIndex<'_>, tokens: &mut Vec<TokenWithSpan>) {
    let (mut strings, mut table, mut current, mut fetch) = (0usize, false, false, false);
    for t in tokens.iter() {
        match &t.token {
            Token::SingleQuotedString(_) => strings += 1,
            Token::Word(w) if w.quote_style.is_none() => match w.keyword {
                Keyword::TABLE => table = true,
                Keyword::CURRENT => current = true,
                Keyword::FETCH => fetch = true,
                _ => {}
            },
            _ => {}
        }
    }
    if strings > 1 {
        merge_string_continuations(sql, lines, tokens);
    }
    if table {
        table_commands(tokens);
    }
    if current {
        where_current_of(tokens);
    }
    if fetch {
        fetch_first_expressions(tokens);
    }
}

fn is_kw(t: &Token, k: Keyword) -> bool {
    matches!(t, Token::Word(w) if w.keyword == k && w.quote_style.is_none())
}

fn is_space(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

/// Index of the last non-whitespace token before `i`.
fn prev_sig(tokens: &[TokenWithSpan], i: usize) -> Option<usize> {
    tokens[..i].iter().rposition(|t| !is_space(&t.token))
}

/// Index of the first non-whitespace token after `i`.
fn next_sig(tokens: &[TokenWithSpan], i: usize) -> Option<usize> {
    tokens
        .get(i + 1..)?
        .iter()
        .position(|t| !is_space(&t.token))
        .map(|p| i + 1 + p)
}

fn at(tokens: &[TokenWithSpan], i: Option<usize>) -> Option<&Token> {
    i.and_then(|i| tokens.get(i)).map(|t| &t.token)
}

/// PostgreSQL's `whitespace_with_newline` between two string constants (scan.l):
/// horizontal space or `--` comments, a newline, then space or `--` comment lines.
/// `/* */` comments do not continue a literal.
fn is_continuation_gap(gap: &[u8]) -> bool {
    let n = gap.len();
    let comment_end = |mut i: usize| {
        while i < n && gap[i] != b'\n' && gap[i] != b'\r' {
            i += 1;
        }
        i
    };
    let mut i = 0;
    loop {
        if i < n && matches!(gap[i], b' ' | b'\t' | b'\x0c') {
            i += 1;
        } else if gap[i..].starts_with(b"--") {
            i = comment_end(i + 2);
        } else {
            break;
        }
    }
    if !(i < n && matches!(gap[i], b'\n' | b'\r')) {
        return false;
    }
    i += 1;
    while i < n {
        if matches!(gap[i], b' ' | b'\t' | b'\n' | b'\r' | b'\x0c') {
            i += 1;
        } else if gap[i..].starts_with(b"--") {
            i = comment_end(i + 2);
            if i >= n {
                return false;
            }
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// `'a'⏎'b'` → one `'ab'` token spanning both (plain literals only: an `E''`, `B''`,
/// `X''` or `N''` start stays two tokens and fails to parse).
fn merge_string_continuations(sql: &str, lines: &LineIndex<'_>, tokens: &mut Vec<TokenWithSpan>) {
    let mut i = 0;
    while i < tokens.len() {
        if !matches!(tokens[i].token, Token::SingleQuotedString(_)) {
            i += 1;
            continue;
        }
        let Some(j) = next_sig(tokens, i) else {
            return;
        };
        let Token::SingleQuotedString(second) = &tokens[j].token else {
            i = j;
            continue;
        };
        let gap = lines
            .offset(tokens[i].span.end)
            .zip(lines.offset(tokens[j].span.start))
            .and_then(|(s, e)| sql.as_bytes().get(s..e));
        if !gap.is_some_and(is_continuation_gap) {
            i = j;
            continue;
        }
        let second = second.clone();
        let end = tokens[j].span.end;
        if let Token::SingleQuotedString(first) = &mut tokens[i].token {
            first.push_str(&second);
        }
        tokens[i].span.end = end;
        tokens.drain(i + 1..=j);
    }
}

fn is_set_op(t: &Token) -> bool {
    is_kw(t, Keyword::UNION) || is_kw(t, Keyword::INTERSECT) || is_kw(t, Keyword::EXCEPT)
}

/// Whether a `TABLE` keyword at `i` starts a query: at the start of a statement, after
/// `(` or after a set operation (TABLE is reserved in PostgreSQL, so nothing else can
/// follow these).
fn table_starts_query(tokens: &[TokenWithSpan], i: usize) -> bool {
    let p = prev_sig(tokens, i);
    match at(tokens, p) {
        None | Some(Token::SemiColon | Token::LParen) => true,
        Some(t) if is_set_op(t) => true,
        Some(t) if is_kw(t, Keyword::ALL) || is_kw(t, Keyword::DISTINCT) => {
            let q = p.and_then(|p| prev_sig(tokens, p));
            at(tokens, q).is_some_and(is_set_op)
        }
        _ => false,
    }
}

/// `TABLE name` → `SELECT * FROM name`; the three tokens keep the keyword's span, which
/// is how the analyser recognises the form (the text there says TABLE, not SELECT).
fn table_commands(tokens: &mut Vec<TokenWithSpan>) {
    let mut i = 0;
    while i < tokens.len() {
        if is_kw(&tokens[i].token, Keyword::TABLE) && table_starts_query(tokens, i) {
            let span = tokens[i].span;
            let with = |t: Token| TokenWithSpan::new(t, span);
            tokens.splice(
                i..=i,
                [
                    with(Token::make_keyword("SELECT")),
                    with(Token::Mul),
                    with(Token::make_keyword("FROM")),
                ],
            );
            i += 3;
        } else {
            i += 1;
        }
    }
}

/// Whether the statement holding token `i` starts with UPDATE or DELETE.
fn in_update_or_delete(tokens: &[TokenWithSpan], i: usize) -> bool {
    let start = tokens[..i]
        .iter()
        .rposition(|t| t.token == Token::SemiColon)
        .map_or(0, |p| p + 1);
    let first = tokens[start..].iter().find(|t| !is_space(&t.token));
    first.is_some_and(|t| is_kw(&t.token, Keyword::UPDATE) || is_kw(&t.token, Keyword::DELETE))
}

/// `WHERE CURRENT OF cursor` (then the end, `;` or RETURNING) → `WHERE TRUE`: the row is
/// the cursor's current one, whose query was decided when it was declared.
fn where_current_of(tokens: &mut Vec<TokenWithSpan>) {
    let mut i = 0;
    while i < tokens.len() {
        if !is_kw(&tokens[i].token, Keyword::WHERE) {
            i += 1;
            continue;
        }
        let current = next_sig(tokens, i);
        let of = current.and_then(|c| next_sig(tokens, c));
        let name = of.and_then(|o| next_sig(tokens, o));
        let after = name.and_then(|n| next_sig(tokens, n));
        let shape = at(tokens, current).is_some_and(|t| is_kw(t, Keyword::CURRENT))
            && at(tokens, of).is_some_and(|t| is_kw(t, Keyword::OF))
            && matches!(at(tokens, name), Some(Token::Word(_)))
            && match at(tokens, after) {
                None | Some(Token::SemiColon) => true,
                Some(t) => is_kw(t, Keyword::RETURNING),
            };
        if let (true, Some(c), Some(n)) = (shape, current, name) {
            if in_update_or_delete(tokens, i) {
                let span = Span::new(tokens[c].span.start, tokens[n].span.end);
                tokens.splice(
                    c..=n,
                    [TokenWithSpan::new(Token::make_keyword("TRUE"), span)],
                );
            }
        }
        i += 1;
    }
}

/// The index of the `)` matching the `(` at `open`.
fn matching_paren(tokens: &[TokenWithSpan], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Tokens that cannot read data: numbers, `$n`, arithmetic and parentheses.
fn is_constant_arithmetic(tokens: &[TokenWithSpan]) -> bool {
    tokens.iter().all(|t| {
        matches!(
            t.token,
            Token::Number(..)
                | Token::Placeholder(_)
                | Token::Plus
                | Token::Minus
                | Token::Mul
                | Token::Div
                | Token::Mod
                | Token::LParen
                | Token::RParen
                | Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab)
        )
    })
}

/// `FETCH FIRST|NEXT ( … ) ROW|ROWS ONLY` → `LIMIT ( … )`, and with `WITH TIES` a
/// constant `( … )` → one number token (sqlparser reads only a value there).
fn fetch_first_expressions(tokens: &mut Vec<TokenWithSpan>) {
    let mut i = 0;
    while i < tokens.len() {
        let clause = is_kw(&tokens[i].token, Keyword::FETCH)
            && !matches!(
                at(tokens, prev_sig(tokens, i)),
                None | Some(Token::SemiColon)
            );
        let first = next_sig(tokens, i);
        let open = first.and_then(|f| next_sig(tokens, f));
        let (true, Some(f), Some(o)) = (clause, first, open) else {
            i += 1;
            continue;
        };
        let first_ok =
            at(tokens, first).is_some_and(|t| is_kw(t, Keyword::FIRST) || is_kw(t, Keyword::NEXT));
        let close = (first_ok && tokens[o].token == Token::LParen)
            .then(|| matching_paren(tokens, o))
            .flatten();
        let Some(c) = close else {
            i += 1;
            continue;
        };
        let rows = next_sig(tokens, c);
        let tail = rows.and_then(|r| next_sig(tokens, r));
        let rows_ok =
            at(tokens, rows).is_some_and(|t| is_kw(t, Keyword::ROW) || is_kw(t, Keyword::ROWS));
        let (true, Some(r), Some(t)) = (rows_ok, rows, tail) else {
            i += 1;
            continue;
        };
        if is_kw(&tokens[t].token, Keyword::ONLY) {
            tokens.drain(r..=t);
            let span = Span::new(tokens[i].span.start, tokens[f].span.end);
            tokens.splice(
                i..=f,
                [TokenWithSpan::new(Token::make_keyword("LIMIT"), span)],
            );
        } else if is_kw(&tokens[t].token, Keyword::WITH) && is_constant_arithmetic(&tokens[o..=c]) {
            let span = Span::new(tokens[o].span.start, tokens[c].span.end);
            let one = TokenWithSpan::new(Token::Number("1".into(), false), span);
            tokens.splice(o..=c, [one]);
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    use sqlparser::tokenizer::Tokenizer;

    fn prepared(sql: &str) -> String {
        let mut tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .expect("test SQL tokenizes");
        prepare(sql, &LineIndex::new(sql), &mut tokens);
        match Parser::new(&PostgreSqlDialect {})
            .with_tokens_with_locations(tokens)
            .parse_statements()
        {
            Ok(stmts) => stmts
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn continuation_gaps_follow_postgresql() {
        for ok in [
            "\n",
            " \n ",
            "\t-- c\n",
            "\r\n",
            "\n-- x\n  ",
            " -- a\n--b\n",
        ] {
            assert!(is_continuation_gap(ok.as_bytes()), "{ok:?}");
        }
        for bad in [
            "",
            " ",
            "/* c */\n",
            "\n/* c */",
            "\n-- c",
            "\n x",
            "\x0b\n",
        ] {
            assert!(!is_continuation_gap(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn continued_literals_become_one() {
        assert_eq!(prepared("SELECT 'foo'\n  'bar'"), "SELECT 'foobar'");
        assert_eq!(
            prepared("SELECT 'a' -- c\n'b'\n'c', 'd'"),
            "SELECT 'abc', 'd'"
        );
        assert!(prepared("SELECT 'a' 'b'").starts_with("error"));
        assert!(prepared("SELECT 'a' /* c */\n'b'").starts_with("error"));
        assert!(prepared("SELECT E'a'\n'b'").starts_with("error"));
        assert!(prepared("SELECT 'a'\nE'b'").starts_with("error"));
    }

    #[test]
    fn table_starts_a_query_only_where_postgresql_reads_one() {
        assert_eq!(prepared("TABLE customers"), "SELECT * FROM customers");
        assert_eq!(
            prepared("SELECT 1; table s.t ORDER BY 1"),
            "SELECT 1; SELECT * FROM s.t ORDER BY 1"
        );
        assert_eq!(
            prepared("SELECT * FROM a UNION ALL TABLE b"),
            "SELECT * FROM a UNION ALL SELECT * FROM b"
        );
        assert_eq!(
            prepared("WITH x AS (TABLE c) SELECT * FROM x"),
            "WITH x AS (SELECT * FROM c) SELECT * FROM x"
        );
        assert_eq!(prepared("DROP TABLE t"), "DROP TABLE t");
        assert_eq!(
            prepared("SELECT \"table\" FROM t"),
            "SELECT \"table\" FROM t"
        );
    }

    #[test]
    fn current_of_reads_no_column() {
        assert_eq!(
            prepared("UPDATE t SET a = 1 WHERE CURRENT OF c RETURNING a"),
            "UPDATE t SET a = 1 WHERE true RETURNING a"
        );
        assert_eq!(
            prepared("DELETE FROM t WHERE current of \"C\""),
            "DELETE FROM t WHERE true"
        );
        assert!(prepared("SELECT * FROM t WHERE CURRENT OF c").starts_with("error"));
        assert!(prepared("DELETE FROM t WHERE CURRENT OF c AND x").starts_with("error"));
    }

    #[test]
    fn fetch_first_expressions_parse() {
        assert_eq!(
            prepared("SELECT a FROM t FETCH FIRST (1+1) ROWS ONLY"),
            "SELECT a FROM t LIMIT (1 + 1)"
        );
        assert_eq!(
            prepared("SELECT a FROM t OFFSET 1 FETCH NEXT ($1) ROW ONLY"),
            "SELECT a FROM t LIMIT ($1) OFFSET 1"
        );
        assert_eq!(
            prepared("SELECT a FROM t ORDER BY a FETCH FIRST (2*3) ROWS WITH TIES"),
            "SELECT a FROM t ORDER BY a FETCH FIRST 1 ROWS WITH TIES"
        );
        assert!(
            prepared("SELECT a FROM t ORDER BY a FETCH FIRST (a) ROWS WITH TIES")
                .starts_with("error")
        );
        assert_eq!(prepared("FETCH NEXT FROM c"), "FETCH NEXT FROM c");
    }
}
