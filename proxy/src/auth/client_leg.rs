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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use tokio::io::{AsyncReadExt, DuplexStream};

    const PASSWORD: &str = "s3cret-pw";

    fn verifier(password: &str) -> Verifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Verifier::parse(&text).expect("postgres-protocol makes valid verifiers")
    }

    fn mock() -> MockSecret {
        MockSecret::from_key([3; 32], 4096)
    }

    async fn read_backend(s: &mut DuplexStream) -> (u8, Vec<u8>) {
        let tag = s.read_u8().await.expect("tag");
        let len = s.read_u32().await.expect("length") as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.expect("body");
        (tag, body)
    }

    async fn send_raw(s: &mut DuplexStream, tag: u8, body: &[u8]) {
        let mut out = Vec::new();
        crate::wire::messages::encode(&mut out, tag, |b| b.extend_from_slice(body));
        s.write_all(&out).await.expect("send");
    }

    fn auth_code(body: &[u8]) -> i32 {
        i32::from_be_bytes([body[0], body[1], body[2], body[3]])
    }

    /// A libpq-like client: picks `mechanism`, sends client-first inline or (with
    /// `deferred`) after an empty challenge, and answers server-first.
    async fn pg_client(
        mut s: DuplexStream,
        password: &str,
        mechanism: &str,
        binding: ChannelBinding,
        deferred: bool,
    ) -> Vec<String> {
        let (_, offer) = read_backend(&mut s).await;
        let offered = crate::wire::messages::backend::sasl_mechanisms(&offer).expect("sasl");
        let mut scram = ScramSha256::new(password.as_bytes(), binding);
        let mut out = Vec::new();
        if deferred {
            crate::wire::messages::encode(&mut out, b'p', |b| {
                crate::wire::messages::put_cstr(b, mechanism.as_bytes());
                b.extend_from_slice(&(-1i32).to_be_bytes());
            });
            s.write_all(&out).await.expect("send");
            let (_, empty) = read_backend(&mut s).await;
            assert_eq!(empty, auth::SASL_CONTINUE.to_be_bytes(), "empty challenge");
            send_raw(&mut s, b'p', scram.message()).await;
        } else {
            sasl::encode_initial_response(&mut out, mechanism, scram.message());
            s.write_all(&out).await.expect("send");
        }
        let (tag, body) = read_backend(&mut s).await;
        if tag == b'E' {
            return offered;
        }
        assert_eq!(auth_code(&body), auth::SASL_CONTINUE);
        scram.update(&body[4..]).expect("server-first");
        send_raw(&mut s, b'p', scram.message()).await;
        offered
    }

    async fn run(
        password: &str,
        known: bool,
        mechanism: &'static str,
        binding: ChannelBinding,
        ours: Option<&'static [u8]>,
        deferred: bool,
    ) -> (Result<Proven, Refusal>, Vec<String>) {
        let (mut server, client) = tokio::io::duplex(4096);
        let password = password.to_owned();
        let peer = tokio::spawn(async move {
            pg_client(client, &password, mechanism, binding, deferred).await
        });
        let v = verifier(PASSWORD);
        let mut buf = BytesMut::new();
        let result = authenticate(
            &mut server,
            &mut buf,
            "alice",
            known.then_some(&v),
            &mock(),
            ours,
        )
        .await
        .expect("no i/o error");
        if let Err(refusal) = &result {
            // The client may be gone already; it reads the error only mid-exchange.
            let _ = send(&mut server, &refusal.to_error().to_message()).await;
        }
        if let Ok(proven) = &result {
            assert!(proven.client_key.matches(v.stored_key()), "recovered key");
        }
        (result, peer.await.expect("client task"))
    }

    #[tokio::test]
    async fn valid_proof_recovers_the_key() {
        let (result, offered) = run(
            PASSWORD,
            true,
            SCRAM_SHA_256,
            ChannelBinding::unsupported(),
            None,
            false,
        )
        .await;
        assert_eq!(offered, [SCRAM_SHA_256]);
        let proven = result.expect("valid proof");
        assert!(proven.server_final.starts_with(b"v="));
    }

    #[tokio::test]
    async fn plus_offered_and_bound_over_tls() {
        const HASH: &[u8] = &[7; 32];
        let (result, offered) = run(
            PASSWORD,
            true,
            SCRAM_SHA_256_PLUS,
            ChannelBinding::tls_server_end_point(HASH.to_vec()),
            Some(HASH),
            false,
        )
        .await;
        assert_eq!(offered, [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
        assert!(result.is_ok());
    }

    #[tokio::test]
    async fn deferred_client_first_is_accepted() {
        let (result, _) = run(
            PASSWORD,
            true,
            SCRAM_SHA_256,
            ChannelBinding::unsupported(),
            None,
            true,
        )
        .await;
        assert!(result.is_ok());
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user_are_refused_alike() {
        let mut errors = Vec::new();
        for (password, known) in [("wrong", true), (PASSWORD, false)] {
            let (result, _) = run(
                password,
                known,
                SCRAM_SHA_256,
                ChannelBinding::unsupported(),
                None,
                false,
            )
            .await;
            let refusal = result.err().expect("refused");
            assert!(refusal.is_wrong_password());
            errors.push(refusal.to_error());
        }
        assert_eq!(errors[0], errors[1]);
        assert_eq!(errors[0].sqlstate, "28P01");
    }

    #[tokio::test]
    async fn plus_without_tls_is_refused() {
        let (result, offered) = run(
            PASSWORD,
            true,
            SCRAM_SHA_256_PLUS,
            ChannelBinding::tls_server_end_point(vec![7; 32]),
            None,
            false,
        )
        .await;
        assert_eq!(offered, [SCRAM_SHA_256]);
        let refusal = result.err().expect("refused");
        assert!(!refusal.is_wrong_password());
        assert_eq!(refusal.to_error().sqlstate, "08P01");
    }

    #[tokio::test]
    async fn other_messages_and_garbage_are_protocol_errors() {
        for (tag, body) in [
            (b'Q', &b"SELECT 1\0"[..]),
            (b'p', &b"SCRAM-SHA-256\0\0\0\0\x09short"[..]),
        ] {
            let (mut server, mut client) = tokio::io::duplex(4096);
            send_raw(&mut client, tag, body).await;
            let mut buf = BytesMut::new();
            let result = authenticate(&mut server, &mut buf, "alice", None, &mock(), None)
                .await
                .expect("no i/o error");
            let refusal = result.err().expect("refused");
            assert!(!refusal.is_wrong_password());
            assert_eq!(refusal.to_error().sqlstate, "08P01", "{refusal}");
        }
    }

    #[tokio::test]
    async fn oversized_sasl_message_is_refused_before_reading_it() {
        let (mut server, mut client) = tokio::io::duplex(4096);
        client
            .write_all(&[b'p', 0x7f, 0xff, 0xff, 0xff])
            .await
            .expect("send header");
        let mut buf = BytesMut::new();
        let result = authenticate(&mut server, &mut buf, "alice", None, &mock(), None)
            .await
            .expect("no i/o error");
        assert!(matches!(result, Err(Refusal::Protocol(_))));
    }
}
