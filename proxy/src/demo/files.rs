//! The proxy's files for the demo, written into the demo directory: the example policy
//! (embedded, since the binary may run outside the repository), the proxy config, a
//! random `hash` mask key and the catalog reader's password (both mode 0600).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::error::DemoError;
use super::setup::CATALOG_USER;

/// The shop policy shipped with pgveil.
pub const POLICY_TOML: &str = include_str!("../../../deploy/examples/policy.toml");

/// The metrics port pgveil uses by default; the demo takes another when it is busy.
const DEFAULT_METRICS_PORT: u16 = 9187;

/// Where the demo's proxy files are.
#[derive(Debug, Clone)]
pub struct DemoFiles {
    pub config: PathBuf,
    pub policy: PathBuf,
    pub hash_key: PathBuf,
    pub catalog_password: PathBuf,
    pub audit_log: PathBuf,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub metrics: SocketAddr,
}

/// Write the policy, key, password and config into `dir` and return the config text.
pub fn write(
    dir: &Path,
    listen_port: u16,
    upstream_port: u16,
) -> Result<(DemoFiles, String), DemoError> {
    let files = DemoFiles {
        config: dir.join("pgveil.toml"),
        policy: dir.join("policy.toml"),
        hash_key: dir.join("hash.key"),
        catalog_password: dir.join("catalog.password"),
        audit_log: dir.join("audit.jsonl"),
        metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port())),
    };
    write_file(&files.policy, POLICY_TOML.as_bytes(), 0o644)?;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    write_file(&files.hash_key, hex::encode(key).as_bytes(), 0o600)?;
    write_file(&files.catalog_password, CATALOG_USER.as_bytes(), 0o600)?;
    let text = config_text(listen_port, upstream_port, files.metrics);
    write_file(&files.config, text.as_bytes(), 0o644)?;
    Ok((files, text))
}

/// A port for the metrics endpoint: 9187 when free, else any free one.
fn metrics_port() -> u16 {
    TcpListener::bind(("127.0.0.1", DEFAULT_METRICS_PORT))
        .or_else(|_| TcpListener::bind("127.0.0.1:0"))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(DEFAULT_METRICS_PORT)
}

/// The demo's `pgveil.toml`; relative paths resolve against the demo directory.
pub fn config_text(listen_port: u16, upstream_port: u16, metrics: SocketAddr) -> String {
    format!(
        r#"# pgveil demo configuration (generated; removed when the demo stops).
listen = "127.0.0.1:{listen_port}"
policy = "policy.toml"

[upstream]
host = "127.0.0.1"
port = {upstream_port}
tls = "disable"

[catalog]
user = "{CATALOG_USER}"
password_file = "catalog.password"

[masking]
hash_key_file = "hash.key"

[metrics]
listen = "{metrics}"

[limits]
# A demo stops at once on Ctrl-C.
shutdown_grace_ms = 1000

[audit]
on_failure = "block"

[[audit.sinks]]
kind = "file"
path = "audit.jsonl"
"#
    )
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), DemoError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(DemoError::io(format!("create {}", path.display())))?;
    std::io::Write::write_all(&mut f, contents)
        .map_err(DemoError::io(format!("write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, UpstreamTls};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn config_parses_and_points_at_the_demo_files() {
        let dir = Path::new("/tmp/pgveil-demo-test");
        let text = config_text(6432, 54321, "127.0.0.1:9187".parse().unwrap());
        let cfg = Config::parse(&text, &dir.join("pgveil.toml"), dir).unwrap();
        assert_eq!(cfg.listen.port(), 6432);
        assert_eq!(cfg.upstream.port, 54321);
        assert_eq!(cfg.upstream.tls, UpstreamTls::Disable);
        assert_eq!(cfg.catalog.user.as_deref(), Some(CATALOG_USER));
        let policy = cfg.policy.as_deref().map(|p| cfg.resolve(p));
        assert_eq!(policy, Some(dir.join("policy.toml")));
        let key = cfg.masking.hash_key_file.as_deref().map(|p| cfg.resolve(p));
        assert_eq!(key, Some(dir.join("hash.key")));
        assert!(cfg.audit.is_some());
    }

    #[test]
    fn secrets_are_private_and_random() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (fa, _) = write(a.path(), 6432, 5432).unwrap();
        let (fb, _) = write(b.path(), 6432, 5432).unwrap();
        let key_a = std::fs::read_to_string(&fa.hash_key).unwrap();
        let key_b = std::fs::read_to_string(&fb.hash_key).unwrap();
        assert_eq!(key_a.len(), 64);
        assert_ne!(key_a, key_b);
        for secret in [&fa.hash_key, &fa.catalog_password] {
            let mode = std::fs::metadata(secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", secret.display());
        }
        assert_eq!(std::fs::read_to_string(&fa.policy).unwrap(), POLICY_TOML);
    }
}
