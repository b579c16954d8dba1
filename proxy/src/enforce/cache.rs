//! The decision cache: outcomes keyed by (policy generation, catalog version, role,
//! purpose, search_path, temp schema, SQL text), bounded in memory.
//!
//! Most applications send the same few statement texts over and over (pgbench's point
//! select, an ORM's prepared statements), so the analysis runs once per shape and the
//! hot path is one hash and one map lookup.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use pgveil_policy::decide::Outcome;

/// One cached outcome with the exact key it was computed for.
struct Entry {
    context: u64,
    sql: Box<str>,
    outcome: Arc<Outcome>,
}

/// Bounded map from statement key to outcome.
pub struct DecisionCache {
    map: DashMap<u64, Entry>,
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

fn key(context: u64, sql: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    context.hash(&mut h);
    sql.hash(&mut h);
    h.finish()
}

impl DecisionCache {
    /// A cache holding at most `capacity` outcomes.
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            map: DashMap::new(),
            capacity: capacity.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached outcome for (`context`, `sql`), or compute and cache it.
    pub fn get_or_insert_with(
        &self,
        context: u64,
        sql: &str,
        compute: impl FnOnce() -> Outcome,
    ) -> (Arc<Outcome>, bool) {
        let k = key(context, sql);
        if let Some(e) = self.map.get(&k) {
            if e.context == context && &*e.sql == sql {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return (e.outcome.clone(), true);
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let outcome = Arc::new(compute());
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
                outcome: outcome.clone(),
            },
        );
        (outcome, false)
    }

    /// Forget everything (policy reload).
    pub fn clear(&self) {
        self.map.clear();
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Number of cached outcomes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgveil_policy::decide::Verdict;

    fn outcome() -> Outcome {
        Outcome {
            verdict: Verdict::Allow,
            statements: Vec::new(),
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
        assert_eq!(c.stats(), (1, 2));
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
