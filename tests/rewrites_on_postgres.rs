//! Every statement the policy crate forwards in its own tests (rewritten or allowed)
//! must run on a real PostgreSQL: the `testing::rewrite_cases()` list plus every
//! `sup(…)`/`bi(…)`/`ops(…)` case of policy/src/decide/tests.rs, decided against
//! `sample_policy()` over `sample_catalog()` and executed in a rolled-back transaction on
//! a database with the same schema. Statements that need session state (FETCH from a
//! cursor, EXECUTE of a prepared statement) get a stand-in cursor or statement first.

use harness::postgres;
use harness::raw;
use pgveil_policy::decide::{decide, MaskKey, SessionFacts, Verdict};
use pgveil_policy::testing::{rewrite_cases, sample_catalog, sample_policy};

/// The schema `sample_catalog()` describes.
const SCHEMA: &str = "
DROP SCHEMA IF EXISTS audit CASCADE;
DROP VIEW IF EXISTS customer_names, customer_contacts;
DROP TABLE IF EXISTS orders, products, customers;
CREATE TABLE customers (id bigint primary key, name text, id_card text, phone text, email text,
  bank_card text, address text, birth_date date, vip_level integer, created_at timestamptz);
CREATE TABLE orders (id bigint primary key, customer_id bigint, amount numeric, ship_phone text,
  ship_address text, status text, created_at timestamptz);
CREATE TABLE products (id bigint primary key, title text, price numeric);
CREATE VIEW customer_names AS SELECT id, name, phone FROM customers;
CREATE VIEW customer_contacts AS SELECT id, phone FROM customers;
CREATE SCHEMA audit; CREATE TABLE audit.customers (id bigint, note text);
CREATE OR REPLACE FUNCTION public.risky(VARIADIC a text[] DEFAULT '{}') RETURNS text LANGUAGE sql AS 'SELECT 1::text';
CREATE OR REPLACE FUNCTION public.allowed_fn(VARIADIC a text[] DEFAULT '{}') RETURNS text LANGUAGE sql AS 'SELECT 1::text';
INSERT INTO customers VALUES (1, 'n', '110105194912310021', '13812345678', 'a@example.com',
  '6222021234567890123', 'addr', '1949-12-31', 1, now());
CREATE OR REPLACE FUNCTION public.risky(integer) RETURNS text LANGUAGE sql AS 'SELECT 1::text';
CREATE OR REPLACE FUNCTION public.allowed_fn(integer) RETURNS text LANGUAGE sql AS 'SELECT 1::text';
INSERT INTO orders VALUES (100, 1, 10, '13812345678', 'addr', 'paid', now());
INSERT INTO products VALUES (1, 't', 1);
";

/// Parses the Rust string literal starting at `s` (just after the opening quote).
fn rust_string(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                '0' => out.push('\0'),
                '\n' => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                }
                other => {
                    out.push('\\');
                    out.push(other);
                }
            },
            c => out.push(c),
        }
    }
    None
}

/// (sql, user, purpose) of every `sup("…")`, `bi("…")`, `ops("…")` in the decide tests.
fn harvested() -> Vec<(String, &'static str, Option<&'static str>)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policy/src/decide/tests.rs"
    ))
    .expect("read policy/src/decide/tests.rs");
    let mut out = Vec::new();
    for (call, user, purpose) in [
        ("sup(\"", "support_app", Some("customer_service")),
        ("bi(\"", "bi", None),
        ("ops(\"", "ops", None),
    ] {
        for (i, _) in text.match_indices(call) {
            let before = text[..i].chars().next_back().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' {
                continue;
            }
            if let Some(sql) = rust_string(&text[i + call.len()..]) {
                out.push((sql, user, purpose));
            }
        }
    }
    out
}

/// Parse and describe `sql` (it has parameters, so it cannot run as a simple Query):
/// PostgreSQL resolves every name and type at this step.
async fn parse_only(s: &mut tokio::net::TcpStream, sql: &str) -> Vec<raw::Msg> {
    use tokio::io::AsyncWriteExt;
    let mut p = vec![0u8];
    p.extend_from_slice(sql.as_bytes());
    p.extend_from_slice(&[0, 0, 0]);
    let mut m = raw::message(b'P', &p);
    m.extend(raw::message(b'D', b"S\0"));
    m.extend(raw::message(b'S', &[]));
    s.write_all(&m).await.expect("send parse");
    raw::read_until_ready(s).await
}

#[tokio::test]
async fn policy_rewrites_run_on_postgres() {
    let pg = postgres();
    let db = "policy_rewrites";
    pg.create_database(db);
    pg.psql_admin(db, SCHEMA);
    let policy = sample_policy();
    let catalog = sample_catalog();
    let key = MaskKey::new(b"test-key");
    let path = vec!["\"$user\"".to_string(), "public".to_string()];
    let mut cases: Vec<(String, &str, Option<&str>, bool)> = rewrite_cases()
        .into_iter()
        .map(|(s, u, p)| (s.to_string(), u, p, true))
        .collect();
    let harvested = harvested();
    assert!(harvested.len() >= 50, "harvested only {}", harvested.len());
    cases.extend(harvested.into_iter().map(|(s, u, p)| (s, u, p, false)));

    let (mut s, _, _) = raw::login(pg.port, "postgres", db).await;
    let mut fails = Vec::new();
    let mut executed = 0;
    for (sql, user, purpose, must_pass) in &cases {
        let facts = SessionFacts {
            user,
            role: policy.role_for_user(user),
            purpose: *purpose,
            search_path: &path,
            temp_schema: None,
        };
        let outcome = decide(&policy, &facts, &catalog, &key, sql);
        let text = match &outcome.verdict {
            Verdict::Allow => sql.clone(),
            Verdict::Rewrite(t) => t.clone(),
            Verdict::Deny(d) => {
                if *must_pass {
                    fails.push(format!("{user}: {sql}\n    denied: {}", d.message));
                }
                continue;
            }
        };
        raw::simple(&mut s, "BEGIN").await;
        let upper = text.trim_start().to_ascii_uppercase();
        if ["FETCH", "MOVE", "CLOSE"]
            .iter()
            .any(|k| upper.starts_with(k))
        {
            raw::simple(&mut s, "DECLARE c CURSOR FOR SELECT 1").await;
        }
        if upper.contains("WHERE CURRENT OF CUR") {
            raw::simple(
                &mut s,
                "DECLARE cur CURSOR FOR SELECT * FROM products FOR UPDATE; FETCH cur",
            )
            .await;
        }
        if upper.starts_with("EXECUTE") {
            raw::simple(&mut s, "PREPARE p(int) AS SELECT $1").await;
        }
        let msgs = if text.contains("$1") {
            parse_only(&mut s, &text).await
        } else {
            raw::simple(&mut s, &text).await
        };
        raw::simple(&mut s, "ROLLBACK; DEALLOCATE ALL").await;
        executed += 1;
        if let Some(e) = msgs.iter().find(|m| m.tag == b'E') {
            fails.push(format!(
                "{user}: {sql}\n    forwarded: {text}\n    postgres: {} {}",
                e.sqlstate().unwrap_or_default(),
                e.field(b'M').unwrap_or_default()
            ));
        }
    }
    assert!(executed >= 40, "only {executed} statements executed");
    assert!(
        fails.is_empty(),
        "{} of {executed} forwarded statements fail on PostgreSQL:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// What `partial(keep_first, keep_last, fill)` must produce (design.md): short values
/// become all fill, longer ones keep their ends; characters, not bytes.
fn partial_reference(v: &str, first: usize, last: usize, fill: &str) -> String {
    let chars: Vec<char> = v.chars().collect();
    if chars.len() <= first + last {
        return fill.repeat(chars.len());
    }
    let head: String = chars[..first].iter().collect();
    let tail: String = chars[chars.len() - last..].iter().collect();
    format!("{head}{}{tail}", fill.repeat(chars.len() - first - last))
}

/// `email`: first character of the local part, `***@`, the domain; `***` without `@`.
fn email_reference(v: &str) -> String {
    match v.split_once('@') {
        None => "***".to_string(),
        Some((local, domain)) => {
            format!(
                "{}***@{domain}",
                local.chars().next().map(String::from).unwrap_or_default()
            )
        }
    }
}

/// The mask expressions evaluate on PostgreSQL to exactly what the design specifies, for
/// NULL, empty, short, long and multibyte values and multi-character fills.
#[tokio::test]
async fn masks_evaluate_as_specified_on_postgres() {
    use pgveil_policy::mask::render;
    use pgveil_policy::model::Mask;

    let pg = postgres();
    let db = "mask_values";
    pg.create_database(db);
    let (mut s, _, _) = raw::login(pg.port, "postgres", db).await;
    let key = MaskKey::new(b"test-key");
    let values = [
        "",
        "a",
        "ab",
        "abcdefg",
        "abcdefgh",
        "13812345678",
        "张",
        "张三",
        "欧阳娜娜",
        "110105194912310021",
        "a@example.com",
        "@x",
        "x@",
        "no-at",
        "名字@例子.中国",
    ];
    let partials: [(u32, u32, &str); 6] = [
        (3, 4, "*"),
        (1, 0, "*"),
        (0, 4, "#"),
        (2, 2, "**"),
        (0, 0, "*"),
        (6, 4, "*"),
    ];
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let eval = |expr: String, v: Option<&str>| {
        let lit = v.map_or("NULL".to_string(), quote);
        format!("SELECT {expr} FROM (VALUES ({lit}::text)) AS t(v)")
    };
    let mut fails = Vec::new();
    for (first, last, fill) in partials {
        let mask = Mask::Partial {
            keep_first: first,
            keep_last: last,
            fill: fill.into(),
        };
        let expr = render(&mask, "\"v\"", "text", &key);
        let got = raw::first_value(&raw::simple(&mut s, &eval(expr.clone(), None)).await);
        if got.is_some() {
            fails.push(format!(
                "partial({first},{last},{fill}) of NULL gave {got:?}"
            ));
        }
        for v in values {
            let msgs = raw::simple(&mut s, &eval(expr.clone(), Some(v))).await;
            let want = partial_reference(v, first as usize, last as usize, fill);
            if raw::first_value(&msgs).as_deref() != Some(want.as_str()) {
                fails.push(format!(
                    "partial({first},{last},{fill}) of {v:?}: {msgs:?}, want {want:?}"
                ));
            }
        }
    }
    let expr = render(&Mask::Email, "\"v\"", "text", &key);
    let got = raw::first_value(&raw::simple(&mut s, &eval(expr.clone(), None)).await);
    if got.is_some() {
        fails.push(format!("email of NULL gave {got:?}"));
    }
    for v in values {
        let msgs = raw::simple(&mut s, &eval(expr.clone(), Some(v))).await;
        let want = email_reference(v);
        if raw::first_value(&msgs).as_deref() != Some(want.as_str()) {
            fails.push(format!("email of {v:?}: {msgs:?}, want {want:?}"));
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

/// Rows with NULLs, empty, short, multibyte and long values in every protected column,
/// for comparing proxy-side masks with the rewrite.
const MORE_ROWS: &str = "
INSERT INTO customers VALUES
  (2, '欧阳娜娜', '11010519491231002X', '1381234', '张三@例子.中国', '62', '北京市朝阳区', NULL, 2, now()),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, '2000-02-29', NULL, NULL),
  (4, '', '', '', 'no-at', '', '', '1970-01-01', 3, now()),
  (5, 'a', 'ab', '12345678', '@x', '1', 'x', NULL, 4, now());
INSERT INTO orders VALUES (101, 2, 5, '张三', '地址', 'new', now());
";

/// Every statement the policy lets the proxy mask in the result stream (instead of
/// forwarding its rewrite) gives exactly the rewrite's rows and row description: the
/// original text runs on PostgreSQL, the proxy's masks are applied to its messages, and
/// the bytes are compared with what the rewritten text returns.
#[tokio::test]
async fn row_masks_equal_the_rewrite_on_postgres() {
    use pgveil::wire::row_mask;

    let pg = postgres();
    let db = "row_masks";
    pg.create_database(db);
    pg.psql_admin(db, SCHEMA);
    pg.psql_admin(db, MORE_ROWS);
    let policy = sample_policy();
    let catalog = sample_catalog();
    let key = MaskKey::new(b"test-key");
    let path = vec!["\"$user\"".to_string(), "public".to_string()];
    let mut cases: Vec<(String, &str, Option<&str>)> = rewrite_cases()
        .into_iter()
        .map(|(s, u, p)| (s.to_string(), u, p))
        .collect();
    cases.extend(harvested());
    for extra in [
        "SELECT * FROM customers WHERE id > 1",
        "SELECT c.phone AS p, c.id FROM customers c ORDER BY c.id",
        "SELECT email, id_card, address FROM customers ORDER BY id",
        "SELECT name, phone, email, address, id_card FROM public.customers",
        "SELECT ship_phone, ship_address FROM orders ORDER BY id",
    ] {
        cases.push((extra.to_string(), "bi", None));
        cases.push((extra.to_string(), "support_app", Some("customer_service")));
    }

    let (mut s, _, _) = raw::login(pg.port, "postgres", db).await;
    let mut fails = Vec::new();
    let mut compared = 0;
    for (sql, user, purpose) in &cases {
        let facts = SessionFacts {
            user,
            role: policy.role_for_user(user),
            purpose: *purpose,
            search_path: &path,
            temp_schema: None,
        };
        let outcome = decide(&policy, &facts, &catalog, &key, sql);
        let (Verdict::Rewrite(text), Some(masks)) = (&outcome.verdict, &outcome.row_masks) else {
            continue;
        };
        if sql.contains("$1") {
            continue;
        }
        let expected = raw::simple(&mut s, text).await;
        let original = raw::simple(&mut s, sql).await;
        let mut got = Vec::new();
        for m in &original {
            let mut out = Vec::new();
            match m.tag {
                b'D' => row_mask::data_row(&m.body, masks, &key, &mut out).expect("row"),
                b'T' => row_mask::row_description(&m.body, masks, &mut out).expect("desc"),
                _ => {
                    got.push(m.clone());
                    continue;
                }
            }
            got.push(raw::Msg {
                tag: out[0],
                body: out[5..].to_vec(),
            });
        }
        compared += 1;
        if got != expected {
            fails.push(format!(
                "{user}: {sql}\n    rewrite: {text}\n    expected {expected:?}\n    got      {got:?}"
            ));
        }
    }
    assert!(compared >= 10, "only {compared} statements had row masks");
    assert!(
        fails.is_empty(),
        "{} of {compared} masked in the proxy differ from the rewrite:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// Forms sqlparser lacks (TABLE, ONLY, TABLESAMPLE, continued literals, FETCH FIRST
/// (expr)) are rewritten for a restricted role and return masked phones, never raw ones.
#[tokio::test]
async fn forms_read_through_equivalents_return_masked_values() {
    let pg = postgres();
    let db = "prep_forms";
    pg.create_database(db);
    pg.psql_admin(db, SCHEMA);
    let policy = sample_policy();
    let catalog = sample_catalog();
    let key = MaskKey::new(b"test-key");
    let path = vec!["\"$user\"".to_string(), "public".to_string()];
    let facts = SessionFacts {
        user: "bi",
        role: policy.role_for_user("bi"),
        purpose: None,
        search_path: &path,
        temp_schema: None,
    };
    let (mut s, _, _) = raw::login(pg.port, "postgres", db).await;
    let has = |msgs: &[raw::Msg], needle: &[u8]| {
        msgs.iter()
            .filter(|m| m.tag == b'D')
            .any(|m| m.body.windows(needle.len()).any(|w| w == needle))
    };
    for sql in [
        "TABLE customers",
        "SELECT 1 AS x, '' AS y, '' AS z, '' AS p UNION ALL (SELECT id, name, id_card, phone FROM customers)",
        "SELECT * FROM (TABLE customers) t",
        "SELECT phone FROM ONLY customers",
        "SELECT phone FROM customers AS c TABLESAMPLE BERNOULLI (100) REPEATABLE (1)",
        "SELECT phone FROM customers WHERE name = 'n'\n  '' FETCH FIRST (0+1) ROWS ONLY",
    ] {
        let outcome = decide(&policy, &facts, &catalog, &key, sql);
        let Verdict::Rewrite(text) = &outcome.verdict else {
            panic!("{sql}: expected a rewrite, got {:?}", outcome.verdict);
        };
        let msgs = raw::simple(&mut s, text).await;
        assert!(
            msgs.iter().all(|m| m.tag != b'E'),
            "{sql}\n{text}\n{msgs:?}"
        );
        assert!(has(&msgs, b"138****5678"), "{sql}: no masked phone\n{text}");
        assert!(!has(&msgs, b"13812345678"), "{sql}: raw phone\n{text}");
    }
}
