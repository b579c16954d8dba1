//! The masking rewrite as text: derived tables that expose a relation's columns in order
//! with masks applied, and splicing of those replacements into the original SQL text at
//! the parser's positions, so comments and formatting survive.

use crate::analyze::{ColInfo, ColVis, RelInfo};
use crate::lexical;
use crate::mask::{self, quote_ident, MaskKey};

/// Replace bytes `[start, end)` of the original text with `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// Marker comment at the start of every derived table pgveil writes (lets checkers and
/// humans find them).
pub const DERIVED_MARK: &str = "/*pgveil*/";

/// The SQL expression that a column becomes for the role (`col_sql` is its reference).
pub(crate) fn column_expr(col: &ColInfo<'_>, col_sql: &str, key: &MaskKey) -> String {
    match &col.vis {
        ColVis::Raw => col_sql.to_string(),
        ColVis::Mask(m) => mask::render(m, col_sql, col.type_name, key),
        ColVis::Deny => mask::null_of(col.type_name),
    }
}

/// How a derived table reads its relation: the client's `ONLY` and `TABLESAMPLE`, which
/// PostgreSQL accepts on a table but not on a subquery, move inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Source {
    /// `FROM ONLY "schema"."name"`: no inheritance children.
    pub only: bool,
    /// A `TABLESAMPLE …` clause written after the relation.
    pub sample: Option<String>,
}

/// `(SELECT id, <mask(phone)> AS phone, … FROM "schema"."name")` without an alias,
/// listing the columns `keep` accepts, in table order (the first column when it accepts
/// none, so the select list is never empty).
pub(crate) fn derived_table(
    rel: &RelInfo<'_>,
    key: &MaskKey,
    mut keep: impl FnMut(&ColInfo<'_>) -> bool,
    source: &Source,
) -> String {
    let mut sql = String::with_capacity(64 + rel.cols.len() * 48);
    sql.push_str("(SELECT ");
    sql.push_str(DERIVED_MARK);
    sql.push(' ');
    let mut kept: Vec<&ColInfo<'_>> = rel.cols.iter().filter(|c| keep(c)).collect();
    if kept.is_empty() {
        kept.extend(rel.cols.first());
    }
    for (i, c) in kept.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let q = quote_ident(c.name);
        if c.vis == ColVis::Raw {
            sql.push_str(&q);
        } else {
            sql.push_str(&column_expr(c, &q, key));
            sql.push_str(" AS ");
            sql.push_str(&q);
        }
    }
    if rel.cols.is_empty() {
        // A relation without known columns cannot be listed; expose nothing.
        sql.push_str("NULL AS \"?pgveil?\" WHERE false");
        sql.push(')');
        return sql;
    }
    sql.push_str(if source.only { " FROM ONLY " } else { " FROM " });
    sql.push_str(&quote_ident(&rel.schema));
    sql.push('.');
    sql.push_str(&quote_ident(&rel.name));
    if let Some(sample) = &source.sample {
        sql.push(' ');
        sql.push_str(sample);
    }
    sql.push(')');
    sql
}

/// The expansion of `RETURNING *` for a DML target referenced as `alias`.
pub(crate) fn returning_list(rel: &RelInfo<'_>, alias: &str, key: &MaskKey) -> String {
    let a = quote_ident(alias);
    rel.cols
        .iter()
        .map(|c| {
            let r = format!("{a}.{}", quote_ident(c.name));
            if c.vis == ColVis::Raw {
                r
            } else {
                format!("{} AS {}", column_expr(c, &r, key), quote_ident(c.name))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The offset just after the `)` that follows `pos` (skipping whitespace and comments).
pub(crate) fn after_close_paren(text: &str, pos: usize) -> Option<usize> {
    let rest = text.get(pos..)?;
    let scan = lexical::scan(rest);
    let mut i = 0;
    let bytes = rest.as_bytes();
    while i < bytes.len() {
        if let Some(r) = scan.regions.iter().find(|r| r.start == i) {
            if rest[r.start..].starts_with("--") || rest[r.start..].starts_with("/*") {
                i = r.end;
                continue;
            }
            return None;
        }
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b')' => return Some(pos + i + 1),
            _ => return None,
        }
    }
    None
}

/// `edits` in text order, identical duplicates merged (overlaps are left for the caller
/// to detect).
pub(crate) fn in_text_order(edits: &[Edit]) -> Vec<&Edit> {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.start, e.end));
    sorted.dedup_by(|a, b| a == b);
    sorted
}

/// Applies non-overlapping edits to `text`. Edits may be given in any order; identical
/// duplicates are merged. Overlaps are an error (the caller refuses the statement).
pub fn apply(text: &str, edits: &[Edit]) -> Result<String, String> {
    let sorted = in_text_order(edits);
    let mut out =
        String::with_capacity(text.len() + edits.iter().map(|e| e.text.len()).sum::<usize>());
    let mut pos = 0;
    for e in sorted {
        if e.start < pos || e.end < e.start || e.end > text.len() {
            return Err("overlapping rewrite positions".into());
        }
        let (Some(keep), true) = (text.get(pos..e.start), text.is_char_boundary(e.end)) else {
            return Err("rewrite position inside a character".into());
        };
        out.push_str(keep);
        out.push_str(&e.text);
        pos = e.end;
    }
    out.push_str(text.get(pos..).unwrap_or_default());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_in_order() {
        let edits = vec![
            Edit {
                start: 7,
                end: 8,
                text: "BB".into(),
            },
            Edit {
                start: 0,
                end: 1,
                text: "A".into(),
            },
        ];
        assert_eq!(apply("x = 1, y", &edits).as_deref(), Ok("A = 1, BB"));
        let overlap = vec![
            Edit {
                start: 0,
                end: 3,
                text: String::new(),
            },
            Edit {
                start: 2,
                end: 4,
                text: String::new(),
            },
        ];
        assert!(apply("abcdef", &overlap).is_err());
    }

    #[test]
    fn finds_close_paren_past_comments() {
        assert_eq!(after_close_paren("(a, b /* x ) */ ) TO", 5), Some(17));
        assert_eq!(after_close_paren("a x)", 1), None);
    }
}
