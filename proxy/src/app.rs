//! Assembling a running proxy from its config: policy, catalog cache, mask key, hooks.
//!
//! Shared by `pgveil run`, `pgveil demo`, `pgveil explain` and the tests, so they all
//! enforce exactly the same way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use pgveil_policy::mask::MaskKey;

use crate::audit::{AuditConfig, AuditObserver, Auditor};
use crate::catalog::{CatalogCache, CatalogLogin};
use crate::config::Config;
use crate::enforce::{reload, Enforcement, PolicyHooks};
use crate::health::{spawn_probe, Check, Health};
use crate::hook::{HookFactory, PassThrough};
use crate::metrics::metrics;
use crate::upstream::Upstream;

/// What enforcement the config asks for.
pub struct Assembled {
    pub hooks: Arc<dyn HookFactory>,
    /// Present when a policy is configured.
    pub enforcement: Option<Arc<Enforcement>>,
    /// The audit stream (disabled when no sink is configured).
    pub auditor: Auditor,
}

/// Feeds audit pipeline events into the Prometheus metrics.
struct MetricsObserver;

impl AuditObserver for MetricsObserver {
    fn written(&self, sink: &str) {
        metrics().audit_written(sink);
    }
    fn written_many(&self, sink: &str, n: usize) {
        metrics().audit_written_n(sink, n);
    }
    fn failed(&self, sink: &str) {
        metrics().audit_failed(sink);
    }
    fn dropped(&self, n: u64) {
        metrics().audit_dropped(n);
    }
    fn queue_depth(&self, depth: usize) {
        metrics().audit_queue_depth(depth);
    }
}

/// Start the audit stream the config describes.
pub async fn auditor(cfg: &Config) -> anyhow::Result<Auditor> {
    let Some(table) = cfg.audit.clone() else {
        return Ok(Auditor::disabled());
    };
    let mut ac = AuditConfig::from_toml(table).context("[audit]")?;
    ac.resolve_paths(&cfg.base_dir);
    Auditor::start(&ac, Arc::new(MetricsObserver))
        .await
        .context("starting the audit stream")
}

/// The secret key of the `hash` mask, from the file or environment variable the config
/// names. Without one, a random per-process key is used (pseudonyms then change on
/// every restart), and a warning says so.
pub fn mask_key(cfg: &Config) -> anyhow::Result<MaskKey> {
    if let Some(path) = &cfg.masking.hash_key_file {
        let path = cfg.resolve(path);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("masking.hash_key_file: cannot read {}", path.display()))?;
        let trimmed = String::from_utf8_lossy(&bytes).trim().to_owned();
        if trimmed.len() < 16 {
            bail!(
                "masking.hash_key_file {}: the key must be at least 16 characters",
                path.display()
            );
        }
        return Ok(MaskKey::new(trimmed.as_bytes()));
    }
    if let Some(var) = &cfg.masking.hash_key_env {
        let value = std::env::var(var).with_context(|| {
            format!("masking.hash_key_env: environment variable {var} is not set")
        })?;
        if value.len() < 16 {
            bail!("masking.hash_key_env {var}: the key must be at least 16 characters");
        }
        return Ok(MaskKey::new(value.as_bytes()));
    }
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    if cfg.policy.is_some() {
        tracing::warn!(
            "no [masking] hash_key_file or hash_key_env: using a random key, so `hash` \
             pseudonyms change whenever pgveil restarts"
        );
    }
    Ok(MaskKey::new(&key))
}

fn catalog_login(cfg: &Config) -> anyhow::Result<Option<CatalogLogin>> {
    let Some(user) = &cfg.catalog.user else {
        return Ok(None);
    };
    let password = if let Some(var) = &cfg.catalog.password_env {
        Some(std::env::var(var).with_context(|| {
            format!("catalog.password_env: environment variable {var} is not set")
        })?)
    } else if let Some(path) = &cfg.catalog.password_file {
        let path = cfg.resolve(path);
        Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("catalog.password_file: cannot read {}", path.display()))?
                .trim()
                .to_owned(),
        )
    } else {
        None
    };
    Ok(Some(CatalogLogin {
        user: user.clone(),
        password,
    }))
}

/// The catalog cache the config describes.
pub fn catalog_cache(cfg: &Config) -> anyhow::Result<Arc<CatalogCache>> {
    let upstream = Upstream::new(&cfg.upstream, &cfg.base_dir)?;
    Ok(Arc::new(CatalogCache::new(
        upstream,
        catalog_login(cfg)?,
        Duration::from_secs(cfg.catalog.refresh_interval_s.max(1)),
    )))
}

/// Shown where a policy file name would be, for the built-in audit-only policy.
const AUDIT_ONLY_POLICY_NAME: &str = "(no policy: audit only)";

/// The policy of `pgveil run` without `policy` but with audit sinks: everyone is
/// unrestricted, so statements pass as they are and are audited.
const AUDIT_ONLY_POLICY: &str = r#"version = 1
[defaults]
unknown_users = "audit_only"
[roles.audit_only]
users = ["*"]
statements = ["all"]
tables = ["*"]
see = { default = "raw" }
"#;

/// Load the policy (if configured), start the audit stream and build the hooks (an
/// audit-only enforcer when there is no policy but there are audit sinks).
/// `spawn_tasks` starts the policy watcher and catalog refresher.
pub async fn assemble(cfg: &Config, spawn_tasks: bool) -> anyhow::Result<Assembled> {
    let auditor = auditor(cfg).await?;
    // Without a policy but with audit sinks every statement still gets its event,
    // through an enforcer whose one role is unrestricted (nothing refused or rewritten).
    let (policy, path, from_file) = match &cfg.policy {
        None if !auditor.is_enabled() => {
            return Ok(Assembled {
                hooks: Arc::new(PassThrough),
                enforcement: None,
                auditor,
            });
        }
        None => {
            let loaded = pgveil_policy::load::load(AUDIT_ONLY_POLICY_NAME, AUDIT_ONLY_POLICY)
                .map_err(|e| anyhow::anyhow!("built-in audit-only policy: {e}"))?;
            (loaded.policy, AUDIT_ONLY_POLICY_NAME.into(), false)
        }
        Some(policy_path) => {
            let path = cfg.resolve(policy_path);
            let loaded = reload::load_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
            for w in loaded.warnings.iter() {
                tracing::warn!("{w}");
            }
            metrics().policy_loaded(&loaded.policy.sha256);
            (loaded.policy, path, true)
        }
    };
    let catalog = catalog_cache(cfg)?;
    if from_file && !catalog.is_configured() {
        tracing::warn!(
            "no [catalog] user: restricted roles cannot resolve relations and will be refused; \
             configure a read-only catalog account"
        );
    }
    let enforcement = Arc::new(Enforcement::new(
        policy,
        path,
        catalog.clone(),
        mask_key(cfg)?,
        auditor.clone(),
    ));
    if spawn_tasks {
        if from_file {
            tokio::spawn(reload::watch(enforcement.clone()));
        }
        tokio::spawn(catalog.run_refresher());
    }
    Ok(Assembled {
        hooks: Arc::new(PolicyHooks {
            enforcement: enforcement.clone(),
        }),
        // The built-in policy has nothing to reload or report as a policy.
        enforcement: from_file.then_some(enforcement),
        auditor,
    })
}

/// Register readiness checks and keep them current: policy loaded, catalog readable,
/// audit sinks healthy, upstream accepting connections.
pub fn spawn_health_checks(
    health: &Arc<Health>,
    assembled: &Assembled,
    ctx: &Arc<crate::server::ProxyContext>,
) {
    let every = Duration::from_secs(5);
    health.register(Check::Upstream);
    let upstream = ctx.upstream.clone();
    spawn_probe(health.clone(), Check::Upstream, every, move || {
        let upstream = upstream.clone();
        async move {
            upstream
                .connect()
                .await
                .map(|_| format!("{} reachable", upstream.describe()))
        }
    });
    health.register(Check::Audit);
    let auditor = assembled.auditor.clone();
    spawn_probe(health.clone(), Check::Audit, every, move || {
        let auditor = auditor.clone();
        async move {
            if auditor.is_healthy() {
                Ok(format!("queue depth {}", auditor.queue_depth()))
            } else {
                Err(format!(
                    "failing sinks: {}",
                    auditor.failing_sinks().join(", ")
                ))
            }
        }
    });
    if let Some(enf) = &assembled.enforcement {
        health.register(Check::Policy);
        let e = enf.clone();
        spawn_probe(health.clone(), Check::Policy, every, move || {
            let active = e.current();
            async move {
                Ok::<_, String>(format!(
                    "generation {} sha256 {}",
                    active.generation, active.policy.sha256
                ))
            }
        });
        if enf.catalog.is_configured() {
            health.register(Check::Catalog);
            let e = enf.clone();
            spawn_probe(health.clone(), Check::Catalog, every, move || {
                let (n, unmatched) = e.catalog_status();
                async move {
                    metrics().unmatched_tags(unmatched.len());
                    if n == 0 {
                        // Snapshots load with the first session of each database; a
                        // fresh proxy must become ready without traffic.
                        Ok::<String, String>(
                            "no database cached yet (loaded on first session)".to_owned(),
                        )
                    } else if unmatched.is_empty() {
                        Ok(format!("{n} database(s) cached"))
                    } else {
                        Ok(format!(
                            "{n} database(s) cached; tags matching no column: {}",
                            unmatched.join(", ")
                        ))
                    }
                }
            });
        }
    }
}
