//! In-process pgveil proxies for tests, each on its own port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgveil::audit::Auditor;
use pgveil::config::Config;
use pgveil::hook::{HookFactory, PassThrough};
use pgveil::server::{ProxyContext, Server};
use tokio::task::JoinHandle;

use super::certs::TestCerts;
use super::pg::postgres;
use super::users;

/// What to put in the test proxy's config.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// `[upstream] tls`.
    pub upstream_tls: &'static str,
    /// Connect upstream through the Unix socket instead of TCP.
    pub unix_socket: bool,
    /// Serve client-facing TLS with a generated certificate.
    pub client_tls: bool,
    /// Extra TOML appended at the end (whole sections).
    pub extra: String,
    /// Extra keys for `[limits]`.
    pub limits: String,
    /// Override the upstream port (e.g. a port where nothing listens).
    pub upstream_port: Option<u16>,
    /// Extra keys for `[upstream]`.
    pub upstream_extra: String,
    /// Policy file text; when set the proxy enforces it (catalog read as
    /// `catalog_user`, a fixed test hash key).
    pub policy: Option<String>,
    /// `[catalog] user` when a policy is set (default `postgres`).
    pub catalog_user: Option<&'static str>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            upstream_tls: "disable",
            unix_socket: false,
            client_tls: false,
            extra: String::new(),
            limits: String::new(),
            upstream_port: None,
            upstream_extra: String::new(),
            policy: None,
            catalog_user: None,
        }
    }
}

/// A running in-process proxy.
pub struct ProxyHandle {
    pub addr: SocketAddr,
    pub ctx: Arc<ProxyContext>,
    /// Certificates of the client-facing TLS, when enabled.
    pub certs: Option<TestCerts>,
    /// Directory holding this proxy's files (config, certs, policy.toml).
    pub dir: PathBuf,
    /// Policy enforcement, when started with a policy.
    pub enforcement: Option<Arc<pgveil::enforce::Enforcement>>,
    /// What `pgveil::app::assemble` built (hooks, enforcement, audit stream), when
    /// started with a policy or audit sinks; health checks and audit tests need it.
    pub assembled: Option<pgveil::app::Assembled>,
    task: Option<JoinHandle<()>>,
}

impl ProxyHandle {
    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A tokio-postgres connection string through the proxy.
    pub fn dsn(&self, user: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={db} password={} sslmode=disable",
            self.port(),
            users::PASSWORD
        )
    }

    /// Connect through the proxy with tokio-postgres (connection driven in a task).
    pub async fn connect(&self, user: &str, db: &str) -> tokio_postgres::Client {
        connect_dsn(&self.dsn(user, db)).await
    }

    /// Begin graceful shutdown and wait for the proxy to stop.
    pub async fn shutdown(mut self) {
        self.ctx.shutdown.stop_accepting();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Connect with tokio-postgres and drive the connection in a task; panics on failure.
pub async fn connect_dsn(dsn: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {dsn}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn config_text(opts: &ProxyOptions, dir: &Path, certs: Option<&TestCerts>) -> String {
    let pg = postgres();
    let mut t = String::from("listen = \"127.0.0.1:0\"\n");
    if let Some(policy) = &opts.policy {
        std::fs::write(dir.join("policy.toml"), policy).expect("write policy.toml");
        std::fs::write(dir.join("hash.key"), "pgveil-test-hash-key-0123456789").expect("write key");
        t.push_str("policy = \"policy.toml\"\n");
    }
    t.push_str("[upstream]\n");
    if opts.unix_socket {
        t.push_str(&format!("socket_dir = \"{}\"\n", pg.socket_dir.display()));
    } else {
        t.push_str("host = \"127.0.0.1\"\n");
    }
    t.push_str(&format!(
        "port = {}\ntls = \"{}\"\nca_file = \"{}\"\nserver_name = \"localhost\"\n{}\n",
        opts.upstream_port.unwrap_or(pg.port),
        opts.upstream_tls,
        pg.certs.ca_cert.display(),
        opts.upstream_extra
    ));
    if let Some(c) = certs {
        t.push_str(&format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            c.server_cert.display(),
            c.server_key.display()
        ));
    }
    t.push_str("[limits]\n");
    if !opts.limits.contains("shutdown_grace_ms") {
        t.push_str("shutdown_grace_ms = 2000\n");
    }
    t.push_str(&opts.limits);
    t.push('\n');
    if opts.policy.is_some() {
        t.push_str(&format!(
            "[catalog]\nuser = \"{}\"\n[masking]\nhash_key_file = \"hash.key\"\n",
            opts.catalog_user.unwrap_or("postgres")
        ));
    }
    t.push_str(&opts.extra);
    t
}

/// Start a proxy with these options: transparent, or enforcing `opts.policy`.
pub async fn start_proxy(opts: ProxyOptions) -> ProxyHandle {
    start_proxy_with_hooks(opts, Arc::new(PassThrough)).await
}

/// The enforcement of a proxy started with a policy (for reload tests).
pub fn enforcement(proxy: &ProxyHandle) -> Option<Arc<pgveil::enforce::Enforcement>> {
    proxy.enforcement.clone()
}

/// Start a proxy with a custom hook factory (policy enforcement under test).
pub async fn start_proxy_with_hooks(
    opts: ProxyOptions,
    hooks: Arc<dyn HookFactory>,
) -> ProxyHandle {
    let pg = postgres();
    let dir = pg.root.join(format!("proxy-{}", super::pg::free_port()));
    std::fs::create_dir_all(&dir).expect("create proxy dir");
    let certs = opts.client_tls.then(|| TestCerts::generate(&dir, "proxy"));
    let text = config_text(&opts, &dir, certs.as_ref());
    let path = dir.join("pgveil.toml");
    std::fs::write(&path, &text).expect("write pgveil.toml");
    let cfg = Config::parse(&text, &path, &dir).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    // A policy, or audit sinks without one (the audit-only enforcer), is what
    // `pgveil run` would assemble.
    let audits = cfg
        .audit
        .as_ref()
        .and_then(|a| a.get("sinks"))
        .and_then(|s| s.as_array())
        .is_some_and(|s| !s.is_empty());
    let assembled = if cfg.policy.is_some() || audits {
        Some(
            pgveil::app::assemble(&cfg, true)
                .await
                .unwrap_or_else(|e| panic!("policy: {e:#}")),
        )
    } else {
        None
    };
    let (hooks, enforcement, auditor) = match &assembled {
        Some(a) => (a.hooks.clone(), a.enforcement.clone(), a.auditor.clone()),
        None => (hooks, None, Auditor::disabled()),
    };
    let server = Server::bind_with_audit(&cfg, hooks, auditor)
        .await
        .expect("bind proxy");
    let addr = server.local_addr();
    let ctx = server.context();
    let task = tokio::spawn(server.run());
    ProxyHandle {
        addr,
        ctx,
        certs,
        dir,
        enforcement,
        assembled,
        task: Some(task),
    }
}

/// Connect and expect failure; returns the error (panics if the connection succeeds).
pub async fn connect_err(dsn: &str) -> tokio_postgres::Error {
    match tokio_postgres::connect(dsn, tokio_postgres::NoTls).await {
        Ok(_) => panic!("connection to {dsn} unexpectedly succeeded"),
        Err(e) => e,
    }
}
