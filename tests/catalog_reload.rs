//! Catalog reloads after DDL run through pgveil: a restricted session decides against
//! a catalog read after every DDL that completed before its statement (by any session),
//! and a burst of DDL from an unrestricted session is answered by a few coalesced
//! background loads instead of one load per statement. When that load fails, restricted
//! statements are refused with 58000 until the catalog can be read again.

use harness::pg::postgres;
use harness::proxy::enforcement;
use harness::shop::{self, PHONES};
use harness::{start_proxy, ProxyHandle, ProxyOptions};

async fn proxy_for(db: &str) -> ProxyHandle {
    proxy_reading_catalog_as(db, None).await
}

async fn proxy_reading_catalog_as(db: &str, catalog_user: Option<&'static str>) -> ProxyHandle {
    shop::shop_db(db);
    start_proxy(ProxyOptions {
        policy: Some(shop::test_policy()),
        catalog_user,
        ..Default::default()
    })
    .await
}

async fn one_text(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// An admin replaces a view so that its column now reads phones: the analyst's next
/// read of the view, right after, is masked like the phone column itself. Decided on
/// the snapshot read before the replacement, the view's column still depends on an
/// untagged column and the raw phone would be returned.
#[tokio::test]
async fn restricted_session_sees_admin_view_replacement() {
    let db = "shop_catalog_view";
    let proxy = proxy_for(db).await;
    let admin = proxy.connect("postgres", db).await;
    let analyst = proxy.connect("bi", db).await;
    admin
        .batch_execute(
            "CREATE VIEW contact_x AS SELECT id, id::text AS x FROM customers; \
             GRANT SELECT ON contact_x TO bi",
        )
        .await
        .expect("create view");
    let sql = "SELECT x FROM contact_x WHERE id = 1";
    assert_eq!(one_text(&analyst, sql).await, "1");
    admin
        .simple_query("CREATE OR REPLACE VIEW contact_x AS SELECT id, phone AS x FROM customers")
        .await
        .expect("replace view");
    // The view's own column is untagged and now reads phones: refused to the analyst.
    let refused = analyst
        .query_one(sql, &[])
        .await
        .map(|r| r.get::<_, String>(0));
    assert_ne!(
        refused.as_deref().ok(),
        Some(PHONES[0]),
        "raw phone through a replaced view"
    );
    let refused = refused.expect_err("a view reading phones through untagged columns");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused:?}"
    );

    // Inside a transaction: the change counts once it is committed (the snapshot
    // before it would refuse the statement).
    admin.simple_query("BEGIN").await.expect("begin");
    admin
        .simple_query("CREATE OR REPLACE VIEW contact_x AS SELECT id, id::text AS x FROM customers")
        .await
        .expect("replace view in a transaction");
    admin.simple_query("COMMIT").await.expect("commit");
    assert_eq!(one_text(&analyst, sql).await, "1");
}

/// 300 DDL statements from an unrestricted session, each its own Query, cause far
/// fewer catalog loads than statements; a restricted session afterwards still sees the
/// last table created.
#[tokio::test]
async fn ddl_burst_is_coalesced() {
    const N: u64 = 300;
    let db = "shop_catalog_burst";
    let proxy = proxy_for(db).await;
    let admin = proxy.connect("postgres", db).await;
    let analyst = proxy.connect("bi", db).await;
    // A snapshot exists (the analyst decided against it), so DDL schedules reloads.
    assert_eq!(
        one_text(&analyst, "SELECT count(*)::text FROM orders").await,
        "5"
    );
    let catalog = enforcement(&proxy)
        .expect("proxy enforces a policy")
        .catalog
        .clone();
    let before = catalog.loads();
    for i in 1..=N {
        admin
            .simple_query(&format!("CREATE TABLE burst_{i} (a int)"))
            .await
            .expect("create table");
    }
    admin
        .simple_query(&format!("GRANT SELECT ON burst_{N} TO bi"))
        .await
        .expect("grant");
    assert_eq!(
        one_text(&analyst, &format!("SELECT count(*)::text FROM burst_{N}")).await,
        "0"
    );
    let loads = catalog.loads() - before;
    assert!(
        loads < N / 2,
        "{loads} catalog loads for {N} DDL statements: reloads are not coalesced"
    );
}

/// The catalog account loses its login between DDL and the analyst's next statement:
/// the reload after the DDL fails, so the statement is refused with 58000 instead of
/// being checked against a snapshot that predates the DDL. The session stays usable and
/// the statement succeeds once the account can log in again.
#[tokio::test]
async fn failed_reload_after_ddl_refuses_with_58000_until_it_succeeds() {
    const ACCOUNT: &str = "catalog_flaky";
    let db = "shop_catalog_failed";
    postgres().psql_admin(
        "postgres",
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ACCOUNT}') \
             THEN CREATE ROLE {ACCOUNT} LOGIN; END IF; END $$; ALTER ROLE {ACCOUNT} LOGIN;"
        ),
    );
    let proxy = proxy_reading_catalog_as(db, Some(ACCOUNT)).await;
    let admin = proxy.connect("postgres", db).await;
    let analyst = proxy.connect("bi", db).await;
    let sql = "SELECT count(*)::text FROM orders";
    assert_eq!(one_text(&analyst, sql).await, "5");

    admin
        .batch_execute(&format!("ALTER ROLE {ACCOUNT} NOLOGIN"))
        .await
        .expect("alter role");
    admin
        .batch_execute("CREATE TABLE after_nologin (a int)")
        .await
        .expect("create table");
    for _ in 0..2 {
        let refused = analyst
            .query_one(sql, &[])
            .await
            .expect_err("a statement decided against a catalog older than the DDL");
        let db_error = refused.as_db_error().expect("an ErrorResponse");
        assert_eq!(db_error.code().code(), "58000", "{refused:?}");
        assert!(
            db_error.message().contains("catalog could not be read"),
            "{refused:?}"
        );
    }
    // Statements that name no relation are not held back.
    assert_eq!(
        one_text(&analyst, "SELECT 'still open'").await,
        "still open"
    );

    admin
        .batch_execute(&format!("ALTER ROLE {ACCOUNT} LOGIN"))
        .await
        .expect("alter role");
    assert_eq!(one_text(&analyst, sql).await, "5");
}
