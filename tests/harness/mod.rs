//! Test harness: a throwaway PostgreSQL cluster and in-process pgveil proxies.
//!
//! The cluster is created once per test binary (initdb as the `postgres` user when the
//! tests run as root, a free loopback port, TLS on with a generated CA) and removed by
//! a watchdog process when the test binary exits. Each test starts its own proxy on
//! port 0 with the config it needs.

#![allow(clippy::missing_panics_doc)]

pub mod certs;
pub mod pg;
pub mod proxy;
pub mod raw;
pub mod shop;
pub mod small_shop;

pub use certs::TestCerts;
pub use pg::{postgres, Postgres};
pub use proxy::{start_proxy, ProxyHandle};

/// Users the cluster creates, one per authentication method.
pub mod users {
    /// `trust` in pg_hba.
    pub const TRUST: &str = "trust_user";
    /// `password` (cleartext) in pg_hba.
    pub const CLEARTEXT: &str = "clear_user";
    /// `md5` in pg_hba, with an md5 verifier.
    pub const MD5: &str = "md5_user";
    /// `scram-sha-256` in pg_hba.
    pub const SCRAM: &str = "scram_user";
    /// The password of every password user.
    pub const PASSWORD: &str = "s3cret-pw";
}

pub use proxy::{connect_dsn, connect_err, start_proxy_with_hooks, ProxyOptions};

/// Run psql against `port` on 127.0.0.1 with extra libpq settings in `conninfo`
/// (e.g. `sslmode=require`); returns (success, stdout, stderr).
pub async fn psql(
    port: u16,
    user: &str,
    db: &str,
    conninfo: &str,
    sql: &str,
) -> (bool, String, String) {
    let pg = postgres();
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(pg.client_bin("psql"))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-f", "-", "-d"])
        .arg(format!(
            "host=127.0.0.1 port={port} user={user} dbname={db} {conninfo}"
        ))
        .env("PGPASSWORD", users::PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run psql");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(sql.as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
    }
    let out = child.wait_with_output().await.expect("wait for psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
