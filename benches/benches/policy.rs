//! Micro benchmarks of `decide`: the per-statement cost the proxy pays on a decision
//! cache miss (target: < 20 µs median for each of these shapes), and of the proxy's
//! decision cache hit, the path every repeated statement takes (target: < 1 µs), and of
//! a shape hit, the path of a repeated statement whose constants change.

use criterion::{criterion_group, criterion_main, Criterion};

/// The allocator the `pgveil` binary runs with, so that the figures are the proxy's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use pgveil_policy::decide::{decide, SessionFacts, Verdict};
use pgveil_policy::testing::{Sample, OLTP_STATEMENTS};

/// The sample policy and demo catalog, decided for a support agent.
struct Fixture(Sample);

impl Fixture {
    fn new() -> Fixture {
        Fixture(Sample::default())
    }

    fn facts(&self) -> SessionFacts<'_> {
        self.0.facts("support_app", Some("customer_service"))
    }
}

fn bench_decide(c: &mut Criterion) {
    let fx = Fixture::new();
    let (policy, catalog, key) = (&fx.0.policy, &fx.0.catalog, &fx.0.key);
    let facts = fx.facts();
    for (name, sql) in OLTP_STATEMENTS {
        let probe = decide(policy, &facts, catalog, key, sql);
        assert!(
            !matches!(probe.verdict, Verdict::Deny(_)),
            "{name}: {:?}",
            probe.verdict
        );
        c.bench_function(name, |b| {
            b.iter(|| decide(policy, &facts, catalog, key, std::hint::black_box(sql)))
        });
    }
}

fn bench_cache_hit(c: &mut Criterion) {
    use pgveil::enforce::cache::{context_hash, DecisionCache};
    let fx = Fixture::new();
    let (policy, catalog, key) = (&fx.0.policy, &fx.0.catalog, &fx.0.key);
    let facts = fx.facts();
    let sql = "SELECT name, phone FROM customers c WHERE c.id = $1";
    let cache = DecisionCache::new(50_000);
    let context = context_hash(1, 1, "support", Some("customer_service"), &fx.0.path, None);
    cache.get_or_insert_with(context, sql, || decide(policy, &facts, catalog, key, sql));
    c.bench_function("decision_cache_hit", |b| {
        b.iter(|| {
            cache.get_or_insert_with(context, std::hint::black_box(sql), || {
                unreachable!("the benchmark only measures hits")
            })
        })
    });
}

/// A simple-protocol statement whose constant changes every call: the exact-text cache
/// misses, the shape's template answers (scan, lookup, splice the constant in).
fn bench_shape_hit(c: &mut Criterion) {
    use pgveil::enforce::cache::{context_hash, DecisionCache};
    use pgveil_policy::shape::{learn, Shape};
    let fx = Fixture::new();
    let (policy, catalog, key) = (&fx.0.policy, &fx.0.catalog, &fx.0.key);
    let facts = fx.facts();
    let cache = DecisionCache::new(50_000);
    let context = context_hash(1, 1, "support", Some("customer_service"), &fx.0.path, None);
    let texts: Vec<String> = (0..1024)
        .map(|i| {
            format!(
                "SELECT name, phone FROM customers c WHERE c.id = {}",
                1000 + i
            )
        })
        .collect();
    let first = Shape::of(&texts[0]).expect("has a constant");
    let (_, template) = learn(policy, &facts, catalog, key, &first);
    assert!(template.is_some(), "the point select must be templated");
    cache.get_or_decide(
        context,
        &texts[0],
        || unreachable!("the point select has a shape"),
        |shape| learn(policy, &facts, catalog, key, shape),
    );
    let mut i = 0;
    c.bench_function("decision_shape_hit", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            cache
                .get_or_decide(
                    context,
                    std::hint::black_box(texts[i].as_str()),
                    || unreachable!("the benchmark only measures hits"),
                    |_| unreachable!("the benchmark only measures hits"),
                )
                .0
        })
    });
}

criterion_group!(benches, bench_decide, bench_cache_hit, bench_shape_hit);
criterion_main!(benches);
