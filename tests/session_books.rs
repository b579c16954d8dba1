//! The restricted session's books of SQL `PREPARE`d statements and cursors follow the
//! server: a PREPARE pipelined ahead of its EXECUTE (in another Query or batch) is waited
//! for, not refused; a PREPARE the server skipped after an earlier error is forgotten
//! (and still audited, as not run); a PREPARE sent through the extended protocol counts.
//! Every reply is read with the raw protocol client and checked for raw values.

use std::path::Path;
use std::time::{Duration, Instant};

use harness::raw::{self, Msg};
use harness::shop::{self, forbidden};
use harness::{start_proxy, ProxyOptions};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A role whose phones come back masked.
const T: &str = "scratch";
/// Rows of `customers`.
const CUSTOMERS: usize = 10;
const PREPARE_PHONES: &str = "SELECT phone FROM customers";

async fn books_proxy(db: &str, extra: &str) -> harness::ProxyHandle {
    shop::shop_db(db);
    start_proxy(ProxyOptions {
        policy: Some(shop::test_policy()),
        extra: extra.to_owned(),
        ..Default::default()
    })
    .await
}

async fn open(proxy: &harness::ProxyHandle, db: &str) -> TcpStream {
    raw::login(proxy.port(), T, db).await.0
}

/// Send `msgs` in one write and read the replies up to the `n`-th ReadyForQuery (a
/// missing reply ends a read after the raw client's timeout, and fails the caller's
/// assertions instead of hanging).
async fn pipeline(s: &mut TcpStream, msgs: &[Vec<u8>], n: usize) -> Vec<Msg> {
    s.write_all(&msgs.concat()).await.expect("pipeline");
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend(raw::read_until_ready(s).await);
    }
    out
}

fn readies(msgs: &[Msg]) -> usize {
    msgs.iter().filter(|m| m.tag == b'Z').count()
}

fn data_rows(msgs: &[Msg]) -> usize {
    msgs.iter().filter(|m| m.tag == b'D').count()
}

fn errors(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'E')
        .filter_map(Msg::sqlstate)
        .collect()
}

fn assert_no_leaks(msgs: &[Msg]) {
    for value in forbidden() {
        for m in msgs {
            let hay = &m.body;
            assert!(
                !hay.windows(value.len()).any(|w| w == value.as_bytes()),
                "raw value {value:?} in {m:?}"
            );
        }
    }
}

/// `PREPARE` and `EXECUTE` sent as two Queries without waiting for the first
/// ReadyForQuery (or in two extended-protocol batches): the EXECUTE was decided before
/// the server had answered the PREPARE and refused with 26000, though the server would
/// run it. It waits for the PREPARE's completion now. In the same batch it cannot wait
/// (the server answers at the Sync) and needs not: the server runs it after the PREPARE.
#[tokio::test]
async fn pipelined_prepare_then_execute() {
    let db = "shop_books_pipelined";
    let proxy = books_proxy(db, "").await;
    let mut s = open(&proxy, db).await;
    let mut seen = Vec::new();

    let r = pipeline(
        &mut s,
        &[
            raw::query(&format!("PREPARE pq AS {PREPARE_PHONES}")),
            raw::query("EXECUTE pq"),
        ],
        2,
    )
    .await;
    assert_eq!((readies(&r), errors(&r)), (2, vec![]), "{r:?}");
    assert_eq!(data_rows(&r), CUSTOMERS, "{r:?}");
    seen.extend(r);

    // Two extended-protocol batches, then one batch.
    let r = pipeline(
        &mut s,
        &[
            raw::parse("", &format!("PREPARE pe AS {PREPARE_PHONES}")),
            raw::bind_execute(""),
            raw::sync(),
            raw::parse("", "EXECUTE pe"),
            raw::bind_execute(""),
            raw::sync(),
            raw::parse("", &format!("PREPARE pf AS {PREPARE_PHONES}")),
            raw::bind_execute(""),
            raw::parse("", "EXECUTE pf"),
            raw::bind_execute(""),
            raw::sync(),
        ],
        3,
    )
    .await;
    assert_eq!((readies(&r), errors(&r)), (3, vec![]), "{r:?}");
    assert_eq!(data_rows(&r), 2 * CUSTOMERS, "{r:?}");
    seen.extend(r);

    // PREPAREs the server refuses: the EXECUTE behind it finds no statement, or the
    // first one.
    let r = pipeline(
        &mut s,
        &[
            raw::query("PREPARE pn AS SELECT no_such_column FROM customers"),
            raw::query("EXECUTE pn"),
            raw::query("PREPARE pq AS SELECT 'x'::text AS phone"),
            raw::query("EXECUTE pq"),
        ],
        4,
    )
    .await;
    assert_eq!(readies(&r), 4, "{r:?}");
    assert_eq!(errors(&r), ["42703", "26000", "42P05"], "{r:?}");
    assert_eq!(data_rows(&r), CUSTOMERS, "{r:?}");
    seen.extend(r);
    assert_no_leaks(&seen);
}

/// Waits until the audit file holds an event satisfying `found`, then returns it.
async fn wait_for_event(path: &Path, found: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        let hit = complete
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| found(e));
        if let Some(e) = hit {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no such audit event; have:\n{complete}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `PREPARE` after a statement that fails in the same Query never runs: the proxy
/// dropped the rest of the Query's statements without telling the enforcer, so the
/// PREPARE stayed in flight for the whole session (and an EXECUTE of it waited for an
/// answer that never came), and its audit event was lost. The statements the server
/// skips are settled as not run: audited with `details.not_run`, and forgotten.
#[tokio::test]
async fn prepare_skipped_after_an_error_is_forgotten_and_audited() {
    let db = "shop_books_skipped";
    let audit = "[audit]\non_failure = \"block\"\n[[audit.sinks]]\nkind = \"file\"\npath = \"audit.jsonl\"\n";
    let proxy = books_proxy(db, audit).await;
    let mut s = open(&proxy, db).await;
    let mut seen = Vec::new();

    let r = raw::simple(
        &mut s,
        &format!("SELECT 1/0; PREPARE pz AS {PREPARE_PHONES}"),
    )
    .await;
    assert_eq!(errors(&r), ["22012"], "{r:?}");
    let r = raw::simple(&mut s, "EXECUTE pz").await;
    assert_eq!(
        (readies(&r), errors(&r)),
        (1, vec!["26000".into()]),
        "{r:?}"
    );
    seen.extend(r);

    // The same in an extended-protocol batch: the Execute after the error is skipped.
    let r = pipeline(
        &mut s,
        &[
            raw::parse("", "SELECT 1/0"),
            raw::bind_execute(""),
            raw::parse("", &format!("PREPARE py AS {PREPARE_PHONES}")),
            raw::bind_execute(""),
            raw::sync(),
            raw::query("EXECUTE py"),
        ],
        2,
    )
    .await;
    assert_eq!(
        (readies(&r), errors(&r)),
        (2, vec!["22012".into(), "26000".into()]),
        "{r:?}"
    );
    seen.extend(r);
    assert_no_leaks(&seen);

    let path = proxy.dir.join("audit.jsonl");
    for name in ["pz", "py"] {
        let ev = wait_for_event(&path, |e| {
            e["event"] == "statement"
                && e["query"]
                    .as_str()
                    .is_some_and(|q| q.starts_with(&format!("PREPARE {name} ")))
        })
        .await;
        assert_eq!(ev["details"]["not_run"], true, "{ev}");
        assert!(ev["rows"].is_null(), "{ev}");
    }
}

/// A `PREPARE` sent through the extended protocol (Parse, Bind, Execute of the PREPARE
/// text) prepares the statement like a simple Query does: EXECUTE runs it, by simple
/// Query and through the extended protocol, and so does a Bind of its name.
#[tokio::test]
async fn prepare_through_the_extended_protocol() {
    let db = "shop_books_extended";
    let proxy = books_proxy(db, "").await;
    let mut s = open(&proxy, db).await;
    let mut seen = Vec::new();

    let r = pipeline(
        &mut s,
        &[
            raw::parse("", &format!("PREPARE px AS {PREPARE_PHONES}")),
            raw::bind_execute(""),
            raw::sync(),
        ],
        1,
    )
    .await;
    assert_eq!(errors(&r), Vec::<String>::new(), "{r:?}");
    let r = raw::simple(&mut s, "EXECUTE px").await;
    assert_eq!((data_rows(&r), errors(&r)), (CUSTOMERS, vec![]), "{r:?}");
    seen.extend(r);
    let r = pipeline(
        &mut s,
        &[
            raw::parse("", "EXECUTE px"),
            raw::bind_execute(""),
            raw::sync(),
        ],
        1,
    )
    .await;
    assert_eq!((data_rows(&r), errors(&r)), (CUSTOMERS, vec![]), "{r:?}");
    seen.extend(r);
    let r = pipeline(&mut s, &[raw::bind_execute("px"), raw::sync()], 1).await;
    assert_eq!((data_rows(&r), errors(&r)), (CUSTOMERS, vec![]), "{r:?}");
    seen.extend(r);
    assert_no_leaks(&seen);
}
