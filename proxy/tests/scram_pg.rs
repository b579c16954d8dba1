//! SCRAM key recovery end to end against a real PostgreSQL: a client authenticates to
//! pgveil's `ScramServer` with its password, and pgveil logs into PostgreSQL as the same
//! user with only the recovered ClientKey, over plain TCP and over TLS with
//! SCRAM-SHA-256-PLUS bound to the server's certificate.
//!
//! Needs PostgreSQL's server binaries (`initdb`, `pg_ctl`; `PGVEIL_PG_BIN` overrides
//! the search). Without them the test prints why and passes.

use pgveil::auth::mock::MockSecret;
use pgveil::auth::scram::{
    cert_end_point_hash, ClientKey, ScramClient, ScramError, ScramServer, UpstreamBinding,
    Verifier, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use pgveil::auth::scram_config::{DEFAULT_AUTH_QUERY, LOOKUP_FUNCTION_SQL};
use pgveil::auth::verifier::{Lookup, LookupLogin, PlainDialer, VerifierError, VerifierSource};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A scratch PostgreSQL cluster, stopped and deleted on drop.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Runs a PostgreSQL binary, as `postgres` when we are root (initdb refuses root).
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn start(bin: PathBuf) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let as_postgres = is_root();
        if as_postgres {
            chown_postgres(dir.path())?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let cluster = Cluster {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = cluster.data();
        let data = data.to_str().ok_or("non-UTF-8 temp path")?;
        cluster.run(
            "initdb",
            &[
                "-D",
                data,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ],
        )?;
        cluster.write_tls_files()?;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c ssl=on \
             -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c fsync=off",
            cluster.port,
            cluster.socket_dir().display()
        );
        let log = cluster.dir.path().join("pg.log");
        let log = log.to_str().ok_or("non-UTF-8 temp path")?;
        cluster.run(
            "pg_ctl",
            &["start", "-w", "-D", data, "-l", log, "-o", &options],
        )?;
        Ok(cluster)
    }

    /// A self-signed ECDSA P-384 / SHA-384 certificate, so channel binding must use
    /// SHA-384 (RFC 5929), not the SHA-256 default.
    fn write_tls_files(&self) -> Result<(), String> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .map_err(|e| e.to_string())?;
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .and_then(|p| p.self_signed(&key))
            .map_err(|e| e.to_string())?;
        let data = self.data();
        for (name, pem) in [
            ("server.crt", cert.pem()),
            ("server.key", key.serialize_pem()),
        ] {
            let path = data.join(name);
            std::fs::write(&path, pem).map_err(|e| e.to_string())?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
            if self.as_postgres {
                chown_postgres(&path)?;
            }
        }
        Ok(())
    }

    async fn superuser(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::Config::new()
            .host_path(self.socket_dir())
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(conn);
        Ok(client)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(data) = self.data().to_str() {
            let _ = self.run("pg_ctl", &["stop", "-m", "immediate", "-D", data]);
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn chown_postgres(path: &Path) -> Result<(), String> {
    let status = Command::new("chown")
        .arg("postgres:")
        .arg(path)
        .status()
        .map_err(|e| e.to_string())?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("chown postgres {}", path.display()))
}

/// Directory with `initdb` and `pg_ctl`, if any.
fn find_pg_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PGVEIL_PG_BIN").map(PathBuf::from) {
        return has_tools(&dir).then_some(dir);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    candidates.into_iter().find(|d| has_tools(d)).map(|d| {
        // Resolve symlinks (/usr/local/bin/initdb → the real bin dir with `postgres`).
        std::fs::canonicalize(d.join("initdb"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or(d)
    })
}

// ---- minimal wire protocol for the upstream leg ----

async fn send<S: AsyncWrite + Unpin>(s: &mut S, tag: u8, body: &[u8]) -> std::io::Result<()> {
    let mut msg = vec![tag];
    msg.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    msg.extend_from_slice(body);
    s.write_all(&msg).await
}

async fn recv<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<(u8, Vec<u8>)> {
    let tag = s.read_u8().await?;
    let len = s.read_i32().await?;
    let len = usize::try_from(len - 4).map_err(|_| std::io::Error::other("bad length"))?;
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    Ok((tag, body))
}

/// Reads an Authentication message: (code, payload). An ErrorResponse becomes an error.
async fn recv_auth<S: AsyncRead + Unpin>(s: &mut S) -> Result<(i32, Vec<u8>), String> {
    let (tag, body) = recv(s).await.map_err(|e| e.to_string())?;
    match tag {
        b'R' if body.len() >= 4 => Ok((
            i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            body[4..].to_vec(),
        )),
        b'E' => Err(format!(
            "server error: {}",
            String::from_utf8_lossy(&body).replace('\0', " ")
        )),
        other => Err(format!("unexpected message {}", other as char)),
    }
}

async fn startup<S: AsyncWrite + Unpin>(s: &mut S, user: &str) -> std::io::Result<()> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for part in ["user", user, "database", "postgres", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut msg = (body.len() as i32 + 4).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    s.write_all(&msg).await
}

/// Logs into PostgreSQL as `user` with a ClientKey; Ok once AuthenticationOk arrives.
async fn login_with_key<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    user: &str,
    key: ClientKey,
    verifier: &Verifier,
    binding: UpstreamBinding,
) -> Result<&'static str, String> {
    startup(s, user).await.map_err(|e| e.to_string())?;
    let (code, payload) = recv_auth(s).await?;
    if code != 10 {
        return Err(format!("expected AuthenticationSASL, got {code}"));
    }
    let mechanisms: Vec<&str> = payload
        .split(|b| *b == 0)
        .filter(|m| !m.is_empty())
        .filter_map(|m| std::str::from_utf8(m).ok())
        .collect();
    let (mut client, mechanism, first) =
        ScramClient::new(key, verifier.clone(), &mechanisms, binding).map_err(|e| e.to_string())?;
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(&first);
    send(s, b'p', &body).await.map_err(|e| e.to_string())?;

    let (code, server_first) = recv_auth(s).await?;
    if code != 11 {
        return Err(format!("expected AuthenticationSASLContinue, got {code}"));
    }
    let client_final = client
        .server_first(&server_first)
        .map_err(|e| format!("{e:?}"))?;
    send(s, b'p', &client_final)
        .await
        .map_err(|e| e.to_string())?;
    let (code, server_final) = recv_auth(s).await?;
    if code != 12 {
        return Err(format!("expected AuthenticationSASLFinal, got {code}"));
    }
    client
        .server_final(&server_final)
        .map_err(|e| e.to_string())?;
    match recv_auth(s).await? {
        (0, _) => Ok(mechanism),
        (code, _) => Err(format!("expected AuthenticationOk, got {code}")),
    }
}

/// A tokio-postgres-style client (postgres-protocol) authenticates to pgveil's server
/// side with `password`; returns the recovered ClientKey.
fn client_to_pgveil(
    password: &str,
    verifier: Option<&Verifier>,
    user: &str,
) -> Result<ClientKey, ScramError> {
    let mock = MockSecret::generate(4096);
    let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let (server, server_first) =
        ScramServer::start(SCRAM_SHA_256, client.message(), verifier, &mock, user, None)?;
    client
        .update(&server_first)
        .map_err(|e| ScramError::Malformed(e.to_string()))?;
    let (server_final, key) = server.finish(client.message())?;
    client
        .finish(&server_final)
        .map_err(|e| ScramError::Malformed(e.to_string()))?;
    Ok(key)
}

/// Accepts any server certificate: the test checks channel binding, not the PKI.
#[derive(Debug)]
struct AcceptAny(rustls::crypto::CryptoProvider);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TCP, SSLRequest, TLS handshake: the upstream stream and the server's certificate.
async fn tls_to(
    port: u16,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>), Box<dyn std::error::Error>> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
    if tcp.read_u8().await? != b'S' {
        return Err("server refused SSL".into());
    }
    let provider = rustls::crypto::ring::default_provider();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider.clone()))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let tls = connector.connect(name, tcp).await?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no server certificate")?
        .to_vec();
    Ok((tls, cert))
}

#[tokio::test]
async fn recovered_client_key_logs_into_postgres() -> TestResult {
    let Some(bin) = find_pg_bin() else {
        eprintln!(
            "skipping scram_pg: no PostgreSQL binaries (initdb, pg_ctl) found; set PGVEIL_PG_BIN"
        );
        return Ok(());
    };
    let cluster = Cluster::start(bin)?;
    let admin = cluster.superuser().await?;
    admin
        .batch_execute(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE alice LOGIN PASSWORD 'alice-pw';
             CREATE ROLE pgveil_lookup LOGIN SUPERUSER PASSWORD 'lookup-pw';
             CREATE ROLE expired LOGIN PASSWORD 'x' VALID UNTIL '2000-01-01';
             CREATE ROLE nologin PASSWORD 'x';
             CREATE ROLE weak LOGIN PASSWORD 'weak-pw';
             CREATE ROLE pgveil_auth LOGIN PASSWORD 'auth-pw';
             SET password_encryption = 'md5';
             CREATE ROLE legacy LOGIN PASSWORD 'legacy-pw';",
        )
        .await?;
    admin.batch_execute(LOOKUP_FUNCTION_SQL).await?;

    // The lookup connection logs in with SCRAM over TCP and reads verifiers.
    let lookup_with = |user: &str, password: &str, query: &str| {
        VerifierSource::from_query(
            Arc::new(PlainDialer::Tcp {
                host: "127.0.0.1".into(),
                port: cluster.port,
            }),
            LookupLogin {
                user: user.into(),
                password: Some(password.into()),
                database: "postgres".into(),
                query: query.into(),
                timeout: Duration::from_secs(10),
            },
            Duration::from_secs(60),
        )
    };
    let lookup_as = |user: &str, password: &str| lookup_with(user, password, DEFAULT_AUTH_QUERY);
    let source = lookup_as("pgveil_lookup", "lookup-pw");
    source.check().await?;
    // A role that cannot read pg_authid is caught by the start-up check.
    let weak = lookup_as("weak", "weak-pw").check().await;
    assert!(
        matches!(&weak, Err(VerifierError::Query(e)) if e.contains("permission denied")),
        "{weak:?}"
    );
    // The documented SECURITY DEFINER function serves a non-superuser lookup role.
    let definer = lookup_with("pgveil_auth", "auth-pw", "SELECT pgveil.get_auth($1)");
    definer.check().await?;
    assert!(matches!(definer.lookup("alice").await?, Lookup::Scram(_)));
    assert_eq!(definer.lookup("nobody").await?, Lookup::Missing);
    let bad_password = lookup_as("pgveil_lookup", "nope").check().await;
    assert!(
        matches!(bad_password, Err(VerifierError::Connect(_))),
        "{bad_password:?}"
    );
    let Lookup::Scram(verifier) = source.lookup("alice").await? else {
        return Err("alice should have a SCRAM verifier".into());
    };
    assert_eq!(source.lookup("legacy").await?, Lookup::Md5);
    assert_eq!(source.lookup("nobody").await?, Lookup::Missing);
    assert_eq!(source.lookup("expired").await?, Lookup::Missing);
    assert_eq!(source.lookup("nologin").await?, Lookup::Missing);

    // Wrong password and unknown user fail alike at pgveil.
    let wrong = client_to_pgveil("guess", Some(&verifier), "alice").err();
    let unknown = client_to_pgveil("guess", None, "alice").err();
    assert!(matches!(wrong, Some(ScramError::AuthFailed { .. })));
    assert_eq!(wrong, unknown);

    // Plain TCP: gs2 `n`, SCRAM-SHA-256.
    let key = client_to_pgveil("alice-pw", Some(&verifier), "alice")?;
    let mut tcp = TcpStream::connect(("127.0.0.1", cluster.port)).await?;
    let mech = login_with_key(
        &mut tcp,
        "alice",
        key.clone(),
        &verifier,
        UpstreamBinding::Plain,
    )
    .await?;
    assert_eq!(mech, SCRAM_SHA_256);

    // TLS: SCRAM-SHA-256-PLUS bound to PostgreSQL's P-384 certificate (SHA-384 hash).
    let (mut tls, cert) = tls_to(cluster.port).await?;
    let end_point_hash = cert_end_point_hash(&cert).ok_or("certificate allows binding")?;
    assert_eq!(
        end_point_hash.len(),
        48,
        "SHA-384 for an ecdsa-with-SHA384 cert"
    );
    let mech = login_with_key(
        &mut tls,
        "alice",
        key.clone(),
        &verifier,
        UpstreamBinding::Tls {
            end_point_hash: Some(end_point_hash.clone()),
        },
    )
    .await?;
    assert_eq!(mech, SCRAM_SHA_256_PLUS);

    // A wrong binding hash is refused by PostgreSQL.
    let (mut tls, _) = tls_to(cluster.port).await?;
    let mut bad_hash = end_point_hash;
    bad_hash[0] ^= 1;
    let refused = login_with_key(
        &mut tls,
        "alice",
        key.clone(),
        &verifier,
        UpstreamBinding::Tls {
            end_point_hash: Some(bad_hash),
        },
    )
    .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("28000")),
        "{refused:?}"
    );

    // A wrong key is refused by PostgreSQL (the proof is checked upstream too).
    let mut tcp = TcpStream::connect(("127.0.0.1", cluster.port)).await?;
    let refused = login_with_key(
        &mut tcp,
        "alice",
        ClientKey::from_bytes([7; 32]),
        &verifier,
        UpstreamBinding::Plain,
    )
    .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("28P01")),
        "{refused:?}"
    );

    // Password changed after the lookup: the upstream salt differs → VerifierStale,
    // and after invalidation the new verifier is read.
    admin
        .batch_execute(
            "SET password_encryption = 'scram-sha-256'; ALTER ROLE alice PASSWORD 'new-pw'",
        )
        .await?;
    let mut tcp = TcpStream::connect(("127.0.0.1", cluster.port)).await?;
    let stale = login_with_key(&mut tcp, "alice", key, &verifier, UpstreamBinding::Plain).await;
    assert!(
        stale.as_ref().is_err_and(|e| e.contains("VerifierStale")),
        "{stale:?}"
    );
    source.invalidate("alice");
    let Lookup::Scram(fresh) = source.lookup("alice").await? else {
        return Err("alice should still have a SCRAM verifier".into());
    };
    assert_ne!(fresh, verifier);
    let key = client_to_pgveil("new-pw", Some(&fresh), "alice")?;
    let mut tcp = TcpStream::connect(("127.0.0.1", cluster.port)).await?;
    login_with_key(&mut tcp, "alice", key, &fresh, UpstreamBinding::Plain).await?;

    // The lookup connection survives a server-side termination by reconnecting.
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'pgveil-auth-lookup'",
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    source.invalidate("alice");
    assert!(matches!(source.lookup("alice").await?, Lookup::Scram(_)));
    Ok(())
}
