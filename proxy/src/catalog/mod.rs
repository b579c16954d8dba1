//! The catalog cache: relations with their ordered columns, view dependencies, the
//! constraints that check written rows, non-built-in functions and schemas, per database, read through the `[catalog]`
//! account and shared by every session.
//!
//! Snapshots are immutable and versioned (the version is part of the decision cache
//! key). They are reloaded after DDL seen through the proxy, when a restricted session
//! meets a relation the snapshot does not know, on a TTL, and after a policy reload.
//!
//! DDL committed through the proxy marks its database dirty ([`CatalogCache::mark_dirty`]):
//! one background reload runs per database at a time, and marks arriving meanwhile cause
//! one more load after it, so a burst of DDL costs a handful of loads. Restricted
//! sessions compare [`CatalogCache::marks`] with the count they saw before each decision
//! and wait for a load that started after the latest mark ([`CatalogCache::dirty_after`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use pgveil_policy::catalog::{
    Catalog, Column, ColumnRef, Constraint, ConstraintKind, OtherEnd, Relation, RelationKind,
};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::metrics::metrics;
use crate::upstream::{Upstream, UpstreamError};

const RELATIONS_SQL: &str = include_str!("relations.sql");
const VIEW_DEPENDENCIES_SQL: &str = include_str!("view_dependencies.sql");
const FUNCTIONS_SQL: &str = include_str!("functions.sql");
const CONSTRAINTS_SQL: &str = include_str!("constraints.sql");

/// The catalog could not be read.
#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("no [catalog] user is configured")]
    NotConfigured,
    #[error("catalog connection: {0}")]
    Connect(#[from] UpstreamError),
    #[error("catalog query on database \"{db}\": {source}")]
    Query {
        db: String,
        source: tokio_postgres::Error,
    },
}

/// Credentials of the read-only catalog account.
#[derive(Debug, Clone)]
pub struct CatalogLogin {
    pub user: String,
    pub password: Option<String>,
}

/// One database's catalog at one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub database: String,
    relations: HashMap<(String, String), Relation>,
    schemas: HashSet<String>,
    functions: HashMap<String, Vec<String>>,
    version: u64,
    /// When the snapshot was read.
    pub loaded_at: Instant,
}

impl Snapshot {
    /// Every (schema, table, column), for reporting tags that match nothing.
    pub fn columns(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.relations.values().flat_map(|r| {
            r.columns
                .iter()
                .map(move |c| (r.schema.as_str(), r.name.as_str(), c.name.as_str()))
        })
    }

    /// Number of relations known.
    pub fn len(&self) -> usize {
        self.relations.len()
    }

    /// True when no relation is known.
    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }
}

impl Catalog for Snapshot {
    fn relation(&self, schema: &str, name: &str) -> Option<&Relation> {
        self.relations.get(&(schema.to_owned(), name.to_owned()))
    }

    fn schema_exists(&self, schema: &str) -> bool {
        self.schemas.contains(schema)
    }

    fn user_function_schemas(&self, name: &str) -> Vec<String> {
        self.functions.get(name).cloned().unwrap_or_default()
    }

    fn version(&self) -> u64 {
        self.version
    }
}

/// One database's pending catalog change: the latest DDL completion marked through the
/// proxy and whether a background reload is scheduled for it.
#[derive(Default)]
struct Dirty {
    at: Mutex<Option<Instant>>,
    scheduled: AtomicBool,
}

impl Dirty {
    fn at(&self) -> Option<Instant> {
        *self.at.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Catalog snapshots by database, shared by all sessions.
pub struct CatalogCache {
    upstream: Upstream,
    login: Option<CatalogLogin>,
    by_db: DashMap<String, Arc<Snapshot>, foldhash::fast::RandomState>,
    loading: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    next_version: AtomicU64,
    /// Bumped after every snapshot change, so sessions can keep their snapshot until
    /// it moves instead of looking it up for every statement.
    changes: AtomicU64,
    /// Latest DDL completion per database (see [`CatalogCache::mark_dirty`]).
    dirty: DashMap<String, Arc<Dirty>, foldhash::fast::RandomState>,
    /// Bumped after every mark, so restricted sessions notice one with an atomic load.
    marks: AtomicU64,
    /// Catalog loads attempted (successful or not), for tests and metrics.
    loads: AtomicU64,
    /// Snapshots older than this are reloaded by the background refresher.
    pub ttl: Duration,
}

impl CatalogCache {
    /// A cache that reads through `upstream` with `login`.
    pub fn new(upstream: Upstream, login: Option<CatalogLogin>, ttl: Duration) -> CatalogCache {
        CatalogCache {
            upstream,
            login,
            by_db: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            loading: DashMap::new(),
            next_version: AtomicU64::new(1),
            changes: AtomicU64::new(0),
            dirty: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            marks: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            ttl,
        }
    }

    /// Whether a catalog account is configured at all.
    pub fn is_configured(&self) -> bool {
        self.login.is_some()
    }

    /// The current snapshot of `db`, if one was loaded.
    pub fn get(&self, db: &str) -> Option<Arc<Snapshot>> {
        self.by_db.get(db).map(|s| s.clone())
    }

    /// A counter that moves whenever any database's snapshot is replaced.
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A counter that moves whenever any database is marked dirty: a session that saw
    /// the same value before has no newer DDL to wait for.
    pub fn marks(&self) -> u64 {
        self.marks.load(Ordering::Acquire)
    }

    /// How many catalog loads were attempted since start.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// When DDL on `db` last completed through the proxy, if the current snapshot was
    /// loaded before that (a decision must then wait for `refresh(db, at)`).
    pub fn dirty_after(&self, db: &str) -> Option<Instant> {
        let at = self.dirty.get(db)?.at()?;
        match self.get(db) {
            Some(s) if s.loaded_at >= at => None,
            _ => Some(at),
        }
    }

    /// DDL on `db` completed (or its transaction committed) through the proxy at `at`
    /// (the ReadyForQuery that ended it): restricted sessions must not decide against
    /// an older snapshot. Schedules one background reload unless one is running, which
    /// then loads once more after it, so a burst of marks costs few loads.
    pub fn mark_dirty(self: &Arc<Self>, db: &str, at: Instant) {
        let dirty = self.dirty.entry(db.to_owned()).or_default().clone();
        {
            let mut latest = dirty.at.lock().unwrap_or_else(|p| p.into_inner());
            if latest.is_none_or(|l| l < at) {
                *latest = Some(at);
            }
        }
        self.marks.fetch_add(1, Ordering::AcqRel);
        if !self.is_configured() || dirty.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to load in: restricted sessions still wait for the mark.
            dirty.scheduled.store(false, Ordering::Release);
            return;
        };
        let cache = self.clone();
        let db = db.to_owned();
        runtime.spawn(async move { cache.reload_dirty(&db, &dirty).await });
    }

    /// The background reload of a dirty database: loads until the snapshot is at least
    /// as recent as the latest mark, then unschedules itself (checking once more for a
    /// mark that came in between).
    async fn reload_dirty(&self, db: &str, dirty: &Dirty) {
        loop {
            while let Some(at) = self.pending(db, dirty) {
                if let Err(e) = self.refresh(db, at).await {
                    // Restricted sessions load (or refuse) themselves; the TTL retries.
                    warn!(database = %db, error = %e, "catalog reload after DDL failed");
                    dirty.scheduled.store(false, Ordering::Release);
                    return;
                }
            }
            dirty.scheduled.store(false, Ordering::Release);
            if self.pending(db, dirty).is_none() || dirty.scheduled.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// The mark a background reload still has to catch up with: none when no snapshot
    /// of `db` was ever loaded (no restricted session uses it yet).
    fn pending(&self, db: &str, dirty: &Dirty) -> Option<Instant> {
        let at = dirty.at()?;
        let snapshot = self.get(db)?;
        (snapshot.loaded_at < at).then_some(at)
    }

    /// Every cached snapshot.
    pub fn snapshots(&self) -> Vec<Arc<Snapshot>> {
        self.by_db.iter().map(|e| e.value().clone()).collect()
    }

    /// The snapshot of `db`, loading it if there is none yet.
    pub async fn get_or_load(&self, db: &str) -> Result<Arc<Snapshot>, CatalogError> {
        match self.get(db) {
            Some(s) => Ok(s),
            None => self.refresh(db, Instant::now()).await,
        }
    }

    /// Reload `db` unless a snapshot read at or after `needed_since` already exists
    /// (so many sessions asking at once cause one load).
    pub async fn refresh(
        &self,
        db: &str,
        needed_since: Instant,
    ) -> Result<Arc<Snapshot>, CatalogError> {
        let lock = self
            .loading
            .entry(db.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let _guard = lock.lock().await;
        if let Some(s) = self.get(db) {
            if s.loaded_at >= needed_since {
                return Ok(s);
            }
        }
        let started = Instant::now();
        self.loads.fetch_add(1, Ordering::Relaxed);
        let loaded = self.load(db).await;
        metrics().catalog_load(loaded.is_ok());
        let snapshot = Arc::new(loaded?);
        debug!(
            database = db,
            relations = snapshot.len(),
            ms = started.elapsed().as_millis() as u64,
            "catalog loaded"
        );
        self.by_db.insert(db.to_owned(), snapshot.clone());
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(snapshot)
    }

    /// Reload every cached database (policy reload, TTL).
    pub async fn refresh_all(&self) {
        let dbs: Vec<String> = self.by_db.iter().map(|e| e.key().clone()).collect();
        for db in dbs {
            if let Err(e) = self.refresh(&db, Instant::now()).await {
                warn!(database = %db, error = %e, "catalog refresh failed; keeping the old snapshot");
            }
        }
    }

    /// Reload snapshots older than the TTL, forever (run in a background task).
    pub async fn run_refresher(self: Arc<Self>) {
        let period = self.ttl.max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            let stale: Vec<String> = self
                .by_db
                .iter()
                .filter(|e| e.value().loaded_at.elapsed() >= self.ttl)
                .map(|e| e.key().clone())
                .collect();
            for db in stale {
                if let Err(e) = self.refresh(&db, Instant::now()).await {
                    warn!(database = %db, error = %e, "catalog refresh failed; keeping the old snapshot");
                }
            }
        }
    }

    async fn load(&self, db: &str) -> Result<Snapshot, CatalogError> {
        let login = self.login.as_ref().ok_or(CatalogError::NotConfigured)?;
        let loaded_at = Instant::now();
        let stream = self.upstream.connect().await?;
        let mut cfg = tokio_postgres::Config::new();
        cfg.user(&login.user)
            .dbname(db)
            .application_name("pgveil-catalog");
        if let Some(pw) = &login.password {
            cfg.password(pw);
        }
        let query_err = |source| CatalogError::Query {
            db: db.to_owned(),
            source,
        };
        let (client, conn) = cfg
            .connect_raw(stream, tokio_postgres::NoTls)
            .await
            .map_err(query_err)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let result = async {
            // No JIT: the planner's estimate for the recursive constraint query grows
            // quickly with the number of relations, and past `jit_above_cost` (a few
            // hundred tables) PostgreSQL spends over a second compiling it on every
            // load, which follows every DDL statement (asyncpg's
            // test_introspection_on_large_db: 1000 CREATE TABLE took minutes instead of
            // seconds). Servers without JIT (before 11) reject the setting: ignored.
            let _ = client.batch_execute("SET jit = off").await;
            let rel_rows = client.query(RELATIONS_SQL, &[]).await?;
            let dep_rows = client.query(VIEW_DEPENDENCIES_SQL, &[]).await?;
            let fn_rows = client.query(FUNCTIONS_SQL, &[]).await?;
            let con_rows = client.query(CONSTRAINTS_SQL, &[]).await?;
            Ok::<_, tokio_postgres::Error>((rel_rows, dep_rows, fn_rows, con_rows))
        }
        .await;
        drop(client);
        driver.abort();
        let (rel_rows, dep_rows, fn_rows, con_rows) = result.map_err(query_err)?;

        let mut relations: HashMap<(String, String), Relation> = HashMap::new();
        for row in rel_rows {
            let schema: String = row.get(0);
            let name: String = row.get(1);
            let kind: String = row.get(2);
            let names: Vec<String> = row.get(3);
            let types: Vec<String> = row.get(4);
            let columns = names
                .into_iter()
                .zip(types)
                .map(|(name, type_name)| Column { name, type_name })
                .collect();
            relations.insert(
                (schema.clone(), name.clone()),
                Relation {
                    schema,
                    name,
                    kind: relation_kind(&kind),
                    columns,
                    depends_on: Vec::new(),
                    constraints: Vec::new(),
                },
            );
        }
        let mut deps: HashMap<(String, String), Vec<ColumnRef>> = HashMap::new();
        for row in dep_rows {
            let key = (row.get::<_, String>(0), row.get::<_, String>(1));
            let (schema, table): (String, String) = (row.get(2), row.get(3));
            let attnum: i32 = row.get(4);
            let base = relations.get(&(schema.clone(), table.clone()));
            let cols: Vec<String> = match (attnum, base) {
                // attnum 0: a whole-row dependency reads every column.
                (0, Some(b)) => b.columns.iter().map(|c| c.name.clone()).collect(),
                (n, Some(b)) if n > 0 => b
                    .columns
                    .get(n as usize - 1)
                    .map(|c| vec![c.name.clone()])
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let entry = deps.entry(key).or_default();
            for column in cols {
                entry.push(ColumnRef {
                    schema: schema.clone(),
                    table: table.clone(),
                    column,
                });
            }
        }
        for (key, mut d) in deps {
            d.sort();
            d.dedup();
            if let Some(r) = relations.get_mut(&key) {
                r.depends_on = d;
            }
        }
        for row in con_rows {
            let key = (row.get::<_, String>(0), row.get::<_, String>(1));
            let Some(kind) = constraint_kind(row.get(3)) else {
                continue;
            };
            let other = match (row.get::<_, Option<String>>(5), row.get(6)) {
                (Some(schema), Some(table)) => Some(OtherEnd {
                    schema,
                    table,
                    columns: row.get(7),
                }),
                _ => None,
            };
            let constraint = Constraint {
                name: row.get(2),
                kind,
                columns: row.get(4),
                other,
            };
            if let Some(r) = relations.get_mut(&key) {
                // A partition's copies of its parent's constraints add nothing.
                let same = |c: &Constraint| {
                    c.kind == constraint.kind
                        && c.columns == constraint.columns
                        && c.other == constraint.other
                };
                if !r.constraints.iter().any(same) {
                    r.constraints.push(constraint);
                }
            }
        }
        let mut functions: HashMap<String, Vec<String>> = HashMap::new();
        let mut schemas = HashSet::new();
        for row in fn_rows {
            let what: String = row.get(0);
            let schema: String = row.get(1);
            if what == "s" {
                schemas.insert(schema);
            } else {
                functions.entry(row.get(2)).or_default().push(schema);
            }
        }
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        if relations.is_empty() {
            info!(database = db, "catalog has no user relations");
        }
        Ok(Snapshot {
            database: db.to_owned(),
            relations,
            schemas,
            functions,
            version,
            loaded_at,
        })
    }
}

fn constraint_kind(k: &str) -> Option<ConstraintKind> {
    Some(match k {
        "u" => ConstraintKind::Unique,
        "x" => ConstraintKind::Exclusion,
        "c" => ConstraintKind::Check,
        "f" => ConstraintKind::ForeignKey,
        "r" => ConstraintKind::ReferencedBy,
        _ => return None,
    })
}

fn relation_kind(k: &str) -> RelationKind {
    match k {
        "r" => RelationKind::Table,
        "v" => RelationKind::View,
        "m" => RelationKind::MaterializedView,
        "f" => RelationKind::Foreign,
        "p" => RelationKind::Partitioned,
        "S" => RelationKind::Sequence,
        _ => RelationKind::Other,
    }
}
