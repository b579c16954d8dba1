//! Cancel and terminate: the real backend PID is kept, the secret is the proxy's own,
//! a CancelRequest through the proxy cancels the right query, a wrong key does nothing.

use std::time::{Duration, Instant};

use harness::raw;
use harness::{connect_dsn, postgres, start_proxy, users, ProxyOptions};

const DB: &str = "postgres";

#[tokio::test]
async fn backend_pid_is_real_and_secret_is_not() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let (mut s, (pid, secret), _) = raw::login(proxy.port(), users::TRUST, DB).await;
    let out = raw::simple(&mut s, "SELECT pg_backend_pid()").await;
    assert_eq!(raw::first_value(&out), Some(pid.to_string()));
    let (_, (_, direct_secret), _) = raw::login(postgres().port, users::TRUST, DB).await;
    assert_eq!(secret.len(), direct_secret.len());
}

#[tokio::test]
async fn cancel_through_the_proxy_stops_the_query_quickly() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let client = proxy.connect(users::TRUST, DB).await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { client.query("SELECT pg_sleep(30)", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let res = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("query did not end after cancel")
        .expect("join");
    let err = res.expect_err("cancelled query must fail");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn wrong_cancel_key_does_nothing() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let (mut s, (pid, secret), _) = raw::login(proxy.port(), users::TRUST, DB).await;
    use tokio::io::AsyncWriteExt;
    s.write_all(&raw::query("SELECT pg_sleep(1.5), 'finished'"))
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut wrong = secret.clone();
    wrong[0] ^= 0xff;
    raw::cancel(proxy.port(), pid, &wrong).await;
    raw::cancel(proxy.port(), pid + 1, &secret).await;
    let out = raw::read_until_ready(&mut s).await;
    assert!(
        out.iter().all(|m| m.tag != b'E'),
        "query was cancelled: {out:?}"
    );
    assert_eq!(out.iter().filter(|m| m.tag == b'D').count(), 1);
}

#[tokio::test]
async fn terminating_the_backend_ends_the_client_session() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let client = proxy.connect(users::TRUST, DB).await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let admin = connect_dsn(&postgres().direct_dsn(users::TRUST, DB)).await;
    let seen: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .expect("pg_stat_activity")
        .get(0);
    assert_eq!(seen, 1, "the client's PID must be the real backend's");
    admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.query("SELECT 1", &[]).await {
            Err(_) => break,
            Ok(_) if Instant::now() > deadline => panic!("session survived termination"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(client.query("SELECT 1", &[]).await.is_err());
}
