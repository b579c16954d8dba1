//! The session's prepared statements as the server has them.
//!
//! A Bind runs whatever statement the server holds under a name, so the proxy's books
//! of those statements (their decisions, their output masks) must follow the server's.
//! A Parse or Close is entered when it is forwarded, so that a Bind pipelined behind it
//! sees it, and undone when the server did not carry it out: PostgreSQL keeps the old
//! statement when a Parse of its name fails (42P05 or any other error), and skips every
//! message after an error until Sync. `DEALLOCATE` and `DISCARD ALL` are entered when
//! the server confirms them. A decision that depends on a name whose change is not
//! settled yet, and that the server would run even if that change failed (a Sync lies
//! between them), must wait for the server's answer: [`Statements::must_settle`].

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashMap;
use pgveil_policy::decide::Outcome;

use crate::hook::StatementChange;

/// A statement prepared through the extended protocol.
pub(super) struct Prepared {
    pub(super) sql: Arc<str>,
    /// Its decision (None: refused before a decision); the first report is the access
    /// report of its (single) statement, for audit events of its executions.
    pub(super) outcome: Option<Arc<Outcome>>,
    /// The context hash the decision was taken in, when a Bind in the same context may
    /// reuse it without deciding again.
    pub(super) reusable_in: Option<u64>,
}

/// A forwarded Parse or Close the server has not answered yet.
struct Unsettled {
    name: String,
    /// A Parse (else a Close).
    parse: bool,
    /// The statement of that name before the change, as far as the server knows.
    before: Option<Prepared>,
    /// Syncs forwarded before the change.
    syncs: u64,
}

/// The books: statements by name, and the changes still in flight, oldest first.
#[derive(Default)]
pub(super) struct Statements {
    by_name: HashMap<String, Prepared>,
    unsettled: VecDeque<Unsettled>,
    syncs: u64,
}

impl Statements {
    /// The statement a Bind of `name` runs now (as far as the books know).
    pub(super) fn get(&self, name: &str) -> Option<&Prepared> {
        self.by_name.get(name)
    }

    /// The same, to update its decision after a Bind decided again.
    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut Prepared> {
        self.by_name.get_mut(name)
    }

    /// A Parse of `name` was forwarded.
    pub(super) fn parsed(&mut self, name: &str, statement: Prepared) {
        let before = self.by_name.insert(name.to_owned(), statement);
        self.unsettled.push_back(Unsettled {
            name: name.to_owned(),
            parse: true,
            before,
            syncs: self.syncs,
        });
    }

    /// A Close of statement `name` was forwarded.
    pub(super) fn closed(&mut self, name: &str) {
        let before = self.by_name.remove(name);
        self.unsettled.push_back(Unsettled {
            name: name.to_owned(),
            parse: false,
            before,
            syncs: self.syncs,
        });
    }

    /// A Sync was forwarded.
    pub(super) fn synced(&mut self) {
        self.syncs += 1;
    }

    /// The server answered the oldest unsettled Parse or Close.
    pub(super) fn settled(&mut self, change: StatementChange) {
        let Some(u) = self.unsettled.pop_front() else {
            return;
        };
        let now = match change {
            StatementChange::Made => return,
            // PostgreSQL drops the unnamed statement before it parses the new one.
            StatementChange::Failed if u.parse && u.name.is_empty() => None,
            StatementChange::Failed | StatementChange::Skipped => u.before,
        };
        self.server_has(&u.name, now);
    }

    /// The server confirmed `DEALLOCATE name` (None: `DEALLOCATE ALL`, `DISCARD ALL`).
    pub(super) fn deallocated(&mut self, name: Option<&str>) {
        match name {
            Some(n) => self.server_has(n, None),
            None => {
                let mut names: Vec<String> = self.by_name.keys().cloned().collect();
                names.extend(self.unsettled.iter().map(|u| u.name.clone()));
                names.sort_unstable();
                names.dedup();
                for n in names {
                    self.server_has(&n, None);
                }
            }
        }
    }

    /// Whether a Bind of `name` must wait for the server to settle a change of it. Only
    /// when the latest change of the name lies before a Sync that has been forwarded
    /// since (else, if it fails, the server skips the Bind too), and a failure could
    /// leave the server a statement the books do not show: the change replaced one, or
    /// an earlier change of the name is in flight as well. A Parse of a fresh name
    /// pipelined behind a Sync does not wait: if it failed, the Bind fails as well.
    pub(super) fn must_settle(&self, name: &str) -> bool {
        let mut changes = self.unsettled.iter().rev().filter(|u| u.name == name);
        match changes.next() {
            Some(last) if last.syncs < self.syncs => {
                last.before.is_some() || changes.next().is_some()
            }
            _ => false,
        }
    }

    /// The server holds `statement` under `name` now: the next unsettled change of that
    /// name applies on top of it, or, if there is none, the books show it.
    fn server_has(&mut self, name: &str, statement: Option<Prepared>) {
        if let Some(next) = self.unsettled.iter_mut().find(|u| u.name == name) {
            next.before = statement;
            return;
        }
        match statement {
            Some(s) => {
                self.by_name.insert(name.to_owned(), s);
            }
            None => {
                self.by_name.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementChange::*;

    fn statement(sql: &str) -> Prepared {
        Prepared {
            sql: sql.into(),
            outcome: None,
            reusable_in: None,
        }
    }

    fn sql<'a>(books: &'a Statements, name: &str) -> Option<&'a str> {
        books.get(name).map(|p| &*p.sql)
    }

    #[test]
    fn a_failed_parse_keeps_the_old_statement() {
        let mut b = Statements::default();
        b.parsed("s", statement("A"));
        b.settled(Made);
        b.parsed("s", statement("B"));
        assert_eq!(sql(&b, "s"), Some("B"), "a Bind behind the Parse sees it");
        b.settled(Failed);
        assert_eq!(sql(&b, "s"), Some("A"));
    }

    #[test]
    fn a_failed_unnamed_parse_leaves_no_statement() {
        let mut b = Statements::default();
        b.parsed("", statement("A"));
        b.settled(Made);
        b.parsed("", statement("B"));
        b.settled(Failed);
        assert_eq!(sql(&b, ""), None);
        b.parsed("", statement("C"));
        b.settled(Skipped);
        assert_eq!(sql(&b, ""), None);
    }

    #[test]
    fn a_skipped_close_then_a_parse_of_the_name() {
        // Close s (skipped after an error), Sync, Parse s (fails: s still exists).
        let mut b = Statements::default();
        b.parsed("s", statement("A"));
        b.settled(Made);
        b.closed("s");
        b.synced();
        assert!(b.must_settle("s"));
        assert!(!b.must_settle("t"));
        b.parsed("s", statement("B"));
        assert!(!b.must_settle("s"), "a Bind in the Parse's own batch");
        b.synced();
        assert!(b.must_settle("s"), "the Close before it is in flight");
        assert_eq!(sql(&b, "s"), Some("B"));
        b.settled(Skipped);
        assert_eq!(sql(&b, "s"), Some("B"), "the Parse is still in flight");
        b.settled(Failed);
        assert_eq!(sql(&b, "s"), Some("A"), "the server kept A");
        assert!(!b.must_settle("s"));
    }

    #[test]
    fn a_fresh_name_behind_a_sync_does_not_wait() {
        let mut b = Statements::default();
        b.parsed("n", statement("N"));
        b.synced();
        assert!(!b.must_settle("n"));
        b.parsed("", statement("U1"));
        b.synced();
        b.parsed("", statement("U2"));
        assert!(!b.must_settle(""), "pipelined unnamed statements");
        b.synced();
        assert!(b.must_settle(""), "U2 replaced U1, both in flight");
    }

    #[test]
    fn close_and_parse_of_one_name_in_one_batch() {
        let mut b = Statements::default();
        b.parsed("s", statement("A"));
        b.settled(Made);
        b.closed("s");
        b.parsed("s", statement("B"));
        assert!(
            !b.must_settle("s"),
            "no Sync between: nothing runs on a failure"
        );
        b.settled(Made);
        b.settled(Made);
        assert_eq!(sql(&b, "s"), Some("B"));
    }

    #[test]
    fn deallocate_applies_under_changes_still_in_flight() {
        let mut b = Statements::default();
        b.parsed("s", statement("A"));
        b.parsed("t", statement("T"));
        b.settled(Made);
        b.settled(Made);
        b.parsed("s", statement("B"));
        b.deallocated(None);
        assert_eq!(sql(&b, "t"), None);
        assert_eq!(sql(&b, "s"), Some("B"), "the later Parse is in flight");
        b.settled(Failed);
        assert_eq!(sql(&b, "s"), None, "it failed after DEALLOCATE ALL");
        b.parsed("u", statement("U"));
        b.settled(Made);
        b.deallocated(Some("u"));
        assert_eq!(sql(&b, "u"), None);
    }
}
