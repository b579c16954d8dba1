//! End-to-end metrics and health: a known workload through the enforcing proxy moves the
//! Prometheus counters served on `/metrics` by exactly the right amounts, and `/readyz`
//! follows the upstream's reachability.
//!
//! The metrics registry is global to the test process, so assertions are on deltas, and
//! only one test here runs client sessions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::small_shop::{setup_shop, shop_policy};
use harness::{start_proxy, ProxyHandle, ProxyOptions};
use pgveil::app::{spawn_health_checks, Assembled};
use pgveil::audit::Auditor;
use pgveil::health::{Health, HealthServer};
use pgveil::hook::PassThrough;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GET `path` over a fresh connection; returns (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect to /metrics");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send request");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read answer");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// One scrape: `name{labels}` → value.
type Samples = BTreeMap<String, f64>;

fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `name` with exactly these labels (0 when the series does not exist yet).
fn value(s: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    s.iter()
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), "}"));
            if n != name {
                return false;
            }
            let mut have: Vec<String> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            have.sort();
            have == want
        })
        .map_or(0.0, |(_, v)| *v)
}

async fn scrape(addr: SocketAddr) -> Samples {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// Starts `/metrics` + health checks for `proxy` (or for `assembled` when given).
async fn health_endpoint(proxy: &ProxyHandle, assembled: &Assembled) -> SocketAddr {
    let health = Arc::new(Health::new());
    spawn_health_checks(&health, assembled, &proxy.ctx);
    let server = HealthServer::bind("127.0.0.1:0".parse().expect("addr"), health)
        .await
        .expect("bind health server");
    let addr = server.local_addr().expect("health addr");
    tokio::spawn(server.run(std::future::pending()));
    addr
}

/// Polls `/readyz` until it answers `want` (or panics after `within`).
async fn wait_readyz(addr: SocketAddr, want: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get(addr, "/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status}, wanted {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `/readyz` until the named checks are all ok; returns the `checks` object.
async fn wait_checks(addr: SocketAddr, names: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = get(addr, "/readyz").await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("readyz is JSON");
        if names.iter().all(|n| v["checks"][n]["ok"] == true) {
            return v["checks"].clone();
        }
        assert!(Instant::now() < deadline, "checks {names:?} not ok: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const SUPPORT_SELECTS: u32 = 5;
const DENIED_EXTENDED: u32 = 2;
const DENIED_SIMPLE: u32 = 2;
const DBA_SELECTS: u32 = 4;

#[tokio::test]
async fn workload_moves_counters_by_exact_amounts() {
    let db = "metrics_shop";
    setup_shop(db);
    let proxy = start_proxy(ProxyOptions {
        policy: Some(shop_policy()),
        ..Default::default()
    })
    .await;
    let addr = health_endpoint(&proxy, proxy.assembled.as_ref().expect("assembled")).await;

    let (status, _) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
    // Upstream and policy are ok from the start (the catalog loads with the first
    // session: see `fresh_proxy_with_policy_becomes_ready_without_traffic`).
    let checks = wait_checks(addr, &["upstream", "policy", "audit"]).await;
    assert!(checks["upstream"]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("reachable")));

    let before = scrape(addr).await;

    let support = proxy.connect("support_app", db).await;
    for _ in 0..SUPPORT_SELECTS {
        let rows = support
            .query("SELECT name, phone FROM customers WHERE id = 1", &[])
            .await
            .expect("support select");
        assert_eq!(rows.len(), 1);
    }
    for _ in 0..DENIED_EXTENDED {
        support
            .query("SELECT bank_card FROM customers", &[])
            .await
            .expect_err("bank_card denied");
    }
    for _ in 0..DENIED_SIMPLE {
        support
            .simple_query("SELECT bank_card FROM customers")
            .await
            .expect_err("bank_card denied");
    }
    let dba = proxy.connect("postgres", db).await;
    for _ in 0..DBA_SELECTS {
        let rows = dba
            .query("SELECT phone FROM customers WHERE id = 1", &[])
            .await
            .expect("dba select");
        assert_eq!(rows.len(), 1);
    }
    drop(support);
    drop(dba);

    // Sessions are counted when they end: wait for both.
    let conn_ok = |s: &Samples| value(s, "pgveil_connections_total", &[("result", "ok")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let now = scrape(addr).await;
        if conn_ok(&now) - conn_ok(&before) >= 2.0 || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };

    assert_eq!(delta("pgveil_connections_total", &[("result", "ok")]), 2.0);
    assert_eq!(
        delta(
            "pgveil_queries_total",
            &[
                ("role", "support"),
                ("kind", "select"),
                ("decision", "rewrite")
            ]
        ),
        f64::from(SUPPORT_SELECTS)
    );
    assert_eq!(
        delta(
            "pgveil_queries_total",
            &[
                ("role", "support"),
                ("kind", "select"),
                ("decision", "deny")
            ]
        ),
        f64::from(DENIED_EXTENDED + DENIED_SIMPLE),
        "every refused statement counts as a deny decision, whatever the protocol"
    );
    assert_eq!(
        delta(
            "pgveil_queries_total",
            &[
                ("role", "support"),
                ("kind", "select"),
                ("decision", "allow")
            ]
        ),
        0.0
    );
    assert_eq!(
        delta(
            "pgveil_queries_total",
            &[("role", "dba"), ("kind", "select"), ("decision", "allow")]
        ),
        f64::from(DBA_SELECTS)
    );
    assert_eq!(
        delta(
            "pgveil_denied_total",
            &[("role", "support"), ("reason", "column")]
        ),
        f64::from(DENIED_EXTENDED + DENIED_SIMPLE)
    );
    assert_eq!(
        delta("pgveil_rows_returned_total", &[("role", "support")]),
        f64::from(SUPPORT_SELECTS)
    );
    assert_eq!(
        delta("pgveil_rows_returned_total", &[("role", "dba")]),
        f64::from(DBA_SELECTS)
    );
    assert_eq!(
        delta(
            "pgveil_masked_columns_total",
            &[("role", "support"), ("class", "phone")]
        ),
        f64::from(SUPPORT_SELECTS)
    );
    let ready = wait_readyz(addr, 200, Duration::from_secs(15)).await;
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("readyz is JSON");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["catalog"]["ok"], true, "{ready}");
    assert!(delta("pgveil_bytes_total", &[("direction", "client_to_upstream")]) > 0.0);
    assert!(delta("pgveil_bytes_total", &[("direction", "upstream_to_client")]) > 0.0);
    assert_eq!(value(&after, "pgveil_connections_active", &[]), 0.0);
    let sha = proxy
        .enforcement
        .as_ref()
        .expect("enforcement")
        .current()
        .policy
        .sha256
        .clone();
    assert_eq!(
        value(&after, "pgveil_policy_info", &[("sha256", &sha)]),
        1.0,
        "policy_info names the loaded policy"
    );
}

#[tokio::test]
async fn readyz_follows_upstream_reachability() {
    // A fake upstream: the readiness probe only opens a TCP connection.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake upstream");
    let port = fake.local_addr().expect("fake addr").port();
    let proxy = start_proxy(ProxyOptions {
        upstream_port: Some(port),
        ..Default::default()
    })
    .await;
    let assembled = Assembled {
        hooks: Arc::new(PassThrough),
        enforcement: None,
        auditor: Auditor::disabled(),
    };
    let addr = health_endpoint(&proxy, &assembled).await;
    let (status, _) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
    wait_readyz(addr, 200, Duration::from_secs(10)).await;

    drop(fake);
    let body = wait_readyz(addr, 503, Duration::from_secs(12)).await;
    let body: serde_json::Value = serde_json::from_str(&body).expect("readyz is JSON");
    assert_eq!(body["checks"]["upstream"]["ok"], false, "{body}");
    let (status, _) = get(addr, "/healthz").await;
    assert_eq!(status, 200, "liveness does not depend on the upstream");

    let _fake = std::net::TcpListener::bind(("127.0.0.1", port)).expect("re-bind fake upstream");
    wait_readyz(addr, 200, Duration::from_secs(12)).await;
}

/// A load balancer sends no client before `/readyz` is 200, so readiness must not wait for
/// the first session to load a catalog snapshot. Known bug: the catalog check stays
/// "no catalog snapshot loaded yet" until a client connects (snapshots load on demand).
#[tokio::test]
async fn fresh_proxy_with_policy_becomes_ready_without_traffic() {
    setup_shop("metrics_fresh");
    let proxy = start_proxy(ProxyOptions {
        policy: Some(shop_policy()),
        ..Default::default()
    })
    .await;
    let addr = health_endpoint(&proxy, proxy.assembled.as_ref().expect("assembled")).await;
    wait_readyz(addr, 200, Duration::from_secs(15)).await;
}
