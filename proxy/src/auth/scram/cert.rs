//! `tls-server-end-point` channel-binding data (RFC 5929 section 4.1): the hash of a
//! certificate with the hash of its signature algorithm, SHA-256 for MD5 and SHA-1.
//!
//! Only the outer certificate structure is read (DER, a few tags), enough to find the
//! signature algorithm OID; the certificate was already validated by the TLS stack.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// Hash functions a certificate signature can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashAlg {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

// DER contents of the object identifiers we recognise.
const RSA_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
const ECDSA_SHA2_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
const DSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03];
const NIST_SIG_PREFIX: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03];
const NIST_HASH_PREFIX: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02];
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_OID: u8 = 0x06;
/// `[0] EXPLICIT`: the hash algorithm in RSASSA-PSS parameters.
const TAG_CONTEXT_0: u8 = 0xa0;

/// The `tls-server-end-point` channel-binding data of a DER certificate.
///
/// `None` when the certificate cannot be parsed or its signature algorithm has no
/// separate hash (Ed25519, Ed448) or one we do not know: PostgreSQL and libpq cannot
/// bind to such a certificate either, so SCRAM-SHA-256-PLUS must not be offered.
pub fn cert_end_point_hash(cert_der: &[u8]) -> Option<Vec<u8>> {
    let hash = signature_hash(cert_der)?;
    Some(match hash {
        HashAlg::Sha224 => Sha224::digest(cert_der).to_vec(),
        HashAlg::Sha256 => Sha256::digest(cert_der).to_vec(),
        HashAlg::Sha384 => Sha384::digest(cert_der).to_vec(),
        HashAlg::Sha512 => Sha512::digest(cert_der).to_vec(),
    })
}

/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }.
fn signature_hash(der: &[u8]) -> Option<HashAlg> {
    let (cert, _) = read_tlv(der, TAG_SEQUENCE)?;
    let (_tbs, rest) = read_tlv(cert, TAG_SEQUENCE)?;
    let (algorithm, _) = read_tlv(rest, TAG_SEQUENCE)?;
    let (oid, params) = read_tlv(algorithm, TAG_OID)?;
    hash_of_signature(oid, params)
}

fn hash_of_signature(oid: &[u8], params: &[u8]) -> Option<HashAlg> {
    if let Some(&[arc]) = oid.strip_prefix(RSA_PREFIX) {
        return match arc {
            4 | 5 => Some(HashAlg::Sha256), // md5, sha1 → SHA-256 per RFC 5929
            10 => pss_hash(params),
            11 => Some(HashAlg::Sha256),
            12 => Some(HashAlg::Sha384),
            13 => Some(HashAlg::Sha512),
            14 => Some(HashAlg::Sha224),
            _ => None,
        };
    }
    if oid == ECDSA_SHA1 || oid == DSA_SHA1 {
        return Some(HashAlg::Sha256);
    }
    if let Some(&[arc]) = oid.strip_prefix(ECDSA_SHA2_PREFIX) {
        return sha2_by_arc(arc, [1, 2, 3, 4]);
    }
    if let Some(&[arc]) = oid.strip_prefix(NIST_SIG_PREFIX) {
        // dsa-with-sha224 (1), dsa-with-sha256 (2); SHA-3 signatures are not mapped.
        return sha2_by_arc(arc, [1, 2, 0, 0]);
    }
    None
}

/// Maps an OID arc to SHA-224/256/384/512 given their arcs in that order (0 = none).
fn sha2_by_arc(arc: u8, arcs: [u8; 4]) -> Option<HashAlg> {
    let algs = [
        HashAlg::Sha224,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];
    arcs.iter()
        .zip(algs)
        .find(|(a, _)| **a != 0 && **a == arc)
        .map(|(_, alg)| alg)
}

/// RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] AlgorithmIdentifier DEFAULT sha1, … }.
fn pss_hash(params: &[u8]) -> Option<HashAlg> {
    let (params, _) = read_tlv(params, TAG_SEQUENCE)?;
    let Some((hash_alg, _)) = read_tlv(params, TAG_CONTEXT_0) else {
        return Some(HashAlg::Sha256); // default sha1 → SHA-256
    };
    let (alg_id, _) = read_tlv(hash_alg, TAG_SEQUENCE)?;
    let (oid, _) = read_tlv(alg_id, TAG_OID)?;
    if oid == SHA1 {
        return Some(HashAlg::Sha256);
    }
    match oid.strip_prefix(NIST_HASH_PREFIX)? {
        [1] => Some(HashAlg::Sha256),
        [2] => Some(HashAlg::Sha384),
        [3] => Some(HashAlg::Sha512),
        [4] => Some(HashAlg::Sha224),
        _ => None,
    }
}

/// Reads one DER element with tag `tag` from the front of `input`: (contents, rest).
fn read_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None; // indefinite length or absurd size: not DER
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).expect("test key generation");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("test params");
        params
            .self_signed(&key)
            .expect("test self-signing")
            .der()
            .to_vec()
    }

    /// A certificate shell: empty tbsCertificate, the given AlgorithmIdentifier
    /// contents, empty signature.
    fn shell(alg_contents: &[u8]) -> Vec<u8> {
        let mut alg = vec![TAG_SEQUENCE, alg_contents.len() as u8];
        alg.extend_from_slice(alg_contents);
        let mut body = vec![TAG_SEQUENCE, 0];
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x01, 0x00]);
        let mut cert = vec![TAG_SEQUENCE, body.len() as u8];
        cert.extend_from_slice(&body);
        cert
    }

    fn oid(contents: &[u8]) -> Vec<u8> {
        let mut v = vec![TAG_OID, contents.len() as u8];
        v.extend_from_slice(contents);
        v
    }

    #[test]
    fn ecdsa_sha256_uses_sha256() {
        let der = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            cert_end_point_hash(&der),
            Some(Sha256::digest(&der).to_vec())
        );
    }

    #[test]
    fn ecdsa_sha384_uses_sha384() {
        let der = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            cert_end_point_hash(&der),
            Some(Sha384::digest(&der).to_vec())
        );
    }

    #[test]
    fn ed25519_cannot_bind() {
        assert_eq!(
            cert_end_point_hash(&self_signed(&rcgen::PKCS_ED25519)),
            None
        );
    }

    #[test]
    fn rsa_variants_map_per_rfc_5929() {
        let mut rsa = RSA_PREFIX.to_vec();
        for (arc, want) in [
            (5u8, Some(HashAlg::Sha256)),
            (4, Some(HashAlg::Sha256)),
            (11, Some(HashAlg::Sha256)),
            (12, Some(HashAlg::Sha384)),
            (13, Some(HashAlg::Sha512)),
            (14, Some(HashAlg::Sha224)),
            (99, None),
        ] {
            rsa.truncate(RSA_PREFIX.len());
            rsa.push(arc);
            let mut alg = oid(&rsa);
            alg.extend_from_slice(&[0x05, 0x00]);
            assert_eq!(signature_hash(&shell(&alg)), want, "arc {arc}");
        }
    }

    #[test]
    fn pss_reads_hash_from_parameters() {
        let mut pss_oid = RSA_PREFIX.to_vec();
        pss_oid.push(10);
        let mut sha512 = NIST_HASH_PREFIX.to_vec();
        sha512.push(3);
        let hash_oid = oid(&sha512);
        let alg_id = [&[TAG_SEQUENCE, hash_oid.len() as u8][..], &hash_oid].concat();
        let ctx0 = [&[TAG_CONTEXT_0, alg_id.len() as u8][..], &alg_id].concat();
        let params = [&[TAG_SEQUENCE, ctx0.len() as u8][..], &ctx0].concat();
        let alg = [oid(&pss_oid), params].concat();
        assert_eq!(signature_hash(&shell(&alg)), Some(HashAlg::Sha512));

        let default_params = [oid(&pss_oid), vec![TAG_SEQUENCE, 0]].concat();
        assert_eq!(
            signature_hash(&shell(&default_params)),
            Some(HashAlg::Sha256)
        );
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(cert_end_point_hash(b""), None);
        assert_eq!(cert_end_point_hash(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(cert_end_point_hash(b"\x30\x80\x00\x00"), None);
        assert_eq!(cert_end_point_hash(&[0x30, 0x05, 0x30, 0x09]), None);
    }
}
