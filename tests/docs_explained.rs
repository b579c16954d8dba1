//! Every complete policy example in docs/policy.md loads and is explained (decided)
//! against the demo schema for each of its roles: the documentation's policies must work
//! on the schema the demo and the docs describe, not just parse.

use pgveil_policy::decide::{decide, DenyReason, MaskKey, SessionFacts, Verdict};
use pgveil_policy::testing::sample_catalog;

fn toml_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_start().starts_with("```")) {
            (None, true) if line.trim_start().starts_with("```toml") => cur = Some(String::new()),
            (Some(_), true) => out.push(cur.take().unwrap_or_default()),
            (Some(block), false) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn policy_examples_decide_on_the_demo_schema() {
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policy.md"))
        .expect("read docs/policy.md");
    let catalog = sample_catalog();
    let key = MaskKey::new(b"docs-example-key");
    let path = vec!["\"$user\"".to_owned(), "public".to_owned()];
    let statements = [
        "SELECT id, name, phone FROM customers WHERE id = 1",
        "SELECT c.name, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT count(*) FROM orders",
    ];
    let mut explained = 0;
    for block in toml_blocks(&md)
        .into_iter()
        .filter(|b| b.starts_with("version = 1"))
    {
        let loaded = pgveil_policy::load::load("docs/policy.md", &block)
            .unwrap_or_else(|d| panic!("docs example does not load:\n{d}\n{block}"));
        let policy = loaded.policy;
        for role in policy.roles.values() {
            let user = role
                .users
                .first()
                .map(|u| u.text.replace('*', "x"))
                .unwrap_or_default();
            let purpose = role.purposes.first().map(String::as_str);
            let facts = SessionFacts {
                user: &user,
                role: Some(role),
                purpose,
                search_path: &path,
                temp_schema: None,
            };
            for sql in statements {
                let outcome = decide(&policy, &facts, &catalog, &key, sql);
                assert_eq!(outcome.statements.len(), 1, "{sql}");
                if let Verdict::Deny(d) = &outcome.verdict {
                    assert!(
                        !matches!(d.reason, DenyReason::Unparsable | DenyReason::Unsupported),
                        "role {}: {sql}: {}",
                        role.name,
                        d.message
                    );
                }
                explained += 1;
            }
        }
    }
    assert!(
        explained > 0,
        "no complete policy example found in docs/policy.md"
    );
}
