//! `[roles.<name>]` → [`Role`], and the check that no user can match two roles.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::ctx::{join, Ctx};
use super::masks::{self, MASK_TABLE};
use super::names;
use super::suggest;
use super::value::{array, check_keys, integer, mismatch, required, string, table, Item};
use crate::model::{NamePattern, Role, StatementKind, TablePattern, Visibility};

/// Keys a role table may hold.
const ROLE_KEYS: &[&str] = &[
    "users",
    "statements",
    "tables",
    "see",
    "unclassified",
    "max_rows",
    "purposes",
    "functions",
];

/// One `users` entry with where it was written, for the ambiguity check.
pub(super) struct UserGlob {
    pub(super) role: String,
    pub(super) glob: String,
    pub(super) span: Range<usize>,
}

/// Parses one role; its user globs are appended to `users` even when other keys are bad,
/// so ambiguity is reported in the same run.
pub(super) fn parse(
    cx: &mut Ctx<'_>,
    name: &str,
    item: &Item<'_>,
    classes: &BTreeSet<String>,
    users: &mut Vec<UserGlob>,
) -> Option<Role> {
    let path = join("roles", name);
    let t = table(
        cx,
        item,
        &path,
        "a role table with users, statements, tables and see",
    )?;
    let span = item.span();
    let before = cx.diags.error_count();
    check_keys(cx, t, &path, "a role", ROLE_KEYS);

    let user_patterns = parse_users(cx, t, &span, &path, name, users);
    let statements = parse_statements(cx, t, &span, &path);
    let tables = parse_tables(cx, t, &span, &path);
    let (see_default, see_classes) = match t.get("see") {
        Some(see) => parse_see(cx, see, &join(&path, "see"), classes),
        None => Some((Visibility::Masked, BTreeMap::new())),
    }
    .unzip();
    let unclassified = match t.get("unclassified") {
        Some(v) => parse_visibility(cx, v, &join(&path, "unclassified"), false),
        None => Some(Visibility::Raw),
    };
    let max_rows = t
        .get("max_rows")
        .map(|v| parse_max_rows(cx, v, &join(&path, "max_rows")));
    let purposes = match t.get("purposes") {
        Some(v) => parse_purposes(cx, v, &join(&path, "purposes")),
        None => Some(Vec::new()),
    };
    let functions = match t.get("functions") {
        Some(v) => parse_functions(cx, v, &join(&path, "functions")),
        None => Some(Vec::new()),
    };

    let (statements, all_statements) = statements?;
    let role = Role {
        name: name.to_string(),
        users: user_patterns?,
        statements,
        all_statements,
        tables: tables?,
        see_default: see_default?,
        see_classes: see_classes?,
        unclassified: unclassified?,
        max_rows: max_rows.map_or(Some(None), |m| m.map(Some))?,
        purposes: purposes?,
        functions: functions?,
    };
    (cx.diags.error_count() == before).then_some(role)
}

/// A list of strings, each checked by `each`; reports the list and every bad element.
fn string_list<T>(
    cx: &mut Ctx<'_>,
    item: &Item<'_>,
    path: &str,
    expected: &str,
    mut each: impl FnMut(&mut Ctx<'_>, &str, &Range<usize>, &str) -> Option<T>,
) -> Option<Vec<T>> {
    let items = array(cx, item, path, &format!("a list of {expected}"))?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for element in items {
        // The key path names the list; line:column pins the element.
        let parsed =
            string(cx, element, path, expected).and_then(|s| each(cx, s, &element.span(), path));
        match parsed {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn parse_users(
    cx: &mut Ctx<'_>,
    t: &DeTable<'_>,
    span: &Range<usize>,
    path: &str,
    role: &str,
    users: &mut Vec<UserGlob>,
) -> Option<Vec<NamePattern>> {
    let how = "list the database users of this role, e.g. users = [\"support_app\", \"cs_*\"]";
    let item = required(cx, t, span, path, "users", how)?;
    let path = join(path, "users");
    let list = string_list(
        cx,
        item,
        &path,
        "user names (globs)",
        |cx, user, span, p| {
            if user.is_empty() {
                cx.error(span, p, "a user name must not be empty");
                return None;
            }
            users.push(UserGlob {
                role: role.to_string(),
                glob: user.to_string(),
                span: span.clone(),
            });
            Some(NamePattern::new(user))
        },
    )?;
    if list.is_empty() {
        cx.error(
            &item.span(),
            &path,
            format!("users must not be empty; {how}"),
        );
        return None;
    }
    Some(list)
}

fn parse_statements(
    cx: &mut Ctx<'_>,
    t: &DeTable<'_>,
    span: &Range<usize>,
    path: &str,
) -> Option<(Vec<StatementKind>, bool)> {
    let names = || {
        StatementKind::GRANTABLE
            .iter()
            .map(|(n, _)| *n)
            .chain(std::iter::once("all"))
    };
    let expected = format!(
        "one of {} or \"all\"",
        StatementKind::GRANTABLE
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let how = format!("list the statement kinds this role may run: {expected}");
    let item = required(cx, t, span, path, "statements", &how)?;
    let path = join(path, "statements");
    let kinds = string_list(cx, item, &path, "statement kinds", |cx, kind, span, p| {
        if kind == "all" {
            return Some(None);
        }
        match StatementKind::GRANTABLE.iter().find(|(n, _)| *n == kind) {
            Some((_, k)) => Some(Some(*k)),
            None => {
                let hint = suggest::hint(kind, names());
                cx.error(
                    span,
                    p,
                    format!("unknown statement kind \"{kind}\"; expected {expected}{hint}"),
                );
                None
            }
        }
    })?;
    if kinds.is_empty() {
        cx.error(
            &item.span(),
            &path,
            format!("statements must not be empty; {how} (to lock users out, give them no role)"),
        );
        return None;
    }
    if kinds.contains(&None) {
        let all = StatementKind::GRANTABLE.iter().map(|(_, k)| *k).collect();
        return Some((all, true));
    }
    let mut out: Vec<StatementKind> = Vec::new();
    for kind in kinds.into_iter().flatten() {
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Some((out, false))
}

fn parse_tables(
    cx: &mut Ctx<'_>,
    t: &DeTable<'_>,
    span: &Range<usize>,
    path: &str,
) -> Option<Vec<TablePattern>> {
    let how = "list the relations this role may touch as schema.table globs, e.g. \
               tables = [\"public.customers\", \"reporting.*\"], or [\"*\"] for all";
    let item = required(cx, t, span, path, "tables", how)?;
    let path = join(path, "tables");
    let list = string_list(
        cx,
        item,
        &path,
        "schema.table globs",
        |cx, text, span, p| match names::qualified_pattern(text, "table") {
            Ok([schema, table]) => Some(TablePattern {
                pattern: text.to_string(),
                schema,
                table,
            }),
            Err(message) => {
                cx.error(span, p, message);
                None
            }
        },
    )?;
    if list.is_empty() {
        cx.error(
            &item.span(),
            &path,
            format!("tables must not be empty; {how}"),
        );
        return None;
    }
    Some(list)
}

/// `see = { default = …, <class> = … }` → (default, per-class overrides).
fn parse_see(
    cx: &mut Ctx<'_>,
    item: &Item<'_>,
    path: &str,
    classes: &BTreeSet<String>,
) -> Option<(Visibility, BTreeMap<String, Visibility>)> {
    let t = table(
        cx,
        item,
        path,
        "a table like { default = \"masked\", bank_card = \"deny\" }",
    )?;
    let mut default = Some(Visibility::Masked);
    let mut per_class = Some(BTreeMap::new());
    for (key, value) in t.iter() {
        let class: &str = key.get_ref();
        let value_path = join(path, class);
        if class != "default" && !classes.contains(class) {
            let defined = if classes.is_empty() {
                "none are defined".to_string()
            } else {
                classes.iter().cloned().collect::<Vec<_>>().join(", ")
            };
            let hint = suggest::hint(class, classes.iter().map(String::as_str).chain(["default"]));
            cx.error(
                &key.span(),
                &value_path,
                format!(
                    "unknown class \"{class}\"; keys of see are \"default\" and classes from \
                     [classes] ({defined}){hint}"
                ),
            );
            per_class = None;
            continue;
        }
        let visibility = parse_visibility(cx, value, &value_path, true);
        match (class, visibility) {
            ("default", v) => default = v,
            (_, Some(v)) => {
                if let Some(map) = per_class.as_mut() {
                    map.insert(class.to_string(), v);
                }
            }
            (_, None) => per_class = None,
        }
    }
    Some((default?, per_class?))
}

/// `"raw" | "masked" | "deny" | { fn = … }`; `masked` only where a class mask exists.
fn parse_visibility(
    cx: &mut Ctx<'_>,
    item: &Item<'_>,
    path: &str,
    masked_allowed: bool,
) -> Option<Visibility> {
    let choices = if masked_allowed {
        format!("\"raw\", \"masked\", \"deny\" or {MASK_TABLE}")
    } else {
        format!("\"raw\", \"deny\" or {MASK_TABLE}")
    };
    match item.get_ref() {
        DeValue::Table(_) => masks::parse(cx, item, path).map(Visibility::Custom),
        DeValue::String(s) => match s.as_ref() {
            "raw" => Some(Visibility::Raw),
            "deny" => Some(Visibility::Deny),
            "masked" if masked_allowed => Some(Visibility::Masked),
            "masked" => {
                cx.error(
                    &item.span(),
                    path,
                    format!(
                        "\"masked\" is not allowed here: untagged columns have no class mask; \
                         expected {choices}"
                    ),
                );
                None
            }
            other => {
                let words: &[&str] = if masked_allowed {
                    &["raw", "masked", "deny"]
                } else {
                    &["raw", "deny"]
                };
                let hint = suggest::hint(other, words.iter().copied());
                cx.error(
                    &item.span(),
                    path,
                    format!("unknown visibility \"{other}\"; expected {choices}{hint}"),
                );
                None
            }
        },
        _ => {
            mismatch(cx, item, path, &choices);
            None
        }
    }
}

fn parse_max_rows(cx: &mut Ctx<'_>, item: &Item<'_>, path: &str) -> Option<u64> {
    let expected = "a positive number of rows (leave max_rows out for no limit)";
    let n = integer(cx, item, path, expected)?;
    match u64::try_from(n) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            cx.error(
                &item.span(),
                path,
                format!("max_rows = {n} is not allowed; expected {expected}"),
            );
            None
        }
    }
}

fn parse_purposes(cx: &mut Ctx<'_>, item: &Item<'_>, path: &str) -> Option<Vec<String>> {
    string_list(cx, item, path, "purpose names", |cx, purpose, span, p| {
        if purpose.trim().is_empty() {
            cx.error(
                span,
                p,
                "a purpose must not be empty; sessions declare it with SET pgveil.purpose = '…'",
            );
            return None;
        }
        Some(purpose.to_string())
    })
}

fn parse_functions(cx: &mut Ctx<'_>, item: &Item<'_>, path: &str) -> Option<Vec<NamePattern>> {
    string_list(
        cx,
        item,
        path,
        "schema.function globs",
        |cx, text, span, p| match names::qualified_pattern(text, "function") {
            Ok([schema, name]) => Some(NamePattern::new(format!("{}.{}", schema.text, name.text))),
            Err(message) => {
                cx.error(span, p, message);
                None
            }
        },
    )
}

/// Reports every pair of user globs from different roles that some user name matches:
/// such a user's role would depend on the order of roles, so the policy is rejected.
pub(super) fn check_ambiguous_users(cx: &mut Ctx<'_>, users: &[UserGlob]) {
    for (i, later) in users.iter().enumerate() {
        for earlier in &users[..i] {
            if earlier.role == later.role {
                continue;
            }
            let Some(witness) = names::overlap(&earlier.glob, &later.glob) else {
                continue;
            };
            let (line, column) = cx.source.position(earlier.span.start);
            let what = if earlier.glob == later.glob {
                format!(
                    "user \"{}\" is listed by role \"{}\" (line {line}, column {column}) and \
                     role \"{}\"",
                    later.glob, earlier.role, later.role
                )
            } else {
                format!(
                    "user \"{}\" of role \"{}\" and user \"{}\" of role \"{}\" (line {line}, \
                     column {column}) both match \"{witness}\"",
                    later.glob, later.role, earlier.glob, earlier.role
                )
            };
            let path = join(&join("roles", &later.role), "users");
            let catch_all = if earlier.glob == "*" || later.glob == "*" {
                " (for a catch-all role, use [defaults] unknown_users instead of \"*\")"
            } else {
                ""
            };
            cx.error(
                &later.span,
                &path,
                format!(
                    "{what}; every user must match exactly one role, so make the globs \
                     disjoint{catch_all}"
                ),
            );
        }
    }
}
