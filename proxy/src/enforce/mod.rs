//! Policy enforcement: the [`HookFactory`] that gives every session an [`Enforcer`].
//!
//! [`Enforcement`] holds what all sessions share: the active policy (swapped on reload),
//! the catalog cache, the `hash` mask key and the decision cache. Each session's
//! [`Enforcer`] resolves the user's role, tracks purpose / search_path / temp schema,
//! asks `pgveil_policy::decide` about every statement and turns the outcome into a
//! forward, rewrite or refusal.

mod audit_json;
pub mod cache;
pub mod reload;
pub mod scrub;
pub mod session;
mod statements;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use pgveil_policy::mask::MaskKey;
use pgveil_policy::model::Policy;

use crate::audit::Auditor;
use crate::catalog::CatalogCache;
use crate::hook::{HookFactory, OpenFuture, SessionHook, SessionInfo};
use crate::wire::messages::error::ProxyError;

pub use cache::DecisionCache;
pub use session::Enforcer;

/// A loaded policy and the reload generation it belongs to.
#[derive(Debug)]
pub struct ActivePolicy {
    pub policy: Policy,
    /// Increases with every successful reload (part of the decision cache key).
    pub generation: u64,
    /// The file it came from, for messages and hints.
    pub file: String,
}

/// What every session's enforcer shares.
pub struct Enforcement {
    current: RwLock<Arc<ActivePolicy>>,
    generation: AtomicU64,
    /// Where the policy is read from (for reloads).
    pub policy_path: PathBuf,
    pub catalog: Arc<CatalogCache>,
    pub key: MaskKey,
    pub decisions: DecisionCache,
    /// Where statement events go.
    pub auditor: Auditor,
}

impl Enforcement {
    /// Enforcement with an already loaded policy.
    pub fn new(
        policy: Policy,
        policy_path: PathBuf,
        catalog: Arc<CatalogCache>,
        key: MaskKey,
        auditor: Auditor,
    ) -> Enforcement {
        let file = policy_path.display().to_string();
        Enforcement {
            current: RwLock::new(Arc::new(ActivePolicy {
                policy,
                generation: 1,
                file,
            })),
            generation: AtomicU64::new(1),
            policy_path,
            catalog,
            key,
            decisions: DecisionCache::new(50_000),
            auditor,
        }
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<ActivePolicy> {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The generation of the newest policy (cheap: lets a session skip [`Self::current`]
    /// while it has that policy).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Put a new policy in force for the next statement of every session.
    pub fn install(&self, policy: Policy) -> Arc<ActivePolicy> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let active = Arc::new(ActivePolicy {
            policy,
            generation,
            file: self.policy_path.display().to_string(),
        });
        match self.current.write() {
            Ok(mut cur) => *cur = active.clone(),
            Err(poisoned) => *poisoned.into_inner() = active.clone(),
        }
        self.decisions.clear();
        active
    }
}

impl Enforcement {
    /// (databases cached, tags of the policy that match no column in any cached
    /// database): tags are names, so a typo or a renamed column shows here.
    pub fn catalog_status(&self) -> (usize, Vec<String>) {
        let snapshots = self.catalog.snapshots();
        if snapshots.is_empty() {
            return (0, Vec::new());
        }
        let active = self.current();
        let mut unmatched: Option<Vec<String>> = None;
        for snap in &snapshots {
            let tags = pgveil_policy::load::unmatched_tags(&active.policy, snap.columns());
            unmatched = Some(match unmatched {
                None => tags,
                Some(prev) => prev.into_iter().filter(|t| tags.contains(t)).collect(),
            });
        }
        (snapshots.len(), unmatched.unwrap_or_default())
    }
}

/// A startup parameter (or `options` -c setting) that would change identity or how
/// the server reads SQL text, which restricted roles may not set.
fn forbidden_startup_setting(params: &[(String, String)]) -> Option<String> {
    const FORBIDDEN: &[&str] = &["role", "session_authorization"];
    let bad_value = |name: &str, value: &str| -> bool {
        let name = name.to_ascii_lowercase().replace('-', "_");
        FORBIDDEN.contains(&name.as_str())
            || (name == "client_encoding"
                && !value.eq_ignore_ascii_case("utf8")
                && !value.eq_ignore_ascii_case("utf-8")
                && !value.eq_ignore_ascii_case("unicode"))
            || (name == "standard_conforming_strings" && !value.eq_ignore_ascii_case("on"))
    };
    session::startup_settings(params)
        .into_iter()
        .find(|(name, value)| bad_value(name, value))
        .map(|(name, _)| name)
}

/// The hook factory that enforces the policy.
#[derive(Clone)]
pub struct PolicyHooks {
    pub enforcement: Arc<Enforcement>,
}

impl HookFactory for PolicyHooks {
    fn open<'a>(&'a self, info: &'a SessionInfo) -> OpenFuture<'a> {
        Box::pin(async move {
            let active = self.enforcement.current();
            if active.policy.role_for_user(&info.user).is_none() {
                tracing::info!(user = %info.user, "refusing session: user matches no role");
                return Err(ProxyError::fatal(
                    "28000",
                    format!(
                        "pgveil: user \"{}\" is not allowed by the access policy",
                        info.user
                    ),
                )
                .with_hint(format!(
                    "add the user to a role's `users` in {} or set [defaults] unknown_users",
                    active.file
                )));
            }
            let restricted = active
                .policy
                .role_for_user(&info.user)
                .is_none_or(|r| r.is_restricted(&active.policy));
            if restricted {
                if let Some(setting) = forbidden_startup_setting(&info.startup_params) {
                    return Err(ProxyError::fatal(
                        "42501",
                        format!("pgveil: setting {setting} at connection start is not allowed for this role"),
                    ));
                }
            }
            if self.enforcement.catalog.is_configured() {
                if let Err(e) = self.enforcement.catalog.get_or_load(&info.database).await {
                    tracing::warn!(database = %info.database, error = %e, "catalog unavailable");
                }
            }
            Ok(Box::new(Enforcer::new(self.enforcement.clone(), info)) as Box<dyn SessionHook>)
        })
    }
}
