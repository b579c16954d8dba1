//! SCRAM-SHA-256(-PLUS) as pgveil speaks it: the server side towards the client, the
//! client side towards PostgreSQL, and the shared pieces (verifier, ClientKey, crypto).
//!
//! Everything here is sans-IO: the caller frames and moves the SASL payloads; these
//! types only turn one payload into the next and decide whether the peer is genuine.
//! The proxy never sees or stores a password: it verifies the client's proof against
//! the user's verifier, recovers the ClientKey from that proof, and proves the same key
//! to PostgreSQL.

mod attr;
mod cert;
mod client;
mod error;
mod server;

#[cfg(test)]
mod tests;

pub use cert::cert_end_point_hash;
pub use client::{ScramClient, UpstreamBinding};
pub use error::ScramError;
pub use server::{server_mechanisms, ScramServer};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// SASL name of SCRAM without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SASL name of SCRAM with `tls-server-end-point` channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel-binding type PostgreSQL (and so pgveil) supports.
const CB_TYPE: &str = "tls-server-end-point";
/// Length of SHA-256 output, the size of every SCRAM key.
pub const KEY_LEN: usize = 32;
/// Random bytes in a nonce before base64, as PostgreSQL (`SCRAM_RAW_NONCE_LEN`).
const RAW_NONCE_LEN: usize = 18;

/// A user's SCRAM-SHA-256 verifier as PostgreSQL stores it in `pg_authid.rolpassword`.
///
/// It is not a password, but it allows an offline dictionary attack, so `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl Verifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>`;
    /// `None` for anything else (md5, plaintext, garbage), like PostgreSQL's
    /// `parse_scram_secret`.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        if !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let iterations: u32 = iterations.parse().ok().filter(|i| *i > 0)?;
        let salt = STANDARD.decode(salt).ok().filter(|s| !s.is_empty())?;
        Some(Verifier {
            iterations,
            salt,
            stored_key: decode_key(stored_key)?,
            server_key: decode_key(server_key)?,
        })
    }

    /// Builds a verifier from its parts (tests and the mock challenge).
    pub fn from_parts(
        iterations: u32,
        salt: Vec<u8>,
        stored_key: [u8; KEY_LEN],
        server_key: [u8; KEY_LEN],
    ) -> Verifier {
        Verifier {
            iterations,
            salt,
            stored_key,
            server_key,
        }
    }

    /// PBKDF2 iteration count the client must use.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Salt the client must use.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// `H(ClientKey)`: what a client proof is checked against.
    pub fn stored_key(&self) -> &[u8; KEY_LEN] {
        &self.stored_key
    }

    /// Key of the server's signature, which proves the server knows the verifier.
    pub fn server_key(&self) -> &[u8; KEY_LEN] {
        &self.server_key
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

fn decode_key(b64: &str) -> Option<[u8; KEY_LEN]> {
    STANDARD.decode(b64).ok()?.try_into().ok()
}

/// The SCRAM ClientKey (`HMAC(SaltedPassword, "Client Key")`) recovered from a client's
/// proof. It is password-equivalent for SCRAM logins, so it is wiped on drop and never
/// printed.
#[derive(Clone)]
pub struct ClientKey([u8; KEY_LEN]);

impl ClientKey {
    /// Wraps raw key bytes (from a proof, or in tests from a password).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> ClientKey {
        ClientKey(bytes)
    }

    /// The raw key, for the upstream proof.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Whether `H(self)` equals `stored_key`, compared in constant time.
    pub fn matches(&self, stored_key: &[u8; KEY_LEN]) -> bool {
        sha256(&self.0).ct_eq(stored_key).into()
    }
}

impl Drop for ClientKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(<redacted>)")
    }
}

/// HMAC-SHA-256 over the concatenation of `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA-256 accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// A fresh nonce as PostgreSQL makes it: 18 random bytes, base64 (printable, no comma).
fn new_nonce() -> String {
    STANDARD.encode(rand::random::<[u8; RAW_NONCE_LEN]>())
}

/// The gs2 header plus channel-binding data, base64-encoded: the `c=` attribute.
fn cbind_attr(gs2_header: &str, cb_data: &[u8]) -> String {
    let mut input = Vec::with_capacity(gs2_header.len() + cb_data.len());
    input.extend_from_slice(gs2_header.as_bytes());
    input.extend_from_slice(cb_data);
    STANDARD.encode(input)
}

/// Printable per RFC 5802 (`%x21-2B / %x2D-7E`): what a nonce may contain.
fn is_printable(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| (0x21..=0x7e).contains(b) && *b != b',')
}
