//! The server side of SCRAM-SHA-256(-PLUS) towards the client, with PostgreSQL's rules
//! (`auth-scram.c`): which gs2 flags are allowed with which mechanism, what the
//! channel-binding data must be, and the mock exchange for users without a verifier.

use super::attr::Attrs;
use super::{
    cbind_attr, hmac, is_printable, new_nonce, xor, ClientKey, ScramError, Verifier, CB_TYPE,
    KEY_LEN, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use crate::auth::mock::MockSecret;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Mechanisms to list in AuthenticationSASL, in PostgreSQL's order. `channel_binding` is
/// the `tls-server-end-point` hash of pgveil's certificate, present only when the client
/// connection is TLS and the certificate allows binding; -PLUS is offered exactly then.
pub fn server_mechanisms(channel_binding: Option<&[u8]>) -> &'static [&'static str] {
    if channel_binding.is_some() {
        &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
    } else {
        &[SCRAM_SHA_256]
    }
}

/// The gs2 channel-binding flag the client sent in client-first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CbFlag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    NotOffered,
    /// `p=tls-server-end-point`: the client binds to our certificate.
    Bound,
}

/// A SCRAM exchange after server-first was sent, waiting for client-final.
pub struct ScramServer {
    user: String,
    verifier: Verifier,
    /// The exchange was run against a mock verifier and must fail at the end.
    doomed: bool,
    cb_flag: CbFlag,
    channel_binding: Option<Vec<u8>>,
    /// Client nonce followed by our nonce: what client-final must repeat.
    nonce: Vec<u8>,
    client_first_bare: Vec<u8>,
    server_first: Vec<u8>,
}

impl ScramServer {
    /// Reads the client's SASLInitialResponse (`chosen_mechanism` and its data) and
    /// returns the server-first message to send in AuthenticationSASLContinue.
    ///
    /// `verifier` is `None` for an unknown user or one without a SCRAM verifier: the
    /// exchange then runs against a fake verifier derived from `mock` and `user`, looks
    /// the same and fails at [`ScramServer::finish`] with the wrong-password error.
    /// `user` is the startup user; the name inside client-first is ignored, as
    /// PostgreSQL does. `channel_binding` must be what was passed to
    /// [`server_mechanisms`].
    pub fn start(
        chosen_mechanism: &str,
        client_first: &[u8],
        verifier: Option<&Verifier>,
        mock: &MockSecret,
        user: &str,
        channel_binding: Option<&[u8]>,
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        Self::start_with_nonce(
            chosen_mechanism,
            client_first,
            verifier,
            mock,
            user,
            channel_binding,
            &new_nonce(),
        )
    }

    /// [`ScramServer::start`] with a given server nonce (fixed in test vectors).
    pub(super) fn start_with_nonce(
        chosen_mechanism: &str,
        client_first: &[u8],
        verifier: Option<&Verifier>,
        mock: &MockSecret,
        user: &str,
        channel_binding: Option<&[u8]>,
        server_nonce: &str,
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let binding_in_use = match (chosen_mechanism, channel_binding) {
            (SCRAM_SHA_256_PLUS, Some(_)) => true,
            (SCRAM_SHA_256, _) => false,
            _ => return Err(ScramError::InvalidMechanism),
        };
        check_c_string(client_first)?;
        let first = parse_client_first(client_first, binding_in_use, channel_binding.is_some())?;

        let (verifier, doomed) = match verifier {
            Some(v) => (v.clone(), false),
            None => (mock.verifier_for(user), true),
        };
        let mut nonce = first.nonce.to_vec();
        nonce.extend_from_slice(server_nonce.as_bytes());
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(STANDARD.encode(verifier.salt()).as_bytes());
        server_first.extend_from_slice(format!(",i={}", verifier.iterations()).as_bytes());

        let server = ScramServer {
            user: user.to_string(),
            verifier,
            doomed,
            cb_flag: first.cb_flag,
            channel_binding: channel_binding.map(<[u8]>::to_vec),
            nonce,
            client_first_bare: first.bare.to_vec(),
            server_first: server_first.clone(),
        };
        Ok((server, server_first))
    }

    /// Reads client-final (the SASLResponse data). On a valid proof returns the
    /// server-final message for AuthenticationSASLFinal and the ClientKey recovered from
    /// the proof, for the upstream login.
    ///
    /// Send server-final only after the upstream login succeeded: it tells the client
    /// the exchange is over.
    pub fn finish(self, client_final: &[u8]) -> Result<(Vec<u8>, ClientKey), ScramError> {
        check_c_string(client_final)?;
        let mut attrs = Attrs::new(client_final);
        let cbind = attrs.expect(b'c').map_err(ScramError::Malformed)?;
        self.check_cbind(cbind)?;
        let nonce = attrs.expect(b'r').map_err(ScramError::Malformed)?;
        let (proof_start, proof_b64) = loop {
            let start = attrs.pos();
            let (attr, value) = attrs.any().map_err(ScramError::Malformed)?;
            if attr == b'p' {
                break (start, value);
            }
        };
        let proof: [u8; KEY_LEN] = STANDARD
            .decode(proof_b64)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| {
                ScramError::Malformed("Malformed proof in client-final-message.".into())
            })?;
        if !attrs.is_empty() {
            return Err(ScramError::Malformed(
                "Garbage found at the end of client-final-message.".into(),
            ));
        }
        if nonce != self.nonce.as_slice() {
            return Err(ScramError::NonceMismatch);
        }

        // The comma before `p=` belongs to neither part of the AuthMessage.
        let without_proof = &client_final[..proof_start.saturating_sub(1)];
        let auth_message: [&[u8]; 5] = [
            &self.client_first_bare,
            b",",
            &self.server_first,
            b",",
            without_proof,
        ];
        let client_signature = hmac(self.verifier.stored_key(), &auth_message);
        let client_key = ClientKey::from_bytes(xor(&proof, &client_signature));
        // Verify even for a mock verifier, so both paths cost the same.
        let proof_ok = client_key.matches(self.verifier.stored_key());
        if !proof_ok || self.doomed {
            return Err(ScramError::AuthFailed { user: self.user });
        }
        let server_signature = hmac(self.verifier.server_key(), &auth_message);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(STANDARD.encode(server_signature).as_bytes());
        Ok((server_final, client_key))
    }

    /// Checks that `c=` repeats the gs2 header and, with -PLUS, our certificate hash.
    fn check_cbind(&self, cbind: &[u8]) -> Result<(), ScramError> {
        match (self.cb_flag, &self.channel_binding) {
            (CbFlag::Bound, Some(hash)) => {
                let expected = cbind_attr(&format!("p={CB_TYPE},,"), hash);
                if cbind == expected.as_bytes() {
                    Ok(())
                } else {
                    Err(ScramError::BindingMismatch)
                }
            }
            (CbFlag::No, _) if cbind == b"biws" => Ok(()),
            (CbFlag::NotOffered, _) if cbind == b"eSws" => Ok(()),
            _ => Err(ScramError::UnexpectedBindingAttribute),
        }
    }
}

impl std::fmt::Debug for ScramServer {
    /// Leaves out whether the exchange is a mock: logs must not reveal which users exist.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer")
            .field("user", &self.user)
            .field("cb_flag", &self.cb_flag)
            .finish_non_exhaustive()
    }
}

/// The parts of client-first the exchange needs.
struct ClientFirst<'a> {
    cb_flag: CbFlag,
    bare: &'a [u8],
    nonce: &'a [u8],
}

/// Parses client-first-message as PostgreSQL's `read_client_first_message` does.
fn parse_client_first(
    msg: &[u8],
    binding_in_use: bool,
    plus_offered: bool,
) -> Result<ClientFirst<'_>, ScramError> {
    let mut attrs = Attrs::new(msg);
    let cb_flag = match attrs.peek() {
        Some(b'n') => {
            if binding_in_use {
                return Err(plus_without_binding());
            }
            attrs.expect_byte(b'n').map_err(ScramError::Malformed)?;
            attrs.expect_byte(b',').map_err(ScramError::Malformed)?;
            CbFlag::No
        }
        Some(b'y') => {
            if binding_in_use {
                return Err(plus_without_binding());
            }
            if plus_offered {
                return Err(ScramError::BindingDowngrade);
            }
            attrs.expect_byte(b'y').map_err(ScramError::Malformed)?;
            attrs.expect_byte(b',').map_err(ScramError::Malformed)?;
            CbFlag::NotOffered
        }
        Some(b'p') => {
            if !binding_in_use {
                return Err(ScramError::Malformed(
                    "The client selected SCRAM-SHA-256 without channel binding, but the \
                     SCRAM message includes channel binding data."
                        .into(),
                ));
            }
            let kind = attrs.expect(b'p').map_err(ScramError::Malformed)?;
            if kind != CB_TYPE.as_bytes() {
                return Err(ScramError::UnsupportedBindingType(sanitize_str(kind)));
            }
            CbFlag::Bound
        }
        other => {
            return Err(ScramError::Malformed(format!(
                "Unexpected channel-binding flag \"{}\".",
                sanitize_str(other.as_slice())
            )))
        }
    };
    match attrs.peek() {
        Some(b'a') => return Err(ScramError::AuthzidUnsupported),
        Some(b',') => {}
        other => {
            return Err(ScramError::Malformed(format!(
                "Unexpected attribute \"0x{:02x}\" in client-first-message.",
                other.unwrap_or(0)
            )))
        }
    }
    attrs.expect_byte(b',').map_err(ScramError::Malformed)?;
    let bare = attrs.rest();
    if attrs.peek() == Some(b'm') {
        return Err(ScramError::ExtensionUnsupported);
    }
    // The user name is ignored: the startup user is the identity.
    attrs.expect(b'n').map_err(ScramError::Malformed)?;
    let nonce = attrs.expect(b'r').map_err(ScramError::Malformed)?;
    if !is_printable(nonce) {
        return Err(ScramError::NonPrintableNonce);
    }
    while !attrs.is_empty() {
        attrs.any().map_err(ScramError::Malformed)?;
    }
    Ok(ClientFirst {
        cb_flag,
        bare,
        nonce,
    })
}

fn plus_without_binding() -> ScramError {
    ScramError::Malformed(
        "The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include \
         channel binding data."
            .into(),
    )
}

/// PostgreSQL reads SASL data as a C string: it must be non-empty and hold no NUL.
fn check_c_string(msg: &[u8]) -> Result<(), ScramError> {
    if msg.is_empty() {
        return Err(ScramError::Malformed("The message is empty.".into()));
    }
    if msg.contains(&0) {
        return Err(ScramError::Malformed(
            "Message length does not match input length.".into(),
        ));
    }
    Ok(())
}

/// Client bytes made safe to echo: non-printable as `?`, at most 30 characters
/// (PostgreSQL's `sanitize_str`).
fn sanitize_str(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(30)
        .map(|b| {
            if (0x20..=0x7e).contains(b) {
                *b as char
            } else {
                '?'
            }
        })
        .collect()
}
