//! The client leg of `mode = "scram"`: pgveil is the SCRAM server. It offers the
//! mechanisms, reads the client's SASL messages, and ends with either the client's
//! ClientKey (a valid proof) or a refusal to send. Nothing here talks to PostgreSQL, so
//! a failed login costs no upstream connection.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::mock::MockSecret;
use super::sasl;
use super::scram::{server_mechanisms, ClientKey, ScramError, ScramServer, Verifier};
use crate::session::SessionError;
use crate::wire::frame;
use crate::wire::io::{read_message, ReadError};
use crate::wire::messages::backend::{self, auth};
use crate::wire::messages::error::ProxyError;

/// A client that proved it knows the password.
pub struct Proven {
    /// server-final for AuthenticationSASLFinal, to send once the upstream login worked.
    pub server_final: Vec<u8>,
    /// The key recovered from the proof, for the upstream login.
    pub client_key: ClientKey,
}

/// Why the client leg ended without a proof.
#[derive(Debug)]
pub enum Refusal {
    /// The SCRAM exchange failed: wrong password, unknown user, bad binding, ...
    Scram(ScramError),
    /// The client did not follow the SASL message flow.
    Protocol(String),
}

impl Refusal {
    /// The FATAL error to send the client, worded as PostgreSQL words it.
    pub fn to_error(&self) -> ProxyError {
        match self {
            Refusal::Scram(e) => {
                let err = ProxyError::fatal(e.sqlstate(), e.message());
                match e.detail() {
                    Some(detail) => err.with_detail(detail),
                    None => err,
                }
            }
            Refusal::Protocol(message) => ProxyError::fatal("08P01", message.clone()),
        }
    }

    /// Whether this is a wrong password (or unknown user), as opposed to a broken
    /// exchange: only then may the cached verifier be out of date.
    pub fn is_wrong_password(&self) -> bool {
        matches!(self, Refusal::Scram(ScramError::AuthFailed { .. }))
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Scram(e) => e.fmt(f),
            Refusal::Protocol(message) => f.write_str(message),
        }
    }
}

/// Runs the SCRAM exchange with the client up to checking its proof.
///
/// `verifier` is the user's, or `None` for the mock exchange that fails like a wrong
/// password. `channel_binding` is the `tls-server-end-point` hash of pgveil's
/// certificate when the client connection is TLS; -PLUS is offered exactly then.
/// Client I/O errors end the session (`Err`); everything the client got wrong is a
/// [`Refusal`] for the caller to report.
pub async fn authenticate<C>(
    client: &mut C,
    client_buf: &mut BytesMut,
    user: &str,
    verifier: Option<&Verifier>,
    mock: &MockSecret,
    channel_binding: Option<&[u8]>,
) -> Result<Result<Proven, Refusal>, SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(64);
    backend::encode_sasl(&mut out, server_mechanisms(channel_binding));
    send(client, &out).await?;

    let initial = read_sasl(client, client_buf, "SASL response").await?;
    let initial = match initial {
        Ok(msg) => msg,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let parsed = match sasl::initial_response(frame::body(&initial)) {
        Ok(p) => p,
        Err(_) => {
            return Ok(Err(Refusal::Scram(ScramError::Malformed(
                "Malformed SASLInitialResponse message.".into(),
            ))))
        }
    };
    let mechanism = parsed.mechanism.to_owned();
    let client_first = match parsed.data {
        Some(data) => data.to_vec(),
        // Length -1: the client waits for an empty challenge, as PostgreSQL allows.
        None => {
            out.clear();
            backend::encode_auth(&mut out, auth::SASL_CONTINUE, &[]);
            send(client, &out).await?;
            match read_sasl(client, client_buf, "SASL response").await? {
                Ok(msg) => frame::body(&msg).to_vec(),
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
    };

    let (server, server_first) = match ScramServer::start(
        &mechanism,
        &client_first,
        verifier,
        mock,
        user,
        channel_binding,
    ) {
        Ok(started) => started,
        Err(e) => return Ok(Err(Refusal::Scram(e))),
    };
    out.clear();
    backend::encode_auth(&mut out, auth::SASL_CONTINUE, &server_first);
    send(client, &out).await?;

    let client_final = match read_sasl(client, client_buf, "SASL response").await? {
        Ok(msg) => msg,
        Err(refusal) => return Ok(Err(refusal)),
    };
    Ok(server
        .finish(frame::body(&client_final))
        .map(|(server_final, client_key)| Proven {
            server_final,
            client_key,
        })
        .map_err(Refusal::Scram))
}

/// Sends AuthenticationSASLFinal and AuthenticationOk, with `before` (messages
/// PostgreSQL sent before authenticating, e.g. NegotiateProtocolVersion) first.
pub async fn accept<C>(
    client: &mut C,
    before: &[u8],
    server_final: &[u8],
) -> Result<(), SessionError>
where
    C: AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(before.len() + server_final.len() + 32);
    out.extend_from_slice(before);
    backend::encode_auth(&mut out, auth::SASL_FINAL, server_final);
    backend::encode_auth(&mut out, auth::OK, &[]);
    send(client, &out).await
}

/// Reads the client's next message, which must be a SASL message ('p').
async fn read_sasl<C>(
    client: &mut C,
    client_buf: &mut BytesMut,
    expected: &str,
) -> Result<Result<BytesMut, Refusal>, SessionError>
where
    C: AsyncRead + Unpin,
{
    let msg = match read_message(client, client_buf, sasl::MAX_MESSAGE_LEN).await {
        Ok(msg) => msg,
        Err(ReadError::Frame(e)) => {
            return Ok(Err(Refusal::Protocol(format!("invalid {expected}: {e}"))))
        }
        Err(e) => return Err(SessionError::client_read(e)),
    };
    if msg[0] == sasl::TAG {
        Ok(Ok(msg))
    } else {
        Ok(Err(Refusal::Protocol(format!(
            "expected {expected}, got message type {}",
            msg[0]
        ))))
    }
}

async fn send<C: AsyncWrite + Unpin>(client: &mut C, bytes: &[u8]) -> Result<(), SessionError> {
    client
        .write_all(bytes)
        .await
        .map_err(SessionError::ClientIo)?;
    client.flush().await.map_err(SessionError::ClientIo)
}
