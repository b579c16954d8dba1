//! Protocol version negotiation in scram mode.
//!
//! PostgreSQL answers a StartupMessage asking for a newer minor version or for `_pq_.`
//! options with NegotiateProtocolVersion, before authentication. In scram mode pgveil
//! authenticates the client before it connects upstream, so PostgreSQL's answer would
//! come after the SASL exchange, where clients do not expect it. pgveil therefore
//! answers itself, first, with protocol 3.0 and no options, and sends PostgreSQL a 3.0
//! StartupMessage without the `_pq_.` parameters: both legs agree on 3.0.

use crate::wire::cursor::Cursor;
use crate::wire::messages::startup::StartupMessage;
use crate::wire::messages::{encode, put_cstr};

/// Prefix of protocol option parameters in a StartupMessage.
const PROTOCOL_OPTION_PREFIX: &[u8] = b"_pq_.";

/// Protocol 3.0, the version pgveil settles on.
const PROTOCOL_3_0: i32 = 0x0003_0000;

/// What to do when the client asks for more than protocol 3.0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downgrade {
    /// NegotiateProtocolVersion for the client, to send before anything else.
    pub to_client: Vec<u8>,
    /// The StartupMessage for PostgreSQL: 3.0, without `_pq_.` parameters.
    pub upstream_startup: StartupMessage,
}

/// `None` for a plain 3.0 StartupMessage (nothing to negotiate); otherwise the answer
/// for the client and the StartupMessage to send upstream.
pub fn downgrade(startup: &StartupMessage) -> Option<Downgrade> {
    let (kept, options) = split_options(&startup.raw)?;
    if startup.version == PROTOCOL_3_0 && options.is_empty() {
        return None;
    }
    let mut to_client = Vec::with_capacity(16 + options.iter().map(Vec::len).sum::<usize>());
    encode(&mut to_client, b'v', |b| {
        b.extend_from_slice(&0i32.to_be_bytes());
        let count = i32::try_from(options.len()).unwrap_or(i32::MAX);
        b.extend_from_slice(&count.to_be_bytes());
        for option in &options {
            put_cstr(b, option);
        }
    });
    let mut raw = vec![0, 0, 0, 0];
    raw.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (key, value) in &kept {
        put_cstr(&mut raw, key);
        put_cstr(&mut raw, value);
    }
    raw.push(0);
    let len = u32::try_from(raw.len()).unwrap_or(u32::MAX);
    raw[..4].copy_from_slice(&len.to_be_bytes());
    let upstream_startup = StartupMessage {
        raw,
        version: PROTOCOL_3_0,
        params: startup
            .params
            .iter()
            .filter(|(k, _)| !k.as_bytes().starts_with(PROTOCOL_OPTION_PREFIX))
            .cloned()
            .collect(),
    };
    Some(Downgrade {
        to_client,
        upstream_startup,
    })
}

/// StartupMessage parameters as raw (name, value) bytes.
type RawParams<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Parameters of a raw StartupMessage as bytes (no lossy decoding), split into the
/// ones to keep and the names of the `_pq_.` options. `None` if the packet does not
/// parse (it did when it arrived, so this does not happen).
fn split_options(raw: &[u8]) -> Option<(RawParams<'_>, Vec<Vec<u8>>)> {
    let mut c = Cursor::new(raw, "StartupMessage");
    c.take(8).ok()?;
    let mut kept = Vec::new();
    let mut options = Vec::new();
    loop {
        let key = c.cstr().ok()?;
        if key.is_empty() {
            return Some((kept, options));
        }
        let value = c.cstr().ok()?;
        if key.starts_with(PROTOCOL_OPTION_PREFIX) {
            options.push(key.to_vec());
        } else {
            kept.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame;
    use crate::wire::messages::startup::{parse, StartupPacket};

    fn startup(version: i32, params: &[(&str, &str)]) -> StartupMessage {
        let mut raw = StartupMessage::build(params);
        raw[4..8].copy_from_slice(&version.to_be_bytes());
        match parse(&raw) {
            Ok(StartupPacket::Startup(m)) => m,
            other => panic!("not a startup message: {other:?}"),
        }
    }

    #[test]
    fn plain_3_0_needs_nothing() {
        assert_eq!(
            downgrade(&startup(PROTOCOL_3_0, &[("user", "alice")])),
            None
        );
    }

    #[test]
    fn newer_minor_and_options_are_declined() {
        let m = startup(
            0x0003_0002,
            &[
                ("user", "alice"),
                ("_pq_.compression", "on"),
                ("database", "shop"),
            ],
        );
        let d = downgrade(&m).expect("negotiation needed");
        assert_eq!(d.to_client[0], b'v');
        assert_eq!(
            frame::body(&d.to_client),
            b"\0\0\0\0\0\0\0\x01_pq_.compression\0"
        );
        let expected = startup(PROTOCOL_3_0, &[("user", "alice"), ("database", "shop")]);
        assert_eq!(d.upstream_startup, expected);
    }

    #[test]
    fn options_alone_on_3_0_are_declined() {
        let m = startup(PROTOCOL_3_0, &[("user", "alice"), ("_pq_.x", "1")]);
        let d = downgrade(&m).expect("negotiation needed");
        assert_eq!(frame::body(&d.to_client), b"\0\0\0\0\0\0\0\x01_pq_.x\0");
        assert_eq!(d.upstream_startup.params.len(), 1);
    }
}
