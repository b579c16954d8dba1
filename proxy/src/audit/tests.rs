//! End-to-end tests of the audit pipeline (no PostgreSQL): chain and verify, rotation,
//! restart, block and drop backpressure, the HTTP sink against an in-test collector,
//! literal scrubbing, and a throughput measurement (ignored by default).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::verify::ChainProblem;
use super::*;

/// Counts what the auditor reports.
#[derive(Default)]
struct Counts {
    written: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    depth: AtomicUsize,
}

impl AuditObserver for Counts {
    fn written(&self, _sink: &str) {
        self.written.fetch_add(1, Ordering::Relaxed);
    }
    fn failed(&self, _sink: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
    fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
    fn queue_depth(&self, depth: usize) {
        self.depth.store(depth, Ordering::Relaxed);
    }
}

fn stmt(i: usize) -> AuditEvent {
    AuditEvent {
        session: Some("7f3a".into()),
        user: Some("support_app".into()),
        role: Some("support".into()),
        kind: Some("select".into()),
        decision: Some("rewrite".into()),
        query: Some(format!(
            "SELECT name, phone FROM customers c WHERE c.id = ${i}"
        )),
        tables: vec!["public.customers".into()],
        columns: Columns {
            masked: vec!["public.customers.phone".into()],
            raw: vec!["public.customers.name".into()],
            denied: vec![],
        },
        classes: vec!["phone".into()],
        rows: Some(1),
        duration_ms: Some(0.41),
        ..AuditEvent::default()
    }
}

fn file_sink(path: &Path) -> FileSinkConfig {
    FileSinkConfig {
        name: None,
        path: path.to_path_buf(),
        max_bytes: None,
        max_age_s: None,
        keep: 10,
        fsync: FsyncPolicy::Interval,
        fsync_interval_ms: 1000,
    }
}

fn config(sinks: Vec<SinkConfig>) -> AuditConfig {
    AuditConfig {
        sinks,
        retry_initial_ms: 10,
        retry_max_ms: 50,
        ..AuditConfig::default()
    }
}

fn http_sink(port: u16) -> HttpSinkConfig {
    HttpSinkConfig {
        name: None,
        url: format!("http://127.0.0.1:{port}/ingest"),
        batch_max_events: 5,
        batch_max_ms: 20,
        timeout_ms: 2000,
        bearer_token_env: None,
        bearer_token_file: None,
        ca_file: None,
    }
}

/// Writes `n` statement events through a file-sink auditor and shuts it down.
async fn write_events(cfg: &AuditConfig, from: usize, n: usize) {
    let auditor = Auditor::start(cfg, Arc::new(NoopObserver))
        .await
        .expect("auditor starts");
    for i in from..from + n {
        auditor.admit().await.expect("room").record(stmt(i));
    }
    auditor.shutdown().await;
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .expect("readable")
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).expect("writable");
}

fn broken_at(r: Result<VerifyReport, VerifyError>) -> (u64, ChainProblem) {
    match r {
        Err(VerifyError::Broken { line, problem, .. }) => (line, problem),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

async fn eventually(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn verify_names_the_tampered_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    write_events(&config(vec![SinkConfig::File(file_sink(&path))]), 1, 10).await;
    let files = vec![path.clone()];
    let genesis = Some(DEFAULT_GENESIS);
    let report = verify(&files, genesis).expect("intact chain");
    assert_eq!(report.events, 10);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(10)));
    let original = read_lines(&path);
    let bad = dir.path().join("bad.jsonl");
    let bad_files = vec![bad.clone()];

    // An edited byte.
    let mut lines = original.clone();
    lines[3] = lines[3].replacen("support_app", "support_apq", 1);
    write_lines(&bad, &lines);
    assert_eq!(
        broken_at(verify(&bad_files, genesis)),
        (4, ChainProblem::Changed { seq: 4 })
    );

    // A deleted line.
    let mut lines = original.clone();
    lines.remove(4);
    write_lines(&bad, &lines);
    assert_eq!(
        broken_at(verify(&bad_files, genesis)),
        (
            5,
            ChainProblem::Seq {
                expected: 5,
                found: 6
            }
        )
    );

    // A swapped pair.
    let mut lines = original.clone();
    lines.swap(5, 6);
    write_lines(&bad, &lines);
    assert_eq!(
        broken_at(verify(&bad_files, genesis)),
        (
            6,
            ChainProblem::Seq {
                expected: 6,
                found: 7
            }
        )
    );

    // An inserted (replayed) line.
    let mut lines = original.clone();
    lines.insert(8, original[1].clone());
    write_lines(&bad, &lines);
    assert_eq!(
        broken_at(verify(&bad_files, genesis)),
        (
            9,
            ChainProblem::Seq {
                expected: 9,
                found: 2
            }
        )
    );

    // A line rewritten with a recomputed hash: caught by the next line's prev_hash.
    let mut lines = original.clone();
    lines[2] = reseal(&lines[2].replacen("\"rows\":1", "\"rows\":0", 1));
    write_lines(&bad, &lines);
    assert_eq!(
        broken_at(verify(&bad_files, genesis)),
        (4, ChainProblem::Link { seq: 4 })
    );

    // The first line removed: caught with the genesis, reported as a note without.
    let lines = original[1..].to_vec();
    write_lines(&bad, &lines);
    assert_eq!(
        broken_at(verify(&bad_files, genesis)),
        (
            1,
            ChainProblem::Seq {
                expected: 1,
                found: 2
            }
        )
    );
    let (ok, text) = cli_verify(std::slice::from_ref(&bad));
    assert!(ok, "{text}");
    assert!(text.contains("starts at seq 2"), "{text}");
    let (ok, text) = cli_verify_with(std::slice::from_ref(&bad), genesis);
    assert!(!ok, "{text}");
    assert!(text.contains("line 1: expected seq 1, found 2"), "{text}");

    // A torn last line.
    let mut text = original.join("\n");
    text.push_str("\n{\"seq\":11");
    fs::write(&bad, text).expect("writable");
    assert!(matches!(
        broken_at(verify(&bad_files, genesis)),
        (11, ChainProblem::Malformed(_))
    ));

    let (ok, text) = cli_verify(&files);
    assert!(ok, "{text}");
    assert!(
        text.starts_with("OK: 10 events (seq 1..10) in 1 file"),
        "{text}"
    );
    fs::write(&bad, "not json\n").expect("writable");
    let (ok, text) = cli_verify(&bad_files);
    assert!(!ok);
    assert!(
        text.starts_with("FAILED: ") && text.contains("line 1"),
        "{text}"
    );
}

/// Recomputes the hash of an edited line, as a forger would.
fn reseal(line: &str) -> String {
    use sha2::{Digest, Sha256};
    let (head, _) = line.rsplit_once(",\"hash\":").expect("hash member");
    let hash = hex::encode(Sha256::digest(format!("{head}}}").as_bytes()));
    format!("{head},\"hash\":\"{hash}\"}}")
}

#[tokio::test]
async fn rotation_keeps_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut sink = file_sink(&path);
    sink.max_bytes = Some(1500);
    sink.keep = 100;
    write_events(&config(vec![SinkConfig::File(sink.clone())]), 1, 40).await;
    let files = discover_rotated(&path).expect("listable");
    assert!(files.len() > 5, "expected many rotated files: {files:?}");
    assert_eq!(files.last(), Some(&path));
    for f in &files {
        let size = fs::metadata(f).expect("exists").len();
        assert!(size <= 1500, "{} has {size} bytes", f.display());
    }
    let report = verify(&files, Some(DEFAULT_GENESIS)).expect("intact across files");
    assert_eq!(report.events, 40);
    let (ok, text) = cli_verify(std::slice::from_ref(&path));
    assert!(ok, "{text}");
    assert!(text.contains("40 events"), "{text}");

    // A missing rotated file in the middle is a gap.
    let middle = files[files.len() / 2].clone();
    let without: Vec<PathBuf> = files.iter().filter(|f| **f != middle).cloned().collect();
    assert!(matches!(
        broken_at(verify(&without, Some(DEFAULT_GENESIS))),
        (1, ChainProblem::Seq { .. })
    ));

    // With few files kept the oldest go; what remains still verifies from its anchor.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let path2 = dir2.path().join("audit.jsonl");
    let mut sink2 = file_sink(&path2);
    sink2.max_bytes = Some(1500);
    sink2.keep = 2;
    write_events(&config(vec![SinkConfig::File(sink2)]), 1, 40).await;
    let files2 = discover_rotated(&path2).expect("listable");
    assert_eq!(files2.len(), 3);
    let report = verify(&files2, None).expect("intact tail");
    assert_eq!(report.last_seq, Some(40));
    assert!(report.first_seq > Some(1));
}

#[tokio::test]
async fn restart_continues_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let cfg = config(vec![SinkConfig::File(file_sink(&path))]);
    write_events(&cfg, 1, 5).await;
    write_events(&cfg, 6, 5).await;
    // A crash mid-line: the torn tail is trimmed and the chain goes on.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    std::io::Write::write_all(&mut f, b"{\"seq\":11,\"ts\":\"20").expect("write");
    drop(f);
    write_events(&cfg, 11, 5).await;
    let report = verify(std::slice::from_ref(&path), Some(DEFAULT_GENESIS)).expect("one chain");
    assert_eq!(report.events, 15);
    assert_eq!(report.last_seq, Some(15));

    // A crash right after rotation leaves an empty base file: continue from `.1`.
    fs::rename(&path, dir.path().join("audit.jsonl.1")).expect("rename");
    fs::write(&path, "").expect("empty base");
    write_events(&cfg, 16, 1).await;
    let files = discover_rotated(&path).expect("listable");
    assert_eq!(files.len(), 2);
    let report = verify(&files, Some(DEFAULT_GENESIS)).expect("one chain");
    assert_eq!(report.last_seq, Some(16));
}

#[tokio::test]
async fn several_sinks_get_identical_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let mut sa = file_sink(&a);
    sa.fsync = FsyncPolicy::Always;
    let mut sb = file_sink(&b);
    sb.fsync = FsyncPolicy::Never;
    let counts = Arc::new(Counts::default());
    let auditor = Auditor::start(
        &config(vec![SinkConfig::File(sa), SinkConfig::File(sb)]),
        counts.clone(),
    )
    .await
    .expect("starts");
    for i in 0..100 {
        match auditor.try_admit() {
            Ok(slot) => slot.record(stmt(i)),
            Err(AuditError::WouldBlock) => auditor.record(stmt(i)).await.expect("recorded"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    auditor.shutdown().await;
    auditor.shutdown().await;
    assert!(matches!(auditor.admit().await, Err(AuditError::Closed)));
    assert!(matches!(auditor.try_admit(), Err(AuditError::Closed)));
    assert_eq!(fs::read(&a).expect("a"), fs::read(&b).expect("b"));
    assert_eq!(counts.written.load(Ordering::Relaxed), 200);
    assert_eq!(counts.failed.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn writer_sink_streams_lines() {
    let (client, mut server) = tokio::io::duplex(64);
    let counts = Arc::new(Counts::default());
    let handle = sink::spawn(
        stdout::WriterSink::new(client),
        sink::SinkState::new("stdout".into()),
        counts.clone(),
        sink::Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
        },
    );
    let mut chain = chain::Chain::new(DEFAULT_GENESIS, None, 1024);
    let mut data = Vec::new();
    let mut ends = Vec::new();
    for i in 0..3 {
        chain.append(&stmt(i), &mut data);
        ends.push(data.len());
    }
    let expected = data.clone();
    handle
        .tx
        .send(Arc::new(sink::Batch::new(data, ends)))
        .await
        .expect("sink runs");
    drop(handle.tx);
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.expect("readable");
    handle.task.await.expect("sink ends");
    assert_eq!(got, expected);
    assert_eq!(counts.written.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn literals_never_appear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let auditor = Auditor::start(
        &config(vec![SinkConfig::File(file_sink(&path))]),
        Arc::new(NoopObserver),
    )
    .await
    .expect("starts");
    let queries = [
        "SELECT * FROM customers WHERE id_card = '110101199003071234'",
        "UPDATE customers SET phone = '13800138000' WHERE id = 42",
        "SELECT * FROM c WHERE email = E'alice\\'s@example.com' -- 6222020000000000",
        "INSERT INTO cards VALUES ($$4111111111111111$$, 555.25)",
    ];
    for q in queries {
        auditor
            .record(AuditEvent {
                query: Some(q.into()),
                ..AuditEvent::default()
            })
            .await
            .expect("recorded");
    }
    auditor.shutdown().await;
    let logged: Vec<String> = read_lines(&path)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["query"].as_str().expect("query").to_string()
        })
        .collect();
    let text = logged.join("\n");
    for secret in [
        "110101199003071234",
        "13800138000",
        "alice",
        "6222020000000000",
        "4111111111111111",
        "555.25",
        "42",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into {text}");
    }
    assert!(text.contains("WHERE id_card = ?"), "{text}");
    verify(&[path], Some(DEFAULT_GENESIS)).expect("intact");
}

#[tokio::test]
async fn disabled_auditor_discards() {
    let auditor = Auditor::start(&AuditConfig::default(), Arc::new(NoopObserver))
        .await
        .expect("starts");
    assert!(!auditor.is_enabled());
    auditor.admit().await.expect("always room").record(stmt(1));
    auditor.try_admit().expect("always room").record(stmt(1));
    auditor.record(stmt(2)).await.expect("discarded");
    assert!(auditor.is_healthy());
    assert_eq!(auditor.queue_depth(), 0);
    auditor.shutdown().await;
}

#[tokio::test]
async fn start_rejects_bad_sinks() {
    let bad_url = HttpSinkConfig {
        url: "ftp://x/".into(),
        ..http_sink(1)
    };
    let err = Auditor::start(
        &config(vec![SinkConfig::Http(bad_url)]),
        Arc::new(NoopObserver),
    )
    .await
    .expect_err("rejected");
    assert!(err.to_string().contains("http://"), "{err}");
    let missing_env = HttpSinkConfig {
        bearer_token_env: Some("PGVEIL_TEST_SURELY_UNSET_TOKEN".into()),
        ..http_sink(1)
    };
    assert!(Auditor::start(
        &config(vec![SinkConfig::Http(missing_env)]),
        Arc::new(NoopObserver)
    )
    .await
    .is_err());
    let missing_ca = HttpSinkConfig {
        url: "https://127.0.0.1:1/".into(),
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..http_sink(1)
    };
    assert!(Auditor::start(
        &config(vec![SinkConfig::Http(missing_ca)]),
        Arc::new(NoopObserver)
    )
    .await
    .is_err());
}

/// An in-test HTTP collector: answers 200 to every POST and keeps the lines received.
struct Collector {
    lines: Arc<Mutex<Vec<String>>>,
    auth: Arc<Mutex<Vec<String>>>,
    /// Bodies with more lines than this are refused with 413 (0: no limit).
    max_lines: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Collector {
    async fn start(port: u16, lines: Arc<Mutex<Vec<String>>>) -> Collector {
        Collector::start_with(port, lines, None).await
    }

    async fn start_with(
        port: u16,
        lines: Arc<Mutex<Vec<String>>>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Collector {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("collector port free");
        let auth = Arc::new(Mutex::new(Vec::new()));
        let max_lines = Arc::new(AtomicUsize::new(0));
        let (l, a, m) = (lines.clone(), auth.clone(), max_lines.clone());
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it closes every connection too.
            let mut conns = JoinSet::new();
            while let Ok((sock, _)) = listener.accept().await {
                let (l, a, m) = (l.clone(), a.clone(), m.clone());
                match &tls {
                    None => {
                        conns.spawn(serve_connection(sock, l, a, m));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        conns.spawn(async move {
                            if let Ok(stream) = acceptor.accept(sock).await {
                                serve_connection(stream, l, a, m).await;
                            }
                        });
                    }
                }
            }
        });
        Collector {
            lines,
            auth,
            max_lines,
            task,
        }
    }

    fn count(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    fn stop(self) {
        self.task.abort();
    }
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    sock: S,
    lines: Arc<Mutex<Vec<String>>>,
    auth: Arc<Mutex<Vec<String>>>,
    max_lines: Arc<AtomicUsize>,
) {
    let mut reader = BufReader::new(sock);
    loop {
        let mut content_length = 0usize;
        let mut header = String::new();
        loop {
            header.clear();
            match reader.read_line(&mut header).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let h = header.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("authorization:") {
                if let Ok(mut a) = auth.lock() {
                    a.push(h["authorization:".len()..].trim().to_string());
                }
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let text = String::from_utf8_lossy(&body);
        let limit = max_lines.load(Ordering::Relaxed);
        let answer: &[u8] = if limit > 0 && text.lines().count() > limit {
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n"
        } else {
            if let Ok(mut l) = lines.lock() {
                l.extend(text.lines().map(str::to_string));
            }
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        };
        if reader.get_mut().write_all(answer).await.is_err() {
            return;
        }
    }
}

async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

/// Seqs of received lines, checking each line parses.
fn seqs(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["seq"].as_u64().expect("seq")
        })
        .collect()
}

#[tokio::test]
async fn http_sink_delivers_everything_across_an_outage_under_block() {
    let port = free_port().await;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector::start(port, lines.clone()).await;
    let mut cfg = config(vec![SinkConfig::Http(http_sink(port))]);
    cfg.queue_capacity = 4;
    cfg.block_timeout_ms = 20_000;
    let counts = Arc::new(Counts::default());
    let auditor = Auditor::start(&cfg, counts.clone()).await.expect("starts");
    for i in 0..20 {
        auditor.record(stmt(i)).await.expect("recorded");
    }
    eventually("first 20 events", Duration::from_secs(10), || {
        collector.count() >= 20
    })
    .await;
    collector.stop();

    // Collector gone: these wait for queue room instead of being lost.
    let a = auditor.clone();
    let producer = tokio::spawn(async move {
        for i in 20..200 {
            a.record(stmt(i)).await.expect("recorded after waiting");
        }
    });
    eventually("failing sink", Duration::from_secs(10), || {
        !auditor.is_healthy()
    })
    .await;
    assert!(
        !producer.is_finished(),
        "producer should be blocked on a full queue"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let collector = Collector::start(port, lines.clone()).await;
    tokio::time::timeout(Duration::from_secs(10), producer)
        .await
        .expect("producer unblocked")
        .expect("producer ok");
    tokio::time::timeout(Duration::from_secs(10), auditor.shutdown())
        .await
        .expect("flushed");
    let got = lines.lock().expect("lines").clone();
    let unique: BTreeSet<u64> = seqs(&got).into_iter().collect();
    assert_eq!(unique, (1..=200).collect::<BTreeSet<u64>>());
    assert!(counts.failed.load(Ordering::Relaxed) > 0);
    assert!(counts.written.load(Ordering::Relaxed) >= 200);
    assert!(auditor.failing_sinks().is_empty());
    collector.stop();

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("received.jsonl");
    write_lines(&file, &got);
    verify(&[file], Some(DEFAULT_GENESIS)).expect("collector holds an intact chain");
}

#[tokio::test]
async fn block_mode_times_out_when_a_sink_is_stuck() {
    let port = free_port().await;
    let mut cfg = config(vec![SinkConfig::Http(http_sink(port))]);
    cfg.queue_capacity = 2;
    cfg.block_timeout_ms = 200;
    let auditor = Auditor::start(&cfg, Arc::new(NoopObserver))
        .await
        .expect("starts");
    let mut admitted = 0;
    let failure = loop {
        let started = Instant::now();
        match auditor.admit().await {
            Ok(slot) => {
                slot.record(stmt(admitted));
                admitted += 1;
                assert!(admitted < 50, "queue never filled");
            }
            Err(e) => break (e, started.elapsed()),
        }
    };
    assert!(
        matches!(failure.0, AuditError::QueueFull(200)),
        "{:?}",
        failure.0
    );
    assert!(failure.1 >= Duration::from_millis(200), "{:?}", failure.1);
    assert!(!auditor.is_healthy());
    assert!(auditor.queue_depth() >= 2);
    assert!(matches!(
        auditor.record(stmt(0)).await,
        Err(AuditError::QueueFull(_))
    ));
}

#[tokio::test]
async fn drop_mode_counts_drops_and_records_them() {
    let port = free_port().await;
    let mut cfg = config(vec![SinkConfig::Http(http_sink(port))]);
    cfg.queue_capacity = 2;
    cfg.on_failure = OnFailure::Drop;
    let counts = Arc::new(Counts::default());
    let auditor = Auditor::start(&cfg, counts.clone()).await.expect("starts");
    let started = Instant::now();
    let mut admitted = 0u64;
    for i in 0..50 {
        let slot = if i % 2 == 0 {
            auditor.admit().await.expect("drop mode never fails")
        } else {
            auditor.try_admit().expect("drop mode never fails")
        };
        if !slot.will_drop() {
            admitted += 1;
        }
        slot.record(stmt(i));
        // Let the writer move so the pipeline is full before the rest arrive.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop mode waited"
    );
    let dropped = counts.dropped.load(Ordering::Relaxed);
    assert_eq!(dropped, 50 - admitted);
    assert!(dropped > 30, "only {dropped} dropped");

    let lines = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector::start(port, lines.clone()).await;
    tokio::time::timeout(Duration::from_secs(10), auditor.shutdown())
        .await
        .expect("flushed");
    collector.stop();
    let got = lines.lock().expect("lines").clone();
    let events: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let recorded: u64 = events
        .iter()
        .filter(|e| e["event"] == "audit_dropped")
        .map(|e| e["details"]["dropped"].as_u64().expect("count"))
        .sum();
    assert_eq!(recorded, dropped);
    let statements = events.iter().filter(|e| e["event"] == "statement").count();
    assert_eq!(statements as u64, admitted);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("received.jsonl");
    write_lines(&file, &got);
    verify(&[file], Some(DEFAULT_GENESIS)).expect("no gap: drops are recorded, not skipped");
}

#[tokio::test]
async fn http_sink_sends_bearer_token_from_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    fs::write(&token, "s3cret\n").expect("writable");
    let port = free_port().await;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector::start(port, lines.clone()).await;
    let sink = HttpSinkConfig {
        bearer_token_file: Some(token),
        ..http_sink(port)
    };
    let auditor = Auditor::start(
        &config(vec![SinkConfig::Http(sink)]),
        Arc::new(NoopObserver),
    )
    .await
    .expect("starts");
    auditor.record(stmt(1)).await.expect("recorded");
    auditor.shutdown().await;
    assert_eq!(collector.count(), 1);
    let auth = collector.auth.lock().expect("auth").clone();
    assert_eq!(auth, ["Bearer s3cret"]);
    collector.stop();
}

#[tokio::test]
async fn http_sink_splits_batches_the_collector_finds_too_large() {
    let port = free_port().await;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector::start(port, lines.clone()).await;
    collector.max_lines.store(3, Ordering::Relaxed);
    let sink = HttpSinkConfig {
        batch_max_events: 10,
        batch_max_ms: 1000,
        ..http_sink(port)
    };
    let auditor = Auditor::start(
        &config(vec![SinkConfig::Http(sink)]),
        Arc::new(NoopObserver),
    )
    .await
    .expect("starts");
    for i in 0..25 {
        auditor.record(stmt(i)).await.expect("recorded");
    }
    tokio::time::timeout(Duration::from_secs(10), auditor.shutdown())
        .await
        .expect("delivered in smaller batches");
    collector.stop();
    let got = lines.lock().expect("lines").clone();
    assert_eq!(seqs(&got), (1..=25).collect::<Vec<u64>>());
}

#[tokio::test]
async fn https_sink_trusts_its_ca_file() {
    let key =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    fs::write(&ca, key.cert.pem()).expect("writable");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
        )
        .expect("server config");
    let port = free_port().await;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let collector = Collector::start_with(port, lines.clone(), Some(acceptor)).await;

    let trusted = HttpSinkConfig {
        url: format!("https://localhost:{port}/ingest"),
        ca_file: Some(ca),
        ..http_sink(port)
    };
    let auditor = Auditor::start(
        &config(vec![SinkConfig::Http(trusted)]),
        Arc::new(NoopObserver),
    )
    .await
    .expect("starts");
    auditor.record(stmt(1)).await.expect("recorded");
    tokio::time::timeout(Duration::from_secs(10), auditor.shutdown())
        .await
        .expect("delivered over TLS");
    assert_eq!(collector.count(), 1);

    // Without the CA the web roots do not trust the collector: nothing is delivered.
    let untrusted = HttpSinkConfig {
        url: format!("https://localhost:{port}/ingest"),
        ..http_sink(port)
    };
    let auditor = Auditor::start(
        &config(vec![SinkConfig::Http(untrusted)]),
        Arc::new(NoopObserver),
    )
    .await
    .expect("starts");
    auditor.record(stmt(1)).await.expect("recorded");
    eventually("TLS failure", Duration::from_secs(10), || {
        !auditor.is_healthy()
    })
    .await;
    assert_eq!(auditor.failing_sinks(), ["http"]);
    assert_eq!(collector.count(), 1);
    collector.stop();
}

/// Throughput of the writer with one file sink, on the current-thread runtime the proxy
/// uses by default, and the cost of sealing one line. Run with
/// `cargo test -p pgveil --release --lib audit::tests::bench_file_writer -- --ignored --nocapture`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "benchmark"]
async fn bench_file_writer() {
    let mut chain = chain::Chain::new(DEFAULT_GENESIS, None, 65536);
    let ev = stmt(1);
    let mut out = Vec::with_capacity(1 << 20);
    let rounds = 200_000;
    let started = Instant::now();
    for _ in 0..rounds {
        out.clear();
        chain.append(&ev, &mut out);
    }
    println!(
        "audit seal: {:.0} ns/line ({} bytes)",
        started.elapsed().as_nanos() as f64 / rounds as f64,
        out.len()
    );
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(ev.clone());
    }
    println!(
        "audit event clone: {:.0} ns/event",
        started.elapsed().as_nanos() as f64 / rounds as f64
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let n = 200_000;
    let auditor = Auditor::start(
        &config(vec![SinkConfig::File(file_sink(&path))]),
        Arc::new(NoopObserver),
    )
    .await
    .expect("starts");
    let ev = stmt(1);
    let started = Instant::now();
    for _ in 0..n {
        auditor.admit().await.expect("room").record(ev.clone());
    }
    let admitted = started.elapsed();
    auditor.shutdown().await;
    let total = started.elapsed();
    let bytes = fs::metadata(&path).expect("exists").len();
    println!(
        "audit file writer: {n} events, {} bytes/event, admit {:.0} ns/event, end to end {:.0} events/s",
        bytes / n as u64,
        admitted.as_nanos() as f64 / n as f64,
        n as f64 / total.as_secs_f64()
    );
    verify(&[path], Some(DEFAULT_GENESIS)).expect("intact");
}

/// Sessions keep a slot in a `StatementTag` (`Box<dyn Any + Send>`) until completion and
/// share the auditor across tasks.
#[test]
fn handles_cross_tasks() {
    fn send_static<T: Send + 'static>() {}
    fn send_sync<T: Send + Sync + 'static>() {}
    send_static::<AuditSlot>();
    send_sync::<Auditor>();
    send_static::<AuditEvent>();
}
