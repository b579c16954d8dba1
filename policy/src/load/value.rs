//! Typed access to spanned TOML values: each accessor reports a precise diagnostic (what
//! was expected, what was found, where) and returns `None`, so validation can go on and
//! collect every other problem.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::ctx::{join, Ctx};
use super::suggest;

/// A TOML value with its byte span.
pub(super) type Item<'i> = Spanned<DeValue<'i>>;

/// A short description of a value for "found …" messages.
pub(super) fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("string {s:?}"),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// Reports a type mismatch: `expected <expected>, found <what it is>`.
pub(super) fn mismatch(cx: &mut Ctx<'_>, item: &Item<'_>, path: &str, expected: &str) {
    cx.error(
        &item.span(),
        path,
        format!("expected {expected}, found {}", describe(item.get_ref())),
    );
}

/// The value as a string, or a diagnostic.
pub(super) fn string<'v>(
    cx: &mut Ctx<'_>,
    item: &'v Item<'_>,
    path: &str,
    expected: &str,
) -> Option<&'v str> {
    match item.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        _ => {
            mismatch(cx, item, path, expected);
            None
        }
    }
}

/// The value as an `i64`, or a diagnostic (floats and out-of-range integers included).
pub(super) fn integer(
    cx: &mut Ctx<'_>,
    item: &Item<'_>,
    path: &str,
    expected: &str,
) -> Option<i64> {
    match item.get_ref() {
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(n),
            Err(_) => {
                cx.error(
                    &item.span(),
                    path,
                    format!("integer {i} is out of range; expected {expected}"),
                );
                None
            }
        },
        _ => {
            mismatch(cx, item, path, expected);
            None
        }
    }
}

/// The value as an array, or a diagnostic.
pub(super) fn array<'v, 'i>(
    cx: &mut Ctx<'_>,
    item: &'v Item<'i>,
    path: &str,
    expected: &str,
) -> Option<&'v [Item<'i>]> {
    match item.get_ref() {
        DeValue::Array(a) => Some(a.as_ref()),
        _ => {
            mismatch(cx, item, path, expected);
            None
        }
    }
}

/// The value as a table, or a diagnostic.
pub(super) fn table<'v, 'i>(
    cx: &mut Ctx<'_>,
    item: &'v Item<'i>,
    path: &str,
    expected: &str,
) -> Option<&'v DeTable<'i>> {
    match item.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => {
            mismatch(cx, item, path, expected);
            None
        }
    }
}

/// Reports every key of `table` that is not in `allowed`, naming the allowed keys and the
/// closest one. `context` completes "unknown key "x" in <context>".
pub(super) fn check_keys(
    cx: &mut Ctx<'_>,
    table: &DeTable<'_>,
    path: &str,
    context: &str,
    allowed: &[&str],
) {
    for (key, _) in table.iter() {
        let name: &str = key.get_ref();
        if !allowed.contains(&name) {
            let list = allowed.join(", ");
            let hint = suggest::hint(name, allowed.iter().copied());
            cx.error(
                &key.span(),
                &join(path, name),
                format!("unknown key \"{name}\" in {context}; allowed keys are {list}{hint}"),
            );
        }
    }
}

/// The value under `key`, or an error at `table_span` saying it is missing.
pub(super) fn required<'v, 'i>(
    cx: &mut Ctx<'_>,
    table: &'v DeTable<'i>,
    table_span: &Range<usize>,
    path: &str,
    key: &str,
    how: &str,
) -> Option<&'v Item<'i>> {
    let item = table.get(key);
    if item.is_none() {
        // At the top level there is no table path: name the key instead.
        let path = if path.is_empty() { key } else { path };
        cx.error(
            table_span,
            path,
            format!("missing required key \"{key}\"; {how}"),
        );
    }
    item
}
