//! `pgveil.toml`: the proxy configuration SREs write.
//!
//! Parsed with serde (unknown keys are errors that name the key and its line), then
//! checked by [`Config::validate`] so that a running proxy never meets a value it cannot
//! use. Relative paths are resolved against the config file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::auth::scram_config::{ScramConfig, ScramConfigError};

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
    /// An `[auth]` setting; the message names the key (`auth.lookup_user`, ...).
    #[error("{path}: {source}")]
    Auth {
        path: PathBuf,
        source: ScramConfigError,
    },
}

/// The whole proxy configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client-facing address, e.g. `0.0.0.0:6432`.
    pub listen: SocketAddr,
    /// Policy file; absent = no policy (every statement passes, for the transparent core).
    #[serde(default)]
    pub policy: Option<PathBuf>,
    pub upstream: UpstreamConfig,
    /// Client-facing TLS; absent = plain connections only.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub masking: MaskingConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Audit stream settings (`[audit]` and `[[audit.sinks]]`).
    #[serde(default)]
    pub audit: Option<toml::Table>,
    /// Directory of the config file, for resolving relative paths.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// How pgveil reaches PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// TCP host name or address (ignored when `socket_dir` is set).
    #[serde(default = "default_host")]
    pub host: String,
    /// TCP port, also the number in the Unix socket name `.s.PGSQL.<port>`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Unix socket directory; when set, pgveil connects through the socket.
    #[serde(default)]
    pub socket_dir: Option<PathBuf>,
    /// TLS to PostgreSQL.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// CA bundle (PEM) that verifies the server certificate under `verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the server certificate (default: `host`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Milliseconds to wait for the TCP connection and TLS handshake.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_connect_timeout_ms() -> u64 {
    5000
}

/// `[upstream] tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not verified.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not verified.
    Require,
    /// TLS with the certificate verified against `ca_file` and the host name.
    VerifyFull,
}

impl UpstreamTls {
    /// Whether the upstream leg may be TLS.
    pub fn may_use_tls(self) -> bool {
        self != UpstreamTls::Disable
    }
}

/// Client-facing TLS certificate and key (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[auth]`.
///
/// No `deny_unknown_fields` here: serde cannot combine it with `flatten`, so the scram
/// keys collect unknown ones and [`ScramConfig::check_keys`] refuses them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub mode: AuthMode,
    /// The keys of `mode = "scram"` (verifier source, fallback, throttling).
    #[serde(flatten)]
    pub scram: ScramConfig,
}

/// Who runs the authentication exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// PostgreSQL authenticates; pgveil relays the exchange.
    #[default]
    Passthrough,
    /// pgveil is the SCRAM server and logs in upstream with the recovered ClientKey.
    Scram,
}

/// `[catalog]`: the read-only account used to read column lists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Seconds between background refreshes of the catalog.
    #[serde(default = "default_refresh_s")]
    pub refresh_interval_s: u64,
}

fn default_refresh_s() -> u64 {
    60
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            user: None,
            password_env: None,
            password_file: None,
            refresh_interval_s: default_refresh_s(),
        }
    }
}

/// `[masking]`: where the secret key of the `hash` mask comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    #[serde(default)]
    pub hash_key_file: Option<PathBuf>,
    #[serde(default)]
    pub hash_key_env: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz`; absent = no HTTP endpoint.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Client sessions at once; more get SQLSTATE 53300.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest client message in bytes; larger ones get 08P01 and the session ends.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Milliseconds for SSL negotiation, startup and authentication.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// Milliseconds sessions get to finish after SIGTERM before they are closed.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Threads that run sessions. One thread avoids cross-thread wake-ups and uses the
    /// least CPU per query (measured: benches/README.md); raise it when one core is
    /// saturated and the machine has cores to spare.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
}

fn default_max_connections() -> usize {
    1000
}
fn default_max_message_bytes() -> usize {
    // PostgreSQL's own limit for a message (MaxAllocSize - 1).
    0x3fff_ffff
}
fn default_startup_timeout_ms() -> u64 {
    60_000
}
fn default_shutdown_grace_ms() -> u64 {
    30_000
}
fn default_worker_threads() -> usize {
    1
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: default_max_connections(),
            max_message_bytes: default_max_message_bytes(),
            startup_timeout_ms: default_startup_timeout_ms(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            worker_threads: default_worker_threads(),
        }
    }
}

impl LimitsConfig {
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

/// Log line format (`text` or `json`).
pub use crate::logging::LogFormat;

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        Config::parse(&text, path, &base)
    }

    /// Parse and validate config text; `path` is used in messages, `base` for relative paths.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        cfg.base_dir = base.to_owned();
        cfg.auth.scram.resolve_paths(base);
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        if self.upstream.port == 0 {
            return Err(invalid("upstream.port", "must be 1..65535".into()));
        }
        if self.upstream.socket_dir.is_some() && self.upstream.tls.may_use_tls() {
            if self.upstream.tls == UpstreamTls::Prefer {
                // PostgreSQL never offers TLS on Unix sockets; prefer quietly means plain.
            } else {
                return Err(invalid(
                    "upstream.tls",
                    "TLS is not available over a Unix socket; use tls = \"disable\" or \"prefer\" with socket_dir".into(),
                ));
            }
        }
        if self.upstream.tls == UpstreamTls::VerifyFull && self.upstream.ca_file.is_none() {
            return Err(invalid(
                "upstream.ca_file",
                "verify-full needs ca_file: the CA bundle (PEM) that signed the server certificate"
                    .into(),
            ));
        }
        if self.limits.max_connections == 0 {
            return Err(invalid(
                "limits.max_connections",
                "must be at least 1".into(),
            ));
        }
        if self.limits.worker_threads == 0 || self.limits.worker_threads > 1024 {
            return Err(invalid(
                "limits.worker_threads",
                "must be between 1 and 1024".into(),
            ));
        }
        if self.limits.max_message_bytes < 1024 {
            return Err(invalid(
                "limits.max_message_bytes",
                "must be at least 1024 bytes".into(),
            ));
        }
        if self.limits.startup_timeout_ms == 0 {
            return Err(invalid(
                "limits.startup_timeout_ms",
                "must be greater than 0".into(),
            ));
        }
        let auth_checked = match self.auth.mode {
            AuthMode::Scram => self.auth.scram.validate(),
            AuthMode::Passthrough => self.auth.scram.check_keys(),
        };
        auth_checked.map_err(|source| ConfigError::Auth {
            path: path.to_owned(),
            source,
        })?;
        if self.auth.mode == AuthMode::Scram
            && self.auth.scram.max_failures > 0
            && self.auth.scram.failure_delay_ms >= self.limits.startup_timeout_ms
        {
            return Err(invalid(
                "auth.failure_delay_ms",
                "must be less than limits.startup_timeout_ms, or every delayed login times out"
                    .into(),
            ));
        }
        if self.masking.hash_key_file.is_some() && self.masking.hash_key_env.is_some() {
            return Err(invalid(
                "masking",
                "set hash_key_file or hash_key_env, not both".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("pgveil.toml"), Path::new("/etc/pgveil"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("listen = \"127.0.0.1:6432\"\n[upstream]\n").unwrap();
        assert_eq!(c.upstream.port, 5432);
        assert_eq!(c.upstream.tls, UpstreamTls::Prefer);
        assert_eq!(c.auth.mode, AuthMode::Passthrough);
        assert_eq!(c.limits.max_connections, 1000);
        assert_eq!(
            c.resolve(Path::new("policy.toml")),
            PathBuf::from("/etc/pgveil/policy.toml")
        );
    }

    #[test]
    fn unknown_keys_name_the_key() {
        let e = parse("listen = \"127.0.0.1:6432\"\n[upstream]\nhots = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hots"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn bad_values_are_errors() {
        let e = parse("listen = \"127.0.0.1:6432\"\n[upstream]\ntls = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes"), "{e}");
        let e = parse("listen = \"127.0.0.1:6432\"\n[upstream]\ntls = \"verify-full\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream.ca_file"), "{e}");
        let e = parse("listen = \"nowhere\"\n[upstream]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn auth_section() {
        let base = "listen = \"127.0.0.1:6432\"\n[upstream]\n[auth]\n";
        let c = parse(&format!(
            "{base}mode = \"scram\"\nauth_file = \"users.txt\"\nfallback = \"passthrough\"\n"
        ))
        .unwrap();
        assert_eq!(c.auth.mode, AuthMode::Scram);
        assert_eq!(
            c.auth.scram.auth_file.as_deref(),
            Some(Path::new("/etc/pgveil/users.txt"))
        );
        let cases = [
            ("mode = \"scram\"\n", "auth.lookup_user"),
            (
                "mode = \"scram\"\nauth_file = \"u\"\nmax_failure = 3\n",
                "auth.max_failure",
            ),
            (
                "mode = \"passthrough\"\nlookup_usr = \"x\"\n",
                "auth.lookup_usr",
            ),
            (
                "mode = \"scram\"\nlookup_user = \"x\"\nauth_query = \"SELECT 1\"\n",
                "auth.auth_query",
            ),
        ];
        for (text, key) in cases {
            let e = parse(&format!("{base}{text}")).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let e = parse(&format!("{base}mode = \"scarm\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("scarm") && e.contains("line 4"), "{e}");
        let e = parse(&format!(
            "{base}mode = \"scram\"\nauth_file = \"u\"\nfailure_delay_ms = 60000\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("auth.failure_delay_ms"), "{e}");
        // Scram keys are only checked for typos in passthrough mode.
        parse(&format!(
            "{base}mode = \"passthrough\"\nfallback = \"deny\"\n"
        ))
        .unwrap();
    }
}
