//! Writes whose success would reveal protected values.
//!
//! PostgreSQL checks constraints when a row is written, and whether the statement
//! succeeds tells the writer about values it did not write. `UPDATE customers SET phone
//! = '13812345678' WHERE id = 2` fails with 23505 exactly when another customer has that
//! number, so a role that sees phones masked could test numbers one by one inside a
//! transaction it rolls back; `INSERT … ON CONFLICT DO NOTHING` tells the same by its row
//! count. Exclusion constraints, foreign keys in both directions and CHECK constraints
//! that compare a written column with one the statement leaves alone answer the same
//! kind of question. So a write that a constraint checks against a column the role may
//! not read raw is refused: [`oracle`] finds the first such constraint.

use crate::catalog::{Constraint, ConstraintKind, OtherEnd};

/// What a data-modifying statement does to the rows of its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// New rows: every value is the statement's own or a default.
    Insert,
    /// Changed rows: the columns not written keep their stored values.
    Update,
    /// Removed rows.
    Delete,
}

/// The target columns a statement writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Written<'s> {
    /// Every column (an INSERT or COPY without a column list).
    All,
    /// These columns (names as the catalog stores them).
    Columns(&'s [String]),
    /// Unknown columns of the relations behind a view: every constraint that the
    /// operation can reach counts as reached, and no column as written.
    Unknown,
}

impl Written<'_> {
    fn writes(&self, column: &str) -> bool {
        match self {
            Written::All => true,
            Written::Columns(cols) => cols.iter().any(|c| c == column),
            Written::Unknown => false,
        }
    }

    fn touches(&self, columns: &[String]) -> bool {
        match self {
            Written::Unknown => true,
            _ => columns.iter().any(|c| self.writes(c)),
        }
    }
}

/// The first constraint of `constraints` that makes `op` on the columns `written` an
/// oracle for a value the role may not read raw, with the column that is hidden.
/// `hidden(None, col)` says whether the role may read `col` of the target raw,
/// `hidden(Some(other), col)` the same of the relation at a foreign key's other end.
pub(crate) fn oracle<'c>(
    constraints: &'c [Constraint],
    op: Op,
    written: Written<'_>,
    hidden: &mut dyn FnMut(Option<&OtherEnd>, &str) -> bool,
) -> Option<(&'c Constraint, &'c str)> {
    for c in constraints {
        let reached = match (c.kind, op) {
            (ConstraintKind::ReferencedBy, Op::Delete) => true,
            (_, Op::Delete) => false,
            // A new row's CHECK sees only values the statement wrote or defaults.
            (ConstraintKind::Check, Op::Insert) => false,
            // A referenced row is checked when its key changes, not when it is new.
            (ConstraintKind::ReferencedBy, Op::Insert) => false,
            _ => written.touches(&c.columns),
        };
        if !reached {
            continue;
        }
        // Columns of the written row whose stored value takes part in the check.
        let here = c.columns.iter().find(|col| {
            let compared = match c.kind {
                // Compared with the same columns of every other row.
                ConstraintKind::Unique
                | ConstraintKind::Exclusion
                | ConstraintKind::ReferencedBy => true,
                // Compared with the row's own values: only what the statement left.
                ConstraintKind::Check | ConstraintKind::ForeignKey => {
                    op == Op::Update && !written.writes(col)
                }
            };
            compared && hidden(None, col)
        });
        if let Some(col) = here {
            return Some((c, col));
        }
        if let Some(other) = &c.other {
            if let Some(col) = other.columns.iter().find(|col| hidden(Some(other), col)) {
                return Some((c, col));
            }
        }
    }
    None
}

/// How a refusal names the constraint.
pub(crate) fn describe(c: &Constraint) -> String {
    let other = |o: &Option<OtherEnd>| {
        o.as_ref()
            .map(|o| format!(" of \"{}.{}\"", o.schema, o.table))
            .unwrap_or_default()
    };
    match c.kind {
        ConstraintKind::Unique => format!("unique index \"{}\"", c.name),
        ConstraintKind::Exclusion => format!("exclusion constraint \"{}\"", c.name),
        ConstraintKind::Check => format!("check constraint \"{}\"", c.name),
        ConstraintKind::ForeignKey => format!("foreign key \"{}\"", c.name),
        ConstraintKind::ReferencedBy => {
            format!("foreign key \"{}\"{}", c.name, other(&c.other))
        }
    }
}

/// A constraint of a `public` table for tests; `other` is a `public` table and columns.
#[cfg(test)]
pub(crate) fn test_constraint(
    name: &str,
    kind: ConstraintKind,
    cols: &[&str],
    other: Option<(&str, &[&str])>,
) -> Constraint {
    Constraint {
        name: name.into(),
        kind,
        columns: cols.iter().map(|c| c.to_string()).collect(),
        other: other.map(|(t, cols)| OtherEnd {
            schema: "public".into(),
            table: t.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn con(kind: ConstraintKind, cols: &[&str], other: Option<(&str, &[&str])>) -> Constraint {
        test_constraint("k", kind, cols, other)
    }

    /// `phone` of the target and `contact` of table `o` are hidden.
    fn find(cs: &[Constraint], op: Op, written: Written<'_>) -> Option<String> {
        let mut hidden = |o: Option<&OtherEnd>, col: &str| match o {
            None => col == "phone",
            Some(_) => col == "contact",
        };
        oracle(cs, op, written, &mut hidden).map(|(_, col)| col.to_string())
    }

    #[test]
    fn unique_over_a_hidden_column_refuses_writing_it_or_its_partners() {
        let cs = [con(ConstraintKind::Unique, &["region", "phone"], None)];
        let phone = ["phone".to_string()];
        let region = ["region".to_string()];
        let name = ["name".to_string()];
        assert_eq!(
            find(&cs, Op::Update, Written::Columns(&phone)).as_deref(),
            Some("phone")
        );
        assert_eq!(
            find(&cs, Op::Update, Written::Columns(&region)).as_deref(),
            Some("phone")
        );
        assert_eq!(
            find(&cs, Op::Insert, Written::All).as_deref(),
            Some("phone")
        );
        assert_eq!(find(&cs, Op::Update, Written::Columns(&name)), None);
        assert_eq!(find(&cs, Op::Delete, Written::All), None);
    }

    #[test]
    fn check_counts_only_the_columns_an_update_leaves() {
        let cs = [con(ConstraintKind::Check, &["phone", "alt"], None)];
        let alt = ["alt".to_string()];
        let both = ["alt".to_string(), "phone".to_string()];
        assert_eq!(
            find(&cs, Op::Update, Written::Columns(&alt)).as_deref(),
            Some("phone")
        );
        assert_eq!(find(&cs, Op::Update, Written::Columns(&both)), None);
        assert_eq!(find(&cs, Op::Insert, Written::Columns(&alt)), None);
    }

    #[test]
    fn foreign_keys_refuse_by_either_end() {
        let to_hidden = [con(
            ConstraintKind::ForeignKey,
            &["c"],
            Some(("o", &["contact"])),
        )];
        let c = ["c".to_string()];
        assert_eq!(
            find(&to_hidden, Op::Insert, Written::Columns(&c)).as_deref(),
            Some("contact")
        );
        let referenced = [con(
            ConstraintKind::ReferencedBy,
            &["id"],
            Some(("o", &["contact"])),
        )];
        assert_eq!(
            find(&referenced, Op::Delete, Written::All).as_deref(),
            Some("contact")
        );
        assert_eq!(find(&referenced, Op::Insert, Written::All), None);
        let raw = [con(
            ConstraintKind::ReferencedBy,
            &["id"],
            Some(("o", &["cust"])),
        )];
        assert_eq!(find(&raw, Op::Delete, Written::All), None);
        let hidden_key = [con(
            ConstraintKind::ReferencedBy,
            &["phone"],
            Some(("o", &["cust"])),
        )];
        assert_eq!(
            find(&hidden_key, Op::Delete, Written::All).as_deref(),
            Some("phone")
        );
    }

    #[test]
    fn behind_a_view_every_reachable_constraint_counts() {
        let cs = [
            con(ConstraintKind::Check, &["phone", "alt"], None),
            con(ConstraintKind::Unique, &["id"], None),
        ];
        assert_eq!(
            find(&cs, Op::Update, Written::Unknown).as_deref(),
            Some("phone")
        );
        assert_eq!(find(&cs, Op::Delete, Written::Unknown), None);
    }
}
