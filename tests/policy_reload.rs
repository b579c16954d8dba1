//! Policy hot reload under open sessions: a valid new policy applies to the next
//! statement, an invalid one leaves the running policy in force, and statements
//! prepared before a reload are re-checked when executed after it.

use std::time::Duration;

use harness::proxy::enforcement;
use harness::shop::{self, ID_CARDS, PHONES};
use harness::{start_proxy, ProxyHandle, ProxyOptions};

/// The test policy with support seeing phones raw.
fn phone_raw() -> String {
    shop::test_policy().replace(
        "see = { default = \"masked\", bank_card = \"deny\" }\n# Untagged",
        "see = { default = \"masked\", bank_card = \"deny\", phone = \"raw\" }\n# Untagged",
    )
}

/// The test policy with support denied phones.
fn phone_denied() -> String {
    shop::test_policy().replace(
        "see = { default = \"masked\", bank_card = \"deny\" }\n# Untagged",
        "see = { default = \"masked\", bank_card = \"deny\", phone = \"deny\" }\n# Untagged",
    )
}

async fn proxy_with(db: &str, policy: String) -> ProxyHandle {
    shop::shop_db(db);
    start_proxy(ProxyOptions {
        policy: Some(policy),
        ..Default::default()
    })
    .await
}

fn install(proxy: &ProxyHandle, text: &str) -> bool {
    std::fs::write(proxy.dir.join("policy.toml"), text).expect("write policy.toml");
    let e = enforcement(proxy).expect("proxy enforces a policy");
    pgveil::enforce::reload::reload(&e).is_ok()
}

async fn phone_of_1(client: &tokio_postgres::Client) -> Result<String, tokio_postgres::Error> {
    client
        .query_one("SELECT phone FROM customers WHERE id = 1", &[])
        .await
        .map(|r| r.get(0))
}

#[test]
fn variants_differ_from_base() {
    assert_ne!(
        phone_raw(),
        shop::test_policy(),
        "phone_raw replacement missed"
    );
    assert_ne!(
        phone_denied(),
        shop::test_policy(),
        "phone_denied replacement missed"
    );
}

#[tokio::test]
async fn raw_to_masked_applies_to_next_statement() {
    let db = "shop_reload_mask";
    let proxy = proxy_with(db, phone_raw()).await;
    let client = proxy.connect("support_app", db).await;
    assert_eq!(phone_of_1(&client).await.expect("raw phone"), PHONES[0]);
    assert!(
        install(&proxy, &shop::test_policy()),
        "valid policy rejected"
    );
    let masked = phone_of_1(&client).await.expect("masked phone");
    assert_ne!(masked, PHONES[0]);
    assert_eq!(masked, "138****5670");
}

#[tokio::test]
async fn invalid_policy_keeps_running_one() {
    let db = "shop_reload_invalid";
    let proxy = proxy_with(db, shop::test_policy()).await;
    let client = proxy.connect("support_app", db).await;
    assert_eq!(phone_of_1(&client).await.expect("masked"), "138****5670");
    let broken = format!("{}\n[roles.broken]\nusers = [\"support_app\"]\nstatements = [\"all\"]\ntables = [\"*\"]\nsee = {{ default = \"raw\" }}\n", phone_raw());
    assert!(
        !install(&proxy, &broken),
        "overlapping users must be rejected"
    );
    assert!(
        !install(&proxy, "version = 1\n[roles.support\n"),
        "syntax error accepted"
    );
    assert_eq!(
        phone_of_1(&client).await.expect("still masked"),
        "138****5670"
    );
    let fresh = proxy.connect("support_app", db).await;
    assert_eq!(
        phone_of_1(&fresh).await.expect("new session masked"),
        "138****5670"
    );
}

#[tokio::test]
async fn file_change_is_picked_up_by_the_watcher() {
    let db = "shop_reload_watch";
    let proxy = proxy_with(db, phone_raw()).await;
    let client = proxy.connect("support_app", db).await;
    assert_eq!(phone_of_1(&client).await.expect("raw"), PHONES[0]);
    std::fs::write(proxy.dir.join("policy.toml"), phone_denied()).expect("write policy");
    let mut last = String::new();
    for _ in 0..50 {
        match phone_of_1(&client).await {
            Err(e) => {
                let code = e.as_db_error().map(|d| d.code().code().to_owned());
                assert_eq!(code.as_deref(), Some("42501"), "{e}");
                return;
            }
            Ok(v) => last = v,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("policy change not applied within 5 s; still sees {last}");
}

#[tokio::test]
async fn statement_prepared_before_reload_is_rechecked() {
    let db = "shop_reload_prepared";
    let proxy = proxy_with(db, shop::test_policy()).await;
    let client = proxy.connect("support_app", db).await;
    let stmt = client
        .prepare("SELECT phone, id_card FROM customers WHERE id = $1")
        .await
        .expect("prepare");
    let harmless = client
        // Its decision (Allow) does not change with the reload.
        .prepare("SELECT $1::bigint + 1")
        .await
        .expect("prepare harmless");
    let row = client.query_one(&stmt, &[&1i64]).await.expect("masked");
    assert_eq!(row.get::<_, String>(0), "138****5670");
    assert_ne!(row.get::<_, String>(1), ID_CARDS[0]);

    assert!(install(&proxy, &phone_denied()), "valid policy rejected");
    let err = match client.query_one(&stmt, &[&1i64]).await {
        Ok(r) => panic!(
            "phone now denied, yet the statement prepared before the reload ran and returned {:?}",
            r.get::<_, Option<String>>(0)
        ),
        Err(e) => e,
    };
    assert_eq!(
        err.as_db_error().map(|d| d.code().code()),
        Some("42501"),
        "{err:?}"
    );
    let row = client
        .query_one(&harmless, &[&1i64])
        .await
        .expect("unchanged decision still runs");
    assert_eq!(row.get::<_, i64>(0), 2);

    assert!(install(&proxy, &phone_raw()), "valid policy rejected");
    let row = client.query_one(&stmt, &[&1i64]);
    match row.await {
        Ok(r) => assert_eq!(r.get::<_, String>(0), PHONES[0], "raw after reload"),
        Err(e) => assert_eq!(
            e.as_db_error().map(|d| d.code().code()),
            Some("42501"),
            "{e:?}"
        ),
    }
}

#[tokio::test]
async fn raw_protocol_named_statement_rechecked() {
    use harness::raw;
    use tokio::io::AsyncWriteExt;
    let db = "shop_reload_raw";
    let proxy = proxy_with(db, phone_raw()).await;
    let (mut s, _, _) = raw::login(proxy.port(), "support_app", db).await;
    let mut parse = b"s1\0SELECT phone FROM customers WHERE id = 1\0".to_vec();
    parse.extend_from_slice(&[0, 0]);
    let mut msg = raw::message(b'P', &parse);
    msg.extend(raw::message(b'S', &[]));
    s.write_all(&msg).await.expect("parse");
    let msgs = raw::read_until_ready(&mut s).await;
    assert!(msgs.iter().any(|m| m.tag == b'1'), "{msgs:?}");
    let exec = |portal_stmt: &[u8]| {
        let mut b = b"\0".to_vec();
        b.extend_from_slice(portal_stmt);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut m = raw::message(b'B', &b);
        m.extend(raw::message(b'E', &[0, 0, 0, 0, 0]));
        m.extend(raw::message(b'S', &[]));
        m
    };
    s.write_all(&exec(b"s1\0")).await.expect("execute");
    let msgs = raw::read_until_ready(&mut s).await;
    assert_eq!(
        raw::first_value(&msgs).as_deref(),
        Some(PHONES[0]),
        "{msgs:?}"
    );
    assert!(
        install(&proxy, &shop::test_policy()),
        "valid policy rejected"
    );
    s.write_all(&exec(b"s1\0")).await.expect("execute");
    let msgs = raw::read_until_ready(&mut s).await;
    let leaked = msgs.iter().any(|m| {
        m.body
            .windows(PHONES[0].len())
            .any(|w| w == PHONES[0].as_bytes())
    });
    assert!(!leaked, "raw phone after the policy masked it: {msgs:?}");
    let err = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .and_then(|m| m.sqlstate());
    assert_eq!(err.as_deref(), Some("42501"), "{msgs:?}");
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'));
}
