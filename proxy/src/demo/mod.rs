//! `pgveil demo`: a throwaway PostgreSQL with a realistic `shop` database, and pgveil in
//! front of it with the example policy, so a new user sees masking, denial and audit in
//! one command.
//!
//! Modules, one job each:
//! - [`cluster`]: find the server binaries, initdb, start/stop, cleanup guard.
//! - [`data`]: deterministic customers and orders (valid ID numbers, cards, phones).
//! - [`setup`]: roles, database, schema and COPY of the generated rows.
//! - [`files`]: policy, proxy config, hash key and catalog password for the proxy.
//! - [`banner`]: the "how to connect" text.
//! - [`error`]: why the demo failed, as [`DemoError`].

pub mod banner;
pub mod cluster;
pub mod data;
pub mod error;
pub mod files;
mod lists;
pub mod setup;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::hook::HookFactory;
use crate::server::{ProxyContext, Server};

pub use error::DemoError;

/// Seed of the generated data: every demo shows the same customers.
pub const SEED: u64 = 20_261_124;
/// Rows in `public.customers`.
pub const CUSTOMERS: usize = 1000;
/// Rows in `public.orders`.
pub const ORDERS: usize = 5000;
/// How long the proxy gets to stop before the demo moves on to PostgreSQL.
const PROXY_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the hook factory (policy enforcement, audit) for the demo's proxy config.
pub type HookBuilder = Box<dyn Fn(&Config) -> anyhow::Result<Arc<dyn HookFactory>> + Send + Sync>;

/// What `pgveil demo` was asked for.
pub struct DemoOptions {
    /// Client-facing port of the proxy on 127.0.0.1 (default 6432; 0 = any free port).
    pub port: u16,
    /// Called once with the generated config to build the hooks; `None` runs the full
    /// product: the policy enforced, audit stream, catalog cache and /metrics.
    pub hooks: Option<HookBuilder>,
}

impl std::fmt::Debug for DemoOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoOptions")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Run the demo until Ctrl-C, SIGTERM or SIGHUP, then stop everything and remove the
/// temporary directory. A signal during startup aborts it and cleans up as well.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let mut signals = StopSignals::new()?;
    let demo = tokio::select! {
        started = Demo::start(&opts, Progress::Print) => started?,
        name = signals.recv() => {
            // Dropping the startup future dropped the cluster guard: all cleaned up.
            anyhow::bail!("{name} during startup; the demo was stopped and cleaned up");
        }
    };
    println!("{}", demo.banner());
    let name = signals.recv().await;
    println!("\n{name} received: stopping pgveil and PostgreSQL ...");
    let dir = demo.dir().to_owned();
    demo.stop().await?;
    println!("Stopped; removed {}.", dir.display());
    Ok(())
}

/// A running demo: PostgreSQL with the `shop` data, and the proxy in front of it.
/// Dropping it without [`Demo::stop`] still stops PostgreSQL and removes the directory.
pub struct Demo {
    proxy_addr: SocketAddr,
    proxy: ProxyGuard,
    config: Config,
    files: files::DemoFiles,
    postgres_version: String,
    startup: Duration,
    /// Declared last: dropped after the proxy, so PostgreSQL outlives its sessions.
    cluster: cluster::Cluster,
}

/// The proxy task; dropping it closes every session and stops the listener.
struct ProxyGuard {
    ctx: Arc<ProxyContext>,
    task: JoinHandle<()>,
}

impl ProxyGuard {
    /// Close the sessions and wait (bounded) for the listener to finish.
    async fn stop(mut self) {
        self.ctx.shutdown.close_sessions();
        match tokio::time::timeout(PROXY_STOP_TIMEOUT, &mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the proxy task failed"),
            Err(_) => tracing::warn!("the proxy did not stop in time; stopping PostgreSQL anyway"),
        }
    }
}

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        self.ctx.shutdown.close_sessions();
        self.task.abort();
    }
}

/// Where startup progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// To stdout, one line per step.
    Print,
    /// Nowhere (tests).
    Quiet,
}

impl Progress {
    fn step(self, what: &str, since: Instant) {
        if self == Progress::Print {
            println!("  {what:<66} {:>5.1} s", since.elapsed().as_secs_f64());
        }
    }
}

impl Demo {
    /// Start PostgreSQL, load the data, write the proxy files and start the proxy.
    pub async fn start(opts: &DemoOptions, progress: Progress) -> anyhow::Result<Demo> {
        let started = Instant::now();
        // Fail before the slow part when the proxy port is taken (the real bind below
        // still reports a port lost in between).
        if opts.port != 0 {
            std::net::TcpListener::bind(("127.0.0.1", opts.port))
                .with_context(|| port_in_use(opts.port))?;
        }
        let bins = cluster::PgBinaries::find()?;
        let postgres_version = bins.version().await?;
        if progress == Progress::Print {
            println!(
                "pgveil demo: {postgres_version} from {}",
                bins.dir.display()
            );
        }

        let t = Instant::now();
        let mut cluster = cluster::Cluster::init(bins).await?;
        progress.step(
            &format!("cluster initialised in {}", cluster.root().display()),
            t,
        );

        let t = Instant::now();
        cluster.start().await?;
        progress.step(
            &format!("PostgreSQL listening on 127.0.0.1:{}", cluster.port()),
            t,
        );

        let t = Instant::now();
        let (customers, orders) = data::generate(SEED, CUSTOMERS, ORDERS);
        setup::load(cluster.socket_dir(), cluster.port(), &customers, &orders).await?;
        progress.step(
            &format!(
                "database {}: {} customers, {} orders",
                setup::DATABASE,
                customers.len(),
                orders.len()
            ),
            t,
        );

        let t = Instant::now();
        let (files, text) = files::write(cluster.root(), opts.port, cluster.port())?;
        let config = Config::parse(&text, &files.config, cluster.root())
            .context("the generated demo config is invalid")?;
        let (hooks, auditor, enforced) = match &opts.hooks {
            Some(build) => (
                build(&config).context("cannot set up policy enforcement")?,
                crate::audit::Auditor::disabled(),
                false,
            ),
            None => {
                let a = crate::app::assemble(&config, true)
                    .await
                    .context("cannot set up policy enforcement")?;
                (a.hooks, a.auditor, true)
            }
        };
        let server = Server::bind_with_audit(&config, hooks, auditor)
            .await
            .with_context(|| port_in_use(opts.port))?;
        if enforced {
            if let Some(addr) = config.metrics.listen {
                let health = std::sync::Arc::new(crate::health::Health::new());
                match crate::health::HealthServer::bind(addr, health).await {
                    Ok(http) => {
                        let mut deadline = server.context().shutdown.subscribe_deadline();
                        tokio::spawn(async move {
                            let _ = http.run(async move { deadline.wait().await }).await;
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "demo metrics endpoint not started"),
                }
            }
        }
        let proxy_addr = server.local_addr();
        let proxy = ProxyGuard {
            ctx: server.context(),
            task: tokio::spawn(server.run()),
        };
        progress.step(&format!("pgveil listening on {proxy_addr}"), t);

        Ok(Demo {
            proxy_addr,
            proxy,
            config,
            files,
            postgres_version,
            startup: started.elapsed(),
            cluster,
        })
    }

    /// Address clients connect to.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// Port of PostgreSQL itself on 127.0.0.1.
    pub fn postgres_port(&self) -> u16 {
        self.cluster.port()
    }

    /// The temporary directory holding the cluster and the proxy files.
    pub fn dir(&self) -> &Path {
        self.cluster.root()
    }

    /// The proxy config the demo generated.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Paths of the policy, audit log, key and config.
    pub fn files(&self) -> &files::DemoFiles {
        &self.files
    }

    /// The proxy's shared context (shutdown control, counters).
    pub fn context(&self) -> &Arc<ProxyContext> {
        &self.proxy.ctx
    }

    /// How long startup took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The "how to connect" text.
    pub fn banner(&self) -> String {
        banner::render(&banner::BannerInfo {
            proxy: self.proxy_addr,
            postgres_port: self.cluster.port(),
            postgres_version: &self.postgres_version,
            dir: self.cluster.root(),
            files: &self.files,
            server_log: &self.server_log(),
            customers: CUSTOMERS,
            orders: ORDERS,
            startup: self.startup,
        })
    }

    fn server_log(&self) -> PathBuf {
        self.cluster.log_file()
    }

    /// Stop the proxy (closing open sessions), stop PostgreSQL, remove the directory.
    pub async fn stop(self) -> anyhow::Result<()> {
        let Demo { proxy, cluster, .. } = self;
        proxy.stop().await;
        cluster.destroy().await?;
        Ok(())
    }
}

fn port_in_use(port: u16) -> String {
    format!(
        "cannot start the proxy on 127.0.0.1:{port} (another pgveil or pooler there? \
         choose a port with --port)"
    )
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP (terminal closed) all stop the demo.
struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<StopSignals> {
        let install = |kind: SignalKind| signal(kind).context("cannot install signal handlers");
        Ok(StopSignals {
            int: install(SignalKind::interrupt())?,
            term: install(SignalKind::terminate())?,
            hup: install(SignalKind::hangup())?,
        })
    }

    /// Wait for the next stop signal; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "Ctrl-C",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

#[cfg(test)]
mod tests;
