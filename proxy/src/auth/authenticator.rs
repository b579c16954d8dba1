//! The authentication setup every session shares, built once at start from `[auth]`:
//! which mode runs, and for `mode = "scram"` the verifier source, the failed-login
//! limiter and the mock secret.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::limiter::FailedLoginLimiter;
use super::mock::MockSecret;
use super::scram_config::{Fallback, ScramConfigError};
use super::verifier::{self, Dial, DialFuture, VerifierError, VerifierSource};
use crate::config::{AuthConfig, AuthMode};
use crate::upstream::Upstream;

/// Why `[auth]` cannot be put to work.
#[derive(Debug, Error)]
pub enum AuthSetupError {
    /// An invalid setting.
    #[error(transparent)]
    Config(#[from] ScramConfigError),
    /// The verifier source does not work: the lookup role cannot log in or run
    /// `auth_query`, or the `auth_file` cannot be read.
    #[error("{key} cannot provide SCRAM verifiers: {source}")]
    Source {
        /// `auth.lookup_user` or `auth.auth_file`.
        key: &'static str,
        /// What failed.
        source: VerifierError,
    },
}

/// How sessions authenticate, shared by all of them.
#[derive(Debug)]
pub struct Authenticator {
    scram: Option<ScramAuth>,
}

/// The state of `mode = "scram"`.
#[derive(Debug)]
pub struct ScramAuth {
    /// Where verifiers come from, with their cache.
    pub source: VerifierSource,
    /// Slows down repeated failed logins from one address.
    pub limiter: FailedLoginLimiter,
    /// Derives the mock challenge for users without a verifier.
    pub mock: MockSecret,
    /// What to do with users whose secret is md5 or missing.
    pub fallback: Fallback,
}

impl Authenticator {
    /// `mode = "passthrough"`: PostgreSQL authenticates, pgveil relays.
    pub fn passthrough() -> Authenticator {
        Authenticator { scram: None }
    }

    /// Builds what `config` describes. Lookups reach PostgreSQL through `upstream`, with
    /// the same TLS settings as sessions, and give up after `lookup_timeout`.
    pub fn from_config(
        config: &AuthConfig,
        upstream: &Upstream,
        lookup_timeout: Duration,
    ) -> Result<Authenticator, AuthSetupError> {
        if config.mode == AuthMode::Passthrough {
            return Ok(Authenticator::passthrough());
        }
        let scram = &config.scram;
        let source =
            VerifierSource::from_config(scram, Arc::new(upstream.clone()), lookup_timeout)?;
        Ok(Authenticator {
            scram: Some(ScramAuth {
                source,
                limiter: scram.limiter(),
                mock: scram.mock_secret(),
                fallback: scram.fallback,
            }),
        })
    }

    /// The configured mode.
    pub fn mode(&self) -> AuthMode {
        match self.scram {
            Some(_) => AuthMode::Scram,
            None => AuthMode::Passthrough,
        }
    }

    /// The scram state, `None` in passthrough mode.
    pub fn scram(&self) -> Option<&ScramAuth> {
        self.scram.as_ref()
    }

    /// Checks at start that verifiers can be read (the lookup role logs in and runs
    /// `auth_query`, or the auth_file parses), so a misconfiguration stops pgveil
    /// instead of failing every login.
    pub async fn check(&self) -> Result<(), AuthSetupError> {
        let Some(scram) = &self.scram else {
            return Ok(());
        };
        scram
            .source
            .check()
            .await
            .map_err(|source| AuthSetupError::Source {
                key: if matches!(
                    source,
                    VerifierError::FileRead { .. } | VerifierError::FileSyntax { .. }
                ) {
                    "auth.auth_file"
                } else {
                    "auth.lookup_user"
                },
                source,
            })
    }
}

/// Verifier lookups open their connections like sessions do, TLS included: verifiers
/// allow offline guessing, so they travel no less protected than a session.
impl Dial for Upstream {
    fn dial(&self) -> DialFuture<'_> {
        Box::pin(async move {
            let stream = self.connect().await.map_err(std::io::Error::other)?;
            let stream: Box<dyn verifier::UpstreamStream> = Box::new(stream);
            Ok(stream)
        })
    }
}
