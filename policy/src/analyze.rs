//! SQL → per-statement analysis: kind, relations, columns, functions, session effects,
//! and the text edits that put every protected relation behind its masked derived table.
//!
//! The walker resolves names the way PostgreSQL does (search_path, temp schema, CTE
//! scopes, aliases) and is paired with a generic cross-check: after the walk, every
//! query, FROM item and relation name in the statement must have been handled by the
//! walker, otherwise the statement is refused for restricted roles. New or exotic AST
//! shapes therefore fail closed instead of slipping past the rewrite.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::ControlFlow;
use std::rc::Rc;

use sqlparser::ast::{
    self, AccessExpr, BinaryOperator, CopySource, CopyTarget, Expr, FromTable, FunctionArg,
    FunctionArgExpr, FunctionArguments, Ident, JoinConstraint, JoinOperator, ObjectName,
    ObjectNamePart, OnConflictAction, OnInsert, Query, Reset, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, TableObject, TableWithJoins,
    Visit, Visitor,
};

mod from_forms;

use crate::catalog::{Catalog, OtherEnd, Relation};
use crate::decide::{Denial, DenyReason, SessionEffect};
use crate::functions;
use crate::lexical::LineIndex;
use crate::mask::{self, quote_ident, MaskKey};
use crate::model::{Class, Mask, Policy, Role, StatementKind, Visibility};
use crate::ptrhash::{PtrMap, PtrSet};
use crate::rewrite::{self, Edit, Source};
use crate::write_guard::{self, Op, Written};

/// PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
const NAMEDATALEN: usize = 64;

/// Folds an identifier like PostgreSQL: unquoted → ASCII lower case; then truncate.
pub(crate) fn fold(id: &Ident) -> String {
    let mut s = if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_ascii_lowercase()
    };
    if s.len() >= NAMEDATALEN {
        let mut cut = NAMEDATALEN - 1;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The effective search path of a session for relation names (functions are checked
/// against every schema, whatever the path).
#[derive(Debug, Clone)]
pub(crate) struct SearchPath {
    /// Schemas searched for unqualified relation names, in order.
    pub relations: Vec<String>,
    /// Where an unqualified CREATE puts the new relation.
    pub creation: Option<String>,
    /// The session's temp schema (what `pg_temp` means).
    pub temp: Option<String>,
}

/// Splits one search_path entry as the server reports it: `"Quoted"` keeps case,
/// unquoted folds to lower case.
pub(crate) fn path_entry(raw: &str) -> String {
    let t = raw.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        t[1..t.len() - 1].replace("\"\"", "\"")
    } else {
        t.to_ascii_lowercase()
    }
}

impl SearchPath {
    pub(crate) fn build(
        entries: &[String],
        user: &str,
        temp: Option<&str>,
        catalog: &dyn Catalog,
    ) -> Self {
        let mut explicit = Vec::new();
        for e in entries {
            let name = path_entry(e);
            if name.is_empty() {
                continue;
            }
            explicit.push(name);
        }
        let has = |s: &str| explicit.iter().any(|e| e == s);
        let mut relations = Vec::new();
        if let Some(t) = temp {
            if !has("pg_temp") && !explicit.iter().any(|e| e == t) {
                relations.push(t.to_string());
            }
        }
        if !has("pg_catalog") {
            relations.push("pg_catalog".to_string());
        }
        let mut creation = None;
        for e in &explicit {
            let schema = match e.as_str() {
                "$user" => {
                    if catalog.schema_exists(user) {
                        user.to_string()
                    } else {
                        continue;
                    }
                }
                "pg_temp" => match temp {
                    Some(t) => {
                        relations.push(t.to_string());
                        if creation.is_none() {
                            creation = Some(t.to_string());
                        }
                        continue;
                    }
                    None => continue,
                },
                other => other.to_string(),
            };
            if creation.is_none() && schema != "pg_catalog" && catalog.schema_exists(&schema) {
                creation = Some(schema.clone());
            }
            relations.push(schema);
        }
        SearchPath {
            relations,
            creation,
            temp: temp.map(str::to_string),
        }
    }
}

/// What a role sees of one column (masks borrowed from the policy).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ColVis<'a> {
    Raw,
    Mask(&'a Mask),
    Deny,
}

/// "masked" without a class has no mask to apply: the value is hidden.
static HIDDEN: Mask = Mask::Null;

/// One column of a resolved relation, borrowing its names from the catalog and the
/// policy (a statement resolves many columns; copying them was most of the cost).
#[derive(Debug)]
pub(crate) struct ColInfo<'a> {
    pub name: &'a str,
    pub type_name: &'a str,
    pub vis: ColVis<'a>,
    pub class: Option<&'a str>,
}

/// A resolved base relation with per-column visibility for the role.
#[derive(Debug)]
pub(crate) struct RelInfo<'a> {
    pub schema: String,
    pub name: String,
    pub cols: Vec<ColInfo<'a>>,
    /// Some column is masked or denied: references must be rewritten.
    pub protected: bool,
    /// pg_catalog / information_schema relation (not subject to `tables`).
    pub system: bool,
}

impl<'a> RelInfo<'a> {
    fn col(&self, name: &str) -> Option<&ColInfo<'a>> {
        self.cols.iter().find(|c| c.name == name)
    }
    pub(crate) fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// How a column was read, for the report (later entries win: denied > masked > raw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Access {
    Raw,
    Masked,
    Denied,
}

/// Everything `decide` needs to know about one statement.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    pub kind: Option<StatementKind>,
    /// Kinds that must be granted (the statement's own and what it wraps).
    pub required: Vec<StatementKind>,
    pub relations: BTreeSet<String>,
    pub columns: BTreeMap<String, Access>,
    pub classes: BTreeSet<String>,
    pub functions: BTreeSet<String>,
    pub effects: Vec<SessionEffect>,
    pub edits: Vec<Edit>,
    /// Some edit masks data (the others only pin names to schemas).
    pub masks: bool,
    pub denial: Option<Denial>,
    /// A rewrite embeds the hash key: nothing may echo this statement's text.
    pub uses_key: bool,
    /// Something that echoes the executed SQL (EXPLAIN) wraps this statement.
    pub echoes_sql: bool,
    /// The relation, when exactly one reference was replaced by a derived table (the
    /// candidate for masking the output in the proxy, see [`crate::output`]).
    pub target: Option<crate::output::Target>,
    /// See [`crate::decide::StatementReport::unknown_columns`].
    pub unknown_columns: bool,
    /// EXECUTE of a prepared statement, which PostgreSQL re-analyses against the
    /// catalog as it is when it runs.
    pub runs_prepared: bool,
}

/// Inputs shared by every statement of one `decide` call.
pub(crate) struct Ctx<'a> {
    pub policy: &'a Policy,
    pub role: &'a Role,
    pub restricted: bool,
    pub catalog: &'a dyn Catalog,
    pub key: &'a MaskKey,
    pub path: &'a SearchPath,
    pub text: &'a str,
    pub lines: &'a LineIndex<'a>,
}

#[derive(Debug, Clone)]
struct FromItem<'a> {
    alias: String,
    rel: Option<Rc<RelInfo<'a>>>,
    /// The target of UPDATE/DELETE/MERGE/INSERT: read unrewritten.
    target: bool,
    /// Rewritten without an explicit alias (schema-qualified column refs must be fixed).
    implicit_alias: bool,
}

#[derive(Debug, Default)]
struct Scope<'a> {
    ctes: Vec<String>,
    items: Vec<FromItem<'a>>,
    /// `(… JOIN …) AS j`: the index in `items` of the alias `j` and the relations inside
    /// the join, whose columns `j.col`, `j.*` and `j` read.
    joins: Vec<(usize, Vec<FromItem<'a>>)>,
}

type Ptr = usize;

fn ptr<T>(r: &T) -> Ptr {
    r as *const T as usize
}

/// Walks one statement.
pub(crate) struct Walker<'a> {
    cx: &'a Ctx<'a>,
    pub out: Analysis,
    scopes: Vec<Scope<'a>>,
    queries: PtrSet,
    factors: PtrSet,
    names: PtrSet,
    /// Relation names in this statement are object names of DCL/DROP/COMMENT, not reads.
    names_are_objects: bool,
    /// Relations resolved so far in this statement, by catalog entry.
    rel_cache: PtrMap<Rc<RelInfo<'a>>>,
    /// Relation references replaced by derived tables whose text is written once the
    /// whole statement is walked: (index in `out.edits`, relation, add an alias).
    derived: Vec<(usize, Rc<RelInfo<'a>>, bool, Source)>,
    /// Something reads whole rows (`*`, `t.*`, a row reference, NATURAL/USING joins):
    /// derived tables keep every column. Otherwise they list only the columns the
    /// statement reads, which PostgreSQL then need not parse and plan.
    all_columns: bool,
    /// Scratch buffer for `schema.table.column` report keys.
    key: String,
    /// Walking the select list of the innermost SELECT (where a bare name that no FROM
    /// item has cannot be an output alias).
    in_projection: bool,
}

/// SQL value keywords that may reach the walker as bare names (`SELECT current_user`).
fn is_value_keyword(name: &str) -> bool {
    matches!(
        name,
        "current_user"
            | "session_user"
            | "user"
            | "current_role"
            | "current_catalog"
            | "current_schema"
            | "current_date"
            | "current_time"
            | "current_timestamp"
            | "localtime"
            | "localtimestamp"
            | "system_user"
    )
}

/// What a relation name resolved to.
enum Resolved<'a> {
    Cte,
    Rel(Rc<RelInfo<'a>>),
    /// Already denied (reason recorded).
    Refused,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(cx: &'a Ctx<'a>) -> Self {
        Walker {
            cx,
            out: Analysis::default(),
            scopes: Vec::new(),
            queries: PtrSet::default(),
            factors: PtrSet::default(),
            names: PtrSet::default(),
            names_are_objects: false,
            rel_cache: PtrMap::default(),
            derived: Vec::new(),
            all_columns: false,
            key: String::new(),
            in_projection: false,
        }
    }

    // ----- outcomes -------------------------------------------------------------------

    fn deny(&mut self, reason: DenyReason, sqlstate: &'static str, message: String) {
        if self.cx.restricted && self.out.denial.is_none() {
            self.out.denial = Some(Denial {
                sqlstate,
                message,
                hint: None,
                reason,
            });
        }
    }

    fn deny_hint(&mut self, reason: DenyReason, message: String, hint: &str) {
        if self.cx.restricted && self.out.denial.is_none() {
            self.out.denial = Some(Denial {
                sqlstate: "42501",
                message,
                hint: Some(hint.to_string()),
                reason,
            });
        }
    }

    /// Something the analyser cannot vouch for: refused for restricted roles.
    fn unsupported(&mut self, what: &str) {
        self.deny(
            DenyReason::Unsupported,
            "42501",
            format!("pgveil cannot analyse this statement: {what}"),
        );
    }

    fn set_kind(&mut self, kind: StatementKind) {
        if self.out.kind.is_none() {
            self.out.kind = Some(kind);
        }
        if kind != StatementKind::Session && !self.out.required.contains(&kind) {
            self.out.required.push(kind);
        }
    }

    fn require(&mut self, kind: StatementKind) {
        if kind != StatementKind::Session && !self.out.required.contains(&kind) {
            self.out.required.push(kind);
        }
    }

    // ----- statements -----------------------------------------------------------------

    /// Analyses `stmt`, then cross-checks that every query, FROM item and relation name
    /// in it was handled.
    pub(crate) fn statement(mut self, stmt: &Statement) -> Analysis {
        self.walk_statement(stmt);
        let mut check = CrossCheck {
            w: &mut self,
            problem: None,
        };
        let _ = stmt.visit(&mut check);
        if let Some(p) = check.problem {
            self.unsupported(&p);
        }
        self.write_derived_tables();
        if self.out.kind.is_none() {
            self.out.kind = Some(StatementKind::Unknown);
        }
        self.out
    }

    fn walk_statement(&mut self, stmt: &Statement) {
        use StatementKind as K;
        match stmt {
            Statement::Query(q) => {
                // `WITH … UPDATE/INSERT/DELETE/MERGE` is that statement, not a SELECT.
                let kind = match q.body.as_ref() {
                    SetExpr::Insert(_) => K::Insert,
                    SetExpr::Update(_) => K::Update,
                    SetExpr::Delete(_) => K::Delete,
                    SetExpr::Merge(_) => K::Merge,
                    _ => K::Select,
                };
                self.set_kind(kind);
                self.walk_query(q);
            }
            Statement::Insert(ins) => {
                self.set_kind(K::Insert);
                self.walk_insert(ins);
            }
            Statement::Update(upd) => {
                self.set_kind(K::Update);
                self.walk_update(upd);
            }
            Statement::Delete(del) => {
                self.set_kind(K::Delete);
                self.walk_delete(del);
            }
            Statement::Merge(m) => {
                self.set_kind(K::Merge);
                self.walk_merge(m);
            }
            Statement::Copy {
                source, to, target, ..
            } => self.walk_copy(source, *to, target),
            Statement::Explain {
                describe_alias,
                analyze: _,
                verbose,
                statement,
                options,
                query_plan,
                estimate,
                ..
            } => {
                self.set_kind(K::Explain);
                if !matches!(describe_alias, ast::DescribeAlias::Explain)
                    || *query_plan
                    || *estimate
                {
                    self.unsupported("only EXPLAIN is supported");
                }
                let verbose_opt = options.as_ref().is_some_and(|opts| {
                    opts.iter().any(|o| {
                        o.name.value.eq_ignore_ascii_case("verbose")
                            && !o.arg.as_ref().is_some_and(is_false_literal)
                    })
                });
                if *verbose || verbose_opt {
                    self.deny(
                        DenyReason::Explain,
                        "42501",
                        "EXPLAIN VERBOSE is not allowed for this role: it would echo the rewritten SQL".into(),
                    );
                }
                self.out.echoes_sql = true;
                let before = self.out.kind;
                self.walk_inner_statement(statement);
                self.out.kind = before;
            }
            Statement::Prepare {
                name, statement, ..
            } => {
                self.set_kind(K::Session);
                self.out
                    .effects
                    .push(SessionEffect::Prepare { name: fold(name) });
                self.walk_inner_statement(statement);
                self.out.kind = Some(K::Session);
            }
            Statement::Declare { stmts, .. } => {
                self.set_kind(K::Session);
                for d in stmts {
                    let is_cursor = matches!(d.declare_type, Some(ast::DeclareType::Cursor));
                    match (&d.for_query, is_cursor) {
                        (Some(q), true) => {
                            self.require(K::Select);
                            self.walk_query(q);
                        }
                        _ => self.unsupported("only DECLARE … CURSOR FOR is supported"),
                    }
                    for n in &d.names {
                        self.out
                            .effects
                            .push(SessionEffect::DeclareCursor { name: fold(n) });
                    }
                }
            }
            Statement::Execute {
                name,
                parameters,
                immediate,
                into,
                using,
                ..
            } => {
                self.set_kind(K::Session);
                self.out.runs_prepared = true;
                if *immediate || name.is_none() || !into.is_empty() || !using.is_empty() {
                    self.unsupported("only EXECUTE of a prepared statement is supported");
                }
                for p in parameters {
                    self.exprs(p);
                }
            }
            Statement::Deallocate { name, .. } => {
                self.set_kind(K::Session);
                let n = fold(name);
                self.out.effects.push(SessionEffect::Deallocate {
                    name: if n == "all" && name.quote_style.is_none() {
                        None
                    } else {
                        Some(n)
                    },
                });
            }
            Statement::Set(set) => {
                self.set_kind(K::Session);
                self.walk_set(set);
            }
            Statement::Reset(r) => {
                self.set_kind(K::Session);
                match &r.reset {
                    Reset::ALL => {
                        self.out.effects.push(SessionEffect::ResetSearchPath);
                        self.out.effects.push(SessionEffect::ResetPurpose);
                    }
                    Reset::SessionAuthorization => self.deny(
                        DenyReason::SessionSetting,
                        "42501",
                        "RESET SESSION AUTHORIZATION is not allowed for this role".into(),
                    ),
                    Reset::ConfigurationParameter(n) => {
                        let name = guc_name(n);
                        match name.as_str() {
                            "search_path" => self.out.effects.push(SessionEffect::ResetSearchPath),
                            "pgveil.purpose" => self.out.effects.push(SessionEffect::ResetPurpose),
                            "role" | "session_authorization" => self.deny(
                                DenyReason::SessionSetting,
                                "42501",
                                format!("RESET {name} is not allowed for this role"),
                            ),
                            _ => {}
                        }
                    }
                }
            }
            Statement::Discard { object_type } => {
                self.set_kind(K::Session);
                if matches!(
                    object_type,
                    ast::DiscardObject::ALL | ast::DiscardObject::TEMP
                ) {
                    // Temp tables and views (which shadow other relations) are dropped.
                    self.out.effects.push(SessionEffect::CatalogChanged);
                }
                if matches!(object_type, ast::DiscardObject::ALL) {
                    // DISCARD ALL is RESET ALL plus DEALLOCATE ALL (and more).
                    self.out.effects.push(SessionEffect::ResetSearchPath);
                    self.out.effects.push(SessionEffect::ResetPurpose);
                    self.out
                        .effects
                        .push(SessionEffect::Deallocate { name: None });
                }
            }
            Statement::StartTransaction { statements, .. } => {
                self.set_kind(K::Session);
                if !statements.is_empty() {
                    self.unsupported("transaction blocks with bodies");
                }
            }
            Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::ShowVariable { .. }
            | Statement::LISTEN { .. }
            | Statement::UNLISTEN { .. }
            | Statement::NOTIFY { .. }
            | Statement::Close { .. } => self.set_kind(K::Session),
            Statement::Fetch { name, into, .. } => {
                self.set_kind(K::Session);
                if into.is_some() {
                    self.unsupported("FETCH … INTO");
                }
                // Protocol-level portals share the cursors' name space: the proxy checks
                // that the name is not a portal whose rows it masks itself.
                self.out
                    .effects
                    .push(SessionEffect::Fetch { name: fold(name) });
            }
            Statement::Call(f) => {
                self.set_kind(K::Call);
                self.check_function(&f.name, arg_count(&f.args));
                self.exprs(&f.args);
            }
            Statement::Lock(l) => {
                self.set_kind(K::Lock);
                for t in &l.tables {
                    self.touch_named(&t.name);
                }
            }
            Statement::Truncate(t) => {
                self.set_kind(K::Truncate);
                for tt in &t.table_names {
                    self.touch_named(&tt.name);
                }
            }
            Statement::Analyze(a) => {
                self.set_kind(K::Maintenance);
                if let Some(n) = &a.table_name {
                    self.touch_named(n);
                }
            }
            Statement::Vacuum(v) => {
                self.set_kind(K::Maintenance);
                if let Some(n) = &v.table_name {
                    self.touch_named(n);
                }
            }
            Statement::RefreshMaterializedView(r) => {
                self.set_kind(K::Maintenance);
                self.touch_named(&r.name);
            }
            Statement::CreateTable(ct) => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.creation_target(&ct.name, ct.temporary);
                if let Some(q) = &ct.query {
                    self.require(K::Select);
                    self.walk_query(q);
                }
                if ct.like.is_some()
                    || ct.clone.is_some()
                    || ct.inherits.is_some()
                    || ct.partition_of.is_some()
                {
                    self.unsupported("CREATE TABLE … LIKE/INHERITS/PARTITION OF");
                }
            }
            Statement::CreateView(cv) => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.creation_target(&cv.name, cv.temporary);
                self.require(K::Select);
                let masked_before = std::mem::take(&mut self.out.masks);
                self.walk_query(&cv.query);
                let masks_inside = self.out.masks;
                self.out.masks |= masked_before;
                if masks_inside {
                    self.deny(
                        DenyReason::Ddl,
                        "42501",
                        "a view over protected columns cannot be created by this role".into(),
                    );
                }
            }
            Statement::CreateIndex(ci) => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.touch_named(&ci.table_name);
            }
            Statement::CreateSchema { .. }
            | Statement::CreateSequence { .. }
            | Statement::CreateType { .. }
            | Statement::CreateDomain(_)
            | Statement::CreateDatabase { .. }
            | Statement::Comment { .. } => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.names_are_objects = true;
            }
            Statement::Drop {
                object_type, names, ..
            } => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.names_are_objects = true;
                if matches!(
                    object_type,
                    ast::ObjectType::Table
                        | ast::ObjectType::View
                        | ast::ObjectType::MaterializedView
                ) {
                    for n in names {
                        self.touch_named(n);
                    }
                }
            }
            Statement::AlterTable(at) => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.alter_target(&at.name);
            }
            Statement::AlterView(av) => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.alter_target(&av.name);
            }
            Statement::AlterIndex { .. } => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.names_are_objects = true;
            }
            Statement::AlterSchema(_) | Statement::RenameTable(_) => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.names_are_objects = true;
                self.deny(
                    DenyReason::Ddl,
                    "42501",
                    "renaming schemas or tables is not allowed for this role: column tags are names".into(),
                );
            }
            Statement::CreateFunction(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateTrigger(_)
            | Statement::CreateRule(_)
            | Statement::CreatePolicy(_)
            | Statement::AlterPolicy(_)
            | Statement::AlterTrigger(_)
            | Statement::AlterFunction(_)
            | Statement::CreateAggregate(_)
            | Statement::CreateOperator(_)
            | Statement::CreateOperatorClass(_)
            | Statement::CreateOperatorFamily(_)
            | Statement::CreateExtension(_)
            | Statement::CreateServer(_)
            | Statement::CreateForeignTable(_)
            | Statement::CreateForeignDataWrapper(_)
            | Statement::CreateUserMapping(_)
            | Statement::CreateMacro { .. } => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.names_are_objects = true;
                self.deny(
                    DenyReason::Ddl,
                    "42501",
                    "pgveil does not let this role create code, rules, policies or external access (their bodies cannot be analysed)".into(),
                );
            }
            Statement::DropFunction(_)
            | Statement::DropTrigger(_)
            | Statement::DropPolicy(_)
            | Statement::DropRule(_)
            | Statement::DropExtension(_)
            | Statement::DropDomain(_)
            | Statement::DropProcedure { .. } => {
                self.set_kind(K::Ddl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.names_are_objects = true;
            }
            Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::GrantRole(_)
            | Statement::RevokeRole(_)
            | Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::CreateUser(_)
            | Statement::AlterUser(_)
            | Statement::AlterDefaultPrivileges(_) => {
                self.set_kind(K::Dcl);
                self.out.effects.push(SessionEffect::CatalogChanged);
                self.names_are_objects = true;
            }
            _ => {
                self.set_kind(K::Unknown);
                self.names_are_objects = true;
                self.unsupported("this kind of statement is not supported");
            }
        }
    }

    /// The statement inside EXPLAIN or PREPARE: analysed like a top-level statement; its
    /// kind must be granted too.
    fn walk_inner_statement(&mut self, stmt: &Statement) {
        let outer_kind = self.out.kind;
        self.out.kind = None;
        self.walk_statement(stmt);
        if let Some(k) = self.out.kind {
            if matches!(k, StatementKind::Session | StatementKind::Explain) {
                self.unsupported("nested EXPLAIN/PREPARE/session statement");
            }
            self.require(k);
        }
        self.out.kind = outer_kind;
    }

    fn walk_set(&mut self, set: &ast::Set) {
        use ast::Set as S;
        match set {
            S::SingleAssignment {
                variable,
                values,
                scope,
                ..
            } => {
                let name = guc_name(variable);
                let local = matches!(scope, Some(ast::ContextModifier::Local));
                match name.as_str() {
                    // SET LOCAL reverts at transaction end, behind the proxy's back.
                    "search_path" if local => self.deny(
                        DenyReason::SessionSetting,
                        "42501",
                        "SET LOCAL search_path is not allowed for this role; use SET search_path"
                            .into(),
                    ),
                    "search_path" => self.set_search_path(values),
                    "pgveil.purpose" => match values.as_slice() {
                        [v] => match setting_value(v) {
                            Some(p) => self.out.effects.push(SessionEffect::SetPurpose(p)),
                            None => self.unsupported("pgveil.purpose must be a string"),
                        },
                        _ => self.unsupported("pgveil.purpose takes one value"),
                    },
                    "role" | "session_authorization" => self.deny(
                        DenyReason::SessionSetting,
                        "42501",
                        format!("SET {name} is not allowed for this role"),
                    ),
                    "client_encoding" | "names" => {
                        let ok = values.len() == 1
                            && setting_value(&values[0]).is_some_and(|v| is_utf8_name(&v));
                        if !ok {
                            self.deny(
                                DenyReason::SessionSetting,
                                "42501",
                                "client_encoding other than UTF8 is not allowed for this role"
                                    .into(),
                            );
                        }
                    }
                    "standard_conforming_strings" => {
                        let ok = values.len() == 1
                            && setting_value(&values[0]).is_some_and(|v| {
                                matches!(
                                    v.to_ascii_lowercase().as_str(),
                                    "on" | "true" | "yes" | "1" | "default"
                                )
                            });
                        if !ok {
                            self.deny(
                                DenyReason::SessionSetting,
                                "42501",
                                "standard_conforming_strings = off is not allowed for this role"
                                    .into(),
                            );
                        }
                    }
                    _ => {
                        for v in values {
                            self.exprs(v);
                        }
                    }
                }
            }
            S::SetRole { .. } => self.deny(
                DenyReason::SessionSetting,
                "42501",
                "SET ROLE is not allowed for this role".into(),
            ),
            S::SetSessionAuthorization(_) => self.deny(
                DenyReason::SessionSetting,
                "42501",
                "SET SESSION AUTHORIZATION is not allowed for this role".into(),
            ),
            S::SetNames { charset_name, .. } => {
                if !is_utf8_name(&charset_name.value) {
                    self.deny(
                        DenyReason::SessionSetting,
                        "42501",
                        "client_encoding other than UTF8 is not allowed for this role".into(),
                    );
                }
            }
            S::SetNamesDefault {} | S::SetTimeZone { .. } | S::SetTransaction { .. } => {}
            _ => self.unsupported("this form of SET"),
        }
    }

    fn set_search_path(&mut self, values: &[Expr]) {
        let mut entries = Vec::new();
        for v in values {
            match v {
                Expr::Identifier(id)
                    if id.quote_style.is_none()
                        && id.value.eq_ignore_ascii_case("default")
                        && values.len() == 1 =>
                {
                    self.out.effects.push(SessionEffect::ResetSearchPath);
                    return;
                }
                Expr::Identifier(id) => entries.push(if id.quote_style.is_some() {
                    quote_ident(&id.value)
                } else {
                    id.value.to_ascii_lowercase()
                }),
                other => match setting_value(other) {
                    Some(s) if !matches!(other, Expr::Identifier(_)) => {
                        entries.push(quote_ident(&s))
                    }
                    _ => {
                        self.unsupported("search_path value");
                        return;
                    }
                },
            }
        }
        self.out.effects.push(SessionEffect::SetSearchPath(entries));
    }

    // ----- queries ----------------------------------------------------------------------

    fn walk_query(&mut self, q: &Query) {
        self.queries.insert(ptr(q));
        if q.for_clause.is_some()
            || q.settings.is_some()
            || q.format_clause.is_some()
            || !q.pipe_operators.is_empty()
        {
            self.unsupported("non-PostgreSQL query clause");
        }
        let pushed = if let Some(with) = &q.with {
            self.scopes.push(Scope::default());
            let names: Vec<String> = with
                .cte_tables
                .iter()
                .map(|c| fold(&c.alias.name))
                .collect();
            if with.recursive {
                self.top().ctes.extend(names.iter().cloned());
            }
            for (i, cte) in with.cte_tables.iter().enumerate() {
                if cte.from.is_some() {
                    self.unsupported("CTE FROM clause");
                }
                self.walk_query(&cte.query);
                if !with.recursive {
                    let n = names[i].clone();
                    self.top().ctes.push(n);
                }
            }
            true
        } else {
            false
        };
        match q.body.as_ref() {
            SetExpr::Select(sel) => self.walk_select(sel, Some(q)),
            other => {
                self.walk_set_expr(other);
                self.tail(q);
            }
        }
        if pushed {
            self.scopes.pop();
        }
    }

    /// ORDER BY / LIMIT / OFFSET / FETCH / FOR UPDATE of a query.
    fn tail(&mut self, q: &Query) {
        if let Some(ob) = &q.order_by {
            self.exprs(ob);
        }
        if let Some(l) = &q.limit_clause {
            self.exprs(l);
        }
        if let Some(f) = &q.fetch {
            self.exprs(f);
        }
        for l in &q.locks {
            self.exprs(l);
        }
    }

    fn top(&mut self) -> &mut Scope<'a> {
        if self.scopes.is_empty() {
            self.scopes.push(Scope::default());
        }
        let last = self.scopes.len() - 1;
        &mut self.scopes[last]
    }

    fn walk_set_expr(&mut self, s: &SetExpr) {
        match s {
            SetExpr::Select(sel) => self.walk_select(sel, None),
            SetExpr::Query(q) => self.walk_query(q),
            SetExpr::SetOperation { left, right, .. } => {
                self.walk_set_expr(left);
                self.walk_set_expr(right);
            }
            SetExpr::Values(v) => {
                for row in &v.rows {
                    self.exprs(row);
                }
            }
            SetExpr::Insert(stmt)
            | SetExpr::Update(stmt)
            | SetExpr::Delete(stmt)
            | SetExpr::Merge(stmt) => {
                self.scopes.push(Scope::default());
                match stmt {
                    Statement::Insert(i) => {
                        self.require(StatementKind::Insert);
                        self.walk_insert(i)
                    }
                    Statement::Update(u) => {
                        self.require(StatementKind::Update);
                        self.walk_update(u)
                    }
                    Statement::Delete(d) => {
                        self.require(StatementKind::Delete);
                        self.walk_delete(d)
                    }
                    Statement::Merge(m) => {
                        self.require(StatementKind::Merge);
                        self.walk_merge(m)
                    }
                    _ => self.unsupported("statement inside a query"),
                }
                self.scopes.pop();
            }
            SetExpr::Table(t) => self.table_query(t),
        }
    }

    /// `TABLE name`, i.e. `SELECT * FROM name`: allowed on a CTE or on a relation none of
    /// whose columns the policy tags (whose text then needs no rewrite); refused on a
    /// tagged one, since the name has no place in the text to put a derived table.
    fn table_query(&mut self, t: &ast::Table) {
        let Some(table) = &t.table_name else {
            self.unsupported("TABLE without a name");
            return;
        };
        let parts: Vec<Ident> = t.schema_name.iter().chain([table]).cloned().collect();
        let name = ObjectName::from(parts);
        if let Resolved::Rel(rel) = self.resolve(&name, true) {
            let tagged = rel.protected || rel.cols.iter().any(|c| c.class.is_some());
            if tagged && !rel.system {
                self.unsupported(
                    "TABLE name on a relation with tagged columns (write SELECT * FROM name)",
                );
            }
        }
    }

    fn walk_select(&mut self, sel: &ast::Select, query: Option<&Query>) {
        let outer_projection = std::mem::replace(&mut self.in_projection, false);
        self.scopes.push(Scope::default());
        let derived_before = self.derived.len();
        for twj in &sel.from {
            self.walk_table_with_joins(twj);
        }
        if let Some((start, end)) = from_forms::table_keyword(self.cx.text, self.cx.lines, sel) {
            if !from_forms::is_bare_table(sel) {
                self.unsupported("TABLE name followed by a clause PostgreSQL does not accept");
            } else if self.derived.len() > derived_before {
                // The relation became a derived table, which TABLE cannot name.
                self.out.edits.push(Edit {
                    start,
                    end,
                    text: "SELECT * FROM".into(),
                });
            }
        }
        if !sel.lateral_views.is_empty()
            || sel.prewhere.is_some()
            || !sel.connect_by.is_empty()
            || sel.top.is_some()
            || sel.value_table_mode.is_some()
            || !sel.optimizer_hints.is_empty()
            || sel.select_modifiers.is_some()
            || sel.exclude.is_some()
        {
            self.unsupported("non-PostgreSQL SELECT clause");
        }
        if let Some(into) = &sel.into {
            self.set_kind(StatementKind::Ddl);
            self.out.effects.push(SessionEffect::CatalogChanged);
            match into.targets.as_slice() {
                [Expr::Identifier(id)] => {
                    let name = ObjectName::from(vec![id.clone()]);
                    self.creation_target(&name, into.temporary);
                }
                [Expr::CompoundIdentifier(parts)] => {
                    let name = ObjectName::from(parts.clone());
                    self.creation_target(&name, into.temporary);
                }
                _ => self.unsupported("SELECT INTO target"),
            }
        }
        for item in &sel.projection {
            self.in_projection = true;
            self.select_item(item);
            self.in_projection = false;
        }
        if let Some(d) = &sel.distinct {
            self.exprs(d);
        }
        if let Some(w) = &sel.selection {
            self.exprs(w);
        }
        self.exprs(&sel.group_by);
        if let Some(h) = &sel.having {
            self.exprs(h);
        }
        if let Some(q) = &sel.qualify {
            self.exprs(q);
        }
        for w in &sel.named_window {
            self.exprs(w);
        }
        for e in &sel.cluster_by {
            self.exprs(e);
        }
        for e in &sel.distribute_by {
            self.exprs(e);
        }
        for e in &sel.sort_by {
            self.exprs(e);
        }
        if let Some(q) = query {
            self.tail(q);
        }
        self.scopes.pop();
        self.in_projection = outer_projection;
    }

    fn select_item(&mut self, item: &SelectItem) {
        match item {
            SelectItem::UnnamedExpr(e) => self.exprs(e),
            SelectItem::ExprWithAlias { expr, .. } => self.exprs(expr),
            SelectItem::ExprWithAliases { expr, .. } => self.exprs(expr),
            SelectItem::Wildcard(opts) => {
                self.wildcard_opts(opts);
                self.star(None);
            }
            SelectItem::QualifiedWildcard(kind, opts) => {
                self.wildcard_opts(opts);
                match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(n) => self.star(Some(n)),
                    SelectItemQualifiedWildcardKind::Expr(e) => self.exprs(e),
                }
            }
        }
    }

    fn wildcard_opts(&mut self, opts: &ast::WildcardAdditionalOptions) {
        if opts.opt_ilike.is_some()
            || opts.opt_exclude.is_some()
            || opts.opt_except.is_some()
            || opts.opt_replace.is_some()
            || opts.opt_rename.is_some()
            || opts.opt_alias.is_some()
        {
            self.unsupported("non-PostgreSQL wildcard options");
        }
    }

    fn walk_table_with_joins(&mut self, twj: &TableWithJoins) {
        self.walk_factor(&twj.relation);
        for j in &twj.joins {
            self.walk_factor(&j.relation);
            if !matches!(
                join_constraint(&j.join_operator),
                Some(JoinConstraint::On(_) | JoinConstraint::None)
            ) {
                // USING and NATURAL name columns outside any expression.
                self.all_columns = true;
            }
            self.exprs(&j.join_operator);
        }
    }

    fn push_item(&mut self, item: FromItem<'a>) {
        self.top().items.push(item);
    }

    fn walk_factor(&mut self, tf: &TableFactor) {
        self.factors.insert(ptr(tf));
        match tf {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                with_ordinality,
                partitions,
                json_path,
                sample,
                index_directives,
                inheritance,
            } => {
                self.names.insert(ptr(name));
                if let Some(a) = alias {
                    self.exprs(&a.columns);
                }
                if let Some(args) = args {
                    // `FROM f(…)`: a set-returning function, not a relation.
                    let n = args.args.len();
                    self.check_function(name, n);
                    self.exprs(args);
                    let alias_name = alias
                        .as_ref()
                        .map(|a| fold(&a.name))
                        .or_else(|| last_ident(name).map(fold))
                        .unwrap_or_default();
                    self.push_item(FromItem {
                        alias: alias_name,
                        rel: None,
                        target: false,
                        implicit_alias: false,
                    });
                    return;
                }
                let exotic = !with_hints.is_empty()
                    || version.is_some()
                    || *with_ordinality
                    || !partitions.is_empty()
                    || json_path.is_some()
                    || !index_directives.is_empty();
                if exotic {
                    self.unsupported("non-PostgreSQL table modifiers");
                }
                match self.resolve(name, true) {
                    Resolved::Cte => {
                        let alias_name = alias
                            .as_ref()
                            .map(|a| fold(&a.name))
                            .or_else(|| last_ident(name).map(fold))
                            .unwrap_or_default();
                        self.push_item(FromItem {
                            alias: alias_name,
                            rel: None,
                            target: false,
                            implicit_alias: false,
                        });
                    }
                    Resolved::Refused => {}
                    Resolved::Rel(rel) => {
                        let alias_name = alias
                            .as_ref()
                            .map(|a| fold(&a.name))
                            .unwrap_or_else(|| rel.name.clone());
                        if rel.protected {
                            if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
                                // `AS c(a, b, …)` renames columns by position, so a denied
                                // or masked column would be read under another name that
                                // the name-based checks cannot see.
                                self.unsupported(
                                    "a column alias list on a relation with protected columns",
                                );
                            }
                            self.replace_relation(
                                name,
                                &rel,
                                alias.as_ref(),
                                sample.as_ref(),
                                inheritance.as_ref(),
                            );
                        } else {
                            self.qualify(name, &rel);
                        }
                        self.push_item(FromItem {
                            alias: alias_name,
                            rel: Some(rel),
                            target: false,
                            implicit_alias: alias.is_none(),
                        });
                    }
                }
            }
            TableFactor::Derived {
                subquery,
                alias,
                sample,
                ..
            } => {
                if sample.is_some() {
                    self.unsupported("TABLESAMPLE on a subquery");
                }
                self.walk_query(subquery);
                self.push_item(FromItem {
                    alias: alias.as_ref().map(|a| fold(&a.name)).unwrap_or_default(),
                    rel: None,
                    target: false,
                    implicit_alias: false,
                });
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let start = self.top().items.len();
                self.walk_table_with_joins(table_with_joins);
                if let Some(a) = alias {
                    if !a.columns.is_empty() {
                        // `AS j(a, b, …)` renames the join's columns by position.
                        self.unsupported("a column alias list on a parenthesized join");
                    }
                    let scope = self.top();
                    let members: Vec<FromItem<'a>> = scope.items[start..]
                        .iter()
                        .filter(|i| i.rel.is_some())
                        .cloned()
                        .collect();
                    let at = scope.items.len();
                    scope.joins.push((at, members));
                    self.push_item(FromItem {
                        alias: fold(&a.name),
                        rel: None,
                        target: false,
                        implicit_alias: false,
                    });
                }
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                self.check_function(name, args.len());
                self.exprs(args);
                self.push_item(FromItem {
                    alias: alias
                        .as_ref()
                        .map(|a| fold(&a.name))
                        .or_else(|| last_ident(name).map(fold))
                        .unwrap_or_default(),
                    rel: None,
                    target: false,
                    implicit_alias: false,
                });
            }
            TableFactor::UNNEST {
                alias, array_exprs, ..
            } => {
                self.exprs(array_exprs);
                self.push_item(FromItem {
                    alias: alias
                        .as_ref()
                        .map(|a| fold(&a.name))
                        .unwrap_or_else(|| "unnest".into()),
                    rel: None,
                    target: false,
                    implicit_alias: false,
                });
            }
            TableFactor::TableFunction { expr, alias } => {
                self.exprs(expr);
                self.push_item(FromItem {
                    alias: alias.as_ref().map(|a| fold(&a.name)).unwrap_or_default(),
                    rel: None,
                    target: false,
                    implicit_alias: false,
                });
            }
            _ => self.unsupported("this kind of FROM item"),
        }
    }

    // ----- name resolution ------------------------------------------------------------

    fn name_parts<'n>(&mut self, name: &'n ObjectName) -> Option<Vec<&'n Ident>> {
        let mut parts = Vec::with_capacity(name.0.len());
        for p in &name.0 {
            match p {
                ObjectNamePart::Identifier(id) => parts.push(id),
                ObjectNamePart::Function(_) => {
                    self.unsupported("computed object name");
                    return None;
                }
            }
        }
        if parts.is_empty() || parts.len() > 3 {
            self.unsupported("relation name with too many parts");
            return None;
        }
        Some(parts)
    }

    /// Resolves a relation name (optionally against CTEs in scope) and checks access.
    fn resolve(&mut self, name: &ObjectName, ctes: bool) -> Resolved<'a> {
        let Some(parts) = self.name_parts(name) else {
            return Resolved::Refused;
        };
        let rel_name = fold(parts[parts.len() - 1]);
        if parts.len() == 1 && ctes && self.scopes.iter().rev().any(|s| s.ctes.contains(&rel_name))
        {
            return Resolved::Cte;
        }
        let schema = (parts.len() >= 2).then(|| fold(parts[parts.len() - 2]));
        let found: Option<(String, Option<&'a Relation>)> = match &schema {
            Some(s) => {
                let s = if s == "pg_temp" {
                    match &self.cx.path.temp {
                        Some(t) => t.clone(),
                        None => s.clone(),
                    }
                } else {
                    s.clone()
                };
                let r = self.cx.catalog.relation(&s, &rel_name);
                Some((s, r))
            }
            None => {
                let mut hit = None;
                for s in &self.cx.path.relations {
                    if let Some(r) = self.cx.catalog.relation(s, &rel_name) {
                        hit = Some((s.clone(), Some(r)));
                        break;
                    }
                }
                hit
            }
        };
        // Value-exposing catalog relations are refused by name whichever way they are
        // reached (pg_catalog is searched first unless the path says otherwise).
        let sys_schema = match &found {
            Some((s, _)) => functions::is_system_schema(s),
            None => schema.as_deref().is_none_or(functions::is_system_schema),
        };
        if functions::is_value_exposing_relation(&rel_name) && (sys_schema || schema.is_none()) {
            self.deny(
                DenyReason::SystemRelation,
                "42501",
                format!("permission denied for relation \"{rel_name}\": it exposes data values or query text"),
            );
            return Resolved::Refused;
        }
        if schema.as_deref() == Some("pg_toast") {
            self.deny(
                DenyReason::SystemRelation,
                "42501",
                "permission denied for schema pg_toast".into(),
            );
            return Resolved::Refused;
        }
        match found {
            Some((s, Some(rel))) => {
                let info = self.rel_info(&s, rel);
                if !info.system && !self.may_touch(&info.schema, &info.name) {
                    self.deny(
                        DenyReason::Table,
                        "42501",
                        format!(
                            "permission denied for table \"{}\": role \"{}\" may not access it",
                            info.qualified(),
                            self.cx.role.name
                        ),
                    );
                    return Resolved::Refused;
                }
                self.out.relations.insert(info.qualified());
                if rel.is_view() && !info.system {
                    self.check_view(rel, &info);
                }
                Resolved::Rel(info)
            }
            Some((s, None)) if functions::is_system_schema(&s) => {
                Resolved::Rel(self.system_rel(&s, &rel_name))
            }
            None if schema.is_none() && rel_name.starts_with("pg_") => {
                Resolved::Rel(self.system_rel("pg_catalog", &rel_name))
            }
            _ => {
                let shown = match &schema {
                    Some(s) => format!("{s}.{rel_name}"),
                    None => rel_name.clone(),
                };
                self.deny(
                    DenyReason::UnresolvedRelation,
                    "42P01",
                    format!("relation \"{shown}\" does not exist (pgveil could not resolve it)"),
                );
                Resolved::Refused
            }
        }
    }

    fn may_touch(&self, schema: &str, name: &str) -> bool {
        let role = self.cx.role;
        role.may_touch(schema, name)
            || (self.cx.path.temp.as_deref() == Some(schema) && role.may_touch("pg_temp", name))
    }

    fn system_rel(&mut self, schema: &str, name: &str) -> Rc<RelInfo<'a>> {
        self.out.relations.insert(format!("{schema}.{name}"));
        Rc::new(RelInfo {
            schema: schema.to_string(),
            name: name.to_string(),
            cols: Vec::new(),
            protected: false,
            system: true,
        })
    }

    fn visibility(&self, schema: &str, table: &str, column: &str) -> (ColVis<'a>, Option<&'a str>) {
        self.class_visibility(self.cx.policy.class_of(schema, table, column))
    }

    /// What the role sees of a column tagged `class` (`None`: untagged).
    fn class_visibility(&self, class: Option<&'a Class>) -> (ColVis<'a>, Option<&'a str>) {
        let role: &'a Role = self.cx.role;
        let vis = match class {
            Some(class) => role.visibility(&class.name),
            None => &role.unclassified,
        };
        let v = match vis {
            Visibility::Raw => ColVis::Raw,
            Visibility::Deny => ColVis::Deny,
            Visibility::Custom(m) => ColVis::Mask(m),
            Visibility::Masked => match class {
                Some(c) => ColVis::Mask(&c.mask),
                None => ColVis::Mask(&HIDDEN),
            },
        };
        (v, class.map(|c| c.name.as_str()))
    }

    fn rel_info(&mut self, schema: &str, rel: &'a Relation) -> Rc<RelInfo<'a>> {
        let cached = self.rel_cache.get(&ptr(rel));
        if let Some(r) = cached.filter(|r| r.schema == schema) {
            return r.clone();
        }
        let system = functions::is_system_schema(schema);
        let policy: &'a Policy = self.cx.policy;
        let tags = (!system).then(|| policy.table_tags(schema, &rel.name));
        // A view reads with its owner's rights and its columns cannot be traced to the
        // base columns they show (`id_card AS ident`): once it reads a protected column,
        // its untagged columns are refused rather than trusted to be harmless (an
        // untagged view over protected columns is refused as a whole, `check_view`).
        let untrusted_untagged = rel.is_view()
            && !system
            && self.cx.role.unclassified == Visibility::Raw
            && self.view_reads_protected(rel);
        let cols: Vec<ColInfo<'a>> = rel
            .columns
            .iter()
            .map(|c| {
                let (vis, class) = match &tags {
                    None => (ColVis::Raw, None),
                    Some(tags) => match tags.class_of(&c.name) {
                        None if untrusted_untagged => (ColVis::Deny, None),
                        class => self.class_visibility(class),
                    },
                };
                ColInfo {
                    name: &c.name,
                    type_name: &c.type_name,
                    vis,
                    class,
                }
            })
            .collect();
        let protected = cols.iter().any(|c| c.vis != ColVis::Raw);
        let info = Rc::new(RelInfo {
            schema: schema.to_string(),
            name: rel.name.clone(),
            cols,
            protected,
            system,
        });
        self.rel_cache
            .entry(ptr(rel))
            .or_insert_with(|| info.clone());
        info
    }

    /// A view reads with its owner's rights: the rewrite cannot reach inside it, so a
    /// view over protected columns must be tagged itself.
    fn check_view(&mut self, rel: &Relation, info: &RelInfo) {
        let tagged = info.cols.iter().any(|c| c.class.is_some());
        if tagged || self.cx.role.unclassified != Visibility::Raw {
            return;
        }
        if self.view_reads_protected(rel) {
            self.deny(
                DenyReason::View,
                "42501",
                format!(
                    "permission denied for view \"{}\": it reads protected columns and its own columns are not tagged",
                    info.qualified()
                ),
            );
        }
    }

    /// Does the view read (directly or through other views) a column the role may not
    /// see raw? Unknown depth is treated as a leak.
    fn view_reads_protected(&self, rel: &Relation) -> bool {
        let mut stack: Vec<(&Relation, usize)> = vec![(rel, 0)];
        let mut seen: HashSet<(String, String)> = HashSet::new();
        while let Some((view, depth)) = stack.pop() {
            if depth > 32 {
                return true;
            }
            for d in &view.depends_on {
                let (v, _) = self.visibility(&d.schema, &d.table, &d.column);
                if v != ColVis::Raw {
                    return true;
                }
                if let Some(inner) = self.cx.catalog.relation(&d.schema, &d.table) {
                    if inner.is_view() && seen.insert((d.schema.clone(), d.table.clone())) {
                        stack.push((inner, depth + 1));
                    }
                }
            }
        }
        false
    }

    /// DDL/maintenance targets: a relation the role must be allowed to touch.
    /// Checks that the role may touch the relation `name` names, and returns its schema
    /// and name as resolved.
    fn touch_named(&mut self, name: &ObjectName) -> Option<(String, String)> {
        self.names.insert(ptr(name));
        let parts = self.name_parts(name)?;
        let rel_name = fold(parts[parts.len() - 1]);
        let schema = if parts.len() >= 2 {
            let s = fold(parts[parts.len() - 2]);
            if s == "pg_temp" {
                self.cx.path.temp.clone().unwrap_or(s)
            } else {
                s
            }
        } else {
            self.cx
                .path
                .relations
                .iter()
                .find(|s| self.cx.catalog.relation(s, &rel_name).is_some())
                .cloned()
                .or_else(|| self.cx.path.creation.clone())
                .unwrap_or_else(|| "public".into())
        };
        if functions::is_system_schema(&schema) || !self.may_touch(&schema, &rel_name) {
            self.deny(
                DenyReason::Table,
                "42501",
                format!(
                    "permission denied for table \"{schema}.{rel_name}\": role \"{}\" may not access it",
                    self.cx.role.name
                ),
            );
        }
        self.out.relations.insert(format!("{schema}.{rel_name}"));
        Some((schema, rel_name))
    }

    fn creation_target(&mut self, name: &ObjectName, temporary: bool) {
        if temporary && name.0.len() == 1 {
            self.names.insert(ptr(name));
            if let Some(id) = last_ident(name) {
                let n = fold(id);
                if !self.cx.role.may_touch("pg_temp", &n)
                    && !self
                        .cx
                        .path
                        .temp
                        .as_deref()
                        .is_some_and(|t| self.cx.role.may_touch(t, &n))
                {
                    self.deny(
                        DenyReason::Table,
                        "42501",
                        format!("permission denied for table \"pg_temp.{n}\": role \"{}\" may not access it", self.cx.role.name),
                    );
                }
            }
            return;
        }
        self.touch_named(name);
    }

    /// ALTER on a relation with tagged columns could rename them out of their tags.
    fn alter_target(&mut self, name: &ObjectName) {
        self.touch_named(name);
        let Some(parts) = self.name_parts(name) else {
            return;
        };
        let rel_name = fold(parts[parts.len() - 1]);
        let schemas: Vec<String> = if parts.len() >= 2 {
            vec![fold(parts[parts.len() - 2])]
        } else {
            self.cx.path.relations.clone()
        };
        let tagged = schemas.iter().any(|s| {
            self.cx.catalog.relation(s, &rel_name).is_some_and(|r| {
                r.columns
                    .iter()
                    .any(|c| self.cx.policy.class_of(s, &rel_name, &c.name).is_some())
                    || r.depends_on.iter().any(|d| {
                        self.cx
                            .policy
                            .class_of(&d.schema, &d.table, &d.column)
                            .is_some()
                    })
            }) || self
                .cx
                .policy
                .columns
                .iter()
                .any(|t| t.schema.matches(s) && t.table.matches(&rel_name))
        });
        if tagged {
            self.deny(
                DenyReason::Ddl,
                "42501",
                format!(
                    "altering \"{rel_name}\" is not allowed for this role: it has tagged columns"
                ),
            );
        }
    }

    // ----- rewrite ----------------------------------------------------------------------

    fn span_of_name(&mut self, name: &ObjectName) -> Option<(usize, usize)> {
        let first = name.0.first()?.as_ident()?;
        let last = name.0.last()?.as_ident()?;
        let start = self.cx.lines.offset(first.span.start)?;
        let end = self.cx.lines.offset(last.span.end)?;
        let text = self.cx.text.get(start..end)?;
        let opener_ok = |id: &Ident, s: &str| match id.quote_style {
            Some(q) => s.starts_with(q),
            None => s
                .get(..id.value.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(&id.value)),
        };
        let last_text = self
            .cx
            .text
            .get(self.cx.lines.offset(last.span.start)?..end)?;
        (opener_ok(first, text) && opener_ok(last, last_text)).then_some((start, end))
    }

    fn push_mask_edit(&mut self, edit: Edit) {
        self.out.masks = true;
        self.out.edits.push(edit);
    }

    /// An unqualified name that some column tag could apply to is pinned to the schema
    /// it resolved to, so a search_path the proxy does not know about (SET inside a
    /// rolled-back transaction, startup options, ALTER ROLE … SET) cannot make the server
    /// read a different, protected relation than the one analysed.
    fn qualify(&mut self, name: &ObjectName, rel: &RelInfo<'a>) {
        if name.0.len() != 1 || rel.system {
            return;
        }
        let tagged = self
            .cx
            .policy
            .columns
            .iter()
            .any(|t| t.table.matches(&rel.name));
        if !tagged {
            return;
        }
        let Some((start, end)) = self.span_of_name(name) else {
            self.unsupported("could not locate a relation name in the text");
            return;
        };
        let schema = if self.cx.path.temp.as_deref() == Some(rel.schema.as_str()) {
            "pg_temp".to_string()
        } else {
            quote_ident(&rel.schema)
        };
        self.out.edits.push(Edit {
            start,
            end,
            text: format!("{schema}.{}", quote_ident(&rel.name)),
        });
    }

    fn replace_relation(
        &mut self,
        name: &ObjectName,
        rel: &Rc<RelInfo<'a>>,
        alias: Option<&ast::TableAlias>,
        sample: Option<&ast::TableSampleKind>,
        inheritance: Option<&ast::TableInheritance>,
    ) {
        let Some(span) = self.span_of_name(name) else {
            self.unsupported("could not locate a relation name in the text");
            return;
        };
        let (text, lines) = (self.cx.text, self.cx.lines);
        let place = match from_forms::place(text, lines, span, alias, sample, inheritance) {
            Ok(p) => p,
            Err(why) => {
                self.unsupported(why);
                return;
            }
        };
        let (start, end) = place.replace;
        if let Some((s, e)) = place.cut {
            self.push_mask_edit(Edit {
                start: s,
                end: e,
                text: String::new(),
            });
        }
        self.derived.push((
            self.out.edits.len(),
            rel.clone(),
            alias.is_none(),
            place.source,
        ));
        if rel
            .cols
            .iter()
            .any(|c| matches!(&c.vis, ColVis::Mask(m) if mask::embeds_key(m)))
        {
            self.out.uses_key = true;
        }
        // The text is written by `write_derived_tables` once every read is known.
        self.push_mask_edit(Edit {
            start,
            end,
            text: String::new(),
        });
    }

    /// Fills in the derived tables of `replace_relation` with the columns the statement
    /// reads of each relation (all of them when it reads whole rows).
    fn write_derived_tables(&mut self) {
        if let [(_, rel, _, _)] = self.derived.as_slice() {
            self.out.target = Some(output_target(rel));
        }
        for (i, rel, add_alias, source) in std::mem::take(&mut self.derived) {
            let prefix_len = rel.schema.len() + rel.name.len() + 2;
            let mut key = format!("{}.{}.", rel.schema, rel.name);
            let read = |c: &ColInfo| {
                self.all_columns || {
                    key.truncate(prefix_len);
                    key.push_str(c.name);
                    self.out.columns.contains_key(key.as_str())
                }
            };
            let mut sql = rewrite::derived_table(&rel, self.cx.key, read, &source);
            if add_alias {
                sql.push_str(" AS ");
                sql.push_str(&quote_ident(&rel.name));
            }
            if let Some(e) = self.out.edits.get_mut(i) {
                e.text = sql;
            }
        }
    }

    // ----- expressions ------------------------------------------------------------------

    /// Walks every expression inside `node` in the current scope; nested queries are
    /// walked as subqueries with the current scope stack visible (correlation).
    fn exprs<N: Visit + ?Sized>(&mut self, node: &N) {
        let mut pass = ExprPass { w: self, depth: 0 };
        let _ = node.visit(&mut pass);
    }

    fn on_expr(&mut self, e: &Expr) {
        match e {
            Expr::Identifier(id) => self.column_ref(&[], id),
            Expr::CompoundIdentifier(parts) => {
                if let Some((col, quals)) = parts.split_last() {
                    let quals: Vec<&Ident> = quals.iter().collect();
                    self.column_ref(&quals, col);
                    if parts.len() >= 3 {
                        // table.composite_column.field
                        let quals2: Vec<&Ident> = parts[..parts.len() - 2].iter().collect();
                        self.column_ref_quiet(&quals2, &parts[parts.len() - 2]);
                    }
                }
            }
            Expr::QualifiedWildcard(name, _) => self.star(Some(name)),
            Expr::Wildcard(_) => self.star(None),
            Expr::Function(f) => {
                if let FunctionArguments::List(list) = &f.args {
                    for a in &list.args {
                        let arg = match a {
                            FunctionArg::Named { arg, .. }
                            | FunctionArg::ExprNamed { arg, .. }
                            | FunctionArg::Unnamed(arg) => arg,
                        };
                        if let FunctionArgExpr::QualifiedWildcard(n) = arg {
                            self.star(Some(n));
                        }
                    }
                }
            }
            Expr::BinaryOp { op, .. } => {
                if matches!(
                    op,
                    BinaryOperator::Custom(_) | BinaryOperator::PGCustomBinaryOperator(_)
                ) {
                    self.unsupported("user-defined or unknown operator");
                }
            }
            _ => {}
        }
    }

    /// Marks a read of `col` of `item`.
    fn read_column(&mut self, item: &FromItem<'a>, col: &str) {
        let Some(rel) = &item.rel else {
            return;
        };
        if rel.system {
            return;
        }
        let Some(c) = rel.col(col) else {
            return;
        };
        let access = match (&c.vis, item.target) {
            (ColVis::Raw, _) => Access::Raw,
            (ColVis::Mask(_), false) => Access::Masked,
            (ColVis::Deny, _) => Access::Denied,
            (ColVis::Mask(_), true) => Access::Denied,
        };
        if let Some(class) = &c.class {
            if !self.out.classes.contains(*class) {
                self.out.classes.insert(class.to_string());
            }
        }
        self.key.clear();
        for part in [rel.schema.as_str(), ".", rel.name.as_str(), ".", c.name] {
            self.key.push_str(part);
        }
        match self.out.columns.get_mut(self.key.as_str()) {
            Some(entry) => *entry = access.max(*entry),
            None => {
                self.out.columns.insert(self.key.clone(), access);
            }
        }
        if c.vis == ColVis::Deny
            && c.class.is_none()
            && self.cx.role.unclassified != Visibility::Deny
        {
            // Only an untagged column of a view over protected columns (`rel_info`).
            self.deny_hint(
                DenyReason::Column,
                format!(
                    "permission denied for column \"{}\" of view \"{}\": the view reads protected columns and this column is not tagged",
                    c.name, rel.name
                ),
                "tag every column of the view in [columns]",
            );
        } else if c.vis == ColVis::Deny {
            self.deny(
                DenyReason::Column,
                "42501",
                format!(
                    "permission denied for column \"{}\" of relation \"{}\"",
                    c.name, rel.name
                ),
            );
        } else if item.target && c.vis != ColVis::Raw {
            self.deny_hint(
                DenyReason::DmlPredicate,
                format!(
                    "permission denied for column \"{}\" of relation \"{}\": this role sees it masked, so it may not be read by a data-modifying statement",
                    c.name, rel.name
                ),
                "filter and compute on unmasked columns only, or read the rows with SELECT first",
            );
        }
    }

    fn whole_row(&mut self, item: &FromItem<'a>) {
        self.all_columns = true;
        if let Some(rel) = item.rel.clone() {
            let names: Vec<&'a str> = rel.cols.iter().map(|c| c.name).collect();
            for n in names {
                self.read_column(item, n);
            }
        } else if let Some(members) = self.join_members(&item.alias) {
            for m in &members {
                self.whole_row(m);
            }
        }
    }

    /// The relations inside the parenthesized join aliased `alias`, when that is what the
    /// name refers to in the innermost scope that has it.
    fn join_members(&self, alias: &str) -> Option<Vec<FromItem<'a>>> {
        for s in self.scopes.iter().rev() {
            if let Some(at) = s.items.iter().rposition(|i| i.alias == alias) {
                return s
                    .joins
                    .iter()
                    .find(|(i, _)| *i == at)
                    .map(|(_, m)| m.clone());
            }
        }
        None
    }

    /// `j.col` of a parenthesized join `(… JOIN …) AS j`: the column of whichever relation
    /// inside the join has it.
    /// Whether a relation inside the join has the column (`None`: `alias` is no join).
    fn read_join_column(&mut self, alias: &str, col: &str) -> Option<bool> {
        let members = self.join_members(alias)?;
        let mut found = false;
        for m in &members {
            if m.rel.as_ref().is_some_and(|r| r.col(col).is_some()) {
                found = true;
                self.read_column(m, col);
            }
        }
        Some(found)
    }

    /// `*` (qualifier `None`) or `t.*`.
    fn star(&mut self, qual: Option<&ObjectName>) {
        match qual {
            None => {
                let items = self
                    .scopes
                    .last()
                    .map(|s| s.items.clone())
                    .unwrap_or_default();
                for it in &items {
                    self.whole_row(it);
                }
            }
            Some(n) => {
                if let Some(id) = last_ident(n) {
                    let alias = fold(id);
                    if let Some(it) = self.find_item(&alias) {
                        self.whole_row(&it);
                        let idents: Vec<&Ident> = n.0.iter().filter_map(|p| p.as_ident()).collect();
                        self.drop_schema_qualifier(&it, &idents);
                    }
                }
            }
        }
    }

    fn find_item(&self, alias: &str) -> Option<FromItem<'a>> {
        for s in self.scopes.iter().rev() {
            if let Some(it) = s.items.iter().rev().find(|i| i.alias == alias) {
                return Some(it.clone());
            }
        }
        None
    }

    /// `schema.table.column` / `schema.table.*` against a rewritten relation: drop the
    /// schema so the reference names the derived table's alias (`quals` ends with the
    /// table name).
    fn drop_schema_qualifier(&mut self, it: &FromItem<'a>, quals: &[&Ident]) {
        if quals.len() < 2
            || !it.implicit_alias
            || it.target
            || !it.rel.as_ref().is_some_and(|r| r.protected)
        {
            return;
        }
        match (
            self.cx.lines.offset(quals[0].span.start),
            self.cx.lines.offset(quals[quals.len() - 1].span.start),
        ) {
            (Some(s), Some(e)) if s < e => self.push_mask_edit(Edit {
                start: s,
                end: e,
                text: String::new(),
            }),
            _ => self.unsupported("could not locate a schema-qualified reference"),
        }
    }

    fn column_ref_quiet(&mut self, quals: &[&Ident], col: &Ident) {
        if quals.is_empty() {
            return;
        }
        let alias = fold(quals[quals.len() - 1]);
        if let Some(it) = self.find_item(&alias) {
            if it.rel.is_some() {
                self.read_column(&it, &fold(col));
            } else {
                self.read_join_column(&alias, &fold(col));
            }
        }
    }

    /// Whether every FROM item in scope is a relation whose columns the catalog lists
    /// (no function, VALUES or system catalog that could own an unknown name).
    fn only_catalog_items(&self) -> bool {
        self.scopes.iter().all(|s| {
            s.items
                .iter()
                .all(|it| it.rel.as_ref().is_some_and(|r| !r.system))
        })
    }

    fn column_ref(&mut self, quals: &[&Ident], col: &Ident) {
        let name = fold(col);
        if quals.is_empty() {
            // Innermost level that has the column wins; targets are checked at every
            // level (conservative: a shadowed target column still counts as read).
            let mut found = false;
            let mut targets = Vec::new();
            let mut hits = Vec::new();
            for s in self.scopes.iter().rev() {
                for it in &s.items {
                    let has = it.rel.as_ref().is_some_and(|r| r.col(&name).is_some());
                    if has && it.target {
                        targets.push(it.clone());
                    } else if has && !found {
                        hits.push(it.clone());
                    }
                }
                if !hits.is_empty() {
                    found = true;
                }
            }
            for it in hits.iter().chain(targets.iter()) {
                self.read_column(it, &name);
            }
            if hits.is_empty() && targets.is_empty() {
                // Not a column anywhere: a whole-row reference to a FROM item?
                if let Some(it) = self.find_item(&name) {
                    self.whole_row(&it);
                } else if self.in_projection
                    && !is_value_keyword(&name)
                    && self.only_catalog_items()
                {
                    self.out.unknown_columns = true;
                }
            }
            return;
        }
        let alias = fold(quals[quals.len() - 1]);
        if let Some(it) = self.find_item(&alias) {
            match it.rel.as_ref() {
                Some(r) if r.col(&name).is_some() => self.read_column(&it, &name),
                Some(r) if !r.system => {
                    self.out.unknown_columns = true;
                    // `t.f` with no column `f` is PostgreSQL's function call `f(t)`
                    // (`c.row_to_json`): the whole row is read.
                    if !is_system_column(&name) {
                        self.whole_row(&it);
                        self.check_field_function(col, false);
                    }
                }
                Some(_) => {}
                None => {
                    // A subquery, function or parenthesized join: `x.f` that is not a
                    // column of a relation inside a join may be the call `f(x)`.
                    let found = self.read_join_column(&alias, &name);
                    if found != Some(true) && !is_system_column(&name) {
                        if found.is_some() {
                            self.whole_row(&it);
                        }
                        self.check_field_function(col, false);
                    }
                }
            }
            self.drop_schema_qualifier(&it, quals);
        }
    }

    // ----- functions --------------------------------------------------------------------

    /// A field name that PostgreSQL may call as a one-argument function (`(x).f`,
    /// `t.f`): checked like `f(x)` when a refused built-in or a non-built-in function
    /// has that name (plain fields stay out of the statement's function list).
    /// `exact`: match refused built-ins by exact name only (the name may be a column).
    fn check_field_function(&mut self, id: &Ident, exact: bool) {
        if !self.cx.restricted {
            return;
        }
        let name = fold(id);
        let danger = if exact {
            functions::exact_builtin_danger(&name, 1)
        } else {
            functions::builtin_danger(&name, 1)
        };
        if danger.is_some() || !self.cx.catalog.user_function_schemas(&name).is_empty() {
            self.check_function(&ObjectName(vec![ObjectNamePart::Identifier(id.clone())]), 1);
        }
    }

    pub(crate) fn check_function(&mut self, name: &ObjectName, argc: usize) {
        let mut parts = Vec::new();
        for p in &name.0 {
            match p.as_ident() {
                Some(id) => parts.push(fold(id)),
                None => {
                    self.unsupported("computed function name");
                    return;
                }
            }
        }
        let Some(fname) = parts.last().cloned() else {
            return;
        };
        let shown = parts.join(".");
        self.out.functions.insert(shown.clone());
        if !self.cx.restricted {
            return;
        }
        if parts.len() > 2 {
            self.unsupported("function name with too many parts");
            return;
        }
        let schema = (parts.len() == 2).then(|| {
            let s = parts[0].clone();
            if s == "pg_temp" {
                self.cx.path.temp.clone().unwrap_or(s)
            } else {
                s
            }
        });
        if schema.as_deref().is_none_or(functions::is_system_schema) {
            if let Some(d) = functions::builtin_danger(&fname, argc) {
                self.deny(
                    DenyReason::Function,
                    "42501",
                    format!("permission denied for function {fname}: {}", d.describe()),
                );
                return;
            }
        }
        let user_schemas = self.cx.catalog.user_function_schemas(&fname);
        let candidates: Vec<String> = match &schema {
            Some(s) if functions::is_system_schema(s) => Vec::new(),
            // A qualified non-system name is a user function even if the catalog does
            // not list it (fail closed).
            Some(s) => vec![s.clone()],
            // Any schema, not only those on the path as analysed: the server's path may
            // differ (fail closed).
            None => user_schemas,
        };
        for s in candidates {
            let full = format!("{s}.{fname}");
            if !self.cx.role.functions.iter().any(|p| p.matches(&full)) {
                self.deny(
                    DenyReason::Function,
                    "42501",
                    format!(
                        "permission denied for function {full}: role \"{}\" may not call non-built-in functions it does not list",
                        self.cx.role.name
                    ),
                );
                return;
            }
        }
    }

    // ----- DML --------------------------------------------------------------------------

    /// Resolves a DML target (never a CTE) and adds it to the current scope.
    fn dml_target(&mut self, tf_name: &ObjectName, alias: Option<&Ident>) -> Option<FromItem<'a>> {
        self.names.insert(ptr(tf_name));
        match self.resolve(tf_name, false) {
            Resolved::Rel(rel) => {
                if rel.system {
                    self.deny(
                        DenyReason::SystemRelation,
                        "42501",
                        format!("permission denied for relation \"{}\"", rel.qualified()),
                    );
                }
                self.qualify(tf_name, &rel);
                let item = FromItem {
                    alias: alias.map(fold).unwrap_or_else(|| rel.name.clone()),
                    rel: Some(rel),
                    target: true,
                    implicit_alias: false,
                };
                self.push_item(item.clone());
                Some(item)
            }
            _ => None,
        }
    }

    /// Conservative guard for predicates/SET values of data-modifying statements: any
    /// identifier naming a protected target column, or the target row as a whole, refuses.
    fn guard_target<N: Visit + ?Sized>(&mut self, target: &FromItem<'a>, node: &N) {
        let Some(rel) = &target.rel else {
            return;
        };
        if !rel.protected {
            return;
        }
        let mut g = TargetGuard {
            rel,
            alias: &target.alias,
            qualifiers: PtrSet::default(),
            hit: None,
        };
        let _ = node.visit(&mut g);
        if let Some(col) = g.hit {
            let msg = match col {
                Some(c) => format!(
                    "permission denied for column \"{c}\" of relation \"{}\": this role sees it masked or denied, so a data-modifying statement may not read it",
                    rel.name
                ),
                None => format!(
                    "permission denied for relation \"{}\": a data-modifying statement may not read its protected columns through a whole-row reference",
                    rel.name
                ),
            };
            self.deny_hint(
                DenyReason::DmlPredicate,
                msg,
                "filter and compute on unmasked columns only",
            );
        }
    }

    /// Does the role see `column` of `schema.table` other than raw? (Whether it may touch
    /// the relation is not asked: PostgreSQL checks a foreign key without the writer's
    /// rights on the other table, and a key that is not a tagged column tells no more
    /// than that a row with that key exists.)
    fn hidden_elsewhere(&self, schema: &str, table: &str, column: &str) -> bool {
        self.visibility(schema, table, column).0 != ColVis::Raw
    }

    /// Refuses a write that a constraint of the target (or, for a view, of the tables
    /// behind it) checks against values the role may not read raw: whether it succeeds
    /// would tell them (see [`crate::write_guard`]).
    fn guard_write(&mut self, target: &FromItem<'a>, op: Op, written: Written<'_>) {
        if !self.cx.restricted || self.out.denial.is_some() {
            return;
        }
        let Some(info) = target.rel.clone() else {
            return;
        };
        let catalog: &'a dyn Catalog = self.cx.catalog;
        let Some(rel) = catalog.relation(&info.schema, &info.name) else {
            return;
        };
        let found = if rel.is_view() {
            self.view_write_oracle(rel, &info, op)
        } else {
            let mut hidden = |other: Option<&OtherEnd>, col: &str| match other {
                None => info.col(col).is_none_or(|c| c.vis != ColVis::Raw),
                Some(o) => self.hidden_elsewhere(&o.schema, &o.table, col),
            };
            write_guard::oracle(&rel.constraints, op, written, &mut hidden)
                .map(|(c, col)| (format!("\"{}.{}\"", info.schema, info.name), c, col))
        };
        let Some((table, constraint, column)) = found else {
            return;
        };
        let on = match &constraint.other {
            Some(o) if o.columns.iter().any(|c| c == column) => {
                format!("column \"{column}\" of \"{}.{}\"", o.schema, o.table)
            }
            _ => format!("column \"{column}\" of {table}"),
        };
        let what = match op {
            Op::Delete => format!("delete from relation \"{}\"", info.name),
            Op::Insert | Op::Update => format!("write relation \"{}\"", info.name),
        };
        self.deny_hint(
            DenyReason::WriteOracle,
            format!(
                "permission denied to {what}: {} checks the written row against {on}, which this role may not read raw, so whether the statement succeeds would reveal stored values",
                write_guard::describe(constraint)
            ),
            "a role that sees these columns raw can make this change",
        );
    }

    /// [`Self::guard_write`] through a view: every constraint of the tables the view
    /// reads (through nested views too) that the operation can reach counts, with the
    /// view's own hidden columns hidden in the tables as well.
    fn view_write_oracle(
        &self,
        view: &'a Relation,
        info: &RelInfo<'a>,
        op: Op,
    ) -> Option<(String, &'a crate::catalog::Constraint, &'a str)> {
        let catalog: &'a dyn Catalog = self.cx.catalog;
        let mut pending: Vec<&'a Relation> = vec![view];
        let mut seen: HashSet<(&'a str, &'a str)> = HashSet::new();
        while let Some(v) = pending.pop() {
            for dep in &v.depends_on {
                if !seen.insert((dep.schema.as_str(), dep.table.as_str())) {
                    continue;
                }
                let Some(base) = catalog.relation(&dep.schema, &dep.table) else {
                    continue;
                };
                if base.is_view() {
                    pending.push(base);
                    continue;
                }
                let mut hidden = |other: Option<&OtherEnd>, col: &str| match other {
                    None => {
                        self.hidden_elsewhere(&base.schema, &base.name, col)
                            || info.col(col).is_some_and(|c| c.vis != ColVis::Raw)
                    }
                    Some(o) => self.hidden_elsewhere(&o.schema, &o.table, col),
                };
                if let Some((c, col)) =
                    write_guard::oracle(&base.constraints, op, Written::Unknown, &mut hidden)
                {
                    return Some((format!("\"{}.{}\"", base.schema, base.name), c, col));
                }
            }
        }
        None
    }

    fn walk_insert(&mut self, ins: &ast::Insert) {
        if ins.or.is_some()
            || ins.ignore
            || ins.overwrite
            || ins.partitioned.is_some()
            || !ins.after_columns.is_empty()
            || ins.insert_alias.is_some()
            || ins.settings.is_some()
            || ins.format_clause.is_some()
            || ins.multi_table_insert_type.is_some()
            || !ins.multi_table_into_clauses.is_empty()
            || !ins.multi_table_when_clauses.is_empty()
            || ins.multi_table_else_clause.is_some()
            || ins.replace_into
            || ins.priority.is_some()
            || ins.output.is_some()
            || !ins.assignments.is_empty()
        {
            self.unsupported("non-PostgreSQL INSERT clause");
        }
        let TableObject::TableName(name) = &ins.table else {
            self.unsupported("INSERT into a function or query");
            return;
        };
        if let Some(src) = &ins.source {
            // The source query does not see the target.
            self.scopes.push(Scope::default());
            self.walk_query(src);
            self.scopes.pop();
        }
        self.scopes.push(Scope::default());
        let target = self.dml_target(name, ins.table_alias.as_ref().map(|a| &a.alias));
        for c in &ins.columns {
            self.names.insert(ptr(c));
        }
        if let Some(target) = target {
            let columns: Vec<String> = ins.columns.iter().map(object_column).collect();
            let written = match (&ins.source, columns.is_empty()) {
                (None, _) => Written::Columns(&[]),
                (Some(_), true) => Written::All,
                (Some(_), false) => Written::Columns(&columns),
            };
            self.guard_write(&target, Op::Insert, written);
            match &ins.on {
                Some(OnInsert::OnConflict(oc)) => {
                    self.push_item(FromItem {
                        alias: "excluded".into(),
                        rel: None,
                        target: false,
                        implicit_alias: false,
                    });
                    if let Some(ast::ConflictTarget::Columns {
                        predicate: Some(p), ..
                    }) = &oc.conflict_target
                    {
                        self.exprs(p);
                    }
                    if let OnConflictAction::DoUpdate(du) = &oc.action {
                        let set = assigned(du.assignments.iter().map(|a| &a.target));
                        self.guard_write(&target, Op::Update, Written::Columns(&set));
                        for a in &du.assignments {
                            self.exprs(&a.value);
                            self.guard_target(&target, &a.value);
                        }
                        if let Some(s) = &du.selection {
                            self.exprs(s);
                            self.guard_target(&target, s);
                        }
                    }
                }
                Some(OnInsert::DuplicateKeyUpdate(_)) | Some(_) => {
                    self.unsupported("non-PostgreSQL ON conflict clause")
                }
                None => {}
            }
            if let Some(ret) = &ins.returning {
                self.returning(&target, ret);
            }
        }
        self.scopes.pop();
    }

    fn single_target<'t>(
        &mut self,
        twj: &'t TableWithJoins,
    ) -> Option<(&'t ObjectName, Option<&'t Ident>)> {
        self.factors.insert(ptr(&twj.relation));
        if !twj.joins.is_empty() {
            self.unsupported("joined data-modifying target");
            return None;
        }
        match &twj.relation {
            TableFactor::Table {
                name,
                alias,
                args: None,
                sample: None,
                inheritance,
                ..
            } => {
                if matches!(inheritance, Some(ast::TableInheritance::IncludeDescendants))
                    || inheritance.is_some()
                {
                    // ONLY / * only change which rows are touched; the guard still applies.
                }
                if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
                    self.unsupported("column aliases on a data-modifying target");
                }
                Some((name, alias.as_ref().map(|a| &a.name)))
            }
            _ => {
                self.unsupported("data-modifying target that is not a table");
                None
            }
        }
    }

    fn walk_update(&mut self, upd: &ast::Update) {
        if upd.on_cluster.is_some()
            || upd.or.is_some()
            || !upd.order_by.is_empty()
            || upd.limit.is_some()
            || upd.settings.is_some()
            || upd.output.is_some()
            || !upd.optimizer_hints.is_empty()
        {
            self.unsupported("non-PostgreSQL UPDATE clause");
        }
        self.scopes.push(Scope::default());
        let Some((name, alias)) = self.single_target(&upd.table) else {
            self.scopes.pop();
            return;
        };
        let target = self.dml_target(name, alias);
        if let Some(from) = &upd.from {
            let tables = match from {
                ast::UpdateTableFromKind::BeforeSet(t) | ast::UpdateTableFromKind::AfterSet(t) => t,
            };
            for t in tables {
                self.walk_table_with_joins(t);
                if let Some(target) = &target {
                    for j in &t.joins {
                        self.guard_target(target, &j.join_operator);
                    }
                }
            }
        }
        if let Some(t) = &target {
            let set = assigned(upd.assignments.iter().map(|a| &a.target));
            self.guard_write(t, Op::Update, Written::Columns(&set));
        }
        for a in &upd.assignments {
            self.assignment_target(&a.target);
            self.exprs(&a.value);
            if let Some(t) = &target {
                self.guard_target(t, &a.value);
            }
        }
        if let Some(w) = &upd.selection {
            self.exprs(w);
            if let Some(t) = &target {
                self.guard_target(t, w);
            }
        }
        if let (Some(t), Some(ret)) = (&target, &upd.returning) {
            self.returning(t, ret);
        }
        self.scopes.pop();
    }

    fn assignment_target(&mut self, t: &ast::AssignmentTarget) {
        match t {
            ast::AssignmentTarget::ColumnName(n) => {
                self.names.insert(ptr(n));
            }
            ast::AssignmentTarget::Tuple(ns) => {
                for n in ns {
                    self.names.insert(ptr(n));
                }
            }
        }
    }

    fn walk_delete(&mut self, del: &ast::Delete) {
        if !del.tables.is_empty()
            || del.on_cluster.is_some()
            || !del.order_by.is_empty()
            || del.limit.is_some()
            || del.settings.is_some()
            || del.output.is_some()
            || !del.optimizer_hints.is_empty()
        {
            self.unsupported("non-PostgreSQL DELETE clause");
        }
        let tables = match &del.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        let [twj] = tables.as_slice() else {
            self.unsupported("DELETE from several tables");
            return;
        };
        self.scopes.push(Scope::default());
        let Some((name, alias)) = self.single_target(twj) else {
            self.scopes.pop();
            return;
        };
        let target = self.dml_target(name, alias);
        if let Some(t) = &target {
            self.guard_write(t, Op::Delete, Written::All);
        }
        if let Some(using) = &del.using {
            for t in using {
                self.walk_table_with_joins(t);
                if let Some(target) = &target {
                    for j in &t.joins {
                        self.guard_target(target, &j.join_operator);
                    }
                }
            }
        }
        if let Some(w) = &del.selection {
            self.exprs(w);
            if let Some(t) = &target {
                self.guard_target(t, w);
            }
        }
        if let (Some(t), Some(ret)) = (&target, &del.returning) {
            self.returning(t, ret);
        }
        self.scopes.pop();
    }

    fn walk_merge(&mut self, m: &ast::Merge) {
        if m.output.is_some() || !m.optimizer_hints.is_empty() {
            self.unsupported("non-PostgreSQL MERGE clause");
        }
        self.factors.insert(ptr(&m.table));
        let (name, alias) = match &m.table {
            TableFactor::Table {
                name,
                alias,
                args: None,
                sample: None,
                ..
            } => (name, alias.as_ref().map(|a| &a.name)),
            _ => {
                self.unsupported("MERGE target that is not a table");
                return;
            }
        };
        self.scopes.push(Scope::default());
        self.walk_factor(&m.source);
        let target = self.dml_target(name, alias);
        self.exprs(m.on.as_ref());
        if let Some(t) = &target {
            self.guard_target(t, m.on.as_ref());
        }
        for c in &m.clauses {
            if let Some(p) = &c.predicate {
                self.exprs(p);
                if let Some(t) = &target {
                    self.guard_target(t, p);
                }
            }
            match &c.action {
                ast::MergeAction::Update(u) => {
                    self.require(StatementKind::Update);
                    if u.update_predicate.is_some() || u.delete_predicate.is_some() {
                        self.unsupported("non-PostgreSQL MERGE UPDATE clause");
                    }
                    let ast::MergeUpdateKind::Set(assignments) = &u.kind else {
                        self.unsupported("UPDATE SET *");
                        continue;
                    };
                    if let Some(t) = &target {
                        let set = assigned(assignments.iter().map(|a| &a.target));
                        self.guard_write(t, Op::Update, Written::Columns(&set));
                    }
                    for a in assignments {
                        self.assignment_target(&a.target);
                        self.exprs(&a.value);
                        if let Some(t) = &target {
                            self.guard_target(t, &a.value);
                        }
                    }
                }
                ast::MergeAction::Insert(i) => {
                    self.require(StatementKind::Insert);
                    for c in &i.columns {
                        self.names.insert(ptr(c));
                    }
                    if let Some(t) = &target {
                        let columns: Vec<String> = i.columns.iter().map(object_column).collect();
                        let written = match (&i.kind, columns.is_empty()) {
                            (ast::MergeInsertKind::Row, _) | (_, true) => Written::All,
                            _ => Written::Columns(&columns),
                        };
                        self.guard_write(t, Op::Insert, written);
                    }
                    if i.insert_predicate.is_some() {
                        self.unsupported("non-PostgreSQL MERGE INSERT clause");
                    }
                    if let ast::MergeInsertKind::Values(v) = &i.kind {
                        for row in &v.rows {
                            self.exprs(row);
                        }
                    }
                }
                ast::MergeAction::Delete { .. } => {
                    self.require(StatementKind::Delete);
                    if let Some(t) = &target {
                        self.guard_write(t, Op::Delete, Written::All);
                    }
                }
                ast::MergeAction::DoNothing { .. } => {}
            }
        }
        self.scopes.pop();
    }

    /// RETURNING of a data-modifying statement: protected target columns are replaced by
    /// their masked expressions in place; `*` and `t.*` are expanded.
    fn returning(&mut self, target: &FromItem<'a>, items: &[SelectItem]) {
        let Some(rel) = target.rel.clone() else {
            return;
        };
        // Other FROM items of UPDATE … FROM / DELETE … USING (already rewritten).
        let others: Vec<String> = self
            .scopes
            .last()
            .map(|s| {
                s.items
                    .iter()
                    .filter(|i| !i.target && i.alias != "excluded")
                    .map(|i| i.alias.clone())
                    .collect()
            })
            .unwrap_or_default();
        if others.iter().any(String::is_empty) {
            self.unsupported("RETURNING with an unaliased FROM item");
            return;
        }
        // RETURNING reads the row the statement produced: masked in place, not refused.
        if let Some(top) = self.scopes.last_mut() {
            for it in &mut top.items {
                it.target = false;
            }
        }
        for item in items {
            match item {
                SelectItem::Wildcard(opts) => {
                    self.wildcard_opts(opts);
                    let reader = FromItem {
                        target: false,
                        ..target.clone()
                    };
                    self.whole_row_returning(&reader, &rel);
                    if rel.protected {
                        let Some((s, e)) = self.token_span(&opts.wildcard_token) else {
                            self.unsupported("could not locate RETURNING *");
                            continue;
                        };
                        let mut list = rewrite::returning_list(&rel, &target.alias, self.cx.key);
                        for o in &others {
                            list.push_str(", ");
                            list.push_str(&quote_ident(o));
                            list.push_str(".*");
                        }
                        self.note_key(&rel);
                        self.push_mask_edit(Edit {
                            start: s,
                            end: e,
                            text: list,
                        });
                    }
                }
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    opts,
                ) => {
                    self.wildcard_opts(opts);
                    let is_target = last_ident(n).is_some_and(|id| fold(id) == target.alias);
                    if !is_target {
                        self.star(Some(n));
                        continue;
                    }
                    let reader = FromItem {
                        target: false,
                        ..target.clone()
                    };
                    self.whole_row_returning(&reader, &rel);
                    if rel.protected {
                        let start =
                            n.0.first()
                                .and_then(|p| p.as_ident())
                                .and_then(|i| self.cx.lines.offset(i.span.start));
                        let end = self.token_span(&opts.wildcard_token).map(|(_, e)| e);
                        match (start, end) {
                            (Some(s), Some(e)) if s < e => {
                                let list =
                                    rewrite::returning_list(&rel, &target.alias, self.cx.key);
                                self.note_key(&rel);
                                self.push_mask_edit(Edit {
                                    start: s,
                                    end: e,
                                    text: list,
                                });
                            }
                            _ => self.unsupported("could not locate RETURNING t.*"),
                        }
                    }
                }
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(e), _) => {
                    self.exprs(e);
                    self.guard_target(target, e);
                }
                SelectItem::UnnamedExpr(e) => self.returning_expr(target, &rel, e, true),
                SelectItem::ExprWithAlias { expr, .. } => {
                    self.returning_expr(target, &rel, expr, false)
                }
                SelectItem::ExprWithAliases { expr, .. } => {
                    self.returning_expr(target, &rel, expr, false)
                }
            }
        }
    }

    fn note_key(&mut self, rel: &RelInfo<'a>) {
        if rel
            .cols
            .iter()
            .any(|c| matches!(&c.vis, ColVis::Mask(m) if mask::embeds_key(m)))
        {
            self.out.uses_key = true;
        }
    }

    fn whole_row_returning(&mut self, reader: &FromItem<'a>, rel: &RelInfo<'a>) {
        let names: Vec<&'a str> = rel.cols.iter().map(|c| c.name).collect();
        for n in names {
            self.read_column(reader, n);
        }
    }

    fn token_span(
        &self,
        tok: &ast::helpers::attached_token::AttachedToken,
    ) -> Option<(usize, usize)> {
        let s = self.cx.lines.offset(tok.0.span.start)?;
        let e = self.cx.lines.offset(tok.0.span.end)?;
        (s < e).then_some((s, e))
    }

    fn returning_expr(
        &mut self,
        target: &FromItem<'a>,
        rel: &Rc<RelInfo<'a>>,
        e: &Expr,
        top: bool,
    ) {
        // Subqueries and other FROM items are walked normally; bare references to the
        // target's protected columns are masked in place.
        let reader = FromItem {
            target: false,
            ..target.clone()
        };
        // Whole-row references and protected columns inside nested queries are refused.
        let mut nested = NestedTargetRefs {
            rel,
            alias: &target.alias,
            depth: 0,
            hit: false,
        };
        let _ = e.visit(&mut nested);
        if nested.hit {
            self.deny_hint(
                DenyReason::DmlPredicate,
                format!(
                    "RETURNING may not read protected columns of \"{}\" inside subqueries or as a whole row",
                    rel.name
                ),
                "return the columns directly",
            );
            return;
        }
        let mut refs = ReturningRefs {
            rel,
            alias: &target.alias,
            depth: 0,
            found: Vec::new(),
        };
        let _ = e.visit(&mut refs);
        let found = refs.found;
        // Walk subqueries (and record reads) without the target in scope as a target.
        self.scopes.push(Scope {
            items: vec![reader.clone()],
            ..Scope::default()
        });
        self.exprs(e);
        self.scopes.pop();
        for (start_loc, end_loc, col) in found {
            let Some(c) = rel.col(&col) else { continue };
            if c.vis == ColVis::Raw {
                continue;
            }
            if c.vis == ColVis::Deny {
                continue; // already refused by read_column
            }
            let (Some(s), Some(en)) = (
                self.cx.lines.offset(start_loc),
                self.cx.lines.offset(end_loc),
            ) else {
                self.unsupported("could not locate a RETURNING column");
                return;
            };
            let col_sql = format!("{}.{}", quote_ident(&target.alias), quote_ident(c.name));
            let mut text = format!("({})", rewrite::column_expr(c, &col_sql, self.cx.key));
            let whole_item = top && matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
            if whole_item {
                text.push_str(" AS ");
                text.push_str(&quote_ident(c.name));
            }
            self.note_key(rel);
            self.push_mask_edit(Edit {
                start: s,
                end: en,
                text,
            });
        }
    }

    // ----- COPY -------------------------------------------------------------------------

    fn walk_copy(&mut self, source: &CopySource, to: bool, target: &CopyTarget) {
        self.set_kind(if to {
            StatementKind::CopyTo
        } else {
            StatementKind::CopyFrom
        });
        if matches!(target, CopyTarget::File { .. } | CopyTarget::Program { .. }) {
            self.deny(
                DenyReason::CopyFile,
                "42501",
                "COPY to or from a server file or program is not allowed for this role".into(),
            );
        }
        match source {
            CopySource::Query(q) => {
                if !to {
                    self.unsupported("COPY (query) FROM");
                }
                self.walk_query(q);
            }
            CopySource::Table {
                table_name,
                columns,
            } => {
                self.names.insert(ptr(table_name));
                if !to {
                    let catalog: &'a dyn Catalog = self.cx.catalog;
                    let found = self.touch_named(table_name).and_then(|(schema, name)| {
                        Some((catalog.relation(&schema, &name)?, schema))
                    });
                    if let Some((rel, schema)) = found {
                        let item = FromItem {
                            alias: rel.name.clone(),
                            rel: Some(self.rel_info(&schema, rel)),
                            target: true,
                            implicit_alias: true,
                        };
                        let columns: Vec<String> = columns.iter().map(fold).collect();
                        let written = if columns.is_empty() {
                            Written::All
                        } else {
                            Written::Columns(&columns)
                        };
                        self.guard_write(&item, Op::Insert, written);
                    }
                    return;
                }
                let Resolved::Rel(rel) = self.resolve(table_name, false) else {
                    return;
                };
                let item = FromItem {
                    alias: rel.name.clone(),
                    rel: Some(rel.clone()),
                    target: false,
                    implicit_alias: true,
                };
                if columns.is_empty() {
                    self.whole_row(&item);
                } else {
                    for c in columns {
                        self.read_column(&item, &fold(c));
                    }
                }
                if !rel.protected {
                    self.qualify(table_name, &rel);
                    return;
                }
                let Some((start, name_end)) = self.span_of_name(table_name) else {
                    self.unsupported("could not locate the COPY relation");
                    return;
                };
                let end = match columns.last() {
                    None => Some(name_end),
                    Some(last) => self
                        .cx
                        .lines
                        .offset(last.span.end)
                        .and_then(|e| rewrite::after_close_paren(self.cx.text, e)),
                };
                let Some(end) = end else {
                    self.unsupported("could not locate the COPY column list");
                    return;
                };
                let cols = if columns.is_empty() {
                    "*".to_string()
                } else {
                    columns
                        .iter()
                        .map(|c| quote_ident(&fold(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let sql = format!(
                    "(SELECT {cols} FROM {} AS {})",
                    rewrite::derived_table(&rel, self.cx.key, |_| true, &Source::default()),
                    quote_ident(&rel.name)
                );
                self.note_key(&rel);
                self.push_mask_edit(Edit {
                    start,
                    end,
                    text: sql,
                });
            }
        }
    }
}

/// The columns SET assigns (`SET a = …, (b, c) = …`; `SET a.f = …` assigns `a`).
fn assigned<'t>(targets: impl Iterator<Item = &'t ast::AssignmentTarget>) -> Vec<String> {
    let mut out = Vec::new();
    for t in targets {
        match t {
            ast::AssignmentTarget::ColumnName(n) => out.push(object_column(n)),
            ast::AssignmentTarget::Tuple(ns) => out.extend(ns.iter().map(object_column)),
        }
    }
    out
}

/// The column an assignment or MERGE INSERT list names: its first part, folded.
fn object_column(n: &ObjectName) -> String {
    match n.0.first() {
        Some(ObjectNamePart::Identifier(id)) => fold(id),
        _ => String::new(),
    }
}

/// The constraint of a join, for the join kinds that have one.
/// A relation with the role's view of each column, owned (outlives the walk).
fn output_target(rel: &RelInfo<'_>) -> crate::output::Target {
    use crate::output::{TargetCol, TargetVis};
    crate::output::Target {
        name: rel.name.clone(),
        cols: rel
            .cols
            .iter()
            .map(|c| TargetCol {
                name: c.name.to_string(),
                type_name: c.type_name.to_string(),
                vis: match &c.vis {
                    ColVis::Raw => TargetVis::Raw,
                    ColVis::Mask(m) => TargetVis::Mask((*m).clone()),
                    ColVis::Deny => TargetVis::Deny,
                },
            })
            .collect(),
    }
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    use JoinOperator as J;
    match op {
        J::Join(c)
        | J::Inner(c)
        | J::Left(c)
        | J::LeftOuter(c)
        | J::Right(c)
        | J::RightOuter(c)
        | J::FullOuter(c)
        | J::CrossJoin(c)
        | J::Semi(c)
        | J::LeftSemi(c)
        | J::RightSemi(c)
        | J::Anti(c)
        | J::LeftAnti(c)
        | J::RightAnti(c)
        | J::StraightJoin(c) => Some(c),
        _ => None,
    }
}

fn is_false_literal(e: &Expr) -> bool {
    match setting_value(e) {
        Some(v) => matches!(
            v.to_ascii_lowercase().as_str(),
            "false" | "off" | "0" | "no"
        ),
        None => false,
    }
}

fn is_utf8_name(v: &str) -> bool {
    let n: String = v
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    n == "utf8" || n == "unicode" || n == "default"
}

/// A GUC name (`a.b`), case-folded like PostgreSQL does for setting names.
fn guc_name(n: &ObjectName) -> String {
    n.0.iter()
        .filter_map(|p| p.as_ident())
        .map(|i| i.value.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

/// The text of a SET value: identifier, string, number or boolean.
fn setting_value(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(id.value.clone()),
        Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s)
            | ast::Value::EscapedStringLiteral(s)
            | ast::Value::DollarQuotedString(ast::DollarQuotedString { value: s, .. }) => {
                Some(s.clone())
            }
            ast::Value::Number(n, _) => Some(n.to_string()),
            ast::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn last_ident(n: &ObjectName) -> Option<&Ident> {
    n.0.last().and_then(|p| p.as_ident())
}

pub(crate) fn arg_count(args: &FunctionArguments) -> usize {
    match args {
        FunctionArguments::List(l) => l.args.len(),
        FunctionArguments::Subquery(_) => 1,
        FunctionArguments::None => 0,
    }
}

/// Visits expressions at the current query level; nested queries are handed to the
/// walker as they are met (while the AST reference is alive).
struct ExprPass<'w, 'a> {
    w: &'w mut Walker<'a>,
    depth: usize,
}

impl Visitor for ExprPass<'_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if self.depth == 0 {
            self.w.walk_query(q);
        }
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if self.depth == 0 {
            self.w.on_expr(e);
            if let Expr::Function(f) = e {
                self.w.check_function(&f.name, arg_count(&f.args));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if self.depth == 0 && !self.w.factors.contains(&ptr(tf)) {
            self.w.unsupported("FROM item inside an expression");
        }
        ControlFlow::Continue(())
    }
}

/// After the walk: every query, FROM item and relation name must have been handled.
struct CrossCheck<'w, 'a> {
    w: &'w mut Walker<'a>,
    problem: Option<String>,
}

impl CrossCheck<'_, '_> {
    fn flag(&mut self, what: &str) {
        if self.problem.is_none() {
            self.problem = Some(what.to_string());
        }
    }
}

impl Visitor for CrossCheck<'_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if !self.w.queries.contains(&ptr(q)) {
            self.flag("a subquery in an unsupported position");
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if !self.w.factors.contains(&ptr(tf)) {
            self.flag("a FROM item in an unsupported position");
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, n: &ObjectName) -> ControlFlow<()> {
        if !self.w.names_are_objects && !self.w.names.contains(&ptr(n)) {
            self.flag("a relation name in an unsupported position");
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        // Function checks are scope-free: run them on every call in the statement, even
        // ones the walker never reached.
        match e {
            Expr::Function(f) => self.w.check_function(&f.name, arg_count(&f.args)),
            // Field selection is also function call syntax: PostgreSQL reads `(x).f` as
            // `f(x)` when `x` has no field `f` (any type, `('…'::text).ts_stat` too),
            // and `t.f` as `f(t)` when `t` has no column `f`.
            Expr::CompoundFieldAccess { access_chain, .. } => {
                for a in access_chain {
                    match a {
                        AccessExpr::Dot(Expr::Identifier(id)) => {
                            self.w.check_field_function(id, false)
                        }
                        AccessExpr::Dot(Expr::CompoundIdentifier(ids)) => {
                            for id in ids {
                                self.w.check_field_function(id, false);
                            }
                        }
                        _ => {}
                    }
                }
            }
            // Every part after the first may be a call (`t.f`, `s.t.f`); the walker checks
            // a name its FROM item lacks in full (`column_ref`).
            Expr::CompoundIdentifier(ids) => {
                for id in ids.iter().skip(1) {
                    self.w.check_field_function(id, true);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// PostgreSQL's system columns, which no relation lists among its columns.
fn is_system_column(name: &str) -> bool {
    matches!(
        name,
        "ctid" | "xmin" | "xmax" | "cmin" | "cmax" | "tableoid" | "oid"
    )
}

/// `rel.f` names no column of `rel` (nor a system column), so PostgreSQL calls `f(rel)`.
fn names_row_function(rel: &RelInfo<'_>, f: &Ident) -> bool {
    let n = fold(f);
    rel.col(&n).is_none() && !is_system_column(&n)
}

/// Finds identifiers that read protected columns of a DML target (any depth).
struct TargetGuard<'r> {
    rel: &'r RelInfo<'r>,
    alias: &'r str,
    qualifiers: PtrSet,
    /// `Some(Some(col))` column read, `Some(None)` whole-row read.
    hit: Option<Option<String>>,
}

impl Visitor for TargetGuard<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::CompoundIdentifier(parts) = e {
            for p in &parts[..parts.len().saturating_sub(1)] {
                self.qualifiers.insert(ptr(p));
            }
            // `other.col`: the column belongs to another FROM item (or EXCLUDED).
            if let [.., q, c] = parts.as_slice() {
                if fold(q) != self.alias {
                    self.qualifiers.insert(ptr(c));
                } else if names_row_function(self.rel, c) {
                    // `target.f` without a column `f`: the call `f(target)`.
                    self.hit = Some(None);
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_ident(&mut self, id: &Ident) -> ControlFlow<()> {
        if self.qualifiers.contains(&ptr(id)) {
            return ControlFlow::Continue(());
        }
        let name = fold(id);
        if self.rel.col(&name).is_some_and(|c| c.vis != ColVis::Raw) {
            self.hit = Some(Some(name));
            return ControlFlow::Break(());
        }
        if name == self.alias {
            self.hit = Some(None);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// In RETURNING: protected target columns or the target row referenced from inside
/// nested queries, or the target row as a whole at the top level.
struct NestedTargetRefs<'r> {
    rel: &'r RelInfo<'r>,
    alias: &'r str,
    depth: usize,
    hit: bool,
}

impl Visitor for NestedTargetRefs<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if !self.rel.protected {
            return ControlFlow::Continue(());
        }
        let hit = match e {
            Expr::Identifier(id) => {
                let n = fold(id);
                (self.depth > 0 && self.rel.col(&n).is_some_and(|c| c.vis != ColVis::Raw))
                    || (n == self.alias && self.rel.col(&n).is_none())
            }
            Expr::CompoundIdentifier(parts) => {
                (self.depth > 0
                    && parts.last().is_some_and(|c| {
                        self.rel.col(&fold(c)).is_some_and(|c| c.vis != ColVis::Raw)
                    }))
                    // `target.f` without a column `f`: the call `f(target)`, whole row.
                    || matches!(parts.as_slice(), [.., q, c]
                        if fold(q) == self.alias && names_row_function(self.rel, c))
            }
            Expr::QualifiedWildcard(n, _) => last_ident(n).is_some_and(|i| fold(i) == self.alias),
            Expr::Function(f) => match &f.args {
                FunctionArguments::List(l) => l.args.iter().any(|a| {
                    matches!(a, FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(n))
                        | FunctionArg::Named { arg: FunctionArgExpr::QualifiedWildcard(n), .. }
                        if last_ident(n).is_some_and(|i| fold(i) == self.alias))
                }),
                _ => false,
            },
            _ => false,
        };
        if hit {
            self.hit = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Top-level references to protected target columns in a RETURNING expression.
struct ReturningRefs<'r> {
    rel: &'r RelInfo<'r>,
    alias: &'r str,
    depth: usize,
    found: Vec<(
        sqlparser::tokenizer::Location,
        sqlparser::tokenizer::Location,
        String,
    )>,
}

impl Visitor for ReturningRefs<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if self.depth > 0 {
            return ControlFlow::Continue(());
        }
        match e {
            Expr::Identifier(id) => {
                let n = fold(id);
                if self.rel.col(&n).is_some() {
                    self.found.push((id.span.start, id.span.end, n));
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let q = fold(&parts[parts.len() - 2]);
                let c = fold(&parts[parts.len() - 1]);
                if q == self.alias && self.rel.col(&c).is_some() {
                    let span = parts[0].span.union(&parts[parts.len() - 1].span);
                    self.found.push((span.start, span.end, c));
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
