//! Tests of the operations endpoint over real sockets, and of readiness bookkeeping.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Starts a server on 127.0.0.1:0; dropping the sender shuts it down.
async fn start(
    health: Arc<Health>,
) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<io::Result<()>>) {
    let server = HealthServer::bind("127.0.0.1:0".parse().unwrap(), health)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (addr, tx, task)
}

/// One raw HTTP/1.1 request; returns (status code, body).
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn serves_healthz_metrics_and_404() {
    let (addr, _tx, _task) = start(Arc::new(Health::new())).await;
    assert_eq!(
        request(addr, "GET", "/healthz").await,
        (200, "ok\n".to_owned())
    );
    metrics().upstream_error();
    let (code, body) = request(addr, "GET", "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("pgveil_upstream_errors_total"), "{body}");
    assert!(body.contains("# TYPE pgveil_connections_total counter"));
    assert_eq!(request(addr, "GET", "/nope").await.0, 404);
    assert_eq!(request(addr, "POST", "/readyz").await.0, 405);
    assert_eq!(
        request(addr, "HEAD", "/healthz").await,
        (200, String::new())
    );
}

#[tokio::test]
async fn readyz_flips_with_checks_and_draining() {
    let health = Arc::new(Health::new());
    let (addr, _tx, _task) = start(Arc::clone(&health)).await;

    // Nothing registered: ready.
    let (code, body) = request(addr, "GET", "/readyz").await;
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"status":"ready","checks":{}}"#)
    );

    health.register(Check::Policy);
    health.set(Check::Upstream, true, "connected");
    let (code, body) = request(addr, "GET", "/readyz").await;
    assert_eq!(code, 503);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "not_ready");
    assert_eq!(json["checks"]["policy"]["ok"], false);
    assert_eq!(json["checks"]["upstream"]["detail"], "connected");
    assert!(
        json["checks"].get("catalog").is_none(),
        "unregistered checks are not listed"
    );

    health.set(Check::Policy, true, "sha256 abc");
    assert_eq!(request(addr, "GET", "/readyz").await.0, 200);

    health.set(Check::Upstream, false, "connection refused");
    let (code, body) = request(addr, "GET", "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains("connection refused"), "{body}");

    health.set(Check::Upstream, true, "connected");
    assert_eq!(request(addr, "GET", "/readyz").await.0, 200);
    health.begin_shutdown();
    let (code, body) = request(addr, "GET", "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains(r#""status":"shutting_down""#), "{body}");
    // Liveness is unaffected by draining.
    assert_eq!(request(addr, "GET", "/healthz").await.0, 200);
}

#[tokio::test]
async fn run_returns_after_shutdown_and_stops_listening() {
    let (addr, tx, task) = start(Arc::new(Health::new())).await;
    assert_eq!(request(addr, "GET", "/healthz").await.0, 200);
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = serve(addr, Arc::new(Health::new()), std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test(start_paused = true)]
async fn probe_sets_check_from_outcome() {
    let health = Arc::new(Health::new());
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let handle = spawn_probe(
        Arc::clone(&health),
        Check::Upstream,
        Duration::from_secs(1),
        move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Ok("reachable".to_owned()),
                    1 => Err("connection refused"),
                    _ => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        Ok("late".to_owned())
                    }
                }
            }
        },
    );
    assert_eq!(health.get(Check::Upstream).map(|s| s.ok), Some(false));
    assert!(!health.is_ready(), "registered before the first probe");

    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        health.get(Check::Upstream),
        Some(CheckState {
            ok: true,
            detail: "reachable".to_owned()
        })
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        health.get(Check::Upstream),
        Some(CheckState {
            ok: false,
            detail: "connection refused".to_owned()
        })
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let state = health.get(Check::Upstream).unwrap();
    assert!(!state.ok && state.detail.contains("timed out"), "{state:?}");
    handle.abort();
}
