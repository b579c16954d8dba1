//! Smoke test of policy enforcement through the proxy (support role masked, dba raw).

use harness::{postgres, start_proxy, ProxyOptions};

#[tokio::test]
async fn support_sees_masked_dba_sees_raw() {
    let pg = postgres();
    pg.create_database("smoke");
    pg.psql_admin("smoke", "DROP TABLE IF EXISTS customers; CREATE TABLE customers (id bigint primary key, name text, id_card text, phone text, email text, bank_card text, address text, birth_date date, vip_level int, created_at timestamptz default now());
      INSERT INTO customers VALUES (1, '张伟', '11010519491231002X', '13812345678', 'zhang@example.com', '6222021234567890123', '北京市', '1949-12-31', 1, now());
      DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname='support_app') THEN CREATE ROLE support_app LOGIN; END IF; END $$;
      GRANT SELECT, UPDATE ON customers TO support_app;");
    let policy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/policy.toml"
    ))
    .unwrap();
    let policy = policy.replace("purposes = [\"customer_service\"]", "");
    let proxy = start_proxy(ProxyOptions {
        policy: Some(policy),
        ..Default::default()
    })
    .await;
    let support = proxy.connect("support_app", "smoke").await;
    let row = support
        .query_one(
            "SELECT name, phone, id_card FROM customers WHERE id = 1",
            &[],
        )
        .await
        .expect("select");
    let phone: String = row.get(1);
    eprintln!(
        "support sees {:?} {:?} {:?}",
        row.get::<_, String>(0),
        phone,
        row.get::<_, String>(2)
    );
    assert_ne!(phone, "13812345678");
    let e = support
        .query("SELECT * FROM customers", &[])
        .await
        .expect_err("bank_card denied");
    eprintln!("deny: {:?}", e.as_db_error().map(|d| d.message()));
    let dba = proxy.connect("postgres", "smoke").await;
    let row = dba
        .query_one("SELECT phone FROM customers WHERE id = 1", &[])
        .await
        .expect("dba");
    assert_eq!(row.get::<_, String>(0), "13812345678");
}
