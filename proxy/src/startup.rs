//! The client's first packets: SSLRequest, GSSENCRequest, direct TLS, CancelRequest and
//! the StartupMessage.
//!
//! Ends with either a session to serve (a possibly encrypted stream plus the
//! StartupMessage) or a cancel request to act on. Plaintext bytes that arrive after an
//! SSLRequest but before the handshake are an injection attempt (CVE-2021-23214): the
//! connection is closed.

use std::sync::Arc;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::stream::ClientStream;
use crate::tls::{ServerTls, ALPN_POSTGRESQL};
use crate::wire::cursor::Malformed;
use crate::wire::io::{read_startup_packet, ReadError};
use crate::wire::messages::error::ProxyError;
use crate::wire::messages::startup::{self, CancelRequest, StartupMessage, StartupPacket};

/// The first byte of a TLS ClientHello record: PostgreSQL 17's direct TLS.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a new connection turned out to be.
#[derive(Debug)]
pub enum Hello {
    /// A session: the client stream, its StartupMessage, and bytes read past it.
    Session {
        stream: ClientStream,
        startup: StartupMessage,
        leftover: BytesMut,
    },
    /// A CancelRequest (the connection carries nothing else). The client's stream is
    /// kept open until the request has been acted on: PostgreSQL closes a cancel
    /// connection only after it has signalled the backend, and drivers (asyncpg, libpq's
    /// PQcancel users) wait for that close before they send the next query.
    Cancel {
        request: CancelRequest,
        stream: ClientStream,
    },
}

/// Why the startup phase failed. Each says whether the client should get an error.
#[derive(Debug, Error)]
pub enum StartupError {
    #[error("client closed the connection during startup")]
    Closed,
    #[error("i/o error during startup: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid startup packet: {0}")]
    Frame(#[from] crate::wire::frame::FrameError),
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("received unencrypted data after SSL request")]
    DataAfterSslRequest,
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("direct TLS connection without ALPN \"postgresql\"")]
    NoAlpn,
    #[error("unsupported frontend protocol {major}.{minor}")]
    Unsupported { major: i32, minor: i32 },
    #[error("SSL negotiation requested twice")]
    SslTwice,
    #[error("timed out during startup")]
    Timeout,
}

impl From<ReadError> for StartupError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Closed => StartupError::Closed,
            ReadError::Io(e) => StartupError::Io(e),
            ReadError::Frame(e) => StartupError::Frame(e),
        }
    }
}

impl StartupError {
    /// The error to send the client, when the protocol still allows one.
    pub fn client_error(&self) -> Option<ProxyError> {
        match self {
            StartupError::Unsupported { major, minor } => Some(ProxyError::fatal(
                "0A000",
                format!(
                    "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2"
                ),
            )),
            StartupError::Frame(_) | StartupError::Malformed(_) | StartupError::SslTwice => {
                Some(ProxyError::fatal("08P01", "invalid startup packet layout"))
            }
            _ => None,
        }
    }
}

/// Run the startup phase on a freshly accepted connection. Errors the protocol lets us
/// report (bad version, malformed packet) are sent to the client before returning.
pub async fn negotiate(
    tcp: TcpStream,
    tls: Option<&Arc<ServerTls>>,
) -> Result<Hello, StartupError> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    if n == 0 {
        return Err(StartupError::Closed);
    }
    let mut buf = BytesMut::with_capacity(1024);
    if first[0] == TLS_HANDSHAKE_RECORD {
        let Some(tls) = tls else {
            return Err(StartupError::NoAlpn);
        };
        let stream = accept_tls(tcp, tls).await?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
            return Err(StartupError::NoAlpn);
        }
        return finish(ClientStream::Tls(Box::new(stream)), buf).await;
    }

    let mut tcp = tcp;
    loop {
        let complete = match crate::wire::frame::peek_startup(&buf) {
            Ok(c) => c,
            Err(e) => return Err(report(&mut tcp, e.into()).await),
        };
        if let Some(total) = complete {
            let packet = buf.split_to(total);
            let parsed = match startup::parse(&packet) {
                Ok(p) => p,
                Err(e) => return Err(report(&mut tcp, e.into()).await),
            };
            match parsed {
                StartupPacket::Ssl => {
                    if !buf.is_empty() {
                        return Err(StartupError::DataAfterSslRequest);
                    }
                    let Some(tls) = tls else {
                        tcp.write_all(b"N").await?;
                        continue;
                    };
                    tcp.write_all(b"S").await?;
                    let stream = accept_tls(tcp, tls).await?;
                    return finish(ClientStream::Tls(Box::new(stream)), buf).await;
                }
                StartupPacket::GssEnc => {
                    if !buf.is_empty() {
                        return Err(StartupError::DataAfterSslRequest);
                    }
                    tcp.write_all(b"N").await?;
                }
                other => {
                    return match First::from_packet(other) {
                        Ok(f) => Ok(f.into_hello(ClientStream::Plain(tcp), buf)),
                        Err(e) => Err(report(&mut tcp, e).await),
                    };
                }
            }
            continue;
        }
        buf.reserve(1024);
        if tokio::io::AsyncReadExt::read_buf(&mut tcp, &mut buf).await? == 0 {
            return Err(StartupError::Closed);
        }
    }
}

/// Read the StartupMessage (or CancelRequest) over an encrypted stream.
async fn finish(mut stream: ClientStream, mut buf: BytesMut) -> Result<Hello, StartupError> {
    let first = match read_startup_packet(&mut stream, &mut buf).await {
        Ok(packet) => startup::parse(&packet)
            .map_err(StartupError::from)
            .and_then(First::from_packet),
        Err(e) => Err(e.into()),
    };
    match first {
        Ok(f) => Ok(f.into_hello(stream, buf)),
        Err(e) => Err(report(&mut stream, e).await),
    }
}

/// Send the client the error for `e`, if it gets one, and hand `e` back.
async fn report<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, e: StartupError) -> StartupError {
    if let Some(err) = e.client_error() {
        let _ = stream.write_all(&err.to_message()).await;
        let _ = stream.flush().await;
    }
    e
}

async fn accept_tls(
    tcp: TcpStream,
    tls: &ServerTls,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, StartupError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.identity().config.clone());
    acceptor.accept(tcp).await.map_err(StartupError::Handshake)
}

/// The packet that ends the startup phase.
enum First {
    Startup(StartupMessage),
    Cancel(CancelRequest),
}

impl First {
    fn from_packet(p: StartupPacket) -> Result<First, StartupError> {
        match p {
            StartupPacket::Startup(m) => Ok(First::Startup(m)),
            StartupPacket::Cancel(c) => Ok(First::Cancel(c)),
            StartupPacket::Unsupported { version } => Err(StartupError::Unsupported {
                major: version >> 16,
                minor: version & 0xffff,
            }),
            StartupPacket::Ssl | StartupPacket::GssEnc => Err(StartupError::SslTwice),
        }
    }

    fn into_hello(self, stream: ClientStream, leftover: BytesMut) -> Hello {
        match self {
            First::Startup(startup) => Hello::Session {
                stream,
                startup,
                leftover,
            },
            First::Cancel(request) => Hello::Cancel { request, stream },
        }
    }
}
