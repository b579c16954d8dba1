//! Runs `decide` on one of the benchmark statements a given number of times, for
//! instruction counting under callgrind (deterministic, unlike wall time on a shared
//! machine): `decide_ir <case> <n>`; the difference of two runs' totals divided by the
//! difference of their `n` is the cost of one decision.

use pgveil_policy::decide::decide;
use pgveil_policy::testing::Sample;

/// The statements of `benches/policy.rs`, by the same names.
const CASES: [(&str, &str); 4] = [
    (
        "point_select",
        "SELECT name, phone FROM customers c WHERE c.id = $1",
    ),
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

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "join_3_tables".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let Some((_, sql)) = CASES.iter().find(|(c, _)| *c == name) else {
        eprintln!("unknown case {name}");
        std::process::exit(2);
    };
    let fx = Sample::default();
    let facts = fx.facts("support_app", Some("customer_service"));
    let first = decide(&fx.policy, &facts, &fx.catalog, &fx.key, sql);
    println!("{:?}", first.verdict);
    for _ in 0..n {
        std::hint::black_box(decide(
            &fx.policy,
            &facts,
            &fx.catalog,
            &fx.key,
            std::hint::black_box(sql),
        ));
    }
}
