//! The decision cache: outcomes keyed by (policy generation, catalog version, role,
//! user, purpose, search_path, temp schema, SQL text), bounded in memory.
//!
//! Most applications send the same few statement texts over and over (pgbench's point
//! select, an ORM's prepared statements), so the analysis runs once per shape and the
//! hot path is one hash and one map lookup. Texts that differ only in numeric constants
//! (simple-protocol clients inline their values) share one entry keyed by their
//! [`Shape`]: a [`Template`] re-instantiated for the new constants, without parsing.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use foldhash::fast::RandomState;
use pgveil_policy::decide::Outcome;
use pgveil_policy::shape::{Shape, Template};

/// One cached outcome with the exact key it was computed for.
struct Entry {
    context: u64,
    sql: Box<str>,
    outcome: Arc<Outcome>,
}

/// One learnt shape: its template, or `None` when the decision depends on the values
/// (those texts are cached by exact text instead).
struct ShapeEntry {
    context: u64,
    key: Box<str>,
    template: Option<Arc<Template>>,
}

/// Bounded maps from statement key (exact text or shape) to outcome.
pub struct DecisionCache {
    map: DashMap<u64, Entry, RandomState>,
    shapes: DashMap<u64, ShapeEntry, RandomState>,
    /// Hashes (context, text) into the maps' keys: seeded per process, and fast on the
    /// hot path (entries hold their full key, so a collision is only a miss).
    hasher: RandomState,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Hash of everything in the key except the SQL text; sessions compute it once per
/// change of their context.
pub fn context_hash(
    generation: u64,
    catalog_version: u64,
    role: &str,
    purpose: Option<&str>,
    search_path: &[String],
    temp_schema: Option<&str>,
) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        generation,
        catalog_version,
        role,
        purpose,
        search_path,
        temp_schema,
    )
        .hash(&mut h);
    h.finish()
}

/// `context` (from [`context_hash`]) narrowed to one authenticated user: a decision
/// depends on the user and not only on the role, since `"$user"` in search_path names
/// the user's own schema (two users of one role can resolve `customers` to different
/// relations, so one's allowed read must not answer the other's).
pub fn user_context(context: u64, user: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (context, user).hash(&mut h);
    h.finish()
}

impl DecisionCache {
    /// A cache holding at most `capacity` outcomes.
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            map: DashMap::with_hasher(RandomState::default()),
            shapes: DashMap::with_hasher(RandomState::default()),
            hasher: RandomState::default(),
            capacity: capacity.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn key(&self, context: u64, sql: &str) -> u64 {
        self.hasher.hash_one((context, sql))
    }

    fn get_exact(&self, k: u64, context: u64, sql: &str) -> Option<Arc<Outcome>> {
        let e = self.map.get(&k)?;
        if e.context == context && &*e.sql == sql {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(e.outcome.clone());
        }
        None
    }

    /// The cached outcome for (`context`, `sql`) by exact text, or compute and cache it.
    pub fn get_or_insert_with(
        &self,
        context: u64,
        sql: &str,
        compute: impl FnOnce() -> Outcome,
    ) -> (Arc<Outcome>, bool) {
        let k = self.key(context, sql);
        match self.get_exact(k, context, sql) {
            Some(outcome) => (outcome, true),
            None => self.insert_computed(k, context, sql, compute),
        }
    }

    /// The outcome for (`context`, `sql`), and whether it was cached: by exact text
    /// (prepared statements, constant-free texts), else from the template of the text's
    /// [`Shape`], else computed. A new shape is `learn`t (an outcome, plus a template
    /// when the decision holds for any values of its constants); a text whose shape has
    /// no template, or that has no shape, is `decide`d and cached by exact text. The
    /// template that answered (or was learnt), if any, comes back for the session to
    /// match its next texts against (see [`Template::matches`]).
    pub fn get_or_decide(
        &self,
        context: u64,
        sql: &str,
        decide: impl FnOnce() -> Outcome,
        learn: impl FnOnce(&Shape) -> (Arc<Outcome>, Option<Arc<Template>>),
    ) -> (Arc<Outcome>, bool, Option<Arc<Template>>) {
        let k = self.key(context, sql);
        if let Some(outcome) = self.get_exact(k, context, sql) {
            return (outcome, true, None);
        }
        let Some(shape) = Shape::of(sql) else {
            let (outcome, hit) = self.insert_computed(k, context, sql, decide);
            return (outcome, hit, None);
        };
        let sk = self.key(context, shape.key());
        let known = match self.shapes.get(&sk) {
            Some(e) if e.context == context && &*e.key == shape.key() => Some(e.template.clone()),
            _ => None,
        };
        match known {
            Some(Some(template)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                (template.instantiate(&shape), true, Some(template))
            }
            Some(None) => {
                let (outcome, hit) = self.insert_computed(k, context, sql, decide);
                (outcome, hit, None)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let (outcome, template) = learn(&shape);
                if template.is_none() {
                    self.insert_exact(k, context, sql, outcome.clone());
                }
                if self.shapes.len() >= self.capacity {
                    self.shapes.clear();
                }
                self.shapes.insert(
                    sk,
                    ShapeEntry {
                        context,
                        key: shape.key().into(),
                        template: template.clone(),
                    },
                );
                (outcome, false, template)
            }
        }
    }

    /// A miss by exact text: compute, cache, return.
    fn insert_computed(
        &self,
        k: u64,
        context: u64,
        sql: &str,
        compute: impl FnOnce() -> Outcome,
    ) -> (Arc<Outcome>, bool) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let outcome = Arc::new(compute());
        self.insert_exact(k, context, sql, outcome.clone());
        (outcome, false)
    }

    fn insert_exact(&self, k: u64, context: u64, sql: &str, outcome: Arc<Outcome>) {
        if self.map.len() >= self.capacity {
            // Crude but bounded: start over. Workloads with more distinct statements
            // than the capacity would thrash any policy; this one stays O(1).
            self.map.clear();
        }
        self.map.insert(
            k,
            Entry {
                context,
                sql: sql.into(),
                outcome,
            },
        );
    }

    /// Forget everything (policy reload).
    pub fn clear(&self) {
        self.map.clear();
        self.shapes.clear();
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Number of cached outcomes and shapes.
    pub fn len(&self) -> usize {
        self.map.len() + self.shapes.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.shapes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgveil_policy::decide::Verdict;

    fn outcome() -> Outcome {
        Outcome {
            verdict: Verdict::Allow,
            statements: Vec::new().into(),
            row_masks: None,
        }
    }

    #[test]
    fn hits_only_on_the_exact_key() {
        let c = DecisionCache::new(10);
        let ctx = context_hash(1, 1, "r", None, &["public".into()], None);
        let (_, hit) = c.get_or_insert_with(ctx, "SELECT 1", outcome);
        assert!(!hit);
        let (_, hit) = c.get_or_insert_with(ctx, "SELECT 1", || unreachable!());
        assert!(hit);
        let other = context_hash(2, 1, "r", None, &["public".into()], None);
        let (_, hit) = c.get_or_insert_with(other, "SELECT 1", outcome);
        assert!(!hit);
        let (_, hit) = c.get_or_insert_with(user_context(ctx, "u2"), "SELECT 1", outcome);
        assert!(!hit, "another user of the role has another key");
        assert_ne!(user_context(ctx, "u1"), user_context(ctx, "u2"));
        assert_eq!(c.stats(), (1, 3));
    }

    #[test]
    fn shapes_answer_other_constants_without_deciding() {
        let sample = pgveil_policy::testing::Sample::default();
        let (policy, catalog, key) = (&sample.policy, &sample.catalog, &sample.key);
        let facts = sample.facts("support_app", Some("customer_service"));
        let c = DecisionCache::new(10);
        let lookup = |sql: &str| {
            c.get_or_decide(
                7,
                sql,
                || pgveil_policy::decide::decide(policy, &facts, catalog, key, sql),
                |shape| pgveil_policy::shape::learn(policy, &facts, catalog, key, shape),
            )
        };
        let (first, hit, _) = lookup("SELECT phone FROM customers WHERE id = 1");
        assert!(!hit);
        let (second, hit, template) = lookup("SELECT phone FROM customers WHERE id = 2024");
        assert!(hit);
        let mut constants = Vec::new();
        let template = template.expect("the shape's template");
        assert!(template.matches("SELECT phone FROM customers WHERE id = 5", &mut constants));
        let text = |o: &Outcome| match &o.verdict {
            Verdict::Rewrite(t) => t.clone(),
            other => panic!("expected a rewrite, got {other:?}"),
        };
        assert!(text(&first).ends_with("WHERE id = 1"));
        assert!(text(&second).ends_with("WHERE id = 2024"));
        assert_eq!(
            *second,
            pgveil_policy::decide::decide(
                policy,
                &facts,
                catalog,
                key,
                "SELECT phone FROM customers WHERE id = 2024"
            )
        );
        // A value-dependent shape is cached by exact text: same text hits, other misses.
        let denied = "SELECT bank_card FROM customers WHERE id = 1";
        assert!(!lookup(denied).1);
        assert!(lookup(denied).1);
        assert!(!lookup("SELECT bank_card FROM customers WHERE id = 2").1);
    }

    #[test]
    fn stays_bounded() {
        let c = DecisionCache::new(5);
        for i in 0..100 {
            c.get_or_insert_with(1, &format!("SELECT {i}"), outcome);
        }
        assert!(c.len() <= 5);
    }
}
