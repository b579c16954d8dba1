//! The `http` sink: NDJSON batches POSTed to a collector (hyper 1, HTTP/1.1 keep-alive,
//! TLS by rustls with the ring provider). A batch is sent when it holds
//! `batch_max_events` lines or its oldest line is `batch_max_ms` old; a failed POST is
//! retried with the same body (at-least-once: a collector that stored a batch but did not
//! answer sees it again; `seq` lets it deduplicate).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_rustls::TlsConnector;

use super::config::HttpSinkConfig;
use super::sink::{Batch, Flushed, Sink};
use super::AuditError;

/// Largest collector answer read (and discarded) before the connection is reused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The HTTP sink: lines waiting for a batch, the batch being delivered, the connection.
pub(crate) struct HttpSink {
    target: Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    token: Token,
    timeout: Duration,
    batch_max_events: usize,
    batch_max_age: Duration,
    pending: VecDeque<Bytes>,
    /// When the oldest pending line arrived.
    oldest: Option<Instant>,
    /// A batch that was sent and not acknowledged: its lines and its body.
    in_flight: Option<(Vec<Bytes>, Bytes)>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

/// Where batches go, taken apart once at start.
struct Target {
    host: String,
    port: u16,
    /// `Host` header value (the URL's authority).
    authority: HeaderValue,
    /// Origin-form request target (path and query).
    path: String,
}

/// Why a POST failed: before any answer (a reused connection may just have been closed
/// by the collector), or with an answer or a timeout (retrying at once would not help).
enum Failure {
    Request(String),
    Answer(String),
    /// 413: the batch must be split.
    TooLarge(String),
}

/// How the sink authenticates to the collector.
enum Token {
    None,
    Fixed(HeaderValue),
    File { path: PathBuf, value: HeaderValue },
}

impl HttpSink {
    /// Parses the URL, loads the CA bundle and the bearer token. Fails on anything that
    /// would make every delivery fail.
    pub fn new(cfg: &HttpSinkConfig, name: &str) -> Result<HttpSink, AuditError> {
        let bad = |what: String| AuditError::Config(format!("sink {name}: {what}"));
        let uri: Uri = cfg
            .url
            .parse()
            .map_err(|e| bad(format!("invalid url {:?}: {e}", cfg.url)))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(bad(format!(
                    "url {:?} must start with http:// or https://",
                    cfg.url
                )))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| bad(format!("url {:?} has no host", cfg.url)))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad(format!("url {:?} has no host", cfg.url)));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let target = Target {
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|e| bad(format!("invalid host in url: {e}")))?,
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            host,
            port,
        };
        let tls = if https {
            let config = client_tls_config(cfg.ca_file.as_deref()).map_err(bad)?;
            let server_name = ServerName::try_from(target.host.clone())
                .map_err(|e| bad(format!("invalid TLS server name {:?}: {e}", target.host)))?;
            Some((TlsConnector::from(Arc::new(config)), server_name))
        } else {
            if cfg.ca_file.is_some() {
                return Err(bad("ca_file needs an https:// url".into()));
            }
            None
        };
        let token = match (&cfg.bearer_token_env, &cfg.bearer_token_file) {
            (Some(var), _) => {
                let value = std::env::var(var)
                    .map_err(|_| bad(format!("environment variable {var} is not set")))?;
                Token::Fixed(bearer(&value).map_err(bad)?)
            }
            (None, Some(path)) => Token::File {
                path: path.clone(),
                value: read_token_file(path).map_err(bad)?,
            },
            (None, None) => Token::None,
        };
        Ok(HttpSink {
            target,
            tls,
            token,
            timeout: Duration::from_millis(cfg.timeout_ms),
            batch_max_events: cfg.batch_max_events,
            batch_max_age: Duration::from_millis(cfg.batch_max_ms),
            pending: VecDeque::new(),
            oldest: None,
            in_flight: None,
            conn: None,
        })
    }

    fn batch_due(&self, now: Instant) -> bool {
        self.pending.len() >= self.batch_max_events
            || self.oldest.is_some_and(|t| now >= t + self.batch_max_age)
    }

    /// Takes the next batch (up to `batch_max_events` lines) off the pending lines.
    fn next_batch(&mut self) -> (Vec<Bytes>, Bytes) {
        let n = self.pending.len().min(self.batch_max_events);
        let lines: Vec<Bytes> = self.pending.drain(..n).collect();
        let mut body = BytesMut::with_capacity(lines.iter().map(Bytes::len).sum());
        for line in &lines {
            body.extend_from_slice(line);
        }
        if self.pending.is_empty() {
            self.oldest = None;
        }
        (lines, body.freeze())
    }

    /// The collector refused a batch as too large: put its lines back and send at most
    /// half as many per POST from now on.
    fn shrink_batches(&mut self, lines: Vec<Bytes>) {
        let n = lines.len();
        for line in lines.into_iter().rev() {
            self.pending.push_front(line);
        }
        self.oldest.get_or_insert_with(Instant::now);
        let smaller = (n / 2).max(1);
        if smaller < self.batch_max_events {
            tracing::warn!(
                events = smaller,
                "audit collector refused a batch as too large; sending smaller batches"
            );
            self.batch_max_events = smaller;
        }
    }

    /// One POST of `body`; any 2xx acknowledges it. A kept-alive connection the
    /// collector closed while idle is replaced once at once, without counting a failure.
    async fn post(&mut self, body: Bytes) -> Result<(), Failure> {
        if let Some(sender) = self.conn.take().filter(|s| !s.is_closed()) {
            match self.exchange(sender, body.clone()).await {
                Err(Failure::Request(e)) => {
                    tracing::debug!(error = %e, "kept-alive audit collector connection failed; reconnecting");
                }
                done => return done,
            }
        }
        let sender = self.connect().await.map_err(Failure::Request)?;
        self.exchange(sender, body).await
    }

    async fn exchange(
        &mut self,
        mut sender: SendRequest<Full<Bytes>>,
        body: Bytes,
    ) -> Result<(), Failure> {
        let mut req = Request::post(self.target.path.as_str())
            .header(HOST, self.target.authority.clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .header(USER_AGENT, concat!("pgveil/", env!("CARGO_PKG_VERSION")));
        if let Token::Fixed(v) | Token::File { value: v, .. } = &self.token {
            req = req.header(AUTHORIZATION, v.clone());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Failure::Answer(format!("cannot build request: {e}")))?;
        let exchange = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let drained = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .is_ok();
            Ok::<_, hyper::Error>((status, drained))
        };
        let (status, drained) = match timeout(self.timeout, exchange).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(Failure::Request(format!("request failed: {e}"))),
            Err(_) => {
                return Err(Failure::Answer(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        };
        if drained {
            self.conn = Some(sender);
        }
        if status.is_success() {
            return Ok(());
        }
        if matches!(status.as_u16(), 401 | 403) {
            self.reload_token().await;
        }
        let message = format!("collector answered {status}");
        if status == hyper::StatusCode::PAYLOAD_TOO_LARGE {
            return Err(Failure::TooLarge(message));
        }
        Err(Failure::Answer(message))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let addr = (self.target.host.as_str(), self.target.port);
        let tcp = match timeout(self.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(format!(
                    "cannot connect to {}:{}: {e}",
                    self.target.host, self.target.port
                ))
            }
            Err(_) => {
                return Err(format!(
                    "connect timed out after {} ms",
                    self.timeout.as_millis()
                ))
            }
        };
        // Latency matters more than packet count for small batches.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = match timeout(self.timeout, connector.connect(name.clone(), tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
                    Err(_) => return Err("TLS handshake timed out".into()),
                };
                handshake(tls).await
            }
        }
    }

    /// The collector refused the token: a rotated token file may hold a new one.
    async fn reload_token(&mut self) {
        if let Token::File { path, value } = &mut self.token {
            match tokio::fs::read_to_string(&*path).await {
                Ok(text) => match bearer(&text) {
                    Ok(v) => *value = v,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "bad audit token file")
                    }
                },
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read audit token file")
                }
            }
        }
    }
}

impl Sink for HttpSink {
    fn accept(&mut self, batch: Arc<Batch>) {
        if batch.len() > 0 && self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        self.pending.extend(batch.lines());
    }

    fn is_due(&self, now: Instant) -> bool {
        self.in_flight.is_some() || self.batch_due(now)
    }

    fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|t| t + self.batch_max_age)
    }

    async fn flush(&mut self, closing: bool) -> Flushed {
        let mut delivered = 0;
        loop {
            if self.in_flight.is_none() {
                if self.pending.is_empty() || !(closing || self.batch_due(Instant::now())) {
                    break;
                }
                self.in_flight = Some(self.next_batch());
            }
            let Some(body) = self.in_flight.as_ref().map(|(_, body)| body.clone()) else {
                break;
            };
            let error = match self.post(body).await {
                Ok(()) => {
                    delivered += self.in_flight.take().map_or(0, |(lines, _)| lines.len());
                    continue;
                }
                Err(Failure::TooLarge(e)) => {
                    if let Some((lines, _)) = self.in_flight.take_if(|(l, _)| l.len() > 1) {
                        self.shrink_batches(lines);
                    }
                    e
                }
                Err(Failure::Request(e) | Failure::Answer(e)) => e,
            };
            return Flushed {
                delivered,
                error: Some(error),
            };
        }
        Flushed {
            delivered,
            error: None,
        }
    }
}

async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "audit collector connection closed");
        }
    });
    Ok(sender)
}

/// rustls client config with the ring provider: `ca_file` roots, else the web roots.
fn client_tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert =
                    cert.map_err(|e| format!("invalid PEM in ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad certificate in ca_file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("ca_file {} holds no certificate", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn bearer(token: &str) -> Result<HeaderValue, String> {
    let token = token.trim();
    if token.is_empty() {
        return Err("bearer token is empty".into());
    }
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "bearer token holds characters not allowed in a header".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

fn read_token_file(path: &Path) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read bearer_token_file {}: {e}", path.display()))?;
    bearer(&text)
}
