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
                        tracing::debug!(mechanism, "logging in upstream with the client's key");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::mock::MockSecret;
    use crate::auth::scram::{ScramServer, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use tokio::io::{AsyncReadExt, DuplexStream};

    const PASSWORD: &str = "s3cret-pw";
    const STARTUP: &[u8] = b"\0\0\0\x08\0\x03\0\0";

    fn verifier(password: &str) -> Verifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Verifier::parse(&text).expect("postgres-protocol makes valid verifiers")
    }

    /// The ClientKey a client with `password` proves, recovered the way pgveil does.
    fn key_for(password: &str, v: &Verifier) -> ClientKey {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mock = MockSecret::from_key([1; 32], 4096);
        let (server, first) =
            ScramServer::start(SCRAM_SHA_256, client.message(), Some(v), &mock, "u", None)
                .expect("start");
        client.update(&first).expect("update");
        server.finish(client.message()).expect("valid proof").1
    }

    fn auth_msg(code: i32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        backend::encode_auth(&mut out, code, data);
        out
    }

    async fn read_frontend(s: &mut DuplexStream) -> Vec<u8> {
        let tag = s.read_u8().await.expect("tag");
        assert_eq!(tag, b'p');
        let len = s.read_u32().await.expect("length") as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.expect("body");
        body
    }

    /// A PostgreSQL that runs SCRAM against `server_verifier`, offering `mechanisms`
    /// and binding to `cb`, then sends ParameterStatus + ReadyForQuery.
    async fn fake_postgres(mut s: DuplexStream, server_verifier: Verifier, cb: Option<Vec<u8>>) {
        let mut startup = [0u8; 8];
        s.read_exact(&mut startup).await.expect("startup");
        let mut out = Vec::new();
        let mechs: &[&str] = if cb.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        };
        backend::encode_sasl(&mut out, mechs);
        s.write_all(&out).await.expect("send");
        let body = read_frontend(&mut s).await;
        let initial = sasl::initial_response(&body).expect("initial response");
        let mock = MockSecret::from_key([2; 32], 4096);
        let Ok((server, first)) = ScramServer::start(
            initial.mechanism,
            initial.data.unwrap_or_default(),
            Some(&server_verifier),
            &mock,
            "u",
            cb.as_deref(),
        ) else {
            s.write_all(&error_msg("08P01")).await.expect("send");
            return;
        };
        s.write_all(&auth_msg(auth::SASL_CONTINUE, &first))
            .await
            .expect("send");
        let Ok(body) =
            tokio::time::timeout(std::time::Duration::from_secs(5), read_frontend(&mut s)).await
        else {
            return;
        };
        match server.finish(&body) {
            Ok((last, _)) => {
                let mut out = auth_msg(auth::SASL_FINAL, &last);
                out.extend_from_slice(&auth_msg(auth::OK, &[]));
                backend::encode_parameter_status(&mut out, "server_version", "17");
                backend::encode_ready(&mut out, b'I');
                s.write_all(&out).await.expect("send");
            }
            Err(_) => s.write_all(&error_msg("28P01")).await.expect("send"),
        }
    }

    fn error_msg(sqlstate: &'static str) -> Vec<u8> {
        crate::wire::messages::error::ProxyError::fatal(sqlstate, "nope").to_message()
    }

    async fn login_against(
        server: impl FnOnce(DuplexStream) -> tokio::task::JoinHandle<()>,
        client_verifier: Verifier,
        key: ClientKey,
        binding: UpstreamBinding,
    ) -> (Result<Vec<u8>, Refusal>, BytesMut, DuplexStream) {
        let (mut ours, theirs) = tokio::io::duplex(4096);
        let task = server(theirs);
        let mut buf = BytesMut::new();
        let result = login(&mut ours, &mut buf, STARTUP, key, client_verifier, binding)
            .await
            .expect("no i/o error");
        let _ = task.await;
        (result, buf, ours)
    }

    #[tokio::test]
    async fn logs_in_with_the_recovered_key_plain_and_bound() {
        let v = verifier(PASSWORD);
        let hash = vec![5u8; 32];
        for (cb, binding) in [
            (None, UpstreamBinding::Plain),
            (
                Some(hash.clone()),
                UpstreamBinding::Tls {
                    end_point_hash: Some(hash.clone()),
                },
            ),
        ] {
            let server_v = v.clone();
            let (result, mut buf, mut rest) = login_against(
                |s| tokio::spawn(fake_postgres(s, server_v, cb)),
                v.clone(),
                key_for(PASSWORD, &v),
                binding,
            )
            .await;
            assert_eq!(result.expect("logged in"), Vec::<u8>::new());
            let next = read_message(&mut rest, &mut buf, 1 << 20)
                .await
                .expect("ParameterStatus stays for the session");
            assert_eq!(next[0], b'S');
        }
    }

    #[tokio::test]
    async fn changed_password_is_a_stale_verifier() {
        let cached = verifier(PASSWORD);
        let current = verifier("new-password");
        let (result, _, _) = login_against(
            |s| tokio::spawn(fake_postgres(s, current, None)),
            cached.clone(),
            key_for(PASSWORD, &cached),
            UpstreamBinding::Plain,
        )
        .await;
        assert!(matches!(
            result,
            Err(Refusal::Scram(ScramError::VerifierStale))
        ));
    }

    async fn scripted(mut s: DuplexStream, script: Vec<u8>) {
        let mut startup = [0u8; 8];
        s.read_exact(&mut startup).await.expect("startup");
        s.write_all(&script).await.expect("send");
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            s.read_to_end(&mut sink),
        )
        .await;
    }

    async fn scripted_login(script: Vec<u8>) -> Result<Vec<u8>, Refusal> {
        let v = verifier(PASSWORD);
        let key = key_for(PASSWORD, &v);
        login_against(
            |s| tokio::spawn(scripted(s, script)),
            v,
            key,
            UpstreamBinding::Plain,
        )
        .await
        .0
    }

    #[tokio::test]
    async fn trust_needs_no_scram_and_keeps_notices() {
        let mut script = Vec::new();
        crate::wire::messages::encode(&mut script, b'N', |b| b.push(0));
        script.extend_from_slice(&auth_msg(auth::OK, &[]));
        let before = scripted_login(script).await.expect("trust");
        assert_eq!(before[0], b'N');
    }

    #[tokio::test]
    async fn other_methods_and_errors_are_refusals() {
        let md5 = scripted_login(auth_msg(auth::MD5, &[1, 2, 3, 4])).await;
        assert!(matches!(md5, Err(Refusal::Method(auth::MD5))));
        let clear = scripted_login(auth_msg(auth::CLEARTEXT, &[])).await;
        assert!(matches!(clear, Err(Refusal::Method(auth::CLEARTEXT))));
        let refused = scripted_login(error_msg("53300")).await;
        assert!(
            matches!(refused, Err(Refusal::Server { sqlstate: Some(ref s), .. }) if s == "53300")
        );
    }

    #[tokio::test]
    async fn ok_after_scram_started_without_server_proof_is_refused() {
        let mut script = Vec::new();
        backend::encode_sasl(&mut script, &[SCRAM_SHA_256]);
        script.extend_from_slice(&auth_msg(auth::OK, &[]));
        let result = scripted_login(script).await;
        assert!(matches!(
            result,
            Err(Refusal::Scram(ScramError::UpstreamMalformed(_)))
        ));
    }
}
