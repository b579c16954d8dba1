//! Mask tables (`{ fn = "partial", keep_first = 3, keep_last = 4 }`) → [`Mask`].
//!
//! Used for class masks and for role-specific masks in `see` and `unclassified`. Each
//! function accepts only its own parameters, with their types and ranges checked here so
//! the SQL renderer never sees an invalid mask.

use toml::de::DeTable;

use super::ctx::{join, Ctx};
use super::value::{integer, required, string, table, Item};
use super::{sqlexpr, suggest};
use crate::model::{DatePart, Mask};

/// The mask functions a policy may name.
#[derive(Clone, Copy)]
enum Function {
    Partial,
    Email,
    Hash,
    Redact,
    Null,
    TruncateDate,
    Round,
    Sql,
}

/// Mask functions by name, with the parameters each accepts.
const FUNCTIONS: &[(&str, Function, &[&str])] = &[
    (
        "partial",
        Function::Partial,
        &["keep_first", "keep_last", "fill"],
    ),
    ("email", Function::Email, &[]),
    ("hash", Function::Hash, &[]),
    ("redact", Function::Redact, &["with"]),
    ("null", Function::Null, &[]),
    ("truncate_date", Function::TruncateDate, &["to"]),
    ("round", Function::Round, &["digits"]),
    ("sql", Function::Sql, &["expr"]),
];

/// How a mask table is written, for "expected …" messages.
pub(super) const MASK_TABLE: &str = "a mask table like { fn = \"partial\", keep_last = 4 }";

/// Parses a mask table; `None` after reporting its problems.
pub(super) fn parse(cx: &mut Ctx<'_>, item: &Item<'_>, path: &str) -> Option<Mask> {
    let t = table(cx, item, path, MASK_TABLE)?;
    let names = || FUNCTIONS.iter().map(|(name, _, _)| *name);
    let all = names().collect::<Vec<_>>().join(", ");
    let fn_item = required(
        cx,
        t,
        &item.span(),
        path,
        "fn",
        &format!("name the mask function, one of {all}"),
    )?;
    let fn_path = join(path, "fn");
    let name = string(
        cx,
        fn_item,
        &fn_path,
        &format!("a mask function name, one of {all}"),
    )?;
    let Some((name, function, params)) = FUNCTIONS.iter().find(|(n, _, _)| *n == name) else {
        let hint = suggest::hint(name, names());
        cx.error(
            &fn_item.span(),
            &fn_path,
            format!("unknown mask function \"{name}\"; expected one of {all}{hint}"),
        );
        return None;
    };
    let before = cx.diags.error_count();
    check_params(cx, t, path, name, params);
    let p = Params { t, path };
    let mask = match function {
        Function::Partial => {
            // Evaluate all three before `?` so every bad parameter is reported.
            let keep_first = p.count(cx, "keep_first");
            let keep_last = p.count(cx, "keep_last");
            let fill = p.text(cx, "fill", "*");
            Mask::Partial {
                keep_first: keep_first?,
                keep_last: keep_last?,
                fill: fill?,
            }
        }
        Function::Email => Mask::Email,
        Function::Hash => Mask::Hash,
        Function::Redact => Mask::Redact {
            with: p.text(cx, "with", "***")?,
        },
        Function::Null => Mask::Null,
        Function::TruncateDate => Mask::TruncateDate {
            to: p.date_part(cx, &item.span())?,
        },
        Function::Round => Mask::Round {
            digits: p.digits(cx)?,
        },
        Function::Sql => Mask::Sql {
            template: p.expr(cx, &item.span())?,
        },
    };
    (cx.diags.error_count() == before).then_some(mask)
}

/// Reports parameters the function does not take.
fn check_params(cx: &mut Ctx<'_>, t: &DeTable<'_>, path: &str, name: &str, params: &[&str]) {
    for (key, _) in t.iter() {
        let key_name: &str = key.get_ref();
        if key_name == "fn" || params.contains(&key_name) {
            continue;
        }
        let message = if name == "hash" && matches!(key_name, "key" | "salt" | "secret") {
            "the hash key is never part of the policy; it comes from the proxy config \
             ([masking] hash_key_file or hash_key_env)"
                .to_string()
        } else if params.is_empty() {
            format!("unknown parameter \"{key_name}\": mask \"{name}\" takes no parameters")
        } else {
            let hint = suggest::hint(key_name, params.iter().copied());
            format!(
                "unknown parameter \"{key_name}\" for mask \"{name}\"; allowed: {}{hint}",
                params.join(", ")
            )
        };
        cx.error(&key.span(), &join(path, key_name), message);
    }
}

/// Typed access to the parameters of one mask table.
struct Params<'t, 'i, 'p> {
    t: &'t DeTable<'i>,
    path: &'p str,
}

impl Params<'_, '_, '_> {
    /// A non-negative character count (default 0).
    fn count(&self, cx: &mut Ctx<'_>, key: &str) -> Option<u32> {
        let Some(item) = self.t.get(key) else {
            return Some(0);
        };
        let path = join(self.path, key);
        let expected = "a non-negative integer (a number of characters)";
        let n = integer(cx, item, &path, expected)?;
        match u32::try_from(n) {
            Ok(n) if n <= 1000 => Some(n),
            _ => {
                cx.error(
                    &item.span(),
                    &path,
                    format!("{key} = {n} is out of range; expected 0 to 1000 characters"),
                );
                None
            }
        }
    }

    /// A non-empty text without NUL (PostgreSQL text cannot hold one).
    fn text(&self, cx: &mut Ctx<'_>, key: &str, default: &str) -> Option<String> {
        let Some(item) = self.t.get(key) else {
            return Some(default.to_string());
        };
        let path = join(self.path, key);
        let s = string(cx, item, &path, "a string")?;
        if s.is_empty() {
            cx.error(
                &item.span(),
                &path,
                format!("{key} must be at least one character (the default is \"{default}\")"),
            );
            return None;
        }
        if s.contains('\0') {
            cx.error(
                &item.span(),
                &path,
                format!("{key} must not contain a NUL character (PostgreSQL text cannot hold it)"),
            );
            return None;
        }
        Some(s.to_string())
    }

    fn date_part(&self, cx: &mut Ctx<'_>, span: &std::ops::Range<usize>) -> Option<DatePart> {
        let how = "truncate_date needs to = \"year\", \"month\" or \"day\"";
        let item = required(cx, self.t, span, self.path, "to", how)?;
        let path = join(self.path, "to");
        let s = string(cx, item, &path, "\"year\", \"month\" or \"day\"")?;
        let part = match s {
            "year" => DatePart::Year,
            "month" => DatePart::Month,
            "day" => DatePart::Day,
            other => {
                let hint = suggest::hint(other, ["year", "month", "day"]);
                cx.error(
                    &item.span(),
                    &path,
                    format!("unknown date part \"{other}\"; expected \"year\", \"month\" or \"day\"{hint}"),
                );
                return None;
            }
        };
        Some(part)
    }

    fn digits(&self, cx: &mut Ctx<'_>) -> Option<i32> {
        let Some(item) = self.t.get("digits") else {
            return Some(0);
        };
        let path = join(self.path, "digits");
        let n = integer(cx, item, &path, "an integer number of decimal digits")?;
        match i32::try_from(n) {
            Ok(d) if (-100..=100).contains(&d) => Some(d),
            _ => {
                cx.error(
                    &item.span(),
                    &path,
                    format!(
                        "digits = {n} is out of range; expected -100 to 100 (negative rounds \
                         to tens, hundreds, …)"
                    ),
                );
                None
            }
        }
    }

    fn expr(&self, cx: &mut Ctx<'_>, span: &std::ops::Range<usize>) -> Option<String> {
        let how = "sql needs expr = \"<SQL expression using {col}>\"";
        let item = required(cx, self.t, span, self.path, "expr", how)?;
        let path = join(self.path, "expr");
        let template = string(cx, item, &path, "a string holding a SQL expression")?;
        match sqlexpr::validate(template) {
            Ok(()) => Some(template.to_string()),
            Err(message) => {
                cx.error(&item.span(), &path, message);
                None
            }
        }
    }
}
