//! Masks the proxy applies to result columns instead of rewriting the SQL.
//!
//! For the most frequent protected read, one table whose protected columns appear only
//! as bare output columns (`SELECT name, phone FROM customers WHERE id = 7`), the
//! derived-table rewrite costs PostgreSQL more than the query itself: it parses, plans
//! and evaluates every mask expression on each execution. Such a statement is forwarded
//! as written and the proxy masks those output columns of every DataRow, producing
//! byte for byte what the SQL expressions of [`crate::mask::render`] would return
//! (the column then reads as `text`, or keeps its type for `null`, exactly as through the
//! rewrite).
//!
//! Only statements where that is provably the same are planned here; everything else
//! keeps the rewrite. PostgreSQL sees raw values in this statement, so nothing but the
//! output list may mention a protected column, the relation, or its alias: the check
//! runs on every token of the text, not on the parsed tree, and refuses on doubt.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, GroupByExpr, Ident, ObjectNamePart, OrderByKind, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, Visit, Visitor,
    WildcardAdditionalOptions,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::mask::MaskKey;
use crate::model::Mask;

/// PostgreSQL truncates identifiers to this many bytes minus one.
const NAMEDATALEN: usize = 64;

/// The masks of one statement's result columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowMasks {
    /// Number of columns every row and row description has.
    pub width: usize,
    /// Masked columns, by increasing output position.
    pub columns: Vec<ColumnMask>,
    /// The output columns a `*` expanded, by increasing position, with the name the
    /// server must describe there. The catalog they were expanded from may be older
    /// than the table (a column dropped and another added keeps the width but shifts
    /// positions), so the proxy checks them against the RowDescription.
    pub expanded: Vec<(usize, String)>,
}

/// One masked output column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMask {
    /// Position in the row (0-based).
    pub index: usize,
    pub mask: ValueMask,
}

/// A mask the proxy computes itself (the text masks and `null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMask {
    Partial {
        keep_first: usize,
        keep_last: usize,
        fill: String,
    },
    Email,
    Hash,
    Redact(String),
    Null,
}

impl ValueMask {
    /// The proxy's version of `mask` over a column of `type_name`, if it computes the
    /// same value as the SQL expression (text masks need a text or varchar column, whose
    /// text and binary forms are both its UTF-8 bytes).
    fn of(mask: &Mask, type_name: &str) -> Option<ValueMask> {
        let textual = type_name == "text" || type_name.starts_with("character varying");
        let v = match mask {
            Mask::Null => ValueMask::Null,
            Mask::Redact { with } => ValueMask::Redact(with.clone()),
            Mask::Partial {
                keep_first,
                keep_last,
                fill,
            } => ValueMask::Partial {
                keep_first: *keep_first as usize,
                keep_last: *keep_last as usize,
                fill: if fill.is_empty() {
                    "*".into()
                } else {
                    fill.clone()
                },
            },
            Mask::Email => ValueMask::Email,
            Mask::Hash => ValueMask::Hash,
            _ => return None,
        };
        (textual || !v.reads_text()).then_some(v)
    }

    /// Does the column keep its type (else the row description says `text`)?
    pub fn keeps_type(&self) -> bool {
        matches!(self, ValueMask::Null)
    }

    /// Does the mask read the value as text (so the column must be `text` or `varchar`,
    /// whose text and binary forms are the same bytes)? `redact` and `null` do not.
    pub fn reads_text(&self) -> bool {
        matches!(
            self,
            ValueMask::Partial { .. } | ValueMask::Email | ValueMask::Hash
        )
    }

    /// Masks one non-NULL value, appending the result to `out`; false means the result
    /// is NULL (nothing appended).
    pub fn apply(&self, value: &[u8], key: &MaskKey, out: &mut Vec<u8>) -> bool {
        match self {
            ValueMask::Null => return false,
            ValueMask::Redact(with) => out.extend_from_slice(with.as_bytes()),
            ValueMask::Partial {
                keep_first,
                keep_last,
                fill,
            } => partial(value, *keep_first, *keep_last, fill.as_bytes(), out),
            ValueMask::Email => email(value, out),
            ValueMask::Hash => out.extend_from_slice(key.hmac_hex(value).as_bytes()),
        }
        true
    }
}

/// How PostgreSQL counts the characters of `value`: UTF-8 characters, or bytes when it
/// is not UTF-8 (a single-byte server encoding).
enum Chars<'a> {
    /// ASCII, or not UTF-8: one character per byte.
    Bytes(usize),
    Utf8(&'a str),
}

impl<'a> Chars<'a> {
    fn of(value: &'a [u8]) -> Chars<'a> {
        if value.is_ascii() {
            return Chars::Bytes(value.len());
        }
        match std::str::from_utf8(value) {
            Ok(s) => Chars::Utf8(s),
            Err(_) => Chars::Bytes(value.len()),
        }
    }

    fn count(&self) -> usize {
        match self {
            Chars::Bytes(n) => *n,
            Chars::Utf8(s) => s.chars().count(),
        }
    }

    /// Byte offset where character `i` starts (the length when `i` is past the end).
    fn offset(&self, i: usize) -> usize {
        match self {
            Chars::Bytes(n) => i.min(*n),
            Chars::Utf8(s) => s.char_indices().nth(i).map_or(s.len(), |(at, _)| at),
        }
    }
}

/// `CASE WHEN char_length(x) <= k THEN repeat(fill, char_length(x)) ELSE first
/// keep_first characters || repeat(fill, n - k) || last keep_last characters END`.
fn partial(value: &[u8], keep_first: usize, keep_last: usize, fill: &[u8], out: &mut Vec<u8>) {
    let chars = Chars::of(value);
    let n = chars.count();
    let keep = keep_first.saturating_add(keep_last);
    if n <= keep {
        repeat(fill, n, out);
        return;
    }
    let head_end = chars.offset(keep_first);
    let tail_start = chars.offset(n - keep_last);
    out.reserve(head_end + fill.len() * (n - keep) + (value.len() - tail_start));
    out.extend_from_slice(&value[..head_end]);
    repeat(fill, n - keep, out);
    out.extend_from_slice(&value[tail_start..]);
}

/// Appends `fill` `times` times (one byte, the usual `*`, without a loop of copies).
fn repeat(fill: &[u8], times: usize, out: &mut Vec<u8>) {
    match fill {
        [b] => out.resize(out.len() + times, *b),
        _ => {
            out.reserve(fill.len() * times);
            for _ in 0..times {
                out.extend_from_slice(fill);
            }
        }
    }
}

/// `CASE WHEN strpos(x, '@') = 0 THEN '***' ELSE left(split_part(x, '@', 1), 1) ||
/// '***@' || substr(x, strpos(x, '@') + 1) END`.
fn email(value: &[u8], out: &mut Vec<u8>) {
    let Some(at) = value.iter().position(|&b| b == b'@') else {
        out.extend_from_slice(b"***");
        return;
    };
    let local = &value[..at];
    let first = Chars::of(local).offset(1);
    out.reserve(first + 4 + (value.len() - at - 1));
    out.extend_from_slice(&local[..first]);
    out.extend_from_slice(b"***@");
    out.extend_from_slice(&value[at + 1..]);
}

/// What a role sees of one column of the relation a statement reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetVis {
    Raw,
    Mask(Mask),
    Deny,
}

/// A column of [`Target`].
#[derive(Debug, Clone)]
pub(crate) struct TargetCol {
    pub name: String,
    pub type_name: String,
    pub vis: TargetVis,
}

/// The one protected relation a statement reads, with the role's view of its columns.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub name: String,
    pub cols: Vec<TargetCol>,
}

/// Folds an identifier or word the way the check compares names: lower case, cut at
/// PostgreSQL's identifier length. Folding quoted names too only widens what counts as
/// a mention (refusing more, never less).
fn fold(s: &str) -> String {
    let mut s = s.to_lowercase();
    if s.len() >= NAMEDATALEN {
        let mut cut = NAMEDATALEN - 1;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The masks for `stmt` (the only statement of `sql`) reading `target`, when the proxy
/// can apply them to the output instead of rewriting; None keeps the rewrite.
pub(crate) fn plan(sql: &str, stmt: &Statement, target: &Target) -> Option<RowMasks> {
    // Unicode-escaped identifiers (U&"…") spell names the token check cannot see.
    if sql.contains("&\"") || sql.contains("&'") {
        return None;
    }
    let Statement::Query(q) = stmt else {
        return None;
    };
    let sel = plain_select(q)?;
    let [twj] = sel.from.as_slice() else {
        return None;
    };
    if !twj.joins.is_empty() {
        return None;
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_directives,
        ..
    } = &twj.relation
    else {
        return None;
    };
    if !with_hints.is_empty() || !partitions.is_empty() || !index_directives.is_empty() {
        return None;
    }
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return None;
    }
    one_query_one_table(stmt)?;
    let rel_name = fold(&target.name);
    let qualifier = match alias {
        Some(a) => fold(&a.name.value),
        None => rel_name.clone(),
    };

    let mut p = Planner {
        target,
        qualifier: &qualifier,
        rel_name: &rel_name,
        credited: HashSet::new(),
        masks: Vec::new(),
        expanded: Vec::new(),
        width: 0,
        aliases: Vec::new(),
    };
    for part in &name.0 {
        if let ObjectNamePart::Identifier(id) = part {
            p.credit(id);
        }
    }
    if let Some(a) = alias {
        p.credit(&a.name);
    }
    for item in &sel.projection {
        p.item(item)?;
    }
    if let Some(ob) = &q.order_by {
        let OrderByKind::Expressions(items) = &ob.kind else {
            return None;
        };
        for o in items {
            p.order_key(&o.expr)?;
        }
    }
    p.scan(sql)?;
    if p.masks.is_empty() {
        return None;
    }
    Some(RowMasks {
        width: p.width,
        columns: p.masks,
        expanded: p.expanded,
    })
}

/// The SELECT of a query without anything that groups, deduplicates, combines or
/// stores rows (each of which could compare raw values).
fn plain_select(q: &Query) -> Option<&Select> {
    if q.with.is_some()
        || !q.locks.is_empty()
        || q.for_clause.is_some()
        || q.settings.is_some()
        || q.format_clause.is_some()
        || !q.pipe_operators.is_empty()
    {
        return None;
    }
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return None;
    };
    let no_group =
        matches!(&sel.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    let plain = sel.distinct.is_none()
        && sel.top.is_none()
        && sel.into.is_none()
        && sel.exclude.is_none()
        && sel.select_modifiers.is_none()
        && sel.optimizer_hints.is_empty()
        && sel.lateral_views.is_empty()
        && sel.prewhere.is_none()
        && sel.connect_by.is_empty()
        && no_group
        && sel.cluster_by.is_empty()
        && sel.distribute_by.is_empty()
        && sel.sort_by.is_empty()
        && sel.having.is_none()
        && sel.named_window.is_empty()
        && sel.qualify.is_none()
        && sel.value_table_mode.is_none();
    plain.then_some(sel.as_ref())
}

/// Some(()) when the statement holds exactly one query and one table factor (no
/// subquery anywhere: a subquery could read other protected data unrewritten).
fn one_query_one_table(stmt: &Statement) -> Option<()> {
    struct Count {
        queries: usize,
        factors: usize,
    }
    impl Visitor for Count {
        type Break = ();
        fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.queries += 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, _t: &TableFactor) -> ControlFlow<()> {
            self.factors += 1;
            ControlFlow::Continue(())
        }
    }
    let mut c = Count {
        queries: 0,
        factors: 0,
    };
    let _ = stmt.visit(&mut c);
    (c.queries == 1 && c.factors == 1).then_some(())
}

struct Planner<'t> {
    target: &'t Target,
    /// The name that qualifies columns (the alias, else the relation's name), folded.
    qualifier: &'t str,
    rel_name: &'t str,
    /// Token positions of the mentions accounted for (output columns, the FROM item).
    credited: HashSet<(u64, u64)>,
    masks: Vec<ColumnMask>,
    /// See [`RowMasks::expanded`].
    expanded: Vec<(usize, String)>,
    width: usize,
    /// Output column aliases, folded.
    aliases: Vec<String>,
}

/// The name PostgreSQL gives an identifier (quoted: as written; else lower case).
fn exact(id: &Ident) -> String {
    crate::analyze::fold(id)
}

fn at(l: Location) -> (u64, u64) {
    (l.line, l.column)
}

impl<'t> Planner<'t> {
    fn credit(&mut self, id: &Ident) {
        self.credited.insert(at(id.span.start));
    }

    /// The column PostgreSQL resolves `name` (already folded by its rules) to.
    fn column(&self, name: &str) -> Option<(usize, &'t TargetCol)> {
        let target: &'t Target = self.target;
        target.cols.iter().enumerate().find(|(_, c)| c.name == name)
    }

    fn is_protected(&self, name: &str) -> bool {
        self.target
            .cols
            .iter()
            .any(|c| c.vis != TargetVis::Raw && fold(&c.name) == name)
    }

    /// A mention of the relation itself (its name or alias).
    fn is_relation(&self, name: &str) -> bool {
        name == self.qualifier || name == self.rel_name
    }

    /// Adds the output column of `col` at the next position.
    fn output(&mut self, col: &TargetCol) -> Option<()> {
        match &col.vis {
            TargetVis::Raw => {}
            TargetVis::Deny => return None,
            TargetVis::Mask(m) => self.masks.push(ColumnMask {
                index: self.width,
                mask: ValueMask::of(m, &col.type_name)?,
            }),
        }
        self.width += 1;
        Some(())
    }

    /// `expr` as a column of the relation: `col`, `q.col`, `schema.table.col`.
    fn bare_column<'e>(&self, expr: &'e Expr) -> Option<(&'e [Ident], &'e Ident)> {
        match expr {
            Expr::Identifier(id) => Some((&[], id)),
            Expr::CompoundIdentifier(parts) => {
                let (col, quals) = parts.split_last()?;
                let q = quals.last()?;
                (quals.len() <= 3 && fold(&q.value) == self.qualifier).then_some((quals, col))
            }
            _ => None,
        }
    }

    fn item(&mut self, item: &SelectItem) -> Option<()> {
        let expr = match item {
            SelectItem::Wildcard(opts) => {
                plain_wildcard(opts)?;
                return self.all_columns();
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), opts) => {
                plain_wildcard(opts)?;
                let [ObjectNamePart::Identifier(q)] = n.0.as_slice() else {
                    return None;
                };
                if fold(&q.value) != self.qualifier {
                    return None;
                }
                self.credit(q);
                return self.all_columns();
            }
            SelectItem::QualifiedWildcard(..) | SelectItem::ExprWithAliases { .. } => return None,
            SelectItem::UnnamedExpr(e) => e,
            SelectItem::ExprWithAlias { expr, alias } => {
                self.aliases.push(fold(&alias.value));
                self.credit(alias);
                expr
            }
        };
        let col = self
            .bare_column(expr)
            .and_then(|(quals, id)| Some((quals, id, self.column(&exact(id))?)));
        match col {
            Some((quals, id, (_, col))) => {
                for q in quals {
                    self.credit(q);
                }
                self.credit(id);
                self.output(col)
            }
            // Any other expression: one output column, its mentions not credited.
            None => {
                self.width += 1;
                Some(())
            }
        }
    }

    fn all_columns(&mut self) -> Option<()> {
        let target: &'t Target = self.target;
        for c in &target.cols {
            self.expanded.push((self.width, c.name.clone()));
            self.output(c)?;
        }
        Some(())
    }

    /// ORDER BY may only name unprotected columns, never an output alias or position
    /// (those sort by the raw value of a masked output).
    fn order_key(&mut self, expr: &Expr) -> Option<()> {
        let (quals, id) = self.bare_column(expr)?;
        let name = fold(&id.value);
        if self.aliases.contains(&name) || self.is_protected(&name) {
            return None;
        }
        let (_, col) = self.column(&exact(id))?;
        if col.vis != TargetVis::Raw {
            return None;
        }
        for q in quals {
            self.credit(q);
        }
        Some(())
    }

    /// Every word of the text that names a protected column, the relation or its alias
    /// must be credited, or be `qualifier.unprotected_column`.
    fn scan(&self, sql: &str) -> Option<()> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .ok()?;
        let toks: Vec<_> = tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        for (i, t) in toks.iter().enumerate() {
            let Token::Word(w) = &t.token else {
                continue;
            };
            let name = fold(&w.value);
            let sensitive = self.is_protected(&name) || self.is_relation(&name);
            if !sensitive || self.credited.contains(&at(t.span.start)) {
                continue;
            }
            // `q.col` of an unprotected column, not followed by more name or a call.
            let qualified_raw = self.is_relation(&name)
                && matches!(toks.get(i + 1).map(|t| &t.token), Some(Token::Period))
                && matches!(toks.get(i + 2).map(|t| &t.token),
                    Some(Token::Word(c)) if self.column(&exact(&Ident {
                        value: c.value.clone(),
                        quote_style: c.quote_style,
                        span: t.span,
                    }))
                        .is_some_and(|(_, c)| c.vis == TargetVis::Raw))
                && !matches!(
                    toks.get(i + 3).map(|t| &t.token),
                    Some(Token::Period | Token::LParen)
                );
            if !qualified_raw {
                return None;
            }
        }
        Some(())
    }
}

fn plain_wildcard(o: &WildcardAdditionalOptions) -> Option<()> {
    (o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
        && o.opt_alias.is_none())
    .then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(m: &ValueMask, v: &str) -> String {
        let mut out = Vec::new();
        assert!(m.apply(v.as_bytes(), &MaskKey::new(b"k"), &mut out));
        String::from_utf8(out).expect("utf-8 in, utf-8 out")
    }

    #[test]
    fn partial_keeps_ends_and_hides_short_values() {
        let m = ValueMask::Partial {
            keep_first: 3,
            keep_last: 4,
            fill: "*".into(),
        };
        assert_eq!(masked(&m, "13812345678"), "138****5678");
        assert_eq!(masked(&m, "1234567"), "*******");
        assert_eq!(masked(&m, ""), "");
        let name = ValueMask::Partial {
            keep_first: 1,
            keep_last: 0,
            fill: "*".into(),
        };
        assert_eq!(masked(&name, "欧阳娜娜"), "欧***");
        let wide = ValueMask::Partial {
            keep_first: 1,
            keep_last: 1,
            fill: "xy".into(),
        };
        assert_eq!(masked(&wide, "abcd"), "axyxyd");
        assert_eq!(masked(&wide, "ab"), "xyxy");
    }

    #[test]
    fn email_keeps_first_letter_and_domain() {
        assert_eq!(
            masked(&ValueMask::Email, "zhang@example.com"),
            "z***@example.com"
        );
        assert_eq!(masked(&ValueMask::Email, "@x"), "***@x");
        assert_eq!(masked(&ValueMask::Email, "张三@例子.cn"), "张***@例子.cn");
        assert_eq!(masked(&ValueMask::Email, "nobody"), "***");
        assert_eq!(masked(&ValueMask::Email, "a@b@c"), "a***@b@c");
    }

    #[test]
    fn null_and_redact() {
        let mut out = Vec::new();
        assert!(!ValueMask::Null.apply(b"x", &MaskKey::new(b"k"), &mut out));
        assert_eq!(
            masked(&ValueMask::Redact("[hidden]".into()), "x"),
            "[hidden]"
        );
    }
}
