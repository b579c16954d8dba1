//! Decisions that hold for every value of a statement's numeric constants.
//!
//! Simple-protocol clients put their values into the text (`… WHERE aid = 48213`), so
//! an exact-text cache misses on every call and every call pays for a full parse. A
//! [`Shape`] is the text with its plain numeric constants cut out; a [`Template`] is a
//! decision learnt once for a shape that can be re-instantiated for new constants
//! without parsing.
//!
//! Only what provably cannot depend on a number's value gets a template:
//! - a constant is abstracted only when it is `digits` or `digits.digits`, outside every
//!   comment, string and quoted identifier (PostgreSQL's own lexical extent, see
//!   [`crate::lexical`]) and not glued to an identifier character or a dot, so any
//!   value of the same class lexes into the same single token;
//! - integer and decimal constants are different slots of the key;
//! - every statement must be a plain `select`/`insert`/`update`/`delete`/`merge` with no
//!   session effect (SET, EXPLAIN options and the like read values), and the verdict
//!   must be allow or rewrite;
//! - no rewrite edit may overlap a constant (edits are built from the catalog and the
//!   policy, never from the statement's text), so a constant keeps its place;
//! - the decision is recomputed for other values of every constant and must come out
//!   the same, or the shape is not templated (belt and braces for the rules above).

use std::ops::Range;
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::decide::{decide_with_edits, Outcome, SessionFacts, Verdict};
use crate::lexical;
use crate::mask::MaskKey;
use crate::model::{Policy, StatementKind};
use crate::rewrite::{self, Edit};

/// Marks an integer slot in a shape key (NUL never occurs in a protocol SQL string).
const INT_SLOT: &str = "\0i";
/// Marks a decimal slot in a shape key.
const DEC_SLOT: &str = "\0d";

/// A statement text with its plain numeric constants cut out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape<'a> {
    sql: &'a str,
    /// The text with every abstracted constant replaced by its slot marker.
    key: String,
    /// Byte ranges of the abstracted constants in `sql`, in order.
    constants: Vec<Range<usize>>,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.' || b >= 0x80
}

/// `Some(true)` for `digits.digits`, `Some(false)` for `digits`, else `None`.
fn constant_class(text: &str) -> Option<bool> {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match frac {
        None if digits(int) => Some(false),
        Some(f) if digits(int) && digits(f) => Some(true),
        _ => None,
    }
}

impl<'a> Shape<'a> {
    /// The shape of `sql`, or `None` when it has no abstractable constant or its
    /// lexical structure is one the proxy does not model.
    pub fn of(sql: &'a str) -> Option<Shape<'a>> {
        let scan = lexical::scan(sql);
        if scan.problem.is_some() || scan.numbers.is_empty() {
            return None;
        }
        let bytes = sql.as_bytes();
        let mut key = String::with_capacity(sql.len());
        let mut constants = Vec::new();
        let mut copied = 0;
        for n in &scan.numbers {
            let glued_after = bytes.get(n.end).is_some_and(|&b| is_word_byte(b));
            let glued_before = n.start > 0 && is_word_byte(bytes[n.start - 1]);
            if glued_after || glued_before {
                continue;
            }
            let Some(decimal) = constant_class(&sql[n.start..n.end]) else {
                continue;
            };
            key.push_str(&sql[copied..n.start]);
            key.push_str(if decimal { DEC_SLOT } else { INT_SLOT });
            copied = n.end;
            constants.push(n.start..n.end);
        }
        if constants.is_empty() {
            return None;
        }
        key.push_str(&sql[copied..]);
        Some(Shape {
            sql,
            key,
            constants,
        })
    }

    /// The cache key: the text with slot markers where the constants were.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The text itself.
    pub fn sql(&self) -> &'a str {
        self.sql
    }
}

/// One piece of a templated rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Constant(usize),
}

/// A decision learnt for a [`Shape`], valid for any values of its constants.
#[derive(Debug)]
pub struct Template {
    /// The key of the shape it was learnt for.
    key: Box<str>,
    outcome: Arc<Outcome>,
    /// The rewritten text as pieces (empty when the verdict is allow).
    parts: Vec<Part>,
    /// Bytes of the rewritten text outside the constants.
    fixed_len: usize,
    /// Number of constants of the shape it was learnt from.
    constants: usize,
    /// The key split once for [`Template::matches`]: the bytes before the first
    /// constant, then per constant its kind and the key's bytes up to the next one.
    first: Range<usize>,
    slots: Box<[Slot]>,
    /// The fewest bytes a matching text has (its literals, a digit per constant).
    min_len: usize,
}

/// One constant of a template's key and the literal text that follows it.
#[derive(Debug)]
struct Slot {
    /// `digits.digits` rather than digits.
    decimal: bool,
    /// Where the literal after the constant lies in the key.
    literal: Range<usize>,
}

/// The pieces of `key` (see [`Shape::key`]): none when a marker is not a known kind.
fn split_key(key: &str) -> Option<(Range<usize>, Box<[Slot]>)> {
    let mut pieces = key.split('\0');
    let first = pieces.next()?;
    let mut at = first.len() + 1;
    let mut slots = Vec::new();
    for piece in pieces {
        let decimal = match piece.as_bytes().first() {
            Some(b'i') => false,
            Some(b'd') => true,
            _ => return None,
        };
        slots.push(Slot {
            decimal,
            literal: at + 1..at + piece.len(),
        });
        at += piece.len() + 1;
    }
    Some((0..first.len(), slots.into()))
}

impl Template {
    /// The outcome for `shape` (which must have this template's key).
    pub fn instantiate(&self, shape: &Shape) -> Arc<Outcome> {
        self.instantiate_at(shape.sql, &shape.constants)
    }

    /// The outcome for `sql`, whose constants are at `constants` (as [`Template::matches`]
    /// found them).
    pub fn instantiate_at(&self, sql: &str, constants: &[Range<usize>]) -> Arc<Outcome> {
        if self.parts.is_empty() || constants.len() != self.constants {
            return self.outcome.clone();
        }
        let mut text = String::with_capacity(self.fixed_len + sql.len());
        for p in &self.parts {
            match p {
                Part::Text(t) => text.push_str(t),
                Part::Constant(i) => text.push_str(&sql[constants[*i].clone()]),
            }
        }
        Arc::new(Outcome {
            verdict: Verdict::Rewrite(text),
            statements: self.outcome.statements.clone(),
            row_masks: self.outcome.row_masks.clone(),
        })
    }

    /// Whether `sql` has this template's shape (exactly when `Shape::of(sql)` has its
    /// key), found without lexing: the text between the constants must be the learnt
    /// text's byte for byte, so it lexes the same, and each constant a run of digits (or
    /// `digits.digits` for a decimal slot), which the bytes around it (the same as
    /// around the learnt constant: neither a word character nor a dot) end exactly as
    /// they ended the learnt one. On success `constants` holds their byte ranges.
    pub fn matches(&self, sql: &str, constants: &mut Vec<Range<usize>>) -> bool {
        constants.clear();
        let (s, key) = (sql.as_bytes(), self.key.as_bytes());
        // A NUL in `sql` never matches: the key's literals hold none, and it is no digit.
        if s.len() < self.min_len || !s.starts_with(&key[self.first.clone()]) {
            return false;
        }
        let mut pos = self.first.end;
        let digits =
            |from: usize| from + s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
        for slot in &self.slots {
            let start = pos;
            let mut end = digits(start);
            if end == start {
                return false;
            }
            if slot.decimal {
                if s.get(end) != Some(&b'.') {
                    return false;
                }
                let frac = end + 1;
                end = digits(frac);
                if end == frac {
                    return false;
                }
            }
            let literal = &key[slot.literal.clone()];
            if !s[end..].starts_with(literal) {
                return false;
            }
            constants.push(start..end);
            pos = end + literal.len();
        }
        pos == s.len() && constants.len() == self.constants
    }

    /// The outcome every text of this shape shares when the proxy masks its rows
    /// itself (the text then goes out as the client sent it, so nothing is
    /// instantiated). Its rewrite text is the learnt text's: only for that use.
    pub fn outcome_when_rows_masked(&self) -> Option<&Arc<Outcome>> {
        self.outcome.row_masks.as_ref().map(|_| &self.outcome)
    }

    /// Splits the rewrite of `shape` into text and constants, if no edit touches one.
    fn build(shape: &Shape, outcome: Outcome, edits: &[Edit]) -> Option<Template> {
        // NUL marks the slots in the key (it never reaches us in protocol text).
        if shape.sql.as_bytes().contains(&0) {
            return None;
        }
        let mut parts = Vec::new();
        if matches!(outcome.verdict, Verdict::Rewrite(_)) {
            // Edits and constants in text order (an insertion at a constant's start
            // before it); any overlap gives up.
            let mut pieces: Vec<(usize, usize, Part)> = rewrite::in_text_order(edits)
                .into_iter()
                .map(|e| (e.start, e.end, Part::Text(e.text.clone())))
                .chain(
                    shape
                        .constants
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.start, c.end, Part::Constant(i))),
                )
                .collect();
            pieces.sort_by_key(|(start, end, _)| (*start, *end));
            let mut pos = 0;
            for (start, end, part) in pieces {
                if start < pos {
                    return None;
                }
                parts.push(Part::Text(shape.sql.get(pos..start)?.to_owned()));
                parts.push(part);
                pos = end;
            }
            parts.push(Part::Text(shape.sql.get(pos..)?.to_owned()));
            parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
        }
        let fixed_len = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Constant(_) => 0,
            })
            .sum();
        let (first, slots) = split_key(&shape.key)?;
        let min_len = first.len()
            + slots
                .iter()
                .map(|s| s.literal.len() + if s.decimal { 3 } else { 1 })
                .sum::<usize>();
        let t = Template {
            min_len,
            first,
            slots,
            key: shape.key.as_str().into(),
            outcome: Arc::new(outcome),
            parts,
            fixed_len,
            constants: shape.constants.len(),
        };
        // The template must reproduce the decision it was learnt from.
        let Verdict::Rewrite(text) = &t.outcome.verdict else {
            return Some(t);
        };
        (t.instantiate(shape).verdict == Verdict::Rewrite(text.clone())).then_some(t)
    }
}

/// Whether a decision may stand for every value of the constants.
fn value_independent(outcome: &Outcome) -> bool {
    matches!(outcome.verdict, Verdict::Allow | Verdict::Rewrite(_))
        && !outcome.statements.is_empty()
        && outcome.statements.iter().all(|r| {
            !r.unparsed
                && r.effects.is_empty()
                && matches!(
                    r.kind,
                    StatementKind::Select
                        | StatementKind::Insert
                        | StatementKind::Update
                        | StatementKind::Delete
                        | StatementKind::Merge
                )
        })
}

/// The same text with every constant replaced by another value of its class.
fn other_values(shape: &Shape) -> String {
    let mut out = String::with_capacity(shape.sql.len() + 8);
    let mut pos = 0;
    for c in &shape.constants {
        out.push_str(&shape.sql[pos..c.start]);
        let v = &shape.sql[c.clone()];
        out.push_str(match (v.contains('.'), v == "7" || v == "7.5") {
            (false, false) => "7",
            (false, true) => "8",
            (true, false) => "7.5",
            (true, true) => "8.5",
        });
        pos = c.end;
    }
    out.push_str(&shape.sql[pos..]);
    out
}

/// Decides `shape`'s text and, when the decision holds for any values of its constants,
/// a template to reuse it.
pub fn learn(
    policy: &Policy,
    session: &SessionFacts,
    catalog: &dyn Catalog,
    key: &MaskKey,
    shape: &Shape,
) -> (Arc<Outcome>, Option<Arc<Template>>) {
    let (outcome, edits) = decide_with_edits(policy, session, catalog, key, shape.sql);
    if !value_independent(&outcome) {
        return (Arc::new(outcome), None);
    }
    let Some(template) = Template::build(shape, outcome.clone(), &edits) else {
        return (Arc::new(outcome), None);
    };
    let other_sql = other_values(shape);
    let same = Shape::of(&other_sql).is_some_and(|other| {
        other.key == shape.key && {
            let (expected, _) = decide_with_edits(policy, session, catalog, key, &other_sql);
            *template.instantiate(&other) == expected
        }
    });
    if !same {
        return (Arc::new(outcome), None);
    }
    let outcome = template.outcome.clone();
    (outcome, Some(Arc::new(template)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::decide;
    use crate::testing;

    fn keys(sql: &str) -> Option<String> {
        Shape::of(sql).map(|s| s.key)
    }

    #[test]
    fn abstracts_only_plain_constants() {
        assert_eq!(
            keys("SELECT a FROM t WHERE id = 42 AND x > 1.5").as_deref(),
            Some("SELECT a FROM t WHERE id = \0i AND x > \0d")
        );
        // Inside strings, comments, quoted identifiers; glued to words; other forms.
        assert_eq!(keys("SELECT '1', \"2\" /* 3 */ -- 4\n"), None);
        assert_eq!(keys("SELECT $1, x1, 1e5, 0x1F, 1_000, .5, 1., t.1"), None);
        assert_eq!(keys("SELECT 123abc"), None);
        assert_eq!(
            keys("SELECT 1 FROM t LIMIT 10").as_deref(),
            Some("SELECT \0i FROM t LIMIT \0i")
        );
        assert_eq!(keys("SELECT E'\\' 1'"), None);
        assert_eq!(keys("SELECT $$ 1 $$"), None);
    }

    fn check_same_as_decide(sqls: &[&str], user: &str) {
        let sample = testing::Sample::default();
        let (policy, catalog, key) = (&sample.policy, &sample.catalog, &sample.key);
        let facts = sample.facts(user, Some("customer_service"));
        let (_, template) = learn(
            policy,
            &facts,
            catalog,
            key,
            &Shape::of(sqls[0]).expect("has constants"),
        );
        let template = template.expect("templated");
        for sql in sqls {
            let shape = Shape::of(sql).expect("has constants");
            assert_eq!(
                *template.instantiate(&shape),
                decide(policy, &facts, catalog, key, sql),
                "{sql}"
            );
        }
    }

    #[test]
    fn a_template_decides_like_a_full_analysis() {
        check_same_as_decide(
            &[
                "SELECT name, phone FROM customers WHERE id = 1 LIMIT 10",
                "SELECT name, phone FROM customers WHERE id = 123456789 LIMIT 1",
            ],
            "support_app",
        );
        check_same_as_decide(
            &[
                "SELECT c.phone, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.amount > 1.5 AND c.id = 3",
                "SELECT c.phone, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.amount > 100000.25 AND c.id = 77",
            ],
            "support_app",
        );
    }

    #[test]
    fn matching_a_template_is_computing_the_shape() {
        let sample = testing::Sample::default();
        let (policy, catalog, key) = (&sample.policy, &sample.catalog, &sample.key);
        let facts = sample.facts("support_app", Some("customer_service"));
        let learnt = "SELECT name, phone FROM customers WHERE id = 12 AND 1.5 < 2.25 LIMIT 3";
        let shape = Shape::of(learnt).expect("has constants");
        let template = learn(policy, &facts, catalog, key, &shape)
            .1
            .expect("templated");
        // Mutations around and inside the constants: the matcher agrees with Shape::of.
        let pieces = [
            "",
            "0",
            "7",
            "123",
            "1.5",
            "12.",
            ".5",
            "1e5",
            "1_0",
            "x",
            "a1",
            "$1",
            "'",
            "'1'",
            "--",
            "/*",
            "*/",
            "\"",
            ".",
            "..",
            " ",
            "-",
            "+",
            "\0",
            "é",
            "9999999999999999999",
        ];
        let mut constants = Vec::new();
        let mut checked = 0;
        for at in 0..=learnt.len() {
            for cut in 0..4 {
                let end = (at + cut).min(learnt.len());
                if !learnt.is_char_boundary(at) || !learnt.is_char_boundary(end) {
                    continue;
                }
                for p in pieces {
                    let sql = format!("{}{p}{}", &learnt[..at], &learnt[end..]);
                    let expected = Shape::of(&sql).is_some_and(|s| s.key() == shape.key());
                    assert_eq!(template.matches(&sql, &mut constants), expected, "{sql:?}");
                    if expected {
                        let s = Shape::of(&sql).expect("shape");
                        assert_eq!(constants, s.constants, "{sql:?}");
                        assert_eq!(
                            template.instantiate_at(&sql, &constants),
                            template.instantiate(&s)
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000);
        assert!(template.matches(learnt, &mut constants));
        assert!(!template.matches("", &mut constants));
    }

    #[test]
    fn value_dependent_statements_get_no_template() {
        let sample = testing::Sample::default();
        let (policy, catalog, key) = (&sample.policy, &sample.catalog, &sample.key);
        let facts = sample.facts("support_app", Some("customer_service"));
        for sql in [
            "SET standard_conforming_strings = 1",
            "EXPLAIN (VERBOSE 0) SELECT phone FROM customers WHERE id = 1",
            "SELECT bank_card FROM customers WHERE id = 1",
        ] {
            let shape = Shape::of(sql).expect("has constants");
            let (outcome, template) = learn(policy, &facts, catalog, key, &shape);
            assert!(template.is_none(), "{sql}");
            assert_eq!(*outcome, decide(policy, &facts, catalog, key, sql));
        }
    }
}
