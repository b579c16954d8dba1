//! One client session: connect upstream, authenticate, then relay until either side ends.
//!
//! The relay runs two loops concurrently in one task: client → upstream and upstream →
//! client, raced with the shutdown signal by [`crate::race::race3`], which polls only
//! the side that was woken. Each reads a batch of bytes, walks the complete messages in
//! it in place, consults the session hook only for the messages it must read, and
//! writes the batch on in one call, spliced only where a message was replaced. Backend rows are never
//! decoded or re-encoded. Both loops share the [`ProtocolState`] and the hook behind one
//! uncontended mutex, taken once per batch.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn, Instrument};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::audit::{AuditEvent, EventKind};
use crate::auth::Login;
use crate::hook::{name_key, SessionHook, SessionInfo, StatementTag, Verdict};
use crate::metrics::{metrics, Direction};
use crate::protocol_state::{Action, Expect, ProbeStep, ProtocolState, Settled};
use crate::server::ProxyContext;
use crate::stream::{
    ClientReader, ClientStream, ClientWriter, UpstreamReader, UpstreamStream, UpstreamWriter,
};
use crate::upstream::UpstreamError;
use crate::wire::cursor::Malformed;
use crate::wire::frame::{self, FrameError, Peek};
use crate::wire::io::{read_message, ReadError};
use crate::wire::messages::backend::{self, BackendKeyData};
use crate::wire::messages::error::ProxyError;
use crate::wire::messages::frontend;
use crate::wire::messages::startup::StartupMessage;
use crate::wire::row_mask;

mod transparent;

/// SQL that the server is guaranteed to reject at parse time: sent in place of a refused
/// statement so that the server itself aborts the transaction and skips to Sync exactly
/// as it would for a real error; its error is then replaced by the proxy's.
const POISON_SQL: &str = "pgveil_refused_statement";

/// How long a session closed for a stale catalog waits for the catalog to be read
/// again before it tells the client.
const STALE_REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Initial size of each direction's read buffer; it grows for large messages.
pub const READ_BUFFER: usize = 16 * 1024;

/// Why a session ended abnormally.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error("client i/o: {0}")]
    ClientIo(std::io::Error),
    #[error("client protocol violation: {0}")]
    ClientProtocol(String),
    #[error("upstream i/o: {0}")]
    UpstreamIo(std::io::Error),
    #[error("upstream closed the connection")]
    UpstreamClosed,
    #[error("upstream protocol violation: {0}")]
    UpstreamProtocol(Malformed),
    /// A masked result did not match the catalog its masks were planned from.
    #[error("{0}")]
    StaleCatalog(row_mask::MaskError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl SessionError {
    /// Map a read error on the client leg.
    pub fn client_read(e: ReadError) -> SessionError {
        match e {
            ReadError::Closed => SessionError::ClientIo(std::io::ErrorKind::UnexpectedEof.into()),
            ReadError::Io(e) => SessionError::ClientIo(e),
            ReadError::Frame(e) => SessionError::ClientProtocol(e.to_string()),
        }
    }

    /// Map a read error on the upstream leg.
    pub fn upstream_read(e: ReadError) -> SessionError {
        match e {
            ReadError::Closed => SessionError::UpstreamClosed,
            ReadError::Io(e) => SessionError::UpstreamIo(e),
            ReadError::Frame(_) => SessionError::UpstreamProtocol(Malformed("message")),
        }
    }
}

/// How a session ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client sent Terminate or closed its socket.
    ClientClosed,
    /// The server closed the connection (e.g. pg_terminate_backend, shutdown).
    UpstreamClosed,
    /// Authentication failed.
    AuthFailed,
    /// The session was refused after authentication (no role).
    Refused,
    /// The proxy is shutting down.
    Shutdown,
}

/// The parts of a session both relay directions share.
struct Shared {
    state: ProtocolState,
    hook: Box<dyn SessionHook>,
    descriptions: row_mask::DescriptionMemo,
}

/// Wakes the client → upstream loop when a probe's answer has been consumed.
type ProbeDone = tokio::sync::Notify;

/// Serve one client session to its end. `span` covers start-up and the end of the
/// session; the relay loop runs outside it, so that a round trip does not pay for
/// entering and leaving a span on every wake-up (its rare log lines name the session).
pub async fn serve(
    ctx: Arc<ProxyContext>,
    client: ClientStream,
    startup: StartupMessage,
    client_buf: BytesMut,
    peer: Option<SocketAddr>,
    span: tracing::Span,
) -> Result<SessionEnd, SessionError> {
    let opened = match open(&ctx, client, &startup, client_buf, peer)
        .instrument(span.clone())
        .await?
    {
        Opened::Ended(end) => return Ok(end),
        Opened::Ready(opened) => opened,
    };
    let ready = *opened;
    let started = std::time::Instant::now();
    let counts = Counts::default();
    let result = relay(
        ctx.clone(),
        ready.client,
        ready.client_buf,
        ready.upstream,
        ready.upstream_buf,
        ready.hook,
        &counts,
    )
    .await;
    drop(ready.cancel_guard);
    record_end(&ctx, &ready.info, peer, started, &counts, &result)
        .instrument(span)
        .await;
    result
}

/// A session after start-up: authenticated, hook open, ready to relay.
struct Ready {
    client: ClientStream,
    client_buf: BytesMut,
    upstream: UpstreamStream,
    upstream_buf: BytesMut,
    hook: Box<dyn SessionHook>,
    info: SessionInfo,
    cancel_guard: Option<CancelGuard>,
}

/// What start-up came to.
enum Opened {
    /// The session ended during start-up (login failed, refused, server error).
    Ended(SessionEnd),
    Ready(Box<Ready>),
}

/// Start-up: connect and authenticate upstream, relay the server's parameters and key
/// (with a proxy-issued secret), open the session hook and record the start event.
async fn open(
    ctx: &Arc<ProxyContext>,
    mut client: ClientStream,
    startup: &StartupMessage,
    mut client_buf: BytesMut,
    peer: Option<SocketAddr>,
) -> Result<Opened, SessionError> {
    let Some(user) = startup.user().map(str::to_owned) else {
        send_fatal(
            &mut client,
            &ProxyError::fatal(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            ),
        )
        .await;
        return Ok(Opened::Ended(SessionEnd::Refused));
    };
    let database = startup.database().unwrap_or(&user).to_owned();

    let (mut upstream, mut upstream_buf) =
        match crate::auth::establish(ctx, &mut client, &mut client_buf, startup, peer).await? {
            Login::Established {
                upstream,
                upstream_buf,
            } => (upstream, upstream_buf),
            Login::Failed => {
                audit_session(
                    ctx,
                    EventKind::LoginFailed,
                    &user,
                    &database,
                    startup,
                    peer,
                    None,
                    Some("authentication failed".into()),
                    None,
                )
                .await;
                return Ok(Opened::Ended(SessionEnd::AuthFailed));
            }
        };

    // After AuthenticationOk: ParameterStatus*, BackendKeyData, ReadyForQuery.
    let mut out = Vec::with_capacity(1024);
    let mut params: Vec<(String, String)> = Vec::new();
    let mut key: Option<(i32, Vec<u8>)> = None;
    let ready = loop {
        let msg = read_message(&mut upstream, &mut upstream_buf, usize::MAX)
            .await
            .map_err(SessionError::upstream_read)?;
        let body = frame::body(&msg);
        match msg[0] {
            b'K' => {
                let k = BackendKeyData::parse(body).map_err(SessionError::UpstreamProtocol)?;
                let ours = ctx.cancels.register(k.pid, &k.secret);
                BackendKeyData {
                    pid: k.pid,
                    secret: ours.clone(),
                }
                .encode(&mut out);
                key = Some((k.pid, ours));
            }
            b'S' => {
                if let Ok((n, v)) = backend::parameter_status(body) {
                    params.push((n.to_owned(), v.to_owned()));
                }
                out.extend_from_slice(&msg);
            }
            b'E' => {
                out.extend_from_slice(&msg);
                let _ = client.write_all(&out).await;
                let _ = client.flush().await;
                return Ok(Opened::Ended(SessionEnd::UpstreamClosed));
            }
            b'Z' => break msg,
            _ => out.extend_from_slice(&msg),
        }
    };
    let cancel_guard = key.as_ref().map(|(pid, secret)| CancelGuard {
        ctx: ctx.clone(),
        pid: *pid,
        secret: secret.clone(),
    });

    let info = SessionInfo {
        id: new_session_id(),
        user: user.clone(),
        database,
        application: startup.param("application_name").map(str::to_owned),
        client_addr: peer,
        startup_params: startup.params.clone(),
        backend_pid: key.as_ref().map(|k| k.0).unwrap_or(0),
    };
    let mut hook = match ctx.hooks.open(&info).await {
        Ok(h) => h,
        Err(e) => {
            audit_session(
                ctx,
                EventKind::LoginFailed,
                &user,
                &info.database,
                startup,
                peer,
                Some(&info.id),
                Some(e.message.clone()),
                Some(e.sqlstate),
            )
            .await;
            send_fatal(&mut client, &e).await;
            let _ = upstream.write_all(&TERMINATE).await;
            return Ok(Opened::Ended(SessionEnd::Refused));
        }
    };
    for (n, v) in &params {
        hook.on_parameter_status(n, v);
    }
    if let Ok(status) = backend::ready_status(frame::body(&ready)) {
        hook.on_ready(status);
    }
    out.extend_from_slice(&ready);
    client
        .write_all(&out)
        .await
        .map_err(SessionError::ClientIo)?;
    client.flush().await.map_err(SessionError::ClientIo)?;
    debug!(session = %info.id, user = %user, pid = info.backend_pid, "session established");

    audit_session(
        ctx,
        EventKind::SessionStart,
        &user,
        &info.database,
        startup,
        peer,
        Some(&info.id),
        None,
        None,
    )
    .await;
    Ok(Opened::Ready(Box::new(Ready {
        client,
        client_buf,
        upstream,
        upstream_buf,
        hook,
        info,
        cancel_guard,
    })))
}

/// Record the session's end event: bytes and statements relayed, how it ended.
async fn record_end(
    ctx: &ProxyContext,
    info: &SessionInfo,
    peer: Option<SocketAddr>,
    started: std::time::Instant,
    counts: &Counts,
    result: &Result<SessionEnd, SessionError>,
) {
    let details = serde_json::json!({
        "bytes_from_client": counts.from_client.load(Ordering::Relaxed),
        "bytes_to_client": counts.to_client.load(Ordering::Relaxed),
        "statements": counts.statements.load(Ordering::Relaxed),
        "end": match result { Ok(end) => format!("{end:?}"), Err(e) => e.to_string() },
    });
    let ev = AuditEvent {
        event: EventKind::SessionEnd,
        session: Some(info.id.as_str().into()),
        user: Some(info.user.as_str().into()),
        client: peer.map(|p| p.to_string().into()),
        application: info.application.as_deref().map(Into::into),
        database: Some(info.database.as_str().into()),
        duration_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
        details: Some(details),
        ..Default::default()
    };
    let _ = ctx.auditor.record(ev).await;
}

/// Bytes and statements of one session, for its end event.
#[derive(Default)]
struct Counts {
    from_client: AtomicU64,
    to_client: AtomicU64,
    statements: AtomicU64,
}

#[allow(clippy::too_many_arguments)]
async fn audit_session(
    ctx: &ProxyContext,
    kind: EventKind,
    user: &str,
    database: &str,
    startup: &StartupMessage,
    peer: Option<SocketAddr>,
    session: Option<&str>,
    reason: Option<String>,
    sqlstate: Option<&str>,
) {
    let ev = AuditEvent {
        event: kind,
        session: session.map(Into::into),
        user: Some(user.into()),
        client: peer.map(|p| p.to_string().into()),
        application: startup.param("application_name").map(Into::into),
        database: Some(database.into()),
        reason,
        sqlstate: sqlstate.map(str::to_owned),
        ..Default::default()
    };
    if let Err(e) = ctx.auditor.record(ev).await {
        warn!(error = %e, "audit event for the session could not be recorded");
    }
}

/// The Terminate message.
const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

/// Unregisters the session's cancel key when the session ends, however it ends.
struct CancelGuard {
    ctx: Arc<ProxyContext>,
    pid: i32,
    secret: Vec<u8>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.ctx.cancels.unregister(self.pid, &self.secret);
    }
}

fn new_session_id() -> String {
    let mut id = [0u8; 8];
    rand::fill(&mut id);
    hex::encode(id)
}

/// Send a FATAL error and flush, ignoring failures (the session is ending anyway).
pub async fn send_fatal<S: AsyncWrite + Unpin>(stream: &mut S, err: &ProxyError) {
    let _ = stream.write_all(&err.to_message()).await;
    let _ = stream.flush().await;
}

async fn relay(
    ctx: Arc<ProxyContext>,
    mut client: ClientStream,
    client_buf: BytesMut,
    mut upstream: UpstreamStream,
    upstream_buf: BytesMut,
    hook: Box<dyn SessionHook>,
    counts: &Counts,
) -> Result<SessionEnd, SessionError> {
    let transparent = hook.is_transparent();
    let shared = Mutex::new(Shared {
        state: ProtocolState::default(),
        hook,
        descriptions: row_mask::DescriptionMemo::default(),
    });
    let (mut client_rd, mut client_wr) = client.split();
    let (mut upstream_rd, mut upstream_wr) = upstream.split();
    let limit = ctx.limits.max_message_bytes;
    let mut shutdown = ctx.shutdown.subscribe_deadline();

    let probe_done = ProbeDone::new();
    let ended = crate::race::race3(
        client_to_upstream(
            &shared,
            &probe_done,
            &mut client_rd,
            client_buf,
            &mut upstream_wr,
            limit,
            transparent,
            counts,
        ),
        upstream_to_client(
            &shared,
            &probe_done,
            &mut upstream_rd,
            upstream_buf,
            &mut client_wr,
            transparent,
            counts,
        ),
        async {
            shutdown.wait().await;
            Ok(Ended::Shutdown)
        },
    )
    .await;
    match ended {
        Ok(Ended::ClientClosed) => {
            let _ = upstream_wr.write_all(&TERMINATE).await;
            let _ = upstream_wr.shutdown().await;
            Ok(SessionEnd::ClientClosed)
        }
        Ok(Ended::UpstreamClosed) => {
            let _ = client_wr.shutdown().await;
            Ok(SessionEnd::UpstreamClosed)
        }
        Ok(Ended::Shutdown) => {
            let err = ProxyError::fatal(
                "57P01",
                "terminating connection due to administrator command",
            );
            send_fatal(&mut client_wr, &err).await;
            let _ = upstream_wr.write_all(&TERMINATE).await;
            Ok(SessionEnd::Shutdown)
        }
        Ok(Ended::ClientViolation(err)) => {
            send_fatal(&mut client_wr, &err).await;
            let _ = upstream_wr.write_all(&TERMINATE).await;
            Err(SessionError::ClientProtocol(err.message))
        }
        Err(e @ SessionError::StaleCatalog(_)) => {
            let refresh = lock(&shared).hook.on_stale_catalog();
            if let Some(refresh) = refresh {
                // Bounded: a catalog that cannot be read must not hold the session open.
                let _ = tokio::time::timeout(STALE_REFRESH_WAIT, refresh).await;
            }
            let err = ProxyError::fatal(
                "0A000",
                "pgveil: the columns of a masked result do not match pgveil's catalog (the table changed since it was read); reconnect",
            );
            send_fatal(&mut client_wr, &err).await;
            let _ = upstream_wr.write_all(&TERMINATE).await;
            Err(e)
        }
        Err(e) => {
            if matches!(
                e,
                SessionError::UpstreamIo(_) | SessionError::UpstreamProtocol(_)
            ) {
                let err =
                    ProxyError::fatal("08006", "pgveil lost the connection to the database server");
                send_fatal(&mut client_wr, &err).await;
            }
            Err(e)
        }
    }
}

/// Why one relay direction stopped.
enum Ended {
    ClientClosed,
    UpstreamClosed,
    Shutdown,
    /// The client broke the protocol; it gets this FATAL error.
    ClientViolation(ProxyError),
}

/// Builds the bytes to forward from a batch: the batch itself when nothing was
/// replaced, else the batch with replaced ranges spliced in.
struct Splice<'a> {
    out: &'a mut Vec<u8>,
    copied_to: usize,
    modified: bool,
}

impl<'a> Splice<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.clear();
        Splice {
            out,
            copied_to: 0,
            modified: false,
        }
    }

    /// Replace `src[start..end]` with `with`.
    fn replace(&mut self, src: &[u8], start: usize, end: usize, with: &[u8]) {
        self.out.extend_from_slice(&src[self.copied_to..start]);
        self.out.extend_from_slice(with);
        self.copied_to = end;
        self.modified = true;
    }

    /// The bytes to send for `src[..end]`.
    fn finish<'s>(self, src: &'s [u8], end: usize) -> &'s [u8]
    where
        'a: 's,
    {
        if !self.modified {
            return &src[..end];
        }
        self.out.extend_from_slice(&src[self.copied_to..end]);
        self.out
    }
}

/// Relay client messages upstream. A `transparent` session (see
/// [`SessionHook::is_transparent`]) only has its messages framed and checked.
#[allow(clippy::too_many_arguments)]
async fn client_to_upstream(
    shared: &Mutex<Shared>,
    probe_done: &ProbeDone,
    rd: &mut ClientReader<'_>,
    mut buf: BytesMut,
    wr: &mut UpstreamWriter<'_>,
    limit: usize,
    transparent: bool,
    counts: &Counts,
) -> Result<Ended, SessionError> {
    let mut scratch = Vec::with_capacity(1024);
    let mut replacement = Vec::with_capacity(256);
    loop {
        if !transparent && has_complete_message(&buf) {
            before_batch(shared, probe_done, wr).await?;
        }
        let mut pos = 0;
        let mut terminate = false;
        let mut retry = false;
        let mut splice = Splice::new(&mut scratch);
        if transparent {
            match transparent::client_batch(&mut buf, limit) {
                Ok(batch) => (pos, terminate) = (batch.end, batch.terminate),
                Err(violation) => return Ok(Ended::ClientViolation(violation)),
            }
        } else {
            let mut guard = lock(shared);
            let sh = &mut *guard;
            loop {
                match frame::peek(&buf[pos..], limit) {
                    Ok(Peek::Complete { tag, total }) => {
                        let msg = &buf[pos..pos + total];
                        replacement.clear();
                        match on_client_message(sh, tag, msg, &mut replacement) {
                            Ok(Handled::Forward) => {}
                            Ok(Handled::Replace) => {
                                splice.replace(&buf, pos, pos + total, &replacement)
                            }
                            Ok(Handled::Retry) => {
                                retry = true;
                                break;
                            }
                            Err(violation) => return Ok(Ended::ClientViolation(violation)),
                        }
                        pos += total;
                        if tag == b'X' {
                            terminate = true;
                            break;
                        }
                    }
                    Ok(Peek::Incomplete { total }) => {
                        let have = buf.len() - pos;
                        if total > have {
                            buf.reserve(total - have);
                        }
                        break;
                    }
                    Err(e) => {
                        return Ok(Ended::ClientViolation(frame_violation(&e)));
                    }
                }
            }
        }
        if pos > 0 {
            counts.from_client.fetch_add(pos as u64, Ordering::Relaxed);
            metrics().bytes(Direction::ClientToUpstream, pos as u64);
            let bytes = splice.finish(&buf, pos);
            wr.write_all(bytes)
                .await
                .map_err(SessionError::UpstreamIo)?;
            wr.flush().await.map_err(SessionError::UpstreamIo)?;
            consume(&mut buf, pos);
        }
        if terminate {
            return Ok(Ended::ClientClosed);
        }
        if retry {
            // The hook needs async work (catalog refresh, audit slot) before it can
            // decide the message now at the front of `buf`.
            let prep = lock(shared).hook.prepare();
            if let Some(prep) = prep {
                prep.await;
            }
            continue;
        }
        make_room(&mut buf);
        match rd.read_buf(&mut buf).await {
            Ok(0) => return Ok(Ended::ClientClosed),
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "client read failed");
                return Ok(Ended::ClientClosed);
            }
        }
    }
}

/// Drop the first `n` bytes of `buf`, which were relayed. A wholly relayed buffer is
/// cleared in place, so that it still starts at the front of its allocation and
/// [`make_room`] has nothing to move back.
#[inline]
fn consume(buf: &mut BytesMut, n: usize) {
    if n == buf.len() {
        buf.clear();
    } else {
        buf.advance(n);
    }
}

/// Room for the next read. An emptied buffer starts again at the front of its
/// allocation, so that every exchange reuses the same cache lines instead of walking
/// through the whole allocation into lines that are cold by then; otherwise at least
/// 1 KiB is kept free.
fn make_room(buf: &mut BytesMut) {
    if buf.is_empty() && buf.try_reclaim(READ_BUFFER) {
        return;
    }
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_BUFFER);
    }
}

fn has_complete_message(buf: &[u8]) -> bool {
    matches!(
        frame::peek(buf, usize::MAX),
        Ok(Peek::Complete { .. }) | Err(_)
    )
}

/// Before deciding a batch: let the hook finish async work, and run its probe query
/// (only when the server owes nothing, so it cannot land inside a COPY or pipeline).
async fn before_batch(
    shared: &Mutex<Shared>,
    probe_done: &ProbeDone,
    wr: &mut UpstreamWriter<'_>,
) -> Result<(), SessionError> {
    let (prep, probe) = {
        let mut g = lock(shared);
        let prep = g.hook.prepare();
        let probe = if g.state.is_idle() {
            g.hook.probe()
        } else {
            None
        };
        if probe.is_some() {
            g.state.push(Expect::Probe {
                row: None,
                failed: false,
            });
        }
        (prep, probe)
    };
    if let Some(prep) = prep {
        prep.await;
    }
    if let Some(sql) = probe {
        let done = probe_done.notified();
        let mut q = Vec::with_capacity(sql.len() + 6);
        encode_query(&mut q, &sql);
        wr.write_all(&q).await.map_err(SessionError::UpstreamIo)?;
        wr.flush().await.map_err(SessionError::UpstreamIo)?;
        done.await;
    }
    Ok(())
}

fn frame_violation(e: &FrameError) -> ProxyError {
    match e {
        FrameError::TooLarge { .. } => {
            ProxyError::fatal("08P01", format!("invalid message length: {e}"))
        }
        FrameError::LengthTooSmall(_) => {
            ProxyError::fatal("08P01", format!("invalid message length: {e}"))
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A poisoned lock means a panic elsewhere in this session's task, which would
    // already have ended it; recover the data rather than propagate.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// What became of one client message.
enum Handled {
    /// Forward the message as received.
    Forward,
    /// Forward `replacement` instead.
    Replace,
    /// Not decided yet: await the hook's preparation and try again.
    Retry,
}

/// Handle one client message.
fn on_client_message(
    sh: &mut Shared,
    tag: u8,
    msg: &[u8],
    replacement: &mut Vec<u8>,
) -> Result<Handled, ProxyError> {
    let body = frame::body(msg);
    let malformed = transparent::malformed;
    match tag {
        b'Q' => {
            let raw = frontend::query(body).map_err(malformed)?;
            let mut tags: Vec<StatementTag> = Vec::new();
            let verdict = match sql_text(sh.hook.as_mut(), raw) {
                Ok((sql, lossy)) => on_lossy(sh.hook.on_query(&sql, &mut tags), lossy),
                Err(e) => Verdict::Refuse(e),
            };
            let tags = tags.into_iter().collect();
            match verdict {
                Verdict::Retry => Ok(Handled::Retry),
                Verdict::Forward => {
                    sh.state.push(Expect::Query {
                        tags,
                        rows: 0,
                        refused: None,
                        masks: None,
                    });
                    Ok(Handled::Forward)
                }
                Verdict::MaskRows(masks) => {
                    sh.state.push(Expect::Query {
                        tags,
                        rows: 0,
                        refused: None,
                        masks: Some(masks),
                    });
                    Ok(Handled::Forward)
                }
                Verdict::Rewrite(text) => {
                    encode_query(replacement, &text);
                    sh.state.push(Expect::Query {
                        tags,
                        rows: 0,
                        refused: None,
                        masks: None,
                    });
                    Ok(Handled::Replace)
                }
                Verdict::Refuse(err) => {
                    encode_query(replacement, POISON_SQL);
                    sh.state.push(Expect::Query {
                        tags,
                        rows: 0,
                        refused: Some(Box::new(err)),
                        masks: None,
                    });
                    Ok(Handled::Replace)
                }
            }
        }
        b'P' => {
            let parse = frontend::Parse::decode(body).map_err(malformed)?;
            let verdict = match sql_text(sh.hook.as_mut(), parse.query) {
                Ok((sql, lossy)) => on_lossy(sh.hook.on_parse(&name_key(parse.name), &sql), lossy),
                Err(e) => Verdict::Refuse(e),
            };
            match verdict {
                Verdict::Retry => Ok(Handled::Retry),
                Verdict::Forward | Verdict::MaskRows(_) => {
                    sh.state.push(Expect::Parse);
                    Ok(Handled::Forward)
                }
                Verdict::Rewrite(text) => {
                    parse.encode_with_query(replacement, &text);
                    sh.state.push(Expect::Parse);
                    Ok(Handled::Replace)
                }
                Verdict::Refuse(err) => {
                    parse.encode_with_query(replacement, POISON_SQL);
                    sh.state.push(Expect::Refused(Box::new(err)));
                    Ok(Handled::Replace)
                }
            }
        }
        b'B' => {
            let (portal, statement) = frontend::bind_names(body).map_err(malformed)?;
            match sh.hook.on_bind(&name_key(portal), &name_key(statement)) {
                Verdict::Retry => Ok(Handled::Retry),
                Verdict::Refuse(err) => {
                    // Bind to a statement that cannot exist: the server fails it.
                    crate::wire::messages::encode(replacement, b'B', |b| {
                        crate::wire::messages::put_cstr(b, portal);
                        crate::wire::messages::put_cstr(b, POISON_SQL.as_bytes());
                        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                    });
                    sh.state.push(Expect::Refused(Box::new(err)));
                    Ok(Handled::Replace)
                }
                _ => {
                    sh.state.push(Expect::Bind);
                    Ok(Handled::Forward)
                }
            }
        }
        b'E' => {
            let (portal, _max) = frontend::execute(body).map_err(malformed)?;
            let (verdict, tag) = sh.hook.on_execute(&name_key(portal));
            match verdict {
                Verdict::Retry => Ok(Handled::Retry),
                Verdict::Refuse(err) => {
                    crate::wire::messages::encode(replacement, b'E', |b| {
                        crate::wire::messages::put_cstr(b, POISON_SQL.as_bytes());
                        b.extend_from_slice(&0i32.to_be_bytes());
                    });
                    sh.state.push(Expect::Refused(Box::new(err)));
                    Ok(Handled::Replace)
                }
                Verdict::MaskRows(masks) => {
                    sh.state.push(Expect::Execute {
                        tag,
                        rows: 0,
                        masks: Some(masks),
                    });
                    Ok(Handled::Forward)
                }
                _ => {
                    sh.state.push(Expect::Execute {
                        tag,
                        rows: 0,
                        masks: None,
                    });
                    Ok(Handled::Forward)
                }
            }
        }
        b'D' => {
            let (kind, name) = frontend::target(body).map_err(malformed)?;
            let masks = sh.hook.describe_masks(kind, &name_key(name));
            sh.state.push(if kind == b'S' {
                Expect::DescribeStatement { masks }
            } else {
                Expect::DescribePortal { masks }
            });
            Ok(Handled::Forward)
        }
        b'C' => {
            let (kind, name) = frontend::target(body).map_err(malformed)?;
            sh.hook.on_close(kind, &name_key(name));
            sh.state.push(Expect::Close {
                statement: kind == b'S',
            });
            Ok(Handled::Forward)
        }
        b'S' => {
            sh.hook.on_sync();
            sh.state.push(Expect::Sync);
            Ok(Handled::Forward)
        }
        b'F' => match sh.hook.on_function_call() {
            Verdict::Retry => Ok(Handled::Retry),
            Verdict::Refuse(err) => {
                encode_query(replacement, POISON_SQL);
                sh.state.push(Expect::Query {
                    tags: Default::default(),
                    rows: 0,
                    refused: Some(Box::new(err)),
                    masks: None,
                });
                Ok(Handled::Replace)
            }
            _ => {
                sh.state.push(Expect::FunctionCall);
                Ok(Handled::Forward)
            }
        },
        // Flush, CopyData, CopyDone, CopyFail, Terminate and anything unknown pass as is;
        // the server judges unknown types itself.
        _ => Ok(Handled::Forward),
    }
}

/// A client's SQL text as the hook reads it, and whether it was not UTF-8 (then with
/// invalid sequences replaced); Err when the hook refuses a text it cannot read.
fn sql_text<'a>(
    hook: &mut dyn SessionHook,
    raw: &'a [u8],
) -> Result<(std::borrow::Cow<'a, str>, bool), ProxyError> {
    match std::str::from_utf8(raw) {
        Ok(sql) => Ok((std::borrow::Cow::Borrowed(sql), false)),
        Err(_) => match hook.on_undecodable_text() {
            Some(e) => Err(e),
            None => Ok((String::from_utf8_lossy(raw), true)),
        },
    }
}

/// The verdict on a text the hook read with replaced sequences (`lossy`): forwarding
/// sends the client's bytes, but a rewrite or proxy-side masks would be planned from a
/// text the server does not run, so they are refused.
fn on_lossy(verdict: Verdict, lossy: bool) -> Verdict {
    match verdict {
        Verdict::Rewrite(_) | Verdict::MaskRows(_) if lossy => Verdict::Refuse(ProxyError::error(
            "42501",
            "pgveil: the statement text is not valid UTF-8, so it cannot be rewritten",
        )),
        v => v,
    }
}

fn encode_query(out: &mut Vec<u8>, sql: &str) {
    crate::wire::messages::encode(out, b'Q', |b| {
        crate::wire::messages::put_cstr(b, sql.as_bytes());
    });
}

/// Relay backend messages to the client. A `transparent` session (see
/// [`SessionHook::is_transparent`]) only has its messages framed.
async fn upstream_to_client(
    shared: &Mutex<Shared>,
    probe_done: &ProbeDone,
    rd: &mut UpstreamReader<'_>,
    mut buf: BytesMut,
    wr: &mut ClientWriter<'_>,
    transparent: bool,
    counts: &Counts,
) -> Result<Ended, SessionError> {
    let mut scratch = Vec::with_capacity(1024);
    let mut replacement = Vec::with_capacity(256);
    loop {
        let mut pos = 0;
        let mut splice = Splice::new(&mut scratch);
        if transparent {
            pos = transparent::backend_batch(&mut buf)?;
        } else if buf.len() >= frame::HEADER_LEN {
            let mut guard = lock(shared);
            let sh = &mut *guard;
            // Asked once per batch, not per row: the limit only changes between
            // statements (role resolution, policy reload).
            let max_rows = sh.hook.max_rows();
            let mut statements = 0;
            loop {
                match frame::peek(&buf[pos..], usize::MAX) {
                    Ok(Peek::Complete { tag, total }) => {
                        let msg = &buf[pos..pos + total];
                        match sh.state.on_probe_message(tag, frame::body(msg)) {
                            Some(ProbeStep::Consumed) => {
                                splice.replace(&buf, pos, pos + total, &[]);
                            }
                            Some(ProbeStep::Done(row)) => {
                                splice.replace(&buf, pos, pos + total, &[]);
                                sh.hook.on_probe_result(row);
                                probe_done.notify_one();
                            }
                            None => {
                                replacement.clear();
                                let replace =
                                    on_backend_message(sh, max_rows, tag, msg, &mut replacement)?;
                                if tag == b'Z' {
                                    // Delivered before the hook hears that the batch is
                                    // answered: with a ReadyForQuery it forgets what the
                                    // server did not confirm.
                                    statements += deliver_settled(sh);
                                    if let Ok(status) = backend::ready_status(frame::body(msg)) {
                                        sh.hook.on_ready(status);
                                    }
                                }
                                if replace {
                                    splice.replace(&buf, pos, pos + total, &replacement);
                                }
                            }
                        }
                        pos += total;
                    }
                    Ok(Peek::Incomplete { total }) => {
                        let have = buf.len() - pos;
                        if total > have {
                            buf.reserve(total - have);
                        }
                        break;
                    }
                    Err(_) => return Err(SessionError::UpstreamProtocol(Malformed("message"))),
                }
            }
            statements += deliver_settled(sh);
            counts.statements.fetch_add(statements, Ordering::Relaxed);
        }
        if pos > 0 {
            let bytes = splice.finish(&buf, pos);
            counts
                .to_client
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            metrics().bytes(Direction::UpstreamToClient, bytes.len() as u64);
            if !bytes.is_empty() {
                wr.write_all(bytes).await.map_err(SessionError::ClientIo)?;
                wr.flush().await.map_err(SessionError::ClientIo)?;
            }
            consume(&mut buf, pos);
        }
        make_room(&mut buf);
        match rd.read_buf(&mut buf).await {
            Ok(0) => return Ok(Ended::UpstreamClosed),
            Ok(_) => {}
            Err(e) => return Err(SessionError::UpstreamIo(e)),
        }
    }
}

/// Tell the hook what the server's replies settled, in order; how many statements ended.
fn deliver_settled(sh: &mut Shared) -> u64 {
    let mut statements = 0;
    for settled in sh.state.take_settled() {
        match settled {
            Settled::Statement(tag, how) => {
                statements += 1;
                sh.hook.on_complete(tag, how);
            }
            Settled::Change(change) => sh.hook.on_statement_change(change),
            Settled::Portal(change) => sh.hook.on_portal_change(change),
        }
    }
    statements
}

/// Handle one backend message; `max_rows` is the role's row limit. Returns true when
/// `replacement` must be sent instead.
fn on_backend_message(
    sh: &mut Shared,
    max_rows: Option<u64>,
    tag: u8,
    msg: &[u8],
    replacement: &mut Vec<u8>,
) -> Result<bool, SessionError> {
    let body = frame::body(msg);
    Ok(match tag {
        b'D' => {
            sh.state.on_backend(tag, body);
            // Rows past the role's limit are dropped; the statement then ends in error.
            if max_rows.is_some_and(|max| sh.state.current_rows() > max) {
                return Ok(true);
            }
            match sh.state.masks() {
                None => false,
                Some(masks) => {
                    let key =
                        sh.hook
                            .mask_key()
                            .ok_or(SessionError::UpstreamProtocol(Malformed(
                                "rows to mask without a key",
                            )))?;
                    row_mask::data_row(body, masks, key, replacement)
                        .map_err(SessionError::UpstreamProtocol)?;
                    true
                }
            }
        }
        b'd' => {
            sh.state.on_backend(tag, body);
            max_rows.is_some_and(|max| sh.state.current_rows() > max)
        }
        b'T' => {
            let masked = match sh.state.masks() {
                Some(masks) => {
                    let memo = &mut sh.descriptions;
                    memo.describe(body, masks, replacement)
                        .map_err(|e| match e {
                            row_mask::MaskError::Malformed(m) => SessionError::UpstreamProtocol(m),
                            stale => SessionError::StaleCatalog(stale),
                        })?;
                    true
                }
                None => false,
            };
            sh.state.on_backend(tag, body);
            masked
        }
        b'C' | b's' => {
            let over = max_rows.filter(|max| sh.state.current_rows() > *max);
            sh.state.on_backend(tag, body);
            match over {
                Some(max) => {
                    ProxyError::error(
                        "54000",
                        format!("pgveil: statement returned more than {max} rows, the limit of this role"),
                    )
                    .with_hint("add a WHERE clause or LIMIT, or ask the DBA to raise max_rows")
                    .encode(replacement);
                    true
                }
                None => false,
            }
        }
        b'1' | b'2' | b'3' | b'I' | b't' | b'n' => {
            sh.state.on_backend(tag, body);
            false
        }
        b'E' => match sh.state.on_backend(tag, body) {
            Action::ReplaceError(err) => {
                err.encode(replacement);
                true
            }
            Action::Relay => match sh.hook.scrub(tag, body) {
                Some(scrubbed) => {
                    crate::wire::messages::encode(replacement, tag, |b| {
                        b.extend_from_slice(&scrubbed)
                    });
                    true
                }
                None => false,
            },
        },
        b'N' => match sh.hook.scrub(tag, body) {
            // Notices are asynchronous: the client counts none, so one can go unsent.
            Some(scrubbed) if scrubbed.is_empty() => true,
            Some(scrubbed) => {
                crate::wire::messages::encode(replacement, tag, |b| b.extend_from_slice(&scrubbed));
                true
            }
            None => false,
        },
        b'Z' => {
            // The hook hears of it once what it settled was delivered.
            sh.state.on_backend(tag, body);
            false
        }
        b'S' => {
            if let Ok((name, value)) = backend::parameter_status(body) {
                sh.hook.on_parameter_status(name, value);
            }
            false
        }
        _ => false,
    })
}
