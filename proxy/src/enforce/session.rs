//! One session's enforcer: its role, purpose, search_path and temp schema, and the
//! decision for every statement it sends.

use foldhash::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgveil_policy::catalog::{Catalog, StaticCatalog};
use pgveil_policy::decide::{
    self, Decision, Denial, DenyReason, Outcome, SessionEffect, SessionFacts, StatementReport,
    Verdict as PolicyVerdict,
};
use pgveil_policy::mask::MaskKey;
use pgveil_policy::model::Role;
use pgveil_policy::output::RowMasks;
use pgveil_policy::shape::{self, Template};

use super::audit_json::{AuditJson, SessionIds};
use super::cache::{context_hash, user_context};
use super::statements::{Prepared, Statements};
use super::{ActivePolicy, Enforcement};
use crate::audit::{AuditError, AuditEvent, AuditSlot, EventKind};
use crate::catalog::Snapshot;
use crate::hook::{
    Completion, Preparation, SessionHook, SessionInfo, StatementChange, StatementTag, Verdict,
};
use crate::metrics::{metrics, QueryDecision, RoleMetrics};
use crate::wire::messages::error::ProxyError;

/// Reads the session facts the proxy cannot see in the protocol.
const PROBE_SQL: &str = "SELECT pg_catalog.current_setting('search_path'), \
     CASE WHEN pg_catalog.pg_my_temp_schema() = 0 THEN NULL \
     ELSE pg_catalog.pg_my_temp_schema()::pg_catalog.regnamespace::text END";

/// Whether a Bind may reuse `outcome` while the decision context is unchanged: the
/// decision is then the same by construction (a pure function of context and text).
/// Not for refusals, statements with session effects (re-applied at each Bind) or SQL
/// `EXECUTE` (whose `PREPARE` may have been replaced without a context change).
fn reusable_at_bind(outcome: &Outcome) -> bool {
    !matches!(outcome.verdict, PolicyVerdict::Deny(_))
        && outcome
            .statements
            .iter()
            .all(|r| r.effects.is_empty() && execute_target(&r.normalized).is_none())
}

/// [`Prepared::reusable_in`] for a decision and the context it was taken in.
fn reusable_in(decided: Option<&(Arc<Outcome>, u64)>) -> Option<u64> {
    decided
        .filter(|(o, _)| reusable_at_bind(o))
        .map(|(_, context)| *context)
}

/// The catalog of a database whose snapshot is not loaded (yet).
static EMPTY_CATALOG: std::sync::LazyLock<StaticCatalog> =
    std::sync::LazyLock::new(StaticCatalog::new);

/// Whether two decisions forward the same thing (no decision counts as allow).
fn same_verdict(a: Option<&Outcome>, b: Option<&Outcome>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            std::ptr::eq(a, b) || (a.verdict == b.verdict && a.row_masks == b.row_masks)
        }
        (Some(o), None) | (None, Some(o)) => o.verdict == PolicyVerdict::Allow,
        (None, None) => true,
    }
}

/// A protocol-level portal as the books have it.
struct Bound {
    /// The text of the statement it was bound to (None: not in the books).
    sql: Option<Arc<str>>,
    /// That statement's decision at the Bind.
    outcome: Option<Arc<Outcome>>,
    /// The policy generation the decision holds under.
    generation: u64,
}

/// A SQL cursor as it was declared: the text that declared it, its decision and the
/// policy generation that decision holds under. The server keeps the cursor's plan (and
/// its rewrite) whatever the policy says later.
#[derive(Clone)]
struct Opened {
    sql: Arc<str>,
    outcome: Arc<Outcome>,
    generation: u64,
}

/// One statement's report inside a shared outcome.
struct ReportRef {
    outcome: Arc<Outcome>,
    index: usize,
}

impl std::ops::Deref for ReportRef {
    type Target = StatementReport;
    fn deref(&self) -> &StatementReport {
        &self.outcome.statements[self.index]
    }
}

/// One statement report's masked-column counters, looked up once for all its
/// executions. Holding the reports keeps their address from being reused by others.
struct MaskedCounters {
    reports: Arc<[StatementReport]>,
    index: usize,
    counters: Vec<prometheus::IntCounter>,
}

impl MaskedCounters {
    fn of(report: &ReportRef, metrics: &RoleMetrics) -> MaskedCounters {
        MaskedCounters {
            reports: report.outcome.statements.clone(),
            index: report.index,
            counters: report
                .classes
                .iter()
                .map(|class| metrics.masked_counter(class))
                .collect(),
        }
    }

    /// Whether these are the counters of `report`.
    fn counts(&self, report: &ReportRef) -> bool {
        self.index == report.index && Arc::ptr_eq(&self.reports, &report.outcome.statements)
    }
}

/// The values every audit event of a session repeats.
struct AuditIds {
    session: Arc<str>,
    user: Arc<str>,
    client: Option<Arc<str>>,
    application: Option<Arc<str>>,
    database: Arc<str>,
}

/// What the enforcer remembers about a statement until it completes.
pub struct Pending {
    report: ReportRef,
    reason: Option<&'static str>,
    slot: Option<AuditSlot>,
    started: Instant,
}

/// Per-session policy enforcement.
pub struct Enforcer {
    shared: Arc<Enforcement>,
    /// Session-wide audit event values, shared by all its events.
    ids: AuditIds,
    /// Audit event members serialized once per session and per statement report.
    audit_json: AuditJson,
    role_metrics: Option<Arc<RoleMetrics>>,
    /// The masked-column counters of the last statement report that masked something
    /// (statements of one text repeat, and share their reports).
    masked_counters: Option<MaskedCounters>,
    /// Audit queue places obtained asynchronously (queue was full) for the next decision.
    slots: Arc<std::sync::Mutex<Vec<AuditSlot>>>,
    /// How many places the next decision needs that `try_admit` could not give.
    slots_needed: usize,
    /// The audit stream refused to give places in time: refuse statements.
    audit_unavailable: Arc<std::sync::atomic::AtomicBool>,
    active: Arc<ActivePolicy>,
    role: Option<Arc<str>>,
    restricted: bool,
    purpose: Option<Arc<str>>,
    /// The purpose the session started with: what `RESET` returns to.
    startup_purpose: Option<Arc<str>>,
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
    /// Statements prepared through the extended protocol, as the server has them.
    statements: Statements,
    /// A decision waits for the server to settle a statement change
    /// ([`Statements::must_settle`]); `settle` wakes the session when one settles.
    awaiting_settle: bool,
    settle: Arc<tokio::sync::Notify>,
    /// Forwarded Queries and Syncs whose ReadyForQuery has not come back yet.
    readies_owed: u64,
    /// A forwarded statement changes how names resolve (DDL, DISCARD, search_path)
    /// and the server has not run it yet: see [`ResolutionChange`].
    resolution_change: Option<ResolutionChange>,
    /// A DDL statement (or DISCARD) was forwarded and its transaction has not ended:
    /// the ReadyForQuery count until its batch is answered (then the transaction status
    /// tells whether it ended). pgveil reads the catalog over its own connection, which
    /// does not see this session's uncommitted changes (a `DROP TABLE pg_temp.t` inside
    /// `BEGIN`, or pipelined before a Sync, still shows the temp table), so statements
    /// that resolve relation names are refused until then.
    uncommitted_ddl: Option<u64>,
    /// DDL was forwarded (by any role): the ReadyForQuery count until its batch is
    /// answered; at the first idle ReadyForQuery from then on the database is marked
    /// dirty for every session ([`crate::catalog::CatalogCache::mark_dirty`]).
    ddl_unmarked: Option<u64>,
    /// The catalog's mark count when this (restricted) session last looked.
    marks_seen: u64,
    /// DDL completed through pgveil at this time, after the snapshot this session would
    /// decide against was read: a restricted decision waits for a load started after
    /// it, and refuses statements that resolve names if that load failed.
    catalog_needed: Option<Instant>,
    /// SQL-level `PREPARE name AS …`: the text that prepared it and its decision then.
    /// PostgreSQL re-resolves names at EXECUTE, so EXECUTE is decided again.
    sql_prepared: HashMap<String, (String, PolicyVerdict)>,
    /// `PREPARE`s forwarded and not confirmed yet: entered in `sql_prepared` when the
    /// server completes them. A PREPARE of a name the server holds fails there (42P05)
    /// and keeps the first statement, so the books must not take the second text before
    /// the server did.
    prepares_in_flight: Vec<InFlightPrepare>,
    /// Portal → what it was bound to (a portal outlives a Close of its statement and
    /// runs what was bound).
    portals: HashMap<String, Bound>,
    /// SQL cursor name → every `DECLARE` of it the session sent (which one the server
    /// holds is not tracked, so a FETCH must be right for all of them).
    cursors: HashMap<String, Vec<Opened>>,
    /// Binds and portal Closes forwarded but not yet answered, in order: the portal's
    /// name, whether it displaces a binding whose rows the proxy masks, and the batch
    /// (count of Syncs and Queries sent before it) it was sent in.
    portal_ops: std::collections::VecDeque<(String, bool, u64)>,
    /// Portals whose masked binding may still exist on the server although the books no
    /// longer show it (its Close or re-Bind failed or was skipped after an error, and a
    /// ROLLBACK TO SAVEPOINT can revive the transaction): refused until the transaction
    /// ends.
    doubtful_portals: std::collections::HashSet<String>,
    /// Syncs and Queries sent so far (see `portal_ops`).
    batches: u64,
    /// This database's catalog snapshot and the catalog's change count when it was read.
    snapshot: Option<(u64, Option<Arc<Snapshot>>)>,
    /// The role's row limit (read once per policy, asked for every statement).
    max_rows: Option<u64>,
    /// The shapes of this session's latest statements with their decision context, most
    /// recent first: a text is matched against them before the shared cache is asked.
    shapes: Vec<(u64, Arc<Template>)>,
    /// Constant positions found by the last match (reused buffer).
    constants: Vec<std::ops::Range<usize>>,
}

/// A restricted role's statement under a client_encoding other than UTF8.
fn encoding_refusal() -> ProxyError {
    ProxyError::error(
        "42501",
        "pgveil: client_encoding must be UTF8 for this role",
    )
}

/// Reads the catalog of `db` again (changes since `since`), logging a failure.
async fn refresh_catalog(shared: &Enforcement, session: &str, db: &str, since: Instant) {
    if let Err(e) = shared.catalog.refresh(db, since).await {
        tracing::warn!(%session, database = %db, error = %e, "catalog refresh failed");
    }
}

/// A statement naming a column the catalog lacks reads the catalog again when the
/// snapshot is at least this old.
const UNKNOWN_COLUMN_REFRESH: Duration = Duration::from_secs(2);

/// How many statement shapes a session remembers: enough for a transaction's worth of
/// statements sent in turn (pgbench's TPC-B has seven, nine shapes with the signs of its
/// deltas); a text that matches none is looked up in the shared cache, which lexes it.
const SESSION_SHAPES: usize = 16;

fn purpose_from_startup(params: &[(String, String)]) -> Option<String> {
    startup_settings(params)
        .into_iter()
        .find(|(k, _)| k == "pgveil.purpose")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Every setting a StartupMessage makes: its parameters (except `options`) first, then
/// the `-c name=value` / `--name=value` settings inside `options`, as the server reads
/// them.
pub(crate) fn startup_settings(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "options")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (_, options) in params.iter().filter(|(k, _)| k == "options") {
        let words = split_options(options);
        let mut words = words.iter();
        while let Some(w) = words.next() {
            let setting = if w == "-c" {
                words.next().map_or("", String::as_str)
            } else if let Some(rest) = w.strip_prefix("-c").or_else(|| w.strip_prefix("--")) {
                rest
            } else {
                continue;
            };
            if let Some((name, value)) = setting.split_once('=') {
                out.push((name.to_owned(), value.to_owned()));
            } else if !setting.is_empty() {
                out.push((setting.to_owned(), String::new()));
            }
        }
    }
    out
}

/// The words of an `options` startup parameter as PostgreSQL splits them
/// (`pg_split_opts`): separated by whitespace, a backslash takes the next character
/// literally (`-c rol\e=x` sets `role`, `-c search_path=a,\ b` keeps the space).
fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            if c.is_ascii_whitespace() {
                break;
            }
            if c == '\\' {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                continue;
            }
            word.push(c);
        }
        words.push(word);
    }
}

/// The statement name of an `EXECUTE name [(…)]` statement (normalized text), folded
/// like PostgreSQL folds identifiers.
fn execute_target(normalized: &str) -> Option<String> {
    let rest = normalized.trim_start();
    let head = rest.get(..7)?;
    if !head.eq_ignore_ascii_case("execute") {
        return None;
    }
    let rest = rest[7..].trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        return Some(quoted[..end].to_owned());
    }
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
        .collect();
    (!name.is_empty()).then(|| name.to_lowercase())
}

/// A forwarded SQL `PREPARE` the server has not completed yet.
struct InFlightPrepare {
    name: String,
    /// The text it was sent in, and its decision.
    sql: String,
    outcome: Arc<Outcome>,
    /// The batch (count of Syncs and Queries sent before it) it was sent in: an EXECUTE
    /// in a later batch waits for its completion, one in the same batch cannot (the
    /// server holds its answers until the batch ends).
    batch: u64,
    /// ReadyForQuery messages until the server has answered its batch: then it is gone
    /// from the books whatever became of it (never executed, or its completion not seen).
    readies_left: u64,
}

/// What the books say about an `EXECUTE` (or Bind) of a SQL-prepared statement.
enum SqlPrepared {
    /// The server holds it (or the same text is prepared ahead of it in the batch) and
    /// its decision still holds.
    Known,
    /// A `PREPARE` of it sent in an earlier batch is not answered yet: decide after it.
    Unsettled,
    /// Refuse with this error.
    Refused(ProxyError),
}

/// A forwarded statement that changes how names resolve, which the server has not run
/// yet.
#[derive(Debug, Clone, Copy)]
struct ResolutionChange {
    /// ReadyForQuery messages until the server has run it (those owed before it, and
    /// its own).
    readies_left: u64,
    /// The message that makes the server answer it (its Query, or the Sync after its
    /// Parse) was forwarded.
    requested: bool,
    /// It changed the catalog: read it again once the server ran it.
    catalog: bool,
}

/// Whether the server resolves relation names to run `outcome`'s text (it reads a
/// relation, or runs a prepared statement that PostgreSQL may analyse again).
fn resolves_names(outcome: &Outcome) -> bool {
    outcome
        .statements
        .iter()
        .any(|r| !r.relations.is_empty() || execute_target(&r.normalized).is_some())
}

/// Runs one analysis and records its duration in `rewrite_duration_seconds`.
fn timed<T>(work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let done = work();
    metrics().rewrite(started.elapsed().as_secs_f64());
    done
}

/// The refusal of a statement that resolves relation names while this session's DDL is
/// not committed.
fn uncommitted_ddl_refusal() -> ProxyError {
    ProxyError::error(
        "42501",
        "pgveil: statements that read relations are not allowed for this role after DDL in the same transaction (pgveil cannot see uncommitted catalog changes)",
    )
    .with_hint("COMMIT or ROLLBACK first; in the extended protocol, Sync after the DDL")
}

/// The refusal of a statement that resolves relation names while the catalog could not
/// be read again after DDL that completed through pgveil.
fn catalog_behind_refusal() -> ProxyError {
    ProxyError::error(
        "58000",
        "pgveil: the catalog could not be read after recent DDL, so this statement is refused",
    )
    .with_hint("the catalog account or the database is failing; see the pgveil log, then retry")
}

/// The refusal of an EXECUTE (or Bind) of SQL-prepared statement `name` whose decision
/// changed since its PREPARE.
fn changed_since_prepared(name: &str) -> ProxyError {
    ProxyError::error(
        "42501",
        format!(
            "pgveil: the decision for prepared statement \"{name}\" changed since it was prepared (policy, search_path or tables)"
        ),
    )
    .with_hint("DEALLOCATE it and PREPARE it again")
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
        let startup_purpose: Option<Arc<str>> =
            purpose_from_startup(&info.startup_params).map(Into::into);
        let mut e = Enforcer {
            shared,
            ids: AuditIds {
                session: info.id.as_str().into(),
                user: info.user.as_str().into(),
                client: info.client_addr.map(|a| a.to_string().into()),
                application: info.application.as_deref().map(Into::into),
                database: info.database.as_str().into(),
            },
            audit_json: AuditJson::default(),
            role_metrics: None,
            masked_counters: None,
            slots: Arc::default(),
            slots_needed: 0,
            audit_unavailable: Arc::default(),
            active: active.clone(),
            role: None,
            restricted: true,
            purpose: startup_purpose.clone(),
            startup_purpose,
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
            statements: Statements::default(),
            awaiting_settle: false,
            settle: Arc::default(),
            readies_owed: 0,
            resolution_change: None,
            uncommitted_ddl: None,
            ddl_unmarked: None,
            marks_seen: 0,
            catalog_needed: None,
            sql_prepared: HashMap::default(),
            prepares_in_flight: Vec::new(),
            portals: HashMap::default(),
            cursors: HashMap::default(),
            portal_ops: Default::default(),
            doubtful_portals: Default::default(),
            batches: 0,
            max_rows: None,
            snapshot: None,
            shapes: Vec::new(),
            constants: Vec::new(),
        };
        e.adopt(active);
        e
    }

    fn adopt(&mut self, active: Arc<ActivePolicy>) {
        let role = active.policy.role_for_user(&self.ids.user);
        self.role = role.map(|r| r.name.as_str().into());
        self.role_metrics = self.role.as_deref().map(|r| metrics().role(r));
        self.masked_counters = None;
        self.restricted = role.is_none_or(|r| r.is_restricted(&active.policy));
        self.max_rows = role.and_then(|r| r.max_rows);
        self.active = active;
        self.context = None;
    }

    fn role(&self) -> Option<&Role> {
        self.role
            .as_deref()
            .and_then(|r| self.active.policy.roles.get(r))
    }

    /// The decision context now (policy generation, catalog version, role, user,
    /// purpose, search_path, temp schema, hashed) and the catalog snapshot it was read from;
    /// adopts a reloaded policy first.
    fn context_now(&mut self) -> (u64, Option<Arc<Snapshot>>) {
        if self.shared.generation() != self.active.generation {
            let latest = self.shared.current();
            if latest.generation != self.active.generation {
                self.adopt(latest);
            }
        }
        let changes = self.shared.catalog.changes();
        let snapshot = match &self.snapshot {
            Some((seen, s)) if *seen == changes => s.clone(),
            _ => {
                let s = self.shared.catalog.get(&self.ids.database);
                self.snapshot = Some((changes, s.clone()));
                s
            }
        };
        let version = snapshot
            .as_ref()
            .map_or_else(|| EMPTY_CATALOG.version(), |s| s.version());
        let context = match self.context {
            Some((v, h)) if v == version => h,
            _ => {
                let h = user_context(
                    context_hash(
                        self.active.generation,
                        version,
                        self.role.as_deref().unwrap_or(""),
                        self.purpose.as_deref(),
                        &self.search_path,
                        self.temp_schema.as_deref(),
                    ),
                    &self.ids.user,
                );
                self.context = Some((version, h));
                h
            }
        };
        (context, snapshot)
    }

    /// Decide `sql` with the current policy and catalog (cached), and the context hash
    /// the decision was taken in. With `unrewritten`, the caller forwards the text as
    /// sent when its rows are masked here and asks nothing else of the rewrite, so a
    /// shape's shared outcome may stand without instantiating its rewrite text.
    fn decide(&mut self, sql: &str, unrewritten: bool) -> (Arc<Outcome>, u64) {
        let (context, snapshot) = self.context_now();
        if let Some(outcome) = self.known_shape(context, sql, unrewritten) {
            metrics().decision_cache(true);
            return (outcome, context);
        }
        let catalog: &dyn Catalog = match &snapshot {
            Some(s) => s.as_ref(),
            None => &*EMPTY_CATALOG,
        };
        let facts = SessionFacts {
            user: &self.ids.user,
            role: self.role(),
            purpose: self.purpose.as_deref(),
            search_path: &self.search_path,
            temp_schema: self.temp_schema.as_deref(),
        };
        let (policy, key) = (&self.active.policy, &self.shared.key);
        // Only a decision computed afresh is timed: a cached one costs a lookup.
        let (outcome, hit, template) = self.shared.decisions.get_or_decide(
            context,
            sql,
            || timed(|| decide::decide(policy, &facts, catalog, key, sql)),
            |shape| timed(|| shape::learn(policy, &facts, catalog, key, shape)),
        );
        metrics().decision_cache(hit);
        // A template comes back only when no remembered shape matched the text.
        if let Some(t) = template {
            self.shapes.truncate(SESSION_SHAPES - 1);
            self.shapes.insert(0, (context, t));
        }
        (outcome, context)
    }

    /// The decision for `sql` from a shape this session saw in the same context, if it
    /// has one of them (the same answer the shared cache would give, without lexing).
    fn known_shape(&mut self, context: u64, sql: &str, unrewritten: bool) -> Option<Arc<Outcome>> {
        let at = self
            .shapes
            .iter()
            .position(|(c, t)| *c == context && t.matches(sql, &mut self.constants))?;
        let template = self.shapes[at].1.clone();
        if at > 0 {
            self.shapes[..=at].rotate_right(1);
        }
        if unrewritten {
            if let Some(o) = template.outcome_when_rows_masked() {
                if self.masks_rows(o) {
                    return Some(o.clone());
                }
            }
        }
        Some(template.instantiate_at(sql, &self.constants))
    }

    /// An `EXECUTE name` the proxy cannot vouch for: its `PREPARE` would be decided
    /// differently now (search_path, temp tables, catalog or policy changed since:
    /// PostgreSQL would re-resolve the names, so refuse rather than run a plan the policy
    /// never saw); a statement prepared through the extended protocol whose rows the
    /// proxy masks (they would come back unmasked under the EXECUTE); or a name the
    /// session never prepared.
    fn stale_sql_execute(&mut self, outcome: &Outcome) -> Option<SqlPrepared> {
        // Names prepared earlier in this same text, in the context it is decided in.
        let mut here: Vec<&str> = Vec::new();
        for report in outcome.statements.iter() {
            if let Some(name) = execute_target(&report.normalized) {
                if here.contains(&name.as_str()) {
                    continue;
                }
                if let Some(p) = self.statements.get(&name) {
                    let (sql, then) = (p.sql.clone(), p.outcome.clone());
                    if then.as_deref().is_some_and(|o| self.masks_rows_extended(o)) {
                        return Some(SqlPrepared::Refused(
                            ProxyError::error(
                                "42501",
                                format!(
                                    "pgveil: EXECUTE of \"{name}\" is not allowed for this role: it was prepared through the extended protocol and its rows are masked by the proxy"
                                ),
                            )
                            .with_hint("bind and execute it through the extended protocol"),
                        ));
                    }
                    let now = self.decide(&sql, false).0;
                    if !same_verdict(then.as_deref(), Some(&*now)) {
                        return Some(SqlPrepared::Refused(changed_since_prepared(&name)));
                    }
                    continue;
                }
                match self.sql_prepared_state(&name) {
                    SqlPrepared::Known => {}
                    other => return Some(other),
                }
            }
            for effect in &report.effects {
                match effect {
                    SessionEffect::Prepare { name } => here.push(name),
                    SessionEffect::SetSearchPath(_)
                    | SessionEffect::ResetSearchPath
                    | SessionEffect::CatalogChanged => here.clear(),
                    _ => {}
                }
            }
        }
        None
    }

    /// Whether SQL-prepared statement `name` (not in the protocol books) may run now: the
    /// server holds it and its PREPARE is decided the same way now; or its PREPARE was
    /// sent earlier in this batch (the server runs the EXECUTE only after it, and skips it
    /// if the PREPARE failed); or that PREPARE was sent in an earlier batch and is not
    /// answered yet (wait for it rather than refuse a statement the server would run).
    fn sql_prepared_state(&mut self, name: &str) -> SqlPrepared {
        if self.sql_prepared.contains_key(name) {
            return match self.sql_prepared_changed(name) {
                Some(e) => SqlPrepared::Refused(e),
                None => SqlPrepared::Known,
            };
        }
        let Some(p) = self
            .prepares_in_flight
            .iter()
            .rev()
            .find(|p| p.name == name)
        else {
            return SqlPrepared::Refused(ProxyError::error(
                "26000",
                format!("prepared statement \"{name}\" does not exist"),
            ));
        };
        if p.batch < self.batches {
            self.awaiting_settle = true;
            return SqlPrepared::Unsettled;
        }
        let (sql, then) = (p.sql.clone(), p.outcome.verdict.clone());
        if self.decide(&sql, false).0.verdict == then {
            SqlPrepared::Known
        } else {
            SqlPrepared::Refused(changed_since_prepared(name))
        }
    }

    /// A statement of SQL PREPARE `name` whose PREPARE would be decided differently now
    /// (PostgreSQL re-resolves its names when it runs it, by EXECUTE or by a protocol
    /// Bind, since both share one name space): the refusal to send instead.
    fn sql_prepared_changed(&mut self, name: &str) -> Option<ProxyError> {
        let (text, then) = self.sql_prepared.get(name).cloned()?;
        let now = self.decide(&text, false).0.verdict.clone();
        (now != then).then(|| changed_since_prepared(name))
    }

    /// A relation was unknown: worth one catalog reload before refusing?
    fn should_refresh_for(&mut self, sql: &str, outcome: &Outcome) -> bool {
        if !self.shared.catalog.is_configured() {
            return false;
        }
        let wanted = match &outcome.verdict {
            PolicyVerdict::Deny(d) => d.reason == DenyReason::UnresolvedRelation,
            // A name the catalog lacks may be a column added behind the proxy that the
            // policy's globs tag: read the catalog again unless it is fresh (so texts
            // that merely name something else reload it at most every few seconds).
            _ => {
                self.restricted
                    && outcome.statements.iter().any(|r| r.unknown_columns)
                    && self
                        .shared
                        .catalog
                        .get(&self.ids.database)
                        .is_none_or(|s| s.loaded_at.elapsed() >= UNKNOWN_COLUMN_REFRESH)
            }
        };
        if !wanted {
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

    /// A statement about to be forwarded changes how names resolve (`catalog`: DDL or
    /// DISCARD, else search_path): decisions after it wait until the server ran it.
    fn resolution_changes(&mut self, catalog: bool) {
        if !self.restricted {
            return;
        }
        let catalog = catalog || self.resolution_change.as_ref().is_some_and(|c| c.catalog);
        self.resolution_change = Some(ResolutionChange {
            readies_left: self.readies_owed + 1,
            requested: false,
            catalog,
        });
    }

    fn apply_effects(&mut self, sql: &str, outcome: &Arc<Outcome>) {
        for report in outcome.statements.iter() {
            for effect in &report.effects {
                match effect {
                    SessionEffect::SetSearchPath(path) => {
                        self.search_path = path.clone();
                        self.context = None;
                        self.wants_probe = true;
                        self.changed_in_tx |= self.tx_status != b'I';
                        self.resolution_changes(false);
                    }
                    SessionEffect::ResetSearchPath => {
                        self.wants_probe = true;
                        self.changed_in_tx |= self.tx_status != b'I';
                        self.resolution_changes(false);
                    }
                    SessionEffect::SetPurpose(p) => {
                        self.purpose = Some(p.as_str().into()).filter(|p: &Arc<str>| !p.is_empty());
                        self.context = None;
                    }
                    SessionEffect::ResetPurpose => {
                        self.purpose = self.startup_purpose.clone();
                        self.context = None;
                    }
                    SessionEffect::CatalogChanged => {
                        self.ddl_unmarked = Some(self.readies_owed + 1);
                        if self.restricted {
                            self.uncommitted_ddl = Some(self.readies_owed + 1);
                            // Unrestricted roles' decisions do not depend on the
                            // catalog: their DDL only marks it dirty (see on_ready).
                            self.refresh_since = Some(Instant::now());
                        }
                        self.wants_probe = true;
                        self.changed_in_tx |= self.tx_status != b'I';
                        self.resolution_changes(true);
                    }
                    SessionEffect::Prepare { name } => {
                        self.prepares_in_flight.push(InFlightPrepare {
                            name: name.clone(),
                            sql: sql.to_owned(),
                            outcome: outcome.clone(),
                            batch: self.batches,
                            readies_left: self.readies_owed + 1,
                        });
                    }
                    SessionEffect::Deallocate { name: Some(name) } => {
                        self.sql_prepared.remove(name);
                    }
                    SessionEffect::Deallocate { name: None } => self.sql_prepared.clear(),
                    SessionEffect::DeclareCursor { name } => {
                        let opened = Opened {
                            sql: sql.into(),
                            outcome: outcome.clone(),
                            generation: self.active.generation,
                        };
                        let book = self.cursors.entry(name.clone()).or_default();
                        if !book
                            .iter()
                            .any(|o| o.generation == opened.generation && *o.sql == *opened.sql)
                        {
                            book.push(opened);
                        }
                    }
                    SessionEffect::Fetch { .. } => {}
                }
            }
        }
    }

    /// The DDL completion a restricted decision must wait for a catalog load after, if
    /// any: one atomic load when no DDL was marked since the last look.
    fn catalog_wait(&mut self) -> Option<Instant> {
        if !self.restricted {
            return None;
        }
        let marks = self.shared.catalog.marks();
        if marks != self.marks_seen {
            self.marks_seen = marks;
            if let Some(at) = self.shared.catalog.dirty_after(&self.ids.database) {
                self.catalog_needed = Some(self.catalog_needed.map_or(at, |n| n.max(at)));
            }
        }
        let needed = self.catalog_needed?;
        if self.catalog_behind() {
            Some(needed)
        } else {
            self.catalog_needed = None;
            None
        }
    }

    /// Whether the catalog snapshot is still older than DDL this session must see (its
    /// reload failed): statements that resolve names are refused then.
    fn catalog_behind(&self) -> bool {
        self.catalog_needed.is_some_and(|needed| {
            self.shared
                .catalog
                .get(&self.ids.database)
                .is_none_or(|s| s.loaded_at < needed)
        })
    }

    /// Whether a decision must first wait for the server to run a forwarded statement
    /// that changes how names resolve (and for the catalog to be read again after it):
    /// decided before, a statement pipelined behind `DROP TABLE pg_temp.t` resolved `t`
    /// to the dropped table while PostgreSQL ran it on the relation `t` names now. Only
    /// once the message that makes the server answer it was forwarded (a wait for a Sync
    /// still behind the waiting message would never end).
    fn waits_for_resolution_change(&mut self) -> bool {
        let waits = self.restricted && self.resolution_change.as_ref().is_some_and(|c| c.requested);
        if waits {
            self.awaiting_settle = true;
        }
        waits
    }

    /// Whether a Bind of statement `name` must first wait for the server to settle a
    /// change of it (then [`SessionHook::prepare`] waits for that). Only for restricted
    /// roles: for the others the books only feed metrics and audit. (A Parse need not
    /// wait: if the books wrongly show its name free, the server refuses it itself.)
    fn waits_for_settle(&mut self, name: &str) -> bool {
        if self.restricted && self.statements.must_settle(name) {
            self.awaiting_settle = true;
            true
        } else {
            false
        }
    }

    /// Whether portal `name` is bound (in the books) to a statement whose rows the proxy
    /// masks.
    fn portal_masked(&self, name: &str) -> bool {
        self.portals
            .get(name)
            .and_then(|b| b.outcome.as_deref())
            .is_some_and(|o| self.masks_rows_extended(o))
    }

    /// Running portal `name` (Execute, or a FETCH of it) when the server may hold a
    /// binding of it whose rows the proxy masks but the books do not show: refused when a
    /// Close or re-Bind of such a binding did not happen, postponed (Retry) until the
    /// server has answered one sent in an earlier batch.
    fn portal_hazard(&mut self, name: &str) -> Option<Verdict> {
        if !self.restricted {
            return None;
        }
        let batches = self.batches;
        // A Bind or Close of the name earlier in this batch decides: if the server skips
        // or refuses it, it skips this message too.
        if self
            .portal_ops
            .iter()
            .any(|(n, _, b)| n == name && *b == batches)
        {
            return None;
        }
        if !self.doubtful_portals.is_empty() && self.doubtful_portals.contains(name) {
            return Some(Verdict::Refuse(ProxyError::error(
                "42501",
                format!(
                    "pgveil: portal \"{name}\" may still hold rows that the proxy masks (its Close or Bind did not take effect); end the transaction first"
                ),
            )));
        }
        if self
            .portal_ops
            .iter()
            .any(|(n, displaces, batch)| *displaces && n == name && *batch < batches)
        {
            self.awaiting_settle = true;
            return Some(Verdict::Retry);
        }
        None
    }

    /// A FETCH in `outcome` names a portal whose rows the proxy masks (protocol portals
    /// and cursors share one name space, and FETCH would return its rows unmasked).
    fn fetch_hazard(&mut self, outcome: &Outcome) -> Option<Verdict> {
        if !self.restricted {
            return None;
        }
        for report in outcome.statements.iter() {
            for effect in &report.effects {
                let SessionEffect::Fetch { name } = effect else {
                    continue;
                };
                if self.portal_masked(name) {
                    return Some(Verdict::Refuse(
                        ProxyError::error(
                            "42501",
                            format!(
                                "pgveil: FETCH from \"{name}\" is not allowed for this role: it is a protocol-level portal whose rows are masked by the proxy"
                            ),
                        )
                        .with_hint("run the portal with Execute"),
                    ));
                }
                if let Some(v) = self.portal_hazard(name) {
                    return Some(v);
                }
                if let Some(v) = self.opened_under_another_policy(name) {
                    return Some(v);
                }
            }
        }
        None
    }

    /// Whether `outcome`, the decision of `sql` under policy generation `generation`,
    /// is still the decision under the policy in force (which has been adopted).
    fn still_decided(
        &mut self,
        sql: Option<&str>,
        outcome: Option<&Outcome>,
        generation: u64,
    ) -> bool {
        if generation == self.active.generation {
            return true;
        }
        let Some(sql) = sql else {
            return false;
        };
        let now = self.decide(sql, false).0;
        same_verdict(outcome, Some(&now))
    }

    /// Running portal or cursor `name` (Execute, FETCH, MOVE) whose rows were decided
    /// under an earlier policy: the server runs the plan it opened, rewritten (or not)
    /// by the old policy, so a policy reload that masks or denies more would not reach
    /// it. Refused unless its text is decided the same way under the policy now.
    fn opened_under_another_policy(&mut self, name: &str) -> Option<Verdict> {
        self.context_now();
        if !self.restricted {
            return None;
        }
        let generation = self.active.generation;
        let bound_earlier = self
            .portals
            .get(name)
            .filter(|b| b.generation != generation)
            .map(|b| (b.sql.clone(), b.outcome.clone(), b.generation));
        if let Some((sql, outcome, then)) = bound_earlier {
            if !self.still_decided(sql.as_deref(), outcome.as_deref(), then) {
                return Some(Verdict::Refuse(
                    ProxyError::error(
                        "42501",
                        format!(
                            "pgveil: the access policy changed since portal \"{name}\" was bound, and its rows follow the old one"
                        ),
                    )
                    .with_hint("bind the statement again"),
                ));
            }
            if let Some(b) = self.portals.get_mut(name) {
                b.generation = generation;
            }
        }
        if self.cursors.is_empty() {
            return None;
        }
        let declared = self.cursors.get(name).cloned().unwrap_or_default();
        for o in &declared {
            if !self.still_decided(Some(&o.sql), Some(&o.outcome), o.generation) {
                return Some(Verdict::Refuse(
                    ProxyError::error(
                        "42501",
                        format!(
                            "pgveil: the access policy changed since cursor \"{name}\" was declared, and its rows follow the old one"
                        ),
                    )
                    .with_hint("CLOSE the cursor and DECLARE it again"),
                ));
            }
        }
        if let Some(book) = self.cursors.get_mut(name) {
            for o in book.iter_mut() {
                o.generation = generation;
            }
            book.dedup_by(|a, b| *a.sql == *b.sql);
        }
        None
    }

    /// Whether `outcome`'s output masks are applied here (the text then goes out
    /// unrewritten); otherwise its rewrite is forwarded.
    fn masks_rows(&self, outcome: &Outcome) -> bool {
        outcome.row_masks.is_some() && self.restricted && self.encoding_ok
    }

    /// [`Self::masks_rows`] for a statement of the extended protocol. Its rows may come
    /// without any RowDescription (no Describe), so a `*` expansion, whose positions hold
    /// only while pgveil's catalog matches the table, cannot be checked there: such a
    /// statement runs as the rewrite, whose column list the server checks by name.
    fn masks_rows_extended(&self, outcome: &Outcome) -> bool {
        self.masks_rows(outcome)
            && outcome
                .row_masks
                .as_ref()
                .is_some_and(|m| m.expanded.is_empty())
    }

    fn protocol_guard(&self) -> Option<ProxyError> {
        if !self.restricted {
            return None;
        }
        if !self.encoding_ok {
            return Some(encoding_refusal());
        }
        if !self.standard_strings {
            return Some(ProxyError::error(
                "42501",
                "pgveil: standard_conforming_strings must be on for this role",
            ));
        }
        None
    }

    /// Audit queue places for `n` statements, or why there are none (None = wait and retry).
    fn admit(&mut self, n: usize) -> Result<Vec<AuditSlot>, Option<ProxyError>> {
        if n == 0 || !self.shared.auditor.is_enabled() {
            return Ok(Vec::new());
        }
        let mut got: Vec<AuditSlot> = {
            let mut stash = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let k = stash.len().min(n);
            stash.drain(..k).collect()
        };
        while got.len() < n {
            match self.shared.auditor.try_admit() {
                Ok(slot) => got.push(slot),
                Err(AuditError::WouldBlock)
                    if !self
                        .audit_unavailable
                        .swap(false, std::sync::atomic::Ordering::SeqCst) =>
                {
                    // Give the places back; wait for them asynchronously, then retry.
                    let mut stash = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                    self.slots_needed = n - got.len();
                    stash.extend(got);
                    return Err(None);
                }
                Err(e) => {
                    tracing::error!(
                        session = %self.ids.session,
                        error = %e,
                        "audit stream unavailable; refusing statement"
                    );
                    return Err(Some(
                        ProxyError::error(
                            "58000",
                            "pgveil: the audit log cannot record this statement, so it is refused",
                        )
                        .with_hint("the audit sink is failing; see the pgveil log"),
                    ));
                }
            }
        }
        Ok(got)
    }

    /// The event of report `index` of `outcome`, from members serialized ahead of time:
    /// building it copies no string or list.
    fn event(&mut self, outcome: &Outcome, index: usize) -> AuditEvent {
        let report = &outcome.statements[index];
        let session_json = self.audit_json.session(&SessionIds {
            session: &self.ids.session,
            user: &self.ids.user,
            role: self.role.as_ref(),
            client: self.ids.client.as_deref(),
            application: self.ids.application.as_deref(),
            database: &self.ids.database,
            purpose: self.purpose.as_ref(),
        });
        AuditEvent {
            event: EventKind::Statement,
            session_json: Some(session_json),
            kind: Some(report.kind.as_str().into()),
            decision: Some(report.decision.as_str().into()),
            statement_json: Some(
                self.audit_json
                    .statement(&self.shared.auditor, outcome, index),
            ),
            ..Default::default()
        }
    }

    /// What to do with `sql`, and the decision it came from with its context hash (None
    /// when refused or postponed before deciding).
    fn verdict(
        &mut self,
        sql: &str,
        tags: Option<&mut Vec<StatementTag>>,
    ) -> (Verdict, Option<(Arc<Outcome>, u64)>) {
        if let Some(e) = self.protocol_guard() {
            return (Verdict::Refuse(e), None);
        }
        if self.waits_for_resolution_change() {
            return (Verdict::Retry, None);
        }
        let started = Instant::now();
        let simple = tags.is_some();
        let (outcome, context) = self.decide(sql, simple);
        if self.should_refresh_for(sql, &outcome) {
            return (Verdict::Retry, None);
        }
        if self.restricted {
            match self.stale_sql_execute(&outcome) {
                Some(SqlPrepared::Refused(e)) => return (Verdict::Refuse(e), None),
                Some(SqlPrepared::Unsettled) => return (Verdict::Retry, None),
                Some(SqlPrepared::Known) | None => {}
            }
            if let Some(v) = self.fetch_hazard(&outcome) {
                return (v, None);
            }
            if self.uncommitted_ddl.is_some() && resolves_names(&outcome) {
                return (Verdict::Refuse(uncommitted_ddl_refusal()), None);
            }
            if resolves_names(&outcome) && self.catalog_behind() {
                return (Verdict::Refuse(catalog_behind_refusal()), None);
            }
        }
        // Events are written now for a simple Query (at completion) and for a refused
        // Parse; an allowed Parse or Bind is audited at each Execute instead.
        let wanted = if tags.is_some() || matches!(outcome.verdict, PolicyVerdict::Deny(_)) {
            outcome.statements.len()
        } else {
            0
        };
        let slots = match self.admit(wanted) {
            Ok(s) => s,
            Err(None) => return (Verdict::Retry, None),
            Err(Some(e)) => return (Verdict::Refuse(e), None),
        };
        let reason = match &outcome.verdict {
            PolicyVerdict::Deny(d) => Some(d.reason.as_str()),
            _ => None,
        };
        let mut slots = slots.into_iter();
        match tags {
            Some(tags) => {
                for index in 0..outcome.statements.len() {
                    tags.push(Box::new(Pending {
                        report: ReportRef {
                            outcome: outcome.clone(),
                            index,
                        },
                        reason,
                        slot: slots.next(),
                        started,
                    }));
                }
            }
            None => {
                // Extended protocol: a refused Parse never executes, so its event is
                // written (and counted) now; allowed statements are audited at each Execute.
                if reason.is_some() {
                    for (index, r) in outcome.statements.iter().enumerate() {
                        if let Some(m) = &self.role_metrics {
                            m.query(r.kind, QueryDecision::Deny, started.elapsed().as_secs_f64());
                        }
                        let mut ev = self.event(&outcome, index);
                        ev.reason = reason.map(str::to_owned);
                        ev.sqlstate = Some("42501".into());
                        if let Some(slot) = slots.next() {
                            slot.record(ev);
                        }
                    }
                }
            }
        }
        let v = match &outcome.verdict {
            PolicyVerdict::Allow => Verdict::Forward,
            PolicyVerdict::Rewrite(text) => match &outcome.row_masks {
                Some(m) if simple && self.masks_rows(&outcome) => Verdict::MaskRows(m.clone()),
                Some(m) if !simple && self.masks_rows_extended(&outcome) => {
                    Verdict::MaskRows(m.clone())
                }
                _ => Verdict::Rewrite(text.clone()),
            },
            PolicyVerdict::Deny(d) => {
                tracing::info!(
                    session = %self.ids.session,
                    user = %self.ids.user,
                    role = self.role.as_deref().unwrap_or("-"),
                    reason = d.reason.as_str(),
                    "statement refused"
                );
                if let Some(m) = &self.role_metrics {
                    m.denied(d.reason.as_str());
                }
                Verdict::Refuse(denial_error(d, &self.active, self.role.as_deref()))
            }
        };
        if !matches!(v, Verdict::Refuse(_)) {
            self.apply_effects(sql, &outcome);
        }
        (v, Some((outcome, context)))
    }
}

impl SessionHook for Enforcer {
    fn on_query(&mut self, sql: &str, tags: &mut Vec<StatementTag>) -> Verdict {
        self.batches += 1;
        let v = self.verdict(sql, Some(tags)).0;
        if !matches!(v, Verdict::Retry) {
            // Forwarded (a refusal as a query that fails): the server answers it.
            self.readies_owed += 1;
            if let Some(change) = &mut self.resolution_change {
                change.requested = true;
            }
        }
        v
    }

    fn on_undecodable_text(&mut self) -> Option<ProxyError> {
        // What the server runs is not what the proxy could analyse: fail closed for a
        // restricted role (under a UTF8 client_encoding the server rejects these bytes
        // anyway; under another one the encoding refusal applies).
        if !self.restricted {
            return None;
        }
        Some(self.protocol_guard().unwrap_or_else(|| {
            ProxyError::error(
                "42501",
                "pgveil: statement text must be valid UTF-8 for this role",
            )
        }))
    }

    fn on_parse(&mut self, name: &str, sql: &str) -> Verdict {
        // A statement forwarded unrewritten for masking in the proxy must not be
        // shadowed in our books by a second Parse of its name (which the server refuses,
        // keeping the first): its rows would go out unmasked.
        if !name.is_empty()
            && self
                .statements
                .get(name)
                .and_then(|p| p.outcome.as_ref())
                .is_some_and(|o| self.masks_rows_extended(o))
        {
            return Verdict::Refuse(ProxyError::error(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            ));
        }
        let (v, decided) = self.verdict(sql, None);
        // A refused Parse is sent to the server as one that fails: the books keep
        // what the server keeps.
        if !matches!(v, Verdict::Retry | Verdict::Refuse(_)) {
            let reusable_in = reusable_in(decided.as_ref());
            self.statements.parsed(
                name,
                Prepared {
                    sql: sql.into(),
                    outcome: decided.map(|(o, _)| o),
                    reusable_in,
                },
            );
        }
        v
    }

    fn on_bind(&mut self, portal: &str, statement: &str) -> Verdict {
        // PostgreSQL re-analyses a prepared statement after a search_path or catalog
        // change, so a decision taken at Parse time under another policy, path or
        // shadowing table is stale: a Bind decides again unless the decision context is
        // the one the decision was taken in.
        if self.waits_for_settle(statement) || self.waits_for_resolution_change() {
            return Verdict::Retry;
        }
        // A statement of SQL PREPARE (not in the protocol books) is re-analysed by the
        // server just the same: checked like its EXECUTE. A name in neither book is
        // one the proxy cannot vouch for (a DEALLOCATE it entered may have failed on
        // the server): refused, as the server refuses a name it does not hold.
        if self.restricted && self.statements.get(statement).is_none() {
            if statement.is_empty() {
                return Verdict::Refuse(ProxyError::error(
                    "26000",
                    "unnamed prepared statement does not exist",
                ));
            }
            match self.sql_prepared_state(statement) {
                SqlPrepared::Known => {}
                SqlPrepared::Unsettled => return Verdict::Retry,
                SqlPrepared::Refused(e) => return Verdict::Refuse(e),
            }
        }
        if self.restricted && (self.uncommitted_ddl.is_some() || self.catalog_behind()) {
            let resolves = self
                .statements
                .get(statement)
                .and_then(|p| p.outcome.as_deref())
                .is_none_or(resolves_names);
            if resolves && self.uncommitted_ddl.is_some() {
                return Verdict::Refuse(uncommitted_ddl_refusal());
            }
            if resolves {
                return Verdict::Refuse(catalog_behind_refusal());
            }
        }
        let known = self.statements.get(statement).map(|p| p.reusable_in);
        let unchanged = match known {
            Some(Some(then)) => self.protocol_guard().is_none() && self.context_now().0 == then,
            _ => false,
        };
        let stale = if unchanged {
            None
        } else {
            self.statements
                .get(statement)
                .map(|p| (p.sql.clone(), p.outcome.clone()))
        };
        if let Some((sql, old)) = stale {
            let (v, decided) = self.verdict(&sql, None);
            if matches!(v, Verdict::Retry) {
                return v;
            }
            let new = decided.as_ref().map(|(o, _)| o.clone());
            if !same_verdict(old.as_deref(), new.as_deref()) {
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
            if let Some(p) = self.statements.get_mut(statement) {
                p.reusable_in = reusable_in(decided.as_ref());
                if new.is_some() {
                    p.outcome = new;
                }
            }
        }
        let (sql, outcome) = match self.statements.get(statement) {
            Some(p) => (Some(p.sql.clone()), p.outcome.clone()),
            None => (None, None),
        };
        let displaces = self.portal_masked(portal);
        self.portal_ops
            .push_back((portal.to_owned(), displaces, self.batches));
        let generation = self.active.generation;
        self.portals.insert(
            portal.to_owned(),
            Bound {
                sql,
                outcome,
                generation,
            },
        );
        Verdict::Forward
    }

    fn on_execute(&mut self, portal: &str) -> (Verdict, Option<StatementTag>) {
        if let Some(v) = self.portal_hazard(portal) {
            return (v, None);
        }
        if let Some(v) = self.opened_under_another_policy(portal) {
            return (v, None);
        }
        let bound = self.portals.get(portal).and_then(|b| b.outcome.clone());
        if let Some(v) = bound.and_then(|o| self.fetch_hazard(&o)) {
            return (v, None);
        }
        let Some(report) = self
            .portals
            .get(portal)
            .and_then(|b| b.outcome.clone())
            .filter(|o| !o.statements.is_empty())
            .map(|outcome| ReportRef { outcome, index: 0 })
        else {
            return (Verdict::Forward, None);
        };
        let verdict = match &report.outcome.row_masks {
            // The masks count UTF-8 characters: under another client encoding (which
            // the policy does not let a restricted role set) refuse rather than guess.
            Some(_) if self.restricted && !self.encoding_ok => {
                return (Verdict::Refuse(encoding_refusal()), None);
            }
            Some(m) if self.masks_rows_extended(&report.outcome) => Verdict::MaskRows(m.clone()),
            _ => Verdict::Forward,
        };
        let slot = match self.admit(1) {
            Ok(mut s) => s.pop(),
            Err(None) => return (Verdict::Retry, None),
            Err(Some(e)) => return (Verdict::Refuse(e), None),
        };
        let tag = Box::new(Pending {
            report,
            reason: None,
            slot,
            started: Instant::now(),
        }) as StatementTag;
        (verdict, Some(tag))
    }

    fn describe_masks(&mut self, kind: u8, name: &str) -> Option<Arc<RowMasks>> {
        let outcome = if kind == b'S' {
            self.statements.get(name).and_then(|p| p.outcome.as_ref())
        } else {
            self.portals.get(name).and_then(|b| b.outcome.as_ref())
        }?;
        if self.masks_rows_extended(outcome) {
            outcome.row_masks.clone()
        } else {
            None
        }
    }

    fn mask_key(&self) -> Option<&MaskKey> {
        Some(&self.shared.key)
    }

    fn on_close(&mut self, kind: u8, name: &str) {
        if kind == b'S' {
            self.statements.closed(name);
        } else {
            let displaces = self.portal_masked(name);
            self.portal_ops
                .push_back((name.to_owned(), displaces, self.batches));
            self.portals.remove(name);
        }
    }

    fn on_statement_change(&mut self, change: StatementChange) {
        self.statements.settled(change);
        if std::mem::take(&mut self.awaiting_settle) {
            self.settle.notify_one();
        }
    }

    fn on_sync(&mut self) {
        self.batches += 1;
        self.statements.synced();
        self.readies_owed += 1;
        if let Some(change) = &mut self.resolution_change {
            change.requested = true;
        }
    }

    fn on_portal_change(&mut self, change: StatementChange) {
        if let Some((name, displaces_masked, _)) = self.portal_ops.pop_front() {
            if change == StatementChange::Made {
                // The server holds this Bind's portal now (or none after a Close).
                if !self.doubtful_portals.is_empty() {
                    self.doubtful_portals.remove(&name);
                }
            } else if displaces_masked {
                self.doubtful_portals.insert(name);
            }
        }
        if std::mem::take(&mut self.awaiting_settle) {
            self.settle.notify_one();
        }
    }

    fn on_stale_catalog(&mut self) -> Option<Preparation> {
        tracing::warn!(
            session = %self.ids.session,
            database = %self.ids.database,
            "a masked result did not match the catalog: closing the session, reloading the catalog"
        );
        let shared = self.shared.clone();
        let session = self.ids.session.clone();
        let db = self.ids.database.clone();
        let since = Instant::now();
        Some(Box::pin(async move {
            refresh_catalog(&shared, &session, &db, since).await
        }))
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

    fn on_complete(&mut self, tag: StatementTag, how: Completion) {
        let Ok(pending) = tag.downcast::<Pending>() else {
            return;
        };
        let Pending {
            report,
            reason,
            slot,
            started,
        } = *pending;
        let seconds = started.elapsed().as_secs_f64();
        for effect in &report.effects {
            if let SessionEffect::Prepare { name } = effect {
                let at = self
                    .prepares_in_flight
                    .iter()
                    .position(|p| p.name == *name && Arc::ptr_eq(&p.outcome, &report.outcome));
                if let Some(at) = at {
                    let p = self.prepares_in_flight.remove(at);
                    if matches!(how, Completion::Done { .. }) {
                        self.sql_prepared
                            .insert(p.name, (p.sql, p.outcome.verdict.clone()));
                    }
                    if std::mem::take(&mut self.awaiting_settle) {
                        self.settle.notify_one();
                    }
                }
            }
        }
        if matches!(how, Completion::Done { .. }) {
            for effect in &report.effects {
                match effect {
                    SessionEffect::Deallocate { name } => {
                        self.statements.deallocated(name.as_deref());
                    }
                    SessionEffect::DeclareCursor { name } => {
                        // The server holds this cursor now, and no other of the name.
                        if let Some(book) = self.cursors.get_mut(name) {
                            if book
                                .iter()
                                .any(|o| Arc::ptr_eq(&o.outcome, &report.outcome))
                            {
                                book.retain(|o| Arc::ptr_eq(&o.outcome, &report.outcome));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let (rows, sqlstate) = match &how {
            Completion::Done { rows } => (Some(*rows), None),
            Completion::Suspended { rows } => (Some(*rows), None),
            Completion::Empty => (Some(0), None),
            Completion::Failed { sqlstate } => (None, sqlstate.clone()),
            Completion::Skipped => (None, None),
        };
        let skipped = how == Completion::Skipped;
        if let Some(m) = self.role_metrics.as_ref().filter(|_| !skipped) {
            let decision = match report.decision {
                Decision::Allow => QueryDecision::Allow,
                Decision::Rewrite => QueryDecision::Rewrite,
                Decision::Deny => QueryDecision::Deny,
            };
            m.query(report.kind, decision, seconds);
            if let (Some(n), false) = (rows, report.decision == Decision::Deny) {
                m.rows(n);
            }
            if !report.classes.is_empty() {
                let memo = match self.masked_counters.take() {
                    Some(c) if c.counts(&report) => c,
                    _ => MaskedCounters::of(&report, m),
                };
                for c in &memo.counters {
                    c.inc();
                }
                self.masked_counters = Some(memo);
            }
        }
        // Without audit sinks `admit` gives no slot, so no event is built.
        if let Some(slot) = slot {
            let mut ev = self.event(&report.outcome, report.index);
            ev.reason = reason.map(str::to_owned);
            ev.rows = rows;
            ev.sqlstate = sqlstate;
            if skipped {
                ev.details = Some(serde_json::json!({ "not_run": true }));
            } else {
                ev.duration_ms = Some(seconds * 1000.0);
            }
            slot.record(ev);
        }
    }

    fn on_ready(&mut self, status: u8) {
        self.tx_status = status;
        self.readies_owed = self.readies_owed.saturating_sub(1);
        let in_flight = self.prepares_in_flight.len();
        self.prepares_in_flight.retain_mut(|p| {
            p.readies_left = p.readies_left.saturating_sub(1);
            p.readies_left > 0
        });
        if self.prepares_in_flight.len() < in_flight && std::mem::take(&mut self.awaiting_settle) {
            self.settle.notify_one();
        }
        if let Some(left) = &mut self.uncommitted_ddl {
            *left = left.saturating_sub(1);
            if *left == 0 && status == b'I' {
                self.uncommitted_ddl = None;
            }
        }
        if let Some(left) = &mut self.ddl_unmarked {
            *left = left.saturating_sub(1);
            if *left == 0 && status == b'I' {
                // Committed (or rolled back) before the client hears of it: a restricted
                // statement sent after this waits for a catalog read after it.
                self.ddl_unmarked = None;
                self.shared
                    .catalog
                    .mark_dirty(&self.ids.database, Instant::now());
            }
        }
        if let Some(change) = &mut self.resolution_change {
            change.readies_left = change.readies_left.saturating_sub(1);
            if change.readies_left == 0 {
                if change.catalog {
                    self.refresh_since = Some(Instant::now());
                }
                self.resolution_change = None;
                if std::mem::take(&mut self.awaiting_settle) {
                    self.settle.notify_one();
                }
            }
        }
        if status == b'I' {
            // Outside a transaction no portal survives.
            self.doubtful_portals.clear();
        }
        if self.changed_in_tx {
            // Inside the transaction a ROLLBACK TO SAVEPOINT may have undone the change;
            // at its end a ROLLBACK (or an abort) did: re-read what the server uses.
            self.wants_probe = true;
            if self.restricted {
                self.refresh_since.get_or_insert_with(Instant::now);
            }
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

    fn scrub(&mut self, tag: u8, body: &[u8]) -> Option<Vec<u8>> {
        if self.restricted {
            if tag == b'N' && super::scrub::drop_notice(body) {
                // An empty replacement drops the notice (see SessionHook::scrub).
                return Some(Vec::new());
            }
            super::scrub::scrub(body)
        } else {
            None
        }
    }

    fn max_rows(&self) -> Option<u64> {
        self.max_rows
    }

    fn prepare(&mut self) -> Option<Preparation> {
        let mut since = self.refresh_since.take();
        if let Some(needed) = self.catalog_wait() {
            since = Some(since.map_or(needed, |s| s.max(needed)));
        }
        let needed = std::mem::take(&mut self.slots_needed);
        let settle = self.awaiting_settle.then(|| self.settle.clone());
        if since.is_none() && needed == 0 && settle.is_none() {
            return None;
        }
        let shared = self.shared.clone();
        let db = self.ids.database.clone();
        let session = self.ids.session.clone();
        let stash = self.slots.clone();
        let unavailable = self.audit_unavailable.clone();
        Some(Box::pin(async move {
            if let Some(settle) = settle {
                // Woken (or already given a permit) when the server answers a change.
                settle.notified().await;
            }
            if let Some(since) = since {
                refresh_catalog(&shared, &session, &db, since).await;
            }
            for _ in 0..needed {
                match shared.auditor.admit().await {
                    Ok(slot) => stash.lock().unwrap_or_else(|p| p.into_inner()).push(slot),
                    Err(_) => {
                        unavailable.store(true, std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                }
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
        assert_eq!(
            purpose_from_startup(&p("options", "-c pgveil.purpos\\e=a\\ b")),
            Some("a b".into())
        );
    }

    #[test]
    fn options_are_split_like_postgresql() {
        let p = vec![(
            "options".to_owned(),
            "-c rol\\e=x  --client_encodin\\g=SJIS -csearch_path=a,\\ b".to_owned(),
        )];
        let got = startup_settings(&p);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["role", "client_encoding", "search_path"]);
        assert_eq!(got[2].1, "a, b");
    }
}
