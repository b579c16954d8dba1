//! What the demo prints once it is ready: how to connect as each kind of user, what to
//! try, and where the policy, audit log and other files are.
//!
//! The claims ("masked", "denied", "hashed") describe the embedded example policy; the
//! tests load that policy and check them, so the banner cannot drift from it silently.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::files::DemoFiles;
use super::setup::DATABASE;

/// Everything the banner shows.
#[derive(Debug)]
pub struct BannerInfo<'a> {
    pub proxy: SocketAddr,
    pub postgres_port: u16,
    pub postgres_version: &'a str,
    pub dir: &'a Path,
    pub files: &'a DemoFiles,
    pub server_log: &'a Path,
    pub customers: usize,
    pub orders: usize,
    pub startup: Duration,
}

/// A psql command line for `user` (password = user name) at `host:port`.
pub fn psql(addr: SocketAddr, user: &str) -> String {
    format!(
        "psql \"host={} port={} dbname={DATABASE} user={user} password={user}\"",
        addr.ip(),
        addr.port()
    )
}

/// The text printed when the demo is ready.
pub fn render(info: &BannerInfo<'_>) -> String {
    let rule = "─".repeat(78);
    let p = info.proxy;
    let direct = SocketAddr::new(p.ip(), info.postgres_port);
    let mut s = String::new();
    let _ = write!(
        s,
        "\n{rule}\n pgveil demo is ready (started in {:.1} s)\n{rule}\n\
         \x20Database \"{DATABASE}\" on {}: {} customers, {} orders (generated; no real person).\n\
         \x20Connect through pgveil at {p}. Every password equals the user name.\n",
        info.startup.as_secs_f64(),
        info.postgres_version,
        info.customers,
        info.orders,
    );
    let _ = write!(
        s,
        "\n 1. Customer service: personal data masked, bank cards denied (role \"support\")\n\
         \x20   {}\n\
         \x20     SET pgveil.purpose = 'customer_service';   -- support must declare a purpose\n\
         \x20     SELECT id, name, id_card, phone, email, address FROM customers WHERE id = 42;\n\
         \x20     SELECT * FROM customers LIMIT 3;           -- refused: * includes bank_card\n\
         \x20     SELECT id, amount, status, ship_phone FROM orders WHERE customer_id = 7;\n\
         \x20   (also cs_alice)\n",
        psql(p, "support_app"),
    );
    let _ = write!(
        s,
        "\n 2. Analyst: pseudonymised; ID numbers and phones are keyed hashes (role \"analyst\")\n\
         \x20   {}\n\
         \x20     SELECT name, id_card, phone, birth_date FROM customers LIMIT 5;\n\
         \x20     SELECT c.phone, count(*), sum(o.amount) FROM customers c\n\
         \x20       JOIN orders o ON o.customer_id = c.id GROUP BY c.phone ORDER BY 2 DESC LIMIT 5;\n\
         \x20     UPDATE customers SET vip_level = 5;        -- refused: analysts only SELECT\n\
         \x20   (also analyst_bob)\n",
        psql(p, "bi"),
    );
    let _ = write!(
        s,
        "\n 3. DBA: raw data, every statement still audited (role \"dba\")\n\
         \x20   {}\n\
         \x20     SELECT * FROM customers LIMIT 3;\n\
         \x20   (also postgres)\n",
        psql(p, "dba_carol"),
    );
    let _ = write!(
        s,
        "\n Compare with PostgreSQL directly (bypasses pgveil):\n    {}\n",
        psql(direct, "bi"),
    );
    let f = info.files;
    let _ = write!(
        s,
        "\n Files in {} (removed when the demo stops):\n\
         \x20  policy      {}   (edit it; pgveil reloads it)\n\
         \x20  audit log   {}   (tail -f it while you query)\n\
         \x20  config      {}\n\
         \x20  hash key    {}\n\
         \x20  server log  {}\n\
         \x20  metrics     http://{}/metrics\n",
        info.dir.display(),
        f.policy.display(),
        f.audit_log.display(),
        f.config.display(),
        f.hash_key.display(),
        info.server_log.display(),
        f.metrics,
    );
    let _ = write!(
        s,
        "\n Ctrl-C to stop: pgveil and PostgreSQL stop and the files above are removed.\n{rule}\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::files::POLICY_TOML;
    use crate::demo::setup::{Persona, USERS};
    use pgveil_policy::model::{Mask, Visibility};

    fn files(dir: &Path) -> DemoFiles {
        DemoFiles {
            config: dir.join("pgveil.toml"),
            policy: dir.join("policy.toml"),
            hash_key: dir.join("hash.key"),
            catalog_password: dir.join("catalog.password"),
            audit_log: dir.join("audit.jsonl"),
            metrics: "127.0.0.1:9187".parse().unwrap(),
        }
    }

    #[test]
    fn banner_shows_connections_files_and_how_to_stop() {
        let dir = Path::new("/tmp/pgveil-demo-1234abcd");
        let f = files(dir);
        let text = render(&BannerInfo {
            proxy: "127.0.0.1:6433".parse().unwrap(),
            postgres_port: 54321,
            postgres_version: "PostgreSQL 15.8",
            dir,
            files: &f,
            server_log: &dir.join("data/server.log"),
            customers: 1000,
            orders: 5000,
            startup: Duration::from_millis(2345),
        });
        for needle in [
            "psql \"host=127.0.0.1 port=6433 dbname=shop user=support_app password=support_app\"",
            "psql \"host=127.0.0.1 port=6433 dbname=shop user=bi password=bi\"",
            "psql \"host=127.0.0.1 port=6433 dbname=shop user=dba_carol password=dba_carol\"",
            "port=54321 dbname=shop user=bi",
            "/tmp/pgveil-demo-1234abcd/policy.toml",
            "/tmp/pgveil-demo-1234abcd/audit.jsonl",
            "1000 customers, 5000 orders",
            "started in 2.3 s",
            "Ctrl-C to stop",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    /// The banner's claims hold for the embedded policy.
    #[test]
    fn banner_claims_match_the_example_policy() {
        let policy = pgveil_policy::load::load("policy.toml", POLICY_TOML)
            .expect("the example policy loads")
            .policy;
        for (user, persona) in USERS {
            let role = policy.role_for_user(user);
            match persona {
                Persona::Support => {
                    let role = role.expect("support users have a role");
                    assert_eq!(role.name, "support");
                    assert!(role.purposes.iter().any(|p| p == "customer_service"));
                    assert_eq!(*role.visibility("bank_card"), Visibility::Deny);
                    assert_eq!(*role.visibility("phone"), Visibility::Masked);
                }
                Persona::Analyst => {
                    let role = role.expect("analysts have a role");
                    assert_eq!(role.name, "analyst");
                    for class in ["id_number", "phone"] {
                        assert_eq!(*role.visibility(class), Visibility::Custom(Mask::Hash));
                    }
                    assert!(role.is_restricted(&policy));
                }
                Persona::Dba => {
                    let role = role.expect("DBAs have a role");
                    assert_eq!(role.name, "dba");
                    assert!(!role.is_restricted(&policy));
                }
                Persona::Catalog => {
                    assert!(
                        role.is_none(),
                        "the catalog reader never logs in through pgveil"
                    );
                }
            }
        }
    }
}
