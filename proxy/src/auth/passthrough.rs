//! Relaying PostgreSQL's authentication exchange between client and server.
//!
//! The proxy forwards each Authentication request to the client and the client's answer
//! to the server, until the server says AuthenticationOk or sends an error. It never
//! offers `SCRAM-SHA-256-PLUS`: the client would bind to pgveil's certificate (or its
//! absence), which the server cannot verify.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::session::SessionError;
use crate::wire::frame;
use crate::wire::io::read_message;
use crate::wire::messages::backend::{self, auth};

/// How the relayed exchange ended.
#[derive(Debug)]
pub enum AuthOutcome {
    /// AuthenticationOk was relayed; the server goes on with ParameterStatus etc.
    Ok,
    /// The server refused; its ErrorResponse (with this SQLSTATE) was relayed.
    Failed { sqlstate: Option<String> },
}

/// The SASL mechanism that needs channel binding, which a proxy cannot relay.
const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Relay authentication until the server accepts or refuses the client.
pub async fn relay<C, U>(
    client: &mut C,
    client_buf: &mut BytesMut,
    upstream: &mut U,
    upstream_buf: &mut BytesMut,
    limit: usize,
) -> Result<AuthOutcome, SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let msg = read_message(upstream, upstream_buf, usize::MAX)
            .await
            .map_err(SessionError::upstream_read)?;
        match msg[0] {
            b'R' => {
                let body = frame::body(&msg);
                let kind = backend::auth_kind(body).map_err(SessionError::UpstreamProtocol)?;
                if kind == auth::SASL {
                    let mechs =
                        backend::sasl_mechanisms(body).map_err(SessionError::UpstreamProtocol)?;
                    let offered: Vec<&str> = mechs
                        .iter()
                        .map(String::as_str)
                        .filter(|m| *m != SCRAM_PLUS)
                        .collect();
                    let mut out = Vec::with_capacity(64);
                    backend::encode_sasl(&mut out, &offered);
                    write(client, &out).await?;
                } else {
                    write(client, &msg).await?;
                }
                match kind {
                    auth::OK => return Ok(AuthOutcome::Ok),
                    auth::SASL_FINAL => continue,
                    auth::CLEARTEXT
                    | auth::MD5
                    | auth::SASL
                    | auth::SASL_CONTINUE
                    | auth::GSS
                    | auth::GSS_CONTINUE
                    | auth::SSPI => {
                        let answer = read_message(client, client_buf, limit)
                            .await
                            .map_err(SessionError::client_read)?;
                        upstream
                            .write_all(&answer)
                            .await
                            .map_err(SessionError::UpstreamIo)?;
                        upstream.flush().await.map_err(SessionError::UpstreamIo)?;
                    }
                    _ => continue,
                }
            }
            b'E' => {
                write(client, &msg).await?;
                return Ok(AuthOutcome::Failed {
                    sqlstate: crate::wire::messages::error::sqlstate(frame::body(&msg)),
                });
            }
            // NegotiateProtocolVersion and notices pass through.
            _ => write(client, &msg).await?,
        }
    }
}

async fn write<C: AsyncWrite + Unpin>(client: &mut C, bytes: &[u8]) -> Result<(), SessionError> {
    client
        .write_all(bytes)
        .await
        .map_err(SessionError::ClientIo)?;
    client.flush().await.map_err(SessionError::ClientIo)
}
