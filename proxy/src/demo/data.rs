//! Realistic, deterministic sample data for the demo `shop` database: Chinese names,
//! valid 18-digit resident ID numbers, mobile numbers, e-mails, Luhn-valid bank cards,
//! addresses, and orders that reference the customers.
//!
//! The values look real so that masking is convincing, but every one is generated here
//! from a seed: the same seed gives the same rows (within one build of pgveil).

use std::collections::HashSet;
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::lists::{
    Area, AREAS, CARD_BINS, COMPOUNDS, EMAIL_DOMAINS, GIVEN, MOBILE_PREFIXES, STATUSES, STREETS,
    SURNAMES,
};

/// A calendar date (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Days since 1970-01-01.
    pub fn to_days(self) -> i64 {
        days_from_civil(i64::from(self.year), self.month, self.day)
    }

    /// The date `days` after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        let (y, m, d) = civil_from_days(days);
        Date {
            // Generated dates lie within a few centuries of 1970.
            year: i32::try_from(y).unwrap_or(i32::MAX),
            month: m,
            day: d,
        }
    }

    /// `YYYYMMDD`, as in resident ID numbers.
    pub fn compact(self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// Parse `YYYYMMDD`; None unless it is a real date.
    pub fn parse_compact(s: &str) -> Option<Date> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let year = s.get(0..4)?.parse().ok()?;
        let month = s.get(4..6)?.parse().ok()?;
        let day = s.get(6..8)?.parse().ok()?;
        let d = Date { year, month, day };
        (Date::from_days(d.to_days()) == d).then_some(d)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A point in time, in seconds since the Unix epoch. Displayed in China Standard Time
/// (`2024-03-05 10:22:13+08`), a literal PostgreSQL reads as `timestamptz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

const CST_OFFSET_S: i64 = 8 * 3600;

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = self.0 + CST_OFFSET_S;
        let date = Date::from_days(local.div_euclid(86_400));
        let secs = local.rem_euclid(86_400);
        write!(
            f,
            "{date} {:02}:{:02}:{:02}+08",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// One row of `public.customers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub id_card: String,
    pub phone: String,
    pub email: String,
    pub bank_card: String,
    pub address: String,
    pub birth_date: Date,
    pub vip_level: i32,
    pub created_at: Timestamp,
}

/// One row of `public.orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: i64,
    pub customer_id: i64,
    /// The amount in fen (1/100 yuan); `numeric(12,2)` in the table.
    pub amount_cents: i64,
    pub ship_phone: String,
    pub ship_address: String,
    pub status: &'static str,
    pub created_at: Timestamp,
}

impl Order {
    /// The amount as PostgreSQL `numeric` text, e.g. `129.90`.
    pub fn amount(&self) -> String {
        format!("{}.{:02}", self.amount_cents / 100, self.amount_cents % 100)
    }
}

/// ISO 7064 MOD 11-2 weights of the 17 body digits of a resident ID number.
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for each remainder 0..=10.
const ID_CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// The check character (`0`–`9` or `X`) of a resident ID number whose first 17 digits
/// are `body`. Returns `?`, which is never a valid check character, unless `body` is
/// exactly 17 ASCII digits.
pub fn id_check_digit(body: &str) -> char {
    if body.len() != 17 || !body.bytes().all(|b| b.is_ascii_digit()) {
        return '?';
    }
    let sum: u32 = body
        .bytes()
        .zip(ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    ID_CHECK[(sum % 11) as usize]
}

/// Whether `id` is a well-formed 18-digit resident ID number: 17 digits, a real birth
/// date in positions 7–14, and the right check character.
pub fn id_number_valid(id: &str) -> bool {
    let (Some(body), Some(check)) = (id.get(..17), id.get(17..)) else {
        return false;
    };
    id.len() == 18
        && body.get(6..14).and_then(Date::parse_compact).is_some()
        && check.len() == 1
        && check.starts_with(id_check_digit(body))
}

/// Whether `digits` (all ASCII digits, at least two) passes the Luhn check, as every
/// bank card number does.
pub fn luhn_valid(digits: &str) -> bool {
    digits.len() >= 2 && digits.bytes().all(|b| b.is_ascii_digit()) && luhn_sum(digits, false) == 0
}

/// The digit that makes `partial` + digit Luhn-valid; `?` unless `partial` is ASCII
/// digits.
pub fn luhn_check_digit(partial: &str) -> char {
    if !partial.bytes().all(|b| b.is_ascii_digit()) {
        return '?';
    }
    let sum = luhn_sum(partial, true);
    let d = (10 - sum % 10) % 10;
    char::from(b'0' + d as u8)
}

/// Luhn sum (mod 10) of ASCII digits from the right; `doubling_first` says whether the rightmost
/// digit is doubled (true when a check digit will be appended after it).
fn luhn_sum(digits: &str, doubling_first: bool) -> u32 {
    digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if (i % 2 == 0) == doubling_first {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .fold(0, |acc, x| (acc + x) % 10)
}

/// Generate `n_customers` customers and `n_orders` orders from `seed`. Customer and
/// order ids run from 1 in order of `created_at`; ID numbers, phones, e-mails and bank
/// cards are unique among customers. With no customers there are no orders.
pub fn generate(seed: u64, n_customers: usize, n_orders: usize) -> (Vec<Customer>, Vec<Order>) {
    let mut g = Generator {
        rng: StdRng::seed_from_u64(seed),
        id_cards: HashSet::new(),
        phones: HashSet::new(),
        emails: HashSet::new(),
        cards: HashSet::new(),
    };
    let mut customers: Vec<Customer> = (0..n_customers).map(|_| g.customer()).collect();
    customers.sort_by_key(|c| c.created_at);
    for (i, c) in customers.iter_mut().enumerate() {
        c.id = i as i64 + 1;
    }
    let mut orders: Vec<Order> = if customers.is_empty() {
        Vec::new()
    } else {
        let active = ActiveTime::new(&customers);
        (0..n_orders)
            .map(|_| g.order(&customers, &active))
            .collect()
    };
    orders.sort_by_key(|o| o.created_at);
    for (i, o) in orders.iter_mut().enumerate() {
        o.id = i as i64 + 1;
    }
    (customers, orders)
}

/// First and last day of the birth dates (`1950-01-01` .. `2005-12-31`).
const BIRTH_FIRST: Date = Date {
    year: 1950,
    month: 1,
    day: 1,
};
const BIRTH_LAST: Date = Date {
    year: 2005,
    month: 12,
    day: 31,
};
/// The shop opened on 2019-01-01 (CST); the data ends on 2026-11-20.
const SHOP_OPENED: Timestamp = Timestamp(1_546_272_000);
const DATA_ENDS: Timestamp = Timestamp(1_795_104_000);

struct Generator {
    rng: StdRng,
    id_cards: HashSet<String>,
    phones: HashSet<String>,
    emails: HashSet<String>,
    cards: HashSet<String>,
}

impl Generator {
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    /// An index into a list sorted by frequency: low indexes come up more often.
    fn skewed_index(&mut self, len: usize) -> usize {
        let u: f64 = self.rng.random();
        ((u * u * len as f64) as usize).min(len - 1)
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.rng.random_range(0..10u8)))
            .collect()
    }

    fn customer(&mut self) -> Customer {
        let (name, pinyin) = self.name();
        let birth_date = Date::from_days(
            self.rng
                .random_range(BIRTH_FIRST.to_days()..=BIRTH_LAST.to_days()),
        );
        let home = self.pick(AREAS);
        let id_card = self.unique_id_card(home, birth_date);
        let phone = self.unique_phone();
        let email = self.unique_email(&pinyin, birth_date);
        let bank_card = self.unique_bank_card();
        let lives_in = self.pick(AREAS);
        let address = self.address(lives_in);
        let adult = Date {
            year: birth_date.year + 18,
            ..birth_date
        };
        let earliest = SHOP_OPENED
            .0
            .max((adult.to_days() * 86_400).min(DATA_ENDS.0 - 86_400));
        let created_at = Timestamp(self.rng.random_range(earliest..DATA_ENDS.0));
        let vip_level = match self.rng.random_range(0..100) {
            0..45 => 0,
            45..70 => 1,
            70..85 => 2,
            85..94 => 3,
            94..98 => 4,
            _ => 5,
        };
        Customer {
            id: 0,
            name,
            id_card,
            phone,
            email,
            bank_card,
            address,
            birth_date,
            vip_level,
            created_at,
        }
    }

    /// A name and its pinyin (surname + 1–2 given characters).
    fn name(&mut self) -> (String, String) {
        let (surname, surname_pinyin) = SURNAMES[self.skewed_index(SURNAMES.len())];
        let mut name = surname.to_owned();
        let mut py = surname_pinyin.to_owned();
        let given = if self.rng.random_bool(0.7) { 2 } else { 1 };
        for _ in 0..given {
            let (ch, p) = self.pick(GIVEN);
            name.push_str(ch);
            py.push_str(p);
        }
        (name, py)
    }

    fn unique_id_card(&mut self, area: Area, birth: Date) -> String {
        loop {
            // Odd sequence numbers are issued to men, even ones to women.
            let seq = self.rng.random_range(1..1000u32);
            let body = format!("{}{}{seq:03}", area.code, birth.compact());
            let id = format!("{body}{}", id_check_digit(&body));
            if self.id_cards.insert(id.clone()) {
                return id;
            }
        }
    }

    fn unique_phone(&mut self) -> String {
        loop {
            let phone = format!("{}{}", self.pick(MOBILE_PREFIXES), self.digits(8));
            if self.phones.insert(phone.clone()) {
                return phone;
            }
        }
    }

    fn unique_email(&mut self, pinyin: &str, birth: Date) -> String {
        let domain = self.pick(EMAIL_DOMAINS);
        let mut local = if domain == "qq.com" {
            // QQ mail addresses are usually the QQ number.
            let len = self.rng.random_range(5..=10);
            format!("{}{}", self.rng.random_range(1..10u8), self.digits(len - 1))
        } else {
            match self.rng.random_range(0..3) {
                0 => pinyin.to_owned(),
                1 => format!("{pinyin}{}", birth.year),
                _ => format!("{pinyin}{}", self.digits(3)),
            }
        };
        loop {
            let email = format!("{local}@{domain}");
            if self.emails.insert(email.clone()) {
                return email;
            }
            local.push_str(&self.digits(1));
        }
    }

    fn unique_bank_card(&mut self) -> String {
        loop {
            let (bin, len) = self.pick(CARD_BINS);
            let partial = format!("{bin}{}", self.digits(len - bin.len() - 1));
            let card = format!("{partial}{}", luhn_check_digit(&partial));
            if self.cards.insert(card.clone()) {
                return card;
            }
        }
    }

    fn address(&mut self, area: Area) -> String {
        let street = self.pick(STREETS);
        let number = self.rng.random_range(1..=999);
        let compound = self.pick(COMPOUNDS);
        let building = self.rng.random_range(1..=30);
        let unit = self.rng.random_range(1..=6);
        let room = self.rng.random_range(1..=32) * 100 + self.rng.random_range(1..=4);
        format!(
            "{}{}{}{street}{number}号{compound}{building}栋{unit}单元{room}室",
            area.province, area.city, area.district
        )
    }

    /// One order from a non-empty `customers`: every customer orders at the same rate
    /// from the day they joined, so the buyer is drawn in proportion to their time as a
    /// customer and the order time evenly within it.
    fn order(&mut self, customers: &[Customer], active: &ActiveTime) -> Order {
        let c = &customers[active.pick(self.rng.random_range(0..active.total()))];
        let created_at = Timestamp(self.rng.random_range(c.created_at.0..DATA_ENDS.0));
        let yuan: f64 = (self.rng.random_range(9.0f64.ln()..9999.0f64.ln())).exp();
        let cents = self.pick(&[0, 0, 90, 99, 50, 80]);
        let amount_cents = (yuan as i64).max(1) * 100 + cents;
        let ship_phone = if self.rng.random_bool(0.8) {
            c.phone.clone()
        } else {
            format!("{}{}", self.pick(MOBILE_PREFIXES), self.digits(8))
        };
        let ship_address = if self.rng.random_bool(0.7) {
            c.address.clone()
        } else {
            let elsewhere = self.pick(AREAS);
            self.address(elsewhere)
        };
        let age_days = (DATA_ENDS.0 - created_at.0) / 86_400;
        let status = if age_days < 14 {
            STATUSES[self.rng.random_range(0..4)]
        } else {
            match self.rng.random_range(0..100) {
                0..88 => "delivered",
                88..95 => "cancelled",
                _ => "refunded",
            }
        };
        Order {
            id: 0,
            customer_id: c.id,
            amount_cents,
            ship_phone,
            ship_address,
            status,
            created_at,
        }
    }
}

/// Running totals of each customer's seconds as a customer, to draw buyers by it.
struct ActiveTime {
    cumulative: Vec<i64>,
}

impl ActiveTime {
    fn new(customers: &[Customer]) -> ActiveTime {
        let mut sum = 0;
        let cumulative = customers
            .iter()
            .map(|c| {
                sum += (DATA_ENDS.0 - c.created_at.0).max(1);
                sum
            })
            .collect();
        ActiveTime { cumulative }
    }

    /// Sum of all weights (positive when there is a customer).
    fn total(&self) -> i64 {
        self.cumulative.last().copied().unwrap_or(1).max(1)
    }

    /// Index of the customer whose share contains `r` (0 <= r < total).
    fn pick(&self, r: i64) -> usize {
        self.cumulative
            .partition_point(|&w| w <= r)
            .min(self.cumulative.len().saturating_sub(1))
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests;
