//! Authentication relayed to PostgreSQL: trust, cleartext, md5, SCRAM-SHA-256, failures
//! with PostgreSQL's own error, and SCRAM-SHA-256-PLUS never offered.

use harness::{psql, start_proxy, users, ProxyOptions};

const DB: &str = "postgres";

#[tokio::test]
async fn every_method_works_through_the_proxy() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    for user in [users::TRUST, users::CLEARTEXT, users::MD5, users::SCRAM] {
        let client = proxy.connect(user, DB).await;
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("query")
            .get(0);
        assert_eq!(who, user);
    }
}

#[tokio::test]
async fn wrong_password_gets_postgres_error() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    for user in [users::CLEARTEXT, users::MD5, users::SCRAM] {
        let dsn = format!(
            "host=127.0.0.1 port={} user={user} dbname={DB} password=wrong sslmode=disable",
            proxy.port()
        );
        let err = harness::connect_err(&dsn).await;
        assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{user}: {err}");
        let msg = err
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert!(msg.contains("password authentication failed"), "{msg}");
    }
    // The proxy keeps serving.
    proxy.connect(users::SCRAM, DB).await;
}

#[tokio::test]
async fn scram_with_client_tls_and_plain_upstream() {
    let proxy = start_proxy(ProxyOptions {
        client_tls: true,
        upstream_tls: "disable",
        ..Default::default()
    })
    .await;
    for cb in ["prefer", "disable"] {
        let (ok, out, err) = psql(
            proxy.port(),
            users::SCRAM,
            DB,
            &format!("sslmode=require channel_binding={cb}"),
            "SELECT 'scram-ok'",
        )
        .await;
        assert!(ok, "channel_binding={cb}: {err}");
        assert!(out.contains("scram-ok"));
    }
    // PLUS is never offered, so a client that insists on channel binding is refused
    // by its own library rather than by a broken exchange.
    let (ok, _, err) = psql(
        proxy.port(),
        users::SCRAM,
        DB,
        "sslmode=require channel_binding=require",
        "SELECT 1",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("channel binding"), "{err}");
}

#[tokio::test]
async fn missing_user_is_refused() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    use tokio::io::AsyncWriteExt;
    s.write_all(&harness::raw::startup_packet(
        0x0003_0000,
        &[("database", DB)],
    ))
    .await
    .expect("startup");
    let m = harness::raw::read_msg(&mut s).await.expect("error");
    assert_eq!(m.tag, b'E');
    assert_eq!(m.sqlstate().as_deref(), Some("28000"));
}
