//! Loading the policy file, and reloading it on change and on SIGHUP.
//!
//! The file is polled (content hash, once a second) rather than watched with inotify:
//! Kubernetes ConfigMap updates swap a symlink in the parent directory, editors replace
//! files by rename, and a poll sees all of them the same way. A valid new policy applies
//! to the next statement of every session; an invalid one is logged with every error
//! and the running policy stays in force.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pgveil_policy::load::{self, Loaded};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tracing::{error, info, warn};

use super::Enforcement;

/// A policy that could not be put in force.
#[derive(Debug, Error)]
pub enum PolicyLoadError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Read and validate a policy file.
pub fn load_file(path: &Path) -> Result<Loaded, PolicyLoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
        path: shown.clone(),
        source,
    })?;
    load::load(&shown, &text).map_err(|diags| PolicyLoadError::Invalid(diags.to_string()))
}

fn file_hash(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

/// Reload the policy now (SIGHUP, file change). Returns whether a new policy is in force.
pub fn reload(enforcement: &Enforcement) -> Result<(), PolicyLoadError> {
    match load_file(&enforcement.policy_path) {
        Ok(loaded) => {
            for w in loaded.warnings.iter() {
                warn!("{w}");
            }
            let sha = loaded.policy.sha256.clone();
            let active = enforcement.install(loaded.policy);
            info!(
                generation = active.generation,
                sha256 = %sha,
                "policy reloaded"
            );
            Ok(())
        }
        Err(e) => {
            error!("policy reload rejected; the running policy stays in force:\n{e}");
            Err(e)
        }
    }
}

/// Poll the policy file and reload when its content changes (run as a task).
pub async fn watch(enforcement: Arc<Enforcement>) {
    let path = enforcement.policy_path.clone();
    let mut last = file_hash(&path);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = file_hash(&path);
        if now.is_some() && now != last {
            last = now;
            let e = enforcement.clone();
            let ok = tokio::task::spawn_blocking(move || reload(&e).is_ok())
                .await
                .unwrap_or(false);
            if ok {
                enforcement.catalog.refresh_all().await;
            }
        }
    }
}
