//! The demo `shop` schema with known raw values, login roles and test policies, so that
//! enforcement tests can assert that no raw protected value ever reaches a client.

use std::sync::Mutex;

use super::pg::postgres;

/// Customer names (class person_name), one per customer id 1..=10.
pub const NAMES: [&str; 10] = [
    "张伟强",
    "王秀英",
    "李娜娜",
    "刘洋洋",
    "陈静怡",
    "杨帆远",
    "赵磊磊",
    "黄敏慧",
    "周建国",
    "吴芳芳",
];
/// Resident ID numbers (class id_number).
pub const ID_CARDS: [&str; 10] = [
    "110105198001150021",
    "310104198502200032",
    "440106199003250043",
    "510107197504300054",
    "330106198806050065",
    "320102199210100076",
    "420103198312150087",
    "370102197908200098",
    "210102198611250109",
    "610103199501300110",
];
/// Mobile phones (class phone).
pub const PHONES: [&str; 10] = [
    "13812345670",
    "13812345671",
    "13812345672",
    "13812345673",
    "13812345674",
    "13812345675",
    "13812345676",
    "13812345677",
    "13812345678",
    "13812345679",
];
/// E-mail addresses (class email).
pub const EMAILS: [&str; 10] = [
    "zhang.weiqiang@example.com",
    "wang.xiuying@example.com",
    "li.nana@example.com",
    "liu.yangyang@example.com",
    "chen.jingyi@example.com",
    "yang.fanyuan@example.com",
    "zhao.leilei@example.com",
    "huang.minhui@example.com",
    "zhou.jianguo@example.com",
    "wu.fangfang@example.com",
];
/// Bank cards (class bank_card, denied to support).
pub const CARDS: [&str; 10] = [
    "6222021234567890120",
    "6222021234567890121",
    "6222021234567890122",
    "6222021234567890123",
    "6222021234567890124",
    "6222021234567890125",
    "6222021234567890126",
    "6222021234567890127",
    "6222021234567890128",
    "6222021234567890129",
];
/// Postal addresses (class address).
pub const ADDRESSES: [&str; 10] = [
    "北京市朝阳区建国路一号院",
    "上海市黄浦区南京东路二号",
    "广州市天河区体育西路三号",
    "成都市锦江区春熙路四号楼",
    "杭州市西湖区文三路五号楼",
    "南京市玄武区中山路六号楼",
    "武汉市江汉区解放大道七号",
    "济南市历下区泉城路八号楼",
    "沈阳市和平区太原街九号楼",
    "西安市碑林区南大街十号楼",
];
/// Birth dates (class birth_date); none is on 1 January, so a year truncation differs.
pub const BIRTH_DATES: [&str; 10] = [
    "1980-01-15",
    "1985-02-20",
    "1990-03-25",
    "1975-04-30",
    "1988-06-05",
    "1992-10-10",
    "1983-12-15",
    "1979-08-20",
    "1986-11-25",
    "1995-01-30",
];
/// Ship phone of orders 4 and 5 (orders 1..=3 ship to their customer's phone).
pub const OTHER_PHONE: &str = "13900000001";
/// Ship address of every order.
pub const SHIP_ADDRESS: &str = "深圳市南山区科技园十一号楼";
/// Key of the `hash` mask in the test proxy config (must never reach a client).
pub const HASH_KEY: &str = "pgveil-test-hash-key-0123456789";

/// Every raw protected value, plus the hash key and its HMAC pads: none may appear in
/// what a restricted role receives.
pub fn forbidden() -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for list in [
        NAMES,
        ID_CARDS,
        PHONES,
        EMAILS,
        CARDS,
        ADDRESSES,
        BIRTH_DATES,
    ] {
        v.extend(list.iter().map(|s| (*s).to_string()));
    }
    v.push(OTHER_PHONE.into());
    v.push(SHIP_ADDRESS.into());
    v.push(HASH_KEY.into());
    let hex: String = HASH_KEY.bytes().map(|b| format!("{b:02x}")).collect();
    v.push(hex);
    // The HMAC pads the `hash` mask's SQL carries are the key itself (XOR a constant).
    for pad in [0x36u8, 0x5c] {
        let mut block = [0u8; 64];
        block[..HASH_KEY.len()].copy_from_slice(HASH_KEY.as_bytes());
        v.push(block.iter().map(|b| format!("{:02x}", b ^ pad)).collect());
    }
    v
}

/// Login roles of the fixture (cluster-wide, created idempotently).
pub const LOGINS: [&str; 9] = [
    "support_app",
    "cs_alice",
    "bi",
    "dba_carol",
    "capped",
    "agent",
    "scratch",
    "desk_a",
    "desk_b",
];

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL creating the schema, rows, view, decoy schema and grants.
pub fn schema_sql() -> String {
    let mut sql = String::from(
        "DROP VIEW IF EXISTS customer_view; DROP VIEW IF EXISTS contact_card; DROP TABLE IF EXISTS orders; DROP TABLE IF EXISTS customers;
         DROP SCHEMA IF EXISTS evil CASCADE;
         CREATE TABLE customers (id bigint primary key, name text, id_card text, phone text unique,
           email text, bank_card text, address text, birth_date date,
           vip_level int CHECK (vip_level >= 0), created_at timestamptz default '2026-01-01 00:00:00+00');
         CREATE TABLE orders (id bigint primary key, customer_id bigint references customers(id),
           amount numeric, ship_phone text, ship_address text, status text,
           created_at timestamptz default '2026-02-01 00:00:00+00');
         CREATE VIEW customer_view AS SELECT id, name, phone FROM customers;
         CREATE VIEW contact_card AS SELECT id, phone, id_card AS ident FROM customers;
         CREATE SCHEMA evil; CREATE TABLE evil.customers (id bigint, phone text);
         INSERT INTO evil.customers VALUES (1, 'decoy');\n",
    );
    for i in 0..10 {
        sql.push_str(&format!(
            "INSERT INTO customers (id, name, id_card, phone, email, bank_card, address, birth_date, vip_level) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {});\n",
            i + 1,
            q(NAMES[i]),
            q(ID_CARDS[i]),
            q(PHONES[i]),
            q(EMAILS[i]),
            q(CARDS[i]),
            q(ADDRESSES[i]),
            q(BIRTH_DATES[i]),
            i % 3
        ));
    }
    for i in 0..5 {
        let phone = if i < 3 {
            PHONES.get(i).copied().unwrap_or(OTHER_PHONE)
        } else {
            OTHER_PHONE
        };
        sql.push_str(&format!(
            "INSERT INTO orders (id, customer_id, amount, ship_phone, ship_address, status) VALUES ({}, {}, {}.50, {}, {}, 'paid');\n",
            i + 1,
            i + 1,
            (i + 1) * 10,
            q(phone),
            q(SHIP_ADDRESS)
        ));
    }
    for login in LOGINS {
        sql.push_str(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{login}') THEN CREATE ROLE {login} LOGIN; END IF; END $$;
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {login};
             GRANT USAGE ON SCHEMA evil TO {login}; GRANT SELECT ON evil.customers TO {login};\n"
        ));
    }
    sql
}

/// Serialises fixture setup: roles are cluster-wide and concurrent CREATE ROLE / GRANT
/// from parallel tests fail with "tuple concurrently updated".
static SETUP: Mutex<()> = Mutex::new(());

/// Create database `name` with the shop schema and rows (replacing earlier content).
pub fn shop_db(name: &str) -> String {
    let _guard = SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let pg = postgres();
    pg.create_database(name);
    pg.psql_admin(name, &schema_sql());
    name.to_string()
}

/// The example policy of deploy/examples as shipped (support needs a purpose).
pub fn example_policy() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/policy.toml"
    ))
    .expect("read deploy/examples/policy.toml")
}

/// Extra roles appended to the example policy by [`test_policy`].
pub const EXTRA_ROLES: &str = r#"
# max_rows = 3 over customers.
[roles.capped]
users = ["capped"]
statements = ["select"]
tables = ["public.customers"]
see = { default = "masked", bank_card = "deny" }
max_rows = 3

# Support with a purpose binding.
[roles.agent]
users = ["agent"]
statements = ["select", "update"]
tables = ["public.customers", "public.orders"]
see = { default = "masked", bank_card = "deny" }
purposes = ["customer_service"]

# Two users of one role, each with a schema of their own named after them (desk_a has
# one, desk_b not), which `"$user"` in search_path puts first.
[roles.desk]
users = ["desk_*"]
statements = ["select"]
tables = ["public.*", "desk_*.*"]
see = { default = "masked" }

# May create temp tables, copy out and explain: everything masked.
[roles.scratch]
users = ["scratch"]
statements = ["select", "insert", "ddl", "copy_to", "explain"]
tables = ["public.customers", "public.orders", "pg_temp.*", "evil.*"]
see = { default = "masked" }
"#;

/// The policy of most tests: the example policy without the support purpose, plus
/// [`EXTRA_ROLES`].
pub fn test_policy() -> String {
    // contact_card is tagged only on its phone; its `ident` shows id_card untagged.
    let mut p = example_policy()
        .replace("purposes = [\"customer_service\"]", "")
        .replace(
            "\"public.orders.ship_address\"    = \"address\"",
            "\"public.orders.ship_address\"    = \"address\"\n\"public.contact_card.phone\" = \"phone\"",
        );
    p.push_str(EXTRA_ROLES);
    p
}
