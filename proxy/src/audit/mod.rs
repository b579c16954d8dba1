//! Audit: every access leaves a tamper-evident trace.
//!
//! Sessions reserve a queue place with [`Auditor::admit`] *before* forwarding a
//! statement and fill it with [`AuditSlot::record`] when they know the outcome; other
//! events go through [`Auditor::record`]. One writer task seals events into a SHA-256
//! hash chain (`chain.rs`) and fans the same lines out to every sink (`file.rs`,
//! `stdout.rs`, `http.rs`). `verify.rs` checks a chain offline.
//!
//! Modules, one job each:
//! - `config`: the `[audit]` section.
//! - `event`: [`AuditEvent`] and its timestamp format.
//! - `literals`: strips literals left in a query (defence in depth).
//! - `line`: member order and JSON of a line; members serialized ahead of time.
//! - `chain`: sealing, checking one line, finding the last valid line.
//! - `writer`: the single task that owns the chain.
//! - `sink`: batches, the `Sink` seam, the retrying driver.
//! - `file`, `stdout`, `http`: the sinks.
//! - `verify`: `pgveil audit verify`.

mod chain;
mod config;
mod event;
mod file;
mod http;
mod line;
mod literals;
mod sink;
mod stdout;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::{self, error::TrySendError, OwnedPermit};
use tokio::sync::watch;

pub use config::{
    AuditConfig, FileSinkConfig, FsyncPolicy, HttpSinkConfig, OnFailure, SinkConfig,
    StdoutSinkConfig, DEFAULT_GENESIS,
};
pub use event::{rfc3339_millis, AuditEvent, Columns, EventKind};
pub use line::{SessionJson, SessionMembers, StatementJson, StatementMembers};
pub use literals::strip_literals;
pub use verify::{
    cli_verify, cli_verify_with, discover_rotated, verify, ChainProblem, VerifyError, VerifyReport,
};

use chain::{Chain, ChainTip};
use sink::{Backoff, SinkHandle, SinkState};
use writer::{Shared, Writer};

/// Why the auditor cannot start or cannot take an event.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A value in `[audit]` is wrong.
    #[error("invalid audit config: {0}")]
    Config(String),
    /// A sink file cannot be opened or read at start.
    #[error("audit file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process (or sink) writes this audit file.
    #[error("audit file {} is in use by another pgveil (pid {holder})", path.display())]
    InUse { path: PathBuf, holder: String },
    /// An existing sink file holds no valid audit line: refusing to append to what is
    /// probably another file (a wrong path) or a destroyed log.
    #[error("{} is not an audit log (no valid audit line at its end); move it away or fix the path", .0.display())]
    NotAuditLog(PathBuf),
    /// `block`: the queue stayed full for `block_timeout_ms`; the statement must be
    /// refused so that no access goes unrecorded.
    #[error("audit queue full for {0} ms; refusing unrecorded access")]
    QueueFull(u64),
    /// `try_admit` under `block`: the queue is full right now.
    #[error("audit queue full")]
    WouldBlock,
    /// The auditor was shut down.
    #[error("audit is shut down")]
    Closed,
}

/// Receives what the auditor does, for metrics (`audit_events_total{sink,result}`,
/// `audit_queue_depth`). Called from the writer and sink tasks: keep it cheap.
pub trait AuditObserver: Send + Sync {
    /// One event was delivered to `sink`.
    fn written(&self, sink: &str);
    /// `n` events were delivered to `sink` (one flush): override to count them at once
    /// instead of `n` calls to [`AuditObserver::written`].
    fn written_many(&self, sink: &str, n: usize) {
        for _ in 0..n {
            self.written(sink);
        }
    }
    /// One delivery attempt to `sink` failed (it will be retried; nothing is lost).
    fn failed(&self, sink: &str);
    /// `n` events were dropped (`on_failure = "drop"` with a full queue).
    fn dropped(&self, n: u64);
    /// Events waiting in the queue (reported after every batch).
    fn queue_depth(&self, depth: usize);
}

/// An observer that ignores everything (tests, tools).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl AuditObserver for NoopObserver {
    fn written(&self, _sink: &str) {}
    fn failed(&self, _sink: &str) {}
    fn dropped(&self, _n: u64) {}
    fn queue_depth(&self, _depth: usize) {}
}

/// Handle to the audit pipeline. Cheap to clone; every session holds one.
#[derive(Clone)]
pub struct Auditor {
    inner: Option<Arc<Active>>,
}

struct Active {
    tx: mpsc::Sender<AuditEvent>,
    on_failure: OnFailure,
    block_timeout: Duration,
    capacity: usize,
    max_query_bytes: usize,
    shared: Arc<Shared>,
    observer: Arc<dyn AuditObserver>,
    closed: AtomicBool,
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("enabled", &self.inner.is_some())
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

impl Auditor {
    /// Validates `cfg`, opens the sinks (files created, torn tails trimmed, chain resumed
    /// from the last valid line), and starts the writer and sink tasks. Call inside a
    /// tokio runtime. No sinks: returns [`Auditor::disabled`].
    pub async fn start(
        cfg: &AuditConfig,
        observer: Arc<dyn AuditObserver>,
    ) -> Result<Auditor, AuditError> {
        cfg.validate()?;
        if cfg.sinks.is_empty() {
            tracing::warn!("no audit sinks configured: accesses are not audited");
            return Ok(Auditor::disabled());
        }
        let backoff = Backoff {
            initial: Duration::from_millis(cfg.retry_initial_ms),
            max: Duration::from_millis(cfg.retry_max_ms),
        };
        // Open everything before spawning anything, so a bad sink leaves no task behind.
        let mut opened = Vec::with_capacity(cfg.sinks.len());
        let mut tip: Option<ChainTip> = None;
        for (i, sc) in cfg.sinks.iter().enumerate() {
            let name = cfg.sink_name(i);
            let built = match sc {
                SinkConfig::File(fc) => {
                    let (sink, file_tip) = file::FileSink::open(fc)?;
                    if let Some(t) = file_tip {
                        if tip.as_ref().is_some_and(|cur| cur.seq != t.seq) {
                            tracing::warn!(sink = %name, seq = t.seq,
                                "audit files disagree on the last seq; continuing after the highest");
                        }
                        if tip.as_ref().is_none_or(|cur| t.seq > cur.seq) {
                            tip = Some(t);
                        }
                    }
                    Built::File(sink)
                }
                SinkConfig::Stdout(_) => Built::Stdout(stdout::WriterSink::stdout()),
                SinkConfig::Http(hc) => Built::Http(Box::new(http::HttpSink::new(hc, &name)?)),
            };
            opened.push((name, built));
        }
        let mut handles: Vec<SinkHandle> = Vec::with_capacity(opened.len());
        for (name, built) in opened {
            let state = SinkState::new(name);
            let obs = observer.clone();
            handles.push(match built {
                Built::File(s) => sink::spawn(s, state, obs, backoff),
                Built::Stdout(s) => sink::spawn(s, state, obs, backoff),
                Built::Http(s) => sink::spawn(*s, state, obs, backoff),
            });
        }
        if let Some(t) = &tip {
            tracing::info!(seq = t.seq, "audit chain continues from the existing file");
        }
        Ok(Auditor::spawn(
            cfg,
            Chain::new(&cfg.genesis, tip, cfg.max_query_bytes),
            handles,
            observer,
        ))
    }

    /// Starts the writer over already-running sinks.
    fn spawn(
        cfg: &AuditConfig,
        chain: Chain,
        sinks: Vec<SinkHandle>,
        observer: Arc<dyn AuditObserver>,
    ) -> Auditor {
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            writer_alive: AtomicBool::new(true),
            sinks: sinks.iter().map(|s| s.state.clone()).collect(),
        });
        let writer = Writer {
            rx,
            stop: stop_rx,
            done: done_tx,
            chain,
            sinks,
            shared: shared.clone(),
            observer: observer.clone(),
            capacity: cfg.queue_capacity,
            batch_wait: Duration::from_millis(cfg.batch_wait_ms),
        };
        tokio::spawn(writer.run());
        Auditor {
            inner: Some(Arc::new(Active {
                tx,
                on_failure: cfg.on_failure,
                block_timeout: cfg.block_timeout(),
                capacity: cfg.queue_capacity,
                max_query_bytes: cfg.max_query_bytes,
                shared,
                observer,
                closed: AtomicBool::new(false),
                stop: stop_tx,
                done: done_rx,
            })),
        }
    }

    /// Auditing off: `admit` always succeeds and events are discarded.
    pub fn disabled() -> Auditor {
        Auditor { inner: None }
    }

    /// Whether events go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// `m` serialized for [`AuditEvent::statement_json`]: literals stripped and the
    /// query cut to `max_query_bytes` now, so that events of a cached decision share
    /// one copy and the writer neither escapes nor re-scans it per event.
    pub fn statement_json(&self, m: &StatementMembers<'_>) -> StatementJson {
        let max = self.inner.as_ref().map_or_else(
            || AuditConfig::default().max_query_bytes,
            |a| a.max_query_bytes,
        );
        StatementJson::new(m, max)
    }

    /// Reserves a queue place; call BEFORE forwarding a statement. Returns at once while
    /// the queue has room. When it is full, `block` waits up to `block_timeout_ms` and then
    /// fails with [`AuditError::QueueFull`] (refuse the statement); `drop` never waits and
    /// returns a slot that counts a drop when recorded. Fails with
    /// [`AuditError::Closed`] after [`Auditor::shutdown`].
    pub async fn admit(&self) -> Result<AuditSlot, AuditError> {
        let Some(a) = &self.inner else {
            return Ok(AuditSlot(SlotInner::Discard));
        };
        if a.closed.load(Ordering::Relaxed) {
            return Err(AuditError::Closed);
        }
        match a.tx.clone().try_reserve_owned() {
            Ok(permit) => Ok(AuditSlot(SlotInner::Reserved(permit))),
            Err(TrySendError::Closed(_)) => Err(AuditError::Closed),
            Err(TrySendError::Full(tx)) => {
                a.observer.queue_depth(a.capacity);
                a.admit_full(tx).await
            }
        }
    }

    /// [`Auditor::admit`] for synchronous callers: never waits. Where `admit` would wait
    /// (`block`, queue full) it fails with [`AuditError::WouldBlock`]; the caller then
    /// awaits `admit` or refuses the statement. Under `drop` it behaves like `admit`.
    pub fn try_admit(&self) -> Result<AuditSlot, AuditError> {
        let Some(a) = &self.inner else {
            return Ok(AuditSlot(SlotInner::Discard));
        };
        if a.closed.load(Ordering::Relaxed) {
            return Err(AuditError::Closed);
        }
        match a.tx.clone().try_reserve_owned() {
            Ok(permit) => Ok(AuditSlot(SlotInner::Reserved(permit))),
            Err(TrySendError::Closed(_)) => Err(AuditError::Closed),
            Err(TrySendError::Full(_)) => {
                a.observer.queue_depth(a.capacity);
                match a.on_failure {
                    OnFailure::Drop => Ok(AuditSlot(SlotInner::Full(a.clone()))),
                    OnFailure::Block => Err(AuditError::WouldBlock),
                }
            }
        }
    }

    /// Records an event not tied to a statement (session start/end, login failure,
    /// policy reload), with the same backpressure as [`Auditor::admit`].
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.admit().await?.record(event);
        Ok(())
    }

    /// For `/readyz`: the writer runs, every sink's last attempt succeeded, and the queue
    /// has room. A disabled auditor is healthy.
    pub fn is_healthy(&self) -> bool {
        let Some(a) = &self.inner else {
            return true;
        };
        a.shared.writer_alive.load(Ordering::Relaxed)
            && !a.closed.load(Ordering::Relaxed)
            && a.shared.sinks.iter().all(|s| s.is_healthy())
            && a.tx.capacity() > 0
    }

    /// Names of the sinks whose last attempt failed (for `/readyz` details).
    pub fn failing_sinks(&self) -> Vec<String> {
        self.inner.as_ref().map_or_else(Vec::new, |a| {
            a.shared
                .sinks
                .iter()
                .filter(|s| !s.is_healthy())
                .map(|s| s.name.clone())
                .collect()
        })
    }

    /// Events queued or reserved and not yet taken by the writer.
    pub fn queue_depth(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |a| a.capacity.saturating_sub(a.tx.capacity()))
    }

    /// Stops taking events, writes everything queued to every sink (fsyncing files), and
    /// returns when the writer and sinks are done. Idempotent. Under `block` with a sink
    /// that keeps failing this waits until it recovers: bound it with a timeout.
    /// Slots reserved earlier may still be recorded until then.
    pub async fn shutdown(&self) {
        let Some(a) = &self.inner else {
            return;
        };
        a.closed.store(true, Ordering::Relaxed);
        a.stop.send_replace(true);
        let mut done = a.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}

impl Active {
    /// The queue is full: `drop` hands out a slot that counts a drop, `block` waits.
    async fn admit_full(
        self: &Arc<Self>,
        tx: mpsc::Sender<AuditEvent>,
    ) -> Result<AuditSlot, AuditError> {
        match self.on_failure {
            OnFailure::Drop => Ok(AuditSlot(SlotInner::Full(self.clone()))),
            OnFailure::Block => {
                match tokio::time::timeout(self.block_timeout, tx.reserve_owned()).await {
                    Ok(Ok(permit)) => Ok(AuditSlot(SlotInner::Reserved(permit))),
                    Ok(Err(_)) => Err(AuditError::Closed),
                    Err(_) => {
                        let ms = u64::try_from(self.block_timeout.as_millis()).unwrap_or(u64::MAX);
                        Err(AuditError::QueueFull(ms))
                    }
                }
            }
        }
    }
}

/// A sink built at start, before its task is spawned.
enum Built {
    File(file::FileSink),
    Stdout(stdout::WriterSink<tokio::io::Stdout>),
    Http(Box<http::HttpSink>),
}

/// A reserved place for one event; fill it with [`AuditSlot::record`]. Dropping it
/// unrecorded frees the place.
#[derive(Debug)]
pub struct AuditSlot(SlotInner);

enum SlotInner {
    Reserved(OwnedPermit<AuditEvent>),
    Full(Arc<Active>),
    Discard,
}

impl std::fmt::Debug for SlotInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotInner::Reserved(_) => "Reserved",
            SlotInner::Full(_) => "Full",
            SlotInner::Discard => "Discard",
        })
    }
}

impl AuditSlot {
    /// Queues `event` (stamping `ts` now if unset). Never blocks.
    pub fn record(self, mut event: AuditEvent) {
        match self.0 {
            SlotInner::Reserved(permit) => {
                if event.ts.is_none() {
                    event.ts = Some(SystemTime::now());
                }
                permit.send(event);
            }
            SlotInner::Full(a) => {
                a.shared.dropped.fetch_add(1, Ordering::Relaxed);
                a.observer.dropped(1);
            }
            SlotInner::Discard => {}
        }
    }

    /// Whether recording will drop the event (`drop` mode with a full queue).
    pub fn will_drop(&self) -> bool {
        matches!(self.0, SlotInner::Full(_))
    }
}
