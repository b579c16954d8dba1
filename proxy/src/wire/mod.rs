//! The PostgreSQL wire protocol, as much of it as the proxy must read or write.
//!
//! [`frame`] cuts messages out of the byte stream; [`messages`] decodes the few message
//! types the proxy inspects and encodes the ones it originates. Everything else is
//! relayed as received.

pub mod cursor;
pub mod frame;
pub mod io;
pub mod messages;
pub mod row_mask;

/// Run the framer over `data` and hand every frame it cuts to each decoder the proxy
/// uses. Shared by the cargo-fuzz target (`fuzz/`) and the property test below, which
/// CI runs every time: nothing here may panic, whatever the input.
pub fn fuzz_all_decoders(data: &[u8]) {
    use messages::{backend, error, frontend, startup};
    let _ = frame::peek_startup(data);
    if let Ok(Some(n)) = frame::peek_startup(data) {
        let _ = startup::parse(&data[..n]);
    }
    let _ = startup::parse(data);
    let mut rest = data;
    while let Ok(frame::Peek::Complete { tag, total }) = frame::peek(rest, 1 << 20) {
        let msg = &rest[..total];
        let body = frame::body(msg);
        let _ = tag;
        let _ = frontend::query(body);
        let _ = frontend::Parse::decode(body);
        let _ = frontend::bind_names(body);
        let _ = frontend::execute(body);
        let _ = frontend::target(body);
        let _ = error::fields(body);
        let _ = error::sqlstate(body);
        let _ = backend::auth_kind(body);
        let _ = backend::sasl_mechanisms(body);
        let _ = backend::BackendKeyData::parse(body);
        let _ = backend::ready_status(body);
        let _ = backend::tag_rows(body);
        let _ = backend::parameter_status(body);
        let _ = crate::protocol_state::decode_data_row(body);
        rest = &rest[total..];
    }
}

#[cfg(test)]
mod fuzz_tests {
    use proptest::prelude::*;

    fn valid_messages() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut m = Vec::new();
        messages::encode(&mut m, b'Q', |b| messages::put_cstr(b, b"SELECT 1"));
        out.push(m);
        let mut m = Vec::new();
        messages::encode(&mut m, b'P', |b| {
            messages::put_cstr(b, b"s1");
            messages::put_cstr(b, b"SELECT $1");
            b.extend_from_slice(&[0, 1, 0, 0, 0, 23]);
        });
        out.push(m);
        out.push(
            messages::error::ProxyError::error("42501", "denied")
                .with_hint("h")
                .to_message(),
        );
        let mut m = Vec::new();
        messages::backend::encode_sasl(&mut m, &["SCRAM-SHA-256"]);
        out.push(m);
        out.push(messages::startup::StartupMessage::build(&[("user", "u")]));
        out
    }

    use super::messages;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::fuzz_all_decoders(&data);
        }

        #[test]
        fn mutated_streams_never_panic(
            picks in proptest::collection::vec(0usize..5, 1..8),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in any::<usize>(),
        ) {
            let valid = valid_messages();
            let mut stream: Vec<u8> = picks.iter().flat_map(|&i| valid[i].clone()).collect();
            for (at, byte) in flips {
                let n = stream.len();
                stream[at % n] = byte;
            }
            let n = stream.len();
            stream.truncate(cut % (n + 1));
            super::fuzz_all_decoders(&stream);
        }
    }
}
