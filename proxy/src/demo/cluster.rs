//! An ephemeral PostgreSQL cluster for the demo: found binaries, a private temporary
//! directory, initdb, start on a free loopback port, and cleanup that always runs.
//!
//! [`Cluster`] is the cleanup guard: dropping it stops the server (`pg_ctl stop -m
//! fast`) and removes the directory, so a startup that fails halfway, an interrupted
//! startup and a normal stop all leave nothing behind. A watchdog shell process does
//! the same if pgveil itself is killed without running destructors.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rand::Rng;
use tracing::{debug, warn};

use super::error::DemoError;

/// OS user that owns the cluster when pgveil runs as root (initdb refuses root).
const CLUSTER_OS_USER: &str = "postgres";
/// Attempts to find a port nobody else grabs between probing and binding.
const START_ATTEMPTS: usize = 5;

/// A directory with the PostgreSQL server programs.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub dir: PathBuf,
}

impl PgBinaries {
    /// Find initdb/pg_ctl/postgres: `PG_BIN_DIR`, else `PATH`, else the highest version
    /// under `/usr/lib/postgresql/*/bin` (Debian) or `/usr/pgsql-*/bin` (RHEL).
    pub fn find() -> Result<PgBinaries, DemoError> {
        if let Some(dir) = std::env::var_os("PG_BIN_DIR").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            return if has_server_binaries(&dir) {
                Ok(PgBinaries { dir })
            } else {
                Err(DemoError::BadBinDir(dir))
            };
        }
        let mut searched = vec!["PATH".to_owned()];
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let initdb = dir.join("initdb");
                if initdb.is_file() {
                    // Follow symlinks (/usr/local/bin/initdb -> .../15/bin/initdb) to the
                    // directory that has the rest of the server programs.
                    let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
                    if let Some(real_dir) = real.parent().filter(|d| has_server_binaries(d)) {
                        return Ok(PgBinaries {
                            dir: real_dir.to_owned(),
                        });
                    }
                }
            }
        }
        for (root, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
            searched.push(format!("{root}/{prefix}*/bin"));
            if let Some(dir) = highest_version_dir(Path::new(root), prefix) {
                return Ok(PgBinaries { dir });
            }
        }
        Err(DemoError::NoPostgres {
            searched: searched.join(", "),
        })
    }

    fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The server version, e.g. `PostgreSQL 15.8`.
    pub async fn version(&self) -> Result<String, DemoError> {
        let out = tokio::process::Command::new(self.program("postgres"))
            .arg("--version")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(DemoError::io("run postgres --version"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "postgres (PostgreSQL) 15.8 (Debian 15.8-1)" -> "PostgreSQL 15.8"
        let version = text
            .split_whitespace()
            .nth(2)
            .map(|v| format!("PostgreSQL {v}"))
            .unwrap_or_else(|| text.trim().to_owned());
        Ok(version)
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|p| dir.join(p).is_file())
}

/// `<root>/<prefix><version>/bin` with the highest version that has the programs.
fn highest_version_dir(root: &Path, prefix: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let version: Vec<u32> = name
                .strip_prefix(prefix)?
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = e.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (probed and released; see [`START_ATTEMPTS`]).
pub fn free_port() -> Result<u16, DemoError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(DemoError::io("find a free port on 127.0.0.1"))
}

/// A cluster in a temporary directory; removed (and stopped first) on drop.
#[derive(Debug)]
pub struct Cluster {
    bins: PgBinaries,
    /// The temporary directory: everything the demo writes lives here.
    root: PathBuf,
    data_dir: PathBuf,
    /// Unix socket directory (mode 0700: the `trust` socket is private to the owner).
    socket_dir: PathBuf,
    /// OS user that runs initdb/pg_ctl when pgveil runs as root.
    run_as: Option<String>,
    port: u16,
    running: bool,
}

impl Cluster {
    /// Create the temporary directory and an initialised (not yet started) cluster.
    pub async fn init(bins: PgBinaries) -> Result<Cluster, DemoError> {
        let run_as = is_root().then(|| CLUSTER_OS_USER.to_owned());
        if let Some(user) = &run_as {
            ensure_os_user(user).await?;
        }
        let root = create_private_dir(run_as.is_some())?;
        let cluster = Cluster {
            data_dir: root.join("data"),
            socket_dir: root.join("socket"),
            root,
            bins,
            run_as,
            port: 0,
            running: false,
        };
        cluster.spawn_watchdog();
        for dir in [&cluster.data_dir, &cluster.socket_dir] {
            std::fs::create_dir(dir).map_err(DemoError::io(format!("create {}", dir.display())))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(DemoError::io(format!("chmod {}", dir.display())))?;
            cluster.chown(dir).await?;
        }
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&cluster.data_dir).args([
            "--username=postgres",
            "--encoding=UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=reject",
            "--no-sync",
        ]);
        run(initdb, "initdb").await?;
        cluster.configure()?;
        Ok(cluster)
    }

    /// Root of the temporary directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Unix socket directory (for the setup connection as `postgres`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// TCP port on 127.0.0.1 (0 until started).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }

    /// pg_hba.conf and postgresql.conf for the demo.
    fn configure(&self) -> Result<(), DemoError> {
        let hba = "# pgveil demo: trust only on the private Unix socket (the demo's own setup);\n\
                   # every TCP connection, pgveil's included, authenticates with SCRAM.\n\
                   local all all trust\n\
                   host  all all 127.0.0.1/32 scram-sha-256\n";
        let hba_path = self.data_dir.join("pg_hba.conf");
        std::fs::write(&hba_path, hba)
            .map_err(DemoError::io(format!("write {}", hba_path.display())))?;
        let conf = format!(
            "\n# pgveil demo\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket}'\n\
             unix_socket_permissions = 0700\n\
             password_encryption = 'scram-sha-256'\n\
             max_connections = 100\n\
             shared_buffers = 32MB\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             timezone = 'Asia/Shanghai'\n\
             log_min_messages = warning\n",
            socket = self.socket_dir.display().to_string().replace('\'', "''"),
        );
        let conf_path = self.data_dir.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .map_err(DemoError::io(format!("open {}", conf_path.display())))?;
        std::io::Write::write_all(&mut f, conf.as_bytes())
            .map_err(DemoError::io(format!("write {}", conf_path.display())))
    }

    /// Start the server on a free loopback port and wait until it accepts connections.
    pub async fn start(&mut self) -> Result<(), DemoError> {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut cmd = self.command("pg_ctl");
            cmd.arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(self.log_file())
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {port}"))
                .arg("start");
            // A log from an earlier attempt would confuse the diagnosis below.
            let _ = std::fs::remove_file(self.log_file());
            self.running = true;
            match run(cmd, "pg_ctl start").await {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) => {
                    // pg_ctl may give up waiting while the server still comes up.
                    self.running = self.data_dir.join("postmaster.pid").exists();
                    let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
                    if !log.contains("could not bind") && !log.contains("already in use") {
                        let tail: Vec<&str> = log.lines().rev().take(10).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        return Err(DemoError::Command {
                            what: "starting PostgreSQL".into(),
                            detail: format!("{e}\n{}", tail.join("\n")),
                        });
                    }
                    debug!(port, "port taken before PostgreSQL could bind it; retrying");
                    last = e.to_string();
                }
            }
        }
        Err(DemoError::Command {
            what: "starting PostgreSQL".into(),
            detail: format!("no free port after {START_ATTEMPTS} attempts: {last}"),
        })
    }

    /// Stop the server (fast: open sessions are rolled back and closed).
    pub async fn stop(&mut self) -> Result<(), DemoError> {
        if !self.running {
            return Ok(());
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "30", "-m", "fast", "stop"]);
        run(cmd, "pg_ctl stop").await?;
        self.running = false;
        Ok(())
    }

    /// Stop the server and remove the directory, reporting failures (dropping the
    /// cluster does the same but can only log them).
    pub async fn destroy(mut self) -> Result<(), DemoError> {
        self.stop().await?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&root))
            .await
            .map_err(|e| DemoError::Command {
                what: "removing the demo directory".into(),
                detail: e.to_string(),
            })?
            .map_err(DemoError::io(format!("remove {}", self.root.display())))?;
        Ok(())
    }

    /// A server program, run as the cluster's OS user when pgveil is root.
    fn command(&self, program: &str) -> tokio::process::Command {
        let (exe, args) = self.command_line(program);
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            // Keep the terminal's Ctrl-C away from the server programs: pgveil decides
            // when they stop.
            .process_group(0);
        cmd
    }

    /// Program and arguments of [`Cluster::command`], for the async and sync variants.
    fn command_line(&self, program: &str) -> (OsString, Vec<OsString>) {
        let exe = self.bins.program(program).into_os_string();
        match &self.run_as {
            Some(user) => (
                "runuser".into(),
                vec!["-u".into(), user.into(), "--".into(), exe],
            ),
            None => (exe, Vec::new()),
        }
    }

    async fn chown(&self, path: &Path) -> Result<(), DemoError> {
        let Some(user) = &self.run_as else {
            return Ok(());
        };
        let mut cmd = tokio::process::Command::new("chown");
        cmd.arg(user).arg(path).kill_on_drop(true);
        run(cmd, "chown").await
    }

    /// A detached shell that stops the server and removes the directory if this
    /// process dies without cleaning up (SIGKILL, abort). It exits on its own once the
    /// directory is gone.
    fn spawn_watchdog(&self) {
        let (exe, mut args) = self.command_line("pg_ctl");
        args.extend(["-D".into(), self.data_dir.clone().into_os_string()]);
        // The outer shell forks the loop into the background and exits at once, so the
        // loop is adopted by init and never lingers as this process's zombie.
        let script = r#"pid=$1; root=$2; shift 2
(
  while kill -0 "$pid" 2>/dev/null && [ -d "$root" ]; do sleep 1; done
  if [ -d "$root" ]; then "$@" -m immediate stop; rm -rf "$root"; fi
) >/dev/null 2>&1 &"#;
        let spawned = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("pgveil-demo-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .arg(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .status();
        match spawned {
            Ok(s) if s.success() => debug!("demo watchdog started"),
            Ok(s) => {
                warn!(status = %s, "cannot start the demo watchdog; a killed pgveil may leave {} behind", self.root.display())
            }
            Err(e) => {
                warn!(error = %e, "cannot start the demo watchdog; a killed pgveil may leave {} behind", self.root.display())
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let (exe, args) = self.command_line("pg_ctl");
            let status = std::process::Command::new(exe)
                .args(args)
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-t", "30", "-m", "fast", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                warn!(data = %self.data_dir.display(), "pg_ctl stop failed while cleaning up");
            }
            self.running = false;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %e, dir = %self.root.display(), "cannot remove the demo directory");
            }
        }
    }
}

/// Make sure the OS user exists (as root, initdb must run as someone else).
async fn ensure_os_user(user: &str) -> Result<(), DemoError> {
    let exists = tokio::process::Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    if exists {
        return Ok(());
    }
    let mut cmd = tokio::process::Command::new("useradd");
    cmd.args([
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        user,
    ]);
    run(cmd, "useradd (PostgreSQL refuses to run as root)").await
}

/// A fresh directory under the system temp dir, private to this user. When the
/// cluster runs as another OS user, that user may traverse it (0711) but not list it.
fn create_private_dir(shared_with_cluster_user: bool) -> Result<PathBuf, DemoError> {
    let base = std::env::temp_dir();
    let mut rng = rand::rng();
    for _ in 0..16 {
        let suffix: u32 = rng.random();
        let dir = base.join(format!("pgveil-demo-{suffix:08x}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                let mode = if shared_with_cluster_user {
                    0o711
                } else {
                    0o700
                };
                if let Err(e) =
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                {
                    let _ = std::fs::remove_dir(&dir);
                    return Err(DemoError::io(format!("chmod {}", dir.display()))(e));
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(DemoError::io(format!(
                    "create a directory in {}",
                    base.display()
                ))(e))
            }
        }
    }
    Err(DemoError::Command {
        what: "creating the demo directory".into(),
        detail: format!("no unused name in {}", base.display()),
    })
}

/// Run a command to completion; an error carries its output.
async fn run(mut cmd: tokio::process::Command, what: &str) -> Result<(), DemoError> {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| DemoError::Command {
            what: what.to_owned(),
            detail: "timed out after 120 s".into(),
        })?
        .map_err(DemoError::io(format!("run {what}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(DemoError::Command {
        what: what.to_owned(),
        detail: format!(
            "{}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim_end()
        .to_owned(),
    })
}
