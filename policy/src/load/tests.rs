//! Loader tests: one table row per validation rule, each asserting line, column, key path
//! and message, plus whole-policy tests for what a valid policy turns into.

use super::*;
use crate::error::PolicyError;
use crate::model::{DatePart, Mask, StatementKind, Visibility};

/// A valid policy prefix (6 lines); snippets are appended after it, so snippet line 1 is
/// file line 7 and lands inside `[columns]` unless it opens a new table.
const BASE: &str = r#"version = 1
[classes.phone]
level = 3
mask = { fn = "partial", keep_first = 3, keep_last = 4 }
[columns]
"public.customers.phone" = "phone"
"#;
const BASE_LINES: usize = 6;

/// (line within the snippet, column, key path, text the message must contain)
type Expect = (usize, usize, &'static str, &'static str);

fn diagnostics(text: &str) -> Vec<PolicyError> {
    match load("p.toml", text) {
        Ok(loaded) => loaded.warnings.into_vec(),
        Err(diags) => diags.into_vec(),
    }
}

fn errors(text: &str) -> Vec<PolicyError> {
    diagnostics(text)
        .into_iter()
        .filter(PolicyError::is_error)
        .collect()
}

fn warnings(text: &str) -> Vec<PolicyError> {
    diagnostics(text)
        .into_iter()
        .filter(|d| !d.is_error())
        .collect()
}

/// Asserts that `text` yields exactly the expected errors (lines offset by `offset`).
fn assert_errors(name: &str, text: &str, offset: usize, expected: &[Expect]) {
    let found = errors(text);
    let listing = found
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for &(line, column, path, needle) in expected {
        let hit = found.iter().any(|d| {
            d.line == line + offset
                && d.column == column
                && d.path == path
                && d.message.contains(needle)
                && d.file == "p.toml"
        });
        assert!(
            hit,
            "{name}: expected {}:{column} {path}: …{needle}…\nfound:\n{listing}",
            line + offset
        );
    }
    assert_eq!(
        found.len(),
        expected.len(),
        "{name}: wrong number of errors:\n{listing}"
    );
}

fn loaded(text: &str) -> Loaded {
    match load("p.toml", text) {
        Ok(l) => l,
        Err(d) => panic!("policy should load:\n{d}"),
    }
}

#[test]
fn whole_file_rules() {
    let cases: &[(&str, &str, &[Expect])] = &[
        (
            "empty file",
            "",
            &[(
                1,
                1,
                "version",
                "missing required key \"version\"; add `version = 1`",
            )],
        ),
        (
            "unsupported version",
            "version = 2\n",
            &[(
                1,
                11,
                "version",
                "unsupported policy version 2; this pgveil reads version = 1",
            )],
        ),
        (
            "version of the wrong type",
            "version = \"1\"\n",
            &[(1, 11, "version", "expected version = 1, found string \"1\"")],
        ),
        (
            "TOML syntax error",
            "version = 1\nx = \n",
            &[(2, 5, "", "invalid TOML: string values must be quoted")],
        ),
        (
            "duplicate key",
            "version = 1\nversion = 1\n",
            &[(2, 1, "", "invalid TOML: duplicate key")],
        ),
        (
            "unknown top-level key",
            "version = 1\n[colums]\n",
            &[(
                2,
                2,
                "colums",
                "unknown key \"colums\" in the policy file; allowed keys are version, defaults, \
                 classes, columns, roles (did you mean \"columns\"?)",
            )],
        ),
    ];
    for (name, text, expected) in cases {
        assert_errors(name, text, 0, expected);
    }
}

/// Rows: (name, snippet appended to BASE, expected errors with snippet-relative lines).
fn snippet_cases(cases: &[(&str, &str, &[Expect])]) {
    for (name, snippet, expected) in cases {
        let text = format!("{BASE}{snippet}");
        assert_errors(name, &text, BASE_LINES, expected);
    }
}

#[test]
fn class_rules() {
    snippet_cases(&[
        (
            "level out of range",
            "[classes.email]\nlevel = 5\nmask = { fn = \"email\" }\n",
            &[(
                2,
                9,
                "classes.email.level",
                "level 5 is out of range; expected an integer from 1 (public) to 4 (highly sensitive)",
            )],
        ),
        (
            "level and mask missing",
            "[classes.email]\nlabel = \"E-mail\"\n",
            &[
                (1, 1, "classes.email", "missing required key \"level\"; set level = 1 (public)"),
                (1, 1, "classes.email", "missing required key \"mask\"; set the class's default mask"),
            ],
        ),
        (
            "label not a string",
            "[classes.email]\nlabel = 3\nlevel = 2\nmask = { fn = \"email\" }\n",
            &[(2, 9, "classes.email.label", "expected a string describing the class, found integer 3")],
        ),
        (
            "unknown class key",
            "[classes.email]\nlevel = 2\nmask = { fn = \"email\" }\nlevle = 1\n",
            &[(
                4,
                1,
                "classes.email.levle",
                "unknown key \"levle\" in a class; allowed keys are label, level, mask (did you mean \"level\"?)",
            )],
        ),
        (
            "class named default",
            "[classes.default]\nlevel = 2\nmask = { fn = \"null\" }\n",
            &[(1, 10, "classes.default", "\"default\" cannot be a class name")],
        ),
        (
            "class name with a space",
            "[classes.\"e mail\"]\nlevel = 2\nmask = { fn = \"null\" }\n",
            &[(
                1,
                10,
                "classes.\"e mail\"",
                "invalid class name \"e mail\"; use 1 to 63 ASCII letters, digits, '_' or '-'",
            )],
        ),
    ]);
}

#[test]
fn mask_rules() {
    // Every snippet defines class "email" whose mask is on snippet line 3, value at col 8.
    let class = |mask: &str| format!("[classes.email]\nlevel = 2\nmask = {mask}\n");
    let rows: Vec<(&str, String, Vec<Expect>)> = vec![
        (
            "fn missing",
            class("{ keep_last = 4 }"),
            vec![
                (
                    3,
                    8,
                    "classes.email.mask",
                    "missing required key \"fn\"; name the mask function, one of partial, email, \
                     hash, redact, null, truncate_date, round, sql",
                ),
            ],
        ),
        (
            "unknown fn",
            class("{ fn = \"parital\" }"),
            vec![(
                3,
                15,
                "classes.email.mask.fn",
                "unknown mask function \"parital\"; expected one of partial, email, hash, redact, \
                 null, truncate_date, round, sql (did you mean \"partial\"?)",
            )],
        ),
        (
            "fn not a string",
            class("{ fn = 1 }"),
            vec![(3, 15, "classes.email.mask.fn", "expected a mask function name, one of partial")],
        ),
        (
            "partial: negative count and empty fill, both reported",
            class("{ fn = \"partial\", keep_first = -1, fill = \"\" }"),
            vec![
                (
                    3,
                    39,
                    "classes.email.mask.keep_first",
                    "keep_first = -1 is out of range; expected 0 to 1000 characters",
                ),
                (
                    3,
                    50,
                    "classes.email.mask.fill",
                    "fill must be at least one character (the default is \"*\")",
                ),
            ],
        ),
        (
            "partial: count of the wrong type",
            class("{ fn = \"partial\", keep_last = \"4\" }"),
            vec![(
                3,
                38,
                "classes.email.mask.keep_last",
                "expected a non-negative integer (a number of characters), found string \"4\"",
            )],
        ),
        (
            "partial: unknown parameter",
            class("{ fn = \"partial\", keep_frist = 1 }"),
            vec![(
                3,
                26,
                "classes.email.mask.keep_frist",
                "unknown parameter \"keep_frist\" for mask \"partial\"; allowed: keep_first, \
                 keep_last, fill (did you mean \"keep_first\"?)",
            )],
        ),
        (
            "email takes no parameters",
            class("{ fn = \"email\", keep = 1 }"),
            vec![(
                3,
                24,
                "classes.email.mask.keep",
                "unknown parameter \"keep\": mask \"email\" takes no parameters",
            )],
        ),
        (
            "hash key in the policy",
            class("{ fn = \"hash\", key = \"s3cret\" }"),
            vec![(
                3,
                23,
                "classes.email.mask.key",
                "the hash key is never part of the policy; it comes from the proxy config",
            )],
        ),
        (
            "redact: wrong parameter",
            class("{ fn = \"redact\", text = \"x\" }"),
            vec![(
                3,
                25,
                "classes.email.mask.text",
                "unknown parameter \"text\" for mask \"redact\"; allowed: with",
            )],
        ),
        (
            "redact: with not a string",
            class("{ fn = \"redact\", with = 0 }"),
            vec![(3, 32, "classes.email.mask.with", "expected a string, found integer 0")],
        ),
        (
            "truncate_date: to missing",
            class("{ fn = \"truncate_date\" }"),
            vec![(
                3,
                8,
                "classes.email.mask",
                "missing required key \"to\"; truncate_date needs to = \"year\", \"month\" or \"day\"",
            )],
        ),
        (
            "truncate_date: unknown part",
            class("{ fn = \"truncate_date\", to = \"mnoth\" }"),
            vec![(
                3,
                37,
                "classes.email.mask.to",
                "unknown date part \"mnoth\"; expected \"year\", \"month\" or \"day\" (did you mean \"month\"?)",
            )],
        ),
        (
            "round: float digits",
            class("{ fn = \"round\", digits = 1.5 }"),
            vec![(
                3,
                33,
                "classes.email.mask.digits",
                "expected an integer number of decimal digits, found float 1.5",
            )],
        ),
        (
            "round: digits out of range",
            class("{ fn = \"round\", digits = 1000 }"),
            vec![(3, 33, "classes.email.mask.digits", "digits = 1000 is out of range; expected -100 to 100")],
        ),
        (
            "sql: no {col}",
            class("{ fn = \"sql\", expr = \"left(name, 2)\" }"),
            vec![(3, 29, "classes.email.mask.expr", "expr must contain {col} where the column goes")],
        ),
        (
            "sql: subquery",
            class("{ fn = \"sql\", expr = \"{col} || (SELECT k FROM keys)\" }"),
            vec![(
                3,
                29,
                "classes.email.mask.expr",
                "subqueries are not allowed in a mask expression (they could read other tables)",
            )],
        ),
        (
            "sql: statements",
            class("{ fn = \"sql\", expr = \"{col}; DROP TABLE customers\" }"),
            vec![(
                3,
                29,
                "classes.email.mask.expr",
                "expr must be exactly one SQL expression; unexpected ; after it (statements are not allowed)",
            )],
        ),
        (
            "sql: parse error",
            class("{ fn = \"sql\", expr = \"left({col}, \" }"),
            vec![(3, 29, "classes.email.mask.expr", "expr is not a valid SQL expression: ")],
        ),
        (
            "sql: another column",
            class("{ fn = \"sql\", expr = \"{col} || id_card\" }"),
            vec![(
                3,
                29,
                "classes.email.mask.expr",
                "a mask expression may read only its own column, written {col}; found column reference id_card",
            )],
        ),
        (
            "sql: expr missing",
            class("{ fn = \"sql\" }"),
            vec![(3, 8, "classes.email.mask", "missing required key \"expr\"")],
        ),
        (
            "mask not a table",
            class("\"partial\""),
            vec![(
                3,
                8,
                "classes.email.mask",
                "expected a mask table like { fn = \"partial\", keep_last = 4 }, found string \"partial\"",
            )],
        ),
    ];
    for (name, snippet, expected) in rows {
        assert_errors(name, &format!("{BASE}{snippet}"), BASE_LINES, &expected);
    }
}

#[test]
fn column_tag_rules() {
    snippet_cases(&[
        (
            "two parts",
            "\"customers.phone\" = \"phone\"\n",
            &[(
                1,
                1,
                "columns.\"customers.phone\"",
                "\"customers.phone\" has 2 part(s); expected schema.table.column (use * as a \
                 wildcard, and double quotes around a part that contains a dot, e.g. public.\"a.b\".c)",
            )],
        ),
        (
            "unknown class",
            "\"public.orders.ship_phone\" = \"phnoe\"\n",
            &[(
                1,
                30,
                "columns.\"public.orders.ship_phone\"",
                "unknown class \"phnoe\"; define it under [classes] (defined: phone) (did you mean \"phone\"?)",
            )],
        ),
        (
            "class not a string",
            "\"public.orders.x\" = 3\n",
            &[(
                1,
                21,
                "columns.\"public.orders.x\"",
                "expected the name of a class from [classes], found integer 3",
            )],
        ),
        (
            "bare dotted key",
            "public.orders.ship_phone = \"phone\"\n",
            &[(1, 1, "columns.public", "a column tag key is one quoted string")],
        ),
        (
            "unterminated quoted part",
            "'public.\"a.b.c' = \"phone\"\n",
            &[(1, 1, "columns.\"public.\\\"a.b.c\"", "unterminated quoted name")],
        ),
        (
            "literal tag shadowed by an earlier glob with another class",
            "\"public.*.*\" = \"phone\"\n\"public.orders.ship_phone\" = \"email\"\n\
             [classes.email]\nlevel = 2\nmask = { fn = \"email\" }\n",
            &[(
                2,
                1,
                "columns.\"public.orders.ship_phone\"",
                "this tag never applies: \"public.*.*\" (line 7, column 1) matches the same column \
                 first and tags it \"phone\"; the first matching tag wins, so move this line above it",
            )],
        ),
    ]);
}

#[test]
fn role_rules() {
    // Snippet lines 1-4 open a valid role; line 5 is where each case adds its key.
    const ROLE: &str = "[roles.support]\nusers = [\"support_app\"]\nstatements = [\"select\"]\n\
                        tables = [\"public.customers\"]\n";
    let with = |line5: &str| format!("{ROLE}{line5}\n");
    let rows: Vec<(&str, String, Vec<Expect>)> = vec![
        (
            "users, statements and tables missing",
            "[roles.support]\nsee = { default = \"masked\" }\n".to_string(),
            vec![
                (1, 1, "roles.support", "missing required key \"users\"; list the database users"),
                (1, 1, "roles.support", "missing required key \"statements\"; list the statement kinds"),
                (1, 1, "roles.support", "missing required key \"tables\"; list the relations"),
            ],
        ),
        (
            "statement kind typo",
            "[roles.support]\nusers = [\"support_app\"]\nstatements = [\"select\", \"selct\"]\n\
             tables = [\"public.customers\"]\n"
                .to_string(),
            vec![(
                3,
                25,
                "roles.support.statements",
                "unknown statement kind \"selct\"; expected one of select, insert, update, delete, \
                 merge, truncate, copy_to, copy_from, ddl, dcl, call, explain, lock, maintenance \
                 or \"all\" (did you mean \"select\"?)",
            )],
        ),
        (
            "statements not a list",
            "[roles.support]\nusers = [\"support_app\"]\nstatements = \"select\"\n\
             tables = [\"public.customers\"]\n"
                .to_string(),
            vec![(
                3,
                14,
                "roles.support.statements",
                "expected a list of statement kinds, found string \"select\"",
            )],
        ),
        (
            "statements empty",
            "[roles.support]\nusers = [\"support_app\"]\nstatements = []\n\
             tables = [\"public.customers\"]\n"
                .to_string(),
            vec![(3, 14, "roles.support.statements", "statements must not be empty")],
        ),
        (
            "table without schema",
            "[roles.support]\nusers = [\"support_app\"]\nstatements = [\"select\"]\n\
             tables = [\"customers\"]\n"
                .to_string(),
            vec![(
                4,
                11,
                "roles.support.tables",
                "\"customers\" has no schema; write schema.table (e.g. public.customers, or \
                 *.customers for any schema), or \"*\" for all",
            )],
        ),
        (
            "users empty",
            "[roles.support]\nusers = []\nstatements = [\"select\"]\ntables = [\"*\"]\n".to_string(),
            vec![(2, 9, "roles.support.users", "users must not be empty")],
        ),
        (
            "empty user name",
            "[roles.support]\nusers = [\"\"]\nstatements = [\"select\"]\ntables = [\"*\"]\n".to_string(),
            vec![(2, 10, "roles.support.users", "a user name must not be empty")],
        ),
        (
            "see: unknown class",
            with("see = { default = \"masked\", bank_crd = \"deny\" }"),
            vec![(
                5,
                29,
                "roles.support.see.bank_crd",
                "unknown class \"bank_crd\"; keys of see are \"default\" and classes from [classes] (phone)",
            )],
        ),
        (
            "see: class typo gets a suggestion",
            with("see = { phnoe = \"deny\" }"),
            vec![(5, 9, "roles.support.see.phnoe", "(did you mean \"phone\"?)")],
        ),
        (
            "see: unknown visibility",
            with("see = { phone = \"hidden\" }"),
            vec![(
                5,
                17,
                "roles.support.see.phone",
                "unknown visibility \"hidden\"; expected \"raw\", \"masked\", \"deny\" or a mask \
                 table like { fn = \"partial\", keep_last = 4 }",
            )],
        ),
        (
            "see: not a table",
            with("see = \"masked\""),
            vec![(
                5,
                7,
                "roles.support.see",
                "expected a table like { default = \"masked\", bank_card = \"deny\" }, found string \"masked\"",
            )],
        ),
        (
            "see: bad custom mask",
            with("see = { phone = { fn = \"hash\", salt = \"x\" } }"),
            vec![(5, 32, "roles.support.see.phone.salt", "the hash key is never part of the policy")],
        ),
        (
            "unclassified: masked",
            with("unclassified = \"masked\""),
            vec![(
                5,
                16,
                "roles.support.unclassified",
                "\"masked\" is not allowed here: untagged columns have no class mask; expected \
                 \"raw\", \"deny\" or a mask table",
            )],
        ),
        (
            "max_rows zero",
            with("max_rows = 0"),
            vec![(
                5,
                12,
                "roles.support.max_rows",
                "max_rows = 0 is not allowed; expected a positive number of rows (leave max_rows out for no limit)",
            )],
        ),
        (
            "max_rows a string",
            with("max_rows = \"500\""),
            vec![(
                5,
                12,
                "roles.support.max_rows",
                "expected a positive number of rows (leave max_rows out for no limit), found string \"500\"",
            )],
        ),
        (
            "empty purpose",
            with("purposes = [\"\", \"audit\"]"),
            vec![(5, 13, "roles.support.purposes", "a purpose must not be empty")],
        ),
        (
            "purposes not a list",
            with("purposes = \"audit\""),
            vec![(5, 12, "roles.support.purposes", "expected a list of purpose names, found string \"audit\"")],
        ),
        (
            "function without schema",
            with("functions = [\"myfunc\"]"),
            vec![(5, 14, "roles.support.functions", "\"myfunc\" has no schema; write schema.function")],
        ),
        (
            "unknown role key",
            with("max_row = 5"),
            vec![(
                5,
                1,
                "roles.support.max_row",
                "unknown key \"max_row\" in a role; allowed keys are users, statements, tables, see, \
                 unclassified, max_rows, purposes, functions (did you mean \"max_rows\"?)",
            )],
        ),
        (
            "role name with a space",
            "[roles.\"sup port\"]\nusers = [\"a\"]\nstatements = [\"select\"]\ntables = [\"*\"]\n"
                .to_string(),
            vec![(1, 8, "roles.\"sup port\"", "invalid role name \"sup port\"")],
        ),
        (
            "role not a table",
            "[roles]\nsupport = \"dba\"\n".to_string(),
            vec![(
                2,
                11,
                "roles.support",
                "expected a role table with users, statements, tables and see, found string \"dba\"",
            )],
        ),
    ];
    for (name, snippet, expected) in rows {
        assert_errors(name, &format!("{BASE}{snippet}"), BASE_LINES, &expected);
    }
}

#[test]
fn ambiguous_users_rules() {
    // support's users are on snippet line 2 (file line 8): support_app at col 10, cs_* at 25.
    const SUPPORT: &str = "[roles.support]\nusers = [\"support_app\", \"cs_*\"]\n\
                           statements = [\"select\"]\ntables = [\"public.customers\"]\n";
    let analyst = |users: &str| {
        format!("{SUPPORT}[roles.analyst]\nusers = {users}\nstatements = [\"select\"]\ntables = [\"*\"]\n")
    };
    let rows: Vec<(&str, String, Vec<Expect>)> = vec![
        (
            "same literal user in two roles",
            analyst("[\"bi\", \"support_app\"]"),
            vec![(
                6,
                16,
                "roles.analyst.users",
                "user \"support_app\" is listed by role \"support\" (line 8, column 10) and role \
                 \"analyst\"; every user must match exactly one role, so make the globs disjoint",
            )],
        ),
        (
            "literal user matched by another role's glob",
            analyst("[\"bi\", \"cs_lead\"]"),
            vec![(
                6,
                16,
                "roles.analyst.users",
                "user \"cs_lead\" of role \"analyst\" and user \"cs_*\" of role \"support\" (line 8, \
                 column 25) both match \"cs_lead\"",
            )],
        ),
        (
            "two overlapping globs",
            analyst("[\"*_lead\"]"),
            vec![(
                6,
                10,
                "roles.analyst.users",
                "user \"*_lead\" of role \"analyst\" and user \"cs_*\" of role \"support\" (line 8, \
                 column 25) both match \"cs_lead\"",
            )],
        ),
        ("disjoint globs are fine", analyst("[\"bi\", \"analyst_*\"]"), vec![]),
        (
            "a catch-all glob",
            analyst("[\"*\"]"),
            vec![
                (6, 10, "roles.analyst.users", "both match \"support_app\""),
                (
                    6,
                    10,
                    "roles.analyst.users",
                    "both match \"cs_\"; every user must match exactly one role, so make the globs \
                     disjoint (for a catch-all role, use [defaults] unknown_users instead of \"*\")",
                ),
            ],
        ),
    ];
    for (name, snippet, expected) in rows {
        assert_errors(name, &format!("{BASE}{snippet}"), BASE_LINES, &expected);
    }
    // The same glob twice in one role is not ambiguous.
    let text = format!(
        "{BASE}[roles.a]\nusers = [\"x*\", \"x*\"]\nstatements = [\"select\"]\ntables = [\"*\"]\n"
    );
    assert_errors("repeat within a role", &text, 0, &[]);
}

#[test]
fn defaults_rules() {
    snippet_cases(&[
        (
            "unknown_users names no role",
            "[defaults]\nunknown_users = \"nobody\"\n",
            &[(
                2,
                17,
                "defaults.unknown_users",
                "unknown role \"nobody\"; expected \"deny\" or one of the roles defined under \
                 [roles] (none are defined)",
            )],
        ),
        (
            "unknown key in defaults",
            "[defaults]\nunknown_user = \"deny\"\n",
            &[(
                2,
                1,
                "defaults.unknown_user",
                "unknown key \"unknown_user\" in [defaults]; allowed keys are unknown_users (did \
                 you mean \"unknown_users\"?)",
            )],
        ),
        (
            "unknown_users not a string",
            "[defaults]\nunknown_users = false\n",
            &[(
                2,
                17,
                "defaults.unknown_users",
                "expected \"deny\" or the name of a role, found boolean false",
            )],
        ),
    ]);
}

#[test]
fn every_error_is_collected_in_one_run_and_sorted() {
    let text = r#"version = 3
[classes.phone]
level = 0
mask = { fn = "hash" }
[columns]
"customers.phone" = "phone"
[roles.support]
users = ["cs_*"]
statements = ["selct"]
tables = ["public.customers"]
see = { default = "masked", card = "deny" }
[roles.analyst]
users = ["cs_bi"]
statements = ["select"]
tables = ["*"]
max_rows = -1
"#;
    let found = errors(text);
    let at: Vec<(usize, usize)> = found.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(
        at,
        vec![
            (1, 11),
            (3, 9),
            (6, 1),
            (9, 15),
            (11, 29),
            (13, 10),
            (16, 12)
        ],
        "{}",
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (ok, report) = crate::check::check("p.toml", text);
    assert!(!ok);
    assert!(
        report.ends_with("p.toml: policy rejected: 7 errors"),
        "{report}"
    );
}

#[test]
fn brief_diagnostic_format() {
    let text = format!(
        "{BASE}[roles.support]\nusers = [\"a\"]\nstatements = [\"selct\"]\ntables = [\"*\"]\n"
    );
    let err = match load("policy.toml", &text) {
        Ok(_) => panic!("typo must not load"),
        Err(d) => d.to_string(),
    };
    assert_eq!(
        err,
        "policy.toml:9:15: error: roles.support.statements: unknown statement kind \"selct\"; \
         expected one of select, insert, update, delete, merge, truncate, copy_to, copy_from, \
         ddl, dcl, call, explain, lock, maintenance or \"all\" (did you mean \"select\"?)"
    );
}

/// The policy from design.md "Policy file", verbatim.
pub(crate) const DESIGN_EXAMPLE: &str = r#"version = 1

[defaults]
unknown_users = "deny"            # or the name of a role

[classes.id_number]
label = "Resident ID / passport number"
level = 4                         # 1 public … 4 highly sensitive
mask = { fn = "partial", keep_first = 6, keep_last = 4 }

[classes.phone]
level = 3
mask = { fn = "partial", keep_first = 3, keep_last = 4 }

[classes.bank_card]
level = 4
mask = { fn = "partial", keep_last = 4 }

[classes.email]
level = 2
mask = { fn = "email" }          # a***@example.com

[classes.birth_date]
level = 3
mask = { fn = "truncate_date", to = "year" }

[columns]                         # schema.table.column = class; * wildcards allowed;
                                  # names exactly as the catalog stores them (case-sensitive),
                                  # a part containing a dot in double quotes
"public.customers.id_card" = "id_number"
"public.customers.phone"   = "phone"
"public.*.card_no"         = "bank_card"

[roles.support]
users = ["support_app", "cs_*"]   # authenticated database users (globs)
statements = ["select", "update"] # select insert update delete copy_to copy_from ddl … or "all"
tables = ["public.customers", "public.orders"]
see = { default = "masked", bank_card = "deny" }   # per class: raw | masked | deny | { fn = … }
max_rows = 500                    # per statement
purposes = ["customer_service"]   # optional: session must declare one

[roles.analyst]
users = ["bi"]
statements = ["select"]
tables = ["public.*"]
see = { default = "masked", id_number = { fn = "hash" } }   # pseudonymised, joinable

[roles.dba]
users = ["postgres"]
statements = ["all"]
tables = ["*"]
see = { default = "raw" }
"#;

#[test]
fn design_example_loads_into_the_model() {
    let l = loaded(DESIGN_EXAMPLE);
    let p = &l.policy;
    assert_eq!(p.version, 1);
    assert_eq!(p.unknown_users, UnknownUsers::Deny);
    assert_eq!(p.classes.len(), 5);
    let id = &p.classes["id_number"];
    assert_eq!(id.label.as_deref(), Some("Resident ID / passport number"));
    assert_eq!(id.level, 4);
    assert_eq!(
        id.mask,
        Mask::Partial {
            keep_first: 6,
            keep_last: 4,
            fill: "*".into()
        }
    );
    assert_eq!(
        p.classes["birth_date"].mask,
        Mask::TruncateDate { to: DatePart::Year }
    );
    let tags: Vec<(&str, &str)> = p
        .columns
        .iter()
        .map(|t| (t.pattern.as_str(), t.class.as_str()))
        .collect();
    assert_eq!(
        tags,
        [
            ("public.customers.id_card", "id_number"),
            ("public.customers.phone", "phone"),
            ("public.*.card_no", "bank_card"),
        ]
    );
    assert_eq!(
        p.class_of("public", "orders", "card_no")
            .map(|c| c.name.as_str()),
        Some("bank_card")
    );

    let support = &p.roles["support"];
    assert!(support.matches_user("cs_alice") && support.matches_user("support_app"));
    assert_eq!(
        support.statements,
        [StatementKind::Select, StatementKind::Update]
    );
    assert!(!support.all_statements);
    assert!(support.may_touch("public", "orders") && !support.may_touch("public", "payments"));
    assert_eq!(support.see_default, Visibility::Masked);
    assert_eq!(support.visibility("bank_card"), &Visibility::Deny);
    assert_eq!(support.unclassified, Visibility::Raw);
    assert_eq!(support.max_rows, Some(500));
    assert_eq!(support.purposes, ["customer_service"]);
    assert!(support.functions.is_empty());

    let analyst = &p.roles["analyst"];
    assert_eq!(
        analyst.visibility("id_number"),
        &Visibility::Custom(Mask::Hash)
    );
    assert_eq!(analyst.max_rows, None);

    let dba = &p.roles["dba"];
    assert!(dba.all_statements);
    assert_eq!(dba.statements.len(), StatementKind::GRANTABLE.len());
    assert!(!dba.is_restricted(p));
    assert!(support.is_restricted(p) && analyst.is_restricted(p));
    assert_eq!(
        p.role_for_user("cs_bob").map(|r| r.name.as_str()),
        Some("support")
    );
    assert!(p.role_for_user("mallory").is_none());

    assert_eq!(
        p.sha256,
        hex::encode(Sha256::digest(DESIGN_EXAMPLE.as_bytes()))
    );
    // design.md defines two classes that no tag uses yet.
    let unused: Vec<&str> = l.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        unused,
        ["classes.email", "classes.birth_date"],
        "{}",
        l.warnings
    );
    assert!(p.summary().starts_with(
        "policy ok: 3 roles (analyst, dba, support), 5 classes, 3 column tags, sha256 "
    ));
}

#[test]
fn defaults_and_optional_keys() {
    let text = format!(
        "{BASE}'public.\"a.b\".*' = \"phone\"\n\
         [defaults]\nunknown_users = \"guest\"\n\
         [roles.guest]\nusers = [\"guest_*\"]\nstatements = [\"select\", \"select\", \"explain\"]\n\
         tables = [\"*.\\\"x.y\\\"\"]\nunclassified = {{ fn = \"redact\" }}\n\
         functions = [\"*\", \"util.fmt_*\"]\n\
         see = {{ phone = {{ fn = \"sql\", expr = \"left({{col}}, 3) || '****'\" }} }}\n"
    );
    let l = loaded(&text);
    let p = &l.policy;
    assert_eq!(p.unknown_users, UnknownUsers::Role("guest".into()));
    let tag = &p.columns[1];
    assert_eq!(
        (
            tag.schema.text.as_str(),
            tag.table.text.as_str(),
            tag.column.text.as_str()
        ),
        ("public", "a.b", "*")
    );
    let guest = &p.roles["guest"];
    assert_eq!(
        guest.statements,
        [StatementKind::Select, StatementKind::Explain]
    );
    assert_eq!(guest.tables[0].table.text, "x.y");
    assert!(guest.may_touch("any", "x.y"));
    assert_eq!(guest.see_default, Visibility::Masked);
    assert_eq!(
        guest.unclassified,
        Visibility::Custom(Mask::Redact { with: "***".into() })
    );
    assert_eq!(
        guest.visibility("phone"),
        &Visibility::Custom(Mask::Sql {
            template: "left({col}, 3) || '****'".into()
        })
    );
    let functions: Vec<&str> = guest.functions.iter().map(|f| f.text.as_str()).collect();
    assert_eq!(functions, ["*.*", "util.fmt_*"]);
    assert!(l.warnings.is_empty(), "{}", l.warnings);
}

#[test]
fn integers_accept_toml_notations() {
    let text = format!(
        "{BASE}[roles.r]\nusers = [\"u\"]\nstatements = [\"select\"]\ntables = [\"*\"]\n\
         max_rows = 1_000\n"
    );
    assert_eq!(loaded(&text).policy.roles["r"].max_rows, Some(1000));
    let text = format!(
        "{BASE}[roles.r]\nusers = [\"u\"]\nstatements = [\"select\"]\ntables = [\"*\"]\n\
         max_rows = 0x10\n"
    );
    assert_eq!(loaded(&text).policy.roles["r"].max_rows, Some(16));
}

#[test]
fn warnings_do_not_reject_the_policy() {
    let w = warnings(
        "version = 1\n[classes.phone]\nlevel = 3\nmask = { fn = \"null\" }\n\
         [defaults]\nunknown_users = \"dba\"\n\
         [roles.dba]\nusers = [\"postgres\"]\nstatements = [\"all\"]\ntables = [\"*\"]\n\
         see = { default = \"raw\" }\n",
    );
    let text: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "p.toml:2:10: warning: classes.phone: class \"phone\" is not used by any [columns] \
             tag, so it protects nothing; tag columns with it or remove it",
            "p.toml:6:17: warning: defaults.unknown_users: every user that matches no role gets \
             role \"dba\", which is unrestricted (all statements, all tables, every class raw); \
             prefer \"deny\" or a restricted role",
        ]
    );

    let w = warnings("version = 1\n");
    assert_eq!(w.len(), 1);
    assert!(w[0].message.starts_with("no roles are defined"), "{}", w[0]);

    let w = warnings(&format!(
        "{BASE}\"public.*.phone\" = \"phone\"\n\"public.orders.phone\" = \"phone\"\n"
    ));
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!((w[1].line, w[1].column), (8, 1));
    assert!(w[1]
        .message
        .starts_with("this tag repeats \"public.*.phone\" (line 7, column 1)"));
}

#[test]
fn unused_class_warnings_wait_for_a_valid_policy() {
    let diags = match load("p.toml", "version = 1\n[classes.a]\nlevel = 9\nmask = { fn = \"null\" }\n[classes.b]\nlevel = 1\nmask = { fn = \"null\" }\n") {
        Ok(_) => panic!("level 9 must not load"),
        Err(d) => d,
    };
    assert_eq!(diags.error_count(), 1, "{diags}");
    // Warnings that need a valid model (unused classes) are only computed once it loads.
    assert_eq!(diags.warning_count(), 0, "{diags}");
}

#[test]
fn unmatched_tags_names_tags_without_columns() {
    let p = loaded(DESIGN_EXAMPLE).policy;
    let catalog = [
        ("public", "customers", "id"),
        ("public", "customers", "phone"),
        ("public", "orders", "card_no"),
    ];
    assert_eq!(
        unmatched_tags(&p, catalog.iter().copied()),
        ["public.customers.id_card"]
    );
    assert_eq!(unmatched_tags(&p, std::iter::empty()).len(), 3);
    // Case-sensitive, like the catalog.
    assert_eq!(
        unmatched_tags(&p, [("public", "Customers", "phone")]).len(),
        3
    );
}

/// Every diagnostic points inside the text (1-based line and column that exist).
fn assert_positions_exist(text: &str, diags: &[PolicyError]) {
    let lines: Vec<&str> = text.split('\n').collect();
    for d in diags {
        assert!(d.line >= 1 && d.line <= lines.len(), "{d}");
        let width = lines[d.line - 1]
            .trim_start_matches('\u{feff}')
            .chars()
            .count();
        assert!(d.column >= 1 && d.column <= width + 1, "{d}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let diags = diagnostics(&text);
            assert_positions_exist(&text, &diags);
        }

        #[test]
        fn edited_policies_never_panic(
            at in 0usize..DESIGN_EXAMPLE.len(),
            cut in 0usize..40,
            insert in prop::sample::select(vec![
                "", "\"", "[", "]", "{", "}", "=", "\n", "*", ".", "\"\"", "-1", "x", "é", "[roles.x]\n",
                "{col}", "fn = \"sql\"", "'", "#",
            ]),
        ) {
            let mut at = at;
            while !DESIGN_EXAMPLE.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(DESIGN_EXAMPLE.len());
            while !DESIGN_EXAMPLE.is_char_boundary(end) {
                end -= 1;
            }
            let text = format!("{}{insert}{}", &DESIGN_EXAMPLE[..at], &DESIGN_EXAMPLE[end..]);
            let diags = diagnostics(&text);
            assert_positions_exist(&text, &diags);
            // A rejected policy always says why.
            if let Err(d) = load("p.toml", &text) {
                prop_assert!(d.has_errors());
            }
        }
    }
}

#[test]
fn header_tables_work_like_inline_tables() {
    let text = format!(
        "{BASE}[roles.support]\nusers = [\"support_app\"]\nstatements = [\"select\"]\n\
         tables = [\"public.customers\"]\n\n[roles.support.see]\ndefault = \"deny\"\n\
         phone = {{ fn = \"redact\", with = \"hidden\" }}\n"
    );
    let p = loaded(&text).policy;
    let support = &p.roles["support"];
    assert_eq!(support.see_default, Visibility::Deny);
    assert_eq!(
        support.visibility("phone"),
        &Visibility::Custom(Mask::Redact {
            with: "hidden".into()
        })
    );

    let text = format!(
        "{BASE}[roles.support]\nusers = [\"support_app\"]\nstatements = [\"select\"]\n\
         tables = [\"public.customers\"]\n[roles.support.see]\nphone = \"raw\"\nemail = \"raw\"\n"
    );
    assert_errors(
        "unknown class in a see header table",
        &text,
        BASE_LINES,
        &[(7, 1, "roles.support.see.email", "unknown class \"email\"")],
    );
}
