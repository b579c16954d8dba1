//! The tamper-evident hash chain. Each line is one JSON object whose members come in a
//! fixed order: `seq, ts, event, session, user, role, client, application, database,
//! purpose, kind, decision, reason, query, fingerprint, tables, columns, classes, rows,
//! duration_ms, sqlstate, details, prev_hash, hash`.
//!
//! `hash` is the lowercase hex SHA-256 of the line's own bytes with the final
//! `,"hash":"…"` member removed (that is, the canonical line without `hash`, ending in
//! `}`), and `prev_hash` is the previous line's `hash` (the configured genesis for the
//! first line). Hashing the exact bytes makes the check independent of any JSON
//! re-serialization: anyone can verify with `head -c`, `sha256sum` and the previous line.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::config::is_hash_hex;
use super::event::{rfc3339_millis, AuditEvent};
#[cfg(test)]
use super::event::{Columns, EventKind};
#[cfg(test)]
use super::line::push_json_str;
use super::line::{self, SessionMembers, StatementMembers};

/// Bytes after the hashed part of a line: `,"hash":"` + 64 hex + `"}`.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// Where the chain stands: the next `seq` and the `hash` of the last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    next_seq: u64,
    prev_hash: String,
    /// Longest `query` kept, in bytes; longer ones are cut (after literal stripping).
    max_query_bytes: usize,
    /// `ts` of the last line up to the seconds (`2026-11-24T10:00:00.`) and the Unix
    /// second it stands for: most lines of a batch share it, so only millis are formatted.
    ts_second: Option<(u64, String)>,
}

/// A formatted `ts`, on the stack: stamping a line allocates nothing.
#[derive(Clone, Copy)]
struct Stamp {
    buf: [u8; Stamp::CAP],
    len: usize,
}

impl Stamp {
    /// Room for the longest RFC 3339 time a `SystemTime` can give (a 12-digit year).
    const CAP: usize = 40;

    /// `prefix` (ASCII, up to the seconds' dot) followed by `millis` (`mmmZ`).
    fn new(prefix: &str, millis: [u8; 4]) -> Stamp {
        let mut buf = [0u8; Stamp::CAP];
        let keep = prefix.len().min(Stamp::CAP - millis.len());
        buf[..keep].copy_from_slice(&prefix.as_bytes()[..keep]);
        buf[keep..keep + millis.len()].copy_from_slice(&millis);
        Stamp {
            buf,
            len: keep + millis.len(),
        }
    }
}

impl std::ops::Deref for Stamp {
    type Target = str;
    fn deref(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl PartialEq<String> for Stamp {
    fn eq(&self, other: &String) -> bool {
        **self == **other
    }
}

/// The last valid line of an existing log, from which a restarted writer continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainTip {
    pub seq: u64,
    pub hash: String,
}

impl Chain {
    /// A new chain (seq 1) or one that continues after `tip`.
    pub fn new(genesis: &str, tip: Option<ChainTip>, max_query_bytes: usize) -> Chain {
        let (next_seq, prev_hash) = match tip {
            Some(t) => (t.seq.saturating_add(1), t.hash),
            None => (1, genesis.to_string()),
        };
        Chain {
            next_seq,
            prev_hash,
            max_query_bytes,
            ts_second: None,
        }
    }

    /// `t` as RFC 3339 UTC with milliseconds, reusing the formatted second.
    fn stamp(&mut self, t: std::time::SystemTime) -> Stamp {
        let d = t
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(std::time::Duration::ZERO);
        let secs = d.as_secs();
        let prefix = match &self.ts_second {
            Some((s, p)) if *s == secs => p,
            _ => {
                let mut full = rfc3339_millis(t);
                // Drop "mmmZ": keep up to and including the dot.
                full.truncate(full.len() - 4);
                &self.ts_second.insert((secs, full)).1
            }
        };
        let ms = d.subsec_millis();
        Stamp::new(
            prefix,
            [
                b'0' + (ms / 100) as u8,
                b'0' + (ms / 10 % 10) as u8,
                b'0' + (ms % 10) as u8,
                b'Z',
            ],
        )
    }

    /// Appends the sealed line for `ev` (with its trailing newline) to `out`. `ts` is
    /// stamped now when the event has none; literals left in `query` become `?` and a
    /// query longer than `max_query_bytes` is cut. Members the event carries serialized
    /// ahead of time ([`SessionJson`](super::SessionJson),
    /// [`StatementJson`](super::StatementJson)) are spliced in as they are.
    pub fn append(&mut self, ev: &AuditEvent, out: &mut Vec<u8>) {
        let ts = self.stamp(ev.ts.unwrap_or_else(std::time::SystemTime::now));
        let start = out.len();
        line::write_head(out, self.next_seq, &ts, ev.event);
        match &ev.session_json {
            Some(j) => out.extend_from_slice(j.bytes()),
            None => SessionMembers::of(ev).write(out),
        }
        line::write_verdict(
            out,
            ev.kind.as_deref(),
            ev.decision.as_deref(),
            ev.reason.as_deref(),
        );
        match &ev.statement_json {
            Some(j) => out.extend_from_slice(j.bytes()),
            None => StatementMembers::of(ev).write(out, self.max_query_bytes),
        }
        line::Tail {
            rows: ev.rows,
            duration_ms: ev.duration_ms,
            sqlstate: ev.sqlstate.as_deref(),
            details: ev.details.as_ref(),
            prev_hash: &self.prev_hash,
        }
        .write(out);
        let digest = Sha256::digest(&out[start..]);
        let mut hash = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(digest, &mut hash);
        out.pop();
        out.extend_from_slice(b",\"hash\":\"");
        out.extend_from_slice(&hash);
        out.extend_from_slice(b"\"}\n");
        self.next_seq = self.next_seq.saturating_add(1);
        self.prev_hash.clear();
        self.prev_hash
            .push_str(std::str::from_utf8(&hash).unwrap_or_default());
    }

    /// The `seq` the next line will get.
    #[cfg(test)]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// Borrowed view of every member of a line in order (what `serde_json` would write of
/// it is what [`Chain::append`] writes).
#[cfg(test)]
#[derive(serde::Serialize)]
struct LineRef<'a> {
    seq: u64,
    ts: &'a str,
    event: EventKind,
    session: Option<&'a str>,
    user: Option<&'a str>,
    role: Option<&'a str>,
    client: Option<&'a str>,
    application: Option<&'a str>,
    database: Option<&'a str>,
    purpose: Option<&'a str>,
    kind: Option<&'a str>,
    decision: Option<&'a str>,
    reason: Option<&'a str>,
    query: Option<&'a str>,
    fingerprint: Option<&'a str>,
    tables: &'a [String],
    columns: &'a Columns,
    classes: &'a [String],
    rows: Option<u64>,
    duration_ms: Option<f64>,
    sqlstate: Option<&'a str>,
    details: Option<&'a serde_json::Value>,
    prev_hash: &'a str,
}

#[cfg(test)]
impl LineRef<'_> {
    /// Appends the line without `hash` (`{…,"prev_hash":"…"}`) from the same pieces
    /// [`Chain::append`] uses.
    fn write(&self, out: &mut Vec<u8>) {
        line::write_head(out, self.seq, self.ts, self.event);
        SessionMembers {
            session: self.session,
            user: self.user,
            role: self.role,
            client: self.client,
            application: self.application,
            database: self.database,
            purpose: self.purpose,
        }
        .write(out);
        line::write_verdict(out, self.kind, self.decision, self.reason);
        StatementMembers {
            query: self.query,
            fingerprint: self.fingerprint,
            tables: self.tables,
            masked: &self.columns.masked,
            raw: &self.columns.raw,
            denied: &self.columns.denied,
            classes: self.classes,
        }
        .write_scrubbed(out, self.query);
        line::Tail {
            rows: self.rows,
            duration_ms: self.duration_ms,
            sqlstate: self.sqlstate,
            details: self.details,
            prev_hash: self.prev_hash,
        }
        .write(out);
    }
}

/// The chain members of a line that passed [`check_line`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineFields {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
}

/// Why a line is not a valid chain link on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineError {
    /// Not a JSON object with `seq`, `prev_hash` and a final `hash` member.
    Malformed(String),
    /// Well-formed, but `hash` does not match the line's bytes: the line was changed.
    HashMismatch { seq: u64 },
}

#[derive(Deserialize)]
struct ChainMembers {
    seq: u64,
    prev_hash: String,
    hash: String,
}

/// Checks one line (without its newline): shape, JSON validity and its own hash.
pub(crate) fn check_line(line: &[u8]) -> Result<LineFields, LineError> {
    let malformed = |what: &str| Err(LineError::Malformed(what.to_string()));
    if line.is_empty() {
        return malformed("empty line");
    }
    if line.len() <= HASH_SUFFIX_LEN || !line.ends_with(b"\"}") {
        return malformed("not an audit event line (no final \"hash\" member)");
    }
    let split = line.len() - HASH_SUFFIX_LEN;
    if &line[split..split + 9] != b",\"hash\":\"" {
        return malformed("\"hash\" is not the last member of the line");
    }
    let members: ChainMembers = match serde_json::from_slice(line) {
        Ok(m) => m,
        Err(e) => return Err(LineError::Malformed(format!("invalid JSON: {e}"))),
    };
    if !is_hash_hex(&members.hash) || !is_hash_hex(&members.prev_hash) {
        return malformed("hash and prev_hash must be 64 lowercase hex digits");
    }
    let mut hasher = Sha256::new();
    hasher.update(&line[..split]);
    hasher.update(b"}");
    if hex::encode(hasher.finalize()) != members.hash {
        return Err(LineError::HashMismatch { seq: members.seq });
    }
    Ok(LineFields {
        seq: members.seq,
        prev_hash: members.prev_hash,
        hash: members.hash,
    })
}

/// What the end of an existing log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// No file, or an empty one.
    Empty,
    /// The last valid line, and how many complete lines after it are not valid.
    Valid { tip: ChainTip, invalid_after: usize },
    /// Content, but no valid audit line in the last [`MAX_TAIL_SCAN`] bytes: probably
    /// not an audit log (a wrong path) or a destroyed one.
    NoValidLine,
}

/// How far back from the end a restart looks for the last valid line.
pub(crate) const MAX_TAIL_SCAN: u64 = 64 * 1024 * 1024;

/// Finds the last valid line of `path` (complete, well-formed, hash matching), reading
/// backwards from the end in growing windows.
pub(crate) fn last_valid_line(path: &Path) -> io::Result<Tail> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Tail::Empty),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Tail::Empty);
    }
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window.min(MAX_TAIL_SCAN));
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.by_ref().take(len - start).read_to_end(&mut buf)?;
        // Complete lines only: skip a first fragment unless the window starts the file,
        // and ignore a torn last line without its newline.
        let mut lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
        lines.pop();
        if start > 0 && !lines.is_empty() {
            lines.remove(0);
        }
        for (invalid_after, line) in lines.iter().rev().enumerate() {
            if let Ok(f) = check_line(line) {
                let tip = ChainTip {
                    seq: f.seq,
                    hash: f.hash,
                };
                return Ok(Tail::Valid { tip, invalid_after });
            }
        }
        if start == 0 || window >= MAX_TAIL_SCAN {
            return Ok(Tail::NoValidLine);
        }
        window = window.saturating_mul(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::config::DEFAULT_GENESIS;

    fn event(query: &str) -> AuditEvent {
        AuditEvent {
            user: Some("support_app".into()),
            query: Some(query.into()),
            ..AuditEvent::default()
        }
    }

    #[test]
    fn hand_written_lines_are_what_serde_json_writes() {
        let odd = "q\"uo\\te \n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f} 张三 é /";
        let tables = vec!["public.customers".to_string(), odd.to_string()];
        let columns = Columns {
            masked: vec!["public.customers.phone".into()],
            raw: vec![],
            denied: vec![odd.into(), "x".into()],
        };
        let details = serde_json::json!({"dropped": 3, "why": odd});
        for (rows, duration, with_details) in [
            (None, None, false),
            (Some(7), Some(0.41), true),
            (Some(0), Some(1.0), false),
        ] {
            let line = LineRef {
                seq: 42,
                ts: "2026-11-24T10:00:00.123Z",
                event: EventKind::Statement,
                session: Some("7f3a"),
                user: Some(odd),
                role: None,
                client: Some("127.0.0.1:5000"),
                application: Some(odd),
                database: Some("shop"),
                purpose: None,
                kind: Some("select"),
                decision: Some("rewrite"),
                reason: None,
                query: Some("SELECT ? FROM \"t\""),
                fingerprint: Some("c0ffee"),
                tables: &tables,
                columns: &columns,
                classes: &[],
                rows,
                duration_ms: duration,
                sqlstate: Some("42501"),
                details: with_details.then_some(&details),
                prev_hash: DEFAULT_GENESIS,
            };
            let mut ours = Vec::new();
            line.write(&mut ours);
            let theirs = serde_json::to_vec(&line).expect("serializes");
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
    }

    #[test]
    fn strings_escape_like_serde_json_wherever_the_special_byte_is() {
        for special in ["\"", "\\", "\n", "\u{0}", "\u{1f}", "é", "张"] {
            for at in 0..40 {
                let s = format!("{}{special}{}", "a".repeat(at), "b".repeat(at % 9));
                let mut ours = Vec::new();
                push_json_str(&mut ours, &s);
                let theirs = serde_json::to_string(&s).expect("serializes");
                assert_eq!(String::from_utf8_lossy(&ours), theirs, "{s:?}");
            }
        }
    }

    #[test]
    fn stamps_match_the_full_format_within_and_across_seconds() {
        use std::time::{Duration, UNIX_EPOCH};
        let mut chain = Chain::new(DEFAULT_GENESIS, None, 1024);
        for (secs, ms) in [
            (0, 0),
            (0, 7),
            (0, 999),
            (1, 42),
            (1_700_000_000, 5),
            (1, 100),
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms);
            assert_eq!(chain.stamp(t), rfc3339_millis(t), "{secs}.{ms}");
        }
    }

    #[test]
    fn lines_are_sealed_and_linked() {
        let mut chain = Chain::new(DEFAULT_GENESIS, None, 1024);
        let mut out = Vec::new();
        chain.append(&event("SELECT 1"), &mut out);
        chain.append(&event("SELECT $1"), &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first = check_line(lines[0].as_bytes()).expect("valid");
        let second = check_line(lines[1].as_bytes()).expect("valid");
        assert_eq!(first.seq, 1);
        assert_eq!(first.prev_hash, DEFAULT_GENESIS);
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev_hash, first.hash);
        assert!(lines[0].starts_with("{\"seq\":1,\"ts\":\""));
        assert!(lines[0].contains("\"query\":\"SELECT ?\""));
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert!(keys.contains(&"details") && keys.contains(&"sqlstate"));
        assert_eq!(chain.next_seq(), 3);
    }

    #[test]
    fn hash_is_sha256_of_line_without_hash_member() {
        let mut chain = Chain::new(DEFAULT_GENESIS, None, 1024);
        let mut out = Vec::new();
        chain.append(&event("SELECT $1"), &mut out);
        let line = std::str::from_utf8(&out).expect("utf-8").trim_end();
        let (head, _) = line.rsplit_once(",\"hash\":").expect("hash member");
        let want = hex::encode(Sha256::digest(format!("{head}}}").as_bytes()));
        assert!(line.ends_with(&format!("\"hash\":\"{want}\"}}")));
    }

    #[test]
    fn long_queries_are_cut_at_a_char_boundary() {
        let mut chain = Chain::new(DEFAULT_GENESIS, None, 8);
        let mut out = Vec::new();
        chain.append(&event("SELECT é, 'x' FROM t"), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["query"], "SELECT …[truncated]");
        chain.append(&event("SELECT 1"), &mut out);
        assert!(String::from_utf8(out)
            .expect("utf-8")
            .contains("\"query\":\"SELECT ?\""));
    }

    #[test]
    fn prepared_members_seal_the_same_line_as_fields() {
        use super::super::line::{SessionJson, StatementJson};
        use std::sync::Arc;
        let fields = AuditEvent {
            session: Some("7f3a".into()),
            user: Some("support_app".into()),
            role: Some("support".into()),
            database: Some("shop".into()),
            kind: Some("select".into()),
            decision: Some("rewrite".into()),
            query: Some("SELECT phone FROM customers WHERE id_card = '110101199003071234'".into()),
            fingerprint: Some("c0ffee".into()),
            tables: vec!["public.customers".into()],
            columns: Columns {
                masked: vec!["public.customers.phone".into()],
                raw: vec![],
                denied: vec![],
            },
            classes: vec!["phone".into()],
            rows: Some(1),
            duration_ms: Some(0.41),
            ts: Some(std::time::UNIX_EPOCH),
            ..AuditEvent::default()
        };
        let prepared = AuditEvent {
            session_json: Some(Arc::new(SessionJson::new(&SessionMembers::of(&fields)))),
            statement_json: Some(Arc::new(StatementJson::new(
                &StatementMembers::of(&fields),
                1024,
            ))),
            kind: fields.kind.clone(),
            decision: fields.decision.clone(),
            rows: fields.rows,
            duration_ms: fields.duration_ms,
            ts: fields.ts,
            ..AuditEvent::default()
        };
        let (mut a, mut b) = (
            Chain::new(DEFAULT_GENESIS, None, 1024),
            Chain::new(DEFAULT_GENESIS, None, 1024),
        );
        let (mut from_fields, mut from_prepared) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            a.append(&fields, &mut from_fields);
            b.append(&prepared, &mut from_prepared);
        }
        assert_eq!(
            String::from_utf8_lossy(&from_fields),
            String::from_utf8_lossy(&from_prepared)
        );
        assert!(!String::from_utf8_lossy(&from_prepared).contains("110101"));
    }

    #[test]
    fn changed_line_is_detected() {
        let mut chain = Chain::new(DEFAULT_GENESIS, None, 1024);
        let mut out = Vec::new();
        chain.append(&event("SELECT $1"), &mut out);
        out.pop();
        let tampered = String::from_utf8(out)
            .expect("utf-8")
            .replace("support_app", "support_apq");
        assert_eq!(
            check_line(tampered.as_bytes()),
            Err(LineError::HashMismatch { seq: 1 })
        );
        assert!(matches!(
            check_line(b"{\"seq\":1}"),
            Err(LineError::Malformed(_))
        ));
        assert!(matches!(check_line(b""), Err(LineError::Malformed(_))));
    }
}
