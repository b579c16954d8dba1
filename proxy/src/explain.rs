//! `pgveil explain`: what the proxy would do with one SQL text for one user.
//!
//! Uses the same policy loader, mask key and `decide` as the running proxy; the catalog
//! comes from a JSON snapshot (`--catalog`, works offline) or from the upstream database
//! through the `[catalog]` account.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use pgveil_policy::catalog::{Catalog, StaticCatalog};
use pgveil_policy::decide::{self, SessionFacts, Verdict};

use crate::config::Config;
use crate::enforce::reload;
use crate::enforce::session::split_search_path;

/// Arguments of `pgveil explain`.
#[derive(Debug, Clone)]
pub struct ExplainArgs {
    pub config: PathBuf,
    pub user: String,
    pub purpose: Option<String>,
    pub database: Option<String>,
    pub catalog: Option<PathBuf>,
    pub search_path: Option<String>,
    pub sql: String,
}

/// Run the explanation and return the report text.
pub fn run(args: ExplainArgs) -> anyhow::Result<String> {
    let cfg = Config::load(&args.config)?;
    let policy_path = cfg
        .policy
        .as_ref()
        .map(|p| cfg.resolve(p))
        .context("the config names no policy file")?;
    let loaded = reload::load_file(&policy_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy = loaded.policy;
    let key = crate::app::mask_key(&cfg)?;
    let database = args.database.clone().unwrap_or_else(|| args.user.clone());

    let snapshot_holder;
    let static_holder;
    let catalog: &dyn Catalog = match &args.catalog {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read catalog snapshot {}", path.display()))?;
            static_holder = StaticCatalog::from_json(&text)
                .with_context(|| format!("catalog snapshot {}", path.display()))?;
            &static_holder
        }
        None => {
            let cache = crate::app::catalog_cache(&cfg)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            snapshot_holder = rt
                .block_on(cache.get_or_load(&database))
                .with_context(|| format!("reading the catalog of database \"{database}\""))?;
            snapshot_holder.as_ref()
        }
    };

    let search_path = split_search_path(args.search_path.as_deref().unwrap_or("\"$user\", public"));
    let role = policy.role_for_user(&args.user);
    let facts = SessionFacts {
        user: &args.user,
        role,
        purpose: args.purpose.as_deref(),
        search_path: &search_path,
        temp_schema: None,
    };
    let outcome = decide::decide(&policy, &facts, catalog, &key, &args.sql);

    let mut out = String::new();
    let _ = writeln!(out, "user:      {}", args.user);
    match role {
        Some(r) => {
            let _ = writeln!(
                out,
                "role:      {}{}",
                r.name,
                if r.is_restricted(&policy) {
                    " (restricted)"
                } else {
                    " (unrestricted)"
                }
            );
        }
        None => {
            let _ = writeln!(out, "role:      none (the session would be refused)");
        }
    }
    if let Some(p) = &args.purpose {
        let _ = writeln!(out, "purpose:   {p}");
    }
    match &outcome.verdict {
        Verdict::Allow => {
            let _ = writeln!(out, "decision:  allow (forwarded unchanged)");
        }
        Verdict::Rewrite(sql) => {
            let _ = writeln!(out, "decision:  rewrite\nsql:\n{sql}");
            if let Some(m) = &outcome.row_masks {
                let cols: Vec<String> = m
                    .columns
                    .iter()
                    .map(|c| (c.index + 1).to_string())
                    .collect();
                let _ = writeln!(
                    out,
                    "proxy:     forwards the text unchanged and masks output column(s) {} of {} in each row (same values as the rewrite)",
                    cols.join(", "),
                    m.width
                );
            }
        }
        Verdict::Deny(d) => {
            let _ = writeln!(
                out,
                "decision:  deny ({}), SQLSTATE {}\nmessage:   {}",
                d.reason.as_str(),
                d.sqlstate,
                d.message
            );
            if let Some(h) = &d.hint {
                let _ = writeln!(out, "hint:      {h}");
            }
        }
    }
    for (i, r) in outcome.statements.iter().enumerate() {
        let _ = writeln!(
            out,
            "statement {}: {} → {}",
            i + 1,
            r.kind.as_str(),
            r.decision.as_str()
        );
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(out, "  relations: {}", list(&r.relations));
        let _ = writeln!(out, "  raw:       {}", list(&r.columns_raw));
        let _ = writeln!(out, "  masked:    {}", list(&r.columns_masked));
        let _ = writeln!(out, "  denied:    {}", list(&r.columns_denied));
        let _ = writeln!(out, "  classes:   {}", list(&r.classes));
        let _ = writeln!(out, "  functions: {}", list(&r.functions));
        let _ = writeln!(out, "  audit:     {} [{}]", r.normalized, r.fingerprint);
    }
    Ok(out)
}
