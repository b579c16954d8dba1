//! The `stdout` sink: JSON lines on standard output, for container log collectors.
//! Generic over the writer so tests can capture what it writes.

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::sink::{Batch, Flushed, Pending, Sink};

/// Writes lines to an async byte stream (standard output in production).
pub(crate) struct WriterSink<W> {
    out: W,
    pending: Pending,
}

impl WriterSink<tokio::io::Stdout> {
    /// The sink on the process's standard output.
    pub fn stdout() -> Self {
        WriterSink::new(tokio::io::stdout())
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> WriterSink<W> {
    pub fn new(out: W) -> Self {
        WriterSink {
            out,
            pending: Pending::default(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> Sink for WriterSink<W> {
    fn accept(&mut self, batch: Arc<Batch>) {
        self.pending.push(batch);
    }

    fn is_due(&self, _now: Instant) -> bool {
        !self.pending.is_empty()
    }

    fn deadline(&self) -> Option<Instant> {
        None
    }

    async fn flush(&mut self, _closing: bool) -> Flushed {
        let mut delivered = 0;
        while let Some((batch, pos)) = self.pending.front() {
            let batch = batch.clone();
            match self.out.write(&batch.data()[pos..]).await {
                Ok(0) => {
                    return Flushed {
                        delivered,
                        error: Some("standard output accepts no more bytes".into()),
                    }
                }
                Ok(n) => delivered += self.pending.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Flushed {
                        delivered,
                        error: Some(format!("cannot write to standard output: {e}")),
                    }
                }
            }
        }
        let error = self
            .out
            .flush()
            .await
            .err()
            .map(|e| format!("cannot flush standard output: {e}"));
        Flushed { delivered, error }
    }
}
