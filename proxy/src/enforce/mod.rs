//! Policy enforcement: the [`HookFactory`] that gives every session an [`Enforcer`].
//!
//! [`Enforcement`] holds what all sessions share: the active policy (swapped on reload),
//! the catalog cache, the `hash` mask key and the decision cache. Each session's
//! [`Enforcer`] resolves the user's role, tracks purpose / search_path / temp schema,
//! asks `pgveil_policy::decide` about every statement and turns the outcome into a
//! forward, rewrite or refusal.

pub mod cache;
pub mod reload;
pub mod scrub;
pub mod session;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use pgveil_policy::mask::MaskKey;
use pgveil_policy::model::Policy;

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
}

impl Enforcement {
    /// Enforcement with an already loaded policy.
    pub fn new(
        policy: Policy,
        policy_path: PathBuf,
        catalog: Arc<CatalogCache>,
        key: MaskKey,
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
        }
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<ActivePolicy> {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
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
            if self.enforcement.catalog.is_configured() {
                if let Err(e) = self.enforcement.catalog.get_or_load(&info.database).await {
                    tracing::warn!(database = %info.database, error = %e, "catalog unavailable");
                }
            }
            Ok(Box::new(Enforcer::new(self.enforcement.clone(), info)) as Box<dyn SessionHook>)
        })
    }
}
