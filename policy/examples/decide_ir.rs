//! Runs `decide` on one of the benchmark statements a given number of times, for
//! instruction counting under callgrind (deterministic, unlike wall time on a shared
//! machine): `decide_ir <case> <n>`; the difference of two runs' totals divided by the
//! difference of their `n` is the cost of one decision. `decide_ir <case> <n> parse`
//! only tokenizes and parses (the part of a decision spent in sqlparser), and
//! `decide_ir <case> <n> time` prints the fastest wall time per decision over batches
//! of 1000 (a rough figure on a shared machine).

use pgveil_policy::decide::decide;
use pgveil_policy::testing::{Sample, OLTP_STATEMENTS};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "join_3_tables".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let Some((_, sql)) = OLTP_STATEMENTS.iter().find(|(c, _)| *c == name) else {
        eprintln!("unknown case {name}");
        std::process::exit(2);
    };
    let mode = args.next().unwrap_or_else(|| "decide".into());
    if mode == "parse" {
        for _ in 0..n {
            std::hint::black_box(parse(std::hint::black_box(sql)));
        }
        return;
    }
    let fx = Sample::default();
    let facts = fx.facts("support_app", Some("customer_service"));
    let first = decide(&fx.policy, &facts, &fx.catalog, &fx.key, sql);
    println!("{:?}", first.verdict);
    let run = || {
        std::hint::black_box(decide(
            &fx.policy,
            &facts,
            &fx.catalog,
            &fx.key,
            std::hint::black_box(sql),
        ));
    };
    if mode == "time" {
        let mut best = f64::INFINITY;
        for _ in 0..n.div_ceil(1000) {
            let start = std::time::Instant::now();
            for _ in 0..1000 {
                run();
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e6 / 1000.0);
        }
        println!("{name}: {best:.2} µs per decision (fastest batch)");
        return;
    }
    for _ in 0..n {
        run();
    }
}

/// Tokenizes and parses `sql` the way `decide` does.
fn parse(sql: &str) -> usize {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    use sqlparser::tokenizer::Tokenizer;
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return 0;
    };
    Parser::new(&PostgreSqlDialect {})
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_or(0, |s| s.len())
}
