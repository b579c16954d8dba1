//! PostgreSQL restarts while sessions are open: those sessions end with an error, the
//! proxy stays up, and new sessions work once the server is back. (Own test binary: it
//! restarts the cluster.)

use std::time::Duration;

use harness::{postgres, start_proxy, users, ProxyOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_fail_cleanly_and_new_ones_work_after_restart() {
    let pg = postgres();
    let proxy = start_proxy(ProxyOptions::default()).await;
    let clients =
        futures_util::future::join_all((0..5).map(|_| proxy.connect(users::TRUST, "postgres")))
            .await;
    for c in &clients {
        c.query_one("SELECT 1", &[]).await.expect("before restart");
    }
    tokio::task::block_in_place(|| pg.stop_server());
    for c in &clients {
        let e = c
            .query_one("SELECT 1", &[])
            .await
            .expect_err("server is down");
        let _ = e;
    }
    let down = harness::connect_err(&proxy.dsn(users::TRUST, "postgres")).await;
    assert_eq!(down.code().map(|c| c.code()), Some("08006"), "{down}");
    tokio::task::block_in_place(|| {
        pg.start_server();
        pg.wait_ready();
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = proxy.connect(users::TRUST, "postgres").await;
    c.query_one("SELECT 1", &[]).await.expect("after restart");
}
