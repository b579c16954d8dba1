//! Where the SCRAM verifier of a user comes from: PostgreSQL itself (an `auth_query`
//! over a lookup connection) or a pgbouncer-style `auth_file`, cached for a while so a
//! login costs no extra round trip.

use super::scram::Verifier;
use super::scram_config::{Fallback, ScramConfig};
use dashmap::DashMap;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout, Instant};
use tokio_postgres::{Client, NoTls, Statement};

/// Most users whose lookup result is cached; beyond, expired entries are swept and,
/// if still full, results are not cached (a flood of made-up names stays bounded).
const MAX_CACHED: usize = 10_000;

/// What a user's stored secret allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A SCRAM-SHA-256 verifier: pgveil can run the exchange itself.
    Scram(Verifier),
    /// A secret that is not a SCRAM verifier (md5, or a plaintext password in an
    /// auth_file): handled by `fallback`.
    Md5,
    /// No such user, no password, cannot log in or expired: handled by `fallback`
    /// (the mock exchange under `deny`).
    Missing,
}

impl Lookup {
    /// Classifies a `rolpassword` value.
    pub fn classify(secret: Option<&str>) -> Lookup {
        match secret {
            None | Some("") => Lookup::Missing,
            Some(text) => Verifier::parse(text).map_or(Lookup::Md5, Lookup::Scram),
        }
    }
}

/// How to authenticate a user, from its [`Lookup`] and the configured [`Fallback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPlan {
    /// pgveil runs SCRAM against this verifier and logs in upstream with the key.
    Scram(Verifier),
    /// pgveil runs the mock exchange (verifier `None` in `ScramServer::start`), which
    /// fails like a wrong password.
    Mock,
    /// Relay the exchange to PostgreSQL as in passthrough mode.
    Passthrough,
}

impl Lookup {
    /// What to do for a user with this lookup result under `fallback`.
    pub fn plan(self, fallback: Fallback) -> AuthPlan {
        match (self, fallback) {
            (Lookup::Scram(v), _) => AuthPlan::Scram(v),
            (Lookup::Md5 | Lookup::Missing, Fallback::Passthrough) => AuthPlan::Passthrough,
            (Lookup::Md5 | Lookup::Missing, Fallback::Deny) => AuthPlan::Mock,
        }
    }
}

/// Why a verifier could not be looked up. The login must then fail (fail closed).
#[derive(Debug, Error)]
pub enum VerifierError {
    /// The auth_file cannot be read.
    #[error("cannot read auth_file {path}: {source}")]
    FileRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A line of the auth_file is not `"user" "secret"`.
    #[error("auth_file {path}:{line}: {reason}")]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Connecting to PostgreSQL for the lookup failed.
    #[error("verifier lookup connection failed: {0}")]
    Connect(String),
    /// The auth_query failed or returned something unusable.
    #[error("verifier lookup query failed: {0}")]
    Query(String),
    /// The lookup took longer than its timeout.
    #[error("verifier lookup timed out")]
    Timeout,
}

/// A byte stream to PostgreSQL, plain or TLS, ready for the startup message.
pub trait UpstreamStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> UpstreamStream for T {}

/// Future returned by [`Dial::dial`].
pub type DialFuture<'a> =
    Pin<Box<dyn Future<Output = io::Result<Box<dyn UpstreamStream>>> + Send + 'a>>;

/// Opens a connection to the upstream PostgreSQL, with whatever TLS the proxy uses for
/// its upstream leg already negotiated: the lookup carries verifiers, which allow
/// offline guessing, so it must be as protected as any session.
pub trait Dial: Send + Sync {
    /// Connects (including SSLRequest and handshake when the upstream is TLS).
    fn dial(&self) -> DialFuture<'_>;
}

/// A [`Dial`] without TLS: TCP or a Unix socket (tests, `upstream.tls = "disable"`).
#[derive(Debug, Clone)]
pub enum PlainDialer {
    /// `host:port` over TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix socket path (`<socket_dir>/.s.PGSQL.<port>`).
    Unix(PathBuf),
}

impl Dial for PlainDialer {
    fn dial(&self) -> DialFuture<'_> {
        Box::pin(async move {
            let stream: Box<dyn UpstreamStream> = match self {
                PlainDialer::Tcp { host, port } => {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    tcp.set_nodelay(true)?;
                    Box::new(tcp)
                }
                PlainDialer::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            };
            Ok(stream)
        })
    }
}

/// Credentials and query of the lookup connection.
#[derive(Debug, Clone)]
pub struct LookupLogin {
    /// Role to log in as.
    pub user: String,
    /// Its password, if it needs one.
    pub password: Option<String>,
    /// Database to open.
    pub database: String,
    /// Query with `$1` = user name, returning the verifier in its first column.
    pub query: String,
    /// Limit for connecting and for one query.
    pub timeout: Duration,
}

/// Looks up verifiers and caches the results for `ttl`.
pub struct VerifierSource {
    backend: Backend,
    ttl: Duration,
    cache: DashMap<String, Cached>,
}

#[derive(Debug, Clone)]
struct Cached {
    lookup: Lookup,
    at: Instant,
    /// A failed login asked for a re-read: the next lookup reads the source again.
    suspect: bool,
    /// Read because of a failed login: further failures do not ask for another read
    /// until the TTL runs out, so repeated guesses cost the lookup database nothing.
    rechecked: bool,
}

enum Backend {
    /// The whole userlist, re-read when older than the TTL or after a failed login.
    File {
        path: PathBuf,
        snapshot: tokio::sync::Mutex<Option<FileSnapshot>>,
    },
    Query(QueryBackend),
}

struct FileSnapshot {
    users: Arc<HashMap<String, String>>,
    at: Instant,
    stale: bool,
}

impl VerifierSource {
    /// Builds the source `config` describes; `dialer` reaches the upstream server and
    /// `timeout` bounds each lookup (use the upstream connect timeout).
    pub fn from_config(
        config: &ScramConfig,
        dialer: Arc<dyn Dial>,
        timeout: Duration,
    ) -> Result<VerifierSource, super::scram_config::ScramConfigError> {
        config.validate()?;
        if let Some(path) = &config.auth_file {
            return Ok(VerifierSource::from_file(path, config.cache_ttl()));
        }
        let login = LookupLogin {
            user: config.lookup_user.clone().unwrap_or_default(),
            password: config.lookup_password()?,
            database: config.lookup_database.clone(),
            query: config.auth_query.clone(),
            timeout,
        };
        Ok(VerifierSource::from_query(
            dialer,
            login,
            config.cache_ttl(),
        ))
    }

    /// Verifiers from a userlist file (read lazily, so a bad file fails the logins,
    /// not the start; call [`VerifierSource::check`] at start to fail early).
    pub fn from_file(path: &Path, ttl: Duration) -> VerifierSource {
        VerifierSource {
            backend: Backend::File {
                path: path.to_path_buf(),
                snapshot: tokio::sync::Mutex::new(None),
            },
            ttl,
            cache: DashMap::new(),
        }
    }

    /// Verifiers read from PostgreSQL with `login.query` over connections from `dialer`.
    pub fn from_query(dialer: Arc<dyn Dial>, login: LookupLogin, ttl: Duration) -> VerifierSource {
        VerifierSource {
            backend: Backend::Query(QueryBackend {
                dialer,
                login,
                conn: tokio::sync::Mutex::new(None),
            }),
            ttl,
            cache: DashMap::new(),
        }
    }

    /// Checks the source works, so a misconfiguration shows at start and in
    /// readiness: the file parses, or the lookup role can log in and run `auth_query`
    /// (for its own name; table privileges are only checked when a query runs).
    pub async fn check(&self) -> Result<(), VerifierError> {
        match &self.backend {
            Backend::File { path, .. } => load_file(path).await.map(|_| ()),
            Backend::Query(q) => q.fetch(&q.login.user).await.map(|_| ()),
        }
    }

    /// The verifier of `user`, from the cache when fresh.
    pub async fn lookup(&self, user: &str) -> Result<Lookup, VerifierError> {
        let now = Instant::now();
        let mut rechecking = false;
        if let Some(hit) = self.cache.get(user) {
            if hit.suspect {
                rechecking = true;
            } else if now.duration_since(hit.at) < self.ttl {
                return Ok(hit.lookup.clone());
            }
        }
        let lookup = match &self.backend {
            Backend::File { path, snapshot } => {
                let users = self.file_users(path, snapshot, now).await?;
                Lookup::classify(users.get(user).map(String::as_str))
            }
            Backend::Query(q) => Lookup::classify(q.fetch(user).await?.as_deref()),
        };
        self.remember(user, &lookup, now, rechecking);
        Ok(lookup)
    }

    /// Records a failed login of `user` checked against a cached lookup. The first
    /// failure marks the entry for a re-read on the next lookup (the password may have
    /// changed, or the user may be new); an entry that was itself read after a failure
    /// stays until its TTL runs out, so a stream of wrong passwords does not become a
    /// stream of lookups. Returns whether a re-read is now due.
    pub fn failed_login(&self, user: &str) -> bool {
        let marked = match self.cache.get_mut(user) {
            Some(mut hit) if !hit.rechecked => {
                hit.suspect = true;
                true
            }
            _ => false,
        };
        if marked {
            self.mark_file_stale();
        }
        marked
    }

    /// Forgets what is cached for `user` (a stale verifier, or PostgreSQL refused the
    /// recovered key), so the next attempt reads the current verifier whatever happened
    /// before; unlike [`VerifierSource::failed_login`], not limited to once per TTL.
    pub fn invalidate(&self, user: &str) {
        self.cache.remove(user);
        self.mark_file_stale();
    }

    /// Makes the next file lookup re-read the auth_file.
    fn mark_file_stale(&self) {
        if let Backend::File { snapshot, .. } = &self.backend {
            if let Ok(mut snap) = snapshot.try_lock() {
                if let Some(s) = snap.as_mut() {
                    s.stale = true;
                }
            }
        }
    }

    fn remember(&self, user: &str, lookup: &Lookup, now: Instant, rechecked: bool) {
        if self.ttl.is_zero() {
            return;
        }
        if self.cache.len() >= MAX_CACHED && !self.cache.contains_key(user) {
            self.cache
                .retain(|_, c| now.duration_since(c.at) < self.ttl);
            if self.cache.len() >= MAX_CACHED {
                return;
            }
        }
        self.cache.insert(
            user.to_string(),
            Cached {
                lookup: lookup.clone(),
                at: now,
                suspect: false,
                rechecked,
            },
        );
    }

    async fn file_users(
        &self,
        path: &Path,
        snapshot: &tokio::sync::Mutex<Option<FileSnapshot>>,
        now: Instant,
    ) -> Result<Arc<HashMap<String, String>>, VerifierError> {
        let mut snap = snapshot.lock().await;
        if let Some(s) = snap.as_ref() {
            if !s.stale && now.duration_since(s.at) < self.ttl {
                return Ok(Arc::clone(&s.users));
            }
        }
        let users = Arc::new(load_file(path).await?);
        *snap = Some(FileSnapshot {
            users: Arc::clone(&users),
            at: now,
            stale: false,
        });
        Ok(users)
    }
}

impl std::fmt::Debug for VerifierSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.backend {
            Backend::File { path, .. } => format!("file {}", path.display()),
            Backend::Query(q) => format!("query as {}", q.login.user),
        };
        f.debug_struct("VerifierSource")
            .field("backend", &kind)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// One lookup connection, reopened when it breaks.
struct QueryBackend {
    dialer: Arc<dyn Dial>,
    login: LookupLogin,
    conn: tokio::sync::Mutex<Option<(Arc<Client>, Statement)>>,
}

impl QueryBackend {
    /// The `rolpassword` of `user`; retries once on a fresh connection if the kept one
    /// was closed (server restart, idle timeout).
    async fn fetch(&self, user: &str) -> Result<Option<String>, VerifierError> {
        let mut retried = false;
        loop {
            let (client, statement) = self.connection().await?;
            match timeout(self.login.timeout, client.query(&statement, &[&user])).await {
                Ok(Ok(rows)) => return secret_of(&rows),
                Ok(Err(e)) if client.is_closed() && !retried => {
                    tracing::warn!(error = %e, "verifier lookup connection lost; reconnecting");
                    self.reset(&client).await;
                    retried = true;
                }
                Ok(Err(e)) => {
                    if client.is_closed() {
                        self.reset(&client).await;
                    }
                    return Err(VerifierError::Query(describe(&e)));
                }
                Err(_) => {
                    self.reset(&client).await;
                    return Err(VerifierError::Timeout);
                }
            }
        }
    }

    /// The open connection and prepared query, connecting first if needed.
    async fn connection(&self) -> Result<(Arc<Client>, Statement), VerifierError> {
        let mut conn = self.conn.lock().await;
        if let Some((client, statement)) = conn.as_ref() {
            if !client.is_closed() {
                return Ok((Arc::clone(client), statement.clone()));
            }
        }
        *conn = None;
        let opened = timeout(self.login.timeout, self.open())
            .await
            .map_err(|_| VerifierError::Timeout)??;
        *conn = Some((Arc::clone(&opened.0), opened.1.clone()));
        Ok(opened)
    }

    async fn open(&self) -> Result<(Arc<Client>, Statement), VerifierError> {
        let stream = self
            .dialer
            .dial()
            .await
            .map_err(|e| VerifierError::Connect(e.to_string()))?;
        let mut config = tokio_postgres::Config::new();
        config
            .user(self.login.user.clone())
            .dbname(self.login.database.clone())
            .application_name("pgveil-auth-lookup")
            // The dialer already negotiated TLS if the upstream leg uses it.
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        if let Some(password) = &self.login.password {
            config.password(password.as_bytes());
        }
        let (client, connection) = config
            .connect_raw(stream, NoTls)
            .await
            .map_err(|e| VerifierError::Connect(describe(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "verifier lookup connection ended");
            }
        });
        let statement = client
            .prepare(&self.login.query)
            .await
            .map_err(|e| VerifierError::Query(describe(&e)))?;
        Ok((Arc::new(client), statement))
    }

    /// Drops the kept connection if it is still `broken` (another task may already
    /// have replaced it).
    async fn reset(&self, broken: &Arc<Client>) {
        let mut conn = self.conn.lock().await;
        if conn
            .as_ref()
            .is_some_and(|(client, _)| Arc::ptr_eq(client, broken))
        {
            *conn = None;
        }
    }
}

/// A tokio-postgres error with the server's message and SQLSTATE when there is one
/// (its `Display` says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The secret in the first column of at most one row.
fn secret_of(rows: &[tokio_postgres::Row]) -> Result<Option<String>, VerifierError> {
    match rows {
        [] => Ok(None),
        [row] => row
            .try_get::<_, Option<String>>(0)
            .map_err(|e| VerifierError::Query(format!("auth_query result: {e}"))),
        _ => Err(VerifierError::Query(
            "auth_query returned more than one row".into(),
        )),
    }
}

async fn load_file(path: &Path) -> Result<HashMap<String, String>, VerifierError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| VerifierError::FileRead {
            path: path.to_path_buf(),
            source,
        })?;
    parse_auth_file(&text).map_err(|(line, reason)| VerifierError::FileSyntax {
        path: path.to_path_buf(),
        line,
        reason,
    })
}

/// Parses a pgbouncer userlist: `"user" "secret"` per line, `""` for a quote inside a
/// field, anything after the second field ignored, blank lines and lines starting with
/// `;` or `#` skipped. A user listed twice is an error, not a silent override.
pub fn parse_auth_file(text: &str) -> Result<HashMap<String, String>, (usize, &'static str)> {
    let mut users = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim_start();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let (user, rest) = quoted(line).ok_or((number, "expected \"user\" \"secret\""))?;
        let (secret, _) =
            quoted(rest.trim_start()).ok_or((number, "expected a quoted secret after the user"))?;
        if user.is_empty() {
            return Err((number, "empty user name"));
        }
        if users.insert(user, secret).is_some() {
            return Err((number, "user listed twice"));
        }
    }
    Ok(users)
}

/// Reads one `"…"` field with `""` escapes: (value, rest of line).
fn quoted(input: &str) -> Option<(String, &str)> {
    let mut rest = input.strip_prefix('"')?;
    let mut value = String::new();
    loop {
        let end = rest.find('"')?;
        value.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('"') {
            Some(after) => {
                value.push('"');
                rest = after;
            }
            None => return Some((value, rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAM: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$\
        AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn classify_secrets() {
        assert!(matches!(Lookup::classify(Some(SCRAM)), Lookup::Scram(_)));
        assert_eq!(
            Lookup::classify(Some("md5d41d8cd98f00b204e9800998ecf8427e")),
            Lookup::Md5
        );
        assert_eq!(Lookup::classify(Some("plaintext")), Lookup::Md5);
        assert_eq!(Lookup::classify(None), Lookup::Missing);
        assert_eq!(Lookup::classify(Some("")), Lookup::Missing);
    }

    #[test]
    fn plan_follows_fallback() {
        let Lookup::Scram(v) = Lookup::classify(Some(SCRAM)) else {
            panic!("test verifier parses");
        };
        assert_eq!(
            Lookup::Scram(v.clone()).plan(Fallback::Passthrough),
            AuthPlan::Scram(v)
        );
        assert_eq!(Lookup::Md5.plan(Fallback::Deny), AuthPlan::Mock);
        assert_eq!(Lookup::Missing.plan(Fallback::Deny), AuthPlan::Mock);
        assert_eq!(
            Lookup::Md5.plan(Fallback::Passthrough),
            AuthPlan::Passthrough
        );
        assert_eq!(
            Lookup::Missing.plan(Fallback::Passthrough),
            AuthPlan::Passthrough
        );
    }

    #[test]
    fn auth_file_format() {
        let users = parse_auth_file(&format!(
            "; comment\n\n\"alice\" \"{SCRAM}\"\n\"say \"\"hi\"\"\" \"md5abc\" trailing\n"
        ))
        .expect("valid userlist");
        assert_eq!(users.get("alice").map(String::as_str), Some(SCRAM));
        assert_eq!(users.get("say \"hi\"").map(String::as_str), Some("md5abc"));
        assert_eq!(parse_auth_file("alice secret").unwrap_err().0, 1);
        assert_eq!(
            parse_auth_file("\"a\" \"x\"\n\"a\" \"y\"").unwrap_err().0,
            2
        );
        assert!(parse_auth_file("\"alice\"").is_err());
        assert!(parse_auth_file("\"alice\" \"unterminated").is_err());
        assert!(parse_auth_file("\"\" \"x\"").is_err());
    }

    #[tokio::test]
    async fn file_source_caches_and_rereads_after_invalidate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("users.txt");
        std::fs::write(&path, format!("\"alice\" \"{SCRAM}\"\n")).expect("write");
        let source = VerifierSource::from_file(&path, Duration::from_secs(3600));
        source.check().await.expect("file parses");
        assert!(matches!(source.lookup("alice").await, Ok(Lookup::Scram(_))));
        assert_eq!(source.lookup("bob").await.ok(), Some(Lookup::Missing));

        std::fs::write(&path, "\"bob\" \"md5abc\"\n").expect("rewrite");
        assert!(
            matches!(source.lookup("alice").await, Ok(Lookup::Scram(_))),
            "cached"
        );
        source.invalidate("alice");
        assert_eq!(source.lookup("alice").await.ok(), Some(Lookup::Missing));
        source.invalidate("bob");
        assert_eq!(source.lookup("bob").await.ok(), Some(Lookup::Md5));
    }

    #[tokio::test]
    async fn failed_login_rereads_once_per_ttl() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("users.txt");
        std::fs::write(&path, "\"alice\" \"md5old\"\n").expect("write");
        let source = VerifierSource::from_file(&path, Duration::from_secs(3600));
        assert_eq!(source.lookup("alice").await.ok(), Some(Lookup::Md5));
        assert!(
            !source.failed_login("nobody"),
            "nothing cached, nothing to re-read"
        );

        std::fs::write(&path, format!("\"alice\" \"{SCRAM}\"\n")).expect("rewrite");
        assert_eq!(
            source.lookup("alice").await.ok(),
            Some(Lookup::Md5),
            "cached"
        );
        assert!(
            source.failed_login("alice"),
            "first failure asks for a re-read"
        );
        assert!(
            matches!(source.lookup("alice").await, Ok(Lookup::Scram(_))),
            "re-read after the failure"
        );

        std::fs::write(&path, "\"alice\" \"md5new\"\n").expect("rewrite again");
        assert!(
            !source.failed_login("alice"),
            "an entry read after a failure is not re-read again"
        );
        assert!(matches!(source.lookup("alice").await, Ok(Lookup::Scram(_))));
        source.invalidate("alice");
        assert_eq!(
            source.lookup("alice").await.ok(),
            Some(Lookup::Md5),
            "forced"
        );
        assert!(
            source.failed_login("alice"),
            "a normal read can be re-read again"
        );
    }

    #[tokio::test]
    async fn file_source_ttl_zero_always_rereads_and_bad_file_fails() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("users.txt");
        std::fs::write(&path, "\"bob\" \"md5abc\"\n").expect("write");
        let source = VerifierSource::from_file(&path, Duration::ZERO);
        assert_eq!(source.lookup("bob").await.ok(), Some(Lookup::Md5));
        std::fs::write(&path, "bob md5abc\n").expect("rewrite");
        assert!(matches!(
            source.lookup("bob").await,
            Err(VerifierError::FileSyntax { line: 1, .. })
        ));
        let missing = VerifierSource::from_file(&dir.path().join("nope"), Duration::ZERO);
        assert!(matches!(
            missing.check().await,
            Err(VerifierError::FileRead { .. })
        ));
    }

    #[tokio::test]
    async fn query_source_reports_connection_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let source = VerifierSource::from_query(
            Arc::new(PlainDialer::Tcp {
                host: "127.0.0.1".into(),
                port,
            }),
            LookupLogin {
                user: "x".into(),
                password: None,
                database: "postgres".into(),
                query: "SELECT $1::text".into(),
                timeout: Duration::from_secs(5),
            },
            Duration::from_secs(60),
        );
        assert!(matches!(
            source.lookup("alice").await,
            Err(VerifierError::Connect(_))
        ));
    }
}
