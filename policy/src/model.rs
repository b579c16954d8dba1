//! The validated policy: what `load` produces and what `decide` consumes.
//!
//! Every value here has passed validation (classes exist, globs compile, masks have
//! their parameters), so the hot path never re-checks them.

use std::collections::BTreeMap;
use std::fmt;

/// A compiled, validated policy. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Policy format version (`version = 1`).
    pub version: u32,
    /// What happens to users that match no role.
    pub unknown_users: UnknownUsers,
    /// Classes of personal data by name.
    pub classes: BTreeMap<String, Class>,
    /// Column tags in file order; the first matching tag wins.
    pub columns: Vec<ColumnTag>,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
    /// SHA-256 (hex) of the policy source text, for `policy_info` and audit.
    pub sha256: String,
}

/// `[defaults] unknown_users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownUsers {
    /// Refuse the session (SQLSTATE 28000).
    Deny,
    /// Treat the user as this role.
    Role(String),
}

/// A class of personal data (`[classes.<name>]`).
#[derive(Debug, Clone)]
pub struct Class {
    pub name: String,
    pub label: Option<String>,
    /// 1 public … 4 highly sensitive.
    pub level: u8,
    /// The class's default mask, used where a role says `masked`.
    pub mask: Mask,
}

/// How a value is de-identified. Rendered to SQL by `mask::render`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// Keep the first/last characters, replace the middle with `fill`.
    Partial {
        keep_first: u32,
        keep_last: u32,
        fill: String,
    },
    /// `a***@example.com`.
    Email,
    /// Keyed SHA-256 hex (the key comes from the proxy config).
    Hash,
    /// Replace with a constant text.
    Redact { with: String },
    /// NULL of the column's type.
    Null,
    /// `date_trunc` to year, month or day, keeping the type.
    TruncateDate { to: DatePart },
    /// `round(col, digits)`, keeping a numeric type.
    Round { digits: i32 },
    /// A validated SQL expression template; `{col}` stands for the column.
    Sql { template: String },
}

/// Precision of `truncate_date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePart {
    Year,
    Month,
    Day,
}

/// What a role sees of a class (`see = { … }`), or of untagged columns (`unclassified`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    Raw,
    /// The class's default mask.
    Masked,
    /// Reading the column refuses the statement (42501).
    Deny,
    /// A role-specific mask instead of the class default.
    Custom(Mask),
}

/// One `[columns]` entry: `schema.table.column` glob → class.
#[derive(Debug, Clone)]
pub struct ColumnTag {
    /// The pattern as written, for messages.
    pub pattern: String,
    pub schema: NamePattern,
    pub table: NamePattern,
    pub column: NamePattern,
    /// Name of the class (exists in `Policy::classes`).
    pub class: String,
}

/// A case-sensitive name pattern where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    pub text: String,
    /// Whether `text` has a `*` (else the pattern is the name itself); found once here
    /// rather than on every match.
    glob: bool,
}

impl NamePattern {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let glob = text.contains('*');
        NamePattern { text, glob }
    }

    /// Glob match with `*` as the only wildcard; case-sensitive like the catalog.
    pub fn matches(&self, name: &str) -> bool {
        if !self.glob {
            return self.text == name;
        }
        glob_match(self.text.as_bytes(), name.as_bytes())
    }
}

fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// Statement kinds that roles grant (`statements = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Truncate,
    CopyTo,
    CopyFrom,
    Ddl,
    Dcl,
    Call,
    Explain,
    Lock,
    Maintenance,
    /// BEGIN/COMMIT/SET/SHOW/LISTEN/PREPARE/DECLARE…: needs no grant (what they wrap is checked).
    Session,
    /// Could not be classified (unparsable): refused for restricted roles.
    Unknown,
}

impl StatementKind {
    /// Kinds a policy may name in `statements`, with their spelling.
    pub const GRANTABLE: &'static [(&'static str, StatementKind)] = &[
        ("select", StatementKind::Select),
        ("insert", StatementKind::Insert),
        ("update", StatementKind::Update),
        ("delete", StatementKind::Delete),
        ("merge", StatementKind::Merge),
        ("truncate", StatementKind::Truncate),
        ("copy_to", StatementKind::CopyTo),
        ("copy_from", StatementKind::CopyFrom),
        ("ddl", StatementKind::Ddl),
        ("dcl", StatementKind::Dcl),
        ("call", StatementKind::Call),
        ("explain", StatementKind::Explain),
        ("lock", StatementKind::Lock),
        ("maintenance", StatementKind::Maintenance),
    ];

    /// The bounded label used in audit events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::Truncate => "truncate",
            StatementKind::CopyTo => "copy_to",
            StatementKind::CopyFrom => "copy_from",
            StatementKind::Ddl => "ddl",
            StatementKind::Dcl => "dcl",
            StatementKind::Call => "call",
            StatementKind::Explain => "explain",
            StatementKind::Lock => "lock",
            StatementKind::Maintenance => "maintenance",
            StatementKind::Session => "session",
            StatementKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `schema.table` glob of a role's `tables` list (`*` = every relation).
#[derive(Debug, Clone)]
pub struct TablePattern {
    pub pattern: String,
    pub schema: NamePattern,
    pub table: NamePattern,
}

/// A role (`[roles.<name>]`).
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    /// Authenticated database users (globs, `*` wildcard).
    pub users: Vec<NamePattern>,
    /// Granted statement kinds; `all` expands to every grantable kind.
    pub statements: Vec<StatementKind>,
    /// True when the policy said `statements = ["all"]`.
    pub all_statements: bool,
    /// Relations the role may touch.
    pub tables: Vec<TablePattern>,
    /// What the role sees of classes not listed in `see_classes`.
    pub see_default: Visibility,
    /// Per-class visibility overrides.
    pub see_classes: BTreeMap<String, Visibility>,
    /// What the role sees of untagged columns (default `Raw`).
    pub unclassified: Visibility,
    /// Per-statement row limit.
    pub max_rows: Option<u64>,
    /// Purposes this role serves; empty = no purpose needed.
    pub purposes: Vec<String>,
    /// Non-built-in functions the role may call (`schema.name` globs).
    pub functions: Vec<NamePattern>,
}

impl Role {
    /// Does this role's `users` list match the authenticated user?
    pub fn matches_user(&self, user: &str) -> bool {
        self.users.iter().any(|u| u.matches(user))
    }

    /// What the role sees of `class`.
    pub fn visibility(&self, class: &str) -> &Visibility {
        self.see_classes.get(class).unwrap_or(&self.see_default)
    }

    /// May the role run statements of `kind`? Session statements need no grant.
    pub fn may_run(&self, kind: StatementKind) -> bool {
        kind == StatementKind::Session || self.all_statements || self.statements.contains(&kind)
    }

    /// May the role touch `schema.table`?
    pub fn may_touch(&self, schema: &str, table: &str) -> bool {
        self.tables
            .iter()
            .any(|t| t.schema.matches(schema) && t.table.matches(table))
    }

    /// A role is restricted unless it runs everything, on every table, seeing every class raw.
    pub fn is_restricted(&self, policy: &Policy) -> bool {
        let all_tables = self
            .tables
            .iter()
            .any(|t| t.schema.text == "*" && t.table.text == "*");
        let all_raw = policy
            .classes
            .keys()
            .all(|c| *self.visibility(c) == Visibility::Raw)
            && self.unclassified == Visibility::Raw;
        !(self.all_statements && all_tables && all_raw)
    }
}

impl Policy {
    /// The role for an authenticated user: the unique role whose `users` match, else the
    /// `unknown_users` default. `None` means the session must be refused.
    pub fn role_for_user(&self, user: &str) -> Option<&Role> {
        if let Some(role) = self.roles.values().find(|r| r.matches_user(user)) {
            return Some(role);
        }
        match &self.unknown_users {
            UnknownUsers::Deny => None,
            UnknownUsers::Role(name) => self.roles.get(name),
        }
    }

    /// A one-line description for `pgveil check`, logs and `/readyz`, e.g.
    /// `policy ok: 3 roles (analyst, dba, support), 5 classes, 3 column tags, sha256 1a2b3c4d…`.
    pub fn summary(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let roles = self.roles.keys().cloned().collect::<Vec<_>>().join(", ");
        let roles = if roles.is_empty() {
            plural(0, "role", "roles")
        } else {
            format!("{} ({roles})", plural(self.roles.len(), "role", "roles"))
        };
        let sha: String = self.sha256.chars().take(8).collect();
        format!(
            "policy ok: {roles}, {}, {}, sha256 {sha}…",
            plural(self.classes.len(), "class", "classes"),
            plural(self.columns.len(), "column tag", "column tags"),
        )
    }

    /// The class tagged on `schema.table.column`, if any (first matching tag wins).
    pub fn class_of(&self, schema: &str, table: &str, column: &str) -> Option<&Class> {
        self.columns
            .iter()
            .find(|t| {
                t.schema.matches(schema) && t.table.matches(table) && t.column.matches(column)
            })
            .and_then(|t| self.classes.get(&t.class))
    }

    /// The tags that can apply to columns of `schema.table`, for classifying all of its
    /// columns without matching the schema and table patterns again for each one.
    pub fn table_tags(&self, schema: &str, table: &str) -> TableTags<'_> {
        TableTags {
            policy: self,
            tags: self
                .columns
                .iter()
                .filter(|t| t.schema.matches(schema) && t.table.matches(table))
                .collect(),
        }
    }
}

/// The column tags of one relation, in file order (see [`Policy::table_tags`]).
#[derive(Debug)]
pub struct TableTags<'p> {
    policy: &'p Policy,
    tags: Vec<&'p ColumnTag>,
}

impl<'p> TableTags<'p> {
    /// The class tagged on `column` of the relation: the same answer as
    /// [`Policy::class_of`] (first matching tag wins).
    pub fn class_of(&self, column: &str) -> Option<&'p Class> {
        self.tags
            .iter()
            .find(|t| t.column.matches(column))
            .and_then(|t| self.policy.classes.get(&t.class))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(NamePattern::new("*").matches(""));
        assert!(NamePattern::new("cs_*").matches("cs_alice"));
        assert!(!NamePattern::new("cs_*").matches("CS_alice"));
        assert!(NamePattern::new("*card*").matches("bank_card_no"));
        assert!(!NamePattern::new("a*b").matches("acbx"));
        assert!(NamePattern::new("a*b*c").matches("aXbYbc"));
        assert!(NamePattern::new("abc").matches("abc"));
        assert!(!NamePattern::new("abc").matches("abcd"));
        assert!(!NamePattern::new("abc").matches("ABC"));
        assert!(NamePattern::new("").matches(""));
        assert!(!NamePattern::new("").matches("a"));
    }

    #[test]
    fn table_tags_agree_with_class_of() {
        let tag = |p: &str, class: &str| {
            let mut it = p.splitn(3, '.');
            let mut next = || NamePattern::new(it.next().unwrap_or("*"));
            ColumnTag {
                pattern: p.into(),
                schema: next(),
                table: next(),
                column: next(),
                class: class.into(),
            }
        };
        let class = |name: &str| Class {
            name: name.into(),
            label: None,
            level: 1,
            mask: Mask::Null,
        };
        let policy = Policy {
            version: 1,
            unknown_users: UnknownUsers::Deny,
            classes: ["a", "b", "c"]
                .iter()
                .map(|n| (n.to_string(), class(n)))
                .collect(),
            columns: vec![
                tag("public.t.x", "a"),
                tag("public.*.x*", "b"),
                tag("*.t*.*", "c"),
                tag("other.t.y", "a"),
            ],
            roles: BTreeMap::new(),
            sha256: String::new(),
        };
        for schema in ["public", "other", "x"] {
            for table in ["t", "tt", "u"] {
                let tags = policy.table_tags(schema, table);
                for column in ["x", "xy", "y", "z", ""] {
                    assert_eq!(
                        tags.class_of(column).map(|c| &c.name),
                        policy.class_of(schema, table, column).map(|c| &c.name),
                        "{schema}.{table}.{column}"
                    );
                }
            }
        }
    }
}
