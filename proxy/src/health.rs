//! The operations HTTP endpoint: `/metrics`, `/healthz` and `/readyz`.
//!
//! Orchestrators need two different answers: *is the process alive* (`/healthz`, restart
//! it if not) and *should it receive connections* (`/readyz`, take it out of the load
//! balancer if not). Readiness is the conjunction of named [`Check`]s that the rest of the
//! proxy keeps up to date (policy loaded, catalog readable, audit sinks writing, upstream
//! reachable), plus a draining flag raised at shutdown so traffic moves away before
//! sessions are closed. A check nobody registered does not block readiness.
//!
//! The server is plain HTTP/1.1 (hyper) meant for a private address; it never serves
//! anything but these read-only pages.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::metrics::metrics;

/// Most concurrent HTTP connections; scrapers and probes need a handful.
const MAX_HTTP_CONNECTIONS: usize = 64;

/// A client must send its request headers within this time (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open keep-alive connections get to finish once the server shuts down.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A readiness condition, updated by the part of the proxy that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// A valid policy is loaded.
    Policy,
    /// The catalog cache could read column lists from PostgreSQL.
    Catalog,
    /// Audit sinks accept events (or `on_failure = "drop"` lets traffic flow anyway).
    Audit,
    /// PostgreSQL accepts TCP connections.
    Upstream,
}

impl Check {
    const ALL: [Check; 4] = [Check::Policy, Check::Catalog, Check::Audit, Check::Upstream];

    /// The name used in `/readyz` and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Policy => "policy",
            Check::Catalog => "catalog",
            Check::Audit => "audit",
            Check::Upstream => "upstream",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last reported state of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckState {
    pub ok: bool,
    /// Why, for humans: an error message, a policy hash, the unmatched tags …
    pub detail: String,
}

/// Readiness state shared by the proxy and the HTTP server.
#[derive(Debug, Default)]
pub struct Health {
    /// Indexed like [`Check::ALL`]; `None` = not registered, does not block readiness.
    checks: RwLock<[Option<CheckState>; 4]>,
    /// Set at shutdown: `/readyz` answers 503 so load balancers stop sending clients.
    draining: AtomicBool,
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
struct Readiness<'a> {
    /// `ready`, `not_ready` or `shutting_down`.
    status: &'static str,
    checks: std::collections::BTreeMap<&'static str, &'a CheckState>,
}

impl Health {
    /// No checks registered: ready until a check is registered or set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `check` block readiness until it is first [`set`](Health::set) ok. Call it at
    /// startup for every check that will be reported, so the process is not ready early.
    pub fn register(&self, check: Check) {
        let mut checks = self.write();
        let slot = &mut checks[check as usize];
        if slot.is_none() {
            *slot = Some(CheckState {
                ok: false,
                detail: "not checked yet".to_owned(),
            });
        }
    }

    /// Records the state of `check` (registering it if needed); state changes are logged.
    pub fn set(&self, check: Check, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        let was_ok = {
            let mut checks = self.write();
            let slot = &mut checks[check as usize];
            let was_ok = slot.as_ref().map(|s| s.ok);
            *slot = Some(CheckState {
                ok,
                detail: detail.clone(),
            });
            was_ok
        };
        if was_ok != Some(ok) {
            if ok {
                tracing::info!(check = %check, detail = %detail, "readiness check ok");
            } else {
                tracing::warn!(check = %check, detail = %detail, "readiness check failing");
            }
        }
    }

    /// The last state of `check`, if registered.
    pub fn get(&self, check: Check) -> Option<CheckState> {
        self.read()[check as usize].clone()
    }

    /// Starts draining: readiness turns false for good. Call on SIGTERM before the grace
    /// period so load balancers route new clients elsewhere.
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Has [`begin_shutdown`](Health::begin_shutdown) been called?
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Every registered check is ok and the process is not draining.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.read().iter().flatten().all(|s| s.ok)
    }

    /// The `/readyz` status code and JSON body.
    fn readiness(&self) -> (StatusCode, Vec<u8>) {
        let checks = self.read();
        let all_ok = checks.iter().flatten().all(|s| s.ok);
        let status = if self.is_draining() {
            "shutting_down"
        } else if all_ok {
            "ready"
        } else {
            "not_ready"
        };
        let body = Readiness {
            status,
            checks: Check::ALL
                .iter()
                .filter_map(|c| checks[*c as usize].as_ref().map(|s| (c.as_str(), s)))
                .collect(),
        };
        let code = if status == "ready" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        // Serialising strings and bools into a Vec cannot fail.
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        (code, json)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, [Option<CheckState>; 4]> {
        // A panic while holding the lock cannot leave the array half-written.
        self.checks.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, [Option<CheckState>; 4]> {
        self.checks.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `probe` every `interval` and records its outcome as `check`: `Ok(detail)` sets it
/// ok, `Err(e)` or a probe that takes longer than `interval` sets it failing. The check is
/// registered immediately, so readiness waits for the first successful probe. Abort the
/// returned handle to stop probing. Must be called from within a tokio runtime.
pub fn spawn_probe<F, Fut, T, E>(
    health: Arc<Health>,
    check: Check,
    interval: Duration,
    mut probe: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Into<String>,
    E: fmt::Display,
{
    health.register(check);
    let interval = interval.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match tokio::time::timeout(interval, probe()).await {
                Ok(Ok(detail)) => health.set(check, true, detail),
                Ok(Err(e)) => health.set(check, false, e.to_string()),
                Err(_) => health.set(
                    check,
                    false,
                    format!("probe timed out after {} ms", interval.as_millis()),
                ),
            }
        }
    })
}

/// A bound operations endpoint, ready to [`run`](HealthServer::run).
#[derive(Debug)]
pub struct HealthServer {
    listener: TcpListener,
    health: Arc<Health>,
}

impl HealthServer {
    /// Binds `addr`; the error names the address.
    pub async fn bind(addr: SocketAddr, health: Arc<Health>) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {addr} for /metrics and health checks: {e}"),
            )
        })?;
        Ok(HealthServer { listener, health })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then gives open connections a moment to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let HealthServer { listener, health } = self;
        let limit = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
        let graceful = GracefulShutdown::new();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        tokio::pin!(shutdown);
        loop {
            let (stream, _peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "metrics endpoint accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                continue; // over the limit: dropping the stream closes it
            };
            let health = Arc::clone(&health);
            let service = service_fn(move |req| {
                let health = Arc::clone(&health);
                async move { Ok::<_, Infallible>(route(&health, &req)) }
            });
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics endpoint connection error");
                }
                drop(permit);
            });
        }
        drop(listener);
        // Connections that do not close in time are dropped with the runtime.
        let _ = tokio::time::timeout(HTTP_SHUTDOWN_GRACE, graceful.shutdown()).await;
        Ok(())
    }
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until `shutdown`
/// completes. Bind errors are returned with the address in the message.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    HealthServer::bind(addr, health).await?.run(shutdown).await
}

fn route(health: &Health, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/metrics" => match metrics().encode_text() {
            Ok(body) => response(StatusCode::OK, prometheus::TEXT_FORMAT, body),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode metrics");
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
            }
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let (code, body) = health.readiness();
            response(code, "application/json", body)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    response(code, "text/plain; charset=utf-8", body.as_bytes().to_vec())
}

fn response(code: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests;
