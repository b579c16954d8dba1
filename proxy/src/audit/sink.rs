//! What every sink shares: the batch of sealed lines the writer fans out, the `Sink`
//! seam (accept lines, say when work is due, flush), and the driver task that runs one
//! sink, retries its failures with exponential backoff and reports to the observer.
//!
//! A sink never drops a line: a failed flush keeps its state and is retried until it
//! works. While a sink retries it stops taking batches, its small channel fills, the
//! writer stops, and the admission queue fills: that is how `block`/`drop` see a failure.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::AuditObserver;

/// Sealed lines (each ending in `\n`) in chain order, shared by all sinks.
#[derive(Debug)]
pub(crate) struct Batch {
    data: Bytes,
    /// End offset (exclusive) of each line in `data`.
    ends: Vec<usize>,
}

impl Batch {
    pub fn new(data: Vec<u8>, ends: Vec<usize>) -> Batch {
        Batch {
            data: Bytes::from(data),
            ends,
        }
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// All lines back to back.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// End offsets of the lines.
    pub fn ends(&self) -> &[usize] {
        &self.ends
    }

    /// Each line as a cheap slice of the shared buffer.
    pub fn lines(&self) -> impl Iterator<Item = Bytes> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(s, e)| self.data.slice(s..e))
    }
}

/// Batches waiting in a byte-stream sink (file, stdout), with how far the front one is
/// written, so a retry after a partial write neither repeats nor skips bytes.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    batches: VecDeque<Arc<Batch>>,
    /// Bytes of the front batch already written.
    pos: usize,
}

impl Pending {
    pub fn push(&mut self, batch: Arc<Batch>) {
        self.batches.push_back(batch);
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The front batch and the unwritten offset in it.
    pub fn front(&self) -> Option<(&Arc<Batch>, usize)> {
        self.batches.front().map(|b| (b, self.pos))
    }

    /// Marks `n` more bytes of the front batch written; returns the number of lines
    /// completed by them (whole events delivered).
    pub fn advance(&mut self, n: usize) -> usize {
        let Some(front) = self.batches.front() else {
            return 0;
        };
        let before = self.pos;
        self.pos += n;
        let done = front
            .ends()
            .iter()
            .filter(|&&e| e > before && e <= self.pos)
            .count();
        if self.pos >= front.data().len() {
            self.batches.pop_front();
            self.pos = 0;
        }
        done
    }
}

/// Health of one sink, read by `Auditor::is_healthy`.
#[derive(Debug)]
pub(crate) struct SinkState {
    pub name: String,
    healthy: AtomicBool,
}

impl SinkState {
    pub fn new(name: String) -> Arc<SinkState> {
        Arc::new(SinkState {
            name,
            healthy: AtomicBool::new(true),
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }
}

/// Outcome of one flush: events fully delivered, and the error that stopped it, if any.
#[derive(Debug, Default)]
pub(crate) struct Flushed {
    pub delivered: usize,
    pub error: Option<String>,
}

/// One audit destination. Implementations keep undelivered lines until a flush succeeds.
pub(crate) trait Sink: Send + 'static {
    /// Takes a batch into the sink's pending state (no I/O).
    fn accept(&mut self, batch: Arc<Batch>);
    /// Whether pending work must be done before more batches are taken.
    fn is_due(&self, now: Instant) -> bool;
    /// When pending work becomes due without new input (batch age, fsync interval).
    fn deadline(&self) -> Option<Instant>;
    /// Does the due work (everything pending when `closing`). On error the undelivered
    /// part stays pending, so the next call resumes without duplicates.
    fn flush(&mut self, closing: bool) -> impl Future<Output = Flushed> + Send;
}

/// Retry delays: start, doubling, cap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// A running sink: the writer sends batches here.
pub(crate) struct SinkHandle {
    pub state: Arc<SinkState>,
    pub tx: mpsc::Sender<Arc<Batch>>,
    pub task: JoinHandle<()>,
}

/// Batches a sink may hold beyond the one it is flushing: small, so a stuck sink stops
/// the writer quickly and the admission queue is the one place events wait.
const SINK_CHANNEL: usize = 2;

/// Starts the driver task of `sink`.
pub(crate) fn spawn<S: Sink>(
    sink: S,
    state: Arc<SinkState>,
    observer: Arc<dyn AuditObserver>,
    backoff: Backoff,
) -> SinkHandle {
    let (tx, rx) = mpsc::channel(SINK_CHANNEL);
    let task = tokio::spawn(drive(sink, rx, state.clone(), observer, backoff));
    SinkHandle { state, tx, task }
}

async fn drive<S: Sink>(
    mut sink: S,
    mut rx: mpsc::Receiver<Arc<Batch>>,
    state: Arc<SinkState>,
    observer: Arc<dyn AuditObserver>,
    backoff: Backoff,
) {
    loop {
        if sink.is_due(Instant::now()) {
            flush_until_done(&mut sink, false, &state, &*observer, backoff).await;
            continue;
        }
        let deadline = sink.deadline();
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(b) => sink.accept(b),
                None => break,
            },
            _ = sleep_until(deadline), if deadline.is_some() => {}
        }
    }
    flush_until_done(&mut sink, true, &state, &*observer, backoff).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

/// Flushes until the sink reports no error, backing off between attempts.
async fn flush_until_done<S: Sink>(
    sink: &mut S,
    closing: bool,
    state: &SinkState,
    observer: &dyn AuditObserver,
    backoff: Backoff,
) {
    let mut delay = backoff.initial;
    loop {
        let out = sink.flush(closing).await;
        if out.delivered > 0 {
            observer.written_many(&state.name, out.delivered);
        }
        let Some(error) = out.error else {
            if !state.is_healthy() {
                tracing::info!(sink = %state.name, "audit sink recovered");
                state.set_healthy(true);
            }
            return;
        };
        observer.failed(&state.name);
        if state.is_healthy() {
            tracing::error!(sink = %state.name, %error, "audit sink failing; retrying");
            state.set_healthy(false);
        } else {
            tracing::debug!(sink = %state.name, %error, "audit sink still failing");
        }
        tokio::time::sleep(jittered(delay)).await;
        delay = (delay * 2).min(backoff.max);
    }
}

/// `d` minus up to 20 %, so many proxies do not retry a shared collector in lockstep.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 - rand::random::<f64>() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(lines: &[&str]) -> Arc<Batch> {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for l in lines {
            data.extend_from_slice(l.as_bytes());
            data.push(b'\n');
            ends.push(data.len());
        }
        Arc::new(Batch::new(data, ends))
    }

    #[test]
    fn batch_lines_split_at_ends() {
        let b = batch(&["a", "bc"]);
        let lines: Vec<Bytes> = b.lines().collect();
        assert_eq!(lines, [Bytes::from("a\n"), Bytes::from("bc\n")]);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn pending_counts_whole_lines_across_partial_writes() {
        let mut p = Pending::default();
        p.push(batch(&["aaa", "bbb"]));
        p.push(batch(&["c"]));
        assert_eq!(p.advance(2), 0);
        assert_eq!(p.advance(3), 1);
        assert_eq!(p.front().map(|(_, pos)| pos), Some(5));
        assert_eq!(p.advance(3), 1);
        assert_eq!(p.front().map(|(b, pos)| (b.len(), pos)), Some((1, 0)));
        assert_eq!(p.advance(2), 1);
        assert!(p.is_empty());
    }
}
