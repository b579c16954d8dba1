//! Transparency: through pgveil, every protocol feature behaves as on a direct
//! connection (simple and extended query, pipelining, COPY, LISTEN/NOTIFY, notices,
//! errors in transactions, binary formats, large values, psql and pgbench).

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use harness::{connect_dsn, postgres, psql, start_proxy, users, ProxyOptions};
use tokio_postgres::AsyncMessage;

const DB: &str = "postgres";

#[tokio::test]
async fn simple_and_extended_queries_match_direct() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let via = proxy.connect(users::TRUST, DB).await;
    let direct = connect_dsn(&postgres().direct_dsn(users::TRUST, DB)).await;

    let sql = "SELECT g, g * 2 AS twice, md5(g::text), now() > '2000-01-01'::timestamptz \
               FROM generate_series(1, $1::int) AS g ORDER BY g";
    let a = via.query(sql, &[&50i32]).await.expect("query via proxy");
    let b = direct.query(sql, &[&50i32]).await.expect("query direct");
    assert_eq!(a.len(), 50);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.get::<_, i32>(0), y.get::<_, i32>(0));
        assert_eq!(x.get::<_, String>(2), y.get::<_, String>(2));
        assert!(x.get::<_, bool>(3));
    }

    let simple = via
        .simple_query("SELECT 1 AS a; SELECT 'x' AS b, NULL AS c")
        .await
        .expect("multi-statement simple query");
    let rows: Vec<_> = simple
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get(0), Some("1"));
    assert_eq!(rows[1].get("b"), Some("x"));
    assert_eq!(rows[1].get("c"), None);

    // Named prepared statements, reused, and a portal with a row limit via a cursor.
    let stmt = via
        .prepare("SELECT $1::text || '!'")
        .await
        .expect("prepare");
    for word in ["a", "b", "c"] {
        let r = via.query_one(&stmt, &[&word]).await.expect("execute");
        assert_eq!(r.get::<_, String>(0), format!("{word}!"));
    }
}

#[tokio::test]
async fn pipelined_statements_and_binary_types() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let client = proxy.connect(users::TRUST, DB).await;
    let stmt = client
        .prepare("SELECT $1::int4 + 1, $2::float8, $3::bytea, $4::timestamptz, $5::jsonb")
        .await
        .expect("prepare");
    let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let json = serde_json::json!({"k": [1, 2, 3]});
    let futures = (0..1000i32).map(|i| {
        let client = &client;
        let stmt = &stmt;
        let json = &json;
        async move {
            let bytes = vec![(i % 256) as u8; 3];
            let row = client
                .query_one(stmt, &[&i, &(i as f64 / 2.0), &bytes, &now, json])
                .await
                .expect("pipelined query");
            assert_eq!(row.get::<_, i32>(0), i + 1);
            assert_eq!(row.get::<_, f64>(1), i as f64 / 2.0);
            assert_eq!(row.get::<_, Vec<u8>>(2), bytes);
            assert_eq!(row.get::<_, std::time::SystemTime>(3), now);
            assert_eq!(&row.get::<_, serde_json::Value>(4), json);
        }
    });
    futures_util::future::join_all(futures).await;
}

#[tokio::test]
async fn ten_megabyte_values_round_trip() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let client = proxy.connect(users::TRUST, DB).await;
    let big = "x".repeat(10 * 1024 * 1024);
    let row = client
        .query_one("SELECT $1::text, length($1::text)", &[&big])
        .await
        .expect("10 MB text");
    assert_eq!(row.get::<_, String>(0).len(), big.len());
    assert_eq!(row.get::<_, i32>(1) as usize, big.len());
    let bytes = vec![0xabu8; 12 * 1024 * 1024];
    let row = client
        .query_one("SELECT $1::bytea", &[&bytes])
        .await
        .expect("12 MB bytea");
    assert_eq!(row.get::<_, Vec<u8>>(0), bytes);
    let row = client
        .query_one("SELECT repeat('y', 8 * 1024 * 1024)", &[])
        .await
        .expect("8 MB generated value");
    assert_eq!(row.get::<_, String>(0).len(), 8 * 1024 * 1024);
}

#[tokio::test]
async fn copy_in_and_out() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let client = proxy.connect(users::TRUST, DB).await;
    client
        .batch_execute("CREATE TEMP TABLE copy_t (id int, name text)")
        .await
        .expect("create");
    let sink = client
        .copy_in("COPY copy_t FROM STDIN")
        .await
        .expect("copy in");
    let mut sink = Box::pin(sink);
    let mut data = String::new();
    for i in 0..20_000 {
        data.push_str(&format!("{i}\tname {i}\n"));
    }
    sink.send(bytes::Bytes::from(data.clone()))
        .await
        .expect("send copy data");
    let n = sink.as_mut().finish().await.expect("finish copy");
    assert_eq!(n, 20_000);

    let stream = client
        .copy_out("COPY (SELECT * FROM copy_t ORDER BY id) TO STDOUT")
        .await
        .expect("copy out");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("copy out data");
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).expect("utf8"), data);

    // A failing COPY leaves the session usable.
    let err = client
        .copy_in::<_, bytes::Bytes>("COPY copy_t FROM STDIN")
        .await
        .expect("copy in");
    let mut err = Box::pin(err);
    err.send(bytes::Bytes::from_static(b"not-a-number\tx\n"))
        .await
        .ok();
    assert!(err.as_mut().finish().await.is_err());
    let r = client
        .query_one("SELECT count(*) FROM copy_t", &[])
        .await
        .expect("after failed copy");
    assert_eq!(r.get::<_, i64>(0), 20_000);
}

#[tokio::test]
async fn errors_inside_transactions() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let client = proxy.connect(users::TRUST, DB).await;
    client.batch_execute("BEGIN").await.expect("begin");
    let e = client
        .query("SELECT 1/0", &[])
        .await
        .expect_err("division by zero");
    assert_eq!(e.code().map(|c| c.code()), Some("22012"));
    let e = client
        .query("SELECT 1", &[])
        .await
        .expect_err("aborted transaction");
    assert_eq!(e.code().map(|c| c.code()), Some("25P02"));
    client.batch_execute("ROLLBACK").await.expect("rollback");
    let r = client
        .query_one("SELECT 2", &[])
        .await
        .expect("after rollback");
    assert_eq!(r.get::<_, i32>(0), 2);
    // Savepoints.
    client
        .batch_execute("BEGIN; SAVEPOINT s; SELECT 1/0;")
        .await
        .expect_err("error in savepoint");
    client
        .batch_execute("ROLLBACK TO SAVEPOINT s; COMMIT")
        .await
        .expect("rollback to savepoint");
}

#[tokio::test]
async fn notifications_and_notices_are_delivered() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let (listener, mut conn) =
        tokio_postgres::connect(&proxy.dsn(users::TRUST, DB), tokio_postgres::NoTls)
            .await
            .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = stream.next().await {
            let _ = tx.send(msg);
        }
    });
    listener
        .batch_execute("LISTEN pgveil_chan")
        .await
        .expect("listen");
    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .expect("notice");
    let notifier = proxy.connect(users::TRUST, DB).await;
    notifier
        .batch_execute("NOTIFY pgveil_chan, 'payload-1'")
        .await
        .expect("notify");
    let mut got_notice = false;
    let mut got_notification = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(got_notice && got_notification) {
        let msg = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out waiting for async messages")
            .expect("connection ended");
        match msg {
            AsyncMessage::Notice(n) => {
                assert_eq!(n.message(), "hello from plpgsql");
                got_notice = true;
            }
            AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), "pgveil_chan");
                assert_eq!(n.payload(), "payload-1");
                got_notification = true;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn psql_output_is_byte_identical() {
    let proxy = start_proxy(ProxyOptions::default()).await;
    let script = "SELECT 1 AS one, 'two' AS two, NULL AS three; \
                  SELECT g, repeat('z', g) FROM generate_series(1, 30) g; \
                  CREATE TEMP TABLE t (a int); INSERT INTO t VALUES (1), (2); \
                  UPDATE t SET a = a + 1; SELECT * FROM t ORDER BY a; \
                  \\echo done\n";
    let direct = psql(postgres().port, users::TRUST, DB, "sslmode=disable", script).await;
    let via = psql(proxy.port(), users::TRUST, DB, "sslmode=disable", script).await;
    assert!(direct.0, "direct psql failed: {}", direct.2);
    assert!(via.0, "psql via proxy failed: {}", via.2);
    assert_eq!(direct.1, via.1);
    // An error in psql is PostgreSQL's own.
    let bad = psql(
        proxy.port(),
        users::TRUST,
        DB,
        "sslmode=disable",
        "SELECT * FROM nope",
    )
    .await;
    assert!(!bad.0);
    assert!(
        bad.2.contains("relation \"nope\" does not exist"),
        "{}",
        bad.2
    );
}

#[tokio::test]
async fn pgbench_runs_through_the_proxy() {
    let pg = postgres();
    pg.create_database("bench");
    let proxy = start_proxy(ProxyOptions::default()).await;
    let port = proxy.port().to_string();
    let run = move |args: &[&str]| {
        let out = std::process::Command::new(pg.client_bin("pgbench"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", users::TRUST])
            .args(args)
            .arg("bench")
            .output()
            .expect("run pgbench");
        assert!(
            out.status.success(),
            "pgbench {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = tokio::task::spawn_blocking(move || {
        run(&["-i", "-s", "1", "-q"]);
        let mut outs = String::new();
        for mode in ["simple", "extended", "prepared"] {
            outs.push_str(&run(&["-M", mode, "-c", "4", "-j", "2", "-t", "50"]));
            outs.push_str(&run(&["-M", mode, "-S", "-c", "4", "-t", "200"]));
        }
        outs
    })
    .await
    .expect("pgbench task");
    assert!(out.contains("number of failed transactions: 0"), "{out}");
}

/// Statement texts and names under a client_encoding other than UTF8 (LATIN1 here: the
/// byte 0xE9 is "é") reach the server as the client sent them, in both protocols, and
/// the answers are the server's own, byte for byte as directly (psycopg2's test suite
/// closed the session on this).
#[tokio::test]
async fn texts_in_another_client_encoding_pass_as_sent() {
    use harness::raw;
    use tokio::io::AsyncWriteExt;

    async fn exchange(port: u16) -> Vec<(u8, Vec<u8>)> {
        let (mut s, _, _) = raw::login(port, users::TRUST, DB).await;
        let mut seen = raw::simple(&mut s, "SET client_encoding TO latin1").await;
        // A literal and an unknown column in LATIN1.
        for sql in [&b"SELECT '\xe9t\xe9' AS e"[..], b"SELECT \xe9"] {
            let mut q = sql.to_vec();
            q.push(0);
            s.write_all(&raw::message(b'Q', &q)).await.expect("query");
            seen.extend(raw::read_until_ready(&mut s).await);
        }
        // A named statement and portal whose names and text are LATIN1.
        let parse = b"s\xe9\0SELECT '\xe9' || $1\0\0\0".to_vec();
        let bind = b"p\xe9\0s\xe9\0\0\0\0\x01\0\0\0\x01x\0\0".to_vec();
        let mut msgs = raw::message(b'P', &parse);
        msgs.extend(raw::message(b'B', &bind));
        msgs.extend(raw::message(b'D', b"Pp\xe9\0"));
        msgs.extend(raw::message(b'E', b"p\xe9\0\0\0\0\0"));
        msgs.extend(raw::message(b'C', b"Ss\xe9\0"));
        msgs.extend(raw::message(b'S', b""));
        s.write_all(&msgs).await.expect("pipeline");
        seen.extend(raw::read_until_ready(&mut s).await);
        // The session is still usable.
        seen.extend(raw::simple(&mut s, "SELECT 1").await);
        seen.into_iter()
            .filter(|m| m.tag != b'S' && m.tag != b'K')
            .map(|m| (m.tag, m.body))
            .collect()
    }

    let proxy = start_proxy(ProxyOptions::default()).await;
    let via = exchange(proxy.port()).await;
    let direct = exchange(postgres().port).await;
    assert!(
        via.iter()
            .any(|(t, b)| *t == b'D' && b.windows(3).any(|w| w == b"\xe9t\xe9")),
        "{via:?}"
    );
    assert_eq!(via, direct);
}

/// A CancelRequest's connection is closed only after the backend was signalled, as
/// PostgreSQL does: a client that waits for that close (asyncpg, libpq) may then send
/// its next query, and a cancel that found the session idle must not cancel that query
/// (asyncpg's test_timeout_05 and test_copy_from_query_cancellation_on_sink_error got
/// 57014 on their next statement).
#[tokio::test]
async fn cancel_connection_closes_after_the_cancel_took_effect() {
    use harness::raw;

    async fn idle_cancels_then_query(port: u16) -> Vec<Option<String>> {
        let (mut s, (pid, secret), _) = raw::login(port, users::TRUST, DB).await;
        let mut codes = Vec::new();
        for _ in 0..5 {
            // The session is idle: PostgreSQL ignores the cancel, once it has it.
            raw::cancel(port, pid, &secret).await;
            let out = raw::simple(&mut s, "SELECT pg_sleep(0.2)").await;
            assert_eq!(out.last().map(|m| m.tag), Some(b'Z'), "{out:?}");
            codes.push(
                out.iter()
                    .find(|m| m.tag == b'E')
                    .and_then(|m| m.sqlstate()),
            );
        }
        codes
    }

    let proxy = start_proxy(ProxyOptions::default()).await;
    let direct = idle_cancels_then_query(postgres().port).await;
    assert_eq!(direct, vec![None; 5]);
    let via = idle_cancels_then_query(proxy.port()).await;
    assert_eq!(via, direct);
}

/// A DDL statement under a policy is followed by a catalog reload before the session's
/// next statement. PostgreSQL JIT-compiles a query whose estimated cost passes
/// `jit_above_cost`, and the constraint query's estimate passes it once a database has a
/// few hundred tables: every reload then spent over a second compiling, and asyncpg's
/// test_introspection_on_large_db (1000 `CREATE TABLE … INHERITS`, 3 s directly) ran for
/// many minutes through pgveil. Here the database's JIT thresholds are 0, so every query
/// of a JIT-ing catalog session is compiled (about 2 s per reload); without JIT a reload
/// takes milliseconds. (A server built without JIT passes trivially.)
#[tokio::test]
async fn catalog_reload_after_ddl_is_not_jit_compiled() {
    let db = "transparency_ddl_jit";
    let pg = postgres();
    pg.create_database(db);
    pg.psql_admin(
        db,
        &format!(
            "ALTER DATABASE {db} SET jit = on; \
             ALTER DATABASE {db} SET jit_above_cost = 0; \
             ALTER DATABASE {db} SET jit_inline_above_cost = 0; \
             ALTER DATABASE {db} SET jit_optimize_above_cost = 0;"
        ),
    );
    let proxy = start_proxy(ProxyOptions {
        policy: Some(harness::small_shop::shop_policy()),
        ..ProxyOptions::default()
    })
    .await;
    // `postgres` is the example policy's unrestricted dba role.
    let client = proxy.connect("postgres", db).await;
    client.simple_query("SELECT 1").await.expect("first query");

    let started = std::time::Instant::now();
    for n in 0..3 {
        client
            .batch_execute(&format!(
                "CREATE TABLE jit_t{n} (a int primary key, b text)"
            ))
            .await
            .expect("create table");
        let row = client
            .query_one(&format!("SELECT count(*) FROM jit_t{n}"), &[])
            .await
            .expect("query after DDL");
        assert_eq!(row.get::<_, i64>(0), 0);
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(3),
        "3 DDL statements and the reloads after them took {took:?}: the catalog queries were JIT-compiled"
    );
}
