//! The command line: `pgveil run | check | explain | audit verify | demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{AuthMode, Config};
use crate::server::Server;

/// pgveil: a transparent PostgreSQL proxy that masks personal data, enforces least
/// privilege and audits every access.
#[derive(Debug, Parser)]
#[command(name = "pgveil", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        /// Proxy configuration file.
        #[arg(long, short, default_value = "pgveil.toml")]
        config: PathBuf,
    },
    /// Validate a policy file: print every error (exit 1) or a summary (exit 0).
    Check {
        /// The policy file.
        policy: PathBuf,
    },
    /// Show the role, the decision, the rewritten SQL and the access report for a statement.
    Explain {
        /// Proxy configuration file (its policy, masking key and catalog account are used).
        #[arg(long, short, default_value = "pgveil.toml")]
        config: PathBuf,
        /// The authenticated database user to decide for.
        #[arg(long, short)]
        user: String,
        /// The declared purpose, if any.
        #[arg(long)]
        purpose: Option<String>,
        /// Database whose catalog is read (default: the user name).
        #[arg(long, short)]
        database: Option<String>,
        /// A JSON catalog snapshot to use instead of reading the upstream catalog.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// search_path, comma separated (default: "$user", public).
        #[arg(long)]
        search_path: Option<String>,
        /// The SQL text.
        sql: String,
    },
    /// Start an embedded PostgreSQL with a sample `shop` database and pgveil in front of
    /// it, print how to connect as a support agent, an analyst and a DBA; Ctrl-C stops
    /// and removes everything.
    Demo {
        /// Port of the proxy on 127.0.0.1.
        #[arg(long, default_value_t = 6432)]
        port: u16,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `pgveil audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of audit files (rotated files are found next to a base path):
    /// prints OK with the count, or the first bad line; exit 1 on a broken chain.
    Verify {
        /// Audit files, oldest first, or one base path (`audit.jsonl`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Entry point of the `pgveil` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::Check { policy } => check(&policy),
        Command::Demo { port } => demo(port),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => {
            let (ok, text) = crate::audit::cli_verify(&files);
            if ok {
                println!("{text}");
                ExitCode::SUCCESS
            } else {
                eprintln!("{text}");
                ExitCode::FAILURE
            }
        }
        Command::Explain {
            config,
            user,
            purpose,
            database,
            catalog,
            search_path,
            sql,
        } => match crate::explain::run(crate::explain::ExplainArgs {
            config,
            user,
            purpose,
            database,
            catalog,
            search_path,
            sql,
        }) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pgveil explain: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The tokio runtime of `run` and `demo` with `workers` threads (None: reported on
/// stderr). `TOKIO_WORKER_THREADS` in the environment still overrides it. One worker is
/// a current-thread runtime: every task runs on the thread that accepts, so a wake-up
/// never crosses threads and the scheduler does no work-stealing bookkeeping.
fn runtime(workers: usize) -> Option<tokio::runtime::Runtime> {
    let from_env = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    let mut builder = if workers <= 1 && !from_env {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if !from_env && workers > 1 {
        builder.worker_threads(workers);
    }
    match builder.enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("pgveil: cannot start the async runtime: {e}");
            None
        }
    }
}

fn demo(port: u16) -> ExitCode {
    if let Err(e) = crate::logging::init(crate::logging::LogFormat::Text, "warn") {
        eprintln!("pgveil: logging: {e}");
    }
    let Some(runtime) = runtime(1) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(crate::demo::run(crate::demo::DemoOptions {
        port,
        hooks: None,
    })) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgveil demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pgveil check: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let (ok, report) = pgveil_policy::check::check(&path.display().to_string(), &text);
    if ok {
        print!("{report}");
        if !report.ends_with('\n') {
            println!();
        }
        ExitCode::SUCCESS
    } else {
        eprint!("{report}");
        if !report.ends_with('\n') {
            eprintln!();
        }
        ExitCode::FAILURE
    }
}

fn run(path: PathBuf) -> ExitCode {
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgveil: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&cfg);
    let Some(runtime) = runtime(cfg.limits.worker_threads) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgveil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &Config) {
    if let Err(e) = crate::logging::init(cfg.log.format, &cfg.log.level) {
        eprintln!("pgveil: logging: {e}");
    }
}

/// Warnings about configurations that work but have known limits.
pub fn startup_warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if cfg.auth.mode == AuthMode::Passthrough
        && cfg.tls.is_some()
        && cfg.upstream.tls.may_use_tls()
        && cfg.upstream.socket_dir.is_none()
    {
        w.push(
            "auth.mode = \"passthrough\" with TLS on both legs: clients that use TLS to pgveil \
             and support channel binding (libpq >= 11) send SCRAM gs2 flag 'y', which a TLS \
             PostgreSQL server rejects; SCRAM users fail to log in. Use upstream.tls = \"disable\" \
             (e.g. on a private network or Unix socket), md5/password auth upstream, or \
             auth.mode = \"scram\"."
                .to_owned(),
        );
    }
    let scram_keys = &cfg.auth.scram;
    if cfg.auth.mode == AuthMode::Passthrough
        && (scram_keys.lookup_user.is_some() || scram_keys.auth_file.is_some())
    {
        w.push(
            "auth.lookup_user / auth.auth_file are set but auth.mode = \"passthrough\": they are \
             ignored; set auth.mode = \"scram\" to use them."
                .to_owned(),
        );
    }
    if cfg.auth.mode == AuthMode::Scram && cfg.tls.is_none() {
        w.push(
            "auth.mode = \"scram\" without [tls]: clients connect in plaintext, so \
             SCRAM-SHA-256-PLUS (channel binding) is not offered."
                .to_owned(),
        );
    }
    w
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    for warning in startup_warnings(&cfg) {
        tracing::warn!("{warning}");
    }
    let assembled = crate::app::assemble(&cfg, true).await?;
    let server =
        Server::bind_with_audit(&cfg, assembled.hooks.clone(), assembled.auditor.clone()).await?;
    let ctx = server.context();
    let health = Arc::new(crate::health::Health::new());
    let metrics_task = match cfg.metrics.listen {
        Some(addr) => {
            let http = crate::health::HealthServer::bind(addr, health.clone()).await?;
            crate::app::spawn_health_checks(&health, &assembled, &ctx);
            let mut deadline = ctx.shutdown.subscribe_deadline();
            Some(tokio::spawn(async move {
                if let Err(e) = http.run(async move { deadline.wait().await }).await {
                    tracing::error!(error = %e, "metrics endpoint failed");
                }
            }))
        }
        None => None,
    };
    tracing::info!(
        listen = %server.local_addr(),
        upstream = %ctx.upstream.describe(),
        policy = cfg.policy.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none (transparent)".into()),
        "pgveil listening"
    );
    let signals = tokio::spawn(handle_signals(
        ctx.clone(),
        assembled.enforcement.clone(),
        health.clone(),
    ));
    server.run().await;
    signals.abort();
    let grace = cfg.limits.shutdown_grace();
    if tokio::time::timeout(grace, assembled.auditor.shutdown())
        .await
        .is_err()
    {
        tracing::error!("audit stream did not drain within the grace period");
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    tracing::info!("pgveil stopped");
    Ok(())
}

async fn handle_signals(
    ctx: Arc<crate::server::ProxyContext>,
    enforcement: Option<Arc<crate::enforce::Enforcement>>,
    health: Arc<crate::health::Health>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: shutting down gracefully");
                health.begin_shutdown();
                ctx.shutdown.stop_accepting();
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: shutting down gracefully");
                health.begin_shutdown();
                ctx.shutdown.stop_accepting();
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                if let Some(e) = &enforcement {
                    let e = e.clone();
                    let ok = tokio::task::spawn_blocking(move || crate::enforce::reload::reload(&e).is_ok())
                        .await
                        .unwrap_or(false);
                    if ok {
                        if let Some(e) = &enforcement {
                            e.catalog.refresh_all().await;
                        }
                    }
                }
                if let Some(tls) = &ctx.tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("client TLS certificate reloaded"),
                        Err(e) => tracing::error!(error = %e, "client TLS reload failed; keeping the old certificate"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn warnings(text: &str) -> Vec<String> {
        let cfg = Config::parse(text, Path::new("pgveil.toml"), Path::new("/etc/pgveil"))
            .expect("valid config");
        startup_warnings(&cfg)
    }

    #[test]
    fn auth_warnings_follow_the_mode() {
        let both_legs = "listen = \"127.0.0.1:6432\"\n[upstream]\ntls = \"require\"\n\
                         [tls]\ncert = \"c\"\nkey = \"k\"\n";
        let w = warnings(both_legs);
        assert!(w.len() == 1 && w[0].contains("passthrough"), "{w:?}");
        let scram = format!("{both_legs}[auth]\nmode = \"scram\"\nauth_file = \"u\"\n");
        assert!(
            warnings(&scram).is_empty(),
            "scram mode has no relay problem"
        );
        let w = warnings(
            "listen = \"127.0.0.1:6432\"\n[upstream]\ntls = \"disable\"\n\
             [auth]\nmode = \"scram\"\nauth_file = \"u\"\n",
        );
        assert!(w.len() == 1 && w[0].contains("SCRAM-SHA-256-PLUS"), "{w:?}");
        let w = warnings(
            "listen = \"127.0.0.1:6432\"\n[upstream]\ntls = \"disable\"\n\
             [auth]\nlookup_user = \"x\"\n",
        );
        assert!(w.len() == 1 && w[0].contains("ignored"), "{w:?}");
    }
}
