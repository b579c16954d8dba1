//! End-to-end audit: a scripted session through the enforcing proxy leaves exactly the
//! events the design promises (one per executed statement, session start/end, failed
//! logins), never a literal, in a hash chain that `pgveil audit verify` checks and that
//! catches edits, deletions and reordering. Also the HTTP sink and `on_failure = "drop"`
//! through the real proxy.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::pg::free_port;
use harness::small_shop::{setup_shop, shop_policy};
use harness::{connect_err, start_proxy, users, ProxyHandle, ProxyOptions};
use pgveil::audit::{verify, ChainProblem, VerifyError, DEFAULT_GENESIS};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Literals the session sends; none may reach the audit log.
const WHERE_PHONE: &str = "13900009999";
const INSERTED_NAME: &str = "Literal-Name-Q7x";
const INSERTED_PHONE: &str = "13700001111";

fn file_sink_config() -> String {
    "[audit]\non_failure = \"block\"\n[[audit.sinks]]\nkind = \"file\"\npath = \"audit.jsonl\"\n"
        .to_owned()
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l}: {e}")))
        .collect()
}

/// Waits until the audit file's events satisfy `done`, then returns them.
async fn wait_for_events(path: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // Only complete lines: the writer may be mid-line.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        let events = parse_lines(complete);
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "audit events did not arrive in time; have:\n{complete}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the scripted support session; returns its events once it has ended.
async fn scripted_session(proxy: &ProxyHandle, db: &str) {
    let dsn = format!("{} application_name=crm", proxy.dsn("support_app", db));
    let support = harness::connect_dsn(&dsn).await;

    // 1+2: a multi-statement simple Query.
    let msgs = support
        .simple_query(&format!(
            "SELECT id, name FROM customers WHERE id = 1; \
             SELECT count(*) FROM customers WHERE phone = '{WHERE_PHONE}'"
        ))
        .await
        .expect("multi-statement query");
    let rows = msgs
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, 2, "one row from each statement");

    // 3-5: one prepared statement, executed three times.
    let st = support
        .prepare("SELECT name, phone FROM customers WHERE id = $1")
        .await
        .expect("prepare");
    for _ in 0..3 {
        let rows = support.query(&st, &[&1i64]).await.expect("execute");
        assert_eq!(rows.len(), 1);
        assert_ne!(
            rows[0].get::<_, String>(1),
            "13812345678",
            "phone is masked"
        );
    }

    // 6: denied (bank_card is `deny` for support).
    let err = support
        .query("SELECT bank_card FROM customers", &[])
        .await
        .expect_err("bank_card is denied");
    assert_eq!(
        err.as_db_error().map(|d| d.code().code()),
        Some("42501"),
        "{err}"
    );

    // 7: INSERT with literals.
    let n = support
        .execute(
            &format!(
                "INSERT INTO customers (id, name, phone) VALUES (2, '{INSERTED_NAME}', '{INSERTED_PHONE}')"
            ),
            &[],
        )
        .await
        .expect("insert");
    assert_eq!(n, 1);

    // 8: COPY TO STDOUT of the two rows.
    let stream = support
        .copy_out("COPY customers (id, name, phone) TO STDOUT")
        .await
        .expect("copy out");
    futures_util::pin_mut!(stream);
    let mut copied = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        copied.extend_from_slice(&chunk.expect("copy data"));
    }
    let copied = String::from_utf8_lossy(&copied);
    assert_eq!(copied.lines().count(), 2, "{copied}");
    assert!(!copied.contains(INSERTED_PHONE), "COPY output is masked");
    drop(support);
}

#[tokio::test]
async fn scripted_session_is_audited_exactly_and_chain_verifies() {
    let db = "audit_script";
    setup_shop(db);
    let proxy = start_proxy(ProxyOptions {
        policy: Some(shop_policy()),
        extra: file_sink_config(),
        ..Default::default()
    })
    .await;
    let path = proxy.dir.join("audit.jsonl");

    scripted_session(&proxy, db).await;
    let e = connect_err(&format!(
        "host=127.0.0.1 port={} user={} dbname={db} password=wrong-password sslmode=disable",
        proxy.port(),
        users::SCRAM
    ))
    .await;
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("28P01"),
        "{e}"
    );

    let events = wait_for_events(&path, |ev| {
        !of_kind(ev, "session_end").is_empty() && !of_kind(ev, "login_failed").is_empty()
    })
    .await;
    for e in &events {
        eprintln!("{e}");
    }

    // Session framing.
    let starts = of_kind(&events, "session_start");
    assert_eq!(starts.len(), 1, "one session_start");
    let session = starts[0]["session"]
        .as_str()
        .expect("session id")
        .to_owned();
    assert_eq!(starts[0]["user"], "support_app");
    assert_eq!(starts[0]["database"], db);
    assert_eq!(starts[0]["application"], "crm");
    let ends = of_kind(&events, "session_end");
    assert_eq!(ends.len(), 1, "one session_end");
    assert_eq!(ends[0]["session"], session.as_str());
    let failed = of_kind(&events, "login_failed");
    assert_eq!(failed.len(), 1, "one login_failed");
    assert_eq!(failed[0]["user"], users::SCRAM);
    assert!(failed[0]["reason"].is_string(), "login_failed says why");

    // Exactly one statement event per executed statement, in order.
    let stmts = of_kind(&events, "statement");
    assert_eq!(stmts.len(), 8, "statement events: {stmts:#?}");
    for s in &stmts {
        assert_eq!(s["session"], session.as_str());
        assert_eq!(s["user"], "support_app");
        assert_eq!(s["role"], "support");
        assert_eq!(s["database"], db);
        assert_eq!(s["application"], "crm");
        assert_eq!(strings(&s["tables"]), vec!["public.customers"], "{s}");
        assert!(s["fingerprint"].is_string(), "{s}");
    }
    let kinds: Vec<&str> = stmts
        .iter()
        .map(|s| s["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        ["select", "select", "select", "select", "select", "select", "insert", "copy_to"]
    );
    let decisions: Vec<&str> = stmts
        .iter()
        .map(|s| s["decision"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(decisions[0], "rewrite", "name is masked: {}", stmts[0]);
    assert_eq!(
        decisions[1], "rewrite",
        "count over a masked table: {}",
        stmts[1]
    );
    assert_eq!(&decisions[2..5], ["rewrite"; 3]);
    assert_eq!(decisions[5], "deny");
    assert_eq!(
        decisions[7], "rewrite",
        "COPY reads masked columns: {}",
        stmts[7]
    );
    let rows: Vec<Option<u64>> = stmts.iter().map(|s| s["rows"].as_u64()).collect();
    assert_eq!(
        rows,
        [
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            None,
            Some(1),
            Some(2)
        ]
    );

    // Columns and classes.
    let masked0 = strings(&stmts[0]["columns"]["masked"]);
    assert!(
        masked0.contains(&"public.customers.name".to_owned()),
        "{}",
        stmts[0]
    );
    for s in &stmts[2..5] {
        let masked = strings(&s["columns"]["masked"]);
        assert!(masked.contains(&"public.customers.phone".to_owned()), "{s}");
        assert!(masked.contains(&"public.customers.name".to_owned()), "{s}");
        assert!(strings(&s["classes"]).contains(&"phone".to_owned()), "{s}");
        assert!(s["sqlstate"].is_null(), "{s}");
    }
    let denied = stmts[5];
    assert_eq!(
        strings(&denied["columns"]["denied"]),
        vec!["public.customers.bank_card"]
    );
    assert_eq!(denied["sqlstate"], "42501");
    assert!(denied["reason"].is_string(), "{denied}");
    assert!(strings(&denied["classes"]).contains(&"bank_card".to_owned()));
    let copy_masked = strings(&stmts[7]["columns"]["masked"]);
    assert!(copy_masked.contains(&"public.customers.phone".to_owned()));

    // No literal anywhere in the file.
    let text = std::fs::read_to_string(&path).expect("read audit file");
    for lit in [WHERE_PHONE, INSERTED_NAME, INSERTED_PHONE, "13812345678"] {
        assert!(
            !text.contains(lit),
            "literal {lit} leaked into the audit log"
        );
    }
    assert!(!text.contains("wrong-password"));

    // The chain verifies, from the genesis.
    let report = verify(std::slice::from_ref(&path), Some(DEFAULT_GENESIS)).expect("chain");
    assert_eq!(report.events, text.lines().count() as u64);
    assert_eq!(report.first_seq, Some(1));

    tamper_checks(&path, &text);
    cli_checks(&path, &text);
}

/// Writes `lines` to a fresh file next to the original and verifies it.
/// Without a policy the proxy is transparent, but audit sinks still get one event per
/// statement (simple and extended protocol), with literals stripped.
#[tokio::test]
async fn without_a_policy_every_statement_is_still_audited() {
    let db = "audit_nopolicy";
    setup_shop(db);
    let proxy = start_proxy(ProxyOptions {
        extra: file_sink_config(),
        ..Default::default()
    })
    .await;
    let path = proxy.dir.join("audit.jsonl");
    {
        let client = proxy.connect("support_app", db).await;
        let rows = client
            .simple_query(&format!(
                "SELECT phone FROM customers WHERE phone = '{WHERE_PHONE}' OR id = 1"
            ))
            .await
            .expect("simple query");
        assert!(rows
            .iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))));
        let st = client
            .prepare("SELECT name FROM customers WHERE id = $1")
            .await
            .expect("prepare");
        for _ in 0..2 {
            client.query(&st, &[&1i64]).await.expect("execute");
        }
    }
    let events = wait_for_events(&path, |ev| !of_kind(ev, "session_end").is_empty()).await;
    let text = std::fs::read_to_string(&path).expect("audit file");
    assert!(
        !text.contains(WHERE_PHONE),
        "a literal reached the audit log"
    );
    let stmts = of_kind(&events, "statement");
    assert_eq!(stmts.len(), 3, "statement events: {stmts:#?}");
    for s in &stmts {
        assert_eq!(s["user"], "support_app");
        assert_eq!(s["kind"], "select");
        assert_eq!(s["decision"], "allow");
        assert_eq!(s["rows"], 1);
        assert_eq!(s["sqlstate"], Value::Null);
    }
    assert_eq!(
        stmts[0]["query"],
        "SELECT phone FROM customers WHERE phone = ? OR id = ?"
    );
    assert_eq!(
        stmts[1]["query"],
        "SELECT name FROM customers WHERE id = $1"
    );
    verify(&[path], Some(DEFAULT_GENESIS)).expect("chain verifies");
}

fn verify_variant(dir: &Path, name: &str, lines: &[&str]) -> Result<(), VerifyError> {
    let p = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&p, text).expect("write tampered copy");
    verify(&[p], Some(DEFAULT_GENESIS)).map(drop)
}

fn broken_at(r: Result<(), VerifyError>) -> (u64, ChainProblem) {
    match r {
        Err(VerifyError::Broken { line, problem, .. }) => (line, problem),
        other => panic!("tampering not caught: {other:?}"),
    }
}

fn tamper_checks(path: &Path, text: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 6);

    // One byte changed inside a line (a row count).
    let i = lines
        .iter()
        .position(|l| l.contains("\"rows\":1,"))
        .expect("a line with rows 1");
    let edited = lines[i].replacen("\"rows\":1,", "\"rows\":7,", 1);
    let mut v = lines.clone();
    v[i] = &edited;
    let (line, problem) = broken_at(verify_variant(dir.path(), "edited.jsonl", &v));
    assert_eq!(line, i as u64 + 1);
    assert!(matches!(problem, ChainProblem::Changed { .. }), "{problem}");

    // A line deleted.
    let mut v = lines.clone();
    v.remove(2);
    let (line, problem) = broken_at(verify_variant(dir.path(), "deleted.jsonl", &v));
    assert_eq!(line, 3);
    assert_eq!(
        problem,
        ChainProblem::Seq {
            expected: 3,
            found: 4
        }
    );

    // Two lines swapped.
    let mut v = lines.clone();
    v.swap(2, 3);
    let (line, problem) = broken_at(verify_variant(dir.path(), "swapped.jsonl", &v));
    assert_eq!(line, 3);
    assert_eq!(
        problem,
        ChainProblem::Seq {
            expected: 3,
            found: 4
        }
    );

    // The first line removed: caught against the genesis.
    let (line, _) = broken_at(verify_variant(dir.path(), "head.jsonl", &lines[1..]));
    assert_eq!(line, 1);

    // The original is still intact.
    verify(&[path.to_path_buf()], Some(DEFAULT_GENESIS)).expect("original untouched");
}

/// The `pgveil` binary next to this test's deps directory (target/debug/pgveil).
fn pgveil_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("pgveil");
    bin.exists().then_some(bin)
}

fn cli_checks(path: &Path, text: &str) {
    let Some(bin) = pgveil_binary() else {
        eprintln!("skipping `pgveil audit verify` checks: target/debug/pgveil not built");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.jsonl");
    std::fs::copy(path, &good).expect("copy audit file");
    let out = std::process::Command::new(&bin)
        .args(["audit", "verify"])
        .arg(&good)
        .output()
        .expect("run pgveil audit verify");
    assert_eq!(
        out.status.code(),
        Some(0),
        "good file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK"));

    let bad = dir.path().join("bad.jsonl");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(1, 2);
    std::fs::write(&bad, lines.join("\n") + "\n").expect("write tampered copy");
    let out = std::process::Command::new(&bin)
        .args(["audit", "verify"])
        .arg(&bad)
        .output()
        .expect("run pgveil audit verify");
    assert_eq!(out.status.code(), Some(1), "tampered file must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2"),
        "names the first bad line: {stderr}"
    );
}

/// A minimal HTTP/1.1 collector: answers every request `200 OK` and keeps the bodies.
async fn collector() -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let port = listener.local_addr().expect("collector addr").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(head_end) = find(&buf, b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let total = head_end + 4 + len;
                    while buf.len() < total {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    sink.lock()
                        .expect("collector lock")
                        .extend_from_slice(&buf[head_end + 4..total]);
                    buf.drain(..total);
                    if sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, received)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn http_sink_receives_the_chain() {
    let db = "audit_http";
    setup_shop(db);
    let (port, received) = collector().await;
    let proxy = start_proxy(ProxyOptions {
        policy: Some(shop_policy()),
        extra: format!(
            "[audit]\non_failure = \"block\"\n[[audit.sinks]]\nkind = \"http\"\n\
             url = \"http://127.0.0.1:{port}/ingest\"\nbatch_max_ms = 50\n"
        ),
        ..Default::default()
    })
    .await;
    let support = proxy.connect("support_app", db).await;
    for _ in 0..3 {
        support
            .query("SELECT phone FROM customers WHERE id = 1", &[])
            .await
            .expect("select");
    }
    drop(support);

    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = String::from_utf8_lossy(&received.lock().expect("collector lock")).into_owned();
        if text.contains("\"session_end\"") {
            break text;
        }
        assert!(Instant::now() < deadline, "collector got only:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events = parse_lines(&text);
    let stmts = of_kind(&events, "statement");
    assert_eq!(stmts.len(), 3, "{text}");
    for s in stmts {
        assert_eq!(s["role"], "support");
        assert_eq!(s["decision"], "rewrite");
        assert_eq!(s["rows"], 1);
    }
    assert_eq!(of_kind(&events, "session_start").len(), 1);
    // The collector received the same sealed chain a file would hold.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("collected.jsonl");
    std::fs::write(&copy, &text).expect("write collected lines");
    verify(&[copy], Some(DEFAULT_GENESIS)).expect("collected chain verifies");
}

/// `audit_events_total{sink="queue",result="dropped"}` of this process.
fn dropped_events() -> f64 {
    let text = pgveil::metrics::metrics()
        .encode_text()
        .expect("encode metrics");
    String::from_utf8_lossy(&text)
        .lines()
        .find(|l| {
            l.starts_with("pgveil_audit_events_total{")
                && l.contains("result=\"dropped\"")
                && l.contains("sink=\"queue\"")
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

/// `[audit]` with one HTTP sink pointing at a port where nothing listens.
fn dead_sink_config(on_failure: &str) -> String {
    let dead = free_port();
    format!(
        "[audit]\non_failure = \"{on_failure}\"\nqueue_capacity = 2\nblock_timeout_ms = 200\n\
         retry_initial_ms = 10\nretry_max_ms = 100\n[[audit.sinks]]\nkind = \"http\"\n\
         url = \"http://127.0.0.1:{dead}/ingest\"\nbatch_max_events = 1\nbatch_max_ms = 10\n\
         timeout_ms = 200\n"
    )
}

#[tokio::test]
async fn on_failure_drop_keeps_serving_with_a_dead_sink() {
    let db = "audit_drop";
    setup_shop(db);
    let proxy = start_proxy(ProxyOptions {
        policy: Some(shop_policy()),
        extra: dead_sink_config("drop"),
        ..Default::default()
    })
    .await;
    let dropped_before = dropped_events();
    let support = proxy.connect("support_app", db).await;
    let served = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..30 {
            let rows = support
                .query("SELECT phone FROM customers WHERE id = 1", &[])
                .await
                .expect("query served despite the dead sink");
            assert_eq!(rows.len(), 1);
        }
    })
    .await;
    assert!(served.is_ok(), "queries stalled behind a dead audit sink");
    let auditor = &proxy.assembled.as_ref().expect("assembled").auditor;
    assert!(!auditor.is_healthy(), "the dead sink is reported unhealthy");
    assert_eq!(auditor.failing_sinks(), vec!["http".to_owned()]);
    assert!(
        dropped_events() > dropped_before,
        "the queue overflowed and the lost events were counted"
    );
}

#[tokio::test]
async fn on_failure_block_refuses_statements_with_a_dead_sink() {
    let db = "audit_block";
    setup_shop(db);
    let proxy = start_proxy(ProxyOptions {
        policy: Some(shop_policy()),
        extra: dead_sink_config("block"),
        ..Default::default()
    })
    .await;
    // The session itself may already be refused (its session_start cannot be recorded);
    // either way no statement may run unrecorded.
    let dsn = proxy.dsn("support_app", db);
    let refused = tokio::time::timeout(Duration::from_secs(30), async {
        let Ok((client, conn)) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await else {
            return true;
        };
        tokio::spawn(conn);
        for _ in 0..30 {
            match client
                .query("SELECT phone FROM customers WHERE id = 1", &[])
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    let code = e.as_db_error().map(|d| d.code().code().to_owned());
                    assert_eq!(code.as_deref(), Some("58000"), "{e}");
                    return true;
                }
            }
        }
        false
    })
    .await
    .expect("block mode answers within its timeout");
    assert!(
        refused,
        "block mode must refuse statements it cannot record"
    );
}
