//! Startup phase: SSLRequest with and without client TLS, direct TLS with ALPN,
//! GSSENCRequest, bytes injected after SSLRequest, protocol version negotiation, and TLS
//! to PostgreSQL in every mode.

use std::sync::Arc;

use harness::raw::{self, read_msg, startup_packet};
use harness::{postgres, psql, start_proxy, users, ProxyOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DB: &str = "postgres";

#[tokio::test]
async fn client_tls_with_psql_require_and_verify_full() {
    let proxy = start_proxy(ProxyOptions {
        client_tls: true,
        ..Default::default()
    })
    .await;
    let ca = proxy
        .certs
        .as_ref()
        .expect("certs")
        .ca_cert
        .display()
        .to_string();
    let sql = "SELECT 'tls-ok'";
    let (ok, out, err) = psql(proxy.port(), users::SCRAM, DB, "sslmode=require", sql).await;
    assert!(ok, "{err}");
    assert!(out.contains("tls-ok"));
    let (ok, out, err) = psql(
        proxy.port(),
        users::TRUST,
        DB,
        &format!("sslmode=verify-full sslrootcert={ca}"),
        "SELECT 'verified'",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("verified"));
    // Plain connections stay possible when TLS is configured.
    let (ok, _, err) = psql(proxy.port(), users::MD5, DB, "sslmode=disable", sql).await;
    assert!(ok, "{err}");
}

#[tokio::test]
async fn no_client_tls_answers_n() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let (ok, _, err) = psql(proxy.port(), users::TRUST, DB, "sslmode=prefer", "SELECT 1").await;
    assert!(ok, "{err}");
    let (ok, _, err) = psql(
        proxy.port(),
        users::TRUST,
        DB,
        "sslmode=require",
        "SELECT 1",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("does not support SSL"), "{err}");
}

#[tokio::test]
async fn data_after_ssl_request_closes_the_connection() {
    let proxy = start_proxy(ProxyOptions {
        client_tls: true,
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut bytes = vec![0, 0, 0, 8];
    bytes.extend_from_slice(&80877103i32.to_be_bytes());
    bytes.extend_from_slice(&startup_packet(0x0003_0000, &[("user", users::TRUST)]));
    s.write_all(&bytes).await.expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(
        got.is_empty() || got == b"S",
        "the injected startup packet must not be answered: {got:?}"
    );
}

#[tokio::test]
async fn gssenc_request_is_declined_then_startup_proceeds() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut req = vec![0, 0, 0, 8];
    req.extend_from_slice(&80877104i32.to_be_bytes());
    s.write_all(&req).await.expect("write");
    assert_eq!(s.read_u8().await.expect("answer"), b'N');
    s.write_all(&startup_packet(
        0x0003_0000,
        &[("user", users::TRUST), ("database", DB)],
    ))
    .await
    .expect("startup");
    let msgs = raw::read_until_ready(&mut s).await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
}

#[tokio::test]
async fn newer_minor_version_gets_what_postgres_negotiates() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(&startup_packet(
        0x0003_0002,
        &[
            ("user", users::TRUST),
            ("database", DB),
            ("_pq_.unknown_ext", "1"),
        ],
    ))
    .await
    .expect("startup");
    let msgs = raw::read_until_ready(&mut s).await;
    let v = msgs
        .iter()
        .find(|m| m.tag == b'v')
        .expect("NegotiateProtocolVersion relayed");
    assert!(!v.body.is_empty());
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'));
}

#[tokio::test]
async fn unsupported_protocol_gets_0a000() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(&startup_packet(0x0002_0000, &[("user", users::TRUST)]))
        .await
        .expect("startup");
    let m = read_msg(&mut s).await.expect("error");
    assert_eq!(m.tag, b'E');
    assert_eq!(m.sqlstate().as_deref(), Some("0A000"));
}

fn tls_client_config(ca: &std::path::Path, alpn: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("read ca");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("pem")).expect("add ca");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    if alpn {
        cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    Arc::new(cfg)
}

#[tokio::test]
async fn direct_tls_needs_alpn_postgresql() {
    let proxy = start_proxy(ProxyOptions {
        client_tls: true,
        ..Default::default()
    })
    .await;
    let ca = proxy.certs.as_ref().expect("certs").ca_cert.clone();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");

    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(&ca, true));
    let mut tls = connector
        .connect(name.clone(), tcp)
        .await
        .expect("direct TLS handshake");
    tls.write_all(&startup_packet(
        0x0003_0000,
        &[("user", users::TRUST), ("database", DB)],
    ))
    .await
    .expect("startup");
    let msgs = raw::read_until_ready(&mut tls).await;
    assert_eq!(msgs.first().map(|m| m.tag), Some(b'R'), "{msgs:?}");
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'));
    let out = raw::simple(&mut tls, "SELECT 'direct-tls'").await;
    assert_eq!(raw::first_value(&out).as_deref(), Some("direct-tls"));

    // Without ALPN the handshake may complete, but no session is served.
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(&ca, false));
    if let Ok(mut tls) = connector.connect(name, tcp).await {
        let _ = tls
            .write_all(&startup_packet(0x0003_0000, &[("user", users::TRUST)]))
            .await;
        assert!(read_msg(&mut tls).await.is_none(), "served without ALPN");
    }
}

async fn upstream_ssl_in_use(proxy: &harness::ProxyHandle, user: &str) -> bool {
    let client = proxy.connect(user, DB).await;
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn upstream_tls_modes() {
    for mode in ["prefer", "require", "verify-full"] {
        let proxy = start_proxy(ProxyOptions {
            upstream_tls: mode,
            ..Default::default()
        })
        .await;
        assert!(upstream_ssl_in_use(&proxy, users::TRUST).await, "{mode}");
        // SCRAM from a plain client over a TLS upstream leg works (gs2 flag 'n').
        assert!(upstream_ssl_in_use(&proxy, users::SCRAM).await, "{mode}");
    }
    let proxy = start_proxy(ProxyOptions {
        upstream_tls: "disable",
        ..Default::default()
    })
    .await;
    assert!(!upstream_ssl_in_use(&proxy, users::TRUST).await);

    // verify-full against the wrong CA: the client gets 08006.
    let other = harness::TestCerts::generate(&postgres().root.join("wrong-ca"), "wrong");
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[upstream]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"verify-full\"\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
        postgres().port,
        other.ca_cert.display()
    );
    let cfg = pgveil::config::Config::parse(
        &text,
        std::path::Path::new("t.toml"),
        std::path::Path::new("/"),
    )
    .expect("config");
    let server = pgveil::server::Server::bind(&cfg, Arc::new(pgveil::hook::PassThrough))
        .await
        .expect("bind");
    let port = server.local_addr().port();
    let task = tokio::spawn(server.run());
    let err = harness::connect_err(&format!(
        "host=127.0.0.1 port={port} user={} dbname={DB} sslmode=disable",
        users::TRUST
    ))
    .await;
    assert_eq!(err.code().map(|c| c.code()), Some("08006"), "{err}");
    task.abort();
}

#[tokio::test]
async fn unix_socket_upstream() {
    let proxy = start_proxy(ProxyOptions {
        unix_socket: true,
        upstream_tls: "prefer",
        ..Default::default()
    })
    .await;
    let client = proxy.connect("postgres", DB).await;
    let r = client
        .query_one("SELECT inet_client_addr() IS NULL", &[])
        .await
        .expect("query over unix socket");
    assert!(r.get::<_, bool>(0), "upstream leg should be a Unix socket");
}

#[tokio::test]
async fn passthrough_scram_over_tls_on_both_legs_is_warned_about() {
    let text = "listen = \"127.0.0.1:0\"\n[upstream]\ntls = \"require\"\n[tls]\ncert = \"a\"\nkey = \"b\"\n";
    let cfg = pgveil::config::Config::parse(
        text,
        std::path::Path::new("t.toml"),
        std::path::Path::new("/"),
    )
    .expect("config");
    let warnings = pgveil::cli::startup_warnings(&cfg);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("channel binding"));
}
