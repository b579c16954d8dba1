//! The client side of SCRAM-SHA-256(-PLUS) towards PostgreSQL, driven by the ClientKey
//! recovered from the client's proof instead of a password: pgveil logs in as the same
//! user without ever knowing the password.

use super::attr::Attrs;
use super::{
    cbind_attr, hmac, is_printable, new_nonce, xor, ClientKey, ScramError, Verifier, CB_TYPE,
    SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use subtle::ConstantTimeEq;

/// What the upstream leg offers for channel binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamBinding {
    /// Plain TCP or Unix socket: gs2 flag `n`.
    Plain,
    /// TLS to PostgreSQL. `end_point_hash` is [`super::cert_end_point_hash`] of the
    /// server's certificate (`None` if it allows no binding). With a hash and a server
    /// offering -PLUS we bind; without -PLUS on offer we send `y`, as libpq does, so a
    /// server that does support binding detects a downgrade.
    Tls {
        /// `tls-server-end-point` hash of PostgreSQL's certificate.
        end_point_hash: Option<Vec<u8>>,
    },
}

/// Where the exchange with PostgreSQL stands.
enum State {
    /// client-first sent, waiting for server-first.
    AwaitServerFirst,
    /// client-final sent; holds the ServerSignature PostgreSQL must present.
    AwaitServerFinal { server_signature: [u8; 32] },
    /// server-first arrived twice or after the end.
    Spent,
}

/// A SCRAM login to PostgreSQL with a ClientKey, one message at a time.
pub struct ScramClient {
    client_key: ClientKey,
    verifier: Verifier,
    gs2_header: String,
    cb_data: Vec<u8>,
    client_nonce: String,
    client_first_bare: String,
    state: State,
}

impl ScramClient {
    /// Starts a login. `verifier` is the one the client was checked against (its keys
    /// sign and verify; its salt and iterations must match what PostgreSQL sends),
    /// `server_mechanisms` the list from PostgreSQL's AuthenticationSASL.
    ///
    /// Returns the client, the mechanism and the client-first data for
    /// SASLInitialResponse.
    pub fn new(
        client_key: ClientKey,
        verifier: Verifier,
        server_mechanisms: &[&str],
        binding: UpstreamBinding,
    ) -> Result<(ScramClient, &'static str, Vec<u8>), ScramError> {
        let offers = |m: &str| server_mechanisms.contains(&m);
        let (mechanism, gs2_header, cb_data) = match binding {
            UpstreamBinding::Tls {
                end_point_hash: Some(hash),
            } if offers(SCRAM_SHA_256_PLUS) => (SCRAM_SHA_256_PLUS, format!("p={CB_TYPE},,"), hash),
            UpstreamBinding::Tls { .. } if offers(SCRAM_SHA_256) && !offers(SCRAM_SHA_256_PLUS) => {
                (SCRAM_SHA_256, "y,,".to_string(), Vec::new())
            }
            _ if offers(SCRAM_SHA_256) => (SCRAM_SHA_256, "n,,".to_string(), Vec::new()),
            _ => return Err(ScramError::UpstreamNoScram),
        };
        let client_nonce = new_nonce();
        // The user name is left empty, as libpq does: the startup user counts.
        let client_first_bare = format!("n=,r={client_nonce}");
        let client_first = format!("{gs2_header}{client_first_bare}").into_bytes();
        let client = ScramClient {
            client_key,
            verifier,
            gs2_header,
            cb_data,
            client_nonce,
            client_first_bare,
            state: State::AwaitServerFirst,
        };
        Ok((client, mechanism, client_first))
    }

    /// Reads server-first (AuthenticationSASLContinue) and returns client-final for
    /// SASLResponse. Fails with [`ScramError::VerifierStale`] when PostgreSQL's salt or
    /// iteration count differ from the verifier's: the password changed meanwhile.
    pub fn server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::AwaitServerFirst) {
            return Err(malformed("server-first-message out of order"));
        }
        self.state = State::Spent;
        let mut attrs = Attrs::new(msg);
        if attrs.peek() == Some(b'm') {
            return Err(malformed("server requires an unsupported SCRAM extension"));
        }
        let nonce = attrs.expect(b'r').map_err(malformed)?;
        if !nonce.starts_with(self.client_nonce.as_bytes())
            || nonce.len() <= self.client_nonce.len()
            || !is_printable(nonce)
        {
            return Err(malformed("invalid nonce in server-first-message"));
        }
        let salt = attrs.expect(b's').map_err(malformed)?;
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| malformed("invalid salt in server-first-message"))?;
        let iterations = attrs.expect(b'i').map_err(malformed)?;
        let iterations = std::str::from_utf8(iterations)
            .ok()
            .and_then(|i| i.parse::<u32>().ok())
            .ok_or_else(|| malformed("invalid iteration count in server-first-message"))?;
        while !attrs.is_empty() {
            attrs.any().map_err(malformed)?;
        }
        if salt != self.verifier.salt() || iterations != self.verifier.iterations() {
            return Err(ScramError::VerifierStale);
        }

        let mut without_proof = b"c=".to_vec();
        without_proof.extend_from_slice(cbind_attr(&self.gs2_header, &self.cb_data).as_bytes());
        without_proof.extend_from_slice(b",r=");
        without_proof.extend_from_slice(nonce);
        let auth_message: [&[u8]; 5] = [
            self.client_first_bare.as_bytes(),
            b",",
            msg,
            b",",
            &without_proof,
        ];
        let client_signature = hmac(self.verifier.stored_key(), &auth_message);
        let proof = xor(self.client_key.as_bytes(), &client_signature);
        let server_signature = hmac(self.verifier.server_key(), &auth_message);

        let mut client_final = without_proof;
        client_final.extend_from_slice(b",p=");
        client_final.extend_from_slice(STANDARD.encode(proof).as_bytes());
        self.state = State::AwaitServerFinal { server_signature };
        Ok(client_final)
    }

    /// Reads server-final (AuthenticationSASLFinal) and checks, in constant time, that
    /// PostgreSQL proved it knows the verifier. Only then is the upstream login genuine.
    pub fn server_final(self, msg: &[u8]) -> Result<(), ScramError> {
        let State::AwaitServerFinal { server_signature } = self.state else {
            return Err(malformed("server-final-message out of order"));
        };
        let mut attrs = Attrs::new(msg);
        if attrs.peek() == Some(b'e') {
            let value = attrs.expect(b'e').map_err(malformed)?;
            return Err(ScramError::UpstreamRejected(
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        let signature = attrs.expect(b'v').map_err(malformed)?;
        while !attrs.is_empty() {
            attrs.any().map_err(malformed)?;
        }
        let signature = STANDARD
            .decode(signature)
            .map_err(|_| malformed("invalid server signature encoding"))?;
        if bool::from(signature.as_slice().ct_eq(&server_signature)) {
            Ok(())
        } else {
            Err(ScramError::UpstreamSignatureMismatch)
        }
    }
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("gs2_header", &self.gs2_header)
            .finish_non_exhaustive()
    }
}

fn malformed(detail: impl Into<String>) -> ScramError {
    ScramError::UpstreamMalformed(detail.into())
}
