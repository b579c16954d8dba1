//! The listener: accepts clients, caps concurrent sessions, and runs each connection's
//! startup, cancel or session in a task of its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::audit::Auditor;
use crate::auth::{AuthSetupError, Authenticator};
use crate::cancel::CancelRegistry;
use crate::config::{Config, LimitsConfig};
use crate::hook::HookFactory;
use crate::metrics::{metrics, ConnResult};
use crate::session::{self, SessionEnd};
use crate::shutdown::Shutdown;
use crate::startup::{self, Hello, StartupError};
use crate::tls::{ServerTls, TlsError};
use crate::upstream::{Upstream, UpstreamError};
use crate::wire::messages::error::ProxyError;

/// What every connection task shares.
pub struct ProxyContext {
    pub upstream: Upstream,
    /// How sessions authenticate (`[auth] mode`), with the scram state they share.
    pub auth: Authenticator,
    pub cancels: CancelRegistry,
    pub hooks: Arc<dyn HookFactory>,
    pub limits: LimitsConfig,
    pub tls: Option<Arc<ServerTls>>,
    pub shutdown: Shutdown,
    /// Client connections currently open (sessions and those still starting up).
    pub active: AtomicUsize,
    /// Session start/end and failed-login events go here.
    pub auditor: Auditor,
}

/// The proxy could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("client TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("auth: {0}")]
    Auth(#[from] AuthSetupError),
}

/// A bound, not yet running proxy.
pub struct Server {
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    permits: Arc<Semaphore>,
}

impl Server {
    /// Bind the listen address and prepare TLS and upstream settings (no audit stream).
    pub async fn bind(cfg: &Config, hooks: Arc<dyn HookFactory>) -> Result<Server, ServerError> {
        Server::bind_with_audit(cfg, hooks, Auditor::disabled()).await
    }

    /// Bind, with session events going to `auditor`.
    pub async fn bind_with_audit(
        cfg: &Config,
        hooks: Arc<dyn HookFactory>,
        auditor: Auditor,
    ) -> Result<Server, ServerError> {
        let tls = match &cfg.tls {
            Some(t) => Some(Arc::new(ServerTls::load(
                &cfg.resolve(&t.cert),
                &cfg.resolve(&t.key),
            )?)),
            None => None,
        };
        let upstream = Upstream::new(&cfg.upstream, &cfg.base_dir)?;
        let lookup_timeout = Duration::from_millis(cfg.upstream.connect_timeout_ms.max(1));
        let auth = Authenticator::from_config(&cfg.auth, &upstream, lookup_timeout)?;
        auth.check().await?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let ctx = Arc::new(ProxyContext {
            upstream,
            auth,
            cancels: CancelRegistry::default(),
            hooks,
            limits: cfg.limits.clone(),
            tls,
            shutdown: Shutdown::default(),
            active: AtomicUsize::new(0),
            auditor,
        });
        Ok(Server {
            listener,
            permits: Arc::new(Semaphore::new(cfg.limits.max_connections)),
            ctx,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The shared context (shutdown control, TLS reload, counters).
    pub fn context(&self) -> Arc<ProxyContext> {
        self.ctx.clone()
    }

    /// Accept clients until shutdown is requested, then wait for sessions to finish for
    /// the grace period, close the rest, and return.
    pub async fn run(self) {
        let Server {
            listener,
            ctx,
            permits,
        } = self;
        let mut stop = ctx.shutdown.subscribe_stop();
        let mut backoff = Duration::from_millis(5);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        backoff = Duration::from_millis(5);
                        let _ = tcp.set_nodelay(true);
                        let permit = permits.clone().try_acquire_owned().ok();
                        let ctx = ctx.clone();
                        ctx.active.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            handle_connection(ctx.clone(), tcp, peer, permit).await;
                            ctx.active.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                },
                _ = stop.wait() => break,
            }
        }
        drop(listener);
        info!(
            sessions = ctx.active.load(Ordering::Relaxed),
            "stopped accepting; waiting for sessions to finish"
        );
        let grace = ctx.limits.shutdown_grace();
        let drained = tokio::time::timeout(grace, async {
            while ctx.active.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if drained.is_err() {
            info!(
                sessions = ctx.active.load(Ordering::Relaxed),
                "grace period over; closing remaining sessions"
            );
            ctx.shutdown.close_sessions();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while ctx.active.load(Ordering::Relaxed) > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
        }
    }
}

async fn handle_connection(
    ctx: Arc<ProxyContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let hello = tokio::time::timeout(
        ctx.limits.startup_timeout(),
        startup::negotiate(tcp, ctx.tls.as_ref()),
    )
    .await
    .unwrap_or(Err(StartupError::Timeout));
    match hello {
        Ok(Hello::Cancel {
            request: req,
            stream,
        }) => {
            if let Some(secret) = ctx.cancels.resolve(req.pid, &req.secret) {
                debug!(pid = req.pid, "forwarding cancel request");
                if let Err(e) = ctx.upstream.cancel(req.pid, &secret).await {
                    warn!(error = %e, "cancel request could not be forwarded");
                }
            } else {
                debug!(pid = req.pid, "ignoring cancel request with unknown key");
            }
            // Close the client's cancel connection only now, as PostgreSQL does: once it
            // is closed the client may rely on the backend having been signalled.
            drop(stream);
        }
        Ok(Hello::Session {
            mut stream,
            startup,
            leftover,
        }) => {
            if permit.is_none() {
                metrics().connection_refused(ConnResult::TooMany);
                let err = ProxyError::fatal("53300", "sorry, too many clients already");
                session::send_fatal(&mut stream, &err).await;
                return;
            }
            let mut guard = metrics().track_connection();
            let span = tracing::info_span!("session", client = %peer);
            let result = session::serve(ctx, stream, startup, leftover, Some(peer), span).await;
            guard.set_result(match &result {
                Ok(SessionEnd::AuthFailed) => ConnResult::AuthFailed,
                Ok(SessionEnd::Refused) => ConnResult::RefusedRole,
                Ok(_) => ConnResult::Ok,
                Err(session::SessionError::Upstream(_))
                | Err(session::SessionError::UpstreamIo(_))
                | Err(session::SessionError::UpstreamClosed)
                | Err(session::SessionError::UpstreamProtocol(_)) => {
                    metrics().upstream_error();
                    ConnResult::UpstreamError
                }
                Err(_) => ConnResult::ProtocolError,
            });
            match result {
                Ok(SessionEnd::ClientClosed) | Ok(SessionEnd::UpstreamClosed) => {}
                Ok(end) => debug!(client = %peer, ?end, "session ended"),
                Err(e) => debug!(client = %peer, error = %e, "session ended with error"),
            }
        }
        Err(StartupError::Closed) => {}
        Err(StartupError::Timeout) => metrics().connection_refused(ConnResult::Timeout),
        Err(e) => {
            metrics().connection_refused(ConnResult::ProtocolError);
            debug!(client = %peer, error = %e, "startup failed");
        }
    }
    drop(permit);
}
