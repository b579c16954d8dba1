//! Tests of the sample-data generators: every generated value is checked against the
//! rules real values follow (check digits, lengths, prefixes, uniqueness).

use std::collections::HashSet;

use super::*;

#[test]
fn id_check_digit_matches_known_valid_numbers() {
    for id in [
        "11010519491231002X",
        "440524188001010014",
        "110101199003074477",
    ] {
        assert_eq!(
            id_check_digit(&id[..17]),
            id.chars().last().unwrap(),
            "{id}"
        );
        assert!(id_number_valid(id), "{id}");
    }
}

#[test]
fn id_validation_rejects_wrong_numbers() {
    assert!(!id_number_valid("110105194912310021"), "wrong check digit");
    assert!(!id_number_valid("11010519491331002X"), "month 13");
    assert!(!id_number_valid("11010519490230002X"), "30 February");
    assert!(!id_number_valid("11010519491231002"), "too short");
    assert!(!id_number_valid("11010519491231002XX"), "too long");
    assert!(!id_number_valid("王1010519491231002X"), "non-digit");
    assert_eq!(id_check_digit("1101051949123100"), '?');
    assert_eq!(id_check_digit("1101051949123100a"), '?');
    assert_eq!(id_check_digit("一二三"), '?');
}

#[test]
fn luhn_matches_known_numbers() {
    for valid in [
        "4111111111111111",
        "79927398713",
        "5555555555554444",
        "0000000000",
    ] {
        assert!(luhn_valid(valid), "{valid}");
        let (partial, check) = valid.split_at(valid.len() - 1);
        assert_eq!(luhn_check_digit(partial).to_string(), check, "{valid}");
    }
    for invalid in [
        "4111111111111112",
        "79927398710",
        "",
        "7",
        "41111111111a1111",
        "卡号",
    ] {
        assert!(!luhn_valid(invalid), "{invalid}");
    }
    assert_eq!(luhn_check_digit("12x"), '?');
}

#[test]
fn dates_round_trip() {
    for days in -30_000..30_000 {
        let d = Date::from_days(days);
        assert_eq!(d.to_days(), days);
        assert_eq!(Date::parse_compact(&d.compact()), Some(d));
    }
    assert_eq!(
        Date::from_days(0),
        Date {
            year: 1970,
            month: 1,
            day: 1
        }
    );
    assert_eq!(Date::parse_compact("20000229").map(|d| d.day), Some(29));
    assert_eq!(Date::parse_compact("19000229"), None);
    assert_eq!(Timestamp(0).to_string(), "1970-01-01 08:00:00+08");
    assert_eq!(SHOP_OPENED.to_string(), "2019-01-01 00:00:00+08");
    assert_eq!(DATA_ENDS.to_string(), "2026-11-20 00:00:00+08");
}

#[test]
fn generation_is_deterministic() {
    let a = generate(7, 50, 200);
    let b = generate(7, 50, 200);
    let c = generate(8, 50, 200);
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
}

#[test]
fn every_customer_value_is_valid() {
    let (customers, _) = generate(42, 1000, 0);
    assert_eq!(customers.len(), 1000);
    let area_codes: HashSet<&str> = AREAS.iter().map(|a| a.code).collect();
    for (i, c) in customers.iter().enumerate() {
        assert_eq!(c.id, i as i64 + 1);
        // Names: a surname from the list and one or two given characters, all multibyte.
        let chars = c.name.chars().count();
        assert!((2..=4).contains(&chars), "{}", c.name);
        assert!(c.name.len() > chars, "multibyte: {}", c.name);
        assert!(
            SURNAMES.iter().any(|(s, _)| c.name.starts_with(s)),
            "{}",
            c.name
        );
        // ID number: real area code, birth date embedded, valid check digit.
        assert_eq!(c.id_card.len(), 18, "{}", c.id_card);
        assert!(id_number_valid(&c.id_card), "{}", c.id_card);
        assert!(area_codes.contains(&c.id_card[..6]), "{}", c.id_card);
        assert_eq!(&c.id_card[6..14], c.birth_date.compact(), "{}", c.id_card);
        assert_ne!(&c.id_card[14..17], "000");
        assert!(c.birth_date >= BIRTH_FIRST && c.birth_date <= BIRTH_LAST);
        // Phone: 11 digits with a real prefix.
        assert_eq!(c.phone.len(), 11, "{}", c.phone);
        assert!(c.phone.bytes().all(|b| b.is_ascii_digit()), "{}", c.phone);
        assert!(MOBILE_PREFIXES.contains(&&c.phone[..3]), "{}", c.phone);
        // E-mail: ascii local part at one of the domains.
        let (local, domain) = c.email.split_once('@').expect("an @ in every e-mail");
        assert!(!local.is_empty() && local.is_ascii(), "{}", c.email);
        assert!(EMAIL_DOMAINS.contains(&domain), "{}", c.email);
        // Bank card: a real BIN, the BIN's length, Luhn-valid.
        assert!(luhn_valid(&c.bank_card), "{}", c.bank_card);
        assert!(
            CARD_BINS
                .iter()
                .any(|(bin, len)| c.bank_card.starts_with(bin) && c.bank_card.len() == *len),
            "{}",
            c.bank_card
        );
        assert!((16..=19).contains(&c.bank_card.len()));
        // Address: province first, Chinese, with a house number.
        assert!(
            AREAS.iter().any(|a| c.address.starts_with(a.province)),
            "{}",
            c.address
        );
        assert!(c.address.contains('号') && c.address.ends_with('室'));
        assert!((0..=5).contains(&c.vip_level));
        assert!(c.created_at >= SHOP_OPENED && c.created_at < DATA_ENDS);
        let adult = Date {
            year: c.birth_date.year + 18,
            ..c.birth_date
        };
        assert!(
            c.created_at.0 >= adult.to_days() * 86_400,
            "customers are adults"
        );
    }
    for (what, values) in [
        (
            "id_card",
            customers.iter().map(|c| &c.id_card).collect::<Vec<_>>(),
        ),
        ("phone", customers.iter().map(|c| &c.phone).collect()),
        ("email", customers.iter().map(|c| &c.email).collect()),
        (
            "bank_card",
            customers.iter().map(|c| &c.bank_card).collect(),
        ),
    ] {
        let unique: HashSet<_> = values.iter().collect();
        assert_eq!(unique.len(), values.len(), "{what} values are not unique");
    }
    let male = customers
        .iter()
        .filter(|c| (c.id_card.as_bytes()[16] - b'0') % 2 == 1)
        .count();
    assert!((350..650).contains(&male), "both sexes appear: {male} men");
}

#[test]
fn orders_reference_customers_and_look_real() {
    let (customers, orders) = generate(42, 1000, 5000);
    assert_eq!(orders.len(), 5000);
    for (i, o) in orders.iter().enumerate() {
        assert_eq!(o.id, i as i64 + 1);
        let c = usize::try_from(o.customer_id - 1)
            .ok()
            .and_then(|i| customers.get(i))
            .expect("order references an existing customer");
        assert!(o.created_at >= c.created_at && o.created_at < DATA_ENDS);
        assert!(
            o.amount_cents >= 900 && o.amount_cents < 1_000_000,
            "{}",
            o.amount()
        );
        assert!(STATUSES.contains(&o.status));
        assert_eq!(o.ship_phone.len(), 11);
        assert!(MOBILE_PREFIXES.contains(&&o.ship_phone[..3]));
        assert!(o.ship_address.ends_with('室'));
    }
    let own_phone = orders
        .iter()
        .filter(|o| customers[(o.customer_id - 1) as usize].phone == o.ship_phone)
        .count();
    assert!(own_phone > 3500 && own_phone < 4500, "{own_phone}");
    let buyers: HashSet<i64> = orders.iter().map(|o| o.customer_id).collect();
    assert!(buyers.len() > 500, "{} customers ordered", buyers.len());
    let mut per_customer = std::collections::HashMap::new();
    for o in &orders {
        *per_customer.entry(o.customer_id).or_insert(0) += 1;
    }
    let busiest = per_customer.values().max().copied().unwrap_or(0);
    assert!(busiest < 40, "one customer placed {busiest} orders");
    // Orders arrive evenly: the last 30 days hold roughly their share of ~7 years.
    let recent = orders
        .iter()
        .filter(|o| o.created_at.0 > DATA_ENDS.0 - 30 * 86_400)
        .count();
    assert!(
        (20..150).contains(&recent),
        "{recent} orders in the last 30 days"
    );
    assert_eq!(
        Order {
            amount_cents: 12_990,
            ..orders[0].clone()
        }
        .amount(),
        "129.90"
    );
}

#[test]
fn no_customers_means_no_orders() {
    let (customers, orders) = generate(1, 0, 10);
    assert!(customers.is_empty() && orders.is_empty());
}
