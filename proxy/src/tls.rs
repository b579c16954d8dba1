//! TLS on both legs, with rustls and its `ring` provider.
//!
//! Client side: a server config from the `[tls]` certificate and key, advertising the
//! `postgresql` ALPN protocol (required by PostgreSQL 17 clients for direct TLS), and
//! reloadable on SIGHUP. Upstream side: a client config for `require` (encrypt, no
//! verification, as libpq's sslmode=require) or `verify-full` (CA + host name).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use thiserror::Error;

/// The ALPN protocol name PostgreSQL uses.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// A TLS setup that cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no {what} found in PEM file")]
    Missing { path: String, what: &'static str },
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: shown,
            what: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?
        .ok_or(TlsError::Missing {
            path: shown,
            what: "private key",
        })
}

/// The client-facing TLS server: its rustls config and the certificate it presents
/// (whose hash is the `tls-server-end-point` channel binding).
#[derive(Debug)]
pub struct ServerTls {
    current: RwLock<Arc<ServerIdentity>>,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
}

/// One loaded certificate + key.
#[derive(Debug)]
pub struct ServerIdentity {
    pub config: Arc<ServerConfig>,
    /// DER of the leaf certificate.
    pub cert_der: Vec<u8>,
}

impl ServerTls {
    /// Load the certificate and key.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let identity = Self::load_identity(cert, key)?;
        Ok(ServerTls {
            current: RwLock::new(Arc::new(identity)),
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
        })
    }

    fn load_identity(cert: &Path, key: &Path) -> Result<ServerIdentity, TlsError> {
        let certs = read_certs(cert)?;
        let key = read_key(key)?;
        let cert_der = certs[0].as_ref().to_vec();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(ServerIdentity {
            config: Arc::new(config),
            cert_der,
        })
    }

    /// Re-read the certificate and key (SIGHUP); on error the old ones stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let identity = Self::load_identity(&self.cert_path, &self.key_path)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = Arc::new(identity);
        }
        Ok(())
    }

    /// The identity new handshakes use.
    pub fn identity(&self) -> Arc<ServerIdentity> {
        match self.current.read() {
            Ok(cur) => cur.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Build the upstream client config: verifying against `ca_file` when `verify` is set,
/// otherwise encrypting without verification.
pub fn upstream_client_config(
    verify: bool,
    ca_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut config = if verify {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = ca_file {
            for cert in read_certs(ca)? {
                roots.add(cert)?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(config))
}

/// The server name to present and verify upstream.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| {
        TlsError::Rustls(rustls::Error::General(format!(
            "invalid server name {name:?}"
        )))
    })
}

/// Accepts any server certificate but still checks handshake signatures, like libpq's
/// `sslmode=require`: the link is encrypted, the peer is not authenticated.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
