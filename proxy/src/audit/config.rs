//! The `[audit]` section of pgveil.toml: where audit events go and what happens when they
//! cannot be written. Field docs are the user documentation (unit, default, effect).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::AuditError;

/// The genesis hash: `prev_hash` of the very first event of a chain (64 zeros by default).
pub const DEFAULT_GENESIS: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// `[audit]`: sinks, backpressure policy and chain parameters.
///
/// ```toml
/// [audit]
/// on_failure = "block"          # block | drop
/// queue_capacity = 65536        # events waiting for the writer
/// block_timeout_ms = 5000       # block: how long a statement waits for queue room
/// [[audit.sinks]]
/// kind = "file"
/// path = "/var/log/pgveil/audit.jsonl"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// What a statement does when the audit queue is full because a sink keeps failing:
    /// `block` (default) waits up to `block_timeout_ms` and is then refused, so no access
    /// goes unrecorded; `drop` goes on, counts the lost events and records an
    /// `audit_dropped` event with the count once the sinks catch up.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Where events are written; several sinks receive the same lines in the same order.
    /// No sinks: auditing is off (events are discarded).
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Events that may wait in memory for the writer (default 65536). Statements never
    /// wait while the queue has room.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// `block` only: milliseconds a statement waits for queue room before it is refused
    /// (default 5000).
    #[serde(default = "default_block_timeout_ms")]
    pub block_timeout_ms: u64,
    /// `prev_hash` of the first event of a new chain: 64 lowercase hex digits (default 64
    /// zeros). A chain that continues from an existing file keeps that file's last hash.
    #[serde(default = "default_genesis")]
    pub genesis: String,
    /// First delay in milliseconds before a failed sink write is retried (default 100);
    /// it doubles after each failure up to `retry_max_ms`.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest delay in milliseconds between retries of a failing sink (default 30000).
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Longest `query` text kept in an event, in bytes (default 65536); longer text is
    /// cut and ends with `…[truncated]`.
    #[serde(default = "default_max_query_bytes")]
    pub max_query_bytes: usize,
    /// Milliseconds the writer lets events gather after writing a batch before it takes
    /// the next one (default 50; 0 = take each event as it comes). Under load this turns
    /// one sink write per event into one per interval (each file write costs the file
    /// system a fixed amount on top of its bytes); an event waits at most this long
    /// longer before its sinks see it. The first event after a quiet spell goes at once.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            on_failure: OnFailure::default(),
            sinks: Vec::new(),
            queue_capacity: default_queue_capacity(),
            block_timeout_ms: default_block_timeout_ms(),
            genesis: default_genesis(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            max_query_bytes: default_max_query_bytes(),
            batch_wait_ms: default_batch_wait_ms(),
        }
    }
}

/// Backpressure policy when sinks cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Fail closed: a statement waits for queue room and is refused after the timeout.
    #[default]
    Block,
    /// Keep serving: count lost events and record how many were lost.
    Drop,
}

/// One `[[audit.sinks]]` entry, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// JSON lines appended to a local file, rotated by size and/or age.
    File(FileSinkConfig),
    /// JSON lines on the process's standard output (container log collectors).
    Stdout(StdoutSinkConfig),
    /// NDJSON batches POSTed to a collector over HTTP(S).
    Http(HttpSinkConfig),
}

/// `kind = "file"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Label of this sink in metrics and logs (default `file`, or `file-N` when several).
    pub name: Option<String>,
    /// The active file; rotated files are `<path>.1` (newest) … `<path>.<keep>` (oldest).
    /// Relative paths are resolved against the config file's directory.
    pub path: PathBuf,
    /// Rotate before a write would make the file larger than this many bytes.
    pub max_bytes: Option<u64>,
    /// Rotate a non-empty file once it is this many seconds old.
    pub max_age_s: Option<u64>,
    /// Rotated files kept (default 10, at least 1); older ones are deleted.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Durability: `always` (fsync every batch before taking the next: group commit),
    /// `interval` (default: fsync at most every `fsync_interval_ms`), `never` (OS decides).
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// `interval` only: milliseconds between fsyncs of a file with unsynced lines
    /// (default 1000).
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
}

/// When the file sink calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every batch written.
    Always,
    /// At most every `fsync_interval_ms` while lines are unsynced.
    #[default]
    Interval,
    /// Never explicitly (only at rotation and shutdown is nothing forced either).
    Never,
}

/// `kind = "stdout"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Label of this sink in metrics and logs (default `stdout`).
    pub name: Option<String>,
}

/// `kind = "http"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Label of this sink in metrics and logs (default `http`, or `http-N` when several).
    pub name: Option<String>,
    /// Collector endpoint, `http://` or `https://`; batches are POSTed here as
    /// `application/x-ndjson`. Any 2xx answer acknowledges the batch.
    pub url: String,
    /// Most events in one POST (default 500).
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Longest an event waits in a partial batch, in milliseconds (default 1000).
    #[serde(default = "default_batch_max_ms")]
    pub batch_max_ms: u64,
    /// Milliseconds allowed for connecting and for each request (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Environment variable holding a bearer token sent as `Authorization: Bearer …`.
    pub bearer_token_env: Option<String>,
    /// File holding a bearer token (re-read when the collector answers 401 or 403).
    pub bearer_token_file: Option<PathBuf>,
    /// PEM CA bundle that replaces the built-in web roots for `https://` URLs.
    pub ca_file: Option<PathBuf>,
}

impl AuditConfig {
    /// Reads the `[audit]` table of an already parsed pgveil.toml and validates it.
    pub fn from_toml(table: toml::Table) -> Result<AuditConfig, AuditError> {
        let cfg: AuditConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| AuditError::Config(e.message().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Resolves relative sink paths (`path`, `ca_file`, `bearer_token_file`) against
    /// `base` (the directory of the config file).
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for sink in &mut self.sinks {
            match sink {
                SinkConfig::File(f) => resolve(&mut f.path),
                SinkConfig::Stdout(_) => {}
                SinkConfig::Http(h) => {
                    if let Some(p) = &mut h.ca_file {
                        resolve(p);
                    }
                    if let Some(p) = &mut h.bearer_token_file {
                        resolve(p);
                    }
                }
            }
        }
    }

    /// Checks values that serde cannot (ranges, genesis format, duplicate names or paths).
    /// I/O checks (paths writable, URL reachable syntax) happen in `Auditor::start`.
    pub fn validate(&self) -> Result<(), AuditError> {
        let bad = |msg: String| Err(AuditError::Config(msg));
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1".into());
        }
        if self.queue_capacity > MAX_QUEUE_CAPACITY {
            return bad(format!(
                "queue_capacity must be at most {MAX_QUEUE_CAPACITY}"
            ));
        }
        if !is_hash_hex(&self.genesis) {
            return bad("genesis must be 64 lowercase hex digits".into());
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return bad("retry_initial_ms must be at least 1 and at most retry_max_ms".into());
        }
        if self.max_query_bytes < 64 {
            return bad("max_query_bytes must be at least 64".into());
        }
        if self.batch_wait_ms > MAX_BATCH_WAIT_MS {
            return bad(format!("batch_wait_ms must be at most {MAX_BATCH_WAIT_MS}"));
        }
        let mut names = HashSet::new();
        let mut paths = HashSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let name = self.sink_name(i);
            if !names.insert(name.clone()) {
                return bad(format!("two audit sinks are named {name:?}"));
            }
            match sink {
                SinkConfig::File(f) => {
                    if f.path.as_os_str().is_empty() {
                        return bad(format!("sink {name}: path is empty"));
                    }
                    if !paths.insert(f.path.clone()) {
                        return bad(format!(
                            "sink {name}: path {} is used by another sink",
                            f.path.display()
                        ));
                    }
                    if f.keep == 0 {
                        return bad(format!("sink {name}: keep must be at least 1"));
                    }
                    if f.max_bytes == Some(0) || f.max_age_s == Some(0) {
                        return bad(format!(
                            "sink {name}: max_bytes and max_age_s must be positive"
                        ));
                    }
                    if f.fsync_interval_ms == 0 {
                        return bad(format!("sink {name}: fsync_interval_ms must be positive"));
                    }
                }
                SinkConfig::Stdout(_) => {}
                SinkConfig::Http(h) => {
                    if h.batch_max_events == 0 || h.batch_max_ms == 0 || h.timeout_ms == 0 {
                        return bad(format!(
                            "sink {name}: batch_max_events, batch_max_ms and timeout_ms must be positive"
                        ));
                    }
                    if h.bearer_token_env.is_some() && h.bearer_token_file.is_some() {
                        return bad(format!(
                            "sink {name}: set bearer_token_env or bearer_token_file, not both"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The metrics/log label of sink `i`: its `name`, else its kind, numbered when the
    /// kind occurs more than once.
    pub fn sink_name(&self, i: usize) -> String {
        let Some(sink) = self.sinks.get(i) else {
            return String::new();
        };
        if let Some(name) = sink.name() {
            return name.to_string();
        }
        let kind = sink.kind();
        let same_kind: Vec<usize> = (0..self.sinks.len())
            .filter(|&j| self.sinks[j].kind() == kind)
            .collect();
        if same_kind.len() == 1 {
            kind.to_string()
        } else {
            let n = same_kind.iter().position(|&j| j == i).unwrap_or(0) + 1;
            format!("{kind}-{n}")
        }
    }

    pub(crate) fn block_timeout(&self) -> Duration {
        Duration::from_millis(self.block_timeout_ms)
    }
}

impl SinkConfig {
    /// `file`, `stdout` or `http`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Stdout(_) => "stdout",
            SinkConfig::Http(_) => "http",
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            SinkConfig::File(f) => f.name.as_deref(),
            SinkConfig::Stdout(s) => s.name.as_deref(),
            SinkConfig::Http(h) => h.name.as_deref(),
        }
    }
}

/// Largest queue accepted: bounded so a typo cannot reserve unbounded memory.
const MAX_QUEUE_CAPACITY: usize = 16 * 1024 * 1024;

/// True for 64 lowercase hex digits (a SHA-256 in the chain's text form).
pub(crate) fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn default_queue_capacity() -> usize {
    65536
}
fn default_block_timeout_ms() -> u64 {
    5000
}
fn default_genesis() -> String {
    DEFAULT_GENESIS.to_string()
}
fn default_retry_initial_ms() -> u64 {
    100
}
/// Longest `batch_wait_ms`: events should reach the sinks within a second.
const MAX_BATCH_WAIT_MS: u64 = 1000;

fn default_batch_wait_ms() -> u64 {
    50
}

fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_max_query_bytes() -> usize {
    65536
}
fn default_keep() -> u32 {
    10
}
fn default_fsync_interval_ms() -> u64 {
    1000
}
fn default_batch_max_events() -> usize {
    500
}
fn default_batch_max_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        audit: AuditConfig,
    }

    fn parse(s: &str) -> Result<AuditConfig, String> {
        toml::from_str::<Wrapper>(s)
            .map(|w| w.audit)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn design_example_parses_with_defaults() {
        let cfg = parse(
            "[[audit.sinks]]\nkind = \"file\"\npath = \"audit.jsonl\"\n[audit]\non_failure = \"block\"\n",
        )
        .expect("valid config");
        assert_eq!(cfg.on_failure, OnFailure::Block);
        assert_eq!(cfg.queue_capacity, 65536);
        assert_eq!(cfg.block_timeout_ms, 5000);
        assert_eq!(cfg.genesis, DEFAULT_GENESIS);
        let SinkConfig::File(f) = &cfg.sinks[0] else {
            panic!("expected a file sink, got {:?}", cfg.sinks[0]);
        };
        assert_eq!(f.keep, 10);
        assert_eq!(f.fsync, FsyncPolicy::Interval);
        assert_eq!(f.fsync_interval_ms, 1000);
        cfg.validate().expect("valid");
    }

    #[test]
    fn all_sink_kinds_parse() {
        let cfg = parse(
            r#"[audit]
on_failure = "drop"
queue_capacity = 10
[[audit.sinks]]
kind = "file"
path = "a.jsonl"
max_bytes = 1000
max_age_s = 60
keep = 3
fsync = "always"
[[audit.sinks]]
kind = "stdout"
[[audit.sinks]]
kind = "http"
url = "https://collector:8443/ingest"
batch_max_events = 10
bearer_token_env = "TOKEN"
"#,
        )
        .expect("valid config");
        assert_eq!(cfg.sinks.len(), 3);
        assert_eq!(cfg.sink_name(0), "file");
        assert_eq!(cfg.sink_name(1), "stdout");
        assert_eq!(cfg.sink_name(2), "http");
        cfg.validate().expect("valid");
    }

    #[test]
    fn unknown_fields_and_kinds_are_rejected() {
        assert!(parse("[audit]\nonfailure = \"drop\"\n").is_err());
        assert!(parse("[[audit.sinks]]\nkind = \"file\"\npath = \"a\"\nrotate = 1\n").is_err());
        assert!(parse("[[audit.sinks]]\nkind = \"syslog\"\n").is_err());
        assert!(parse("[audit]\non_failure = \"ignore\"\n").is_err());
        assert!(
            parse("[[audit.sinks]]\nkind = \"file\"\npath = \"a\"\nfsync = \"sometimes\"\n")
                .is_err()
        );
    }

    #[test]
    fn reads_a_parsed_table() {
        let doc: toml::Table =
            toml::from_str("[audit]\non_failure = \"drop\"\n[[audit.sinks]]\nkind = \"stdout\"\n")
                .expect("toml");
        let Some(toml::Value::Table(audit)) = doc.get("audit").cloned() else {
            panic!("no [audit] table in {doc:?}");
        };
        let cfg = AuditConfig::from_toml(audit).expect("valid");
        assert_eq!(cfg.on_failure, OnFailure::Drop);
        assert_eq!(cfg.sinks, [SinkConfig::Stdout(StdoutSinkConfig::default())]);
        let mut bad = toml::Table::new();
        bad.insert("queue_capacity".into(), toml::Value::Integer(0));
        assert!(AuditConfig::from_toml(bad).is_err());
        let mut unknown = toml::Table::new();
        unknown.insert("sinkz".into(), toml::Value::Array(vec![]));
        let err = AuditConfig::from_toml(unknown).expect_err("unknown field");
        assert!(err.to_string().contains("sinkz"), "{err}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        let cases = [
            "[audit]\nqueue_capacity = 0\n",
            "[audit]\ngenesis = \"abc\"\n",
            "[audit]\ngenesis = \"000000000000000000000000000000000000000000000000000000000000000G\"\n",
            "[[audit.sinks]]\nkind = \"file\"\npath = \"a\"\nkeep = 0\n",
            "[[audit.sinks]]\nkind = \"file\"\npath = \"a\"\nmax_bytes = 0\n",
            "[[audit.sinks]]\nkind = \"file\"\npath = \"a\"\n[[audit.sinks]]\nkind = \"file\"\npath = \"a\"\n",
            "[[audit.sinks]]\nkind = \"http\"\nurl = \"http://x\"\nbatch_max_events = 0\n",
            "[[audit.sinks]]\nkind = \"http\"\nurl = \"http://x\"\nbearer_token_env = \"A\"\nbearer_token_file = \"b\"\n",
            "[[audit.sinks]]\nkind = \"stdout\"\nname = \"x\"\n[[audit.sinks]]\nkind = \"stdout\"\nname = \"x\"\n",
        ];
        for case in cases {
            let cfg = parse(case).expect("parses");
            assert!(cfg.validate().is_err(), "accepted: {case}");
        }
    }

    #[test]
    fn duplicate_kinds_are_numbered_and_paths_resolved() {
        let mut cfg = parse(
            "[[audit.sinks]]\nkind = \"file\"\npath = \"a\"\n[[audit.sinks]]\nkind = \"file\"\npath = \"/abs/b\"\n",
        )
        .expect("parses");
        assert_eq!(cfg.sink_name(0), "file-1");
        assert_eq!(cfg.sink_name(1), "file-2");
        cfg.resolve_paths(Path::new("/etc/pgveil"));
        let paths: Vec<_> = cfg
            .sinks
            .iter()
            .filter_map(|s| match s {
                SinkConfig::File(f) => Some(f.path.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            paths,
            [PathBuf::from("/etc/pgveil/a"), PathBuf::from("/abs/b")]
        );
    }
}
