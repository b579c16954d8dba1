//! The upstream leg of `mode = "scram"`: pgveil logs into PostgreSQL as the client's
//! user, proving the ClientKey recovered from the client's proof, and checks that the
//! server proves it knows the verifier before the login counts.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::sasl;
use super::scram::{ClientKey, ScramClient, ScramError, UpstreamBinding, Verifier};
use crate::session::SessionError;
use crate::wire::cursor::Malformed;
use crate::wire::frame;
use crate::wire::io::read_message;
use crate::wire::messages::backend::{self, auth};
use crate::wire::messages::error;

/// Largest message read from PostgreSQL before it accepted the login.
const MAX_AUTH_MESSAGE: usize = 1 << 20;

/// Why PostgreSQL did not accept the login.
#[derive(Debug)]
pub enum Refusal {
    /// PostgreSQL sent this ErrorResponse (the whole message, relayed to the client).
    Server {
        message: BytesMut,
        sqlstate: Option<String>,
    },
    /// PostgreSQL asks for an authentication method a ClientKey cannot answer
    /// (cleartext, md5, GSSAPI, SSPI): its AuthenticationRequest code.
    Method(i32),
    /// The SCRAM exchange with PostgreSQL failed.
    Scram(ScramError),
}

impl Refusal {
    /// The authentication method PostgreSQL asked for, for logs.
    pub fn method_name(code: i32) -> &'static str {
        match code {
            auth::CLEARTEXT => "cleartext password",
            auth::MD5 => "md5",
            auth::GSS | auth::GSS_CONTINUE => "gssapi",
            auth::SSPI => "sspi",
            _ => "an unknown method",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Server { sqlstate, .. } => write!(
                f,
                "server refused the login (SQLSTATE {})",
                sqlstate.as_deref().unwrap_or("none")
            ),
            Refusal::Method(code) => write!(
                f,
                "server asks for {} authentication (code {code})",
                Refusal::method_name(*code)
            ),
            Refusal::Scram(e) => e.fmt(f),
        }
    }
}

/// Sends `startup` and authenticates with `client_key` against `verifier` (the one the
/// client was checked against). `binding` describes the upstream connection.
///
/// On success AuthenticationOk has been read; returns the messages PostgreSQL sent
/// before it that the client must see too (NegotiateProtocolVersion, notices). The
/// rest (ParameterStatus, BackendKeyData, ReadyForQuery) is left in the stream and
/// `upstream_buf`. A server that accepts without SCRAM (`trust`) is fine; one that
/// starts SCRAM and accepts without proving itself is not.
pub async fn login<U>(
    upstream: &mut U,
    upstream_buf: &mut BytesMut,
    startup: &[u8],
    client_key: ClientKey,
    verifier: Verifier,
    binding: UpstreamBinding,
) -> Result<Result<Vec<u8>, Refusal>, SessionError>
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    send(upstream, startup).await?;
    let mut credentials = Some((client_key, verifier));
    let mut scram: Option<ScramClient> = None;
    let mut scram_started = false;
    let mut server_verified = false;
    let mut before_ok = Vec::new();
    let mut out = Vec::with_capacity(256);
    loop {
        let msg = read_message(upstream, upstream_buf, MAX_AUTH_MESSAGE)
            .await
            .map_err(SessionError::upstream_read)?;
        let body = frame::body(&msg);
        match msg[0] {
            b'R' => {
                let kind = backend::auth_kind(body).map_err(SessionError::UpstreamProtocol)?;
                let data = body.get(4..).unwrap_or_default();
                match kind {
                    auth::OK if scram_started && !server_verified => {
                        return Ok(Err(Refusal::Scram(ScramError::UpstreamMalformed(
                            "server accepted the login without proving it knows the verifier"
                                .into(),
                        ))));
                    }
                    auth::OK => return Ok(Ok(before_ok)),
                    auth::SASL => {
                        let Some((key, verifier)) = credentials.take() else {
                            return Err(out_of_order());
                        };
                        let mechanisms = backend::sasl_mechanisms(body)
                            .map_err(SessionError::UpstreamProtocol)?;
                        let offered: Vec<&str> = mechanisms.iter().map(String::as_str).collect();
                        let (client, mechanism, first) =
                            match ScramClient::new(key, verifier, &offered, binding.clone()) {
                                Ok(started) => started,
                                Err(e) => return Ok(Err(Refusal::Scram(e))),
                            };
                        out.clear();
                        sasl::encode_initial_response(&mut out, mechanism, &first);
                        send(upstream, &out).await?;
                        scram = Some(client);
                        scram_started = true;
                    }
                    auth::SASL_CONTINUE => {
                        let Some(client) = scram.as_mut() else {
                            return Err(out_of_order());
                        };
                        let client_final = match client.server_first(data) {
                            Ok(f) => f,
                            Err(e) => return Ok(Err(Refusal::Scram(e))),
                        };
                        out.clear();
                        sasl::encode_response(&mut out, &client_final);
                        send(upstream, &out).await?;
                    }
                    auth::SASL_FINAL => {
                        let Some(client) = scram.take() else {
                            return Err(out_of_order());
                        };
                        if let Err(e) = client.server_final(data) {
                            return Ok(Err(Refusal::Scram(e)));
                        }
                        server_verified = true;
                    }
                    other => return Ok(Err(Refusal::Method(other))),
                }
            }
            b'E' => {
                let sqlstate = error::sqlstate(body);
                return Ok(Err(Refusal::Server {
                    message: msg,
                    sqlstate,
                }));
            }
            // NegotiateProtocolVersion and notices are the client's to see.
            b'v' | b'N' => before_ok.extend_from_slice(&msg),
            _ => return Err(SessionError::UpstreamProtocol(Malformed("Authentication"))),
        }
    }
}

fn out_of_order() -> SessionError {
    SessionError::UpstreamProtocol(Malformed("Authentication"))
}

async fn send<U: AsyncWrite + Unpin>(upstream: &mut U, bytes: &[u8]) -> Result<(), SessionError> {
    upstream
        .write_all(bytes)
        .await
        .map_err(SessionError::UpstreamIo)?;
    upstream.flush().await.map_err(SessionError::UpstreamIo)
}
