//! Masks rendered as plain SQL expressions over one column, so that masking runs inside
//! PostgreSQL and rows stream through the proxy untouched.
//!
//! Every expression keeps NULL as NULL. Text masks (`partial`, `email`, `hash`, `redact`)
//! return `text`; `null`, `truncate_date` and `round` keep the column's type.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::model::{DatePart, Mask};

/// The secret key of the `hash` mask (from the proxy config, never from the policy).
///
/// HMAC-SHA256 is computed in SQL with the inner and outer pad blocks precomputed here,
/// so the raw key itself never appears in any SQL text.
#[derive(Clone)]
pub struct MaskKey {
    ipad: [u8; 64],
    opad: [u8; 64],
    ipad_hex: String,
    opad_hex: String,
}

impl MaskKey {
    /// Builds the key from its secret bytes (any length; HMAC rules apply).
    pub fn new(secret: &[u8]) -> Self {
        let mut block = [0u8; 64];
        if secret.len() > 64 {
            let digest = Sha256::digest(secret);
            block[..32].copy_from_slice(&digest);
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        let ipad = block.map(|b| b ^ 0x36);
        let opad = block.map(|b| b ^ 0x5c);
        MaskKey {
            ipad,
            opad,
            ipad_hex: hex::encode(ipad),
            opad_hex: hex::encode(opad),
        }
    }

    /// The `hash` mask of `data` computed here rather than in SQL: lower-case hex of
    /// HMAC-SHA256, the same text the SQL expression returns.
    pub fn hmac_hex(&self, data: &[u8]) -> String {
        let mut inner = Sha256::new();
        inner.update(self.ipad);
        inner.update(data);
        let mut outer = Sha256::new();
        outer.update(self.opad);
        outer.update(inner.finalize());
        hex::encode(outer.finalize())
    }
}

impl fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskKey(<secret>)")
    }
}

/// Quotes `s` as a standard SQL string literal (`standard_conforming_strings = on`).
pub fn sql_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        if ch == '\'' {
            out.push('\'');
        }
        out.push(ch);
    }
    out.push('\'');
    out
}

/// Quotes an identifier the way PostgreSQL's `quote_ident` does, always quoting.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for ch in name.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// A type name usable in a cast; falls back to `text` for anything that does not look
/// like `format_type()` output.
fn cast_type(type_name: &str) -> &str {
    let ok = !type_name.is_empty()
        && !type_name.contains(';')
        && !type_name.contains("--")
        && !type_name.contains("/*")
        && !type_name.contains('\'')
        && !type_name.contains('\0');
    if ok {
        type_name
    } else {
        "text"
    }
}

/// `NULL::<type>`: what a denied or nulled column becomes in a derived table.
pub fn null_of(type_name: &str) -> String {
    format!("NULL::{}", cast_type(type_name))
}

/// Renders `mask` over the SQL expression `col` (already quoted/qualified) whose type
/// is `type_name` (as `format_type()` prints it).
///
/// Every type and function the expression applies to the raw value (or to the key's
/// pads) is qualified with `pg_catalog`: the session's search_path resolves unqualified
/// names, and a restricted role can create a type named `text` or `bytea` in `pg_temp`
/// (a domain, a temp table's row type), which is searched before `pg_catalog` for type
/// names. A cast of the raw value to such a type runs the role's CHECK on it or fails
/// with the raw value in the message (`invalid input syntax for type integer: "…"`).
pub fn render(mask: &Mask, col: &str, type_name: &str, key: &MaskKey) -> String {
    let text = format!("({col})::pg_catalog.text");
    match mask {
        Mask::Partial {
            keep_first,
            keep_last,
            fill,
        } => {
            // NULL stays NULL through the strict functions alone. The hidden middle is
            // overlaid in place; a one-character fill covers exactly as many characters
            // as it repeats, a longer one needs the count spelled out. Fewer calls than
            // left || repeat || right: the server parses this on every simple query.
            let keep = u64::from(*keep_first) + u64::from(*keep_last);
            let fill = if fill.is_empty() { "*" } else { fill };
            let hidden = format!("pg_catalog.char_length({text}) - {keep}");
            let count = if fill.chars().count() == 1 {
                String::new()
            } else {
                format!(" for {hidden}")
            };
            let fill = sql_literal(fill);
            format!(
                "CASE WHEN pg_catalog.char_length({text}) <= {keep} \
                 THEN pg_catalog.repeat({fill}, pg_catalog.char_length({text})) \
                 ELSE overlay({text} placing pg_catalog.repeat({fill}, {hidden}) from {start}{count}) END",
                start = u64::from(*keep_first) + 1
            )
        }
        // NULL stays NULL: strpos(NULL, …) is NULL, so the ELSE branch yields NULL.
        Mask::Email => format!(
            "CASE WHEN pg_catalog.strpos({text}, '@') = 0 THEN '***' \
             ELSE pg_catalog.left(pg_catalog.split_part({text}, '@', 1), 1) || '***@' || \
             pg_catalog.substr({text}, pg_catalog.strpos({text}, '@') + 1) END"
        ),
        Mask::Hash => format!(
            "pg_catalog.encode(pg_catalog.sha256('\\x{opad}'::pg_catalog.bytea || \
             pg_catalog.sha256('\\x{ipad}'::pg_catalog.bytea || pg_catalog.convert_to({text}, 'UTF8'))), 'hex')",
            opad = key.opad_hex,
            ipad = key.ipad_hex
        ),
        Mask::Redact { with } => format!(
            "CASE WHEN ({col}) IS NULL THEN NULL ELSE {} END",
            sql_literal(with)
        ),
        Mask::Null => null_of(type_name),
        Mask::TruncateDate { to } => {
            let part = match to {
                DatePart::Year => "year",
                DatePart::Month => "month",
                DatePart::Day => "day",
            };
            format!("pg_catalog.date_trunc('{part}', {col})::{}", cast_type(type_name))
        }
        Mask::Round { digits } => format!(
            "pg_catalog.round(({col})::numeric, {digits})::{}",
            cast_type(type_name)
        ),
        Mask::Sql { template } => template.replace("{col}", &format!("({col})")),
    }
}

/// Does this mask embed the hash key (so its SQL must never be echoed to the client)?
pub fn embeds_key(mask: &Mask) -> bool {
    matches!(mask, Mask::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};

    #[test]
    fn hash_pads_match_hmac_reference() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = MaskKey::new(b"Jefe");
        let data = b"what do ya want for nothing?";
        let ipad = hex::decode(&key.ipad_hex).expect("hex we wrote");
        let opad = hex::decode(&key.opad_hex).expect("hex we wrote");
        let mut inner = Sha256::new();
        inner.update(&ipad);
        inner.update(data);
        let inner = inner.finalize();
        let mut outer = Sha256::new();
        outer.update(&opad);
        outer.update(inner);
        let ours = hex::encode(outer.finalize());
        assert_eq!(
            ours,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("any key length");
        mac.update(data);
        assert_eq!(ours, hex::encode(mac.finalize().into_bytes()));
        assert_eq!(key.hmac_hex(data), ours);
    }

    #[test]
    fn long_keys_are_hashed_first() {
        let long = [0xaau8; 131];
        let key = MaskKey::new(&long);
        let data = b"Test Using Larger Than Block-Size Key - Hash Key First";
        let mut inner = Sha256::new();
        inner.update(hex::decode(&key.ipad_hex).expect("hex"));
        inner.update(data);
        let mut outer = Sha256::new();
        outer.update(hex::decode(&key.opad_hex).expect("hex"));
        outer.update(inner.finalize());
        assert_eq!(
            hex::encode(outer.finalize()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn hash_sql_never_contains_the_raw_key() {
        let key = MaskKey::new(b"supersecretkey");
        let sql = render(&Mask::Hash, "\"phone\"", "text", &key);
        assert!(!sql.contains(&hex::encode(b"supersecretkey")));
        assert!(sql.starts_with("pg_catalog.encode(pg_catalog.sha256('\\x"));
        assert!(!sql.contains("::text") && !sql.contains("::bytea"));
        assert!(format!("{key:?}").contains("secret"));
    }

    #[test]
    fn renders_every_mask() {
        let key = MaskKey::new(b"k");
        let p = render(
            &Mask::Partial {
                keep_first: 3,
                keep_last: 4,
                fill: "*".into(),
            },
            "\"phone\"",
            "text",
            &key,
        );
        assert!(
            p.contains("overlay((\"phone\")::pg_catalog.text placing pg_catalog.repeat('*', pg_catalog.char_length((\"phone\")::pg_catalog.text) - 7) from 4)"),
            "{p}"
        );
        assert!(p.contains("<= 7"));
        let wide = render(
            &Mask::Partial {
                keep_first: 1,
                keep_last: 0,
                fill: "**".into(),
            },
            "\"name\"",
            "text",
            &key,
        );
        assert!(
            wide.contains("from 2 for pg_catalog.char_length((\"name\")::pg_catalog.text) - 1)"),
            "{wide}"
        );
        assert_eq!(render(&Mask::Null, "x", "date", &key), "NULL::date");
        assert_eq!(
            render(
                &Mask::TruncateDate { to: DatePart::Year },
                "\"b\"",
                "date",
                &key
            ),
            "pg_catalog.date_trunc('year', \"b\")::date"
        );
        assert_eq!(
            render(&Mask::Round { digits: -2 }, "\"a\"", "numeric(10,2)", &key),
            "pg_catalog.round((\"a\")::numeric, -2)::numeric(10,2)"
        );
        assert_eq!(
            render(
                &Mask::Sql {
                    template: "md5({col})".into()
                },
                "\"a\"",
                "text",
                &key
            ),
            "md5((\"a\"))"
        );
        assert!(render(
            &Mask::Redact {
                with: "it's".into()
            },
            "x",
            "text",
            &key
        )
        .contains("'it''s'"));
        assert_eq!(null_of("text; drop table x"), "NULL::text");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(sql_literal("o'k"), "'o''k'");
    }
}
