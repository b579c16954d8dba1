//! Dotted name patterns (`schema.table.column`, `schema.table`) and glob overlap.
//!
//! A part containing a dot is written in double quotes (`public."a.b".c`), with `""` for a
//! quote inside, as in SQL; `*` in a part matches any run of characters. Names are
//! case-sensitive, exactly as the catalog stores them.

use crate::model::NamePattern;

/// Splits a dotted pattern into its parts, unquoting quoted parts.
pub(super) fn split(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("unterminated quoted name in \"{text}\"")),
                }
            }
            match chars.peek() {
                None | Some('.') => {}
                Some(c) => {
                    return Err(format!(
                        "unexpected '{c}' after the closing quote in \"{text}\"; a quoted part \
                         must be followed by '.' or the end"
                    ))
                }
            }
            if part.is_empty() {
                return Err(format!("empty quoted name in \"{text}\""));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' {
                    return Err(format!(
                        "a quote in the middle of a name part in \"{text}\"; quote the whole \
                         part, e.g. \"my.table\""
                    ));
                }
                if c.is_whitespace() {
                    return Err(format!(
                        "whitespace in \"{text}\"; remove it, or quote a name that really \
                         contains spaces"
                    ));
                }
                part.push(c);
                chars.next();
            }
            if part.is_empty() {
                return Err(format!("empty name part in \"{text}\""));
            }
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some(_) => {
                if chars.peek().is_none() {
                    return Err(format!("trailing '.' in \"{text}\""));
                }
            }
        }
    }
}

/// `schema.table.column` → three patterns.
pub(super) fn column_pattern(text: &str) -> Result<[NamePattern; 3], String> {
    let parts = split(text)?;
    match <[String; 3]>::try_from(parts) {
        Ok([s, t, c]) => Ok([
            NamePattern::new(s),
            NamePattern::new(t),
            NamePattern::new(c),
        ]),
        Err(parts) => Err(format!(
            "\"{text}\" has {} part(s); expected schema.table.column (use * as a wildcard, \
             and double quotes around a part that contains a dot, e.g. public.\"a.b\".c)",
            parts.len()
        )),
    }
}

/// `schema.name` → two patterns; a lone `*` means every schema and every name.
/// `what` names the object for messages (`table`, `function`).
pub(super) fn qualified_pattern(text: &str, what: &str) -> Result<[NamePattern; 2], String> {
    if text == "*" {
        return Ok([NamePattern::new("*"), NamePattern::new("*")]);
    }
    let parts = split(text)?;
    match <[String; 2]>::try_from(parts) {
        Ok([s, n]) => Ok([NamePattern::new(s), NamePattern::new(n)]),
        Err(parts) if parts.len() == 1 => Err(format!(
            "\"{text}\" has no schema; write schema.{what} (e.g. public.{text}, or *.{text} \
             for any schema), or \"*\" for all"
        )),
        Err(parts) => Err(format!(
            "\"{text}\" has {} parts; expected schema.{what} (use double quotes around a part \
             that contains a dot, e.g. public.\"a.b\")",
            parts.len()
        )),
    }
}

/// A name that both globs match, if any (`*` is the only wildcard).
///
/// Used to find users that two roles would both claim. Exact: it explores the product of
/// the two patterns, remembering dead ends, so it stays quadratic.
pub(super) fn overlap(a: &str, b: &str) -> Option<String> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut dead = vec![false; (a.len() + 1) * (b.len() + 1)];
    let mut witness = Vec::new();
    if walk(&a, &b, 0, 0, &mut dead, &mut witness) {
        Some(witness.into_iter().rev().collect())
    } else {
        None
    }
}

/// Can `a[i..]` and `b[j..]` match a common string? On success `out` holds that string
/// reversed.
fn walk(
    a: &[char],
    b: &[char],
    i: usize,
    j: usize,
    dead: &mut [bool],
    out: &mut Vec<char>,
) -> bool {
    let key = i * (b.len() + 1) + j;
    if dead[key] {
        return false;
    }
    let found = match (a.get(i), b.get(j)) {
        (None, None) => true,
        (Some('*'), _) if walk(a, b, i + 1, j, dead, out) => true,
        (_, Some('*')) if walk(a, b, i, j + 1, dead, out) => true,
        // a's star consumes b's next literal character.
        (Some('*'), Some(&c)) if c != '*' && walk(a, b, i, j + 1, dead, out) => {
            out.push(c);
            true
        }
        (Some(&c), Some('*')) if c != '*' && walk(a, b, i + 1, j, dead, out) => {
            out.push(c);
            true
        }
        (Some(&x), Some(&y)) if x != '*' && x == y && walk(a, b, i + 1, j + 1, dead, out) => {
            out.push(x);
            true
        }
        _ => false,
    };
    if !found {
        dead[key] = true;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_bare_and_quoted_parts() {
        assert_eq!(
            split("public.customers.phone").unwrap(),
            ["public", "customers", "phone"]
        );
        assert_eq!(split("public.\"a.b\".c").unwrap(), ["public", "a.b", "c"]);
        assert_eq!(split("\"Mixed\"\"Q\".*").unwrap(), ["Mixed\"Q", "*"]);
        assert_eq!(split("*").unwrap(), ["*"]);
    }

    #[test]
    fn rejects_malformed_parts() {
        for (text, needle) in [
            ("public..phone", "empty name part"),
            ("public.customers.", "trailing '.'"),
            (".a.b", "empty name part"),
            ("public.\"a.b", "unterminated quoted name"),
            ("public.\"a\"b.c", "after the closing quote"),
            ("public.a\"b\".c", "quote in the middle"),
            ("public. customers", "whitespace"),
            ("public.\"\".c", "empty quoted name"),
        ] {
            let err = split(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn column_and_table_patterns_check_part_counts() {
        let [s, t, c] = column_pattern("public.*.card_no").unwrap();
        assert_eq!(
            (s.text.as_str(), t.text.as_str(), c.text.as_str()),
            ("public", "*", "card_no")
        );
        assert!(column_pattern("customers.phone")
            .unwrap_err()
            .contains("has 2 part(s)"));
        let [s, t] = qualified_pattern("*", "table").unwrap();
        assert_eq!((s.text.as_str(), t.text.as_str()), ("*", "*"));
        assert!(qualified_pattern("customers", "table")
            .unwrap_err()
            .contains("has no schema"));
        assert!(qualified_pattern("a.b.c", "table")
            .unwrap_err()
            .contains("has 3 parts"));
    }

    #[test]
    fn finds_common_names_of_two_globs() {
        let check = |a: &str, b: &str, expect: Option<&str>| {
            let got = overlap(a, b);
            assert_eq!(got.as_deref(), expect, "{a} vs {b}");
            if let Some(w) = got {
                assert!(NamePattern::new(a).matches(&w) && NamePattern::new(b).matches(&w));
            }
        };
        check("bob", "bob", Some("bob"));
        check("bob", "alice", None);
        check("cs_*", "cs_alice", Some("cs_alice"));
        check("cs_alice", "cs_*", Some("cs_alice"));
        check("cs_*", "*_dba", Some("cs_dba"));
        check("cs_*", "dba_*", None);
        check("*", "x", Some("x"));
        check("a*", "*b", Some("ab"));
        check("a*c", "ab*", Some("abc"));
        check("*x*", "*y*", Some("xy"));
        check("ab", "a*b*c", None);
        check("né*", "*é", Some("né"));
    }
}
