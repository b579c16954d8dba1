//! How the members of a line are written, in the fixed order of `chain.rs`, byte for byte
//! what `serde_json` makes of them. A line is written in five pieces (head, session
//! members, verdict, statement members, tail) so that the two pieces that repeat from
//! event to event can be serialized ahead of time: [`SessionJson`] once per session and
//! [`StatementJson`] once per session for each cached decision. The writer splices their
//! bytes instead of escaping the same strings (and re-scanning the same query for
//! literals) every time.

use std::borrow::Cow;

use serde::Serialize;

use super::event::{AuditEvent, EventKind};
use super::literals::strip_literals;

/// Appended to a query cut at `max_query_bytes`.
const TRUNCATED: &str = "…[truncated]";

/// The session-wide members `session` … `purpose` of an event.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionMembers<'a> {
    pub session: Option<&'a str>,
    pub user: Option<&'a str>,
    pub role: Option<&'a str>,
    pub client: Option<&'a str>,
    pub application: Option<&'a str>,
    pub database: Option<&'a str>,
    pub purpose: Option<&'a str>,
}

impl<'a> SessionMembers<'a> {
    /// The members as the event's own fields hold them.
    pub(crate) fn of(ev: &'a AuditEvent) -> SessionMembers<'a> {
        SessionMembers {
            session: ev.session.as_deref(),
            user: ev.user.as_deref(),
            role: ev.role.as_deref(),
            client: ev.client.as_deref(),
            application: ev.application.as_deref(),
            database: ev.database.as_deref(),
            purpose: ev.purpose.as_deref(),
        }
    }

    /// Appends `,"session":…` through `,"purpose":…`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        opt_str(out, b",\"session\":", self.session);
        opt_str(out, b",\"user\":", self.user);
        opt_str(out, b",\"role\":", self.role);
        opt_str(out, b",\"client\":", self.client);
        opt_str(out, b",\"application\":", self.application);
        opt_str(out, b",\"database\":", self.database);
        opt_str(out, b",\"purpose\":", self.purpose);
    }
}

/// What a statement event reports about the statement itself: `query` … `classes`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatementMembers<'a> {
    /// The query as given; literals left in it are replaced when it is written.
    pub query: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    pub tables: &'a [String],
    pub masked: &'a [String],
    pub raw: &'a [String],
    pub denied: &'a [String],
    pub classes: &'a [String],
}

impl<'a> StatementMembers<'a> {
    /// The members as the event's own fields hold them.
    pub(crate) fn of(ev: &'a AuditEvent) -> StatementMembers<'a> {
        StatementMembers {
            query: ev.query.as_deref(),
            fingerprint: ev.fingerprint.as_deref(),
            tables: &ev.tables,
            masked: &ev.columns.masked,
            raw: &ev.columns.raw,
            denied: &ev.columns.denied,
            classes: &ev.classes,
        }
    }

    /// Appends `,"query":…` through `,"classes":[…]`, the query without literals and cut
    /// to `max_query_bytes`.
    pub(crate) fn write(&self, out: &mut Vec<u8>, max_query_bytes: usize) {
        let query = self
            .query
            .map(|q| truncate(strip_literals(q), max_query_bytes));
        self.write_scrubbed(out, query.as_deref());
    }

    /// [`StatementMembers::write`] with `query` already stripped and cut.
    pub(crate) fn write_scrubbed(&self, out: &mut Vec<u8>, query: Option<&str>) {
        opt_str(out, b",\"query\":", query);
        opt_str(out, b",\"fingerprint\":", self.fingerprint);
        list(out, b",\"tables\":", self.tables);
        out.extend_from_slice(b",\"columns\":{");
        list(out, b"\"masked\":", self.masked);
        list(out, b",\"raw\":", self.raw);
        list(out, b",\"denied\":", self.denied);
        out.push(b'}');
        list(out, b",\"classes\":", self.classes);
    }
}

/// `session` … `purpose` serialized once for all events of a session (rebuilt when its
/// role or purpose changes). An event carrying it leaves those fields `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionJson(Box<[u8]>);

impl SessionJson {
    /// Serializes `m` as the writer would.
    pub fn new(m: &SessionMembers<'_>) -> SessionJson {
        let mut out = Vec::with_capacity(160);
        m.write(&mut out);
        SessionJson(out.into_boxed_slice())
    }

    /// The serialized members, each preceded by a comma.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `query` … `classes` serialized once per session for each cached decision, the query
/// already stripped of literals and cut (built by `Auditor::statement_json`, which knows
/// `max_query_bytes`).
/// An event carrying it leaves those fields empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementJson(Box<[u8]>);

impl StatementJson {
    /// Serializes `m` as the writer would, with queries cut to `max_query_bytes`.
    pub(crate) fn new(m: &StatementMembers<'_>, max_query_bytes: usize) -> StatementJson {
        let mut out = Vec::with_capacity(256);
        m.write(&mut out, max_query_bytes);
        StatementJson(out.into_boxed_slice())
    }

    /// The serialized members, each preceded by a comma.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Appends `{"seq":…,"ts":…,"event":…`.
pub(crate) fn write_head(out: &mut Vec<u8>, seq: u64, ts: &str, event: EventKind) {
    out.extend_from_slice(b"{\"seq\":");
    push_u64(out, seq);
    opt_str(out, b",\"ts\":", Some(ts));
    opt_str(out, b",\"event\":", Some(event.as_str()));
}

/// Appends `,"kind":…,"decision":…,"reason":…`.
pub(crate) fn write_verdict(
    out: &mut Vec<u8>,
    kind: Option<&str>,
    decision: Option<&str>,
    reason: Option<&str>,
) {
    opt_str(out, b",\"kind\":", kind);
    opt_str(out, b",\"decision\":", decision);
    opt_str(out, b",\"reason\":", reason);
}

/// The members after `classes`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tail<'a> {
    pub rows: Option<u64>,
    pub duration_ms: Option<f64>,
    pub sqlstate: Option<&'a str>,
    pub details: Option<&'a serde_json::Value>,
    pub prev_hash: &'a str,
}

impl Tail<'_> {
    /// Appends `,"rows":…` through `,"prev_hash":…}` (the line without `hash`).
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"rows\":");
        match self.rows {
            Some(n) => push_u64(out, n),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"duration_ms\":");
        match self.duration_ms {
            Some(d) => value(out, &d),
            None => out.extend_from_slice(b"null"),
        }
        opt_str(out, b",\"sqlstate\":", self.sqlstate);
        out.extend_from_slice(b",\"details\":");
        match self.details {
            Some(d) => value(out, d),
            None => out.extend_from_slice(b"null"),
        }
        opt_str(out, b",\"prev_hash\":", Some(self.prev_hash));
        out.push(b'}');
    }
}

/// Cuts `q` to at most `max` bytes at a character boundary, marking the cut.
pub(crate) fn truncate(q: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    if q.len() <= max {
        return q;
    }
    let mut end = max;
    while !q.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{TRUNCATED}", &q[..end]))
}

/// Appends `key` (`,"name":` with its comma and colon) and `v` as a JSON string or null.
fn opt_str(out: &mut Vec<u8>, key: &[u8], v: Option<&str>) {
    out.extend_from_slice(key);
    match v {
        Some(v) => push_json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends `key` and `v` as a JSON array of strings.
fn list(out: &mut Vec<u8>, key: &[u8], v: &[String]) {
    out.extend_from_slice(key);
    out.push(b'[');
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, s);
    }
    out.push(b']');
}

fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(&mut *out, v)
        .expect("numbers and JSON values always serialize into memory");
}

/// Appends `n` in decimal, without an intermediate `String`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `s` as a JSON string, escaped exactly as serde_json does (quote, backslash and
/// control characters; everything else, non-ASCII included, as is).
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let clean = clean_prefix(bytes);
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Length of the longest prefix of whole 8-byte words of `bytes` that needs no JSON
/// escape (no control character, quote or backslash), tested a word at a time.
fn clean_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Some byte of `w` is below `n` (n <= 128), or equal to `b`.
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH != 0;
    let has = |w: u64, b: u8| below(w ^ (ONES * u64::from(b)), 1);
    let mut done = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        if below(w, 0x20) || has(w, b'"') || has(w, b'\\') {
            break;
        }
        done += 8;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_print_like_to_string() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn prepared_members_are_the_members_written_in_place() {
        let odd = "q\"uo\\te \n 张三";
        let tables = vec!["public.t".to_string(), odd.to_string()];
        let cols = vec!["public.t.a".to_string()];
        let m = StatementMembers {
            query: Some("SELECT a FROM t WHERE id = 42 AND b = 'x' -- c"),
            fingerprint: Some("c0ffee"),
            tables: &tables,
            masked: &cols,
            raw: &[],
            denied: &cols,
            classes: &tables,
        };
        let mut direct = Vec::new();
        m.write(&mut direct, 64);
        assert_eq!(StatementJson::new(&m, 64).bytes(), &direct[..]);
        let text = String::from_utf8(direct).expect("utf-8");
        assert!(text.starts_with(",\"query\":\"SELECT a FROM t WHERE id = ? AND b = ?  \""));

        let s = SessionMembers {
            session: Some("7f3a"),
            user: Some(odd),
            database: Some("shop"),
            ..SessionMembers::default()
        };
        let mut direct = Vec::new();
        s.write(&mut direct);
        assert_eq!(SessionJson::new(&s).bytes(), &direct[..]);
    }
}
