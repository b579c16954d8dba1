//! One session's enforcer: its role, purpose, search_path and temp schema, and the
//! decision for every statement it sends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pgveil_policy::catalog::{Catalog, StaticCatalog};
use pgveil_policy::decide::{
    self, Denial, DenyReason, Outcome, SessionEffect, SessionFacts, Verdict as PolicyVerdict,
};
use pgveil_policy::model::Role;

use super::cache::context_hash;
use super::{ActivePolicy, Enforcement};
use crate::hook::{Completion, Preparation, SessionHook, SessionInfo, StatementTag, Verdict};
use crate::wire::messages::error::ProxyError;

/// Reads the session facts the proxy cannot see in the protocol.
const PROBE_SQL: &str = "SELECT pg_catalog.current_setting('search_path'), \
     CASE WHEN pg_catalog.pg_my_temp_schema() = 0 THEN NULL \
     ELSE pg_catalog.pg_my_temp_schema()::pg_catalog.regnamespace::text END";

/// A statement prepared through the extended protocol.
struct Prepared {
    sql: String,
    generation: u64,
    verdict: PolicyVerdict,
}

/// What the enforcer remembers about a statement until it completes.
pub struct Pending {
    pub kind: &'static str,
    pub decision: &'static str,
    pub normalized: String,
    pub started: Instant,
}

/// Per-session policy enforcement.
pub struct Enforcer {
    shared: Arc<Enforcement>,
    user: String,
    database: String,
    active: Arc<ActivePolicy>,
    role: Option<String>,
    restricted: bool,
    purpose: Option<String>,
    search_path: Vec<String>,
    temp_schema: Option<String>,
    /// Context hash of the decision cache key, recomputed when an input changes.
    context: Option<(u64, u64)>,
    /// Read search_path / temp schema before the next statement.
    wants_probe: bool,
    /// A catalog reload is needed (DDL ran, or a relation was unknown).
    refresh_since: Option<Instant>,
    /// Transaction status of the last ReadyForQuery (I, T or E).
    tx_status: u8,
    /// search_path or the catalog changed inside the open transaction: a ROLLBACK (to a
    /// savepoint or of the whole transaction) undoes it on the server, so re-read it.
    changed_in_tx: bool,
    /// The text whose decision already waited for a catalog refresh.
    retried: Option<u64>,
    encoding_ok: bool,
    standard_strings: bool,
    prepared: HashMap<String, Prepared>,
    portals: HashMap<String, String>,
}

fn purpose_from_startup(params: &[(String, String)]) -> Option<String> {
    if let Some((_, v)) = params.iter().find(|(k, _)| k == "pgveil.purpose") {
        return Some(v.clone()).filter(|v| !v.is_empty());
    }
    let options = params.iter().find(|(k, _)| k == "options")?.1.as_str();
    let mut words = options.split_whitespace();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next()?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest
        } else if let Some(rest) = w.strip_prefix("--") {
            rest
        } else {
            continue;
        };
        if let Some(v) = setting.strip_prefix("pgveil.purpose=") {
            return Some(v.to_owned()).filter(|v| !v.is_empty());
        }
    }
    None
}

/// Split a `search_path` setting ("\"$user\", public") into its entries as written.
pub fn split_search_path(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in value.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ',' if !quoted => {
                out.push(cur.trim().to_owned());
                cur.clear();
            }
            _ => cur.push(ch),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out.retain(|s| !s.is_empty());
    out
}

fn denial_error(d: &Denial, active: &ActivePolicy, role: Option<&str>) -> ProxyError {
    let hint = d.hint.clone().unwrap_or_else(|| match role {
        Some(r) => format!("refused by role \"{r}\" of policy {}", active.file),
        None => format!("refused by policy {}", active.file),
    });
    ProxyError::error(d.sqlstate, d.message.clone()).with_hint(hint)
}

impl Enforcer {
    /// A new enforcer for an authenticated session.
    pub fn new(shared: Arc<Enforcement>, info: &SessionInfo) -> Enforcer {
        let active = shared.current();
        let mut e = Enforcer {
            shared,
            user: info.user.clone(),
            database: info.database.clone(),
            active: active.clone(),
            role: None,
            restricted: true,
            purpose: purpose_from_startup(&info.startup_params),
            search_path: vec!["\"$user\"".to_owned(), "public".to_owned()],
            temp_schema: None,
            context: None,
            wants_probe: true,
            refresh_since: None,
            tx_status: b'I',
            changed_in_tx: false,
            retried: None,
            encoding_ok: true,
            standard_strings: true,
            prepared: HashMap::new(),
            portals: HashMap::new(),
        };
        e.adopt(active);
        e
    }

    fn adopt(&mut self, active: Arc<ActivePolicy>) {
        let role = active.policy.role_for_user(&self.user);
        self.role = role.map(|r| r.name.clone());
        self.restricted = role.is_none_or(|r| r.is_restricted(&active.policy));
        self.active = active;
        self.context = None;
    }

    fn role(&self) -> Option<&Role> {
        self.role
            .as_deref()
            .and_then(|r| self.active.policy.roles.get(r))
    }

    /// Decide `sql` with the current policy and catalog (cached).
    fn decide(&mut self, sql: &str) -> Arc<Outcome> {
        let latest = self.shared.current();
        if latest.generation != self.active.generation {
            self.adopt(latest);
        }
        let snapshot = self.shared.catalog.get(&self.database);
        let empty = StaticCatalog::new();
        let catalog: &dyn Catalog = match &snapshot {
            Some(s) => s.as_ref(),
            None => &empty,
        };
        let version = catalog.version();
        let context = match self.context {
            Some((v, h)) if v == version => h,
            _ => {
                let h = context_hash(
                    self.active.generation,
                    version,
                    self.role.as_deref().unwrap_or(""),
                    self.purpose.as_deref(),
                    &self.search_path,
                    self.temp_schema.as_deref(),
                );
                self.context = Some((version, h));
                h
            }
        };
        let (outcome, _hit) = self.shared.decisions.get_or_insert_with(context, sql, || {
            let facts = SessionFacts {
                user: &self.user,
                role: self.role(),
                purpose: self.purpose.as_deref(),
                search_path: &self.search_path,
                temp_schema: self.temp_schema.as_deref(),
            };
            decide::decide(&self.active.policy, &facts, catalog, &self.shared.key, sql)
        });
        outcome
    }

    /// A relation was unknown: worth one catalog reload before refusing?
    fn should_refresh_for(&mut self, sql: &str, outcome: &Outcome) -> bool {
        let PolicyVerdict::Deny(d) = &outcome.verdict else {
            return false;
        };
        if d.reason != DenyReason::UnresolvedRelation || !self.shared.catalog.is_configured() {
            return false;
        }
        let h = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            sql.hash(&mut h);
            h.finish()
        };
        if self.retried == Some(h) {
            self.retried = None;
            return false;
        }
        self.retried = Some(h);
        self.refresh_since = Some(Instant::now());
        true
    }

    fn apply_effects(&mut self, outcome: &Outcome) {
        for report in &outcome.statements {
            for effect in &report.effects {
                match effect {
                    SessionEffect::SetSearchPath(path) => {
                        self.search_path = path.clone();
                        self.context = None;
                        self.wants_probe = true;
                        self.changed_in_tx |= self.tx_status != b'I';
                    }
                    SessionEffect::ResetSearchPath => {
                        self.wants_probe = true;
                        self.changed_in_tx |= self.tx_status != b'I';
                    }
                    SessionEffect::SetPurpose(p) => {
                        self.purpose = Some(p.clone()).filter(|p| !p.is_empty());
                        self.context = None;
                    }
                    SessionEffect::ResetPurpose => {
                        self.purpose = None;
                        self.context = None;
                    }
                    SessionEffect::CatalogChanged => {
                        self.refresh_since = Some(Instant::now());
                        self.wants_probe = true;
                        self.changed_in_tx |= self.tx_status != b'I';
                    }
                    SessionEffect::Prepare { .. }
                    | SessionEffect::Deallocate { .. }
                    | SessionEffect::DeclareCursor { .. } => {}
                }
            }
        }
    }

    fn protocol_guard(&self) -> Option<ProxyError> {
        if !self.restricted {
            return None;
        }
        if !self.encoding_ok {
            return Some(ProxyError::error(
                "42501",
                "pgveil: client_encoding must be UTF8 for this role",
            ));
        }
        if !self.standard_strings {
            return Some(ProxyError::error(
                "42501",
                "pgveil: standard_conforming_strings must be on for this role",
            ));
        }
        None
    }

    fn verdict(
        &mut self,
        sql: &str,
        tags: Option<&mut Vec<StatementTag>>,
    ) -> (Verdict, PolicyVerdict) {
        if let Some(e) = self.protocol_guard() {
            return (Verdict::Refuse(e), PolicyVerdict::Allow);
        }
        let outcome = self.decide(sql);
        if self.should_refresh_for(sql, &outcome) {
            return (Verdict::Retry, PolicyVerdict::Allow);
        }
        if let Some(tags) = tags {
            for r in &outcome.statements {
                tags.push(Box::new(Pending {
                    kind: r.kind.as_str(),
                    decision: r.decision.as_str(),
                    normalized: r.normalized.clone(),
                    started: Instant::now(),
                }));
            }
        }
        let v = match &outcome.verdict {
            PolicyVerdict::Allow => Verdict::Forward,
            PolicyVerdict::Rewrite(text) => Verdict::Rewrite(text.clone()),
            PolicyVerdict::Deny(d) => {
                tracing::info!(
                    user = %self.user,
                    role = self.role.as_deref().unwrap_or("-"),
                    reason = d.reason.as_str(),
                    "statement refused"
                );
                Verdict::Refuse(denial_error(d, &self.active, self.role.as_deref()))
            }
        };
        if !matches!(v, Verdict::Refuse(_)) {
            self.apply_effects(&outcome);
        }
        (v, outcome.verdict.clone())
    }
}

impl SessionHook for Enforcer {
    fn on_query(&mut self, sql: &str, tags: &mut Vec<StatementTag>) -> Verdict {
        self.verdict(sql, Some(tags)).0
    }

    fn on_parse(&mut self, name: &str, sql: &str) -> Verdict {
        let (v, policy_verdict) = self.verdict(sql, None);
        if !matches!(v, Verdict::Retry) {
            self.prepared.insert(
                name.to_owned(),
                Prepared {
                    sql: sql.to_owned(),
                    generation: self.active.generation,
                    verdict: policy_verdict,
                },
            );
        }
        v
    }

    fn on_bind(&mut self, portal: &str, statement: &str) -> Verdict {
        let current = self.shared.current().generation;
        // Every Bind re-decides (a decision-cache hit when nothing changed): PostgreSQL
        // re-analyses a prepared statement after a search_path or catalog change, so a
        // decision taken at Parse time under another path or shadowing table is stale.
        let stale = self
            .prepared
            .get(statement)
            .map(|p| (p.sql.clone(), p.verdict.clone()));
        if let Some((sql, old)) = stale {
            let (v, new) = self.verdict(&sql, None);
            if matches!(v, Verdict::Retry) {
                return v;
            }
            if new != old {
                return Verdict::Refuse(
                    ProxyError::error(
                        "42501",
                        format!(
                            "pgveil: the access decision for statement \"{statement}\" changed since it was prepared (policy, search_path or tables)"
                        ),
                    )
                    .with_hint("prepare the statement again"),
                );
            }
            if let Some(p) = self.prepared.get_mut(statement) {
                p.generation = current;
            }
        }
        self.portals.insert(portal.to_owned(), statement.to_owned());
        Verdict::Forward
    }

    fn on_execute(&mut self, portal: &str) -> (Verdict, Option<StatementTag>) {
        let tag = self
            .portals
            .get(portal)
            .and_then(|s| self.prepared.get(s))
            .map(|p| {
                Box::new(Pending {
                    kind: "execute",
                    decision: match p.verdict {
                        PolicyVerdict::Allow => "allow",
                        PolicyVerdict::Rewrite(_) => "rewrite",
                        PolicyVerdict::Deny(_) => "deny",
                    },
                    normalized: pgveil_policy::redact::redact(&p.sql).normalized,
                    started: Instant::now(),
                }) as StatementTag
            });
        (Verdict::Forward, tag)
    }

    fn on_close(&mut self, kind: u8, name: &str) {
        if kind == b'S' {
            self.prepared.remove(name);
        } else {
            self.portals.remove(name);
        }
    }

    fn on_function_call(&mut self) -> Verdict {
        if self.restricted {
            Verdict::Refuse(ProxyError::error(
                "42501",
                "pgveil: the fast-path function call interface is not allowed for this role",
            ))
        } else {
            Verdict::Forward
        }
    }

    fn on_complete(&mut self, _tag: StatementTag, _how: Completion) {}

    fn on_ready(&mut self, status: u8) {
        self.tx_status = status;
        if self.changed_in_tx {
            // Inside the transaction a ROLLBACK TO SAVEPOINT may have undone the change;
            // at its end a ROLLBACK (or an abort) did: re-read what the server uses.
            self.wants_probe = true;
            self.refresh_since.get_or_insert_with(Instant::now);
            if status == b'I' {
                self.changed_in_tx = false;
            }
        }
    }

    fn on_parameter_status(&mut self, name: &str, value: &str) {
        match name {
            "client_encoding" => {
                self.encoding_ok =
                    value.eq_ignore_ascii_case("UTF8") || value.eq_ignore_ascii_case("UTF-8")
            }
            "standard_conforming_strings" => self.standard_strings = value == "on",
            _ => {}
        }
    }

    fn scrub(&mut self, _tag: u8, body: &[u8]) -> Option<Vec<u8>> {
        if self.restricted {
            super::scrub::scrub(body)
        } else {
            None
        }
    }

    fn max_rows(&self) -> Option<u64> {
        self.role().and_then(|r| r.max_rows)
    }

    fn prepare(&mut self) -> Option<Preparation> {
        let since = self.refresh_since.take()?;
        let shared = self.shared.clone();
        let db = self.database.clone();
        Some(Box::pin(async move {
            if let Err(e) = shared.catalog.refresh(&db, since).await {
                tracing::warn!(database = %db, error = %e, "catalog refresh failed");
            }
        }))
    }

    fn probe(&mut self) -> Option<String> {
        if !self.wants_probe || !self.restricted {
            return None;
        }
        self.wants_probe = false;
        Some(PROBE_SQL.to_owned())
    }

    fn on_probe_result(&mut self, row: Option<Vec<Option<String>>>) {
        let Some(row) = row else {
            // E.g. inside a failed transaction: try again at the next statement.
            self.wants_probe = true;
            return;
        };
        if let Some(Some(path)) = row.first() {
            self.search_path = split_search_path(path);
        }
        self.temp_schema = row.get(1).cloned().flatten();
        self.context = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_splitting() {
        assert_eq!(
            split_search_path("\"$user\", public"),
            vec!["\"$user\"", "public"]
        );
        assert_eq!(split_search_path("\"a,b\", c"), vec!["\"a,b\"", "c"]);
        assert!(split_search_path("").is_empty());
    }

    #[test]
    fn purpose_from_parameters_and_options() {
        let p = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert_eq!(
            purpose_from_startup(&p("pgveil.purpose", "cs")),
            Some("cs".into())
        );
        assert_eq!(
            purpose_from_startup(&p("options", "-c pgveil.purpose=audit -c x=y")),
            Some("audit".into())
        );
        assert_eq!(
            purpose_from_startup(&p("options", "--pgveil.purpose=bi")),
            Some("bi".into())
        );
        assert_eq!(
            purpose_from_startup(&p("options", "-c statement_timeout=5")),
            None
        );
    }
}
