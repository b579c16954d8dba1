//! Validation of `sql` mask templates at load time, so a bad expression is a policy error
//! with a line number instead of a failed query for every user of the role.
//!
//! The template must contain `{col}` and, with `{col}` replaced by a column name, parse as
//! exactly one PostgreSQL expression that reads only that column: no statements, no
//! subqueries (they could read other tables), no other columns (they would leak raw
//! values of the same row) and no window functions (they would read other rows).

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Query, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// The placeholder a template uses for the masked column.
pub(crate) const PLACEHOLDER: &str = "{col}";

/// The identifier substituted for `{col}` while validating (cannot clash with a keyword).
const STAND_IN: &str = "pgveil_masked_column";

/// Checks a `sql` mask template; the error says what is wrong and how to write it.
pub(super) fn validate(template: &str) -> Result<(), String> {
    check(template).map_err(|message| message.replace(STAND_IN, PLACEHOLDER))
}

fn check(template: &str) -> Result<(), String> {
    if !template.contains(PLACEHOLDER) {
        return Err(format!(
            "expr must contain {PLACEHOLDER} where the column goes, e.g. \"left({PLACEHOLDER}, 2) || '…'\""
        ));
    }
    if template.contains("\"{col}\"") {
        return Err(format!(
            "write {PLACEHOLDER} without double quotes; pgveil quotes the column name itself"
        ));
    }
    let sql = template.replace(PLACEHOLDER, STAND_IN);
    let dialect = PostgreSqlDialect {};
    // Every {col} must be a token of its own: the renderer substitutes the quoted column
    // name, which inside a string literal or comment could break out of it.
    let tokens = Tokenizer::new(&dialect, &sql)
        .tokenize()
        .map_err(|e| format!("expr is not valid SQL: {e}"))?;
    let standalone = tokens
        .iter()
        .filter(|t| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value == STAND_IN))
        .count();
    if standalone != template.matches(PLACEHOLDER).count() {
        return Err(format!(
            "{PLACEHOLDER} may only stand for the column itself, not appear inside a string \
             literal, quoted name, comment or longer word"
        ));
    }
    let mut parser = Parser::new(&dialect)
        .try_with_sql(&sql)
        .map_err(|e| format!("expr is not valid SQL: {}", strip(&e.to_string())))?;
    let expr = parser.parse_expr().map_err(|e| {
        format!(
            "expr is not a valid SQL expression: {}",
            strip(&e.to_string())
        )
    })?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(format!(
            "expr must be exactly one SQL expression; unexpected {} after it (statements are \
             not allowed)",
            next.token
        ));
    }
    let mut check = Check { uses_column: false };
    if let ControlFlow::Break(message) = expr.visit(&mut check) {
        return Err(message);
    }
    if !check.uses_column {
        return Err(format!(
            "expr must read the column through {PLACEHOLDER} (not use it as a function or \
             type name)"
        ));
    }
    Ok(())
}

/// Drops sqlparser's "sql parser error: " prefix (our message says it already).
fn strip(message: &str) -> &str {
    message
        .strip_prefix("sql parser error: ")
        .unwrap_or(message)
}

/// Walks the expression, refusing what a mask must not do.
struct Check {
    uses_column: bool,
}

impl Visitor for Check {
    type Break = String;

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        ControlFlow::Break(
            "subqueries are not allowed in a mask expression (they could read other tables)"
                .to_string(),
        )
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Identifier(ident) if ident.quote_style.is_none() && ident.value == STAND_IN => {
                self.uses_column = true;
                ControlFlow::Continue(())
            }
            Expr::Identifier(ident) => ControlFlow::Break(format!(
                "a mask expression may read only its own column, written {PLACEHOLDER}; found \
                 column reference {ident}"
            )),
            Expr::CompoundIdentifier(parts) => ControlFlow::Break(format!(
                "a mask expression may read only its own column, written {PLACEHOLDER}; found \
                 column reference {}",
                parts
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(".")
            )),
            Expr::Function(f) if f.over.is_some() => ControlFlow::Break(format!(
                "window functions are not allowed in a mask expression ({} … OVER reads other \
                 rows)",
                f.name
            )),
            _ => ControlFlow::Continue(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_single_expressions_over_the_column() {
        for ok in [
            "left({col}, 2) || '***'",
            "CASE WHEN {col} IS NULL THEN NULL ELSE md5({col}::text) END",
            "regexp_replace({col}, '\\d', '#', 'g')",
            "{col}",
            "coalesce({col}, '') || '{}'",
            "date_trunc('month', {col})::date",
            "now() - {col}",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_what_a_mask_must_not_do() {
        for (bad, needle) in [
            ("left(name, 2)", "must contain {col}"),
            ("'{col}'", "not appear inside a string literal"),
            ("{col} || '{col}'", "not appear inside a string literal"),
            ("{col} || $$x{col}$$", "not appear inside a string literal"),
            ("{col} /* {col} */", "not appear inside a string literal"),
            ("x{col}", "longer word"),
            ("{col}(1)", "not use it as a function"),
            ("upper(\"{col}\")", "without double quotes"),
            (
                "{col} || (SELECT secret FROM keys)",
                "subqueries are not allowed",
            ),
            (
                "{col} IS NULL OR EXISTS (SELECT 1)",
                "subqueries are not allowed",
            ),
            ("{col} IN (SELECT x FROM t)", "subqueries are not allowed"),
            ("ARRAY(SELECT 1) || {col}", "subqueries are not allowed"),
            ("{col} || id_card", "found column reference id_card"),
            ("{col} || c.id_card", "found column reference c.id_card"),
            ("max({col}) OVER ()", "window functions are not allowed"),
            ("{col}; DROP TABLE customers", "exactly one SQL expression"),
            ("{col} {col}", "exactly one SQL expression"),
            ("SELECT {col}", "unexpected {col} after it"),
            ("left({col}, ", "not a valid SQL expression"),
            ("'{col}", "not valid SQL"),
        ] {
            let err = validate(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
