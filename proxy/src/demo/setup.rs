//! Fills the demo cluster: login roles with SCRAM passwords, the `shop` database, its
//! schema and grants (`deploy/examples/demo-schema.sql`), and the generated rows loaded
//! with `COPY FROM STDIN`.
//!
//! Runs as `postgres` over the cluster's private Unix socket (trusted there).

use std::path::Path;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, NoTls};
use tracing::debug;

use super::data::{Customer, Order};
use super::error::DemoError;

/// The schema and grants of the `shop` database.
pub const SCHEMA_SQL: &str = include_str!("../../../deploy/examples/demo-schema.sql");

/// Name of the demo database.
pub const DATABASE: &str = "shop";

/// What a demo login is for; the banner groups users by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persona {
    /// Customer service: sees masked personal data.
    Support,
    /// BI / analysts: sees pseudonymised data.
    Analyst,
    /// Database administrator: sees everything.
    Dba,
    /// pgveil's own catalog reader.
    Catalog,
}

/// The demo logins. Each password equals the user name.
pub const USERS: &[(&str, Persona)] = &[
    ("support_app", Persona::Support),
    ("cs_alice", Persona::Support),
    ("bi", Persona::Analyst),
    ("analyst_bob", Persona::Analyst),
    ("postgres", Persona::Dba),
    ("dba_carol", Persona::Dba),
    ("pgveil_catalog", Persona::Catalog),
];

/// The catalog reader pgveil logs in as.
pub const CATALOG_USER: &str = "pgveil_catalog";

/// Connect as `postgres` to `db` over the Unix socket in `socket_dir`.
async fn connect(socket_dir: &Path, port: u16, db: &str) -> Result<Client, DemoError> {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(socket_dir)
        .port(port)
        .user("postgres")
        .dbname(db)
        .application_name("pgveil demo setup")
        .connect(NoTls)
        .await
        .map_err(DemoError::sql("connect to the demo cluster"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "demo setup connection ended");
        }
    });
    Ok(client)
}

/// Create the roles and the `shop` database with its schema, grants and rows.
pub async fn load(
    socket_dir: &Path,
    port: u16,
    customers: &[Customer],
    orders: &[Order],
) -> Result<(), DemoError> {
    let admin = connect(socket_dir, port, "postgres").await?;
    admin
        .batch_execute(&roles_sql())
        .await
        .map_err(DemoError::sql("create the demo roles"))?;
    // CREATE DATABASE cannot run inside the implicit transaction of a multi-statement query.
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .map_err(DemoError::sql("create database shop"))?;
    admin
        .batch_execute(&database_grants_sql())
        .await
        .map_err(DemoError::sql("grant access to database shop"))?;
    drop(admin);

    let shop = connect(socket_dir, port, DATABASE).await?;
    shop.batch_execute(SCHEMA_SQL)
        .await
        .map_err(DemoError::sql("create the shop schema"))?;
    copy_in(
        &shop,
        "COPY public.customers (id, name, id_card, phone, email, bank_card, address, \
         birth_date, vip_level, created_at) FROM STDIN",
        customers_copy_text(customers),
    )
    .await
    .map_err(DemoError::sql("load customers"))?;
    copy_in(
        &shop,
        "COPY public.orders (id, customer_id, amount, ship_phone, ship_address, status, \
         created_at) FROM STDIN",
        orders_copy_text(orders),
    )
    .await
    .map_err(DemoError::sql("load orders"))?;
    // Rows came with explicit ids: move the identity sequences past them, then give the
    // planner statistics.
    shop.batch_execute(
        "SELECT setval(pg_get_serial_sequence('public.customers', 'id'), \
                       coalesce(max(id), 0) + 1, false) FROM public.customers;\n\
         SELECT setval(pg_get_serial_sequence('public.orders', 'id'), \
                       coalesce(max(id), 0) + 1, false) FROM public.orders;\n\
         ANALYZE public.customers, public.orders;",
    )
    .await
    .map_err(DemoError::sql("finish loading"))?;
    Ok(())
}

/// `CREATE ROLE` for every demo login (password = user name, stored as SCRAM).
fn roles_sql() -> String {
    let mut sql = String::from("SET password_encryption = 'scram-sha-256';\n");
    for (user, _) in USERS {
        if *user == "postgres" {
            sql.push_str(&format!("ALTER ROLE {user} PASSWORD '{user}';\n"));
        } else {
            sql.push_str(&format!("CREATE ROLE {user} LOGIN PASSWORD '{user}';\n"));
        }
    }
    sql
}

/// Only the demo logins may connect to `shop`.
fn database_grants_sql() -> String {
    let users: Vec<&str> = USERS
        .iter()
        .map(|(u, _)| *u)
        .filter(|u| *u != "postgres")
        .collect();
    format!(
        "REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC;\n\
         GRANT CONNECT ON DATABASE {DATABASE} TO {};\n\
         GRANT ALL ON DATABASE {DATABASE} TO dba_carol;\n",
        users.join(", ")
    )
}

async fn copy_in(
    client: &Client,
    statement: &str,
    text: String,
) -> Result<(), tokio_postgres::Error> {
    let sink = client.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(text)).await?;
    let rows = sink.finish().await?;
    debug!(rows, statement, "copied");
    Ok(())
}

/// One value in COPY text format (backslash escapes for the few special characters).
fn push_field(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// One COPY text line from its fields.
fn push_line(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        push_field(out, f);
    }
    out.push('\n');
}

fn customers_copy_text(customers: &[Customer]) -> String {
    let mut out = String::with_capacity(customers.len() * 200);
    for c in customers {
        push_line(
            &mut out,
            &[
                &c.id.to_string(),
                &c.name,
                &c.id_card,
                &c.phone,
                &c.email,
                &c.bank_card,
                &c.address,
                &c.birth_date.to_string(),
                &c.vip_level.to_string(),
                &c.created_at.to_string(),
            ],
        );
    }
    out
}

fn orders_copy_text(orders: &[Order]) -> String {
    let mut out = String::with_capacity(orders.len() * 150);
    for o in orders {
        push_line(
            &mut out,
            &[
                &o.id.to_string(),
                &o.customer_id.to_string(),
                &o.amount(),
                &o.ship_phone,
                &o.ship_address,
                o.status,
                &o.created_at.to_string(),
            ],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_specials() {
        let mut out = String::new();
        push_line(&mut out, &["a\tb", "c\\d", "e\nf\r", "王"]);
        assert_eq!(out, "a\\tb\tc\\\\d\te\\nf\\r\t王\n");
    }

    #[test]
    fn copy_text_has_one_line_per_row_and_every_column() {
        let (customers, orders) = super::super::data::generate(3, 20, 50);
        let text = customers_copy_text(&customers);
        assert_eq!(text.lines().count(), 20);
        assert!(text.lines().all(|l| l.split('\t').count() == 10));
        let text = orders_copy_text(&orders);
        assert_eq!(text.lines().count(), 50);
        assert!(text.lines().all(|l| l.split('\t').count() == 7));
    }

    #[test]
    fn schema_grants_name_every_demo_role() {
        for (user, persona) in USERS {
            if *user != "postgres" {
                assert!(
                    SCHEMA_SQL.contains(user),
                    "{user} missing from demo-schema.sql"
                );
            }
            if *persona != Persona::Catalog && *user != "postgres" {
                assert!(database_grants_sql().contains(user));
            }
        }
        assert!(roles_sql().contains("CREATE ROLE pgveil_catalog LOGIN PASSWORD 'pgveil_catalog'"));
    }
}
