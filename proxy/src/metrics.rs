//! Prometheus metrics: the counters SREs scrape from `/metrics`.
//!
//! The API is verbs that take domain values (`connection_closed(ConnResult::Timeout)`,
//! `query(role, kind, decision, seconds)`) and hide label handling, so callers cannot mint
//! unbounded label values and the hot path never formats strings. Label-resolved series
//! are cached: per-role handles ([`RoleMetrics`]) hold every counter a session touches, so
//! counting a query is a few atomic adds with no hashing and no lock.
//!
//! Label values are bounded: roles and classes come from the policy, audit sinks from the
//! config, everything else from enums. As a last guard against a caller passing user
//! input, at most [`MAX_DYNAMIC_LABELS`] distinct roles, classes per role, deny reasons
//! per role and sinks are tracked; further values are counted under `overflow`.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use dashmap::DashMap;
use pgveil_policy::model::StatementKind;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Prefix of every pgveil metric (`pgveil_…`).
pub const NAMESPACE: &str = "pgveil";

/// Most distinct values tracked per dynamic label before values collapse into
/// [`OVERFLOW_LABEL`]; protects Prometheus from a caller that leaks user input.
pub const MAX_DYNAMIC_LABELS: usize = 256;

/// Label value used once [`MAX_DYNAMIC_LABELS`] is reached.
pub const OVERFLOW_LABEL: &str = "overflow";

/// Latency buckets for whole statements: 50µs … 10s, dense below a millisecond where a
/// proxy's overhead lives.
const QUERY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Buckets for analysis + rewrite, which is pure CPU: 10µs … 100ms.
const REWRITE_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1,
];

/// Room for statement kinds in a role's pre-resolved query counters; a kind whose index
/// does not fit (a future variant) still counts, through the slower labelled lookup.
const KIND_SLOTS: usize = 32;

/// How a client connection ended (`connections_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnResult {
    /// The session ran and ended normally (Terminate or client EOF).
    Ok,
    /// Authentication failed (bad password, unknown user refused by PostgreSQL).
    AuthFailed,
    /// The authenticated user maps to no role and `unknown_users = "deny"`.
    RefusedRole,
    /// `limits.max_connections` reached (SQLSTATE 53300).
    TooMany,
    /// PostgreSQL could not be reached or dropped the session.
    UpstreamError,
    /// The client broke the wire protocol (bad length, unexpected message, TLS failure).
    ProtocolError,
    /// `limits.startup_timeout_ms` expired before the session was established.
    Timeout,
}

impl ConnResult {
    const ALL: [ConnResult; 7] = [
        ConnResult::Ok,
        ConnResult::AuthFailed,
        ConnResult::RefusedRole,
        ConnResult::TooMany,
        ConnResult::UpstreamError,
        ConnResult::ProtocolError,
        ConnResult::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnResult::Ok => "ok",
            ConnResult::AuthFailed => "auth_failed",
            ConnResult::RefusedRole => "refused_role",
            ConnResult::TooMany => "too_many",
            ConnResult::UpstreamError => "upstream_error",
            ConnResult::ProtocolError => "protocol_error",
            ConnResult::Timeout => "timeout",
        }
    }
}

impl fmt::Display for ConnResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the policy did with a statement (`queries_total{decision}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryDecision {
    /// Forwarded unchanged.
    Allow,
    /// Forwarded with masked projections.
    Rewrite,
    /// Refused with an ErrorResponse.
    Deny,
}

impl QueryDecision {
    const ALL: [QueryDecision; 3] = [
        QueryDecision::Allow,
        QueryDecision::Rewrite,
        QueryDecision::Deny,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryDecision::Allow => "allow",
            QueryDecision::Rewrite => "rewrite",
            QueryDecision::Deny => "deny",
        }
    }
}

impl fmt::Display for QueryDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which leg bytes travelled on (`bytes_total{direction}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToUpstream,
    UpstreamToClient,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToUpstream => "client_to_upstream",
            Direction::UpstreamToClient => "upstream_to_client",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The process-wide metrics, registered once in [`metrics()`].
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        Metrics::new().expect("metric names and label sets are static, valid and unique")
    })
}

/// All pgveil metrics with their own [`Registry`] (not the prometheus default one, so
/// libraries cannot leak series into `/metrics`).
pub struct Metrics {
    registry: Registry,
    connections_active: IntGauge,
    /// Indexed like [`ConnResult::ALL`].
    connections_total: [IntCounter; 7],
    queries_total: IntCounterVec,
    query_duration: HistogramVec,
    rewrite_duration: Histogram,
    masked_columns: IntCounterVec,
    denied: IntCounterVec,
    rows_returned: IntCounterVec,
    audit_events: IntCounterVec,
    audit_dropped: IntCounter,
    audit_queue_depth: IntGauge,
    reloads_ok: IntCounter,
    reloads_failed: IntCounter,
    policy_info: IntGaugeVec,
    /// The `sha256` label currently set to 1 in `policy_info`, removed on change.
    policy_sha256: Mutex<Option<String>>,
    upstream_errors: IntCounter,
    bytes_client_to_upstream: IntCounter,
    bytes_upstream_to_client: IntCounter,
    decision_cache_hit: IntCounter,
    decision_cache_miss: IntCounter,
    unmatched_tags: IntGauge,
    catalog_loads_ok: IntCounter,
    catalog_loads_failed: IntCounter,
    /// Pre-resolved per-role handles, created on first use.
    roles: DashMap<String, Arc<RoleMetrics>>,
    /// `audit_events_total{sink, result=ok|failed}` per sink, created on first use.
    sinks: DashMap<String, (IntCounter, IntCounter)>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("roles", &self.roles.len())
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

fn hist_opts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(NAMESPACE)
        .buckets(buckets.to_vec())
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, prometheus::Error> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry. Fails only if a definition
    /// is invalid, which is a programming error; tests use it for isolated instances.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;

        let connections_active = register(
            r,
            IntGauge::with_opts(opts(
                "connections_active",
                "Client connections currently open.",
            ))?,
        )?;
        let connections_vec = register(
            r,
            IntCounterVec::new(
                opts("connections_total", "Client connections by how they ended."),
                &["result"],
            )?,
        )?;
        let connections_total =
            ConnResult::ALL.map(|res| connections_vec.with_label_values(&[res.as_str()]));
        let queries_total = register(
            r,
            IntCounterVec::new(
                opts(
                    "queries_total",
                    "Statements by role, statement kind and policy decision.",
                ),
                &["role", "kind", "decision"],
            )?,
        )?;
        let query_duration = register(
            r,
            HistogramVec::new(
                hist_opts(
                    "query_duration_seconds",
                    "Time from a statement reaching pgveil to its last reply leaving it.",
                    QUERY_BUCKETS,
                ),
                &["role"],
            )?,
        )?;
        let rewrite_duration = register(
            r,
            Histogram::with_opts(hist_opts(
                "rewrite_duration_seconds",
                "Time spent analysing, deciding and rewriting one statement decided afresh (decision cache misses; cached decisions are a lookup and not observed).",
                REWRITE_BUCKETS,
            ))?,
        )?;
        let masked_columns = register(
            r,
            IntCounterVec::new(
                opts(
                    "masked_columns_total",
                    "Column reads served through a mask, by role and data class.",
                ),
                &["role", "class"],
            )?,
        )?;
        let denied = register(
            r,
            IntCounterVec::new(
                opts("denied_total", "Refused statements by role and reason."),
                &["role", "reason"],
            )?,
        )?;
        let rows_returned = register(
            r,
            IntCounterVec::new(
                opts("rows_returned_total", "DataRows sent to clients, by role."),
                &["role"],
            )?,
        )?;
        let audit_events = register(
            r,
            IntCounterVec::new(
                opts(
                    "audit_events_total",
                    "Audit events by sink and result (ok, failed, dropped).",
                ),
                &["sink", "result"],
            )?,
        )?;
        let audit_dropped = audit_events.with_label_values(&["queue", "dropped"]);
        let audit_queue_depth = register(
            r,
            IntGauge::with_opts(opts(
                "audit_queue_depth",
                "Audit events waiting to be written.",
            ))?,
        )?;
        let reloads = register(
            r,
            IntCounterVec::new(
                opts("policy_reloads_total", "Policy reloads by result."),
                &["result"],
            )?,
        )?;
        let reloads_ok = reloads.with_label_values(&["ok"]);
        let reloads_failed = reloads.with_label_values(&["failed"]);
        let policy_info = register(
            r,
            IntGaugeVec::new(
                opts("policy_info", "1 for the SHA-256 of the policy in force."),
                &["sha256"],
            )?,
        )?;
        let upstream_errors = register(
            r,
            IntCounter::with_opts(opts(
                "upstream_errors_total",
                "Failures to connect to or talk with PostgreSQL.",
            ))?,
        )?;
        let bytes = register(
            r,
            IntCounterVec::new(
                opts("bytes_total", "Bytes relayed, by direction."),
                &["direction"],
            )?,
        )?;
        let bytes_client_to_upstream =
            bytes.with_label_values(&[Direction::ClientToUpstream.as_str()]);
        let bytes_upstream_to_client =
            bytes.with_label_values(&[Direction::UpstreamToClient.as_str()]);
        let cache = register(
            r,
            IntCounterVec::new(
                opts(
                    "decision_cache_total",
                    "Policy decision cache lookups by result (hit, miss).",
                ),
                &["result"],
            )?,
        )?;
        let decision_cache_hit = cache.with_label_values(&["hit"]);
        let decision_cache_miss = cache.with_label_values(&["miss"]);
        let unmatched_tags = register(
            r,
            IntGauge::with_opts(opts(
                "policy_unmatched_tags",
                "Column tags of the policy that match no column in the catalog.",
            ))?,
        )?;
        let catalog_loads = register(
            r,
            IntCounterVec::new(
                opts(
                    "catalog_loads_total",
                    "Catalog snapshot loads by result (ok, failed).",
                ),
                &["result"],
            )?,
        )?;
        let catalog_loads_ok = catalog_loads.with_label_values(&["ok"]);
        let catalog_loads_failed = catalog_loads.with_label_values(&["failed"]);
        let build_info = register(
            r,
            IntGaugeVec::new(
                opts("build_info", "1, labelled with the pgveil version."),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Metrics {
            registry,
            connections_active,
            connections_total,
            queries_total,
            query_duration,
            rewrite_duration,
            masked_columns,
            denied,
            rows_returned,
            audit_events,
            audit_dropped,
            audit_queue_depth,
            reloads_ok,
            reloads_failed,
            policy_info,
            policy_sha256: Mutex::new(None),
            upstream_errors,
            bytes_client_to_upstream,
            bytes_upstream_to_client,
            decision_cache_hit,
            decision_cache_miss,
            unmatched_tags,
            catalog_loads_ok,
            catalog_loads_failed,
            roles: DashMap::new(),
            sinks: DashMap::new(),
        })
    }

    /// Every metric in the Prometheus text exposition format (what `/metrics` serves).
    pub fn encode_text(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(buf)
    }

    /// The registry, for callers that want to add their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    // ---- connections ----

    /// A client connection was accepted and its session started.
    pub fn connection_opened(&self) {
        self.connections_active.inc();
    }

    /// A session started with [`Metrics::connection_opened`] ended.
    pub fn connection_closed(&self, result: ConnResult) {
        self.connections_active.dec();
        self.connection_refused(result);
    }

    /// A connection ended before it was counted as open (e.g. `too_many`): counts the
    /// result without touching `connections_active`.
    pub fn connection_refused(&self, result: ConnResult) {
        self.connections_total[result as usize].inc();
    }

    /// RAII form of opened/closed: the guard decrements `connections_active` when dropped,
    /// so early returns cannot leak the gauge. The result defaults to `ok`.
    pub fn track_connection(&self) -> ConnectionGuard<'_> {
        self.connection_opened();
        ConnectionGuard {
            metrics: self,
            result: ConnResult::Ok,
        }
    }

    // ---- statements ----

    /// The pre-resolved counters of `role`; sessions fetch this once after
    /// authentication and count through it with no lookups.
    pub fn role(&self, role: &str) -> Arc<RoleMetrics> {
        if let Some(r) = self.roles.get(role) {
            return Arc::clone(&r);
        }
        let label = if self.roles.len() >= MAX_DYNAMIC_LABELS {
            OVERFLOW_LABEL
        } else {
            role
        };
        let entry = self
            .roles
            .entry(label.to_owned())
            .or_insert_with(|| Arc::new(RoleMetrics::new(self, label)));
        Arc::clone(&entry)
    }

    /// One statement finished: counts it and records its duration.
    pub fn query(&self, role: &str, kind: StatementKind, decision: QueryDecision, seconds: f64) {
        self.role(role).query(kind, decision, seconds);
    }

    /// A statement was refused; `reason` is a fixed label from the decision (e.g.
    /// `table`, `column`, `function`, `unparsable`).
    pub fn denied(&self, role: &str, reason: &'static str) {
        self.role(role).denied(reason);
    }

    /// `n` DataRows were sent to a client of `role`.
    pub fn rows(&self, role: &str, n: u64) {
        self.role(role).rows(n);
    }

    /// `n` column reads of `class` were served masked to `role`.
    pub fn masked(&self, role: &str, class: &str, n: u64) {
        self.role(role).masked(class, n);
    }

    /// Time spent analysing, deciding and rewriting one statement.
    pub fn rewrite(&self, seconds: f64) {
        self.rewrite_duration.observe(seconds);
    }

    /// A decision cache lookup hit (`true`) or missed.
    pub fn decision_cache(&self, hit: bool) {
        if hit {
            self.decision_cache_hit.inc();
        } else {
            self.decision_cache_miss.inc();
        }
    }

    // ---- wire ----

    /// `n` bytes were relayed in `dir`; call once per read batch, not per message.
    pub fn bytes(&self, dir: Direction, n: u64) {
        match dir {
            Direction::ClientToUpstream => self.bytes_client_to_upstream.inc_by(n),
            Direction::UpstreamToClient => self.bytes_upstream_to_client.inc_by(n),
        }
    }

    /// Connecting to or talking with PostgreSQL failed.
    pub fn upstream_error(&self) {
        self.upstream_errors.inc();
    }

    // ---- policy ----

    /// The policy with this SHA-256 (hex) is now in force: `policy_info{sha256}` is 1 for
    /// it and the previous value's series is removed. Used at startup and by reloads.
    pub fn policy_loaded(&self, sha256: &str) {
        let mut current = self
            .policy_sha256
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_deref() == Some(sha256) {
            return;
        }
        if let Some(old) = current.take() {
            // The old series exists (we set it), so removal cannot fail meaningfully.
            let _ = self.policy_info.remove_label_values(&[old.as_str()]);
        }
        self.policy_info.with_label_values(&[sha256]).set(1);
        *current = Some(sha256.to_owned());
    }

    /// A reload succeeded and the policy with this SHA-256 is in force.
    pub fn policy_reloaded(&self, sha256: &str) {
        self.reloads_ok.inc();
        self.policy_loaded(sha256);
    }

    /// A reload failed; the previous policy stays in force and `policy_info` is unchanged.
    pub fn policy_reload_failed(&self) {
        self.reloads_failed.inc();
    }

    /// How many policy column tags match no catalog column (after load or a catalog refresh).
    pub fn unmatched_tags(&self, n: usize) {
        self.unmatched_tags.set(saturating_i64(n));
    }

    /// A catalog snapshot load finished (`ok`) or failed.
    pub fn catalog_load(&self, ok: bool) {
        if ok {
            self.catalog_loads_ok.inc();
        } else {
            self.catalog_loads_failed.inc();
        }
    }

    // ---- audit ----

    /// An event was written by `sink` (the sink's kind or name from the config).
    pub fn audit_written(&self, sink: &str) {
        self.sink(sink, |(ok, _)| ok.inc());
    }

    /// `n` events were written by `sink` in one flush (one label lookup for all).
    pub fn audit_written_n(&self, sink: &str, n: usize) {
        self.sink(sink, |(ok, _)| ok.inc_by(n as u64));
    }

    /// `sink` failed to write an event.
    pub fn audit_failed(&self, sink: &str) {
        self.sink(sink, |(_, failed)| failed.inc());
    }

    /// `n` events were dropped (`on_failure = "drop"` with a full queue or failing sinks);
    /// counted as `audit_events_total{sink="queue",result="dropped"}`.
    pub fn audit_dropped(&self, n: u64) {
        self.audit_dropped.inc_by(n);
    }

    /// Events waiting in the audit queue.
    pub fn audit_queue_depth(&self, n: usize) {
        self.audit_queue_depth.set(saturating_i64(n));
    }

    fn sink(&self, sink: &str, f: impl FnOnce(&(IntCounter, IntCounter))) {
        if let Some(counters) = self.sinks.get(sink) {
            f(&counters);
            return;
        }
        let label = if self.sinks.len() >= MAX_DYNAMIC_LABELS {
            OVERFLOW_LABEL
        } else {
            sink
        };
        let entry = self.sinks.entry(label.to_owned()).or_insert_with(|| {
            (
                self.audit_events.with_label_values(&[label, "ok"]),
                self.audit_events.with_label_values(&[label, "failed"]),
            )
        });
        f(&entry);
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Keeps `connections_active` right across early returns; see [`Metrics::track_connection`].
#[derive(Debug)]
pub struct ConnectionGuard<'a> {
    metrics: &'a Metrics,
    result: ConnResult,
}

impl ConnectionGuard<'_> {
    /// How the connection ended, recorded when the guard drops.
    pub fn set_result(&mut self, result: ConnResult) {
        self.result = result;
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.metrics.connection_closed(self.result);
    }
}

/// The series of one role, resolved once so that counting never hashes label values.
pub struct RoleMetrics {
    role: String,
    queries_vec: IntCounterVec,
    /// `queries_total` handles indexed by `kind as usize * 3 + decision as usize`.
    queries: Box<[OnceLock<IntCounter>]>,
    duration: Histogram,
    rows: IntCounter,
    masked_vec: IntCounterVec,
    masked: DashMap<String, IntCounter, foldhash::fast::RandomState>,
    denied_vec: IntCounterVec,
    denied: DashMap<&'static str, IntCounter, foldhash::fast::RandomState>,
}

impl fmt::Debug for RoleMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleMetrics")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl RoleMetrics {
    fn new(m: &Metrics, role: &str) -> Self {
        RoleMetrics {
            role: role.to_owned(),
            queries_vec: m.queries_total.clone(),
            queries: (0..KIND_SLOTS * QueryDecision::ALL.len())
                .map(|_| OnceLock::new())
                .collect(),
            duration: m.query_duration.with_label_values(&[role]),
            rows: m.rows_returned.with_label_values(&[role]),
            masked_vec: m.masked_columns.clone(),
            masked: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            denied_vec: m.denied.clone(),
            denied: DashMap::with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// The role label these series carry.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// One statement finished: counts it and records its duration.
    pub fn query(&self, kind: StatementKind, decision: QueryDecision, seconds: f64) {
        let labels = || [self.role.as_str(), kind.as_str(), decision.as_str()];
        let slot = kind as usize * QueryDecision::ALL.len() + decision as usize;
        match self.queries.get(slot) {
            Some(cell) if (kind as usize) < KIND_SLOTS => cell
                .get_or_init(|| self.queries_vec.with_label_values(&labels()))
                .inc(),
            _ => self.queries_vec.with_label_values(&labels()).inc(),
        }
        self.duration.observe(seconds);
    }

    /// `n` DataRows were sent.
    pub fn rows(&self, n: u64) {
        self.rows.inc_by(n);
    }

    /// A statement was refused for `reason`.
    pub fn denied(&self, reason: &'static str) {
        if let Some(c) = self.denied.get(reason) {
            c.inc();
            return;
        }
        let label = if self.denied.len() >= MAX_DYNAMIC_LABELS {
            OVERFLOW_LABEL
        } else {
            reason
        };
        self.denied
            .entry(label)
            .or_insert_with(|| {
                self.denied_vec
                    .with_label_values(&[self.role.as_str(), label])
            })
            .inc();
    }

    /// `n` column reads of `class` were served masked.
    pub fn masked(&self, class: &str, n: u64) {
        self.masked_counter(class).inc_by(n);
    }

    /// The counter of column reads of `class` served masked (callers that count the
    /// same classes again and again keep it instead of looking it up each time).
    pub fn masked_counter(&self, class: &str) -> IntCounter {
        if let Some(c) = self.masked.get(class) {
            return c.clone();
        }
        let label = if self.masked.len() >= MAX_DYNAMIC_LABELS {
            OVERFLOW_LABEL
        } else {
            class
        };
        self.masked
            .entry(label.to_owned())
            .or_insert_with(|| {
                self.masked_vec
                    .with_label_values(&[self.role.as_str(), label])
            })
            .clone()
    }
}

#[cfg(test)]
mod tests;
