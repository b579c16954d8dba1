//! A small `customers` schema and the example policy, shared by the tests that drive the
//! proxy with enforcement on (audit, metrics).

use std::sync::OnceLock;

use super::pg::postgres;

/// Creates the `support_app` login role once per cluster (roles are cluster-wide, so
/// parallel tests must not race on `CREATE ROLE`).
fn ensure_roles() {
    static ROLES: OnceLock<()> = OnceLock::new();
    ROLES.get_or_init(|| {
        postgres().psql_admin(
            "postgres",
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname='support_app') \
             THEN CREATE ROLE support_app LOGIN; END IF; END $$;",
        );
    });
}

/// Creates database `db` with `customers` holding one row (id 1, phone 13812345678),
/// readable, insertable and updatable by `support_app`.
pub fn setup_shop(db: &str) {
    ensure_roles();
    let pg = postgres();
    pg.create_database(db);
    pg.psql_admin(
        db,
        "DROP TABLE IF EXISTS customers; CREATE TABLE customers (id bigint primary key, \
         name text, id_card text, phone text, email text, bank_card text, address text, \
         birth_date date, vip_level int, created_at timestamptz default now());
         INSERT INTO customers VALUES (1, '张伟', '11010519491231002X', '13812345678', \
         'zhang@example.com', '6222021234567890123', '北京市', '1949-12-31', 1, now());
         GRANT SELECT, INSERT, UPDATE ON customers TO support_app;",
    );
}

/// `deploy/examples/policy.toml` without the purpose binding, with `support` also allowed
/// `insert` and `copy_to` (so one session can exercise every audited path).
pub fn shop_policy() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/policy.toml"
    ))
    .expect("read deploy/examples/policy.toml");
    let out = text
        .replace("purposes = [\"customer_service\"]", "")
        .replace(
            "statements = [\"select\", \"update\"]",
            "statements = [\"select\", \"update\", \"insert\", \"copy_to\"]",
        );
    assert!(
        out.contains("\"copy_to\"]"),
        "example policy changed: the support role's statements line was not found"
    );
    out
}
