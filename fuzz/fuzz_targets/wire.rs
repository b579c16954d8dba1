//! Fuzz target: the framer and every message decoder the proxy calls, on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgveil::wire::fuzz_all_decoders(data);
});
