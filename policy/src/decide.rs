//! The decision for one SQL text (a simple Query or an extended-protocol Parse): allow,
//! rewrite or deny, with a report per statement for the audit log.
//!
//! Order of checks per statement: lexical agreement with PostgreSQL, parse, statement
//! kind grant, purpose, then the analysis (relations, columns, functions, settings).
//! Restricted roles fail closed at every step; unrestricted roles are never refused but
//! still get reports.

use std::fmt;
use std::sync::Arc;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::analyze::{Access, Analysis, Ctx, SearchPath, Walker};
use crate::catalog::Catalog;
use crate::lexical::{self, LineIndex};
pub use crate::mask::MaskKey;
use crate::model::{Policy, Role, StatementKind};
use crate::output::{self, RowMasks};
use crate::parse_prep;
use crate::redact;
use crate::rewrite;

/// Recursion limit for the parser: deep nesting is refused rather than overflowing.
const RECURSION_LIMIT: usize = 64;

/// Longest run of tokens without a comma, parenthesis or semicolon. Operator chains
/// (`a + b + …`) build left-deep trees the parser does not count against its recursion
/// limit; walking a very deep one would overflow the stack.
const MAX_SEGMENT_TOKENS: usize = 8_000;

/// What the proxy knows about the session when it asks for a decision.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts<'a> {
    /// The authenticated database user.
    pub user: &'a str,
    /// The user's role; `None` refuses everything.
    pub role: Option<&'a Role>,
    /// The declared purpose (`pgveil.purpose`), if any.
    pub purpose: Option<&'a str>,
    /// Effective search_path as the server reports it, e.g. `["\"$user\"", "public"]`.
    pub search_path: &'a [String],
    /// The session's temporary schema (e.g. `pg_temp_3`) once it has one.
    pub temp_schema: Option<&'a str>,
}

/// The decision for a whole text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// One report per statement, in order (shared: cached outcomes hand them out).
    pub statements: Arc<[StatementReport]>,
    /// With a `Rewrite`: the proxy may instead forward the original text and mask these
    /// output columns of every row, which yields the same values (see [`crate::output`]).
    pub row_masks: Option<Arc<RowMasks>>,
}

/// What the proxy does with the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the original text unchanged.
    Allow,
    /// Forward this text instead.
    Rewrite(String),
    /// Refuse the whole text.
    Deny(Denial),
}

/// A refusal, sent to the client as an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub sqlstate: &'static str,
    pub message: String,
    pub hint: Option<String>,
    pub reason: DenyReason,
}

/// Why a statement was refused (bounded: used as a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    NoRole,
    Unparsable,
    Unsupported,
    StatementKind,
    Purpose,
    Table,
    UnresolvedRelation,
    SystemRelation,
    View,
    Column,
    DmlPredicate,
    /// A write that a constraint checks against values the role may not read raw.
    WriteOracle,
    Function,
    SessionSetting,
    CopyFile,
    Explain,
    Ddl,
}

impl DenyReason {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoRole => "no_role",
            DenyReason::Unparsable => "unparsable",
            DenyReason::Unsupported => "unsupported",
            DenyReason::StatementKind => "statement_kind",
            DenyReason::Purpose => "purpose",
            DenyReason::Table => "table",
            DenyReason::UnresolvedRelation => "unresolved_relation",
            DenyReason::SystemRelation => "system_relation",
            DenyReason::View => "view",
            DenyReason::Column => "column",
            DenyReason::DmlPredicate => "dml_predicate",
            DenyReason::WriteOracle => "write_oracle",
            DenyReason::Function => "function",
            DenyReason::SessionSetting => "session_setting",
            DenyReason::CopyFile => "copy_file",
            DenyReason::Explain => "explain",
            DenyReason::Ddl => "ddl",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-statement decision for the audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Rewrite,
    Deny,
}

impl Decision {
    /// The audit/metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Rewrite => "rewrite",
            Decision::Deny => "deny",
        }
    }
}

/// Session state changes a statement makes, for the proxy to track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// New search_path entries, in the server's notation (quoted where needed).
    SetSearchPath(Vec<String>),
    ResetSearchPath,
    SetPurpose(String),
    ResetPurpose,
    /// DDL ran: the catalog snapshot must be refreshed.
    CatalogChanged,
    Prepare {
        name: String,
    },
    /// `None` = DEALLOCATE ALL.
    Deallocate {
        name: Option<String>,
    },
    DeclareCursor {
        name: String,
    },
    /// `FETCH … name`: reads the rows of a cursor or of a protocol-level portal (the two
    /// share one name space on the server).
    Fetch {
        name: String,
    },
}

/// What one statement did, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementReport {
    pub kind: StatementKind,
    pub decision: Decision,
    /// `schema.table`.
    pub relations: Vec<String>,
    /// `schema.table.column`.
    pub columns_raw: Vec<String>,
    pub columns_masked: Vec<String>,
    pub columns_denied: Vec<String>,
    pub classes: Vec<String>,
    pub functions: Vec<String>,
    /// The statement with literals replaced by placeholders.
    pub normalized: String,
    /// Stable hash of the normalized shape.
    pub fingerprint: String,
    pub effects: Vec<SessionEffect>,
    /// Allowed without analysis (unrestricted role, unparsable text).
    pub unparsed: bool,
    /// Reads a column name that the catalog does not have on its relation: either the
    /// server will refuse it, or the table changed since the catalog was read (a new
    /// column the policy's globs may tag), so the proxy reads the catalog again first.
    pub unknown_columns: bool,
}

fn denial(reason: DenyReason, sqlstate: &'static str, message: String) -> Denial {
    Denial {
        sqlstate,
        message,
        hint: None,
        reason,
    }
}

fn unparsed_report(sql: &str, decision: Decision) -> StatementReport {
    let r = redact::redact(sql);
    StatementReport {
        kind: StatementKind::Unknown,
        decision,
        relations: Vec::new(),
        columns_raw: Vec::new(),
        columns_masked: Vec::new(),
        columns_denied: Vec::new(),
        classes: Vec::new(),
        functions: Vec::new(),
        normalized: r.normalized,
        fingerprint: r.fingerprint,
        effects: Vec::new(),
        unparsed: true,
        unknown_columns: false,
    }
}

/// Decides what happens to `sql` for this session.
pub fn decide(
    policy: &Policy,
    session: &SessionFacts,
    catalog: &dyn Catalog,
    key: &MaskKey,
    sql: &str,
) -> Outcome {
    decide_with_edits(policy, session, catalog, key, sql).0
}

/// [`decide`], plus the edits a `Rewrite` verdict applied to `sql` (empty otherwise):
/// [`crate::shape`] needs them to reuse the decision for other constants.
pub(crate) fn decide_with_edits(
    policy: &Policy,
    session: &SessionFacts,
    catalog: &dyn Catalog,
    key: &MaskKey,
    sql: &str,
) -> (Outcome, Vec<rewrite::Edit>) {
    let no_edits = |o: Outcome| (o, Vec::new());
    let Some(role) = session.role else {
        return no_edits(Outcome {
            verdict: Verdict::Deny(denial(
                DenyReason::NoRole,
                "42501",
                format!(
                    "pgveil: user \"{}\" has no role in the policy",
                    session.user
                ),
            )),
            statements: vec![unparsed_report(sql, Decision::Deny)].into(),
            row_masks: None,
        });
    };
    let restricted = role.is_restricted(policy);
    let cannot = |msg: String| {
        denial(
            DenyReason::Unparsable,
            "42501",
            format!("pgveil cannot analyse this statement: {msg}"),
        )
    };
    let refuse_or_pass = |msg: String| {
        if restricted {
            no_edits(Outcome {
                verdict: Verdict::Deny(cannot(msg)),
                statements: vec![unparsed_report(sql, Decision::Deny)].into(),
                row_masks: None,
            })
        } else {
            no_edits(Outcome {
                verdict: Verdict::Allow,
                statements: vec![unparsed_report(sql, Decision::Allow)].into(),
                row_masks: None,
            })
        }
    };

    let mut tokens = Vec::with_capacity(token_estimate(sql));
    if let Err(e) =
        Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location_into_buf(&mut tokens)
    {
        return refuse_or_pass(e.to_string());
    }
    let lines = LineIndex::new(sql);
    if restricted {
        let scan = lexical::scan(sql);
        if let Err(why) = lexical::check_against(&lines, &scan, &tokens) {
            return refuse_or_pass(why);
        }
    }
    if longest_segment(&tokens) > MAX_SEGMENT_TOKENS {
        return refuse_or_pass("expression too long to analyse".into());
    }
    let pieces = redact::redact_statements(tokens.iter().map(|t| &t.token));
    cursor_statements_for_parser(&mut tokens);
    parse_prep::prepare(sql, &lines, &mut tokens);
    let parsed = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
        .parse_statements();
    let stmts = match parsed {
        Ok(s) => s,
        Err(e) => return refuse_or_pass(e.to_string()),
    };
    if stmts.is_empty() {
        return no_edits(Outcome {
            verdict: Verdict::Allow,
            statements: Vec::new().into(),
            row_masks: None,
        });
    }

    let mut search_path: Vec<String> = session.search_path.to_vec();
    let mut purpose: Option<String> = session.purpose.map(str::to_string);
    let mut ddl_before = false;
    // A search_path change earlier in the text (the statements after it are analysed
    // under the new path, but an EXECUTE's PREPARE was checked under the session's).
    let mut path_before = false;
    let mut first_denial: Option<Denial> = None;
    let mut edits = Vec::new();
    let mut reports = Vec::with_capacity(stmts.len());
    let mut row_masks = None;
    let use_pieces = pieces.len() == stmts.len();

    for (i, stmt) in stmts.iter().enumerate() {
        let path = SearchPath::build(&search_path, session.user, session.temp_schema, catalog);
        let cx = Ctx {
            policy,
            role,
            restricted,
            catalog,
            key,
            path: &path,
            text: sql,
            lines: &lines,
        };
        let analysis = Walker::new(&cx).statement(stmt);
        let kind = analysis.kind.unwrap_or(StatementKind::Unknown);
        let mut stmt_denial = None;
        if restricted {
            stmt_denial = gate(
                role,
                purpose.as_deref(),
                kind,
                &analysis,
                ddl_before,
                path_before,
            );
        }
        let piece = if use_pieces {
            pieces[i].clone()
        } else {
            redact::redact(sql)
        };
        let masks = analysis.masks;
        let decision = match (&stmt_denial, masks && restricted) {
            (Some(_), _) => Decision::Deny,
            (None, true) => Decision::Rewrite,
            (None, false) => Decision::Allow,
        };
        if restricted && stmt_denial.is_none() {
            edits.extend(analysis.edits.iter().cloned());
            if masks && stmts.len() == 1 && !analysis.echoes_sql {
                row_masks = analysis
                    .target
                    .as_ref()
                    .and_then(|t| output::plan(sql, stmt, t));
            }
        }
        for e in &analysis.effects {
            match e {
                SessionEffect::SetSearchPath(p) => {
                    search_path = p.clone();
                    path_before = true;
                }
                SessionEffect::ResetSearchPath => {
                    search_path = session.search_path.to_vec();
                    path_before = true;
                }
                SessionEffect::SetPurpose(p) => purpose = Some(p.clone()),
                SessionEffect::ResetPurpose => purpose = session.purpose.map(str::to_string),
                SessionEffect::CatalogChanged => ddl_before = true,
                _ => {}
            }
        }
        if first_denial.is_none() {
            first_denial = stmt_denial;
        }
        reports.push(report(kind, decision, analysis, piece));
    }

    let verdict = match first_denial {
        Some(d) => {
            for r in &mut reports {
                r.decision = Decision::Deny;
            }
            Verdict::Deny(d)
        }
        None if edits.is_empty() => Verdict::Allow,
        None => match rewrite::apply(sql, &edits) {
            Ok(text) => Verdict::Rewrite(text),
            Err(why) => {
                for r in &mut reports {
                    r.decision = Decision::Deny;
                }
                Verdict::Deny(cannot(why))
            }
        },
    };
    if !matches!(verdict, Verdict::Rewrite(_)) {
        edits.clear();
        row_masks = None;
    }
    (
        Outcome {
            verdict,
            statements: reports.into(),
            row_masks: row_masks.map(Arc::new),
        },
        edits,
    )
}

/// Grants, purpose and analysis findings → the first reason to refuse, if any.
fn gate(
    role: &Role,
    purpose: Option<&str>,
    kind: StatementKind,
    analysis: &Analysis,
    ddl_before: bool,
    path_before: bool,
) -> Option<Denial> {
    let mut kinds = vec![kind];
    kinds.extend(analysis.required.iter().copied());
    for k in kinds {
        if k == StatementKind::Unknown {
            return Some(denial(
                DenyReason::Unsupported,
                "42501",
                "pgveil cannot analyse this statement: this kind of statement is not supported"
                    .into(),
            ));
        }
        if !role.may_run(k) {
            return Some(Denial {
                sqlstate: "42501",
                message: format!(
                    "permission denied: role \"{}\" may not run {} statements",
                    role.name, k
                ),
                hint: None,
                reason: DenyReason::StatementKind,
            });
        }
    }
    // PREPARE/DECLARE wrap reads: they need the purpose too. So does FETCH (and MOVE):
    // a cursor, even one held past its transaction, reads rows only while a purpose
    // holds. (EXECUTE is decided again from its PREPARE text, purpose included.)
    let touches_data = kind != StatementKind::Session
        || !analysis.required.is_empty()
        || analysis
            .effects
            .iter()
            .any(|e| matches!(e, SessionEffect::Fetch { .. }));
    if touches_data
        && !role.purposes.is_empty()
        && !purpose.is_some_and(|p| role.purposes.iter().any(|r| r == p))
    {
        return Some(Denial {
            sqlstate: "42501",
            message: format!(
                "permission denied: role \"{}\" requires a declared purpose ({})",
                role.name,
                role.purposes.join(", ")
            ),
            hint: Some("SET pgveil.purpose = '<purpose>' first".into()),
            reason: DenyReason::Purpose,
        });
    }
    // EXECUTE runs a statement PostgreSQL analyses again after DDL or a search_path
    // change: its PREPARE was checked against the catalog and path before them.
    if (ddl_before && touches_data) || ((ddl_before || path_before) && analysis.runs_prepared) {
        return Some(denial(
            DenyReason::Ddl,
            "42501",
            "pgveil: send statements that follow DDL, and an EXECUTE that follows a search_path change, in a separate query (names must be resolved against the new catalog and path)".into(),
        ));
    }
    if let Some(d) = &analysis.denial {
        return Some(d.clone());
    }
    if analysis.echoes_sql && analysis.uses_key {
        return Some(denial(
            DenyReason::Explain,
            "42501",
            "EXPLAIN is not allowed on statements that read hash-masked columns (the plan would show the mask key)".into(),
        ));
    }
    None
}

fn report(
    kind: StatementKind,
    decision: Decision,
    a: Analysis,
    r: redact::Redacted,
) -> StatementReport {
    let mut raw = Vec::new();
    let mut masked = Vec::new();
    let mut denied = Vec::new();
    for (col, access) in a.columns {
        match access {
            Access::Raw => raw.push(col),
            Access::Masked => masked.push(col),
            Access::Denied => denied.push(col),
        }
    }
    StatementReport {
        kind,
        decision,
        relations: a.relations.into_iter().collect(),
        columns_raw: raw,
        columns_masked: masked,
        columns_denied: denied,
        classes: a.classes.into_iter().collect(),
        functions: a.functions.into_iter().collect(),
        normalized: r.normalized,
        fingerprint: r.fingerprint,
        unknown_columns: a.unknown_columns,
        effects: a.effects,
        unparsed: false,
    }
}

/// `MOVE` has `FETCH`'s grammar and returns no rows, but sqlparser knows only `FETCH`,
/// and only with a direction and `FROM`/`IN` before the cursor name, both of which
/// PostgreSQL may omit: a `MOVE` that starts a statement is parsed as a `FETCH`, and the
/// missing `NEXT` and `FROM` are added for the parser (the text goes out unchanged).
fn cursor_statements_for_parser(tokens: &mut Vec<TokenWithSpan>) {
    let is_word = |t: &Token, k: Keyword| matches!(t, Token::Word(w) if w.keyword == k && w.quote_style.is_none());
    let mut at_start = true;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].token {
            Token::Whitespace(_) => {
                i += 1;
                continue;
            }
            Token::SemiColon => {
                at_start = true;
                i += 1;
                continue;
            }
            Token::Word(w) if at_start && w.quote_style.is_none() => {
                let is_move = w.value.eq_ignore_ascii_case("move");
                if is_move || w.keyword == Keyword::FETCH {
                    if is_move {
                        tokens[i].token = Token::make_keyword("FETCH");
                    }
                    let end = tokens[i + 1..]
                        .iter()
                        .position(|t| t.token == Token::SemiColon)
                        .map_or(tokens.len(), |p| i + 1 + p);
                    let body = &tokens[i + 1..end];
                    let from = body.iter().position(|t| {
                        is_word(&t.token, Keyword::FROM) || is_word(&t.token, Keyword::IN)
                    });
                    let name = body
                        .iter()
                        .rposition(|t| !matches!(t.token, Token::Whitespace(_)));
                    let Some(name) = name else {
                        i = end;
                        at_start = false;
                        continue;
                    };
                    // Where FROM is, or goes; no direction before it means NEXT.
                    let at = i + 1 + from.unwrap_or(name);
                    let directed = tokens[i + 1..at]
                        .iter()
                        .any(|t| !matches!(t.token, Token::Whitespace(_)));
                    let span = tokens[at].span;
                    let mut added = Vec::new();
                    if !directed {
                        added.push(TokenWithSpan::new(Token::make_keyword("NEXT"), span));
                    }
                    if from.is_none() {
                        added.push(TokenWithSpan::new(Token::make_keyword("FROM"), span));
                    }
                    i = end + added.len();
                    tokens.splice(at..at, added);
                    at_start = false;
                    continue;
                }
            }
            _ => {}
        }
        at_start = false;
        i += 1;
    }
}

/// A first guess at the number of tokens of `sql` (a token and its whitespace take
/// about four bytes in ordinary SQL), so the token vector rarely grows; capped so a
/// huge text does not reserve more than it is likely to use.
fn token_estimate(sql: &str) -> usize {
    (sql.len() / 4 + 8).min(4096)
}

fn longest_segment(tokens: &[TokenWithSpan]) -> usize {
    // A parenthesised group counts as one operand of the run around it.
    let mut longest = 0;
    let mut run = 0usize;
    let mut outer: Vec<usize> = Vec::new();
    for t in tokens {
        match t.token {
            Token::Comma | Token::SemiColon => run = 0,
            Token::LParen => {
                outer.push(run);
                run = 0;
            }
            Token::RParen => run = outer.pop().unwrap_or(0) + 1,
            Token::Whitespace(_) => {}
            _ => run += 1,
        }
        longest = longest.max(run);
    }
    longest
}

#[cfg(test)]
mod tests;
