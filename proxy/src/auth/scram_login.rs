//! One login in `mode = "scram"`, from StartupMessage to AuthenticationOk: throttle the
//! address, look up the verifier, run SCRAM with the client, and only for a valid proof
//! connect upstream and log in as the same user with the recovered ClientKey.
//!
//! A failed login never opens an upstream connection. Unknown users and wrong
//! passwords get the same exchange and the same error. After a failed proof the
//! user's cached verifier is re-read on the next attempt (once per cache TTL): the
//! password may have changed, and the client's proof was computed with the salt of the
//! verifier pgveil offered, so this attempt cannot be saved.
//!
//! Failed logins count against the client address until their window runs out; a
//! successful login does not clear them, or an attacker with one valid account could
//! reset the count between guesses at others.

use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use tracing::{debug, info, warn};

use super::authenticator::ScramAuth;
use super::client_leg::{self, Proven};
use super::negotiate;
use super::scram::{cert_end_point_hash, ScramError, UpstreamBinding};
use super::upstream_leg;
use super::verifier::AuthPlan;
use super::Login;
use crate::server::ProxyContext;
use crate::session::{send_fatal, SessionError, READ_BUFFER};
use crate::stream::ClientStream;
use crate::wire::messages::error::ProxyError;
use crate::wire::messages::startup::StartupMessage;

/// Authenticates the client as `mode = "scram"` says, within the startup timeout.
pub async fn establish(
    ctx: &ProxyContext,
    scram: &ScramAuth,
    client: &mut ClientStream,
    client_buf: &mut BytesMut,
    startup: &StartupMessage,
    peer: Option<SocketAddr>,
) -> Result<Login, SessionError> {
    let user = startup.user().unwrap_or_default();
    // PostgreSQL would answer a newer protocol version only after our SASL exchange,
    // where clients do not expect it: settle on 3.0 with the client now.
    let downgrade = negotiate::downgrade(startup);
    let upstream_startup = match &downgrade {
        Some(d) => {
            debug!(
                requested = startup.version & 0xffff,
                "declining protocol 3.x options; using 3.0"
            );
            if let Err(e) = write_flush(client, &d.to_client).await {
                return Err(SessionError::ClientIo(e));
            }
            &d.upstream_startup
        }
        None => startup,
    };
    let login = Attempt {
        ctx,
        scram,
        startup: upstream_startup,
        user,
        peer,
    };
    let ran = tokio::time::timeout(ctx.limits.startup_timeout(), login.run(client, client_buf));
    match ran.await {
        Ok(result) => result,
        Err(_) => {
            info!(user = %user, client = %client_label(peer), reason = "timeout", "login failed");
            send_fatal(
                client,
                &ProxyError::fatal("08006", "authentication timed out"),
            )
            .await;
            Ok(Login::Failed)
        }
    }
}

/// What one login attempt needs to know.
struct Attempt<'a> {
    ctx: &'a ProxyContext,
    scram: &'a ScramAuth,
    /// The StartupMessage to send PostgreSQL (the client's, or its 3.0 version).
    startup: &'a StartupMessage,
    user: &'a str,
    peer: Option<SocketAddr>,
}

impl Attempt<'_> {
    fn ip(&self) -> Option<IpAddr> {
        self.peer.map(|p| p.ip())
    }

    async fn run(
        &self,
        client: &mut ClientStream,
        client_buf: &mut BytesMut,
    ) -> Result<Login, SessionError> {
        // Throttled addresses wait, and take turns until their attempt's outcome is
        // recorded (the guard lives until the client leg is over).
        let turn = match self.ip() {
            Some(ip) => self.scram.limiter.wait_turn(ip).await,
            None => None,
        };

        let lookup = match self.scram.source.lookup(self.user).await {
            Ok(lookup) => lookup,
            Err(e) => {
                warn!(user = %self.user, error = %e, "verifier lookup failed; refusing login");
                let err = ProxyError::fatal(
                    "08006",
                    "pgveil could not look up the credentials of the user; try again later",
                );
                send_fatal(client, &err).await;
                return Ok(Login::Failed);
            }
        };
        let verifier = match lookup.plan(self.scram.fallback) {
            AuthPlan::Scram(v) => Some(v),
            AuthPlan::Mock => None,
            AuthPlan::Passthrough => {
                debug!(user = %self.user, "no SCRAM verifier; relaying to PostgreSQL (fallback = passthrough)");
                let (login, refused) =
                    super::relay_login(self.ctx, client, client_buf, self.startup).await?;
                // PostgreSQL's own wrong-password and not-authorized refusals count
                // like ours; unavailability (too many connections, ...) does not.
                if let (Some(ip), Some("28P01" | "28000")) = (self.ip(), refused.as_deref()) {
                    self.scram.limiter.record_failure(ip);
                }
                drop(turn);
                return Ok(login);
            }
        };

        let binding = client_binding(self.ctx, client);
        let outcome = client_leg::authenticate(
            client,
            client_buf,
            self.user,
            verifier.as_ref(),
            &self.scram.mock,
            binding.as_deref(),
        )
        .await?;
        let proven = match outcome {
            Ok(proven) => proven,
            Err(refusal) => {
                if let Some(ip) = self.ip() {
                    self.scram.limiter.record_failure(ip);
                }
                let reread =
                    refusal.is_wrong_password() && self.scram.source.failed_login(self.user);
                info!(
                    user = %self.user,
                    client = %client_label(self.peer),
                    reason = %refusal,
                    verifier_reread = reread,
                    "login failed"
                );
                send_fatal(client, &refusal.to_error()).await;
                return Ok(Login::Failed);
            }
        };
        drop(turn);
        // A proof only verifies against a real verifier (the mock exchange always
        // fails), so this is always present; refuse rather than trust that.
        let Some(verifier) = verifier else {
            let refusal = ScramError::AuthFailed {
                user: self.user.to_owned(),
            };
            send_fatal(
                client,
                &ProxyError::fatal(refusal.sqlstate(), refusal.message()),
            )
            .await;
            return Ok(Login::Failed);
        };
        self.login_upstream(client, proven, verifier).await
    }

    /// Connects upstream, logs in with the client's key, and on success finishes the
    /// client's exchange (AuthenticationSASLFinal, AuthenticationOk).
    async fn login_upstream(
        &self,
        client: &mut ClientStream,
        proven: Proven,
        verifier: super::scram::Verifier,
    ) -> Result<Login, SessionError> {
        let mut upstream = match self.ctx.upstream.connect().await {
            Ok(u) => u,
            Err(e) => {
                warn!(error = %e, "upstream connection failed");
                let err = ProxyError::fatal(
                    "08006",
                    format!("pgveil could not connect to the database server: {e}"),
                );
                send_fatal(client, &err).await;
                return Err(e.into());
            }
        };
        let binding = if upstream.is_tls() {
            UpstreamBinding::Tls {
                end_point_hash: upstream
                    .peer_certificate()
                    .as_deref()
                    .and_then(cert_end_point_hash),
            }
        } else {
            UpstreamBinding::Plain
        };
        let mut upstream_buf = BytesMut::with_capacity(READ_BUFFER);
        let Proven {
            server_final,
            client_key,
        } = proven;
        let outcome = upstream_leg::login(
            &mut upstream,
            &mut upstream_buf,
            &self.startup.raw,
            client_key,
            verifier,
            binding,
        )
        .await;
        match outcome {
            Ok(Ok(before_ok)) => {
                client_leg::accept(client, &before_ok, &server_final).await?;
                debug!(user = %self.user, "client authenticated by pgveil, logged in upstream");
                Ok(Login::Established {
                    upstream,
                    upstream_buf,
                })
            }
            Ok(Err(refusal)) => {
                self.upstream_refused(client, refusal).await;
                Ok(Login::Failed)
            }
            Err(e) => {
                warn!(user = %self.user, error = %e, "upstream login failed");
                let err =
                    ProxyError::fatal("08006", "could not authenticate to the upstream server");
                send_fatal(client, &err).await;
                Err(e)
            }
        }
    }

    /// Tells the client why PostgreSQL did not take the login, and drops the cached
    /// verifier when it no longer matches PostgreSQL's.
    async fn upstream_refused(&self, client: &mut ClientStream, refusal: upstream_leg::Refusal) {
        use upstream_leg::Refusal;
        match &refusal {
            Refusal::Server { sqlstate, .. } if sqlstate.as_deref() == Some("28P01") => {
                self.scram.source.invalidate(self.user);
                info!(user = %self.user, client = %client_label(self.peer), reason = %refusal, "login failed upstream; verifier will be re-read");
            }
            Refusal::Server { .. } => {
                info!(user = %self.user, client = %client_label(self.peer), reason = %refusal, "login refused upstream");
            }
            Refusal::Scram(ScramError::VerifierStale) => {
                self.scram.source.invalidate(self.user);
                info!(user = %self.user, client = %client_label(self.peer), reason = %refusal, "login failed: password changed; verifier will be re-read");
            }
            Refusal::Scram(_) | Refusal::Method(_) => {
                warn!(user = %self.user, client = %client_label(self.peer), reason = %refusal, "upstream login failed");
            }
        }
        match refusal {
            Refusal::Server { message, .. } => {
                let _ = write_flush(client, &message).await;
            }
            Refusal::Method(_) => {
                let err = ProxyError::fatal(
                    "08006",
                    format!("user \"{}\" cannot be served in scram mode", self.user),
                )
                .with_hint(
                    "PostgreSQL must accept pgveil's connections for this user with \
                     scram-sha-256 (or trust) in pg_hba.conf",
                );
                send_fatal(client, &err).await;
            }
            Refusal::Scram(e) => {
                send_fatal(client, &ProxyError::fatal(e.sqlstate(), e.message())).await;
            }
        }
    }
}

/// The `tls-server-end-point` hash of pgveil's certificate when the client connection
/// is TLS (SCRAM-SHA-256-PLUS is then offered), else `None`.
///
/// The certificate is the one loaded now; after a SIGHUP reload between a client's
/// handshake and this point the hash would not match and that client's -PLUS login
/// fails once with a channel-binding error.
fn client_binding(ctx: &ProxyContext, client: &ClientStream) -> Option<Vec<u8>> {
    if !client.is_tls() {
        return None;
    }
    let tls = ctx.tls.as_ref()?;
    cert_end_point_hash(&tls.identity().cert_der)
}

/// The client address for logs (`unknown` when the listener could not tell).
fn client_label(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}

async fn write_flush(client: &mut ClientStream, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    client.write_all(bytes).await?;
    client.flush().await
}
