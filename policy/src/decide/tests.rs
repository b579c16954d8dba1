//! Table-driven tests of `decide` over the demo schema, plus a checker that re-parses
//! every forwarded text and proves no protected relation is read outside a pgveil
//! derived table, and a proptest over a small query grammar.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    CopySource, Expr, SelectItem, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::*;
use crate::analyze::fold;
use crate::catalog::{Catalog, StaticCatalog};
use crate::model::Policy;
use crate::rewrite::DERIVED_MARK;
use crate::testing::{rewrite_cases, sample_catalog, sample_policy};

struct Env {
    policy: Policy,
    catalog: StaticCatalog,
    key: MaskKey,
    path: Vec<String>,
}

fn env() -> Env {
    Env {
        policy: sample_policy(),
        catalog: sample_catalog(),
        key: MaskKey::new(b"test-key"),
        path: vec!["\"$user\"".into(), "public".into()],
    }
}

impl Env {
    fn run(&self, user: &str, purpose: Option<&str>, sql: &str) -> Outcome {
        let facts = SessionFacts {
            user,
            role: self.policy.role_for_user(user),
            purpose,
            search_path: &self.path,
            temp_schema: Some("pg_temp_3"),
        };
        decide(&self.policy, &facts, &self.catalog, &self.key, sql)
    }
}

const CS: Option<&str> = Some("customer_service");

fn sup(sql: &str) -> Outcome {
    env().run("support_app", CS, sql)
}
fn bi(sql: &str) -> Outcome {
    env().run("bi", None, sql)
}
fn ops(sql: &str) -> Outcome {
    env().run("ops", None, sql)
}

#[track_caller]
fn denied(o: &Outcome, reason: DenyReason) -> Denial {
    match &o.verdict {
        Verdict::Deny(d) => {
            assert_eq!(d.reason, reason, "wrong reason: {d:?}");
            assert!(d.sqlstate == "42501" || d.sqlstate == "42P01");
            d.clone()
        }
        other => panic!("expected deny ({reason:?}), got {other:?}"),
    }
}

#[track_caller]
fn rewritten(o: &Outcome, user: &str) -> String {
    match &o.verdict {
        Verdict::Rewrite(t) => {
            check_forwarded(t, user);
            t.clone()
        }
        other => panic!("expected rewrite, got {other:?}"),
    }
}

/// Allowed: forwarded as written, or with names only pinned to their schemas.
#[track_caller]
fn allowed(o: &Outcome) {
    match &o.verdict {
        Verdict::Allow => {}
        Verdict::Rewrite(t) => assert!(!t.contains(DERIVED_MARK), "{t}"),
        Verdict::Deny(d) => panic!("expected allow, got {d:?}"),
    }
    assert!(
        o.statements.iter().all(|s| s.decision == Decision::Allow),
        "{:?}",
        o.statements
    );
}

/// Relations (schema, name) that the role must never read directly.
fn protected_for(user: &str) -> Vec<(String, String, Vec<String>)> {
    let e = env();
    let policy = &e.policy;
    let role = policy.role_for_user(user).expect("test user has a role");
    let mut out = Vec::new();
    for rel in e.catalog.relations() {
        let mut hidden = Vec::new();
        for c in &rel.columns {
            let vis = match policy.class_of(&rel.schema, &rel.name, &c.name) {
                Some(cl) => role.visibility(&cl.name).clone(),
                None => role.unclassified.clone(),
            };
            if vis != crate::model::Visibility::Raw {
                hidden.push(c.name.clone());
            }
        }
        if !hidden.is_empty() {
            out.push((rel.schema.clone(), rel.name.clone(), hidden));
        }
    }
    out
}

/// The checker: every reference to a protected relation in `sql` is the inner FROM of a
/// pgveil derived table, and derived tables never project a protected column bare.
#[track_caller]
fn check_forwarded(sql: &str, user: &str) {
    let protected = protected_for(user);
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .unwrap_or_else(|e| panic!("forwarded SQL does not parse: {e}\n{sql}"));
    struct V<'p> {
        sql: &'p str,
        protected: &'p [(String, String, Vec<String>)],
        inner: HashSet<usize>,
        ctes: HashSet<String>,
        errors: Vec<String>,
    }
    impl V<'_> {
        fn find(&self, schema: Option<&str>, name: &str) -> Option<&(String, String, Vec<String>)> {
            self.protected
                .iter()
                .find(|(s, n, _)| n == name && schema.is_none_or(|x| x == s))
        }
    }
    impl Visitor for V<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> ControlFlow<()> {
            if let Some(w) = &q.with {
                for c in &w.cte_tables {
                    self.ctes.insert(fold(&c.alias.name));
                }
            }
            if let SetExpr::Select(sel) = q.body.as_ref() {
                let lines = crate::lexical::LineIndex::new(self.sql);
                let is_derived = lines
                    .offset(sel.select_token.0.span.end)
                    .and_then(|o| self.sql.get(o..))
                    .is_some_and(|rest| rest.trim_start().starts_with(DERIVED_MARK));
                if is_derived {
                    for f in &sel.from {
                        self.inner
                            .insert(&f.relation as *const TableFactor as usize);
                        if let TableFactor::Table { name, .. } = &f.relation {
                            let parts: Vec<String> = name
                                .0
                                .iter()
                                .filter_map(|p| p.as_ident())
                                .map(fold)
                                .collect();
                            let (s, n) = (parts[0].clone(), parts[1].clone());
                            if let Some((_, _, hidden)) = self.find(Some(&s), &n).cloned() {
                                for item in &sel.projection {
                                    if let SelectItem::UnnamedExpr(Expr::Identifier(id)) = item {
                                        if hidden.contains(&id.value) {
                                            self.errors.push(format!(
                                                "bare protected column {}",
                                                id.value
                                            ));
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name, args: None, ..
            } = tf
            {
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .filter_map(|p| p.as_ident())
                    .map(fold)
                    .collect();
                let n = parts.last().cloned().unwrap_or_default();
                let s = (parts.len() >= 2).then(|| parts[parts.len() - 2].clone());
                if s.is_none() && self.ctes.contains(&n) {
                    return ControlFlow::Continue(());
                }
                if self.find(s.as_deref(), &n).is_some()
                    && !self.inner.contains(&(tf as *const TableFactor as usize))
                {
                    self.errors
                        .push(format!("protected relation {n} read directly"));
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
            // RETURNING of a protected target: never `*` or a bare protected column.
            let returning = match s {
                Statement::Update(u) => u.returning.as_ref().map(|r| (r, &u.table.relation)),
                Statement::Delete(d) => match &d.from {
                    sqlparser::ast::FromTable::WithFromKeyword(t) => {
                        d.returning.as_ref().zip(t.first().map(|t| &t.relation))
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some((items, TableFactor::Table { name, .. })) = returning {
                let n = name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(fold)
                    .unwrap_or_default();
                if let Some((_, _, hidden)) = self.find(None, &n).cloned() {
                    for item in items {
                        let bare = match item {
                            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                                Some("*".to_string())
                            }
                            SelectItem::UnnamedExpr(e)
                            | SelectItem::ExprWithAlias { expr: e, .. } => match e {
                                Expr::Identifier(i) => Some(fold(i)),
                                Expr::CompoundIdentifier(p) => p.last().map(fold),
                                _ => None,
                            },
                            _ => None,
                        };
                        if let Some(b) = bare {
                            if b == "*" || hidden.contains(&b) {
                                self.errors.push(format!("RETURNING {b} of protected {n}"));
                            }
                        }
                    }
                }
            }
            // DML targets cannot be derived tables; the analyser guards them instead.
            match s {
                Statement::Update(u) => {
                    self.inner
                        .insert(&u.table.relation as *const TableFactor as usize);
                }
                Statement::Delete(d) => {
                    if let sqlparser::ast::FromTable::WithFromKeyword(t) = &d.from {
                        for twj in t {
                            self.inner
                                .insert(&twj.relation as *const TableFactor as usize);
                        }
                    }
                }
                Statement::Merge(m) => {
                    self.inner.insert(&m.table as *const TableFactor as usize);
                }
                _ => {}
            }
            if let Statement::Copy {
                source: CopySource::Table { table_name, .. },
                to: true,
                ..
            } = s
            {
                let n = table_name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(fold)
                    .unwrap_or_default();
                if self.find(None, &n).is_some() {
                    self.errors.push(format!("COPY {n} TO reads it directly"));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V {
        sql,
        protected: &protected,
        inner: HashSet::new(),
        ctes: HashSet::new(),
        errors: Vec::new(),
    };
    for s in &stmts {
        let _ = s.visit(&mut v);
    }
    assert!(v.errors.is_empty(), "{:?} in\n{sql}", v.errors);
}

// ----- SELECT family ------------------------------------------------------------------

#[test]
fn masked_select_is_rewritten_with_derived_table() {
    let o = sup("SELECT name, phone FROM customers c WHERE c.id = $1");
    let t = rewritten(&o, "support_app");
    assert!(t.starts_with("SELECT name, phone FROM (SELECT /*pgveil*/ \"id\", \"name\", CASE"));
    assert!(
        t.contains("FROM \"public\".\"customers\") c WHERE c.id = $1"),
        "{t}"
    );
    // Only the columns the statement reads are exposed (and parsed by the server).
    assert!(!t.contains("bank_card") && !t.contains("email"), "{t}");
    // Reading whole rows exposes every column, denied ones as typed NULLs.
    let whole = rewritten(
        &sup("SELECT o.*, c.name FROM orders o JOIN customers c ON c.id = o.customer_id"),
        "support_app",
    );
    assert!(whole.contains("NULL::text AS \"bank_card\""), "{whole}");
    assert!(whole.contains("AS \"email\""), "{whole}");
    let r = &o.statements[0];
    assert_eq!(r.kind, StatementKind::Select);
    assert_eq!(r.decision, Decision::Rewrite);
    assert_eq!(r.relations, vec!["public.customers"]);
    assert_eq!(r.columns_masked, vec!["public.customers.phone"]);
    assert!(r.columns_raw.contains(&"public.customers.name".to_string()));
    assert!(r.columns_raw.contains(&"public.customers.id".to_string()));
    assert_eq!(r.classes, vec!["phone"]);
}

#[test]
fn unaliased_relation_gets_its_name_as_alias() {
    let t = rewritten(&bi("SELECT customers.phone FROM customers"), "bi");
    assert!(
        t.ends_with("FROM \"public\".\"customers\") AS \"customers\""),
        "{t}"
    );
    let t = rewritten(
        &bi("SELECT public.customers.phone FROM public.customers"),
        "bi",
    );
    assert!(t.starts_with("SELECT customers.phone FROM (SELECT"), "{t}");
}

#[test]
fn comments_and_formatting_survive() {
    let t = rewritten(&bi("/* hi */ SELECT phone -- x\nFROM   customers;"), "bi");
    assert!(
        t.starts_with("/* hi */ SELECT phone -- x\nFROM   (SELECT"),
        "{t}"
    );
    assert!(t.ends_with(" AS \"customers\";"), "{t}");
}

#[test]
fn denied_columns_refuse_every_read_form() {
    for sql in [
        "SELECT bank_card FROM customers",
        "SELECT c.bank_card FROM customers c",
        "SELECT * FROM customers",
        "SELECT c.* FROM customers c",
        "SELECT c FROM customers c",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT count(c.*) FROM customers c",
        "SELECT 1 FROM customers WHERE bank_card LIKE '6%'",
        "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.bank_card = '1')",
        "SELECT (SELECT bank_card FROM customers LIMIT 1)",
        "WITH x AS (SELECT * FROM customers) SELECT id FROM x",
        "SELECT * FROM orders JOIN customers ON true",
        "SELECT id FROM customers ORDER BY bank_card",
        "SELECT j.bank_card FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j",
        "SELECT j.* FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j",
        "SELECT j FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j",
        "SELECT k.bank_card FROM ((customers c JOIN orders o ON o.customer_id = c.id) AS j JOIN products p ON true) AS k",
        "SELECT j.row_to_json FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j",
    ] {
        let d = denied(&sup(sql), DenyReason::Column);
        assert_eq!(
            d.message, "permission denied for column \"bank_card\" of relation \"customers\"",
            "{sql}"
        );
    }
}

#[test]
fn whole_row_and_subqueries_everywhere_are_rewritten() {
    for sql in [
        "SELECT c FROM customers c",
        "SELECT row_to_json(c) FROM customers AS c",
        "SELECT (SELECT phone FROM customers WHERE id = o.customer_id) FROM orders o",
        "SELECT * FROM orders o, LATERAL (SELECT phone FROM customers c WHERE c.id = o.customer_id) l",
        "SELECT id FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE phone LIKE '138%')",
        "SELECT phone FROM customers UNION SELECT ship_phone FROM orders",
        "SELECT phone FROM customers INTERSECT (SELECT ship_phone FROM orders EXCEPT SELECT '1')",
        "SELECT * FROM (customers c JOIN orders o ON c.id = o.customer_id)",
        "SELECT array(SELECT phone FROM customers)",
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM customers WHERE phone = '1') THEN 1 END",
        "SELECT id FROM orders GROUP BY id HAVING max(id) > (SELECT count(*) FROM customers WHERE phone > '')",
        "SELECT sum(amount) FILTER (WHERE customer_id IN (SELECT id FROM customers WHERE phone > '')) FROM orders",
        "SELECT id, rank() OVER (ORDER BY (SELECT phone FROM customers LIMIT 1)) FROM orders",
        "SELECT * FROM CUSTOMERS",
        "SELECT * FROM public . customers",
        "SELECT * FROM \"public\".\"customers\"",
    ] {
        let o = bi(sql);
        let t = rewritten(&o, "bi");
        assert!(t.contains(DERIVED_MARK), "{sql}");
    }
}

#[test]
fn cte_names_shadow_tables_only_in_scope() {
    allowed(&bi(
        "WITH customers AS (SELECT 1 AS id) SELECT * FROM customers",
    ));
    allowed(&bi(
        "WITH RECURSIVE customers AS (SELECT 1 AS id UNION ALL SELECT id + 1 FROM customers WHERE id < 3) SELECT * FROM customers",
    ));
    allowed(&bi(
        "WITH customers AS (SELECT 1 AS x), y AS (SELECT * FROM customers) SELECT * FROM y",
    ));
    // A non-recursive CTE does not see itself: the inner name is the table.
    let t = rewritten(
        &bi("WITH customers AS (SELECT * FROM customers) SELECT * FROM customers"),
        "bi",
    );
    assert_eq!(t.matches(DERIVED_MARK).count(), 1, "{t}");
    // A CTE in a subquery does not shadow the outer FROM.
    let t = rewritten(
        &bi("SELECT * FROM (WITH customers AS (SELECT 2 AS id) SELECT * FROM customers) s, customers"),
        "bi",
    );
    assert_eq!(t.matches(DERIVED_MARK).count(), 1, "{t}");
    // Schema-qualified names never refer to CTEs.
    let t = rewritten(
        &bi("WITH customers AS (SELECT 1) SELECT * FROM public.customers"),
        "bi",
    );
    assert_eq!(t.matches(DERIVED_MARK).count(), 1);
    // Data-modifying CTE: RETURNING * is masked.
    let t = rewritten(
        &ops("WITH d AS (DELETE FROM orders WHERE id = -1 RETURNING *) SELECT * FROM d"),
        "ops",
    );
    assert!(t.contains("AS \"ship_phone\""), "{t}");
}

#[test]
fn names_resolve_by_search_path_case_and_temp_schema() {
    denied(
        &bi("SELECT * FROM \"Customers\""),
        DenyReason::UnresolvedRelation,
    );
    denied(&bi("SELECT * FROM nosuch"), DenyReason::UnresolvedRelation);
    denied(&bi("SELECT * FROM audit.customers"), DenyReason::Table);
    let d = denied(
        &bi("SET search_path = audit; SELECT note FROM customers"),
        DenyReason::Table,
    );
    assert!(d.message.contains("audit.customers"), "{}", d.message);
    // The temp schema is searched first; pg_temp.* is in analyst's tables.
    allowed(&bi("SELECT * FROM scratch"));
    allowed(&bi("SELECT * FROM pg_temp.scratch"));
    let e = env();
    let path = vec!["audit".to_string(), "public".to_string()];
    let facts = SessionFacts {
        user: "bi",
        role: e.policy.role_for_user("bi"),
        purpose: None,
        search_path: &path,
        temp_schema: None,
    };
    let o = decide(
        &e.policy,
        &facts,
        &e.catalog,
        &e.key,
        "SELECT * FROM customers",
    );
    denied(&o, DenyReason::Table);
}

#[test]
fn ambiguous_names_are_pinned_to_their_schema() {
    let mut e = env();
    e.catalog.add(crate::catalog::Relation {
        schema: "pg_temp_3".into(),
        name: "customers".into(),
        kind: crate::catalog::RelationKind::Table,
        columns: vec![crate::catalog::Column {
            name: "id".into(),
            type_name: "bigint".into(),
        }],
        depends_on: vec![],
        constraints: Vec::new(),
    });
    // The temp table shadows public.customers; the text now says which one is meant.
    let o = e.run("bi", None, "SELECT * FROM customers c");
    assert_eq!(
        o.verdict,
        Verdict::Rewrite("SELECT * FROM pg_temp.\"customers\" c".into())
    );
    let path = vec!["audit".to_string(), "public".to_string()];
    e.path = path;
    let o = e.run("ops", None, "UPDATE customers SET note = 'x' WHERE id = 1");
    denied(&o, DenyReason::Table);
    // Untagged names stay as written.
    allowed(&e.run("bi", None, "SELECT * FROM products"));
}

#[test]
fn system_catalogs() {
    allowed(&bi("SELECT relname FROM pg_class"));
    allowed(&bi("SELECT * FROM pg_catalog.pg_namespace"));
    allowed(&bi("SELECT table_name FROM information_schema.tables"));
    for sql in [
        "SELECT * FROM pg_stats",
        "SELECT query FROM pg_catalog.pg_stat_activity",
        "SELECT * FROM pg_stat_statements",
        "SELECT * FROM pg_prepared_statements",
        "SELECT * FROM pg_toast.pg_toast_1234",
        "SELECT * FROM pg_authid",
    ] {
        denied(&bi(sql), DenyReason::SystemRelation);
    }
}

#[test]
fn views_over_protected_columns() {
    denied(&bi("SELECT * FROM customer_names"), DenyReason::View);
    // Through another (untagged) view: still a read of customers.phone.
    denied(&bi("SELECT * FROM names_again"), DenyReason::View);
    allowed(&bi("CREATE VIEW v AS SELECT * FROM products"));
    let t = rewritten(&bi("SELECT phone FROM customer_contacts"), "bi");
    assert!(t.contains("\"customer_contacts\""));
    // A tagged view over protected columns: its untagged columns may show any of them
    // (`id_card AS ident`), so they are refused, `*` included.
    for sql in [
        "SELECT * FROM customer_contacts",
        "SELECT id FROM customer_contacts",
        "SELECT phone FROM customer_contacts WHERE id = 1",
        "SELECT c FROM customer_contacts c",
    ] {
        let d = denied(&bi(sql), DenyReason::Column);
        assert!(d.message.contains("is not tagged"), "{sql}: {}", d.message);
    }
}

// ----- functions ------------------------------------------------------------------------

#[test]
fn dangerous_and_user_functions() {
    for sql in [
        "SELECT query_to_xml('select * from customers', true, true, '')",
        "SELECT pg_catalog.query_to_xml('select 1', true, true, '')",
        "SELECT table_to_xml('customers', true, true, '')",
        "SELECT * FROM ts_stat('select to_tsvector(phone) from customers')",
        "SELECT ts_rewrite('a'::tsquery, 'select 1')",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT lo_export(1, '/tmp/x')",
        "SELECT * FROM dblink('dbname=x', 'select 1') AS t(a int)",
        "SELECT set_config('search_path', 'audit', false)",
        "SELECT current_query()",
        "SELECT risky(1)",
        "SELECT public.risky(1)",
        "SELECT nosuchschema.f()",
        "SELECT id FROM customers WHERE id IN (WITH x AS (SELECT risky(id) FROM orders) SELECT 1)",
        "SELECT * FROM risky(3)",
    ] {
        denied(&bi(sql), DenyReason::Function);
    }
    allowed(&bi("SELECT allowed_fn(1)"));
    allowed(&bi("SELECT lower('X'), now(), pg_terminate_backend(1)"));
    allowed(&bi("SELECT * FROM generate_series(1, 3) AS g(i)"));
    let o = bi("SELECT upper(name) FROM customers");
    assert_eq!(o.statements[0].functions, vec!["upper"]);
}

#[test]
fn custom_operators_are_refused() {
    for sql in [
        "SELECT 1 OPERATOR(public.===) 2",
        "SELECT 1 ~~~ 2",
        "SELECT phone ~~~ 'x' FROM customers",
    ] {
        assert!(matches!(bi(sql).verdict, Verdict::Deny(_)), "{sql}");
    }
}

// ----- DML ------------------------------------------------------------------------------

/// The sample catalog with the constraints of a typical shop: unique phones, a CHECK
/// comparing two columns, orders referencing customers by id (raw) and by phone, and a
/// view over customers.
fn constrained() -> Env {
    use crate::catalog::ConstraintKind;
    use crate::write_guard::test_constraint as k;
    let mut e = env();
    let mut customers = e.catalog.relation("public", "customers").cloned().unwrap();
    customers.constraints = vec![
        k("customers_pkey", ConstraintKind::Unique, &["id"], None),
        k(
            "customers_phone_key",
            ConstraintKind::Unique,
            &["phone"],
            None,
        ),
        k(
            "customers_check",
            ConstraintKind::Check,
            &["vip_level", "email"],
            None,
        ),
        k(
            "orders_customer_id_fkey",
            ConstraintKind::ReferencedBy,
            &["id"],
            Some(("orders", &["customer_id"])),
        ),
        k(
            "orders_ship_phone_fkey",
            ConstraintKind::ReferencedBy,
            &["phone"],
            Some(("orders", &["ship_phone"])),
        ),
    ];
    e.catalog.add(customers);
    let mut orders = e.catalog.relation("public", "orders").cloned().unwrap();
    orders.constraints = vec![
        k("orders_pkey", ConstraintKind::Unique, &["id"], None),
        k(
            "orders_customer_id_fkey",
            ConstraintKind::ForeignKey,
            &["customer_id"],
            Some(("customers", &["id"])),
        ),
        k(
            "orders_ship_phone_fkey",
            ConstraintKind::ForeignKey,
            &["ship_phone"],
            Some(("customers", &["phone"])),
        ),
    ];
    e.catalog.add(orders);
    let mut products = e.catalog.relation("public", "products").cloned().unwrap();
    products.constraints = vec![k("products_pkey", ConstraintKind::Unique, &["id"], None)];
    e.catalog.add(products);
    e
}

#[test]
fn writes_a_constraint_checks_against_protected_values_are_refused() {
    let e = constrained();
    for (user, sql) in [
        // Unique: success says whether another row holds the value.
        ("support_app", "UPDATE customers SET phone = '13812345678' WHERE id = 2"),
        ("support_app", "UPDATE customers SET (name, phone) = ('x', $1) WHERE id = 2"),
        ("ops", "INSERT INTO customers (id, phone) VALUES (9, '13812345678')"),
        ("ops", "INSERT INTO customers VALUES (9, 'n', 'x', '13812345678')"),
        ("ops", "INSERT INTO customers (id, phone) VALUES (9, $1) ON CONFLICT DO NOTHING"),
        ("ops", "INSERT INTO customers (id, phone) VALUES (9, '1') ON CONFLICT (id) DO UPDATE SET vip_level = 1"),
        ("ops", "COPY customers FROM STDIN"),
        ("ops", "COPY customers (id, phone) FROM STDIN"),
        ("ops", "MERGE INTO customers t USING products s ON t.id = s.id WHEN NOT MATCHED THEN INSERT (id, phone) VALUES (s.id, s.title)"),
        ("ops", "MERGE INTO customers t USING products s ON t.id = s.id WHEN MATCHED THEN UPDATE SET phone = s.title"),
        // CHECK comparing the written column with a masked one the row keeps.
        ("ops", "UPDATE customers SET vip_level = 3 WHERE id = 2"),
        // Foreign keys: the referenced value must exist / referencing rows must not.
        ("ops", "INSERT INTO orders (id, ship_phone) VALUES (9, '13812345678')"),
        ("ops", "UPDATE orders SET ship_phone = $1 WHERE id = 1"),
        ("ops", "DELETE FROM customers WHERE id = 2"),
        ("ops", "MERGE INTO customers t USING products s ON t.id = s.id WHEN MATCHED THEN DELETE"),
        // Through a view over customers whose phone the view shows masked.
        ("support_app", "UPDATE customer_contacts SET phone = '13812345678' WHERE id = 2"),
    ] {
        let o = e.run(user, if user == "support_app" { CS } else { None }, sql);
        let d = denied(&o, DenyReason::WriteOracle);
        assert!(d.message.contains("may not read raw"), "{sql}: {}", d.message);
    }
    let d = denied(
        &e.run(
            "support_app",
            CS,
            "UPDATE customers SET phone = $1 WHERE id = $2",
        ),
        DenyReason::WriteOracle,
    );
    assert!(
        d.message.contains("unique index \"customers_phone_key\"")
            && d.message
                .contains("column \"phone\" of \"public.customers\""),
        "{}",
        d.message
    );
    // Writes no constraint compares with a protected value stay allowed.
    for (user, sql) in [
        (
            "support_app",
            "UPDATE customers SET name = 'x' WHERE id = 2",
        ),
        (
            "ops",
            "UPDATE customers SET vip_level = 3, email = 'a@b.c' WHERE id = 2",
        ),
        ("ops", "INSERT INTO customers (id, name) VALUES (9, 'n')"),
        ("ops", "INSERT INTO customers DEFAULT VALUES"),
        ("ops", "INSERT INTO orders (id, customer_id) VALUES (9, 1)"),
        (
            "ops",
            "UPDATE orders SET customer_id = 2, status = 'x' WHERE id = 1",
        ),
        ("ops", "DELETE FROM orders WHERE id = 1"),
        ("ops", "DELETE FROM products WHERE id = 1"),
        ("ops", "COPY products FROM STDIN"),
        (
            "postgres",
            "UPDATE customers SET phone = '13812345678' WHERE id = 2",
        ),
        ("postgres", "DELETE FROM customers WHERE id = 2"),
    ] {
        let o = e.run(user, if user == "support_app" { CS } else { None }, sql);
        assert!(
            !matches!(o.verdict, Verdict::Deny(_)),
            "{sql}: {:?}",
            o.verdict
        );
    }
}

#[test]
fn dml_predicates_on_protected_columns_are_refused() {
    for sql in [
        "UPDATE customers SET vip_level = 1 WHERE phone = '13800138000'",
        "UPDATE customers c SET vip_level = 2 WHERE c.email LIKE 'a%'",
        "UPDATE customers SET name = phone",
        "UPDATE customers SET vip_level = length(id_card) WHERE id = 1",
        "UPDATE customers c SET vip_level = 1 WHERE row_to_json(c)::text LIKE '%138%'",
        "UPDATE customers c SET vip_level = 1 WHERE (c).phone LIKE '1%'",
        "DELETE FROM customers WHERE id_card = 'x'",
        "DELETE FROM customers WHERE id IN (SELECT id FROM orders WHERE customers.phone > '')",
        "INSERT INTO customers (id, phone) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET name = customers.phone",
        "INSERT INTO customers (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET vip_level = 1 WHERE customers.email = 'x'",
        "MERGE INTO customers t USING orders s ON t.id = s.customer_id WHEN MATCHED AND t.phone LIKE '1%' THEN UPDATE SET vip_level = 1",
        "MERGE INTO customers t USING orders s ON t.phone = s.ship_phone WHEN MATCHED THEN DELETE",
    ] {
        denied(&ops(sql), DenyReason::DmlPredicate);
    }
    allowed(&ops("UPDATE customers SET phone = '1' WHERE id = 1"));
    allowed(&ops(
        "UPDATE customers SET vip_level = 1 WHERE customers.id = 5",
    ));
    allowed(&ops("INSERT INTO customers (id, phone) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET phone = EXCLUDED.phone"));
    allowed(&ops("MERGE INTO customers t USING products s ON t.id = s.id WHEN MATCHED THEN UPDATE SET vip_level = 1"));
    // Other FROM items are rewritten and filter on masked values.
    let t = rewritten(
        &ops("UPDATE orders o SET status = 'x' FROM customers c WHERE c.id = o.customer_id AND c.phone LIKE '138%'"),
        "ops",
    );
    assert!(
        t.starts_with("UPDATE \"public\".\"orders\" o SET status = 'x' FROM (SELECT"),
        "{t}"
    );
}

#[test]
fn returning_is_masked() {
    denied(
        &ops("UPDATE customers SET vip_level = 1 WHERE id = 1 RETURNING *"),
        DenyReason::Column,
    );
    denied(
        &ops("UPDATE customers c SET vip_level = 1 WHERE id = 1 RETURNING c"),
        DenyReason::DmlPredicate,
    );
    denied(
        &ops("UPDATE customers c SET vip_level = 1 WHERE id = 1 RETURNING (SELECT c.phone)"),
        DenyReason::DmlPredicate,
    );
    let t = rewritten(
        &ops("UPDATE customers SET vip_level = 1 WHERE id = 1 RETURNING id, phone"),
        "ops",
    );
    assert!(
        t.contains("RETURNING id, (CASE WHEN pg_catalog.char_length((\"customers\".\"phone\")::pg_catalog.text) <= 7"),
        "{t}"
    );
    assert!(t.ends_with("END) AS \"phone\""), "{t}");
    let t = rewritten(
        &sup("UPDATE orders SET status = 'x' WHERE id = 1 RETURNING *"),
        "support_app",
    );
    assert!(t.contains("RETURNING \"orders\".\"id\", "), "{t}");
    let t = rewritten(
        &ops("INSERT INTO orders (id) VALUES (1) RETURNING ship_phone AS p, upper(ship_phone)"),
        "ops",
    );
    assert!(t.contains("AS p"), "{t}");
    assert_eq!(t.matches("CASE WHEN").count(), 2, "{t}");
}

#[test]
fn statement_kinds_need_grants() {
    let d = denied(&bi("DELETE FROM orders"), DenyReason::StatementKind);
    assert_eq!(
        d.message,
        "permission denied: role \"analyst\" may not run delete statements"
    );
    denied(&bi("TRUNCATE orders"), DenyReason::StatementKind);
    denied(&sup("COPY orders FROM STDIN"), DenyReason::StatementKind);
    denied(
        &bi("EXPLAIN ANALYZE DELETE FROM orders"),
        DenyReason::StatementKind,
    );
}

// ----- COPY -----------------------------------------------------------------------------

#[test]
fn copy_is_rewritten_or_refused() {
    let t = rewritten(&bi("COPY customers TO STDOUT"), "bi");
    assert!(
        t.starts_with("COPY (SELECT * FROM (SELECT /*pgveil*/"),
        "{t}"
    );
    assert!(t.ends_with(" AS \"customers\") TO STDOUT"), "{t}");
    let t = rewritten(
        &bi("COPY customers (id, phone) TO STDOUT WITH (FORMAT csv)"),
        "bi",
    );
    assert!(
        t.starts_with("COPY (SELECT \"id\", \"phone\" FROM (SELECT"),
        "{t}"
    );
    assert!(t.ends_with(" TO STDOUT WITH (FORMAT csv)"), "{t}");
    rewritten(&bi("COPY (SELECT phone FROM customers) TO STDOUT"), "bi");
    denied(&bi("COPY customers TO '/tmp/x'"), DenyReason::CopyFile);
    denied(
        &bi("COPY (SELECT 1) TO PROGRAM 'cat'"),
        DenyReason::CopyFile,
    );
    denied(&sup("COPY customers TO STDOUT"), DenyReason::Column);
    rewritten(&sup("COPY customers (id, phone) TO STDOUT"), "support_app");
}

// ----- sessions -------------------------------------------------------------------------

#[test]
fn session_settings() {
    for sql in [
        "SET ROLE postgres",
        "SET role = 'postgres'",
        "SET LOCAL ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "RESET ROLE",
        "RESET SESSION AUTHORIZATION",
        "SET client_encoding = 'LATIN1'",
        "SET NAMES 'SJIS'",
        "SET standard_conforming_strings = off",
    ] {
        denied(&bi(sql), DenyReason::SessionSetting);
    }
    let o = bi("SET search_path = audit, \"My\", public");
    allowed(&o);
    assert_eq!(
        o.statements[0].effects,
        vec![SessionEffect::SetSearchPath(vec![
            "audit".into(),
            "\"My\"".into(),
            "public".into()
        ])]
    );
    allowed(&bi("SET client_encoding = 'UTF8'"));
    allowed(&bi("SET standard_conforming_strings = on"));
    let o = env().run(
        "support_app",
        None,
        "SET pgveil.purpose = 'customer_service'; SELECT name FROM customers",
    );
    assert_eq!(
        o.statements[0].effects,
        vec![SessionEffect::SetPurpose("customer_service".into())]
    );
    rewritten(&o, "support_app");
    allowed(&bi("BEGIN; SHOW search_path; COMMIT"));
}

#[test]
fn purpose_is_required() {
    let d = denied(
        &env().run("support_app", None, "SELECT name FROM customers"),
        DenyReason::Purpose,
    );
    assert!(d.message.contains("customer_service"));
    denied(
        &env().run("support_app", Some("marketing"), "SELECT 1"),
        DenyReason::Purpose,
    );
    allowed(&env().run(
        "support_app",
        None,
        "SET pgveil.purpose = 'customer_service'",
    ));
    // A cursor (WITH HOLD keeps it past the transaction) reads rows only while a purpose
    // holds; closing it needs none.
    for sql in [
        "FETCH 10 FROM c",
        "MOVE 1 IN c",
        "SET pgveil.purpose = ''; FETCH 1 FROM c",
    ] {
        let d = denied(&env().run("support_app", None, sql), DenyReason::Purpose);
        assert!(d.message.contains("customer_service"), "{sql}");
    }
    allowed(&sup("FETCH 10 FROM c"));
    allowed(&env().run("support_app", None, "CLOSE c"));
}

#[test]
fn explain_prepare_declare() {
    let o = sup("EXPLAIN SELECT phone FROM customers");
    assert_eq!(o.statements[0].kind, StatementKind::Explain);
    rewritten(&o, "support_app");
    denied(&sup("EXPLAIN VERBOSE SELECT 1"), DenyReason::Explain);
    denied(
        &sup("EXPLAIN (VERBOSE, COSTS off) SELECT 1"),
        DenyReason::Explain,
    );
    denied(
        &bi("EXPLAIN SELECT id_card FROM customers"),
        DenyReason::Explain,
    );
    let o = bi("PREPARE p (bigint) AS SELECT phone FROM customers WHERE id = $1");
    assert_eq!(o.statements[0].kind, StatementKind::Session);
    assert_eq!(
        o.statements[0].effects,
        vec![SessionEffect::Prepare { name: "p".into() }]
    );
    rewritten(&o, "bi");
    denied(
        &bi("PREPARE p AS DELETE FROM orders"),
        DenyReason::StatementKind,
    );
    let o = bi("DECLARE c CURSOR FOR SELECT phone FROM customers");
    rewritten(&o, "bi");
    allowed(&bi("FETCH 10 FROM c"));
    // MOVE reads no rows: parsed with FETCH's grammar, forwarded as written.
    for sql in [
        "MOVE NEXT IN c",
        "move 5 from \"c\"",
        "MOVE ABSOLUTE 3 FROM c; FETCH 1 FROM c",
        "/* x */ MOVE BACKWARD ALL IN c",
        "MOVE NEXT c",
    ] {
        let o = bi(sql);
        allowed(&o);
        assert!(
            o.statements[0]
                .normalized
                .to_ascii_uppercase()
                .contains("MOVE"),
            "{sql}"
        );
    }
    // PostgreSQL lets FROM/IN before the cursor name out; sqlparser needs it.
    for sql in [
        "FETCH c",
        "FETCH ABSOLUTE 3 c",
        "fetch forward all \"c\"",
        "MOVE 1 c; FETCH c",
    ] {
        let o = bi(sql);
        allowed(&o);
        for r in o.statements.iter() {
            assert_eq!(
                r.effects,
                vec![SessionEffect::Fetch { name: "c".into() }],
                "{sql}"
            );
        }
    }
    denied(
        &sup("MOVE 1 IN c; SELECT bank_card FROM customers"),
        DenyReason::Column,
    );
    allowed(&bi("EXECUTE p(1)"));
    allowed(&bi("DEALLOCATE ALL"));
}

// ----- parsing / lexing ---------------------------------------------------------------

#[test]
fn unparsable_text_fails_closed_for_restricted_only() {
    for sql in ["DO $$ BEGIN PERFORM 1; END $$", "SELEC 1", "MOVE"] {
        let d = denied(&bi(sql), DenyReason::Unparsable);
        assert!(
            d.message
                .starts_with("pgveil cannot analyse this statement: "),
            "{}",
            d.message
        );
        let o = env().run("postgres", None, sql);
        allowed(&o);
        assert!(o.statements[0].unparsed);
    }
}

/// `TABLE name` is `SELECT * FROM name`: at the start of a statement, after `(` and
/// after a set operation it is read as that, and on a protected relation the keyword is
/// rewritten with the derived table.
#[test]
fn table_name_queries() {
    allowed(&bi("SELECT * FROM products UNION ALL TABLE products"));
    allowed(&bi(
        "SELECT * FROM products UNION ALL (TABLE public.products)",
    ));
    allowed(&bi("TABLE products"));
    rewritten(
        &bi("WITH x AS (SELECT id, phone FROM customers) TABLE x"),
        "bi",
    );
    let o = bi("TABLE customers");
    let t = rewritten(&o, "bi");
    assert!(
        t.starts_with("SELECT * FROM (SELECT /*pgveil*/ \"id\""),
        "{t}"
    );
    assert!(
        t.ends_with("FROM \"public\".\"customers\") AS \"customers\""),
        "{t}"
    );
    assert_eq!(o.statements[0].kind, StatementKind::Select);
    assert!(o.statements[0]
        .columns_masked
        .contains(&"public.customers.phone".to_string()));
    for sql in [
        "SELECT * FROM customers UNION ALL TABLE customers",
        "SELECT * FROM orders UNION ALL TABLE public.orders",
        "SELECT * FROM orders UNION ALL TABLE \"orders\"",
        "WITH x AS (TABLE customers) SELECT phone FROM x",
        "table ONLY customers ORDER BY id LIMIT 2",
        "SELECT 1; TABLE customers",
    ] {
        let t = rewritten(&bi(sql), "bi");
        assert!(!t.to_ascii_lowercase().contains("table "), "{sql}: {t}");
    }
    // PostgreSQL accepts nothing but the name after TABLE; neither does pgveil.
    for sql in ["TABLE customers c", "TABLE customers WHERE id = 1"] {
        let d = denied(&bi(sql), DenyReason::Unsupported);
        assert!(d.message.contains("TABLE name"), "{sql}: {}", d.message);
    }
    denied(
        &sup("SELECT * FROM products UNION ALL TABLE audit.customers"),
        DenyReason::Table,
    );
    denied(&sup("TABLE audit.customers"), DenyReason::Table);
}

/// Two string constants separated by white space with a newline are one constant.
#[test]
fn continued_string_literals() {
    allowed(&bi("SELECT 'foo'\n  'bar'"));
    // (The forwarded text keeps the continuation, which the checker's parser lacks.)
    let t = match &bi("SELECT phone FROM customers WHERE name = 'a' -- x\n  'b'").verdict {
        Verdict::Rewrite(t) => t.clone(),
        other => panic!("expected rewrite, got {other:?}"),
    };
    assert!(t.contains(" FROM \"public\".\"customers\") "), "{t}");
    assert!(
        t.ends_with("AS \"customers\" WHERE name = 'a' -- x\n  'b'"),
        "{t}"
    );
    denied(
        &sup("SELECT bank_card FROM customers WHERE name = 'a'\n'b'"),
        DenyReason::Column,
    );
    denied(&bi("SELECT 'a' /* c */\n'b'"), DenyReason::Unparsable);
}

/// `WHERE CURRENT OF` reads no column; the rest of the write is decided as usual.
#[test]
fn where_current_of() {
    allowed(&ops("UPDATE products SET title = 'x' WHERE CURRENT OF cur"));
    allowed(&ops("DELETE FROM products WHERE CURRENT OF cur"));
    let d = denied(
        &bi("UPDATE products SET title = 'x' WHERE CURRENT OF cur"),
        DenyReason::StatementKind,
    );
    assert!(d.message.contains("update"), "{}", d.message);
}

/// `FETCH FIRST (expr)`: the expression is analysed like a LIMIT.
#[test]
fn fetch_first_expressions() {
    let t = match &bi("SELECT phone FROM customers FETCH FIRST (1+1) ROWS ONLY").verdict {
        Verdict::Rewrite(t) => t.clone(),
        other => panic!("expected rewrite, got {other:?}"),
    };
    assert!(
        t.ends_with("AS \"customers\" FETCH FIRST (1+1) ROWS ONLY"),
        "{t}"
    );
    assert!(t.contains("FROM \"public\".\"customers\")"), "{t}");
    denied(
        &sup("SELECT name FROM customers FETCH FIRST ((SELECT count(*) FROM customers WHERE bank_card = '1')) ROWS ONLY"),
        DenyReason::Column,
    );
    let t = match &bi("SELECT phone FROM customers ORDER BY id FETCH NEXT ($1 * 2) ROWS WITH TIES")
        .verdict
    {
        Verdict::Rewrite(t) => t.clone(),
        other => panic!("expected rewrite, got {other:?}"),
    };
    assert!(
        t.ends_with("ORDER BY id FETCH NEXT ($1 * 2) ROWS WITH TIES"),
        "{t}"
    );
    denied(
        &bi("SELECT phone FROM customers ORDER BY id FETCH FIRST ((SELECT 1)) ROWS WITH TIES"),
        DenyReason::Unparsable,
    );
}

#[test]
fn lexical_evasions_are_refused() {
    for sql in [
        "SELECT U&\"ph\\006fne\" FROM customers",
        "SELECT 1\x0bFROM customers",
        "SELECT U&'\\0031'",
    ] {
        denied(&bi(sql), DenyReason::Unparsable);
    }
    // Nested comments hide text from both parsers alike.
    allowed(&bi("SELECT 1 /* /* */ , phone FROM customers */"));
}

#[test]
fn multi_statement_texts_are_judged_whole() {
    let o = bi("SELECT 1; SELECT * FROM pg_stats");
    denied(&o, DenyReason::SystemRelation);
    assert!(o.statements.iter().all(|s| s.decision == Decision::Deny));
    assert_eq!(o.statements.len(), 2);
    assert_eq!(o.statements[0].normalized, "SELECT ?");
    let t = rewritten(&bi("SELECT * FROM customers; SELECT * FROM orders"), "bi");
    assert_eq!(t.matches(DERIVED_MARK).count(), 2);
}

// ----- DDL ------------------------------------------------------------------------------

#[test]
fn ddl_rules() {
    let o = bi("CREATE TABLE x AS SELECT * FROM customers");
    assert_eq!(o.statements[0].kind, StatementKind::Ddl);
    assert!(o.statements[0]
        .effects
        .contains(&SessionEffect::CatalogChanged));
    rewritten(&o, "bi");
    rewritten(&bi("SELECT * INTO TEMP y FROM customers"), "bi");
    denied(
        &bi("CREATE VIEW v AS SELECT phone FROM customers"),
        DenyReason::Ddl,
    );
    denied(
        &bi("ALTER TABLE customers RENAME COLUMN phone TO p"),
        DenyReason::Ddl,
    );
    denied(&bi("ALTER SCHEMA public RENAME TO p"), DenyReason::Ddl);
    denied(
        &bi("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'"),
        DenyReason::Ddl,
    );
    denied(
        &bi("CREATE TABLE t2 (a int); SELECT * FROM t2"),
        DenyReason::Ddl,
    );
    allowed(&bi("CREATE TABLE t3 (a int)"));
    denied(&bi("CREATE TABLE audit.t3 (a int)"), DenyReason::Table);
}

/// ONLY, `name *` and TABLESAMPLE move inside the derived table of a protected relation.
#[test]
fn inheritance_and_sampling_on_protected_relations() {
    let t = rewritten(&bi("SELECT * FROM ONLY customers"), "bi");
    assert!(t.starts_with("SELECT * FROM (SELECT /*pgveil*/"), "{t}");
    assert!(
        t.ends_with(" FROM ONLY \"public\".\"customers\") AS \"customers\""),
        "{t}"
    );
    let t = rewritten(&bi("SELECT phone FROM ONLY /* c */ (customers) c"), "bi");
    assert!(t.ends_with(" FROM ONLY \"public\".\"customers\") c"), "{t}");
    let t = rewritten(&bi("SELECT phone FROM customers * WHERE id = 1"), "bi");
    assert!(
        t.ends_with(" FROM \"public\".\"customers\") AS \"customers\" WHERE id = 1"),
        "{t}"
    );
    let t = rewritten(&bi("SELECT * FROM customers TABLESAMPLE SYSTEM (10)"), "bi");
    assert!(
        t.ends_with(" FROM \"public\".\"customers\" TABLESAMPLE SYSTEM (10)) AS \"customers\" "),
        "{t}"
    );
    let t = rewritten(
        &bi("SELECT c.phone FROM customers AS c tablesample bernoulli (50) repeatable ($1) WHERE c.id > 0"),
        "bi",
    );
    assert!(
        t.ends_with(" FROM \"public\".\"customers\" TABLESAMPLE BERNOULLI (50) REPEATABLE ($1)) AS c  WHERE c.id > 0"),
        "{t}"
    );
    for sql in [
        "SELECT * FROM customers TABLESAMPLE SYSTEM ((SELECT count(*) FROM customers))",
        "SELECT * FROM customers TABLESAMPLE BERNOULLI (id)",
    ] {
        let d = denied(&bi(sql), DenyReason::Unsupported);
        assert!(d.message.contains("TABLESAMPLE"), "{sql}: {}", d.message);
    }
    allowed(&bi("SELECT * FROM ONLY products"));
    allowed(&bi("SELECT * FROM products TABLESAMPLE SYSTEM (1)"));
}

/// PostgreSQL analyses a prepared statement again when the catalog or search_path changed
/// under it, so an EXECUTE after DDL, DISCARD TEMP or SET search_path in the same text
/// would run names resolved against a catalog or path the decision never saw.
#[test]
fn execute_after_ddl_in_the_same_text_is_refused() {
    denied(&bi("DISCARD TEMP; EXECUTE p"), DenyReason::Ddl);
    denied(&bi("DISCARD TEMP; EXECUTE p (1)"), DenyReason::Ddl);
    denied(&bi("SET search_path = public; EXECUTE p"), DenyReason::Ddl);
    denied(&bi("RESET search_path; EXECUTE p"), DenyReason::Ddl);
    allowed(&bi("EXECUTE p (1)"));
    allowed(&bi("EXECUTE p (1); DISCARD TEMP"));
    allowed(&bi("SET search_path = public; SELECT * FROM products"));
}

// ----- roles ----------------------------------------------------------------------------

#[test]
fn unrestricted_and_missing_roles() {
    let o = env().run(
        "postgres",
        None,
        "SELECT * FROM customers; DROP TABLE orders",
    );
    allowed(&o);
    assert_eq!(o.statements[0].columns_raw.len(), 10);
    assert_eq!(o.statements[1].kind, StatementKind::Ddl);
    let o = env().run("nobody", None, "SELECT 1");
    denied(&o, DenyReason::NoRole);
}

#[test]
fn strict_role_denies_unclassified_columns() {
    denied(
        &env().run("strict", None, "SELECT id FROM customers"),
        DenyReason::Column,
    );
    let t = rewritten(
        &env().run("strict", None, "SELECT phone FROM customers"),
        "strict",
    );
    // The denied column is not read, so the derived table does not expose it at all.
    assert!(
        t.contains("AS \"phone\" FROM \"public\".\"customers\""),
        "{t}"
    );
    assert!(!t.contains("\"id\""), "{t}");
}

#[test]
fn hash_mask_uses_keyed_sha256() {
    let t = rewritten(&bi("SELECT id_card FROM customers"), "bi");
    assert!(
        t.contains("pg_catalog.encode(pg_catalog.sha256('\\x"),
        "{t}"
    );
    assert!(!t.contains(&hex::encode(b"test-key")));
}

#[test]
fn sample_cases_all_pass() {
    let e = env();
    for (sql, user, purpose) in rewrite_cases() {
        let o = e.run(user, purpose, sql);
        match &o.verdict {
            Verdict::Allow => check_forwarded(sql, user),
            Verdict::Rewrite(t) => check_forwarded(t, user),
            Verdict::Deny(d) => panic!("{sql} denied: {d:?}"),
        }
    }
}

#[test]
fn catalog_trait_object_works() {
    let cat = sample_catalog();
    let dynamic: &dyn Catalog = &cat;
    assert!(dynamic.relation("public", "customers").is_some());
}

// ----- proptest -------------------------------------------------------------------------

mod grammar {
    use proptest::prelude::*;

    fn table() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("customers"),
            Just("orders"),
            Just("products"),
            Just("public.customers"),
            Just("CUSTOMERS"),
            Just("\"customers\""),
            Just("customer_contacts"),
        ]
    }

    fn column() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("id"),
            Just("phone"),
            Just("name"),
            Just("bank_card"),
            Just("id_card"),
            Just("ship_phone"),
            Just("*"),
            Just("t"),
            Just("t.phone"),
            Just("t.*"),
            Just("row_to_json(t)"),
            Just("upper(phone)"),
            Just("count(*)"),
            Just("query_to_xml('x', true, true, '')"),
        ]
    }

    pub fn query() -> impl Strategy<Value = String> {
        let leaf = (column(), table(), prop::option::of(column())).prop_map(|(c, t, w)| match w {
            Some(w) if w != "*" && !w.contains("*") => {
                format!("SELECT {c} FROM {t} t WHERE {w} IS NOT NULL")
            }
            _ => format!("SELECT {c} FROM {t} t"),
        });
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} UNION ALL {b}")),
                (inner.clone(), table())
                    .prop_map(|(a, t)| format!("SELECT * FROM ({a}) s JOIN {t} t ON true")),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| format!("WITH customers AS ({a}) {b}")),
                (inner.clone(), table()).prop_map(|(a, t)| format!(
                    "SELECT (SELECT 1 FROM ({a}) q LIMIT 1), t.id FROM {t} t"
                )),
                (inner.clone(), table())
                    .prop_map(|(a, t)| format!("SELECT id FROM {t} t WHERE EXISTS ({a})")),
                (inner.clone(), table())
                    .prop_map(|(a, t)| format!("SELECT * FROM {t} t, LATERAL ({a}) l")),
                inner.clone().prop_map(|a| format!("COPY ({a}) TO STDOUT")),
                (table(), column(), inner.clone()).prop_map(|(t, c, a)| {
                    format!("UPDATE {t} t SET id = id WHERE id IN (SELECT 1 FROM ({a}) q) RETURNING {c}")
                }),
                (table(), column()).prop_map(|(t, c)| format!("DELETE FROM {t} t WHERE id = 1 RETURNING {c}")),
                (table(), inner.clone()).prop_map(|(t, a)| format!("WITH d AS (DELETE FROM {t} RETURNING *) {a}")),
                table().prop_map(|t| format!("COPY {t} TO STDOUT")),
                inner.prop_map(|a| format!("EXPLAIN {a}")),
            ]
        })
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn random_queries_never_leak(sql in grammar::query(), who in 0usize..4) {
        let user = ["bi", "support_app", "strict", "ops"][who];
        let o = env().run(user, CS, &sql);
        match &o.verdict {
            Verdict::Allow => check_forwarded(&sql, user),
            Verdict::Rewrite(t) => check_forwarded(t, user),
            Verdict::Deny(_) => {}
        }
        // `*` over customers reads the denied bank_card: support must be refused.
        if user == "support_app" && sql.contains("SELECT * FROM customers") && !sql.contains("WITH") {
            proptest::prop_assert!(matches!(o.verdict, Verdict::Deny(_)));
        }
    }
}

#[test]
fn long_operator_chains_are_refused_not_overflowing() {
    let sql = format!(
        "SELECT 1 FROM customers WHERE {}1 = 1",
        "1 + ".repeat(100_000)
    );
    let h = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || bi(&sql).verdict)
        .expect("thread spawns");
    let v = h.join().expect("no stack overflow");
    assert!(matches!(v, Verdict::Deny(d) if d.reason == DenyReason::Unparsable));
    let sql = format!(
        "SELECT 1 FROM customers WHERE {}1 = 1",
        "(1) + ".repeat(100_000)
    );
    assert!(matches!(bi(&sql).verdict, Verdict::Deny(d) if d.reason == DenyReason::Unparsable));
    let sql = format!(
        "SELECT 1 FROM customers WHERE {}1 = 1",
        "1 + ".repeat(1_000)
    );
    rewritten(&bi(&sql), "bi");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// Arbitrary text (including SQL-ish fragments) never panics `decide` or `redact`.
    #[test]
    fn arbitrary_text_never_panics(
        parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                proptest::prelude::Just("SELECT ".to_string()),
                proptest::prelude::Just(" FROM customers c".to_string()),
                proptest::prelude::Just("'".to_string()),
                proptest::prelude::Just("\"".to_string()),
                proptest::prelude::Just("$$".to_string()),
                proptest::prelude::Just("/*".to_string()),
                proptest::prelude::Just("--".to_string()),
                proptest::prelude::Just("(".to_string()),
                proptest::prelude::Just(";".to_string()),
                proptest::prelude::Just("中文".to_string()),
            ],
            0..12,
        ),
        who in 0usize..3,
    ) {
        let sql: String = parts.concat();
        let user = ["bi", "postgres", "support_app"][who];
        let o = env().run(user, CS, &sql);
        if let Verdict::Rewrite(t) = &o.verdict {
            check_forwarded(t, user);
        }
        let _ = crate::redact::redact(&sql);
    }
}

/// Derived tables list only what the statement reads; every read form must keep its
/// column (rewrites_on_postgres runs each of these on PostgreSQL).
#[test]
fn pruned_derived_tables_keep_every_column_read() {
    for sql in [
        "SELECT count(*) FROM customers",
        "SELECT phone FROM customers ORDER BY name",
        "SELECT (SELECT max(o.amount) FROM orders o WHERE o.customer_id = c.id) FROM customers c",
        "WITH x AS (SELECT id, phone FROM customers) SELECT phone FROM x",
        "SELECT name FROM customers GROUP BY name HAVING count(phone) > 1",
        "SELECT rank() OVER (PARTITION BY name ORDER BY created_at) FROM customers",
        "SELECT DISTINCT ON (name) phone FROM customers ORDER BY name, id",
        "SELECT phone FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.ship_phone = c.phone)",
        "SELECT x.p FROM (SELECT phone AS p, name FROM customers) x",
        "SELECT name FROM customers WHERE id IN (SELECT customer_id FROM orders WHERE status = 'paid')",
        "SELECT j.phone FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j",
        "SELECT k.phone FROM ((customers c JOIN orders o ON o.customer_id = c.id) AS j JOIN products p ON true) AS k",
    ] {
        let o = sup(sql);
        assert!(matches!(o.verdict, Verdict::Rewrite(_)), "{sql}: {:?}", o.verdict);
        let t = rewritten(&o, "support_app");
        assert!(!t.contains("bank_card"), "an unread denied column is listed: {t}");
    }
    // A column read through the alias of a parenthesized join is listed in the derived
    // table of the relation inside the join that has it.
    let t = rewritten(
        &sup("SELECT j.phone FROM (customers c JOIN orders o ON o.customer_id = c.id) AS j"),
        "support_app",
    );
    assert!(t.contains("AS \"phone\""), "{t}");
    // USING and NATURAL name columns outside expressions: every column is listed, the
    // unread denied one as a typed NULL.
    for sql in [
        "SELECT c.name FROM customers c JOIN orders o USING (id)",
        "SELECT name FROM customers NATURAL JOIN products",
    ] {
        let t = rewritten(&sup(sql), "support_app");
        assert!(t.contains("NULL::text AS \"bank_card\""), "{t}");
    }
    // A row reference (also `(c).col`, read as the whole row) lists every column.
    for sql in [
        "SELECT row_to_json(c) FROM customers c",
        "SELECT (c).phone FROM customers c",
    ] {
        let t = rewritten(&bi(sql), "bi");
        assert!(
            t.contains("AS \"bank_card\"") && t.contains("\"vip_level\""),
            "{t}"
        );
    }
}

/// Statements whose protected columns are only bare output columns of one table are
/// masked in the proxy; anything else that reads them keeps the rewrite.
#[test]
fn row_masks_only_for_bare_output_columns() {
    let masked_at = |o: &Outcome| {
        o.row_masks.as_ref().map(|m| {
            (
                m.width,
                m.columns.iter().map(|c| c.index).collect::<Vec<_>>(),
            )
        })
    };
    for (sql, width, idx) in [
        ("SELECT phone FROM customers WHERE id = 7", 1, vec![0]),
        (
            "SELECT name, phone FROM customers c WHERE c.id = 1",
            2,
            vec![1],
        ),
        (
            "SELECT c.phone AS p, id FROM customers c ORDER BY id LIMIT 5",
            2,
            vec![0],
        ),
        (
            "SELECT id, public.customers.email FROM public.customers",
            2,
            vec![1],
        ),
        (
            "SELECT \"phone\", now() FROM customers WHERE vip_level > 2",
            2,
            vec![0],
        ),
        (
            "SELECT id_card, address FROM customers ORDER BY customers.id",
            2,
            vec![0, 1],
        ),
    ] {
        let o = sup(sql);
        assert!(
            matches!(o.verdict, Verdict::Rewrite(_)),
            "{sql}: {:?}",
            o.verdict
        );
        assert_eq!(masked_at(&o), Some((width, idx)), "{sql}");
    }
    for sql in [
        "SELECT phone FROM customers WHERE phone LIKE '138%'",
        "SELECT phone AS p FROM customers ORDER BY p",
        "SELECT phone FROM customers ORDER BY 1",
        "SELECT phone FROM customers ORDER BY phone",
        "SELECT upper(phone) FROM customers",
        "SELECT phone, c FROM customers c",
        "SELECT phone, row_to_json(customers) FROM customers",
        "SELECT phone FROM customers c WHERE c.phone = 'x'",
        "SELECT phone FROM customers WHERE customers::text LIKE '%1%'",
        "SELECT DISTINCT phone FROM customers",
        "SELECT phone FROM customers GROUP BY phone",
        "SELECT phone, count(*) FROM customers GROUP BY 1",
        "SELECT phone FROM customers WHERE id IN (SELECT customer_id FROM orders)",
        "SELECT phone FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT phone FROM customers UNION SELECT ship_phone FROM orders",
        "SELECT phone FROM customers; SELECT 1",
        "SELECT phone FROM customers FOR UPDATE",
        "WITH x AS (SELECT 1) SELECT phone FROM customers",
        "SELECT phone INTO TEMP t FROM customers",
        "EXPLAIN SELECT phone FROM customers",
        "SELECT birth_date FROM customers",
        "SELECT phone FROM customers c(a, b)",
        "SELECT phone, id FROM customers WHERE \"PHONE\" = 'x'",
        "SELECT phone FROM customers WHERE id = (SELECT 1)",
        "SELECT phone, lag(phone) OVER () FROM customers",
    ] {
        let o = sup(sql);
        assert_eq!(masked_at(&o), None, "{sql} must keep the rewrite");
    }
    // Allowed and refused statements never carry row masks.
    assert!(sup("SELECT id FROM customers").row_masks.is_none());
    assert!(sup("SELECT bank_card FROM customers").row_masks.is_none());
    assert!(env()
        .run("postgres", None, "SELECT phone FROM customers")
        .row_masks
        .is_none());
}

#[test]
fn names_the_catalog_lacks_are_reported() {
    let unknown = |sql: &str| {
        let o = sup(sql);
        assert!(
            !matches!(o.verdict, Verdict::Deny(_)),
            "{sql}: {:?}",
            o.verdict
        );
        o.statements.iter().any(|r| r.unknown_columns)
    };
    // A column added to the table after the catalog was read.
    assert!(unknown("SELECT o.ship_phone2 FROM orders o"));
    assert!(unknown("SELECT ship_phone2 FROM orders"));
    assert!(unknown(
        "SELECT id FROM orders WHERE orders.ship_phone2 IS NULL"
    ));
    assert!(unknown("SELECT (SELECT ship_phone2 FROM orders LIMIT 1)"));
    // Names that are not columns of a catalog relation.
    assert!(!unknown("SELECT amount AS a FROM orders ORDER BY a"));
    assert!(!unknown("SELECT current_user, id FROM orders"));
    assert!(!unknown("SELECT x FROM orders, generate_series(1, 2) x"));
    assert!(!unknown("SELECT typname FROM pg_type"));
    assert!(!unknown("SELECT n FROM (SELECT id AS n FROM orders) s"));
    assert!(!unknown("SELECT o FROM orders o"));
    assert!(!unknown("SELECT id, amount FROM orders"));
}
