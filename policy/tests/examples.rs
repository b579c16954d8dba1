//! The shipped example policy (deploy/examples/policy.toml) must load cleanly: no errors
//! and no warnings, with the roles and classes the demo relies on.

use pgveil_policy::load::load;
use pgveil_policy::model::{Mask, StatementKind, UnknownUsers, Visibility};

const EXAMPLE: &str = include_str!("../../deploy/examples/policy.toml");

#[test]
fn example_policy_loads_without_errors_or_warnings() {
    let loaded = match load("deploy/examples/policy.toml", EXAMPLE) {
        Ok(l) => l,
        Err(d) => panic!("example policy must load:\n{d}"),
    };
    assert!(loaded.warnings.is_empty(), "{}", loaded.warnings);
    let p = &loaded.policy;
    assert_eq!(p.unknown_users, UnknownUsers::Deny);
    let classes: Vec<(&str, u8)> = p
        .classes
        .values()
        .map(|c| (c.name.as_str(), c.level))
        .collect();
    assert_eq!(
        classes,
        [
            ("address", 3),
            ("bank_card", 4),
            ("birth_date", 3),
            ("email", 2),
            ("id_number", 4),
            ("person_name", 2),
            ("phone", 3),
        ]
    );
    assert_eq!(p.columns.len(), 9);

    let support = &p.roles["support"];
    assert!(support.matches_user("support_app") && support.matches_user("cs_alice"));
    assert_eq!(
        support.statements,
        [StatementKind::Select, StatementKind::Update]
    );
    assert_eq!(support.visibility("bank_card"), &Visibility::Deny);
    assert_eq!(support.visibility("phone"), &Visibility::Masked);
    assert_eq!(support.max_rows, Some(500));
    assert_eq!(support.purposes, ["customer_service"]);

    let analyst = &p.roles["analyst"];
    assert_eq!(analyst.statements, [StatementKind::Select]);
    assert_eq!(
        analyst.visibility("id_number"),
        &Visibility::Custom(Mask::Hash)
    );
    assert_eq!(analyst.visibility("phone"), &Visibility::Custom(Mask::Hash));
    assert_eq!(analyst.visibility("person_name"), &Visibility::Masked);
    assert!(analyst.may_touch("public", "orders") && !analyst.may_touch("audit", "log"));

    let dba = &p.roles["dba"];
    assert!(!dba.is_restricted(p) && support.is_restricted(p) && analyst.is_restricted(p));
    assert_eq!(
        p.role_for_user("dba_ops").map(|r| r.name.as_str()),
        Some("dba")
    );
    assert!(p.role_for_user("mallory").is_none());

    let catalog = [
        ("public", "customers", "name"),
        ("public", "customers", "id_card"),
        ("public", "customers", "phone"),
        ("public", "customers", "email"),
        ("public", "customers", "bank_card"),
        ("public", "customers", "address"),
        ("public", "customers", "birth_date"),
        ("public", "orders", "ship_phone"),
        ("public", "orders", "ship_address"),
    ];
    assert!(pgveil_policy::load::unmatched_tags(p, catalog).is_empty());
}
