//! Generated certificates: a test CA and server certificates it signs.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// A CA plus one server certificate for `localhost` / 127.0.0.1, written to a directory.
#[derive(Debug, Clone)]
pub struct TestCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCerts {
    /// Generate into `dir` (created if needed); `name` prefixes the file names.
    pub fn generate(dir: &Path, name: &str) -> TestCerts {
        std::fs::create_dir_all(dir).expect("create cert dir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("pgveil test CA {name}"));
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");

        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).expect("server cert");

        let certs = TestCerts {
            ca_cert: dir.join(format!("{name}-ca.crt")),
            server_cert: dir.join(format!("{name}.crt")),
            server_key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&certs.ca_cert, ca.pem()).expect("write ca");
        std::fs::write(&certs.server_cert, cert.pem()).expect("write cert");
        std::fs::write(&certs.server_key, key.serialize_pem()).expect("write key");
        certs
    }
}
