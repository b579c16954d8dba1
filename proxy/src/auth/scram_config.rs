//! The `[auth]` keys of `mode = "scram"` besides `mode` itself: where verifiers come
//! from, what to do with users that have none, caching and failed-login throttling.
//!
//! The lead flattens [`ScramConfig`] into the `[auth]` section. Serde cannot deny
//! unknown fields through `flatten`, so unknown keys are collected and refused by
//! [`ScramConfig::check_keys`] instead: a typo must not silently keep a default.

use super::limiter::FailedLoginLimiter;
use super::mock::{MockSecret, DEFAULT_MOCK_ITERATIONS};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// The default `auth_query`: the user's verifier, if the user may log in now.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolpassword FROM pg_catalog.pg_authid \
     WHERE rolname = $1 AND rolcanlogin \
     AND (rolvaliduntil IS NULL OR rolvaliduntil > now())";

/// SQL that lets a non-superuser role `pgveil_auth` read verifiers through a
/// `SECURITY DEFINER` function; use with `auth_query = "SELECT pgveil.get_auth($1)"`.
pub const LOOKUP_FUNCTION_SQL: &str = include_str!("lookup_function.sql");

/// What to do with a user whose verifier is md5 or missing, so pgveil cannot check a
/// SCRAM proof for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Relay the exchange to PostgreSQL as in `mode = "passthrough"`. Note: over TLS
    /// this offers no SCRAM-SHA-256-PLUS, so a client can tell such users apart.
    Passthrough,
    /// Fail the login with a mock SCRAM exchange, like an unknown user (default).
    #[default]
    Deny,
}

/// `[auth]` settings for `mode = "scram"`. Exactly one verifier source must be set:
/// `lookup_user` (query PostgreSQL) or `auth_file` (a pgbouncer-style userlist).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ScramConfig {
    /// Users with an md5 verifier or none: `"deny"` (default) or `"passthrough"`.
    pub fallback: Fallback,
    /// Role pgveil logs in as to read verifiers with `auth_query`. The default query
    /// reads `pg_authid`, which needs a superuser; otherwise point `auth_query` at a
    /// `SECURITY DEFINER` function owned by one ([`LOOKUP_FUNCTION_SQL`]).
    pub lookup_user: Option<String>,
    /// Environment variable holding `lookup_user`'s password.
    pub lookup_password_env: Option<String>,
    /// File holding `lookup_user`'s password (trailing newline ignored); relative to
    /// the config file.
    pub lookup_password_file: Option<PathBuf>,
    /// Database the lookup connection opens. Default `postgres`.
    pub lookup_database: String,
    /// Query returning one text column, the verifier, for user `$1`; no row or NULL
    /// means no verifier.
    pub auth_query: String,
    /// Userlist file instead of a lookup connection: lines `"user" "SCRAM-SHA-256$…"`;
    /// relative to the config file.
    pub auth_file: Option<PathBuf>,
    /// Seconds a looked-up verifier (or its absence) is reused. Default 60; 0 disables
    /// the cache. A failed login drops the user's entry, so a changed password is seen
    /// on the next attempt.
    pub cache_ttl_s: u64,
    /// Failed logins from one client address within `failure_window_s` before each
    /// further attempt is delayed. Default 5; 0 disables throttling.
    pub max_failures: u32,
    /// Window, in seconds, over which failures are counted. Default 60.
    pub failure_window_s: u64,
    /// Delay, in milliseconds, of each attempt from a throttled address. Default 2000.
    pub failure_delay_ms: u64,
    /// PBKDF2 iterations advertised for unknown users; set it to the cluster's
    /// `scram_iterations` so mock challenges look real. Default 4096.
    pub mock_iterations: u32,
    /// Keys not listed above: refused by [`ScramConfig::check_keys`].
    #[serde(flatten)]
    unknown: BTreeMap<String, IgnoredAny>,
}

impl Default for ScramConfig {
    fn default() -> Self {
        ScramConfig {
            fallback: Fallback::Deny,
            lookup_user: None,
            lookup_password_env: None,
            lookup_password_file: None,
            lookup_database: "postgres".to_string(),
            auth_query: DEFAULT_AUTH_QUERY.to_string(),
            auth_file: None,
            cache_ttl_s: 60,
            max_failures: 5,
            failure_window_s: 60,
            failure_delay_ms: 2000,
            mock_iterations: DEFAULT_MOCK_ITERATIONS,
            unknown: BTreeMap::new(),
        }
    }
}

/// An invalid `[auth]` setting; the message names the key.
#[derive(Debug, Error)]
pub enum ScramConfigError {
    /// A key no auth mode knows.
    #[error("unknown key auth.{0}")]
    UnknownKey(String),
    /// Two settings that exclude each other.
    #[error("auth.{0} and auth.{1} cannot both be set")]
    Conflict(&'static str, &'static str),
    /// No verifier source.
    #[error("auth.mode = \"scram\" needs auth.lookup_user or auth.auth_file")]
    NoSource,
    /// A value out of range.
    #[error("auth.{key}: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The lookup password could not be read.
    #[error("auth.{key}: {reason}")]
    Password {
        /// `lookup_password_env` or `lookup_password_file`.
        key: &'static str,
        /// Why it could not be read.
        reason: String,
    },
}

impl ScramConfig {
    /// Refuses keys that belong to no auth setting. Call it in every mode.
    pub fn check_keys(&self) -> Result<(), ScramConfigError> {
        match self.unknown.keys().next() {
            Some(key) => Err(ScramConfigError::UnknownKey(key.clone())),
            None => Ok(()),
        }
    }

    /// Full validation for `mode = "scram"` (includes [`ScramConfig::check_keys`]).
    pub fn validate(&self) -> Result<(), ScramConfigError> {
        self.check_keys()?;
        match (&self.lookup_user, &self.auth_file) {
            (Some(_), Some(_)) => {
                return Err(ScramConfigError::Conflict("lookup_user", "auth_file"))
            }
            (None, None) => return Err(ScramConfigError::NoSource),
            _ => {}
        }
        if self.lookup_password_env.is_some() && self.lookup_password_file.is_some() {
            return Err(ScramConfigError::Conflict(
                "lookup_password_env",
                "lookup_password_file",
            ));
        }
        if self.lookup_user.as_deref() == Some("") {
            return Err(invalid("lookup_user", "must not be empty"));
        }
        if self.lookup_database.is_empty() {
            return Err(invalid("lookup_database", "must not be empty"));
        }
        if !self.auth_query.contains("$1") {
            return Err(invalid("auth_query", "must use $1 for the user name"));
        }
        if self.max_failures > 0 && self.failure_window_s == 0 {
            return Err(invalid("failure_window_s", "must be positive"));
        }
        if self.mock_iterations == 0 {
            return Err(invalid("mock_iterations", "must be positive"));
        }
        Ok(())
    }

    /// Makes relative file paths relative to `base`, the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.auth_file, &mut self.lookup_password_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// The lookup password from the environment or its file; `None` if neither is
    /// configured (e.g. `trust` for the lookup role on a Unix socket).
    pub fn lookup_password(&self) -> Result<Option<String>, ScramConfigError> {
        if let Some(var) = &self.lookup_password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|e| ScramConfigError::Password {
                    key: "lookup_password_env",
                    reason: format!("environment variable {var}: {e}"),
                });
        }
        if let Some(path) = &self.lookup_password_file {
            let text = std::fs::read_to_string(path).map_err(|e| ScramConfigError::Password {
                key: "lookup_password_file",
                reason: format!("{}: {e}", path.display()),
            })?;
            return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
        }
        Ok(None)
    }

    /// How long looked-up verifiers are reused.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_s)
    }

    /// The failed-login throttle these settings describe.
    pub fn limiter(&self) -> FailedLoginLimiter {
        FailedLoginLimiter::new(
            self.max_failures,
            Duration::from_secs(self.failure_window_s),
            Duration::from_millis(self.failure_delay_ms),
        )
    }

    /// A fresh per-process mock secret with the configured iteration count.
    pub fn mock_secret(&self) -> MockSecret {
        MockSecret::generate(self.mock_iterations)
    }
}

fn invalid(key: &'static str, reason: &'static str) -> ScramConfigError {
    ScramConfigError::Invalid { key, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape the lead gives `[auth]`: `mode` plus the flattened scram keys.
    #[derive(Deserialize)]
    struct Auth {
        #[allow(dead_code)]
        mode: String,
        #[serde(flatten)]
        scram: ScramConfig,
    }

    fn auth(text: &str) -> ScramConfig {
        toml::from_str::<Auth>(text).expect("valid toml").scram
    }

    #[test]
    fn defaults() {
        let c = auth("mode = \"scram\"\nauth_file = \"users.txt\"");
        assert_eq!(c.fallback, Fallback::Deny);
        assert_eq!(c.lookup_database, "postgres");
        assert_eq!(c.auth_query, DEFAULT_AUTH_QUERY);
        assert_eq!(c.cache_ttl(), Duration::from_secs(60));
        assert_eq!(
            (c.max_failures, c.failure_window_s, c.failure_delay_ms),
            (5, 60, 2000)
        );
        assert_eq!(c.mock_iterations, 4096);
        c.validate().expect("auth_file alone is enough");
    }

    #[test]
    fn all_keys_parse_through_flatten() {
        let c = auth(
            r#"
            mode = "scram"
            fallback = "passthrough"
            lookup_user = "pgveil_auth"
            lookup_password_env = "PGVEIL_AUTH_PASSWORD"
            lookup_database = "app"
            auth_query = "SELECT pgveil.get_auth($1)"
            cache_ttl_s = 5
            max_failures = 3
            failure_window_s = 10
            failure_delay_ms = 100
            mock_iterations = 10000
            "#,
        );
        assert_eq!(c.fallback, Fallback::Passthrough);
        assert_eq!(c.lookup_user.as_deref(), Some("pgveil_auth"));
        assert_eq!(c.cache_ttl_s, 5);
        c.validate().expect("valid");
    }

    #[test]
    fn typo_is_refused() {
        let c = auth("mode = \"scram\"\nauth_file = \"u\"\nmax_failure = 3");
        assert!(
            matches!(c.check_keys(), Err(ScramConfigError::UnknownKey(k)) if k == "max_failure")
        );
        assert!(c.validate().is_err());
    }

    #[test]
    fn bad_values_rejected() {
        let cases = [
            "mode = \"scram\"",
            "mode = \"scram\"\nauth_file = \"u\"\nlookup_user = \"x\"",
            "mode = \"scram\"\nlookup_user = \"x\"\nlookup_password_env = \"A\"\nlookup_password_file = \"f\"",
            "mode = \"scram\"\nlookup_user = \"x\"\nauth_query = \"SELECT 1\"",
            "mode = \"scram\"\nauth_file = \"u\"\nfailure_window_s = 0",
            "mode = \"scram\"\nauth_file = \"u\"\nmock_iterations = 0",
        ];
        for text in cases {
            assert!(auth(text).validate().is_err(), "{text}");
        }
        assert!(toml::from_str::<Auth>("mode = \"scram\"\nfallback = \"allow\"").is_err());
        assert!(toml::from_str::<Auth>("mode = \"scram\"\ncache_ttl_s = -1").is_err());
    }

    #[test]
    fn password_from_file_and_relative_paths() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("pw"), "s3cret\n").expect("write password");
        let mut c = auth("mode = \"scram\"\nlookup_user = \"x\"\nlookup_password_file = \"pw\"");
        c.resolve_paths(dir.path());
        assert_eq!(
            c.lookup_password().expect("readable"),
            Some("s3cret".into())
        );
        let c = auth("mode = \"scram\"\nlookup_user = \"x\"\nlookup_password_env = \"PGVEIL_TEST_SURELY_UNSET\"");
        assert!(c.lookup_password().is_err());
    }
}
