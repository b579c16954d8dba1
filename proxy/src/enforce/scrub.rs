//! Scrubbing server errors and notices for restricted roles.
//!
//! A constraint violation's DETAIL carries whole rows ("Failing row contains (…)",
//! "Key (phone)=(…) already exists"), CONTEXT and WHERE can quote values, and an
//! internal query can echo the rewritten SQL. Only fields that cannot carry row values
//! are kept: severity, SQLSTATE, the primary message, the hint, the source location and
//! the names of the schema, table, column, type and constraint.

use crate::wire::messages::error;

/// Field codes that are kept.
const KEPT: &[u8] = b"SVCMHFLRstcdn";

/// Severities of the notices relayed to a restricted role. DEBUG and LOG messages,
/// which a client gets by lowering `client_min_messages`, carry the SQL text the server
/// runs in their primary message (`parse <unnamed>: SELECT …` of the extended protocol,
/// at DEBUG2): that is the rewritten SQL, with the `hash` mask's HMAC pads (the key).
const RELAYED_NOTICES: &[&[u8]] = &[b"NOTICE", b"WARNING", b"INFO"];

/// Whether a NoticeResponse from the server must not reach a restricted role at all:
/// its severity is not one of [`RELAYED_NOTICES`] (the non-localized `V` field, else
/// `S`), or it cannot be read.
pub fn drop_notice(body: &[u8]) -> bool {
    let Ok(fields) = error::fields(body) else {
        return true;
    };
    let severity = fields
        .iter()
        .find(|(c, _)| *c == b'V')
        .or_else(|| fields.iter().find(|(c, _)| *c == b'S'))
        .map(|(_, v)| *v);
    !severity.is_some_and(|s| RELAYED_NOTICES.contains(&s))
}

/// The scrubbed body, or None when nothing needed to be removed.
pub fn scrub(body: &[u8]) -> Option<Vec<u8>> {
    let fields = match error::fields(body) {
        Ok(f) => f,
        // A malformed error from the server: replace it with a bare one rather than
        // relay bytes we cannot vouch for.
        Err(_) => {
            let mut out = Vec::new();
            for (code, value) in [
                (b'S', &b"ERROR"[..]),
                (b'C', b"XX000"),
                (b'M', b"malformed server error"),
            ] {
                out.push(code);
                out.extend_from_slice(value);
                out.push(0);
            }
            out.push(0);
            return Some(out);
        }
    };
    if fields.iter().all(|(code, _)| KEPT.contains(code)) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    for (code, value) in fields {
        if KEPT.contains(&code) {
            out.push(code);
            out.extend_from_slice(value);
            out.push(0);
        }
    }
    out.push(0);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_detail_and_context_keeps_the_rest() {
        let body = b"SERROR\0C23514\0Mnew row violates check constraint \"c\"\0DFailing row contains (1, 13800001111).\0Wcontext\0tcustomers\0\0";
        let out = scrub(body).expect("scrubbed");
        let f = error::fields(&out).expect("fields");
        assert!(f.iter().all(|(c, _)| *c != b'D' && *c != b'W'));
        assert!(f.contains(&(b'C', &b"23514"[..])));
        assert!(f.contains(&(b't', &b"customers"[..])));
        assert!(!String::from_utf8_lossy(&out).contains("13800001111"));
    }

    #[test]
    fn debug_and_log_notices_are_dropped() {
        let debug = b"SDEBUG\0VDEBUG\0C00000\0Mparse <unnamed>: SELECT encode(sha256('\\x2c3b'::bytea))\0\0";
        assert!(drop_notice(debug));
        assert!(drop_notice(b"SLOG\0VLOG\0C00000\0Mplan:\0\0"));
        assert!(drop_notice(b"SNOTICE\0C00000\0"));
        assert!(drop_notice(b"garbage"));
        assert!(!drop_notice(
            b"SNOTICE\0VNOTICE\0C00000\0Mrelation exists\0\0"
        ));
        assert!(!drop_notice(b"SWARNING\0VWARNING\0C01000\0Mw\0\0"));
        assert!(!drop_notice(b"SINFO\0VINFO\0C00000\0Mvacuuming\0\0"));
        assert!(!drop_notice(b"SNOTICE\0C00000\0Mold server\0\0"));
    }

    #[test]
    fn clean_errors_are_left_alone() {
        assert!(scrub(b"SERROR\0C42P01\0Mrelation \"x\" does not exist\0\0").is_none());
    }
}
