//! Micro benchmarks of `decide`: the per-statement cost the proxy pays on a decision
//! cache miss (target: < 20 µs median for each of these shapes).

use criterion::{criterion_group, criterion_main, Criterion};
use pgveil_policy::decide::{decide, MaskKey, SessionFacts, Verdict};
use pgveil_policy::testing::{sample_catalog, sample_policy};

fn bench_decide(c: &mut Criterion) {
    let policy = sample_policy();
    let catalog = sample_catalog();
    let key = MaskKey::new(b"bench-key");
    let path = vec!["\"$user\"".to_string(), "public".to_string()];
    let facts = SessionFacts {
        user: "support_app",
        role: policy.role_for_user("support_app"),
        purpose: Some("customer_service"),
        search_path: &path,
        temp_schema: None,
    };
    let cases = [
        ("point_select", "SELECT name, phone FROM customers c WHERE c.id = $1"),
        (
            "join_3_tables",
            "SELECT c.name, o.amount, p.title FROM customers c JOIN orders o ON o.customer_id = c.id \
             JOIN products p ON p.id = o.id WHERE c.id = $1 ORDER BY o.created_at DESC LIMIT 20",
        ),
        (
            "insert",
            "INSERT INTO orders (id, customer_id, amount, status) VALUES ($1, $2, $3, 'new')",
        ),
        (
            "update",
            "UPDATE orders SET status = $1, ship_phone = $2 WHERE id = $3",
        ),
    ];
    for (name, sql) in cases {
        let probe = decide(&policy, &facts, &catalog, &key, sql);
        assert!(
            !matches!(probe.verdict, Verdict::Deny(_)),
            "{name}: {:?}",
            probe.verdict
        );
        c.bench_function(name, |b| {
            b.iter(|| decide(&policy, &facts, &catalog, &key, std::hint::black_box(sql)))
        });
    }
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
