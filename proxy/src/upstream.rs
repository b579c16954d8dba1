//! Opening connections to PostgreSQL: TCP or Unix socket, then TLS as configured.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::config::{UpstreamConfig, UpstreamTls};
use crate::stream::UpstreamStream;
use crate::tls::{self, TlsError};
use crate::wire::messages::startup;

/// Why PostgreSQL could not be reached.
#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to {0}")]
    Timeout(String),
    #[error("{addr} does not support TLS, and upstream.tls = \"{mode}\" requires it")]
    TlsRefused { addr: String, mode: &'static str },
    #[error("unexpected answer {0:#04x} to SSLRequest from {1}")]
    BadSslAnswer(u8, String),
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Everything needed to open upstream connections, built once from the config.
#[derive(Clone)]
pub struct Upstream {
    cfg: UpstreamConfig,
    tls: Option<Arc<ClientConfig>>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.describe())
            .field("tls", &self.cfg.tls)
            .finish()
    }
}

impl Upstream {
    /// Prepare TLS settings; `ca_base` resolves a relative `ca_file`.
    pub fn new(cfg: &UpstreamConfig, ca_base: &std::path::Path) -> Result<Upstream, UpstreamError> {
        let uses_tls = cfg.tls.may_use_tls() && cfg.socket_dir.is_none();
        let (tls, server_name) = if uses_tls {
            let ca = cfg.ca_file.as_ref().map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    ca_base.join(p)
                }
            });
            let config =
                tls::upstream_client_config(cfg.tls == UpstreamTls::VerifyFull, ca.as_deref())?;
            let name = cfg.server_name.as_deref().unwrap_or(&cfg.host);
            (Some(config), Some(tls::server_name(name)?))
        } else {
            (None, None)
        };
        Ok(Upstream {
            cfg: cfg.clone(),
            tls,
            server_name,
        })
    }

    /// Where PostgreSQL is, for messages.
    pub fn describe(&self) -> String {
        match &self.cfg.socket_dir {
            Some(dir) => format!("{}/.s.PGSQL.{}", dir.display(), self.cfg.port),
            None => format!("{}:{}", self.cfg.host, self.cfg.port),
        }
    }

    /// The configured TLS mode.
    pub fn tls_mode(&self) -> UpstreamTls {
        self.cfg.tls
    }

    /// Whether connections may end up encrypted.
    pub fn may_use_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.connect_timeout_ms.max(1))
    }

    /// Open a connection and negotiate TLS as configured. The startup packet is the
    /// caller's to send.
    pub async fn connect(&self) -> Result<UpstreamStream, UpstreamError> {
        let addr = self.describe();
        match tokio::time::timeout(self.timeout(), self.connect_inner()).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(addr)),
        }
    }

    async fn connect_inner(&self) -> Result<UpstreamStream, UpstreamError> {
        let addr = self.describe();
        if let Some(dir) = &self.cfg.socket_dir {
            let path = dir.join(format!(".s.PGSQL.{}", self.cfg.port));
            let s = UnixStream::connect(&path)
                .await
                .map_err(|source| UpstreamError::Connect { addr, source })?;
            return Ok(UpstreamStream::Unix(s));
        }
        let mut tcp = TcpStream::connect((self.cfg.host.as_str(), self.cfg.port))
            .await
            .map_err(|source| UpstreamError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let (Some(config), Some(name)) = (&self.tls, &self.server_name) else {
            return Ok(UpstreamStream::Tcp(tcp));
        };
        let io_err = |source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        };
        tcp.write_all(&startup::ssl_request())
            .await
            .map_err(io_err)?;
        let answer = tcp.read_u8().await.map_err(io_err)?;
        match answer {
            b'S' => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| UpstreamError::Handshake {
                        addr: addr.clone(),
                        source,
                    })?;
                Ok(UpstreamStream::Tls(Box::new(tls)))
            }
            b'N' if self.cfg.tls == UpstreamTls::Prefer => Ok(UpstreamStream::Tcp(tcp)),
            b'N' => Err(UpstreamError::TlsRefused {
                addr,
                mode: match self.cfg.tls {
                    UpstreamTls::VerifyFull => "verify-full",
                    _ => "require",
                },
            }),
            other => Err(UpstreamError::BadSslAnswer(other, addr)),
        }
    }

    /// Send a CancelRequest for the real backend key; the server answers nothing.
    pub async fn cancel(&self, pid: i32, secret: &[u8]) -> Result<(), UpstreamError> {
        let packet = startup::cancel_request(pid, secret);
        let mut stream = self.connect().await?;
        let addr = self.describe();
        stream
            .write_all(&packet)
            .await
            .map_err(|source| UpstreamError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = stream.flush().await;
        // PostgreSQL closes the connection after handling the request; wait briefly for
        // that so the cancel is processed before we report success.
        let mut sink = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut sink)).await;
        Ok(())
    }
}
