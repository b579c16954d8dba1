//! Which replies the server still owes the client, in order.
//!
//! Every forwarded client message that the server answers pushes an [`Expect`]; replies
//! from the server pop them. This keeps the proxy in step when it refuses a statement in
//! the middle of a pipeline, ties each CommandComplete to the statement that produced it
//! (for audit and row limits), and mirrors the server's "skip until Sync" after an error.

use std::collections::VecDeque;
use std::sync::Arc;

use pgveil_policy::output::RowMasks;

use crate::hook::{Completion, StatementChange, StatementTag};
use crate::wire::messages::error::ProxyError;

/// One reply (or reply sequence) the server owes.
pub enum Expect {
    /// ParseComplete ('1'); its outcome is reported as a [`StatementChange`].
    Parse,
    /// BindComplete ('2').
    Bind,
    /// CloseComplete ('3'); a statement's (not a portal's) Close is reported as a
    /// [`StatementChange`].
    Close { statement: bool },
    /// ParameterDescription ('t') then RowDescription or NoData; `masks`: the
    /// statement's output masks, applied to the RowDescription.
    DescribeStatement { masks: Option<Arc<RowMasks>> },
    /// RowDescription or NoData.
    DescribePortal { masks: Option<Arc<RowMasks>> },
    /// DataRows then CommandComplete / EmptyQueryResponse / PortalSuspended / error.
    Execute {
        tag: Option<StatementTag>,
        rows: u64,
        /// Output masks the proxy applies to the rows.
        masks: Option<Arc<RowMasks>>,
    },
    /// A simple Query: statements until ReadyForQuery.
    Query {
        tags: VecDeque<StatementTag>,
        rows: u64,
        /// A refused query: the server's error is replaced by this one (boxed, as for
        /// `Refused`, so that the queue's entries stay small to move).
        refused: Option<Box<ProxyError>>,
        /// Output masks of its (single) statement, applied to rows and descriptions.
        masks: Option<Arc<RowMasks>>,
    },
    /// FunctionCallResponse then ReadyForQuery.
    FunctionCall,
    /// ReadyForQuery.
    Sync,
    /// A poisoned extended-protocol message: the server's error is replaced by this one.
    Refused(Box<ProxyError>),
    /// A query the proxy runs itself: its replies are consumed, never relayed.
    Probe {
        row: Option<Vec<Option<String>>>,
        failed: bool,
    },
}

impl std::fmt::Debug for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Expect::Parse => "Parse",
            Expect::Bind => "Bind",
            Expect::Close { .. } => "Close",
            Expect::DescribeStatement { .. } => "DescribeStatement",
            Expect::DescribePortal { .. } => "DescribePortal",
            Expect::Execute { .. } => "Execute",
            Expect::Query { .. } => "Query",
            Expect::FunctionCall => "FunctionCall",
            Expect::Sync => "Sync",
            Expect::Refused(_) => "Refused",
            Expect::Probe { .. } => "Probe",
        };
        f.write_str(name)
    }
}

/// What the relay should do with a server message after the state saw it.
#[derive(Debug)]
pub enum Action {
    /// Relay unchanged.
    Relay,
    /// Relay this error instead of the server's.
    ReplaceError(ProxyError),
}

/// Progress of a proxy-originated probe query.
#[derive(Debug, PartialEq, Eq)]
pub enum ProbeStep {
    /// The message belonged to the probe and is swallowed.
    Consumed,
    /// The probe finished: its first row, or None if it failed.
    Done(Option<Vec<Option<String>>>),
}

/// Decode a DataRow body into text values (None for NULL).
pub fn decode_data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let mut c = crate::wire::cursor::Cursor::new(body, "DataRow");
    let n = c.i16().ok()?;
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = c.i32().ok()?;
        if len < 0 {
            out.push(None);
        } else {
            let v = c.take(len as usize).ok()?;
            out.push(Some(String::from_utf8_lossy(v).into_owned()));
        }
    }
    Some(out)
}

/// What the hook learns from the server's replies, in the server's order.
#[derive(Debug)]
pub enum Settled {
    /// A tagged statement ended.
    Statement(StatementTag, Completion),
    /// A Parse or a statement Close was carried out, refused or skipped.
    Change(StatementChange),
    /// A Bind or a portal Close was carried out, refused or skipped.
    Portal(StatementChange),
}

/// The queue of owed replies plus what they settled.
#[derive(Debug, Default)]
pub struct ProtocolState {
    queue: VecDeque<Expect>,
    /// Statements and statement changes settled since the last drain, for the hook.
    settled: Vec<Settled>,
}

impl ProtocolState {
    /// Record that the server owes a reply to a forwarded message.
    pub fn push(&mut self, e: Expect) {
        self.queue.push_back(e);
    }

    /// Number of owed replies.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is owed (the session is idle).
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// What was settled since the last call, in order.
    pub fn take_settled(&mut self) -> std::vec::Drain<'_, Settled> {
        self.settled.drain(..)
    }

    /// Rows counted so far for the statement currently producing rows.
    pub fn current_rows(&self) -> u64 {
        match self.queue.front() {
            Some(Expect::Execute { rows, .. }) | Some(Expect::Query { rows, .. }) => *rows,
            _ => 0,
        }
    }

    /// The output masks of the reply now arriving (rows, or a row description).
    #[inline]
    pub fn masks(&self) -> Option<&Arc<RowMasks>> {
        match self.queue.front() {
            Some(
                Expect::Execute { masks, .. }
                | Expect::Query { masks, .. }
                | Expect::DescribeStatement { masks }
                | Expect::DescribePortal { masks },
            ) => masks.as_ref(),
            _ => None,
        }
    }

    /// If a probe is the oldest owed reply, consume `tag`/`body` for it. Returns None
    /// when the message is not the probe's, else whether the probe finished (with its
    /// first row, or None if it failed).
    #[inline]
    pub fn on_probe_message(&mut self, tag: u8, body: &[u8]) -> Option<ProbeStep> {
        let Some(Expect::Probe { row, failed }) = self.queue.front_mut() else {
            return None;
        };
        match tag {
            b'D' => {
                if row.is_none() {
                    *row = decode_data_row(body);
                }
                Some(ProbeStep::Consumed)
            }
            b'E' => {
                *failed = true;
                Some(ProbeStep::Consumed)
            }
            b'Z' => {
                let result = match self.queue.pop_front() {
                    Some(Expect::Probe { row, failed: false }) => row,
                    _ => None,
                };
                Some(ProbeStep::Done(result))
            }
            // Notices, notifications and parameter changes are the client's business.
            b'N' | b'A' | b'S' => None,
            _ => Some(ProbeStep::Consumed),
        }
    }

    /// Feed one server message (type and body); returns what to do with it.
    pub fn on_backend(&mut self, tag: u8, body: &[u8]) -> Action {
        match tag {
            b'D' | b'd' => {
                if let Some(Expect::Execute { rows, .. } | Expect::Query { rows, .. }) =
                    self.queue.front_mut()
                {
                    *rows += 1;
                }
            }
            b'1' if self.pop_if(|e| matches!(e, Expect::Parse)) => {
                self.settled.push(Settled::Change(StatementChange::Made));
            }
            b'2' if self.pop_if(|e| matches!(e, Expect::Bind)) => {
                self.settled.push(Settled::Portal(StatementChange::Made));
            }
            b'3' => {
                if self.pop_if(|e| matches!(e, Expect::Close { statement: true })) {
                    self.settled.push(Settled::Change(StatementChange::Made));
                } else if self.pop_if(|e| matches!(e, Expect::Close { statement: false })) {
                    self.settled.push(Settled::Portal(StatementChange::Made));
                }
            }
            b't' => {
                if let Some(Expect::DescribeStatement { masks }) = self.queue.front_mut() {
                    let masks = masks.take();
                    if let Some(front) = self.queue.front_mut() {
                        *front = Expect::DescribePortal { masks };
                    }
                }
            }
            b'T' | b'n' => {
                self.pop_if(|e| {
                    matches!(
                        e,
                        Expect::DescribePortal { .. } | Expect::DescribeStatement { .. }
                    )
                });
            }
            b'C' | b'I' | b's' => {
                let how = |rows: u64| match tag {
                    b'C' => Completion::Done {
                        rows: crate::wire::messages::backend::tag_rows(body).unwrap_or(rows),
                    },
                    b's' => Completion::Suspended { rows },
                    _ => Completion::Empty,
                };
                match self.queue.front_mut() {
                    Some(Expect::Execute { .. }) => {
                        if let Some(Expect::Execute {
                            tag: Some(t), rows, ..
                        }) = self.queue.pop_front()
                        {
                            self.settled.push(Settled::Statement(t, how(rows)));
                        }
                    }
                    Some(Expect::Query { tags, rows, .. }) => {
                        let n = std::mem::take(rows);
                        if let Some(t) = tags.pop_front() {
                            self.settled.push(Settled::Statement(t, how(n)));
                        }
                    }
                    _ => {}
                }
            }
            b'E' => return self.on_error(body),
            b'Z' => {
                while let Some(e) = self.queue.pop_front() {
                    match e {
                        Expect::Sync | Expect::FunctionCall => break,
                        Expect::Query { tags, .. } => {
                            // Statements the server never reported (out of step).
                            self.skip_all(tags);
                            break;
                        }
                        Expect::Execute { tag: Some(t), .. } => self
                            .settled
                            .push(Settled::Statement(t, Completion::Skipped)),
                        // Unanswered (a server out of step): assume nothing changed.
                        Expect::Parse | Expect::Close { statement: true } => {
                            self.settled.push(Settled::Change(StatementChange::Skipped))
                        }
                        Expect::Bind | Expect::Close { statement: false } => {
                            self.settled.push(Settled::Portal(StatementChange::Skipped))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        Action::Relay
    }

    /// Settle statements the server skipped (an earlier one failed), so that the hook
    /// still sees each of them end (its audit event, its bookkeeping).
    fn skip_all(&mut self, tags: VecDeque<StatementTag>) {
        self.settled.extend(
            tags.into_iter()
                .map(|t| Settled::Statement(t, Completion::Skipped)),
        );
    }

    /// Pop the oldest owed reply if it is the one `f` expects; whether it was.
    fn pop_if(&mut self, f: impl Fn(&Expect) -> bool) -> bool {
        let hit = self.queue.front().is_some_and(f);
        if hit {
            self.queue.pop_front();
        }
        hit
    }

    fn on_error(&mut self, body: &[u8]) -> Action {
        let sqlstate = crate::wire::messages::error::sqlstate(body);
        let failed = || Completion::Failed {
            sqlstate: sqlstate.clone(),
        };
        match self.queue.front_mut() {
            Some(Expect::Query { tags, refused, .. }) => {
                // The rest of this Query's statements never run.
                if let Some(t) = tags.pop_front() {
                    self.settled.push(Settled::Statement(t, failed()));
                }
                let rest = std::mem::take(tags);
                let refused = refused.take();
                self.skip_all(rest);
                match refused {
                    Some(e) => Action::ReplaceError(*e),
                    None => Action::Relay,
                }
            }
            Some(Expect::Sync) | Some(Expect::FunctionCall) | None => Action::Relay,
            Some(_) => {
                // Extended protocol: the server now skips everything until Sync.
                let mut action = Action::Relay;
                let mut first = true;
                while let Some(front) = self.queue.front() {
                    if matches!(
                        front,
                        Expect::Sync | Expect::Query { .. } | Expect::FunctionCall
                    ) {
                        break;
                    }
                    match self.queue.pop_front() {
                        Some(Expect::Refused(e)) if first => action = Action::ReplaceError(*e),
                        Some(Expect::Execute { tag: Some(t), .. }) => {
                            let how = if first { failed() } else { Completion::Skipped };
                            self.settled.push(Settled::Statement(t, how));
                        }
                        Some(Expect::Parse | Expect::Close { statement: true }) => {
                            self.settled.push(Settled::Change(if first {
                                StatementChange::Failed
                            } else {
                                StatementChange::Skipped
                            }));
                        }
                        Some(Expect::Bind | Expect::Close { statement: false }) => {
                            self.settled.push(Settled::Portal(if first {
                                StatementChange::Failed
                            } else {
                                StatementChange::Skipped
                            }));
                        }
                        _ => {}
                    }
                    first = false;
                }
                action
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(n: u32) -> StatementTag {
        Box::new(n)
    }

    fn completions(s: &mut ProtocolState) -> Vec<Completion> {
        s.take_settled()
            .filter_map(|e| match e {
                Settled::Statement(_, c) => Some(c),
                Settled::Change(_) | Settled::Portal(_) => None,
            })
            .collect()
    }

    fn changes(s: &mut ProtocolState) -> Vec<StatementChange> {
        s.take_settled()
            .filter_map(|e| match e {
                Settled::Change(c) => Some(c),
                Settled::Statement(..) | Settled::Portal(_) => None,
            })
            .collect()
    }

    fn portal_changes(s: &mut ProtocolState) -> Vec<StatementChange> {
        s.take_settled()
            .filter_map(|e| match e {
                Settled::Portal(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn portal_changes_follow_the_server() {
        use StatementChange::*;
        let mut s = ProtocolState::default();
        s.push(Expect::Bind);
        s.push(Expect::Close { statement: false });
        s.push(Expect::Sync);
        s.on_backend(b'2', b"");
        s.on_backend(b'3', b"");
        s.on_backend(b'Z', b"T");
        assert_eq!(portal_changes(&mut s), [Made, Made]);

        // A Bind that fails, then a portal Close and a Bind skipped until Sync.
        s.push(Expect::Bind);
        s.push(Expect::Close { statement: false });
        s.push(Expect::Bind);
        s.push(Expect::Sync);
        s.on_backend(b'E', b"C42P03\0\0");
        s.on_backend(b'Z', b"E");
        assert_eq!(portal_changes(&mut s), [Failed, Skipped, Skipped]);
        assert!(s.is_idle());
    }

    #[test]
    fn pipeline_completions_in_order() {
        let mut s = ProtocolState::default();
        s.push(Expect::Parse);
        s.push(Expect::Bind);
        s.push(Expect::Execute {
            tag: Some(tag(1)),
            rows: 0,
            masks: None,
        });
        s.push(Expect::Sync);
        s.on_backend(b'1', b"");
        s.on_backend(b'2', b"");
        s.on_backend(b'D', b"");
        s.on_backend(b'D', b"");
        s.on_backend(b'C', b"SELECT 2\0");
        let done = completions(&mut s);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0], Completion::Done { rows: 2 });
        s.on_backend(b'Z', b"I");
        assert!(s.is_idle());
    }

    #[test]
    fn refused_parse_replaces_only_its_own_error() {
        let mut s = ProtocolState::default();
        s.push(Expect::Refused(Box::new(ProxyError::error("42501", "no"))));
        s.push(Expect::Bind);
        s.push(Expect::Execute {
            tag: None,
            rows: 0,
            masks: None,
        });
        s.push(Expect::Sync);
        assert!(matches!(
            s.on_backend(b'E', b"C42601\0\0"),
            Action::ReplaceError(_)
        ));
        s.on_backend(b'Z', b"I");
        assert!(s.is_idle());

        // An earlier error means the poisoned message is skipped: relay the real one.
        s.push(Expect::Parse);
        s.push(Expect::Refused(Box::new(ProxyError::error("42501", "no"))));
        s.push(Expect::Sync);
        assert!(matches!(s.on_backend(b'E', b"C42P01\0\0"), Action::Relay));
        s.on_backend(b'Z', b"I");
        assert!(s.is_idle());
    }

    #[test]
    fn multi_statement_query() {
        let mut s = ProtocolState::default();
        s.push(Expect::Query {
            tags: [tag(1), tag(2), tag(3)].into_iter().collect(),
            rows: 0,
            refused: None,
            masks: None,
        });
        s.on_backend(b'C', b"BEGIN\0");
        s.on_backend(b'D', b"");
        s.on_backend(b'C', b"SELECT 1\0");
        s.on_backend(b'E', b"C22012\0\0");
        s.on_backend(b'Z', b"E");
        let done = completions(&mut s);
        assert_eq!(done.len(), 3);
        assert!(matches!(done[2], Completion::Failed { .. }));
        assert!(s.is_idle());
    }

    #[test]
    fn statements_after_a_failure_are_settled_as_skipped() {
        let mut s = ProtocolState::default();
        s.push(Expect::Query {
            tags: [tag(1), tag(2), tag(3)].into_iter().collect(),
            rows: 0,
            refused: None,
            masks: None,
        });
        s.on_backend(b'E', b"C22012\0\0");
        s.on_backend(b'Z', b"I");
        let done = completions(&mut s);
        assert_eq!(done.len(), 3);
        assert!(matches!(done[0], Completion::Failed { .. }));
        assert_eq!(done[1..], [Completion::Skipped, Completion::Skipped]);

        // Extended protocol: the Executes after the failing one are skipped until Sync.
        for n in 0..3 {
            s.push(Expect::Execute {
                tag: Some(tag(n)),
                rows: 0,
                masks: None,
            });
        }
        s.push(Expect::Sync);
        s.on_backend(b'E', b"C22012\0\0");
        s.on_backend(b'Z', b"I");
        let done = completions(&mut s);
        assert_eq!(done.len(), 3);
        assert!(matches!(done[0], Completion::Failed { .. }));
        assert_eq!(done[1..], [Completion::Skipped, Completion::Skipped]);
        assert!(s.is_idle());
    }

    #[test]
    fn statement_changes_follow_the_server() {
        use StatementChange::*;
        let mut s = ProtocolState::default();
        s.push(Expect::Parse);
        s.push(Expect::Close { statement: false });
        s.push(Expect::Close { statement: true });
        s.push(Expect::Sync);
        s.on_backend(b'1', b"");
        s.on_backend(b'3', b"");
        s.on_backend(b'3', b"");
        s.on_backend(b'Z', b"I");
        assert_eq!(changes(&mut s), [Made, Made]);

        // The first Parse fails; what follows until Sync is skipped.
        s.push(Expect::Parse);
        s.push(Expect::Close { statement: false });
        s.push(Expect::Close { statement: true });
        s.push(Expect::Parse);
        s.push(Expect::Sync);
        s.on_backend(b'E', b"C42P05\0\0");
        s.on_backend(b'Z', b"I");
        assert_eq!(changes(&mut s), [Failed, Skipped, Skipped]);

        // An error before the Parse: it is skipped, not failed.
        s.push(Expect::Bind);
        s.push(Expect::Parse);
        s.push(Expect::Sync);
        s.on_backend(b'E', b"C26000\0\0");
        s.on_backend(b'Z', b"I");
        assert_eq!(changes(&mut s), [Skipped]);
        assert!(s.is_idle());
    }
}
