//! `[auth] mode = "scram"` end to end, with TLS on both legs (client TLS to pgveil,
//! `verify-full` to PostgreSQL): pgveil is the SCRAM server, checks the client against
//! the verifier read from PostgreSQL and logs in upstream as the same user with the
//! recovered ClientKey, which PostgreSQL checks with scram-sha-256 in pg_hba.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use harness::raw::{self, read_msg, startup_packet};
use harness::{postgres, psql, start_proxy, users, ProxyHandle, ProxyOptions};
use pgveil::config::Config;
use pgveil::hook::PassThrough;
use pgveil::server::Server;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

const DB: &str = "postgres";

/// Role whose members PostgreSQL authenticates with scram-sha-256 over TCP (the
/// cluster's catch-all rule is `trust`): users created by these tests join it, so the
/// upstream login really proves the recovered key.
const SCRAM_GROUP: &str = "scram_hba";

/// Adds a `+scram_hba scram-sha-256` rule to this test binary's cluster, once.
fn scram_group() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let pg = postgres();
        pg.psql_admin(
            DB,
            &format!(
                "CREATE ROLE {SCRAM_GROUP} NOLOGIN;\n\
                 CREATE ROLE hba_probe LOGIN PASSWORD 'probe-pw' IN ROLE {SCRAM_GROUP};"
            ),
        );
        let path = pg.data_dir.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        let rule = format!("host all +{SCRAM_GROUP} 127.0.0.1/32 scram-sha-256\n");
        std::fs::write(&path, format!("{rule}{hba}")).expect("write pg_hba.conf");
        pg.psql_admin(DB, "SELECT pg_reload_conf()");
        // The reload is asynchronous: wait until a wrong password is refused.
        let probe = format!(
            "host=127.0.0.1 port={} user=hba_probe dbname={DB} password=wrong sslmode=disable",
            pg.port
        );
        for _ in 0..100 {
            let refused = std::process::Command::new(pg.client_bin("psql"))
                .args(["-X", "-c", "SELECT 1", &probe])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(false);
            if refused {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pg_hba.conf rule for +{SCRAM_GROUP} did not take effect");
    });
    SCRAM_GROUP
}

/// Creates a login role with `password` that PostgreSQL checks with SCRAM.
fn create_scram_user(name: &str, password: &str) {
    let group = scram_group();
    postgres().psql_admin(
        DB,
        &format!("CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE {group}"),
    );
}

/// A scram-mode proxy with TLS on both legs; `auth` adds `[auth]` keys.
async fn scram_proxy(auth: &str) -> ProxyHandle {
    start_proxy(ProxyOptions {
        client_tls: true,
        upstream_tls: "verify-full",
        extra: format!("[auth]\nmode = \"scram\"\nlookup_user = \"postgres\"\n{auth}\n"),
        ..Default::default()
    })
    .await
}

fn dsn(proxy: &ProxyHandle, user: &str, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} dbname={DB} password={password} sslmode=disable",
        proxy.port()
    )
}

async fn current_user(dsn: &str) -> Result<String, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let row = client
        .query_one("SELECT current_user::text, session_user::text", &[])
        .await?;
    let (current, session): (String, String) = (row.get(0), row.get(1));
    assert_eq!(current, session);
    Ok(current)
}

/// SQLSTATE and message of a failed connection, with the user name replaced by `<user>`.
fn failure(err: &tokio_postgres::Error, user: &str) -> (String, String) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"));
    (
        db.code().code().to_owned(),
        db.message().replace(user, "<user>"),
    )
}

#[tokio::test]
async fn psql_channel_binding_modes_over_tls_both_legs() {
    scram_group();
    let proxy = scram_proxy("").await;
    for conninfo in [
        "sslmode=require channel_binding=require",
        "sslmode=require channel_binding=prefer",
        "sslmode=require channel_binding=disable",
        "sslmode=disable channel_binding=prefer",
    ] {
        let (ok, out, err) = psql(
            proxy.port(),
            users::SCRAM,
            DB,
            conninfo,
            "SELECT 'user=' || current_user",
        )
        .await;
        assert!(ok, "{conninfo}: {err}");
        assert!(
            out.contains(&format!("user={}", users::SCRAM)),
            "{conninfo}: {out}"
        );
    }
}

#[tokio::test]
async fn tokio_postgres_plain_client_logs_in_as_itself() {
    let proxy = scram_proxy("").await;
    let who = current_user(&dsn(&proxy, users::SCRAM, users::PASSWORD))
        .await
        .expect("scram login through pgveil");
    assert_eq!(who, users::SCRAM);
}

/// tokio-postgres over rustls with `tls-server-end-point` channel binding, verifying
/// pgveil's certificate against `ca`; `forge_binding` pretends to see another
/// certificate, as a client behind a man in the middle would.
struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    forge_binding: bool,
}

impl RustlsConnect {
    fn new(ca: &Path, forge_binding: bool) -> RustlsConnect {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).expect("read CA");
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        RustlsConnect {
            config: Arc::new(config),
            forge_binding,
        }
    }
}

struct RustlsStream {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    forge_binding: bool,
}

impl TlsConnect<TcpStream> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: TcpStream) -> Self::Future {
        Box::pin(async move {
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .expect("valid name")
                .to_owned();
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream {
                tls,
                forge_binding: self.forge_binding,
            })
        })
    }
}

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        if self.forge_binding {
            return ChannelBinding::tls_server_end_point(vec![0x42; 32]);
        }
        let cert = self
            .tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        match cert.and_then(|c| pgveil::auth::scram::cert_end_point_hash(c.as_ref())) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// Logs in through `proxy` with tokio-postgres over TLS with `channel_binding`; returns
/// `current_user`.
async fn tls_current_user(
    proxy: &ProxyHandle,
    channel_binding: &str,
    forge_binding: bool,
) -> Result<String, tokio_postgres::Error> {
    let ca = &proxy.certs.as_ref().expect("client TLS").ca_cert;
    let config: tokio_postgres::Config = format!(
        "user={} dbname={DB} password={} sslmode=require channel_binding={channel_binding}",
        users::SCRAM,
        users::PASSWORD
    )
    .parse()
    .expect("valid config");
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let (client, conn) = config
        .connect_raw(tcp, RustlsConnect::new(ca, forge_binding))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let row = client.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn tokio_postgres_over_tls_with_channel_binding() {
    let proxy = scram_proxy("max_failures = 0").await;
    for mode in ["require", "prefer", "disable"] {
        let who = tls_current_user(&proxy, mode, false)
            .await
            .unwrap_or_else(|e| panic!("channel_binding={mode}: {e}"));
        assert_eq!(who, users::SCRAM);
    }
    // A client that sees another certificate than pgveil's (a man in the middle) is
    // refused even with the right password.
    let err = tls_current_user(&proxy, "require", true)
        .await
        .expect_err("binding to another certificate");
    let (code, message) = failure(&err, users::SCRAM);
    assert_eq!(code, "28000");
    assert!(message.contains("channel binding"), "{message}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_fail_alike() {
    let proxy = scram_proxy("max_failures = 0").await;
    let wrong = current_user(&dsn(&proxy, users::SCRAM, "wrong"))
        .await
        .expect_err("wrong password refused");
    let unknown = current_user(&dsn(&proxy, "no_such_user", users::PASSWORD))
        .await
        .expect_err("unknown user refused");
    let md5 = current_user(&dsn(&proxy, users::MD5, users::PASSWORD))
        .await
        .expect_err("md5 user refused under fallback = deny");
    let expected = (
        "28P01".to_owned(),
        "password authentication failed for user \"<user>\"".to_owned(),
    );
    assert_eq!(failure(&wrong, users::SCRAM), expected);
    assert_eq!(failure(&unknown, "no_such_user"), expected);
    assert_eq!(failure(&md5, users::MD5), expected);
    // psql sees the same, and the proxy keeps serving.
    let (ok, _, err) = psql(
        proxy.port(),
        "no_such_user",
        DB,
        "sslmode=require channel_binding=require",
        "SELECT 1",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("password authentication failed"), "{err}");
    current_user(&dsn(&proxy, users::SCRAM, users::PASSWORD))
        .await
        .expect("still serving");
}

#[tokio::test]
async fn changed_password_works_after_the_verifier_is_re_read() {
    create_scram_user("pw_change_a", "old-pw");
    let proxy = scram_proxy("max_failures = 0").await;
    let login = |password: &str| {
        let dsn = dsn(&proxy, "pw_change_a", password);
        async move { current_user(&dsn).await }
    };
    assert_eq!(login("old-pw").await.expect("old password"), "pw_change_a");
    postgres().psql_admin(DB, "ALTER ROLE pw_change_a PASSWORD 'new-pw'");
    // The cached verifier is the old one: this attempt fails and marks it for a re-read.
    let err = login("new-pw")
        .await
        .expect_err("checked against the cache");
    assert_eq!(failure(&err, "pw_change_a").0, "28P01");
    assert_eq!(login("new-pw").await.expect("new password"), "pw_change_a");
    let err = login("old-pw").await.expect_err("old password is gone");
    assert_eq!(failure(&err, "pw_change_a").0, "28P01");
}

#[tokio::test]
async fn old_password_against_a_stale_cache_is_refused_upstream() {
    create_scram_user("pw_change_b", "old-pw");
    let proxy = scram_proxy("max_failures = 0").await;
    let dsn_old = dsn(&proxy, "pw_change_b", "old-pw");
    current_user(&dsn_old).await.expect("old password");
    postgres().psql_admin(DB, "ALTER ROLE pw_change_b PASSWORD 'new-pw'");
    // pgveil still accepts the old password (cached verifier), but PostgreSQL's salt
    // differs: the login stops before the upstream proof and the cache is dropped.
    let err = current_user(&dsn_old).await.expect_err("stale verifier");
    let (code, message) = failure(&err, "pw_change_b");
    assert_eq!(code, "28P01");
    assert!(message.contains("password changed"), "{message}");
    current_user(&dsn_old)
        .await
        .expect_err("re-read: old password is wrong now");
    current_user(&dsn(&proxy, "pw_change_b", "new-pw"))
        .await
        .expect("new password");
}

#[tokio::test]
async fn md5_users_follow_the_fallback() {
    let deny = scram_proxy("fallback = \"deny\"").await;
    let err = current_user(&dsn(&deny, users::MD5, users::PASSWORD))
        .await
        .expect_err("denied");
    assert_eq!(failure(&err, users::MD5).0, "28P01");

    let relay = scram_proxy("fallback = \"passthrough\"").await;
    let who = current_user(&dsn(&relay, users::MD5, users::PASSWORD))
        .await
        .expect("md5 relayed to PostgreSQL");
    assert_eq!(who, users::MD5);
    let (ok, out, err) = psql(
        relay.port(),
        users::MD5,
        DB,
        "sslmode=require",
        "SELECT 'md5-ok'",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("md5-ok"));
    // Users without a password go to PostgreSQL too (trust in pg_hba).
    assert_eq!(
        current_user(&dsn(&relay, users::TRUST, ""))
            .await
            .expect("trust"),
        users::TRUST
    );
    // SCRAM users are still served by pgveil.
    assert_eq!(
        current_user(&dsn(&relay, users::SCRAM, users::PASSWORD))
            .await
            .expect("scram"),
        users::SCRAM
    );
}

#[tokio::test]
async fn upstream_asking_for_cleartext_cannot_be_served() {
    // clear_user has a SCRAM verifier but pg_hba says `password`.
    let proxy = scram_proxy("").await;
    let err = current_user(&dsn(&proxy, users::CLEARTEXT, users::PASSWORD))
        .await
        .expect_err("refused");
    let (code, message) = failure(&err, users::CLEARTEXT);
    assert_eq!(code, "08006");
    assert!(
        message.contains("cannot be served in scram mode"),
        "{message}"
    );
}

#[tokio::test]
async fn scram_plus_over_a_plain_connection_is_refused() {
    let proxy = scram_proxy("").await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    s.write_all(&startup_packet(
        0x0003_0000,
        &[("user", users::SCRAM), ("database", DB)],
    ))
    .await
    .expect("startup");
    let offer = read_msg(&mut s).await.expect("AuthenticationSASL");
    assert_eq!(offer.tag, b'R');
    assert_eq!(&offer.body[..4], &10i32.to_be_bytes());
    assert_eq!(
        &offer.body[4..],
        b"SCRAM-SHA-256\0\0",
        "no -PLUS without TLS"
    );
    let first = b"p=tls-server-end-point,,n=,r=rOprNGfwEbeRWgbNEkqO";
    let mut body = b"SCRAM-SHA-256-PLUS\0".to_vec();
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first);
    s.write_all(&raw::message(b'p', &body)).await.expect("send");
    let err = read_msg(&mut s).await.expect("ErrorResponse");
    assert_eq!(err.tag, b'E');
    assert_eq!(err.sqlstate().as_deref(), Some("08P01"));
    assert_eq!(err.field(b'S').as_deref(), Some("FATAL"));
    assert!(read_msg(&mut s).await.is_none(), "connection closed");
}

#[tokio::test]
async fn newer_protocol_is_negotiated_down_before_authentication() {
    let proxy = scram_proxy("fallback = \"passthrough\"").await;
    let hello = |user: &'static str| {
        startup_packet(
            0x0003_0002,
            &[("user", user), ("database", DB), ("_pq_.test_option", "1")],
        )
    };
    // pgveil answers first, then starts SCRAM.
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(&hello(users::SCRAM)).await.expect("startup");
    let v = read_msg(&mut s).await.expect("NegotiateProtocolVersion");
    assert_eq!(v.tag, b'v');
    assert_eq!(v.body, b"\0\0\0\0\0\0\0\x01_pq_.test_option\0");
    let sasl = read_msg(&mut s).await.expect("AuthenticationSASL");
    assert_eq!(
        (sasl.tag, &sasl.body[..4]),
        (b'R', &10i32.to_be_bytes()[..])
    );
    // A user relayed to PostgreSQL (trust) gets no second NegotiateProtocolVersion:
    // PostgreSQL was asked for 3.0.
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(&hello(users::TRUST)).await.expect("startup");
    let msgs = raw::read_until_ready(&mut s).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags.iter().filter(|t| **t == b'v').count(), 1, "{tags:?}");
    assert_eq!(tags[0], b'v');
    assert_eq!(tags.last(), Some(&b'Z'), "{msgs:?}");
    let answer = raw::simple(&mut s, "SELECT current_user").await;
    assert_eq!(raw::first_value(&answer).as_deref(), Some(users::TRUST));
}

#[tokio::test]
async fn repeated_failures_are_slowed_down_and_take_turns() {
    let proxy = scram_proxy("max_failures = 2\nfailure_delay_ms = 600").await;
    let wrong = dsn(&proxy, users::SCRAM, "wrong");
    for _ in 0..2 {
        current_user(&wrong).await.expect_err("wrong password");
    }
    let started = Instant::now();
    current_user(&wrong).await.expect_err("wrong password");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "third failure answered after {:?}",
        started.elapsed()
    );
    // Parallel connections from a throttled address do not guess faster: they wait in
    // line, each for the delay.
    let started = Instant::now();
    let attempts: Vec<_> = (0..3)
        .map(|_| {
            let wrong = wrong.clone();
            tokio::spawn(async move { current_user(&wrong).await.is_err() })
        })
        .collect();
    for attempt in attempts {
        assert!(attempt.await.expect("task"), "wrong password refused");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "three parallel failures answered after {:?}",
        started.elapsed()
    );
    // A successful login from the address does not clear its failures.
    current_user(&dsn(&proxy, users::SCRAM, users::PASSWORD))
        .await
        .expect("right password still works");
    let started = Instant::now();
    current_user(&wrong).await.expect_err("wrong password");
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn non_superuser_lookup_through_security_definer_function() {
    let group = scram_group();
    let pg = postgres();
    pg.psql_admin(
        DB,
        &format!("CREATE ROLE pgveil_auth LOGIN PASSWORD 'lookup-pw' IN ROLE {group}"),
    );
    pg.psql_admin(DB, pgveil::auth::scram_config::LOOKUP_FUNCTION_SQL);
    std::env::set_var("PGVEIL_TEST_LOOKUP_PW", "lookup-pw");
    let proxy = start_proxy(ProxyOptions {
        client_tls: true,
        upstream_tls: "verify-full",
        extra: "[auth]\nmode = \"scram\"\nlookup_user = \"pgveil_auth\"\n\
                lookup_password_env = \"PGVEIL_TEST_LOOKUP_PW\"\n\
                auth_query = \"SELECT pgveil.get_auth($1)\"\n"
            .to_owned(),
        ..Default::default()
    })
    .await;
    let (ok, out, err) = psql(
        proxy.port(),
        users::SCRAM,
        DB,
        "sslmode=require channel_binding=require",
        "SELECT 'via-function'",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("via-function"));
}

#[tokio::test]
async fn auth_file_source() {
    let pg = postgres();
    let verifier = pg.psql_admin(
        DB,
        &format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = '{}'",
            users::SCRAM
        ),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("userlist.txt");
    std::fs::write(
        &file,
        format!("\"{}\" \"{}\"\n", users::SCRAM, verifier.trim()),
    )
    .expect("write userlist");
    let proxy = start_proxy(ProxyOptions {
        client_tls: true,
        upstream_tls: "verify-full",
        extra: format!(
            "[auth]\nmode = \"scram\"\nauth_file = \"{}\"\n",
            file.display()
        ),
        ..Default::default()
    })
    .await;
    assert_eq!(
        current_user(&dsn(&proxy, users::SCRAM, users::PASSWORD))
            .await
            .expect("verifier from the auth_file"),
        users::SCRAM
    );
}

/// Binds a scram-mode proxy straight from config text; the error text if it fails.
async fn bind_error(auth: &str) -> String {
    let pg = postgres();
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[upstream]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"disable\"\n\
         [auth]\nmode = \"scram\"\n{auth}\n",
        pg.port
    );
    let path = Path::new("pgveil.toml");
    let cfg = match Config::parse(&text, path, Path::new("/nonexistent")) {
        Ok(cfg) => cfg,
        Err(e) => return e.to_string(),
    };
    match Server::bind(&cfg, std::sync::Arc::new(PassThrough)).await {
        Ok(_) => panic!("bind succeeded with {auth}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn startup_fails_when_verifiers_cannot_be_read() {
    postgres().psql_admin(DB, "CREATE ROLE lookup_no_rights LOGIN");
    let e = bind_error("lookup_user = \"lookup_no_rights\"").await;
    assert!(e.contains("auth.lookup_user"), "{e}");
    assert!(e.contains("permission denied"), "{e}");
    let e = bind_error("auth_file = \"missing-userlist.txt\"").await;
    assert!(e.contains("auth.auth_file"), "{e}");
    let e = bind_error("lookup_usr = \"postgres\"").await;
    assert!(e.contains("auth.lookup_usr"), "{e}");
}
