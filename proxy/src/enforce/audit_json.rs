//! A session's audit members serialized ahead of time: its identity members once (again
//! after a role or purpose change) and each statement report's members once per report.
//!
//! Reports live in cached decisions (`Arc<[StatementReport]>`, shared by every use of a
//! decision and by every instance of a shape's template), so a statement event costs
//! two reference counts instead of copying and re-serializing its strings and lists.

use std::sync::Arc;

use pgveil_policy::decide::{Outcome, StatementReport};
use pgveil_policy::ptrhash::PtrMap;

use crate::audit::{Auditor, SessionJson, SessionMembers, StatementJson, StatementMembers};

/// Reports remembered per session before the map starts over: a bound on memory, far
/// above the number of distinct statements a session normally sends.
const MAX_REPORTS: usize = 512;

/// The values of a session's identity members.
pub(crate) struct SessionIds<'a> {
    pub session: &'a str,
    pub user: &'a str,
    pub role: Option<&'a Arc<str>>,
    pub client: Option<&'a str>,
    pub application: Option<&'a str>,
    pub database: &'a str,
    pub purpose: Option<&'a Arc<str>>,
}

/// The session members and the role and purpose they were built for.
struct BuiltSession {
    role: Option<Arc<str>>,
    purpose: Option<Arc<str>>,
    json: Arc<SessionJson>,
}

/// A report's members, with the reports it belongs to kept alive so that its address is
/// never reused for another report while the entry exists.
struct BuiltReport {
    _reports: Arc<[StatementReport]>,
    json: Arc<StatementJson>,
}

/// One session's serialized members.
#[derive(Default)]
pub(crate) struct AuditJson {
    session: Option<BuiltSession>,
    /// By address of the report.
    reports: PtrMap<BuiltReport>,
}

impl AuditJson {
    /// The identity members, rebuilt when the role or purpose is not the one they were
    /// built for.
    pub fn session(&mut self, ids: &SessionIds<'_>) -> Arc<SessionJson> {
        if let Some(b) = &self.session {
            if b.role.as_ref() == ids.role && b.purpose.as_ref() == ids.purpose {
                return b.json.clone();
            }
        }
        let json = Arc::new(SessionJson::new(&SessionMembers {
            session: Some(ids.session),
            user: Some(ids.user),
            role: ids.role.map(|r| &**r),
            client: ids.client,
            application: ids.application,
            database: Some(ids.database),
            purpose: ids.purpose.map(|p| &**p),
        }));
        self.session = Some(BuiltSession {
            role: ids.role.cloned(),
            purpose: ids.purpose.cloned(),
            json: json.clone(),
        });
        json
    }

    /// The members of report `index` of `outcome`.
    pub fn statement(
        &mut self,
        auditor: &Auditor,
        outcome: &Outcome,
        index: usize,
    ) -> Arc<StatementJson> {
        let report = &outcome.statements[index];
        let addr = std::ptr::from_ref(report) as usize;
        if let Some(b) = self.reports.get(&addr) {
            return b.json.clone();
        }
        let json = Arc::new(auditor.statement_json(&StatementMembers {
            query: Some(&report.normalized),
            fingerprint: Some(&report.fingerprint),
            tables: &report.relations,
            masked: &report.columns_masked,
            raw: &report.columns_raw,
            denied: &report.columns_denied,
            classes: &report.classes,
        }));
        if self.reports.len() >= MAX_REPORTS {
            self.reports.clear();
        }
        self.reports.insert(
            addr,
            BuiltReport {
                _reports: outcome.statements.clone(),
                json: json.clone(),
            },
        );
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgveil_policy::decide::Verdict;

    fn outcome(sql: &str) -> Outcome {
        let sample = pgveil_policy::testing::Sample::default();
        let facts = sample.facts("support_app", Some("customer_service"));
        pgveil_policy::decide::decide(&sample.policy, &facts, &sample.catalog, &sample.key, sql)
    }

    #[test]
    fn reports_are_serialized_once_and_by_identity() {
        let auditor = Auditor::disabled();
        let mut json = AuditJson::default();
        let a = outcome("SELECT phone FROM customers WHERE id = 1");
        let first = json.statement(&auditor, &a, 0);
        assert!(Arc::ptr_eq(&first, &json.statement(&auditor, &a, 0)));
        // Another outcome sharing the reports (a template instance) shares the members.
        let shared = Outcome {
            verdict: Verdict::Allow,
            statements: a.statements.clone(),
            row_masks: None,
        };
        assert!(Arc::ptr_eq(&first, &json.statement(&auditor, &shared, 0)));
        // An equal report elsewhere is serialized on its own, to the same bytes.
        let b = outcome("SELECT phone FROM customers WHERE id = 1");
        let other = json.statement(&auditor, &b, 0);
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(first, other);
    }

    #[test]
    fn session_members_follow_role_and_purpose() {
        let mut json = AuditJson::default();
        let role: Arc<str> = "support".into();
        let purpose: Arc<str> = "customer_service".into();
        let mut ids = SessionIds {
            session: "7f3a",
            user: "support_app",
            role: Some(&role),
            client: None,
            application: Some("app"),
            database: "shop",
            purpose: None,
        };
        let first = json.session(&ids);
        assert!(Arc::ptr_eq(&first, &json.session(&ids)));
        ids.purpose = Some(&purpose);
        let second = json.session(&ids);
        assert_ne!(first, second);
        assert_eq!(
            *second,
            SessionJson::new(&SessionMembers {
                session: Some("7f3a"),
                user: Some("support_app"),
                role: Some("support"),
                client: None,
                application: Some("app"),
                database: Some("shop"),
                purpose: Some("customer_service"),
            })
        );
    }

    #[test]
    fn stays_bounded() {
        let auditor = Auditor::disabled();
        let mut json = AuditJson::default();
        let outcomes: Vec<Outcome> = (0..MAX_REPORTS + 10)
            .map(|i| outcome(&format!("SELECT name FROM customers WHERE id = {i}")))
            .collect();
        for o in &outcomes {
            json.statement(&auditor, o, 0);
        }
        assert!(json.reports.len() <= MAX_REPORTS);
    }
}
