//! Why a SCRAM exchange failed, with the SQLSTATE and message PostgreSQL would send, so
//! a client cannot tell pgveil's SCRAM from the server's.

use thiserror::Error;

/// A failed SCRAM exchange, on either leg.
///
/// `Display` is for logs; clients get [`ScramError::sqlstate`], [`ScramError::message`]
/// and [`ScramError::detail`] in an ErrorResponse. A wrong password and an unknown user
/// are the same variant, so they cannot be told apart.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// The client picked a mechanism we did not offer.
    #[error("client selected an invalid sasl mechanism")]
    InvalidMechanism,
    /// A client message that does not follow RFC 5802 as PostgreSQL reads it.
    #[error("malformed scram message: {0}")]
    Malformed(String),
    /// The client sent gs2 flag `y` although we offered SCRAM-SHA-256-PLUS: a downgrade.
    #[error("scram channel binding negotiation error")]
    BindingDowngrade,
    /// A channel-binding type other than `tls-server-end-point`.
    #[error("unsupported scram channel-binding type")]
    UnsupportedBindingType(String),
    /// The client asked to act as another role (authzid).
    #[error("client uses authorization identity")]
    AuthzidUnsupported,
    /// The client requires a mandatory SCRAM extension (`m=`).
    #[error("client requires an unsupported scram extension")]
    ExtensionUnsupported,
    /// The client nonce contains characters outside RFC 5802's printable set.
    #[error("non-printable characters in scram nonce")]
    NonPrintableNonce,
    /// The channel-binding data does not match our certificate: a man in the middle.
    #[error("scram channel binding check failed")]
    BindingMismatch,
    /// `c=` in client-final does not repeat the gs2 header of client-first.
    #[error("unexpected scram channel-binding attribute in client-final-message")]
    UnexpectedBindingAttribute,
    /// The nonce in client-final is not the one we agreed on.
    #[error("invalid scram response: nonce does not match")]
    NonceMismatch,
    /// Wrong password, unknown user or a user without a usable verifier.
    #[error("password authentication failed for user \"{user}\"")]
    AuthFailed {
        /// The startup user, echoed as PostgreSQL does.
        user: String,
    },
    /// Upstream: the server offers no SCRAM-SHA-256.
    #[error("upstream server does not offer scram-sha-256")]
    UpstreamNoScram,
    /// Upstream: a server message that does not follow RFC 5802.
    #[error("malformed scram message from upstream: {0}")]
    UpstreamMalformed(String),
    /// Upstream: salt or iteration count differ from the verifier we checked the client
    /// against, so the password changed between lookup and login.
    #[error("upstream verifier differs from the cached one (password changed)")]
    VerifierStale,
    /// Upstream: the ServerSignature is wrong, so the server does not know the verifier.
    #[error("upstream server signature does not match")]
    UpstreamSignatureMismatch,
    /// Upstream: the server ended the exchange with `e=`.
    #[error("upstream server rejected scram login: {0}")]
    UpstreamRejected(String),
}

impl ScramError {
    /// SQLSTATE for the client's ErrorResponse (PostgreSQL's codes for the same failure).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ScramError::InvalidMechanism
            | ScramError::Malformed(_)
            | ScramError::UnsupportedBindingType(_)
            | ScramError::NonPrintableNonce
            | ScramError::UnexpectedBindingAttribute
            | ScramError::NonceMismatch => "08P01",
            ScramError::BindingDowngrade | ScramError::BindingMismatch => "28000",
            ScramError::AuthzidUnsupported | ScramError::ExtensionUnsupported => "0A000",
            ScramError::AuthFailed { .. } | ScramError::VerifierStale => "28P01",
            ScramError::UpstreamNoScram
            | ScramError::UpstreamMalformed(_)
            | ScramError::UpstreamSignatureMismatch
            | ScramError::UpstreamRejected(_) => "08006",
        }
    }

    /// Primary message for the client's ErrorResponse, worded as PostgreSQL words it.
    pub fn message(&self) -> String {
        match self {
            ScramError::InvalidMechanism => {
                "client selected an invalid SASL authentication mechanism".into()
            }
            ScramError::Malformed(_) => "malformed SCRAM message".into(),
            ScramError::BindingDowngrade => "SCRAM channel binding negotiation error".into(),
            ScramError::UnsupportedBindingType(kind) => {
                format!("unsupported SCRAM channel-binding type \"{kind}\"")
            }
            ScramError::AuthzidUnsupported => {
                "client uses authorization identity, but it is not supported".into()
            }
            ScramError::ExtensionUnsupported => {
                "client requires an unsupported SCRAM extension".into()
            }
            ScramError::NonPrintableNonce => "non-printable characters in SCRAM nonce".into(),
            ScramError::BindingMismatch => "SCRAM channel binding check failed".into(),
            ScramError::UnexpectedBindingAttribute => {
                "unexpected SCRAM channel-binding attribute in client-final-message".into()
            }
            ScramError::NonceMismatch => "invalid SCRAM response".into(),
            ScramError::AuthFailed { user } => {
                format!("password authentication failed for user \"{user}\"")
            }
            ScramError::VerifierStale => {
                "password changed during authentication; reconnect with the new password".into()
            }
            ScramError::UpstreamNoScram
            | ScramError::UpstreamMalformed(_)
            | ScramError::UpstreamSignatureMismatch
            | ScramError::UpstreamRejected(_) => {
                "could not authenticate to the upstream server".into()
            }
        }
    }

    /// Optional DETAIL field, as PostgreSQL sends it for protocol errors. Upstream
    /// failures carry none: their cause is for pgveil's log, not for the client.
    pub fn detail(&self) -> Option<String> {
        match self {
            ScramError::Malformed(detail) => Some(detail.clone()),
            ScramError::BindingDowngrade => Some(
                "The client supports SCRAM channel binding but thinks the server does not.  \
                 However, this server does support channel binding."
                    .into(),
            ),
            ScramError::NonceMismatch => Some("Nonce does not match.".into()),
            _ => None,
        }
    }

    /// Whether the failure is on the upstream leg (pgveil to PostgreSQL) rather than
    /// the client's fault: picks the log level and metric, and whether the failed-login
    /// limiter should count it (it should not).
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            ScramError::UpstreamNoScram
                | ScramError::UpstreamMalformed(_)
                | ScramError::VerifierStale
                | ScramError::UpstreamSignatureMismatch
                | ScramError::UpstreamRejected(_)
        )
    }
}
