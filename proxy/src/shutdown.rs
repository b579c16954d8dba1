//! Graceful shutdown in two steps: stop accepting, then (after the grace period) close
//! the sessions that are still open.

use tokio::sync::watch;

/// Shared by the listener and every session.
#[derive(Debug)]
pub struct Shutdown {
    stop_accepting: watch::Sender<bool>,
    deadline: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            stop_accepting: watch::channel(false).0,
            deadline: watch::channel(false).0,
        }
    }
}

/// Resolves once its event has fired (immediately if it already had).
#[derive(Debug)]
pub struct Signal(watch::Receiver<bool>);

impl Signal {
    /// Wait for the event.
    pub async fn wait(&mut self) {
        // An error means the sender is gone, which only happens when the proxy is
        // being torn down: treat it as fired.
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

impl Shutdown {
    /// Fires when the listener must stop accepting.
    pub fn subscribe_stop(&self) -> Signal {
        Signal(self.stop_accepting.subscribe())
    }

    /// Fires when open sessions must be closed.
    pub fn subscribe_deadline(&self) -> Signal {
        Signal(self.deadline.subscribe())
    }

    /// Stop accepting new connections.
    pub fn stop_accepting(&self) {
        self.stop_accepting.send_replace(true);
    }

    /// Close every open session now.
    pub fn close_sessions(&self) {
        self.stop_accepting.send_replace(true);
        self.deadline.send_replace(true);
    }

    /// Whether the proxy is shutting down.
    pub fn is_stopping(&self) -> bool {
        *self.stop_accepting.borrow()
    }
}
