//! End-to-end test of the demo: a real PostgreSQL (skipped with a note when the server
//! binaries are not installed), the data loaded, the proxy relaying, and full cleanup.

use std::sync::Arc;

use tokio_postgres::NoTls;

use super::cluster::{free_port, PgBinaries};
use super::data::{id_number_valid, luhn_valid};
use super::*;
use crate::hook::PassThrough;

/// One demo at a time: both tests start PostgreSQL, and the cleanup check compares the
/// temp dir before and after.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn connect(addr: SocketAddr, user: &str, password: &str) -> tokio_postgres::Client {
    let dsn = format!(
        "host={} port={} dbname=shop user={user} password={password} sslmode=disable",
        addr.ip(),
        addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect as {user} to {addr}: {e}"));
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_serves_the_shop_data_and_cleans_up() {
    let _serial = SERIAL.lock().await;
    if let Err(e) = PgBinaries::find() {
        eprintln!("skipping the demo integration test: {e}");
        return;
    }
    let opts = DemoOptions {
        port: free_port().expect("a free port"),
        hooks: Some(Box::new(|_cfg: &Config| Ok(Arc::new(PassThrough) as Arc<dyn HookFactory>))),
    };
    let demo = Demo::start(&opts, Progress::Quiet)
        .await
        .expect("the demo starts");
    let dir = demo.dir().to_owned();
    assert!(dir.join("data").is_dir());
    assert_eq!(demo.proxy_addr().port(), opts.port);
    assert!(demo.files().policy.is_file());
    assert!(demo.banner().contains(&format!("port={}", opts.port)));

    let client = connect(demo.proxy_addr(), "postgres", "postgres").await;
    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), \
                    (SELECT count(*) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id \
                     WHERE c.id IS NULL)",
            &[],
        )
        .await
        .expect("count rows");
    assert_eq!(counts.get::<_, i64>(0), CUSTOMERS as i64);
    assert_eq!(counts.get::<_, i64>(1), ORDERS as i64);
    assert_eq!(counts.get::<_, i64>(2), 0, "every order has its customer");

    let row = client
        .query_one(
            "SELECT name, id_card, phone, email, bank_card, address, to_char(birth_date, 'YYYYMMDD') \
             FROM customers WHERE id = 42",
            &[],
        )
        .await
        .expect("a sample customer");
    let (name, id_card, phone, email, card, address, birth): (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    );
    assert!(name.chars().count() >= 2 && !name.is_ascii(), "{name}");
    assert!(id_number_valid(&id_card), "{id_card}");
    assert_eq!(&id_card[6..14], birth, "ID embeds the birth date");
    assert!(phone.len() == 11 && phone.starts_with('1'), "{phone}");
    assert!(email.contains('@'), "{email}");
    assert!(luhn_valid(&card), "{card}");
    assert!(address.ends_with('室'), "{address}");
    // The generator and the database agree on the whole row.
    let (customers, _) = data::generate(SEED, CUSTOMERS, 0);
    assert_eq!(customers[41].id_card, id_card);

    // The demo roles exist with SCRAM passwords equal to their names, and the grants
    // are least-privilege: an analyst reads but cannot write, the catalog reader sees
    // no table data.
    let bi = connect(demo.proxy_addr(), "bi", "bi").await;
    let n: i64 = bi
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("bi reads")
        .get(0);
    assert_eq!(n, ORDERS as i64);
    let err = bi
        .execute("UPDATE customers SET vip_level = 0 WHERE id = 1", &[])
        .await
        .expect_err("bi may not update");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
    let catalog = connect(demo.proxy_addr(), "pgveil_catalog", "pgveil_catalog").await;
    let err = catalog
        .query_one("SELECT phone FROM customers LIMIT 1", &[])
        .await
        .expect_err("the catalog reader reads no data");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
    let columns: i64 = catalog
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.customers'::regclass \
             AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .expect("the catalog reader reads column lists")
        .get(0);
    assert_eq!(columns, 10);
    let wrong = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} dbname=shop user=bi password=wrong sslmode=disable",
            demo.proxy_addr().port()
        ),
        NoTls,
    )
    .await;
    assert!(wrong.is_err(), "a wrong password is refused");

    let pg_port = demo.postgres_port();
    demo.stop().await.expect("the demo stops");
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pg_port)).is_err(),
        "PostgreSQL still accepts connections"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", opts.port)).is_err(),
        "the proxy still accepts connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_startup_leaves_nothing_behind() {
    let _serial = SERIAL.lock().await;
    if let Err(e) = PgBinaries::find() {
        eprintln!("skipping: {e}");
        return;
    }
    let opts = DemoOptions {
        port: free_port().expect("a free port"),
        hooks: Some(Box::new(|_cfg: &Config| anyhow::bail!("no enforcement today"))),
    };
    let before = demo_dirs();
    let err = Demo::start(&opts, Progress::Quiet)
        .await
        .err()
        .expect("startup fails when the hooks cannot be built");
    assert!(
        format!("{err:#}").contains("no enforcement today"),
        "{err:#}"
    );
    let after = demo_dirs();
    let leaked: Vec<_> = after.difference(&before).collect();
    assert!(leaked.is_empty(), "left behind: {leaked:?}");
}

/// The demo directories currently in the temp dir.
fn demo_dirs() -> std::collections::HashSet<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("pgveil-demo-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_taken_proxy_port_fails_before_postgres_starts() {
    let _serial = SERIAL.lock().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("its address").port();
    let opts = DemoOptions {
        port,
        hooks: Some(Box::new(|_cfg: &Config| Ok(Arc::new(PassThrough) as Arc<dyn HookFactory>))),
    };
    let before = demo_dirs();
    let started = Instant::now();
    let err = Demo::start(&opts, Progress::Quiet)
        .await
        .err()
        .expect("startup fails when the port is taken");
    assert!(format!("{err:#}").contains("--port"), "{err:#}");
    assert!(started.elapsed() < Duration::from_secs(2), "failed fast");
    assert_eq!(demo_dirs(), before);
}
