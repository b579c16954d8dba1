//! Test-only builders: the demo schema as a catalog, design.md's sample policy built
//! without TOML, and a list of (sql, user) cases whose rewrites the lead's integration
//! test runs on a real PostgreSQL.

use std::collections::BTreeMap;

use crate::catalog::{Column, ColumnRef, Relation, RelationKind, StaticCatalog};
use crate::model::{
    Class, ColumnTag, DatePart, Mask, NamePattern, Policy, Role, StatementKind, TablePattern,
    UnknownUsers, Visibility,
};

/// The typical OLTP statements of the policy micro benchmark, by name: what a decision
/// cache miss costs (`benches/benches/policy.rs`, `examples/decide_ir.rs`).
pub const OLTP_STATEMENTS: [(&str, &str); 4] = [
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

fn rel(schema: &str, name: &str, kind: RelationKind, cols: &[(&str, &str)]) -> Relation {
    Relation {
        schema: schema.into(),
        name: name.into(),
        kind,
        columns: cols
            .iter()
            .map(|(n, t)| Column {
                name: (*n).into(),
                type_name: (*t).into(),
            })
            .collect(),
        depends_on: Vec::new(),
        constraints: Vec::new(),
    }
}

/// The demo schema: `public.customers`, `public.orders`, an untagged view over customers,
/// a tagged view, a harmless table, and one user function.
pub fn sample_catalog() -> StaticCatalog {
    let mut cat = StaticCatalog::new();
    cat.add(rel(
        "public",
        "customers",
        RelationKind::Table,
        &[
            ("id", "bigint"),
            ("name", "text"),
            ("id_card", "text"),
            ("phone", "text"),
            ("email", "text"),
            ("bank_card", "text"),
            ("address", "text"),
            ("birth_date", "date"),
            ("vip_level", "integer"),
            ("created_at", "timestamp with time zone"),
        ],
    ));
    cat.add(rel(
        "public",
        "orders",
        RelationKind::Table,
        &[
            ("id", "bigint"),
            ("customer_id", "bigint"),
            ("amount", "numeric"),
            ("ship_phone", "text"),
            ("ship_address", "text"),
            ("status", "text"),
            ("created_at", "timestamp with time zone"),
        ],
    ));
    cat.add(rel(
        "public",
        "products",
        RelationKind::Table,
        &[("id", "bigint"), ("title", "text"), ("price", "numeric")],
    ));
    let mut v = rel(
        "public",
        "customer_names",
        RelationKind::View,
        &[("id", "bigint"), ("name", "text"), ("phone", "text")],
    );
    v.depends_on = ["id", "name", "phone"]
        .iter()
        .map(|c| ColumnRef {
            schema: "public".into(),
            table: "customers".into(),
            column: (*c).into(),
        })
        .collect();
    cat.add(v);
    let mut tv = rel(
        "public",
        "customer_contacts",
        RelationKind::View,
        &[("id", "bigint"), ("phone", "text")],
    );
    tv.depends_on = vec![ColumnRef {
        schema: "public".into(),
        table: "customers".into(),
        column: "phone".into(),
    }];
    cat.add(tv);
    let mut vv = rel(
        "public",
        "names_again",
        RelationKind::View,
        &[("id", "bigint"), ("name", "text")],
    );
    vv.depends_on = ["id", "name"]
        .iter()
        .map(|c| ColumnRef {
            schema: "public".into(),
            table: "customer_names".into(),
            column: (*c).into(),
        })
        .collect();
    vv.depends_on.push(ColumnRef {
        schema: "public".into(),
        table: "customer_names".into(),
        column: "phone".into(),
    });
    cat.add(vv);
    cat.add(rel(
        "audit",
        "customers",
        RelationKind::Table,
        &[("id", "bigint"), ("note", "text")],
    ));
    cat.add(rel(
        "pg_temp_3",
        "scratch",
        RelationKind::Table,
        &[("id", "bigint"), ("note", "text")],
    ));
    cat.add_function("public", "risky");
    cat.add_function("public", "allowed_fn");
    cat
}

fn pat(p: &str) -> TablePattern {
    let (s, t) = p.split_once('.').unwrap_or(("*", p));
    TablePattern {
        pattern: p.into(),
        schema: NamePattern::new(s),
        table: NamePattern::new(t),
    }
}

fn tag(p: &str, class: &str) -> ColumnTag {
    let mut it = p.splitn(3, '.');
    let s = it.next().unwrap_or("*");
    let t = it.next().unwrap_or("*");
    let c = it.next().unwrap_or("*");
    ColumnTag {
        pattern: p.into(),
        schema: NamePattern::new(s),
        table: NamePattern::new(t),
        column: NamePattern::new(c),
        class: class.into(),
    }
}

fn class(name: &str, level: u8, mask: Mask) -> (String, Class) {
    (
        name.into(),
        Class {
            name: name.into(),
            label: None,
            level,
            mask,
        },
    )
}

/// A role builder with design.md-like defaults (select only, nothing visible raw).
pub struct RoleBuilder(Role);

impl RoleBuilder {
    pub fn new(name: &str, users: &[&str]) -> Self {
        RoleBuilder(Role {
            name: name.into(),
            users: users.iter().map(|u| NamePattern::new(*u)).collect(),
            statements: vec![StatementKind::Select],
            all_statements: false,
            tables: Vec::new(),
            see_default: Visibility::Masked,
            see_classes: BTreeMap::new(),
            unclassified: Visibility::Raw,
            max_rows: None,
            purposes: Vec::new(),
            functions: Vec::new(),
        })
    }
    pub fn statements(mut self, kinds: &[StatementKind]) -> Self {
        self.0.statements = kinds.to_vec();
        self
    }
    pub fn all_statements(mut self) -> Self {
        self.0.all_statements = true;
        self.0.statements = StatementKind::GRANTABLE.iter().map(|(_, k)| *k).collect();
        self
    }
    pub fn tables(mut self, pats: &[&str]) -> Self {
        self.0.tables = pats.iter().map(|p| pat(p)).collect();
        self
    }
    pub fn see_default(mut self, v: Visibility) -> Self {
        self.0.see_default = v;
        self
    }
    pub fn see(mut self, class: &str, v: Visibility) -> Self {
        self.0.see_classes.insert(class.into(), v);
        self
    }
    pub fn unclassified(mut self, v: Visibility) -> Self {
        self.0.unclassified = v;
        self
    }
    pub fn purposes(mut self, p: &[&str]) -> Self {
        self.0.purposes = p.iter().map(|s| (*s).to_string()).collect();
        self
    }
    pub fn functions(mut self, f: &[&str]) -> Self {
        self.0.functions = f.iter().map(|s| NamePattern::new(*s)).collect();
        self
    }
    pub fn build(self) -> Role {
        self.0
    }
}

/// design.md's sample policy: classes, tags on the demo schema, and roles
/// `support` (select/update/insert/delete/copy_to/explain, masked, bank_card denied,
/// purpose customer_service), `analyst` (select, masked, id_number hashed), `dba`
/// (unrestricted), `ops` (update/delete on orders and customers, no purpose) and
/// `strict` (unclassified columns denied).
pub fn sample_policy() -> Policy {
    use StatementKind as K;
    let classes: BTreeMap<String, Class> = [
        class(
            "id_number",
            4,
            Mask::Partial {
                keep_first: 6,
                keep_last: 4,
                fill: "*".into(),
            },
        ),
        class(
            "phone",
            3,
            Mask::Partial {
                keep_first: 3,
                keep_last: 4,
                fill: "*".into(),
            },
        ),
        class(
            "bank_card",
            4,
            Mask::Partial {
                keep_first: 0,
                keep_last: 4,
                fill: "*".into(),
            },
        ),
        class("email", 2, Mask::Email),
        class("birth_date", 3, Mask::TruncateDate { to: DatePart::Year }),
        class("address", 3, Mask::Redact { with: "***".into() }),
        class(
            "name",
            2,
            Mask::Partial {
                keep_first: 1,
                keep_last: 0,
                fill: "*".into(),
            },
        ),
    ]
    .into_iter()
    .collect();
    let columns = vec![
        tag("public.customers.id_card", "id_number"),
        tag("public.customers.phone", "phone"),
        tag("public.customers.email", "email"),
        tag("public.customers.bank_card", "bank_card"),
        tag("public.customers.address", "address"),
        tag("public.customers.birth_date", "birth_date"),
        tag("public.orders.ship_phone", "phone"),
        tag("public.orders.ship_address", "address"),
        tag("public.customer_contacts.phone", "phone"),
        tag("public.*.card_no", "bank_card"),
    ];
    let support = RoleBuilder::new("support", &["support_app", "cs_*"])
        .statements(&[
            K::Select,
            K::Update,
            K::Insert,
            K::Delete,
            K::CopyTo,
            K::Explain,
        ])
        .tables(&[
            "public.customers",
            "public.orders",
            "public.products",
            "public.customer_contacts",
            "public.customer_names",
        ])
        .see("bank_card", Visibility::Deny)
        .purposes(&["customer_service"])
        .build();
    let analyst = RoleBuilder::new("analyst", &["bi"])
        .statements(&[K::Select, K::Explain, K::CopyTo, K::Ddl])
        .tables(&["public.*", "pg_temp.*"])
        .see("id_number", Visibility::Custom(Mask::Hash))
        .functions(&["public.allowed_fn"])
        .build();
    let ops = RoleBuilder::new("ops", &["ops"])
        .statements(&[
            K::Select,
            K::Update,
            K::Delete,
            K::Insert,
            K::Merge,
            K::CopyFrom,
        ])
        .tables(&["public.*"])
        .see("bank_card", Visibility::Deny)
        .build();
    let strict = RoleBuilder::new("strict", &["strict"])
        .tables(&["public.*"])
        .unclassified(Visibility::Deny)
        .build();
    let dba = RoleBuilder::new("dba", &["postgres"])
        .all_statements()
        .tables(&["*.*"])
        .see_default(Visibility::Raw)
        .build();
    let roles = [support, analyst, ops, strict, dba]
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    Policy {
        version: 1,
        unknown_users: UnknownUsers::Deny,
        classes,
        columns,
        roles,
        sha256: "test".into(),
    }
}

/// (sql, user, purpose) cases that must be allowed or rewritten for `sample_policy()`
/// over `sample_catalog()`: the integration test runs each forwarded text on PostgreSQL
/// (after creating the demo schema) and checks it executes.
pub fn rewrite_cases() -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    let cs = Some("customer_service");
    vec![
        ("SELECT name, phone FROM customers c WHERE c.id = 1", "support_app", cs),
        ("SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id", "bi", None),
        ("SELECT c FROM customers c", "bi", None),
        ("SELECT row_to_json(c) FROM customers AS c", "bi", None),
        ("WITH x AS (SELECT * FROM customers) SELECT phone FROM x", "bi", None),
        ("SELECT phone FROM customers UNION SELECT ship_phone FROM orders", "bi", None),
        ("SELECT (SELECT phone FROM customers WHERE id = o.customer_id) FROM orders o", "bi", None),
        ("SELECT * FROM orders o, LATERAL (SELECT phone FROM customers c WHERE c.id = o.customer_id) l", "bi", None),
        ("SELECT id_card FROM public.customers", "bi", None),
        ("SELECT public.customers.phone FROM public.customers", "bi", None),
        ("COPY customers TO STDOUT", "bi", None),
        ("COPY customers (id, phone) TO STDOUT WITH (FORMAT csv)", "bi", None),
        ("COPY (SELECT phone FROM customers) TO STDOUT", "bi", None),
        ("UPDATE customers SET phone = '1' WHERE id = 1 RETURNING id, phone", "support_app", cs),
        ("UPDATE orders SET status = '1' WHERE id = 1 RETURNING *", "support_app", cs),
        ("UPDATE orders SET status = 'x' WHERE id = 1 RETURNING ship_phone, id", "support_app", cs),
        ("DELETE FROM orders USING orders o2 WHERE orders.id = o2.id AND orders.id = -1 RETURNING orders.ship_phone || '', o2.id", "ops", None),
        ("INSERT INTO orders (id, customer_id, status) SELECT id, id, phone FROM customers WHERE false", "ops", None),
        ("SELECT phone FROM customer_contacts", "bi", None),
        ("EXPLAIN SELECT phone FROM customers", "support_app", cs),
        ("SELECT count(*) FROM customers WHERE email LIKE 'a%'", "bi", None),
        ("SELECT * FROM products", "bi", None),
        ("SELECT phone, email FROM customers", "strict", None),
        ("/* c */ SELECT phone -- x\nFROM customers;", "bi", None),
        ("SELECT * FROM customers; SELECT * FROM orders", "bi", None),
    ]
}

/// DDL (and two sample rows) that creates `sample_catalog()` on a real PostgreSQL, for
/// integration tests that execute the forwarded texts of `rewrite_cases()`.
pub fn sample_schema_sql() -> &'static str {
    "CREATE TABLE customers (id bigint PRIMARY KEY, name text, id_card text, phone text, \
       email text, bank_card text, address text, birth_date date, vip_level int, \
       created_at timestamptz DEFAULT now());\n\
     CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, amount numeric, \
       ship_phone text, ship_address text, status text, created_at timestamptz DEFAULT now());\n\
     CREATE TABLE products (id bigint, title text, price numeric);\n\
     CREATE VIEW customer_names AS SELECT id, name, phone FROM customers;\n\
     CREATE VIEW customer_contacts AS SELECT id, phone FROM customers;\n\
     CREATE VIEW names_again AS SELECT id, name FROM customer_names WHERE phone IS NOT NULL;\n\
     CREATE SCHEMA audit;\n\
     CREATE TABLE audit.customers (id bigint, note text);\n\
     CREATE FUNCTION allowed_fn(int) RETURNS int LANGUAGE sql AS 'select $1';\n\
     CREATE FUNCTION risky(int) RETURNS int LANGUAGE sql AS 'select $1';\n\
     INSERT INTO customers VALUES (1, '张三', '110101199003077777', '13800138000', \
       'alice@example.com', '6222020200112233445', '北京市朝阳区', '1990-03-07', 3, now()), \
       (2, 'Bob', NULL, '12', 'noat', NULL, NULL, NULL, 1, now());\n\
     INSERT INTO orders VALUES (1, 1, 10.5, '13900139000', 'x', 'new', now());\n"
}

/// The sample policy and catalog, a mask key and the default search_path: what a test or
/// benchmark needs to decide statements for a sample user.
pub struct Sample {
    pub policy: Policy,
    pub catalog: StaticCatalog,
    pub key: crate::mask::MaskKey,
    pub path: Vec<String>,
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            policy: sample_policy(),
            catalog: sample_catalog(),
            key: crate::mask::MaskKey::new(b"sample-key"),
            path: vec!["\"$user\"".to_string(), "public".to_string()],
        }
    }
}

impl Sample {
    /// Session facts of `user` (its role in the sample policy) with `purpose`.
    pub fn facts<'a>(
        &'a self,
        user: &'a str,
        purpose: Option<&'a str>,
    ) -> crate::decide::SessionFacts<'a> {
        crate::decide::SessionFacts {
            user,
            role: self.policy.role_for_user(user),
            purpose,
            search_path: &self.path,
            temp_schema: None,
        }
    }
}
