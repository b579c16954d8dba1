//! Policy TOML → validated [`Policy`], with every problem reported at once.
//!
//! The text is parsed into spanned TOML values (`toml::de::DeTable`), then each section
//! is validated into the model, recording a diagnostic with file:line:column, key path and
//! a how-to-fix message for every problem instead of stopping at the first. The proxy
//! calls [`load`] at start and on reload (keeping the running policy when it fails) and
//! [`unmatched_tags`] whenever its catalog snapshot changes.

mod ctx;
mod masks;
mod names;
mod roles;
mod sqlexpr;
mod suggest;
mod value;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use sha2::{Digest, Sha256};
use toml::de::DeTable;

use self::ctx::{join, Ctx};
use self::value::{check_keys, integer, required, string, table, Item};
use crate::error::Diagnostics;
use crate::model::{Class, ColumnTag, Policy, Role, UnknownUsers};

/// A successfully loaded policy and the warnings found while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated policy.
    pub policy: Policy,
    /// Things that are allowed but probably unintended (e.g. a class no column uses).
    pub warnings: Diagnostics,
}

/// Top-level keys of a policy file.
const TOP_KEYS: &[&str] = &["version", "defaults", "classes", "columns", "roles"];

/// The only policy format version this build reads.
const VERSION: u32 = 1;

/// Parses and validates a policy.
///
/// `file_name` only labels diagnostics. On failure the error holds every error found (and
/// any warnings found along the way), sorted by position; on success [`Loaded::warnings`]
/// holds the warnings.
pub fn load(file_name: &str, text: &str) -> Result<Loaded, Diagnostics> {
    let mut cx = Ctx::new(file_name, text);
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for e in syntax_errors {
            let span = e.span().unwrap_or(0..0);
            cx.error(&span, "", format!("invalid TOML: {}", e.message()));
        }
        return Err(sorted(cx.diags));
    }
    let doc = doc.get_ref();
    check_keys(&mut cx, doc, "", "the policy file", TOP_KEYS);

    check_version(&mut cx, doc);
    let classes = match doc.get("classes") {
        Some(item) => parse_classes(&mut cx, item),
        None => BTreeMap::new(),
    };
    // Classes with errors still count as declared, so references to them do not cascade.
    let declared: BTreeSet<String> = classes.keys().cloned().collect();
    let class_spans: BTreeMap<String, Range<usize>> = classes
        .iter()
        .map(|(name, (_, span))| (name.clone(), span.clone()))
        .collect();
    let classes: BTreeMap<String, Class> = classes
        .into_iter()
        .filter_map(|(n, (c, _))| Some((n, c?)))
        .collect();
    let columns = match doc.get("columns") {
        Some(item) => parse_columns(&mut cx, item, &declared),
        None => Vec::new(),
    };
    let (roles, declared_roles) = parse_roles(&mut cx, doc.get("roles"), &declared);
    let unknown_users = parse_defaults(&mut cx, doc.get("defaults"), &declared_roles);

    if cx.has_errors() {
        return Err(sorted(cx.diags));
    }
    let policy = Policy {
        version: VERSION,
        unknown_users,
        classes,
        columns: columns.into_iter().map(|(tag, _)| tag).collect(),
        roles,
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
    };
    warn_unused_classes(&mut cx, &policy, &class_spans);
    warn_open_defaults(&mut cx, &policy, doc);
    Ok(Loaded {
        policy,
        warnings: sorted(cx.diags),
    })
}

/// Patterns of `[columns]` tags that match no column of a catalog snapshot, in file order.
///
/// `columns` yields `(schema, table, column)` for every column the catalog knows. A tag
/// that matches nothing is usually a typo or a renamed column, which silently unprotects
/// data, so the proxy reports these at load and after every catalog refresh.
pub fn unmatched_tags<'a>(
    policy: &Policy,
    columns: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Vec<String> {
    let mut matched = vec![false; policy.columns.len()];
    let mut left = matched.len();
    for (schema, table, column) in columns {
        if left == 0 {
            break;
        }
        for (tag, seen) in policy.columns.iter().zip(matched.iter_mut()) {
            if !*seen
                && tag.schema.matches(schema)
                && tag.table.matches(table)
                && tag.column.matches(column)
            {
                *seen = true;
                left -= 1;
            }
        }
    }
    policy
        .columns
        .iter()
        .zip(matched)
        .filter(|(_, seen)| !seen)
        .map(|(tag, _)| tag.pattern.clone())
        .collect()
}

fn sorted(mut diags: Diagnostics) -> Diagnostics {
    diags.sort();
    diags
}

/// `version = 1` must be present and say 1.
fn check_version(cx: &mut Ctx<'_>, doc: &DeTable<'_>) {
    let how = "add `version = 1` at the top of the file";
    let Some(item) = required(cx, doc, &(0..0), "", "version", how) else {
        return;
    };
    match integer(cx, item, "version", "version = 1") {
        Some(v) if v == i64::from(VERSION) => {}
        None => {}
        Some(other) => cx.error(
            &item.span(),
            "version",
            format!("unsupported policy version {other}; this pgveil reads version = {VERSION}"),
        ),
    }
}

/// Class and role names become metric labels and `see` keys: keep them plain.
fn check_name(cx: &mut Ctx<'_>, span: &Range<usize>, path: &str, what: &str, name: &str) -> bool {
    let plain = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !plain {
        cx.error(
            span,
            path,
            format!(
                "invalid {what} name \"{name}\"; use 1 to 63 ASCII letters, digits, '_' or '-'"
            ),
        );
    }
    plain
}

/// `[classes.<name>]` → every declared class (`None` where it has errors) with the span
/// of its name.
fn parse_classes(
    cx: &mut Ctx<'_>,
    item: &Item<'_>,
) -> BTreeMap<String, (Option<Class>, Range<usize>)> {
    let mut out = BTreeMap::new();
    let Some(t) = table(cx, item, "classes", "a table of classes ([classes.<name>])") else {
        return out;
    };
    for (key, item) in t.iter() {
        let name: &str = key.get_ref();
        let path = join("classes", name);
        let class = if !check_name(cx, &key.span(), &path, "class", name) {
            None
        } else if name == "default" {
            cx.error(
                &key.span(),
                &path,
                "\"default\" cannot be a class name: it is the fallback key of a role's see table; \
                 rename the class",
            );
            None
        } else {
            parse_class(cx, name, item, &path)
        };
        out.insert(name.to_string(), (class, key.span()));
    }
    out
}

fn parse_class(cx: &mut Ctx<'_>, name: &str, item: &Item<'_>, path: &str) -> Option<Class> {
    let t = table(cx, item, path, "a class table with level and mask")?;
    check_keys(cx, t, path, "a class", &["label", "level", "mask"]);
    let span = item.span();
    let label = match t.get("label") {
        None => Some(None),
        Some(v) => string(cx, v, &join(path, "label"), "a string describing the class")
            .map(|s| Some(s.to_string())),
    };
    let level = required(
        cx,
        t,
        &span,
        path,
        "level",
        "set level = 1 (public) … 4 (highly sensitive)",
    )
    .and_then(|v| {
        let level_path = join(path, "level");
        let expected = "an integer from 1 (public) to 4 (highly sensitive)";
        let n = integer(cx, v, &level_path, expected)?;
        match u8::try_from(n) {
            Ok(l @ 1..=4) => Some(l),
            _ => {
                cx.error(
                    &v.span(),
                    &level_path,
                    format!("level {n} is out of range; expected {expected}"),
                );
                None
            }
        }
    });
    let mask = required(
        cx,
        t,
        &span,
        path,
        "mask",
        "set the class's default mask, e.g. mask = { fn = \"partial\", keep_last = 4 }",
    )
    .and_then(|v| masks::parse(cx, v, &join(path, "mask")));
    Some(Class {
        name: name.to_string(),
        label: label?,
        level: level?,
        mask: mask?,
    })
}

/// `[columns]` → tags in file order, each with the span of its key.
fn parse_columns(
    cx: &mut Ctx<'_>,
    item: &Item<'_>,
    classes: &BTreeSet<String>,
) -> Vec<(ColumnTag, Range<usize>)> {
    let mut out = Vec::new();
    let Some(t) = table(
        cx,
        item,
        "columns",
        "a table of \"schema.table.column\" = \"class\" entries",
    ) else {
        return out;
    };
    let mut entries: Vec<_> = t.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for (key, value) in entries {
        let pattern: &str = key.get_ref();
        let path = join("columns", pattern);
        let parts = match value.get_ref() {
            toml::de::DeValue::Table(_) => {
                cx.error(
                    &key.span(),
                    &path,
                    format!(
                        "a column tag key is one quoted string; write \"{pattern}.<table>.<column>\" \
                         = \"<class>\" (a bare dotted key makes nested tables)"
                    ),
                );
                continue;
            }
            _ => names::column_pattern(pattern),
        };
        let parts = match parts {
            Ok(parts) => Some(parts),
            Err(message) => {
                cx.error(&key.span(), &path, message);
                None
            }
        };
        let class = string(cx, value, &path, "the name of a class from [classes]").and_then(|c| {
            if classes.contains(c) {
                return Some(c.to_string());
            }
            let hint = suggest::hint(c, classes.iter().map(String::as_str));
            let defined = if classes.is_empty() {
                "none are defined".to_string()
            } else {
                classes.iter().cloned().collect::<Vec<_>>().join(", ")
            };
            cx.error(
                &value.span(),
                &path,
                format!(
                    "unknown class \"{c}\"; define it under [classes] (defined: {defined}){hint}"
                ),
            );
            None
        });
        let (Some([schema, table, column]), Some(class)) = (parts, class) else {
            continue;
        };
        let tag = ColumnTag {
            pattern: pattern.to_string(),
            schema,
            table,
            column,
            class,
        };
        check_shadowed(cx, &out, &tag, &key.span(), &path);
        out.push((tag, key.span()));
    }
    out
}

/// A literal tag that an earlier tag already matches never applies (first match wins).
fn check_shadowed(
    cx: &mut Ctx<'_>,
    earlier: &[(ColumnTag, Range<usize>)],
    tag: &ColumnTag,
    span: &Range<usize>,
    path: &str,
) {
    let literal = |p: &crate::model::NamePattern| !p.text.contains('*');
    if !(literal(&tag.schema) && literal(&tag.table) && literal(&tag.column)) {
        return;
    }
    let hit = earlier.iter().find(|(e, _)| {
        e.schema.matches(&tag.schema.text)
            && e.table.matches(&tag.table.text)
            && e.column.matches(&tag.column.text)
    });
    if let Some((e, e_span)) = hit {
        let (line, column) = cx.source.position(e_span.start);
        let message = if e.class == tag.class {
            format!(
                "this tag repeats \"{}\" (line {line}, column {column}), which already tags the \
                 column as \"{}\"; remove one",
                e.pattern, e.class
            )
        } else {
            format!(
                "this tag never applies: \"{}\" (line {line}, column {column}) matches the same \
                 column first and tags it \"{}\"; the first matching tag wins, so move this \
                 line above it",
                e.pattern, e.class
            )
        };
        if e.class == tag.class {
            cx.warning(span, path, message);
        } else {
            cx.error(span, path, message);
        }
    }
}

/// `[roles.<name>]` → the valid roles, and the names of all declared roles (so a
/// reference to a role with errors does not cascade); also checks user ambiguity.
fn parse_roles(
    cx: &mut Ctx<'_>,
    item: Option<&Item<'_>>,
    classes: &BTreeSet<String>,
) -> (BTreeMap<String, Role>, BTreeSet<String>) {
    let mut out = BTreeMap::new();
    let Some(item) = item else {
        return (out, BTreeSet::new());
    };
    let Some(t) = table(cx, item, "roles", "a table of roles ([roles.<name>])") else {
        return (out, BTreeSet::new());
    };
    let declared = t.iter().map(|(k, _)| k.get_ref().to_string()).collect();
    let mut users = Vec::new();
    for (key, item) in t.iter() {
        let name: &str = key.get_ref();
        if !check_name(cx, &key.span(), &join("roles", name), "role", name) {
            continue;
        }
        if let Some(role) = roles::parse(cx, name, item, classes, &mut users) {
            out.insert(name.to_string(), role);
        }
    }
    users.sort_by_key(|u| u.span.start);
    roles::check_ambiguous_users(cx, &users);
    (out, declared)
}

/// `[defaults]` → what happens to users that match no role.
fn parse_defaults(
    cx: &mut Ctx<'_>,
    item: Option<&Item<'_>>,
    roles: &BTreeSet<String>,
) -> UnknownUsers {
    let Some(item) = item else {
        return UnknownUsers::Deny;
    };
    let Some(t) = table(cx, item, "defaults", "a table ([defaults])") else {
        return UnknownUsers::Deny;
    };
    check_keys(cx, t, "defaults", "[defaults]", &["unknown_users"]);
    let Some(v) = t.get("unknown_users") else {
        return UnknownUsers::Deny;
    };
    let path = "defaults.unknown_users";
    let Some(s) = string(cx, v, path, "\"deny\" or the name of a role") else {
        return UnknownUsers::Deny;
    };
    if s == "deny" {
        return UnknownUsers::Deny;
    }
    if !roles.contains(s) {
        let defined: Vec<&str> = roles.iter().map(String::as_str).collect();
        let hint = suggest::hint(s, defined.iter().copied().chain(["deny"]));
        cx.error(
            &v.span(),
            path,
            format!(
                "unknown role \"{s}\"; expected \"deny\" or one of the roles defined under \
                 [roles] ({}){hint}",
                if defined.is_empty() {
                    "none are defined".to_string()
                } else {
                    defined.join(", ")
                }
            ),
        );
    }
    UnknownUsers::Role(s.to_string())
}

fn warn_unused_classes(cx: &mut Ctx<'_>, policy: &Policy, spans: &BTreeMap<String, Range<usize>>) {
    let used: BTreeSet<&str> = policy.columns.iter().map(|t| t.class.as_str()).collect();
    for (name, span) in spans {
        if !used.contains(name.as_str()) {
            cx.warning(
                span,
                &join("classes", name),
                format!(
                    "class \"{name}\" is not used by any [columns] tag, so it protects nothing; \
                     tag columns with it or remove it"
                ),
            );
        }
    }
}

/// Warns where the policy leaves doors open that a DBA may not have meant to.
fn warn_open_defaults(cx: &mut Ctx<'_>, policy: &Policy, doc: &DeTable<'_>) {
    if policy.roles.is_empty() {
        let span = doc.get("roles").map_or(0..0, |r| r.span());
        cx.warning(
            &span,
            "roles",
            "no roles are defined, so every session is refused or falls back to unknown_users; \
             add [roles.<name>] tables",
        );
    }
    if let UnknownUsers::Role(name) = &policy.unknown_users {
        let unrestricted = policy
            .roles
            .get(name)
            .is_some_and(|r| !r.is_restricted(policy));
        if unrestricted {
            let span = doc
                .get("defaults")
                .and_then(|d| d.get_ref().get("unknown_users"))
                .map_or(0..0, |v| v.span());
            cx.warning(
                &span,
                "defaults.unknown_users",
                format!(
                    "every user that matches no role gets role \"{name}\", which is unrestricted \
                     (all statements, all tables, every class raw); prefer \"deny\" or a \
                     restricted role"
                ),
            );
        }
    }
}
