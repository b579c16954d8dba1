//! One stream type per leg that hides plain TCP, Unix sockets and TLS.
//!
//! Sessions read and write through these without caring how the bytes travel.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{self, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

/// The client leg.
#[derive(Debug)]
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// Whether the client connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

/// The upstream leg.
#[derive(Debug)]
pub enum UpstreamStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// Whether the upstream connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, UpstreamStream::Tls(_))
    }

    /// DER of the server certificate when the leg is TLS (for channel binding).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self {
            UpstreamStream::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec()),
            _ => None,
        }
    }
}

/// The read half of a borrowed [`ClientStream`].
pub enum ClientReader<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(io::ReadHalf<&'a mut tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The write half of a borrowed [`ClientStream`].
pub enum ClientWriter<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(io::WriteHalf<&'a mut tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// Split into halves that can be used concurrently. Plain sockets split without a
    /// lock (the relay polls each half on every round trip); TLS shares one session.
    pub fn split(&mut self) -> (ClientReader<'_>, ClientWriter<'_>) {
        match self {
            ClientStream::Plain(s) => {
                let (r, w) = s.split();
                (ClientReader::Plain(r), ClientWriter::Plain(w))
            }
            ClientStream::Tls(s) => {
                let (r, w) = io::split(&mut **s);
                (ClientReader::Tls(r), ClientWriter::Tls(w))
            }
        }
    }
}

/// The read half of a borrowed [`UpstreamStream`].
pub enum UpstreamReader<'a> {
    Tcp(tcp::ReadHalf<'a>),
    Unix(unix::ReadHalf<'a>),
    Tls(io::ReadHalf<&'a mut tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The write half of a borrowed [`UpstreamStream`].
pub enum UpstreamWriter<'a> {
    Tcp(tcp::WriteHalf<'a>),
    Unix(unix::WriteHalf<'a>),
    Tls(io::WriteHalf<&'a mut tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// Split into halves that can be used concurrently (see [`ClientStream::split`]).
    pub fn split(&mut self) -> (UpstreamReader<'_>, UpstreamWriter<'_>) {
        match self {
            UpstreamStream::Tcp(s) => {
                let (r, w) = s.split();
                (UpstreamReader::Tcp(r), UpstreamWriter::Tcp(w))
            }
            UpstreamStream::Unix(s) => {
                let (r, w) = s.split();
                (UpstreamReader::Unix(r), UpstreamWriter::Unix(w))
            }
            UpstreamStream::Tls(s) => {
                let (r, w) = io::split(&mut **s);
                (UpstreamReader::Tls(r), UpstreamWriter::Tls(w))
            }
        }
    }
}

macro_rules! delegate_read {
    ($ty:ident $(<$lt:lifetime>)? { $($variant:ident),* }) => {
        impl$(<$lt>)? AsyncRead for $ty $(<$lt>)? {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_read(cx, buf),)*
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($ty:ident $(<$lt:lifetime>)? { $($variant:ident),* }) => {
        impl$(<$lt>)? AsyncWrite for $ty $(<$lt>)? {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_write(cx, buf),)*
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)*
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $($ty::$variant(s) => s.is_write_vectored(),)*
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_flush(cx),)*
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_shutdown(cx),)*
                }
            }
        }
    };
}

delegate_read!(ClientStream { Plain, Tls });
delegate_write!(ClientStream { Plain, Tls });
delegate_read!(UpstreamStream { Tcp, Unix, Tls });
delegate_write!(UpstreamStream { Tcp, Unix, Tls });
delegate_read!(ClientReader<'a> { Plain, Tls });
delegate_write!(ClientWriter<'a> { Plain, Tls });
delegate_read!(UpstreamReader<'a> { Tcp, Unix, Tls });
delegate_write!(UpstreamWriter<'a> { Tcp, Unix, Tls });
