//! Authentication of the client and the login upstream.
//!
//! - [`passthrough`]: relays PostgreSQL's own exchange (trust, cleartext, md5,
//!   SCRAM-SHA-256); never offers `SCRAM-SHA-256-PLUS`, since channel binding cannot
//!   survive a proxy that terminates TLS.
//! - [`scram`]: sans-IO SCRAM-SHA-256(-PLUS) server (client leg) and ClientKey client
//!   (upstream leg), verifier parsing, `tls-server-end-point` hashing.
//! - [`mock`]: per-process secret for mock challenges to unknown users.
//! - [`verifier`]: where verifiers come from (`auth_query`, `auth_file`), TTL cache.
//! - [`limiter`]: per-client-address failed-login throttle.
//! - [`scram_config`]: the `[auth]` keys of `mode = "scram"`.
//! - [`authenticator`]: the mode and shared scram state, built once at start.
//! - [`scram_login`]: one login in scram mode, over [`client_leg`] (pgveil as SCRAM
//!   server) and [`upstream_leg`] (login to PostgreSQL with the ClientKey), with
//!   [`sasl`] framing the messages and [`negotiate`] settling the protocol version
//!   before authentication.

pub mod authenticator;
pub mod client_leg;
pub mod limiter;
pub mod mock;
pub mod negotiate;
pub mod passthrough;
pub mod sasl;
pub mod scram;
pub mod scram_config;
pub mod scram_login;
pub mod upstream_leg;
pub mod verifier;

pub use authenticator::{AuthSetupError, Authenticator};

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use crate::server::ProxyContext;
use crate::session::{send_fatal, SessionError, READ_BUFFER};
use crate::stream::{ClientStream, UpstreamStream};
use crate::wire::messages::error::ProxyError;
use crate::wire::messages::startup::StartupMessage;

/// The result of the authentication phase.
pub enum Login {
    /// The client is authenticated and AuthenticationOk has been sent to it; the
    /// upstream connection is logged in as the same user and about to send
    /// ParameterStatus, BackendKeyData and ReadyForQuery (any bytes already read are
    /// in `upstream_buf`).
    Established {
        upstream: UpstreamStream,
        upstream_buf: BytesMut,
    },
    /// Authentication failed; the client has been told.
    Failed,
}

/// Authenticate the client and log in upstream as the configured `[auth] mode` says:
/// `passthrough` relays PostgreSQL's exchange, `scram` runs it at pgveil.
pub async fn establish(
    ctx: &ProxyContext,
    client: &mut ClientStream,
    client_buf: &mut BytesMut,
    startup: &StartupMessage,
    peer: Option<SocketAddr>,
) -> Result<Login, SessionError> {
    match ctx.auth.scram() {
        Some(scram) => scram_login::establish(ctx, scram, client, client_buf, startup, peer).await,
        None => Ok(relay_login(ctx, client, client_buf, startup).await?.0),
    }
}

/// Connect upstream and relay PostgreSQL's own authentication exchange (passthrough
/// mode, and users that scram mode hands over with `fallback = "passthrough"`).
///
/// Besides the login, returns the SQLSTATE with which PostgreSQL refused the client,
/// if it did (for the failed-login count).
pub async fn relay_login(
    ctx: &ProxyContext,
    client: &mut ClientStream,
    client_buf: &mut BytesMut,
    startup: &StartupMessage,
) -> Result<(Login, Option<String>), SessionError> {
    let user = startup.user().unwrap_or_default();
    let mut upstream = match ctx.upstream.connect().await {
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
    upstream
        .write_all(&startup.raw)
        .await
        .map_err(SessionError::UpstreamIo)?;
    upstream.flush().await.map_err(SessionError::UpstreamIo)?;

    let mut upstream_buf = BytesMut::with_capacity(READ_BUFFER);
    let relayed = tokio::time::timeout(
        ctx.limits.startup_timeout(),
        passthrough::relay(
            client,
            client_buf,
            &mut upstream,
            &mut upstream_buf,
            ctx.limits.max_message_bytes,
        ),
    )
    .await;
    match relayed {
        Ok(Ok(passthrough::AuthOutcome::Ok)) => Ok((
            Login::Established {
                upstream,
                upstream_buf,
            },
            None,
        )),
        Ok(Ok(passthrough::AuthOutcome::Failed { sqlstate })) => {
            info!(user = %user, sqlstate = ?sqlstate, "authentication failed");
            Ok((Login::Failed, sqlstate))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            send_fatal(
                client,
                &ProxyError::fatal("08006", "authentication timed out"),
            )
            .await;
            Ok((Login::Failed, None))
        }
    }
}
