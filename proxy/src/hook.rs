//! The seam where policy enforcement plugs into the relay.
//!
//! The session calls a [`SessionHook`] for every statement it is about to forward and for
//! the few backend messages that carry session facts. The hook answers with a
//! [`Verdict`]; the session carries it out (forward, forward rewritten text, or refuse
//! with an error that keeps client and server in step). [`PassThrough`] allows
//! everything: the behaviour of a plain transparent proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use pgveil_policy::mask::MaskKey;
use pgveil_policy::output::RowMasks;

use crate::wire::messages::error::ProxyError;

/// Facts about a session known once authentication succeeded.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Proxy-assigned session id (hex), also used in logs and audit events.
    pub id: String,
    /// Authenticated database user.
    pub user: String,
    pub database: String,
    pub application: Option<String>,
    pub client_addr: Option<SocketAddr>,
    /// All StartupMessage parameters as sent.
    pub startup_params: Vec<(String, String)>,
    /// Real backend PID.
    pub backend_pid: i32,
}

/// What to do with one client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward unchanged.
    Forward,
    /// Forward with this SQL text instead.
    Rewrite(String),
    /// Forward unchanged and mask these output columns of the rows it returns (for a
    /// Query or an Execute; a Parse with this verdict is forwarded unchanged).
    MaskRows(Arc<RowMasks>),
    /// Do not run it; the client gets this error in the place of the statement's result.
    Refuse(ProxyError),
    /// Not decided yet: the session must await [`SessionHook::prepare`] and ask again
    /// (a catalog refresh or an audit queue slot is needed first).
    Retry,
}

/// Work a hook needs done asynchronously before it can decide (awaited by the session
/// outside its locks).
pub type Preparation = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// How a statement ended, from the server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// CommandComplete: the rows its tag reports (`SELECT n`, `INSERT 0 n`, `COPY n`,
    /// …), else the DataRows counted.
    Done { rows: u64 },
    /// EmptyQueryResponse.
    Empty,
    /// PortalSuspended (Execute with a row limit).
    Suspended { rows: u64 },
    /// ErrorResponse with this SQLSTATE.
    Failed { sqlstate: Option<String> },
    /// Never run: an earlier statement of its Query (or of its extended-protocol batch)
    /// failed, so the server skipped it.
    Skipped,
}

/// What the server did with a forwarded Parse or Close of a prepared statement.
///
/// The hook keeps its own books of the session's prepared statements (to know what a
/// Bind runs); they must follow the server's, which keeps an old statement when a
/// Parse of its name fails and ignores everything after an error until Sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementChange {
    /// ParseComplete or CloseComplete: the change was made.
    Made,
    /// The server refused this message: a named statement is unchanged, the unnamed
    /// statement is gone (PostgreSQL drops it before parsing the new one).
    Failed,
    /// The server skipped it after an earlier error: nothing changed.
    Skipped,
}

/// Opaque per-statement data a hook attaches to a forwarded statement and gets back
/// when the statement completes (the audit event under construction, for example).
pub type StatementTag = Box<dyn std::any::Any + Send>;

/// Per-session policy enforcement. Every method has a permissive default.
pub trait SessionHook: Send {
    /// A simple-protocol Query. `tags` receives one entry per statement whose
    /// completion the hook wants to see (in order).
    fn on_query(&mut self, _sql: &str, _tags: &mut Vec<StatementTag>) -> Verdict {
        Verdict::Forward
    }

    /// The SQL text of the next Query or Parse is not valid UTF-8: the client_encoding is
    /// not UTF8 (PostgreSQL reads the bytes in that encoding), or the server will reject
    /// the bytes itself. Return an error to refuse the statement without analysing it, or
    /// None: the hook is then asked about the text with invalid sequences replaced by
    /// U+FFFD, and the session forwards the original bytes on [`Verdict::Forward`] and
    /// refuses a [`Verdict::Rewrite`] or [`Verdict::MaskRows`] (they would be based on a
    /// text the server does not run).
    ///
    /// Statement and portal names that are not UTF-8 reach the hook as [`name_key`]s.
    fn on_undecodable_text(&mut self) -> Option<ProxyError> {
        None
    }

    /// An extended-protocol Parse of statement `name`.
    fn on_parse(&mut self, _name: &str, _sql: &str) -> Verdict {
        Verdict::Forward
    }

    /// A Bind of `statement` into `portal` (a chance to re-check after a policy reload).
    fn on_bind(&mut self, _portal: &str, _statement: &str) -> Verdict {
        Verdict::Forward
    }

    /// An Execute of `portal`; may return a tag to see its completion.
    fn on_execute(&mut self, _portal: &str) -> (Verdict, Option<StatementTag>) {
        (Verdict::Forward, None)
    }

    /// The output masks of statement ('S') or portal ('P') `name`, for its Describe.
    fn describe_masks(&mut self, _kind: u8, _name: &str) -> Option<Arc<RowMasks>> {
        None
    }

    /// The key of the `hash` mask, for [`Verdict::MaskRows`].
    fn mask_key(&self) -> Option<&MaskKey> {
        None
    }

    /// A Close of a statement ('S') or portal ('P').
    fn on_close(&mut self, _kind: u8, _name: &str) {}

    /// What became of the oldest forwarded Parse or statement Close not yet settled
    /// (called once for each, in the order they were forwarded).
    fn on_statement_change(&mut self, _change: StatementChange) {}

    /// The server carried out, refused or skipped the oldest forwarded Bind or portal
    /// Close still unanswered.
    fn on_portal_change(&mut self, _change: StatementChange) {}

    /// A masked result did not match the catalog its masks were planned from (the
    /// session is closing): the catalog is read again. The session awaits the returned
    /// work before it tells the client, so that a client reconnecting at once finds the
    /// new catalog.
    fn on_stale_catalog(&mut self) -> Option<Preparation> {
        None
    }

    /// A Sync was forwarded: the server answers everything before it, and a message
    /// after it runs even if one before it failed.
    fn on_sync(&mut self) {}

    /// A FunctionCall message (the fast-path interface).
    fn on_function_call(&mut self) -> Verdict {
        Verdict::Forward
    }

    /// A statement the hook tagged has completed.
    fn on_complete(&mut self, _tag: StatementTag, _how: Completion) {}

    /// The server reported a parameter (client_encoding, standard_conforming_strings, ...).
    fn on_parameter_status(&mut self, _name: &str, _value: &str) {}

    /// The server is ready for the next query, with this transaction status.
    fn on_ready(&mut self, _status: u8) {}

    /// An ErrorResponse or NoticeResponse body from the server: return a replacement
    /// body to scrub fields that can echo row values, or None to relay it as is. An
    /// empty replacement drops a NoticeResponse; an ErrorResponse is never dropped, so
    /// its replacement must be a whole error body.
    fn scrub(&mut self, _tag: u8, _body: &[u8]) -> Option<Vec<u8>> {
        None
    }

    /// The maximum rows one statement may return to this session, if limited.
    fn max_rows(&self) -> Option<u64> {
        None
    }

    /// Async work to finish before the next decision (after [`Verdict::Retry`], and
    /// checked before every batch of client messages). None when nothing is pending.
    fn prepare(&mut self) -> Option<Preparation> {
        None
    }

    /// A query the proxy should run on the upstream connection, invisibly to the
    /// client, before the next client message (e.g. to read `search_path`).
    fn probe(&mut self) -> Option<String> {
        None
    }

    /// The first row of the probe's result (None for SQL NULL), or None if it failed.
    fn on_probe_result(&mut self, _row: Option<Vec<Option<String>>>) {}

    /// True when every method keeps its default (forward everything, see nothing): the
    /// relay then only frames and checks messages and skips the statement bookkeeping
    /// no one would read. Asked once, when the relay starts.
    fn is_transparent(&self) -> bool {
        false
    }
}

/// A statement or portal name as the hook sees it: the name itself when it is UTF-8,
/// else `\0` followed by the bytes in hex. No name the client sends contains a NUL, so
/// distinct names keep distinct keys.
pub fn name_key(raw: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => {
            let mut key = String::with_capacity(1 + 2 * raw.len());
            key.push('\0');
            for b in raw {
                key.push_str(&format!("{b:02x}"));
            }
            std::borrow::Cow::Owned(key)
        }
    }
}

/// The future [`HookFactory::open`] returns.
pub type OpenFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Box<dyn SessionHook>, ProxyError>> + Send + 'a>,
>;

/// Creates a [`SessionHook`] for each authenticated session.
pub trait HookFactory: Send + Sync {
    /// Called once authentication succeeded (async: it may load the catalog). An error
    /// refuses the session (e.g. a user that matches no role gets SQLSTATE 28000).
    fn open<'a>(&'a self, info: &'a SessionInfo) -> OpenFuture<'a>;
}

/// Allows everything: the transparent proxy.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl SessionHook for PassThrough {
    fn is_transparent(&self) -> bool {
        true
    }
}

impl HookFactory for PassThrough {
    fn open<'a>(&'a self, _info: &'a SessionInfo) -> OpenFuture<'a> {
        Box::pin(async { Ok(Box::new(PassThrough) as Box<dyn SessionHook>) })
    }
}

#[cfg(test)]
mod tests {
    use super::name_key;

    /// Only the hook that keeps every default may have the relay skip its bookkeeping.
    #[test]
    fn only_pass_through_is_transparent() {
        struct Defaults;
        impl super::SessionHook for Defaults {}
        assert!(super::SessionHook::is_transparent(&super::PassThrough));
        assert!(!super::SessionHook::is_transparent(&Defaults));
    }

    #[test]
    fn name_keys_are_distinct() {
        assert_eq!(name_key(b"s1"), "s1");
        assert_eq!(name_key(b"\xe9"), "\0e9");
        assert_ne!(name_key(b"\xe9"), name_key(b"\xea"));
        assert_ne!(name_key(b"\xe9"), name_key("é".as_bytes()));
    }
}
