//! Assembling a running proxy from its config: policy, catalog cache, mask key, hooks.
//!
//! Shared by `pgveil run`, `pgveil demo`, `pgveil explain` and the tests, so they all
//! enforce exactly the same way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use pgveil_policy::mask::MaskKey;

use crate::catalog::{CatalogCache, CatalogLogin};
use crate::config::Config;
use crate::enforce::{reload, Enforcement, PolicyHooks};
use crate::hook::{HookFactory, PassThrough};
use crate::upstream::Upstream;

/// What enforcement the config asks for.
pub struct Assembled {
    pub hooks: Arc<dyn HookFactory>,
    /// Present when a policy is configured.
    pub enforcement: Option<Arc<Enforcement>>,
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

/// Load the policy (if configured) and build the hooks. Must run inside a tokio runtime
/// when `spawn_tasks` is set (policy watcher, catalog refresher).
pub fn assemble(cfg: &Config, spawn_tasks: bool) -> anyhow::Result<Assembled> {
    let Some(policy_path) = &cfg.policy else {
        return Ok(Assembled {
            hooks: Arc::new(PassThrough),
            enforcement: None,
        });
    };
    let path = cfg.resolve(policy_path);
    let loaded = reload::load_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in loaded.warnings.iter() {
        tracing::warn!("{w}");
    }
    let catalog = catalog_cache(cfg)?;
    if !catalog.is_configured() {
        tracing::warn!(
            "no [catalog] user: restricted roles cannot resolve relations and will be refused; \
             configure a read-only catalog account"
        );
    }
    let enforcement = Arc::new(Enforcement::new(
        loaded.policy,
        path,
        catalog.clone(),
        mask_key(cfg)?,
    ));
    if spawn_tasks {
        tokio::spawn(reload::watch(enforcement.clone()));
        tokio::spawn(catalog.run_refresher());
    }
    Ok(Assembled {
        hooks: Arc::new(PolicyHooks {
            enforcement: enforcement.clone(),
        }),
        enforcement: Some(enforcement),
    })
}
