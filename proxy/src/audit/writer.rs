//! The single writer task: takes admitted events off the queue in batches, gives each its
//! `seq` and chain hash, and fans the same sealed lines out to every sink. Being the only
//! place that touches the chain keeps `seq` gap-free and identical in every sink.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::chain::Chain;
use super::event::{AuditEvent, EventKind};
use super::sink::{Batch, SinkHandle, SinkState};
use super::AuditObserver;

/// Most events sealed into one batch (one write / one fan-out).
const MAX_BATCH: usize = 1024;

/// Size of a typical sealed statement line, to size batch buffers.
const TYPICAL_LINE_BYTES: usize = 768;

/// State shared by the admission side and the writer.
pub(crate) struct Shared {
    /// Events lost under `drop` and not yet reported by an `audit_dropped` event.
    pub dropped: AtomicU64,
    /// False once the writer has stopped (shutdown, or a bug).
    pub writer_alive: AtomicBool,
    pub sinks: Vec<Arc<SinkState>>,
}

/// Everything the writer task owns.
pub(crate) struct Writer {
    pub rx: mpsc::Receiver<AuditEvent>,
    pub stop: watch::Receiver<bool>,
    pub done: watch::Sender<bool>,
    pub chain: Chain,
    pub sinks: Vec<SinkHandle>,
    pub shared: Arc<Shared>,
    pub observer: Arc<dyn AuditObserver>,
    pub capacity: usize,
    /// How long events gather after a batch before the next is taken (`batch_wait_ms`).
    pub batch_wait: std::time::Duration,
}

/// Marks the writer dead and wakes `shutdown()` callers however the task ends.
struct DoneGuard<'a> {
    shared: &'a Shared,
    done: &'a watch::Sender<bool>,
}

impl Drop for DoneGuard<'_> {
    fn drop(&mut self) {
        self.shared.writer_alive.store(false, Ordering::Relaxed);
        self.done.send_replace(true);
    }
}

impl Writer {
    /// Runs until shutdown is requested (or every `Auditor` is gone) and the queue is
    /// drained, then lets every sink flush and waits for them.
    pub async fn run(mut self) {
        let guard = DoneGuard {
            shared: &self.shared,
            done: &self.done,
        };
        let mut events = Vec::with_capacity(MAX_BATCH);
        let mut stopping = false;
        loop {
            let n = if stopping {
                self.rx.recv_many(&mut events, MAX_BATCH).await
            } else {
                tokio::select! {
                    biased;
                    n = self.rx.recv_many(&mut events, MAX_BATCH) => n,
                    _ = self.stop.changed() => {
                        // Requested, or the Auditor is gone: take nothing new, drain the rest.
                        stopping = true;
                        self.rx.close();
                        continue;
                    }
                }
            };
            if n == 0 {
                break;
            }
            let batch = seal(&mut self.chain, &self.shared, events.drain(..));
            self.fan_out(batch).await;
            self.observer
                .queue_depth(self.capacity.saturating_sub(self.rx.capacity()));
            if !stopping && !self.batch_wait.is_zero() && n < MAX_BATCH {
                // Let the next events gather: under load one wake-up and one sink write
                // per interval instead of one per event. Stop requests cut it short.
                tokio::select! {
                    biased;
                    _ = self.stop.changed() => {
                        stopping = true;
                        self.rx.close();
                    }
                    _ = tokio::time::sleep(self.batch_wait) => {}
                }
            }
        }
        // Drops counted after the last batch still get their event.
        if self.shared.dropped.load(Ordering::Relaxed) > 0 {
            let batch = seal(&mut self.chain, &self.shared, std::iter::empty());
            self.fan_out(batch).await;
        }
        self.observer.queue_depth(0);
        let sinks = std::mem::take(&mut self.sinks);
        for sink in sinks {
            drop(sink.tx);
            if let Err(e) = sink.task.await {
                tracing::error!(sink = %sink.state.name, error = %e, "audit sink task failed");
            }
        }
        drop(guard);
    }

    /// Hands the same batch to every sink, waiting while a sink is behind.
    async fn fan_out(&self, batch: Arc<Batch>) {
        for sink in &self.sinks {
            if sink.tx.send(batch.clone()).await.is_err() {
                tracing::error!(sink = %sink.state.name, "audit sink task is gone");
                sink.state.set_healthy(false);
            }
        }
    }
}

/// Seals `events` (and an `audit_dropped` event when drops were counted) into one batch.
fn seal(
    chain: &mut Chain,
    shared: &Shared,
    events: impl Iterator<Item = AuditEvent>,
) -> Arc<Batch> {
    let (n, _) = events.size_hint();
    let mut data = Vec::with_capacity((n + 1) * TYPICAL_LINE_BYTES);
    let mut ends = Vec::with_capacity(n + 1);
    for ev in events {
        chain.append(&ev, &mut data);
        ends.push(data.len());
    }
    let dropped = shared.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        tracing::warn!(dropped, "audit events were dropped (on_failure = drop)");
        chain.append(&dropped_event(dropped), &mut data);
        ends.push(data.len());
    }
    // Sinks keep slices of this buffer until delivered: do not pin unused capacity.
    if data.capacity() > data.len() * 2 {
        data.shrink_to_fit();
    }
    Arc::new(Batch::new(data, ends))
}

/// The event that records how many events `drop` mode lost.
pub(crate) fn dropped_event(count: u64) -> AuditEvent {
    AuditEvent {
        event: EventKind::AuditDropped,
        reason: Some("audit queue full".into()),
        details: Some(json!({ "dropped": count })),
        ..AuditEvent::default()
    }
}
