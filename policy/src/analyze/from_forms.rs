//! FROM-clause forms around a protected relation that its derived table must absorb:
//! `ONLY name`, `ONLY (name)`, `name *` and `TABLESAMPLE …` (PostgreSQL accepts them on a
//! table, not on a subquery), and `TABLE name` read as `SELECT * FROM name`.

use sqlparser::ast::{
    self, Expr, GroupByExpr, SelectItem, TableAlias, TableFactor, TableInheritance,
    TableSampleKind, TableSampleMethod, TableSampleModifier, TableSampleSeedModifier, Value,
};
use sqlparser::tokenizer::Span;

use crate::lexical;
use crate::rewrite::{self, Source};

/// Where a protected relation reference sits in the text and how its derived table reads
/// the relation.
pub(super) struct Placement {
    /// The bytes the derived table replaces: the name with its `ONLY`, `( )` or `*`.
    pub(super) replace: (usize, usize),
    pub(super) source: Source,
    /// A TABLESAMPLE clause after the alias, cut because it moves inside.
    pub(super) cut: Option<(usize, usize)>,
}

/// Why a protected relation reference could not be placed (the refusal message).
pub(super) type Unplaceable = &'static str;

/// The placement of a protected relation whose name spans `name` in `text`.
pub(super) fn place(
    text: &str,
    lines: &lexical::LineIndex<'_>,
    name: (usize, usize),
    alias: Option<&TableAlias>,
    sample: Option<&TableSampleKind>,
    inheritance: Option<&TableInheritance>,
) -> Result<Placement, Unplaceable> {
    const LOST: &str = "could not locate ONLY or * around a relation with protected columns";
    let (mut start, mut end) = name;
    let mut source = Source::default();
    match inheritance {
        None => {}
        Some(TableInheritance::IncludeDescendants) => {
            let star = lexical::skip_blank_forward(text, end);
            if !text[star..].starts_with('*') {
                return Err(LOST);
            }
            end = star + 1;
        }
        Some(TableInheritance::Only { parenthesized }) => {
            let mut before = lexical::skip_blank_backward(text, start);
            if *parenthesized {
                if !text[..before].ends_with('(') {
                    return Err(LOST);
                }
                before = lexical::skip_blank_backward(text, before - 1);
                end = rewrite::after_close_paren(text, end).ok_or(LOST)?;
            }
            start = lexical::keyword_before(text, before, "only").ok_or(LOST)?;
            source.only = true;
        }
    }
    let mut cut = None;
    if let Some(kind) = sample {
        const SAMPLE: &str = "TABLESAMPLE on a relation with protected columns other than \
            SYSTEM or BERNOULLI (constant) [REPEATABLE (constant)]";
        let TableSampleKind::AfterTableAlias(s) = kind else {
            return Err(SAMPLE);
        };
        let (clause, last) = sample_clause(s).ok_or(SAMPLE)?;
        let after = match alias {
            Some(a) => lines.offset(a.name.span.end).ok_or(SAMPLE)?,
            None => end,
        };
        let kw = lexical::skip_blank_forward(text, after);
        let is_kw = text
            .get(kw..kw + "tablesample".len())
            .is_some_and(|w| w.eq_ignore_ascii_case("tablesample"));
        let last_end = lines.offset(last.end).ok_or(SAMPLE)?;
        let close = rewrite::after_close_paren(text, last_end).ok_or(SAMPLE)?;
        if !is_kw || close <= kw {
            return Err(SAMPLE);
        }
        cut = Some((kw, close));
        source.sample = Some(clause);
    }
    Ok(Placement {
        replace: (start, end),
        source,
        cut,
    })
}

/// A numeric constant or a `$n` parameter, as written.
fn constant(v: &Value) -> Option<&str> {
    match v {
        Value::Number(n, false) => Some(n),
        Value::Placeholder(p) => Some(p),
        _ => None,
    }
}

/// `TABLESAMPLE SYSTEM|BERNOULLI (c) [REPEATABLE (c)]` rebuilt from the AST with constant
/// arguments only (nothing that reads data moves into the derived table), and the span
/// of its last argument.
fn sample_clause(s: &ast::TableSample) -> Option<(String, Span)> {
    let method = match s.name? {
        TableSampleMethod::Bernoulli => "BERNOULLI",
        TableSampleMethod::System => "SYSTEM",
        _ => return None,
    };
    let q = s.quantity.as_ref()?;
    if s.modifier != TableSampleModifier::TableSample
        || !q.parenthesized
        || q.unit.is_some()
        || s.bucket.is_some()
        || s.offset.is_some()
    {
        return None;
    }
    let Expr::Value(v) = &q.value else {
        return None;
    };
    let mut sql = format!("TABLESAMPLE {method} ({})", constant(&v.value)?);
    let mut last = v.span;
    if let Some(seed) = &s.seed {
        if seed.modifier != TableSampleSeedModifier::Repeatable {
            return None;
        }
        sql.push_str(" REPEATABLE (");
        sql.push_str(constant(&seed.value.value)?);
        sql.push(')');
        last = seed.value.span;
    }
    Some((sql, last))
}

/// The byte range of the `TABLE` keyword when `sel` is `TABLE name` read as
/// `SELECT * FROM name` (parse_prep gives the three tokens the keyword's span).
pub(super) fn table_keyword(
    text: &str,
    lines: &lexical::LineIndex<'_>,
    sel: &ast::Select,
) -> Option<(usize, usize)> {
    let start = lines.offset(sel.select_token.0.span.start)?;
    let end = start + "table".len();
    text.get(start..end)
        .is_some_and(|w| w.eq_ignore_ascii_case("table"))
        .then_some((start, end))
}

/// Whether `sel`, read from `TABLE name`, is only that: PostgreSQL accepts no alias,
/// WHERE, GROUP BY or other SELECT clause after it (sqlparser would).
pub(super) fn is_bare_table(sel: &ast::Select) -> bool {
    let [SelectItem::Wildcard(_)] = sel.projection.as_slice() else {
        return false;
    };
    let [twj] = sel.from.as_slice() else {
        return false;
    };
    let plain_table = matches!(
        &twj.relation,
        TableFactor::Table {
            alias: None,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample: None,
            index_directives,
            ..
        } if with_hints.is_empty() && partitions.is_empty() && index_directives.is_empty()
    );
    let no_group =
        matches!(&sel.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    plain_table
        && twj.joins.is_empty()
        && sel.distinct.is_none()
        && sel.top.is_none()
        && sel.into.is_none()
        && sel.selection.is_none()
        && no_group
        && sel.having.is_none()
        && sel.named_window.is_empty()
        && sel.qualify.is_none()
        && sel.lateral_views.is_empty()
        && sel.prewhere.is_none()
        && sel.connect_by.is_empty()
        && sel.cluster_by.is_empty()
        && sel.distribute_by.is_empty()
        && sel.sort_by.is_empty()
        && sel.value_table_mode.is_none()
}
