//! The audit event: what the proxy reports about one access. The writer turns it into
//! one JSON line (see `chain.rs` for the `seq`, `prev_hash` and `hash` it adds).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::line::{SessionJson, StatementJson};

/// What happened. Serialized in snake_case (`statement`, `session_start`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A statement was analysed and forwarded, rewritten or refused.
    #[default]
    Statement,
    /// A client session was authenticated.
    SessionStart,
    /// A client session ended.
    SessionEnd,
    /// A login attempt failed (bad password, unknown user, refused by policy).
    LoginFailed,
    /// The policy was reloaded (or a reload failed).
    PolicyReload,
    /// Events were lost under `on_failure = "drop"`; `details.dropped` holds the count.
    AuditDropped,
}

impl EventKind {
    /// The serialized name (`statement`, `session_start`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Statement => "statement",
            EventKind::SessionStart => "session_start",
            EventKind::SessionEnd => "session_end",
            EventKind::LoginFailed => "login_failed",
            EventKind::PolicyReload => "policy_reload",
            EventKind::AuditDropped => "audit_dropped",
        }
    }
}

/// Columns a statement touched, by how the role saw them (`schema.table.column`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Columns {
    /// Read through a mask.
    pub masked: Vec<String>,
    /// Read as stored.
    pub raw: Vec<String>,
    /// Refused (the statement failed with 42501).
    pub denied: Vec<String>,
}

/// One access, as the proxy reports it. The writer adds `seq`, `prev_hash`, `hash`, and
/// `ts` when it is `None` (the moment `AuditSlot::record` was called). Session-wide
/// values are shared (`Arc<str>`): a session's events do not copy them each time.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    /// What happened.
    pub event: EventKind,
    /// When it happened; serialized as RFC 3339 UTC with milliseconds.
    pub ts: Option<SystemTime>,
    /// Session id chosen by the proxy.
    pub session: Option<Arc<str>>,
    /// Authenticated database user.
    pub user: Option<Arc<str>>,
    /// Policy role the user was bound to.
    pub role: Option<Arc<str>>,
    /// Client address `ip:port`.
    pub client: Option<Arc<str>>,
    /// `application_name` of the session.
    pub application: Option<Arc<str>>,
    /// Database of the session.
    pub database: Option<Arc<str>>,
    /// Declared purpose of the session.
    pub purpose: Option<Arc<str>>,
    /// `session` … `purpose` serialized ahead of time (once per session); when set, the
    /// writer splices it in place of those seven fields, which are then ignored.
    pub session_json: Option<Arc<SessionJson>>,
    /// Statement kind (`select`, `update`, …).
    pub kind: Option<Cow<'static, str>>,
    /// `allow`, `rewrite` or `deny`.
    pub decision: Option<Cow<'static, str>>,
    /// Why a statement was refused or a login failed.
    pub reason: Option<String>,
    /// Normalized query text; the writer replaces any literal left in it by `?`.
    pub query: Option<String>,
    /// Fingerprint of the normalized query.
    pub fingerprint: Option<String>,
    /// Relations the statement touched (`schema.table`).
    pub tables: Vec<String>,
    /// Columns by how they were seen.
    pub columns: Columns,
    /// Classes of the masked, raw or denied columns.
    pub classes: Vec<String>,
    /// `query` … `classes` serialized ahead of time (once per session for each cached
    /// decision, literals already stripped); when set, the writer splices it in place of those fields,
    /// which are then ignored.
    pub statement_json: Option<Arc<StatementJson>>,
    /// Rows returned or affected.
    pub rows: Option<u64>,
    /// Time from receiving the statement to its completion, in milliseconds.
    pub duration_ms: Option<f64>,
    /// SQLSTATE of the error the statement ended with, if any.
    pub sqlstate: Option<String>,
    /// Anything else worth keeping (reload result, dropped count, …).
    pub details: Option<serde_json::Value>,
}

/// Formats a time as RFC 3339 UTC with milliseconds (`2026-11-24T10:00:00.123Z`).
/// Times before 1970 are clamped to the epoch.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let sod = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn formats_rfc3339_with_millis() {
        assert_eq!(rfc3339_millis(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(at(1_700_000_000, 7)),
            "2023-11-14T22:13:20.007Z"
        );
        assert_eq!(
            rfc3339_millis(at(951_782_400, 999)),
            "2000-02-29T00:00:00.999Z"
        );
        assert_eq!(
            rfc3339_millis(at(4_102_444_799, 0)),
            "2099-12-31T23:59:59.000Z"
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn event_serializes_with_snake_case_kind_and_ts() {
        let ev = AuditEvent {
            event: EventKind::LoginFailed,
            ts: Some(at(0, 1)),
            ..AuditEvent::default()
        };
        let mut chain = super::super::chain::Chain::new(super::super::DEFAULT_GENESIS, None, 1024);
        let mut line = Vec::new();
        chain.append(&ev, &mut line);
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v["event"], "login_failed");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.001Z");
        assert_eq!(v["columns"]["denied"], serde_json::json!([]));
        for kind in [
            EventKind::Statement,
            EventKind::SessionStart,
            EventKind::SessionEnd,
            EventKind::LoginFailed,
            EventKind::PolicyReload,
            EventKind::AuditDropped,
        ] {
            assert_eq!(serde_json::json!(kind), kind.as_str());
        }
    }
}
