//! A throwaway PostgreSQL cluster, started once per test binary.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::certs::TestCerts;
use super::users;

/// A running cluster.
#[derive(Debug)]
pub struct Postgres {
    /// Directory of initdb, pg_ctl, psql, pgbench.
    pub bin_dir: PathBuf,
    /// Root of everything this cluster owns (data, sockets, certs).
    pub root: PathBuf,
    pub data_dir: PathBuf,
    /// Unix socket directory.
    pub socket_dir: PathBuf,
    pub port: u16,
    /// The CA and server certificate PostgreSQL presents.
    pub certs: TestCerts,
    /// OS user that owns the cluster when the tests run as root.
    run_as: Option<String>,
}

static CLUSTER: OnceLock<Postgres> = OnceLock::new();

/// The cluster of this test binary, started on first use.
pub fn postgres() -> &'static Postgres {
    CLUSTER.get_or_init(Postgres::start)
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

fn find_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = candidates
        .into_iter()
        .rev()
        .find(|d| d.join("initdb").exists())
    {
        return dir;
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in path.split(':') {
            let p = Path::new(dir).join("initdb");
            if p.exists() {
                let real = std::fs::canonicalize(&p).unwrap_or(p);
                return real.parent().map(Path::to_owned).unwrap_or_default();
            }
        }
    }
    panic!(
        "PostgreSQL server binaries not found (no initdb on PATH or under /usr/lib/postgresql/*/bin). \
         Install them, e.g. `apt-get install -y postgresql`, or set PG_BIN_DIR."
    );
}

fn is_root() -> bool {
    // SAFETY-free check: the effective uid of this process.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

impl Postgres {
    fn start() -> Postgres {
        let bin_dir = find_bin_dir();
        let run_as = is_root().then(|| "postgres".to_owned());
        if let Some(user) = &run_as {
            let exists = Command::new("id")
                .arg(user)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !exists {
                let _ = Command::new("useradd")
                    .args(["--system", "--no-create-home", user])
                    .status();
            }
        }
        let root = std::env::temp_dir().join(format!(
            "pgveil-test-{}-{}",
            std::process::id(),
            free_port()
        ));
        let data_dir = root.join("data");
        let socket_dir = root.join("sock");
        std::fs::create_dir_all(&socket_dir).expect("create socket dir");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).ok();
        std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o777)).ok();
        let certs = TestCerts::generate(&root.join("pg-certs"), "pg");
        let port = free_port();
        let pg = Postgres {
            bin_dir,
            root,
            data_dir,
            socket_dir,
            port,
            certs,
            run_as,
        };
        pg.init();
        pg.spawn_watchdog();
        pg.start_server();
        pg.create_users();
        pg
    }

    fn chown(&self, path: &Path) {
        if let Some(user) = &self.run_as {
            let _ = Command::new("chown").args(["-R", user]).arg(path).status();
        }
    }

    /// A command for a server binary, run as the cluster owner.
    pub fn command(&self, bin: &str) -> Command {
        let exe = self.bin_dir.join(bin);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, mut cmd: Command, what: &str) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn init(&self) {
        self.chown(&self.root);
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]);
        self.run(cmd, "initdb");
        // TLS material in the data directory, owned by the cluster user, key 0600.
        let crt = self.data_dir.join("server.crt");
        let key = self.data_dir.join("server.key");
        std::fs::copy(&self.certs.server_cert, &crt).expect("copy server.crt");
        std::fs::copy(&self.certs.server_key, &key).expect("copy server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).ok();
        self.chown(&crt);
        self.chown(&key);
        let hba = format!(
            "local all all trust\n\
             host all {trust} 127.0.0.1/32 trust\n\
             host all {clear} 127.0.0.1/32 password\n\
             host all {md5} 127.0.0.1/32 md5\n\
             host all {scram} 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 trust\n\
             host all all ::1/128 trust\n",
            trust = users::TRUST,
            clear = users::CLEARTEXT,
            md5 = users::MD5,
            scram = users::SCRAM,
        );
        std::fs::write(self.data_dir.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{sock}'\n\
             ssl = on\nmax_connections = 400\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nshared_buffers = 128MB\nlog_min_messages = warning\n",
            port = self.port,
            sock = self.socket_dir.display(),
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))
            .expect("open postgresql.conf");
        std::io::Write::write_all(&mut f, conf.as_bytes()).expect("write postgresql.conf");
        self.chown(&self.data_dir);
    }

    /// Start (or restart after [`Postgres::stop`]) the server and wait until it accepts.
    pub fn start_server(&self) {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        self.run(cmd, "pg_ctl start");
    }

    /// Stop the server (fast mode: sessions are terminated).
    pub fn stop_server(&self) {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-m", "fast", "stop"]);
        self.run(cmd, "pg_ctl stop");
    }

    /// Remove the cluster when this test process exits, however it exits.
    fn spawn_watchdog(&self) {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let stop = match &self.run_as {
            Some(user) => format!(
                "runuser -u {user} -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data_dir.display()
            ),
            None => format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data_dir.display()
            ),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {root}",
            pid = std::process::id(),
            root = self.root.display()
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    fn create_users(&self) {
        let pw = users::PASSWORD;
        let sql = format!(
            "SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE {trust} LOGIN SUPERUSER;\n\
             CREATE ROLE {clear} LOGIN PASSWORD '{pw}';\n\
             CREATE ROLE {scram} LOGIN SUPERUSER PASSWORD '{pw}';\n\
             SET password_encryption = 'md5';\n\
             CREATE ROLE {md5} LOGIN PASSWORD '{pw}';\n\
             GRANT ALL ON SCHEMA public TO PUBLIC;\n",
            trust = users::TRUST,
            clear = users::CLEARTEXT,
            md5 = users::MD5,
            scram = users::SCRAM,
        );
        self.psql_admin("postgres", &sql);
    }

    /// Run SQL as the superuser over the Unix socket; panics on failure.
    pub fn psql_admin(&self, db: &str, sql: &str) -> String {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .arg("-h")
        .arg(&self.socket_dir)
        .arg("-p")
        .arg(self.port.to_string())
        .arg("-c")
        .arg(sql);
        let out = self.run(cmd, "psql (admin)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Create a database if it does not exist yet.
    pub fn create_database(&self, name: &str) {
        let exists = self.psql_admin(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        );
        if exists.trim() != "1" {
            self.psql_admin("postgres", &format!("CREATE DATABASE \"{name}\""));
        }
    }

    /// A tokio-postgres connection string straight to the server over TCP.
    pub fn direct_dsn(&self, user: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={db} password={} sslmode=disable",
            self.port,
            users::PASSWORD
        )
    }

    /// Path of a client binary (psql, pgbench).
    pub fn client_bin(&self, bin: &str) -> PathBuf {
        self.bin_dir.join(bin)
    }

    /// Wait until the server accepts TCP connections again.
    pub fn wait_ready(&self) {
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PostgreSQL did not come back on port {}", self.port);
    }
}
