//! SCRAM exchanges end to end in memory: the RFC 7677 vector, the `postgres-protocol`
//! client (what tokio-postgres speaks) against [`ScramServer`], [`ScramClient`] against
//! [`ScramServer`], and every rejection PostgreSQL makes.

use super::server::ScramServer as Server;
use super::*;
use crate::auth::mock::MockSecret;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

const CERT_HASH: &[u8] = &[0xab; 32];

fn mock() -> MockSecret {
    MockSecret::from_key([9; KEY_LEN], 4096)
}

/// The verifier PostgreSQL would store for `password` (ASCII, so SASLprep is a no-op)
/// and the ClientKey a client derives from it.
fn derive(password: &str, salt: &[u8], iterations: u32) -> (Verifier, [u8; KEY_LEN]) {
    let mut salted = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    let client_key = hmac(&salted, &[b"Client Key"]);
    let server_key = hmac(&salted, &[b"Server Key"]);
    let verifier = Verifier::from_parts(iterations, salt.to_vec(), sha256(&client_key), server_key);
    (verifier, client_key)
}

fn pg_verifier(password: &str) -> Verifier {
    let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
    Verifier::parse(&text).expect("postgres-protocol makes valid verifiers")
}

/// Runs a postgres-protocol client with `password` against our server; returns the
/// server's verdict and the server-first message it sent.
fn run_pg_client(
    password: &str,
    verifier: Option<&Verifier>,
    mechanism: &str,
    client_binding: ChannelBinding,
    our_binding: Option<&[u8]>,
) -> (Result<ClientKey, ScramError>, Vec<u8>) {
    let mut client = ScramSha256::new(password.as_bytes(), client_binding);
    let (server, server_first) = match ScramServer::start(
        mechanism,
        client.message(),
        verifier,
        &mock(),
        "alice",
        our_binding,
    ) {
        Ok(started) => started,
        Err(e) => return (Err(e), Vec::new()),
    };
    client
        .update(&server_first)
        .expect("client accepts our server-first");
    let result = server.finish(client.message()).map(|(server_final, key)| {
        client
            .finish(&server_final)
            .expect("client accepts our server signature");
        key
    });
    (result, server_first)
}

#[test]
fn rfc_7677_vector() {
    let salt = STANDARD
        .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
        .expect("vector salt");
    let (verifier, client_key) = derive("pencil", &salt, 4096);
    let (server, server_first) = Server::start_with_nonce(
        SCRAM_SHA_256,
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        Some(&verifier),
        &mock(),
        "user",
        None,
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    )
    .expect("vector client-first is valid");
    assert_eq!(
        server_first,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let (server_final, key) = server
        .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        .expect("vector proof is valid");
    assert_eq!(
        server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    assert_eq!(key.as_bytes(), &client_key);
}

#[test]
fn verifier_parse_accepts_postgres_format_only() {
    let v = pg_verifier("secret");
    assert_eq!(v.iterations(), 4096);
    assert_eq!(v.salt().len(), 16);
    for bad in [
        "md5d41d8cd98f00b204e9800998ecf8427e",
        "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:$AAAA:AAAA",
        "SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:c2FsdA==",
        "SCRAM-SHA-256$+4096:c2FsdA==$AAAA:AAAA",
        "plain",
        "",
    ] {
        assert_eq!(Verifier::parse(bad), None, "{bad}");
    }
    assert!(!format!("{v:?}").contains(&STANDARD.encode(v.stored_key())));
}

#[test]
fn postgres_protocol_client_without_binding() {
    let verifier = pg_verifier("s3cret");
    let (result, _) = run_pg_client(
        "s3cret",
        Some(&verifier),
        SCRAM_SHA_256,
        ChannelBinding::unsupported(),
        None,
    );
    let key = result.expect("right password logs in");
    assert!(key.matches(verifier.stored_key()));
}

#[test]
fn postgres_protocol_client_with_binding() {
    let verifier = pg_verifier("s3cret");
    let (result, _) = run_pg_client(
        "s3cret",
        Some(&verifier),
        SCRAM_SHA_256_PLUS,
        ChannelBinding::tls_server_end_point(CERT_HASH.to_vec()),
        Some(CERT_HASH),
    );
    assert!(result
        .expect("bound login succeeds")
        .matches(verifier.stored_key()));
}

#[test]
fn postgres_protocol_client_y_flag_when_plus_not_offered() {
    let verifier = pg_verifier("s3cret");
    let (result, _) = run_pg_client(
        "s3cret",
        Some(&verifier),
        SCRAM_SHA_256,
        ChannelBinding::unrequested(),
        None,
    );
    assert!(result.is_ok());
}

#[test]
fn recovered_key_is_the_password_client_key() {
    let salt = b"0123456789abcdef";
    let (verifier, client_key) = derive("hunter2", salt, 4096);
    let (result, _) = run_pg_client(
        "hunter2",
        Some(&verifier),
        SCRAM_SHA_256,
        ChannelBinding::unsupported(),
        None,
    );
    assert_eq!(result.expect("login").as_bytes(), &client_key);
}

#[test]
fn wrong_password_and_unknown_user_look_the_same() {
    let verifier = pg_verifier("s3cret");
    let (wrong, wrong_first) = run_pg_client(
        "guess",
        Some(&verifier),
        SCRAM_SHA_256,
        ChannelBinding::unsupported(),
        None,
    );
    let (unknown, unknown_first) = run_pg_client(
        "guess",
        None,
        SCRAM_SHA_256,
        ChannelBinding::unsupported(),
        None,
    );
    let (wrong, unknown) = (wrong.unwrap_err(), unknown.unwrap_err());
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.sqlstate(), "28P01");
    assert_eq!(
        wrong.message(),
        "password authentication failed for user \"alice\""
    );
    assert_eq!(wrong.detail(), unknown.detail());
    // Same shape: nonce length, salt length, iteration count.
    let shape = |first: &[u8]| {
        let text = String::from_utf8(first.to_vec()).expect("server-first is ASCII");
        text.split(',')
            .map(|part| match part.split_once('=') {
                Some(("i", i)) => format!("i={i}"),
                Some((k, v)) => format!("{k}:{}", v.len()),
                None => part.to_string(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&wrong_first), shape(&unknown_first));
}

#[test]
fn mock_challenge_is_stable_per_user() {
    let salt_of = |user: &str| {
        let (_, first) =
            ScramServer::start(SCRAM_SHA_256, b"n,,n=,r=abc", None, &mock(), user, None)
                .expect("valid client-first");
        let text = String::from_utf8(first).expect("ASCII");
        text.split(',').nth(1).map(str::to_string)
    };
    assert_eq!(salt_of("nobody"), salt_of("nobody"));
    assert_ne!(salt_of("nobody"), salt_of("someone"));
}

fn start_err(mechanism: &str, first: &[u8], binding: Option<&[u8]>) -> ScramError {
    let verifier = pg_verifier("x");
    ScramServer::start(mechanism, first, Some(&verifier), &mock(), "alice", binding)
        .expect_err("client-first must be refused")
}

#[test]
fn client_first_rules_match_postgres() {
    let cb = Some(CERT_HASH);
    // y while we offered -PLUS: downgrade.
    let e = start_err(SCRAM_SHA_256, b"y,,n=,r=abc", cb);
    assert_eq!(e, ScramError::BindingDowngrade);
    assert_eq!(e.sqlstate(), "28000");
    // p= with plain SCRAM-SHA-256, and -PLUS on a non-TLS connection.
    let e = start_err(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc", cb);
    assert!(matches!(e, ScramError::Malformed(_)));
    assert_eq!(e.sqlstate(), "08P01");
    assert_eq!(
        start_err(
            SCRAM_SHA_256_PLUS,
            b"p=tls-server-end-point,,n=,r=abc",
            None
        ),
        ScramError::InvalidMechanism
    );
    // -PLUS chosen, but n or y sent.
    assert!(matches!(
        start_err(SCRAM_SHA_256_PLUS, b"n,,n=,r=abc", cb),
        ScramError::Malformed(_)
    ));
    assert!(matches!(
        start_err(SCRAM_SHA_256_PLUS, b"y,,n=,r=abc", cb),
        ScramError::Malformed(_)
    ));
    assert_eq!(
        start_err(SCRAM_SHA_256_PLUS, b"p=tls-unique,,n=,r=abc", cb),
        ScramError::UnsupportedBindingType("tls-unique".into())
    );
    assert_eq!(
        start_err(SCRAM_SHA_256, b"n,a=bob,n=,r=abc", None),
        ScramError::AuthzidUnsupported
    );
    assert_eq!(
        start_err(SCRAM_SHA_256, b"n,,m=ext,n=,r=abc", None),
        ScramError::ExtensionUnsupported
    );
    assert_eq!(
        start_err(SCRAM_SHA_256, b"n,,n=,r=a\x01c", None),
        ScramError::NonPrintableNonce
    );
    assert_eq!(
        start_err("SCRAM-SHA-1", b"n,,n=,r=abc", None),
        ScramError::InvalidMechanism
    );
    for bad in [
        &b""[..],
        b"n,,n=,r=a\0c",
        b"x,,n=,r=abc",
        b"n,,r=abc",
        b"n,,n=",
        b"n",
    ] {
        let e = start_err(SCRAM_SHA_256, bad, None);
        assert!(matches!(e, ScramError::Malformed(_)), "{bad:?}: {e:?}");
        assert!(e.detail().is_some());
    }
}

#[test]
fn client_first_user_name_is_ignored_and_extensions_skipped() {
    let verifier = pg_verifier("x");
    let started = ScramServer::start(
        SCRAM_SHA_256,
        b"n,,n=mallory,r=abc,x=ext",
        Some(&verifier),
        &mock(),
        "alice",
        None,
    );
    assert!(started.is_ok());
}

/// Runs our own client flow by hand to client-final, then lets `tamper` edit it.
fn finish_with(
    binding: Option<&[u8]>,
    mechanism: &str,
    pg_binding: ChannelBinding,
    tamper: impl Fn(String) -> String,
) -> Result<(Vec<u8>, ClientKey), ScramError> {
    let verifier = pg_verifier("s3cret");
    let mut client = ScramSha256::new(b"s3cret", pg_binding);
    let (server, first) = ScramServer::start(
        mechanism,
        client.message(),
        Some(&verifier),
        &mock(),
        "alice",
        binding,
    )
    .expect("valid client-first");
    client.update(&first).expect("client accepts server-first");
    let client_final = String::from_utf8(client.message().to_vec()).expect("ASCII");
    server.finish(tamper(client_final).as_bytes())
}

#[test]
fn tampered_client_final_is_rejected() {
    let plain = || ChannelBinding::unsupported();
    assert!(finish_with(None, SCRAM_SHA_256, plain(), |m| m).is_ok());

    let e = finish_with(None, SCRAM_SHA_256, plain(), |m| {
        m.replacen(",r=", ",r=X", 1)
    });
    assert_eq!(e.unwrap_err(), ScramError::NonceMismatch);

    let e = finish_with(None, SCRAM_SHA_256, plain(), |m| {
        let (head, proof) = m.split_once(",p=").expect("has proof");
        let mut bytes = STANDARD.decode(proof).expect("b64 proof");
        bytes[0] ^= 1;
        format!("{head},p={}", STANDARD.encode(bytes))
    });
    assert!(matches!(e.unwrap_err(), ScramError::AuthFailed { .. }));

    let e = finish_with(None, SCRAM_SHA_256, plain(), |m| {
        m.replacen("c=biws", "c=eSws", 1)
    });
    assert_eq!(e.unwrap_err(), ScramError::UnexpectedBindingAttribute);

    let e = finish_with(None, SCRAM_SHA_256, plain(), |m| format!("{m},x=1"));
    assert!(matches!(e.unwrap_err(), ScramError::Malformed(_)));

    let e = finish_with(None, SCRAM_SHA_256, plain(), |m| {
        let (head, _) = m.split_once(",p=").expect("has proof");
        format!("{head},p=AAAA")
    });
    assert!(matches!(e.unwrap_err(), ScramError::Malformed(_)));

    // Extensions between r= and p= are part of the signed message and accepted.
    let e = finish_with(None, SCRAM_SHA_256, plain(), |m| {
        m.replacen(",p=", ",x=1,p=", 1)
    });
    assert!(matches!(e.unwrap_err(), ScramError::AuthFailed { .. }));
}

#[test]
fn binding_to_another_certificate_is_rejected() {
    let other = vec![0xcd; 32];
    let e = finish_with(
        Some(CERT_HASH),
        SCRAM_SHA_256_PLUS,
        ChannelBinding::tls_server_end_point(other),
        |m| m,
    );
    assert_eq!(e.unwrap_err(), ScramError::BindingMismatch);
}

/// Our server authenticates a client, then our client uses the recovered key
/// against a second server instance holding the same verifier (standing in for
/// PostgreSQL).
fn relay(
    upstream_mechs: &[&str],
    binding: UpstreamBinding,
    upstream_cb: Option<&[u8]>,
) -> Result<&'static str, ScramError> {
    let verifier = pg_verifier("s3cret");
    let (key, _) = run_pg_client(
        "s3cret",
        Some(&verifier),
        SCRAM_SHA_256,
        ChannelBinding::unsupported(),
        None,
    );
    let key = key.expect("client login");
    let (mut client, mechanism, first) =
        ScramClient::new(key, verifier.clone(), upstream_mechs, binding)?;
    let (upstream, server_first) = ScramServer::start(
        mechanism,
        &first,
        Some(&verifier),
        &mock(),
        "alice",
        upstream_cb,
    )?;
    let client_final = client.server_first(&server_first)?;
    let (server_final, _) = upstream.finish(&client_final)?;
    client.server_final(&server_final)?;
    Ok(mechanism)
}

#[test]
fn scram_client_logs_in_with_recovered_key() {
    let both = [SCRAM_SHA_256_PLUS, SCRAM_SHA_256];
    let tls = UpstreamBinding::Tls {
        end_point_hash: Some(CERT_HASH.to_vec()),
    };
    assert_eq!(
        relay(&both, tls.clone(), Some(CERT_HASH)),
        Ok(SCRAM_SHA_256_PLUS)
    );
    assert_eq!(
        relay(&[SCRAM_SHA_256], tls, None),
        Ok(SCRAM_SHA_256),
        "TLS without -PLUS on offer sends y"
    );
    assert_eq!(
        relay(&[SCRAM_SHA_256], UpstreamBinding::Plain, None),
        Ok(SCRAM_SHA_256)
    );
    // A certificate without a usable hash: n, which PostgreSQL accepts over TLS.
    assert_eq!(
        relay(
            &both,
            UpstreamBinding::Tls {
                end_point_hash: None
            },
            Some(CERT_HASH)
        ),
        Ok(SCRAM_SHA_256)
    );
    assert_eq!(
        relay(&["SCRAM-SHA-1"], UpstreamBinding::Plain, None),
        Err(ScramError::UpstreamNoScram)
    );
}

#[test]
fn scram_client_gs2_flags() {
    let key = || ClientKey::from_bytes([1; KEY_LEN]);
    let v = pg_verifier("x");
    let first = |mechs: &[&str], b| {
        let (_, _, first) = ScramClient::new(key(), v.clone(), mechs, b).expect("scram offered");
        String::from_utf8(first).expect("ASCII")
    };
    let tls = UpstreamBinding::Tls {
        end_point_hash: Some(CERT_HASH.to_vec()),
    };
    assert!(first(&[SCRAM_SHA_256_PLUS, SCRAM_SHA_256], tls.clone())
        .starts_with("p=tls-server-end-point,,n=,r="));
    assert!(first(&[SCRAM_SHA_256], tls).starts_with("y,,n=,r="));
    assert!(first(&[SCRAM_SHA_256], UpstreamBinding::Plain).starts_with("n,,n=,r="));
}

#[test]
fn scram_client_detects_changed_password_and_fake_server() {
    let old = pg_verifier("old");
    let (_, old_key) = {
        let salt = old.salt().to_vec();
        derive("old", &salt, old.iterations())
    };
    let new = pg_verifier("new");
    let (mut client, mechanism, first) = ScramClient::new(
        ClientKey::from_bytes(old_key),
        old.clone(),
        &[SCRAM_SHA_256],
        UpstreamBinding::Plain,
    )
    .expect("scram offered");
    let (_, server_first) =
        ScramServer::start(mechanism, &first, Some(&new), &mock(), "alice", None)
            .expect("valid client-first");
    assert_eq!(
        client.server_first(&server_first),
        Err(ScramError::VerifierStale)
    );

    // A server that answers with a wrong signature.
    let (mut client, mechanism, first) = ScramClient::new(
        ClientKey::from_bytes(old_key),
        old.clone(),
        &[SCRAM_SHA_256],
        UpstreamBinding::Plain,
    )
    .expect("scram offered");
    let (server, server_first) =
        ScramServer::start(mechanism, &first, Some(&old), &mock(), "alice", None)
            .expect("valid client-first");
    let client_final = client.server_first(&server_first).expect("same verifier");
    let (server_final, _) = server.finish(&client_final).expect("right key");
    let mut forged = server_final.clone();
    forged[2] = if forged[2] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        client.server_final(&forged),
        Err(ScramError::UpstreamSignatureMismatch)
    );
}

#[test]
fn scram_client_rejects_bad_server_first() {
    let v = pg_verifier("x");
    let new_client = || {
        ScramClient::new(
            ClientKey::from_bytes([1; KEY_LEN]),
            v.clone(),
            &[SCRAM_SHA_256],
            UpstreamBinding::Plain,
        )
        .expect("scram offered")
    };
    let salt = STANDARD.encode(v.salt());
    let (mut c, _, _) = new_client();
    assert!(matches!(
        c.server_first(format!("r=other,s={salt},i=4096").as_bytes()),
        Err(ScramError::UpstreamMalformed(_))
    ));
    let (mut c, _, first) = new_client();
    let nonce = String::from_utf8(first).expect("ASCII")["n,,n=,r=".len()..].to_string();
    assert!(
        matches!(
            c.server_first(format!("r={nonce},s={salt},i=4096").as_bytes()),
            Err(ScramError::UpstreamMalformed(_))
        ),
        "server must add its own nonce"
    );
    let (mut c, _, first) = new_client();
    let nonce = String::from_utf8(first).expect("ASCII")["n,,n=,r=".len()..].to_string();
    assert!(matches!(
        c.server_first(format!("r={nonce}xyz,s={salt},i=abc").as_bytes()),
        Err(ScramError::UpstreamMalformed(_))
    ));
    let (c, _, _) = new_client();
    assert!(matches!(
        c.server_final(b"v=AAAA"),
        Err(ScramError::UpstreamMalformed(_))
    ));
}

#[test]
fn upstream_error_is_reported() {
    let verifier = pg_verifier("x");
    let (mut client, _, first) = ScramClient::new(
        ClientKey::from_bytes([1; KEY_LEN]),
        verifier.clone(),
        &[SCRAM_SHA_256],
        UpstreamBinding::Plain,
    )
    .expect("scram offered");
    let (_, server_first) =
        ScramServer::start(SCRAM_SHA_256, &first, Some(&verifier), &mock(), "a", None)
            .expect("valid client-first");
    client.server_first(&server_first).expect("same verifier");
    assert_eq!(
        client.server_final(b"e=invalid-proof"),
        Err(ScramError::UpstreamRejected("invalid-proof".into()))
    );
}

#[test]
fn mechanisms_offered_follow_binding() {
    assert_eq!(server_mechanisms(None), &[SCRAM_SHA_256]);
    assert_eq!(
        server_mechanisms(Some(CERT_HASH)),
        &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
    );
}

mod fuzz {
    //! No input from a client or a server may panic the state machines.
    use super::*;
    use proptest::prelude::*;

    /// Bytes biased towards SCRAM syntax, so parsing gets past the first attribute.
    fn scramish() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b'n'),
                Just(b'y'),
                Just(b'p'),
                Just(b'r'),
                Just(b'c'),
                Just(b'v'),
                Just(b'e'),
                Just(b','),
                Just(b'='),
                any::<u8>()
            ],
            0..64,
        )
    }

    proptest! {
        #[test]
        fn server_never_panics(first in scramish(), last in scramish(), plus in any::<bool>()) {
            let v = pg_verifier("x");
            let mech = if plus { SCRAM_SHA_256_PLUS } else { SCRAM_SHA_256 };
            let cb = plus.then_some(CERT_HASH);
            let mut first_ok = b"n,,n=,r=abc".to_vec();
            first_ok.extend_from_slice(&first);
            for msg in [&first, &first_ok] {
                if let Ok((server, _)) = ScramServer::start(mech, msg, Some(&v), &mock(), "u", cb) {
                    let _ = server.finish(&last);
                }
            }
        }

        #[test]
        fn client_never_panics(first in scramish(), last in scramish()) {
            let v = pg_verifier("x");
            let (mut client, _, _) = ScramClient::new(
                ClientKey::from_bytes([1; KEY_LEN]),
                v,
                &[SCRAM_SHA_256],
                UpstreamBinding::Plain,
            ).expect("scram offered");
            let _ = client.server_first(&first);
            let _ = client.server_final(&last);
        }

        #[test]
        fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128), text in ".{0,80}") {
            let _ = cert_end_point_hash(&bytes);
            let _ = Verifier::parse(&text);
            let _ = Verifier::parse(&format!("SCRAM-SHA-256${text}"));
            let _ = crate::auth::verifier::parse_auth_file(&text);
            let _ = crate::auth::verifier::parse_auth_file(&format!("\"{text}\" \"{text}"));
        }
    }
}
