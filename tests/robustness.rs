//! Robustness: malformed and oversized messages, random input, many sessions, the
//! connection cap, an unreachable upstream, and graceful shutdown. The proxy must never
//! panic and must keep serving.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::raw::{self, message, read_msg, startup_packet};
use harness::{start_proxy, users, ProxyOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DB: &str = "postgres";

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            prev(info);
        }));
    });
}

async fn expect_fatal(s: &mut TcpStream, sqlstate: &str) {
    let mut saw = None;
    while let Some(m) = read_msg(s).await {
        if m.tag == b'E' {
            saw = m.sqlstate();
            break;
        }
    }
    assert_eq!(saw.as_deref(), Some(sqlstate));
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "connection not closed after the error");
}

#[tokio::test]
async fn malformed_and_oversized_messages_get_08p01() {
    count_panics();
    let proxy = start_proxy(ProxyOptions {
        limits: "max_message_bytes = 65536".into(),
        ..Default::default()
    })
    .await;

    let (mut s, _, _) = raw::login(proxy.port(), users::TRUST, DB).await;
    s.write_all(b"Q\0\0\0\x02").await.expect("write");
    expect_fatal(&mut s, "08P01").await;

    let (mut s, _, _) = raw::login(proxy.port(), users::TRUST, DB).await;
    s.write_all(b"Q\0\x0f\x42\x40").await.expect("write");
    expect_fatal(&mut s, "08P01").await;

    // A Query without its terminating NUL.
    let (mut s, _, _) = raw::login(proxy.port(), users::TRUST, DB).await;
    s.write_all(&message(b'Q', b"SELECT 1"))
        .await
        .expect("write");
    expect_fatal(&mut s, "08P01").await;

    // A Parse whose parameter count lies.
    let (mut s, _, _) = raw::login(proxy.port(), users::TRUST, DB).await;
    s.write_all(&message(b'P', b"\0SELECT 1\0\0\x09"))
        .await
        .expect("write");
    expect_fatal(&mut s, "08P01").await;

    // Bad startup packet length.
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(&[0, 0, 0, 3, 0, 0, 0, 0]).await.expect("write");
    expect_fatal(&mut s, "08P01").await;

    let client = proxy.connect(users::TRUST, DB).await;
    client
        .query_one("SELECT 1", &[])
        .await
        .expect("still serving");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

/// A tiny deterministic generator, so failures reproduce.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

#[tokio::test]
async fn random_and_mutated_streams_never_break_the_proxy() {
    count_panics();
    let proxy = start_proxy(ProxyOptions {
        limits: "max_message_bytes = 1048576\nstartup_timeout_ms = 2000".into(),
        ..Default::default()
    })
    .await;
    let valid: Vec<Vec<u8>> = vec![
        raw::query("SELECT 1"),
        message(b'P', b"s\0SELECT $1::int\0\0\x01\0\0\0\x17"),
        message(b'B', b"\0s\0\0\0\0\x01\0\0\0\x011\0\0"),
        message(b'E', b"\0\0\0\0\0"),
        message(b'D', b"Ss\0"),
        message(b'C', b"Ss\0"),
        message(b'S', b""),
        message(b'H', b""),
        message(b'd', b"abc"),
        message(b'F', b"\0\0\0\x01\0\0\0\0\0\0"),
    ];
    let mut rng = Lcg(0x5eed);
    for round in 0..60 {
        let mut s = if round % 4 == 0 {
            TcpStream::connect(proxy.addr).await.expect("connect")
        } else {
            raw::login(proxy.port(), users::TRUST, DB).await.0
        };
        let mut bytes = Vec::new();
        if round % 4 == 0 {
            bytes.extend_from_slice(&startup_packet(0x0003_0000, &[("user", users::TRUST)]));
        }
        for _ in 0..(1 + rng.next() % 8) {
            let mut m = valid[(rng.next() as usize) % valid.len()].clone();
            match rng.next() % 5 {
                0 => {
                    let i = (rng.next() as usize) % m.len();
                    m[i] = rng.byte();
                }
                1 => {
                    let cut = (rng.next() as usize) % m.len();
                    m.truncate(cut.max(1));
                }
                2 => m.extend((0..(rng.next() % 16)).map(|_| rng.byte())),
                _ => {}
            }
            bytes.extend_from_slice(&m);
        }
        if round % 7 == 0 {
            bytes = (0..(rng.next() % 64)).map(|_| rng.byte()).collect();
        }
        let _ = s.write_all(&bytes).await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(300), s.read_to_end(&mut sink)).await;
    }
    let client = proxy.connect(users::TRUST, DB).await;
    client
        .query_one("SELECT 1", &[])
        .await
        .expect("still serving");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn two_hundred_concurrent_sessions() {
    let proxy = Arc::new(start_proxy(ProxyOptions::default()).await);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let client = proxy.connect(users::TRUST, DB).await;
                let r = client
                    .query_one("SELECT $1::int * 2", &[&i])
                    .await
                    .expect("query");
                assert_eq!(r.get::<_, i32>(0), i * 2);
                tokio::time::sleep(Duration::from_millis(200)).await;
                client
            })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("session task"));
    }
    assert_eq!(clients.len(), 200);
}

#[tokio::test]
async fn connection_cap_answers_53300() {
    let proxy = start_proxy(ProxyOptions {
        limits: "max_connections = 3".into(),
        ..Default::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(proxy.connect(users::TRUST, DB).await);
    }
    let err = harness::connect_err(&proxy.dsn(users::TRUST, DB)).await;
    assert_eq!(err.code().map(|c| c.code()), Some("53300"), "{err}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.connect(users::TRUST, DB).await;
}

#[tokio::test]
async fn unreachable_upstream_gets_08006_and_proxy_stays_up() {
    let proxy = start_proxy(ProxyOptions {
        upstream_port: Some(harness::pg::free_port()),
        upstream_extra: "connect_timeout_ms = 1000".into(),
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        let err = harness::connect_err(&proxy.dsn(users::TRUST, DB)).await;
        assert_eq!(err.code().map(|c| c.code()), Some("08006"), "{err}");
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_sessions_finish_then_closes_them() {
    let proxy = start_proxy(ProxyOptions {
        limits: "shutdown_grace_ms = 1500".into(),
        ..Default::default()
    })
    .await;
    let client = proxy.connect(users::TRUST, DB).await;
    proxy.ctx.shutdown.stop_accepting();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&proxy.dsn(users::TRUST, DB), tokio_postgres::NoTls)
        )
        .await
        .map(|r| r.is_err())
        .unwrap_or(true),
        "new connections must be refused while draining"
    );
    client
        .query_one("SELECT 1", &[])
        .await
        .expect("open session keeps working during the grace period");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
}
