//! Tests of the metrics verbs: each verb moves exactly the series design.md names.

use super::*;

/// The value of one series line (`name{labels} value`) in the text exposition, if present.
fn sample(m: &Metrics, series: &str) -> Option<f64> {
    let text = String::from_utf8(m.encode_text().expect("encoding succeeds")).expect("utf-8");
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().expect("numeric sample"))
    })
}

#[test]
fn connections_count_active_and_results() {
    let m = Metrics::new().unwrap();
    m.connection_opened();
    m.connection_opened();
    assert_eq!(sample(&m, "pgveil_connections_active"), Some(2.0));
    m.connection_closed(ConnResult::AuthFailed);
    m.connection_refused(ConnResult::TooMany);
    {
        let mut guard = m.track_connection();
        assert_eq!(sample(&m, "pgveil_connections_active"), Some(2.0));
        guard.set_result(ConnResult::Timeout);
    }
    assert_eq!(sample(&m, "pgveil_connections_active"), Some(1.0));
    assert_eq!(
        sample(&m, r#"pgveil_connections_total{result="auth_failed"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"pgveil_connections_total{result="too_many"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"pgveil_connections_total{result="timeout"}"#),
        Some(1.0)
    );
    // Every result is exported from the start, so rate() works before the first event.
    for r in ConnResult::ALL {
        let series = format!(r#"pgveil_connections_total{{result="{r}"}}"#);
        assert!(sample(&m, &series).is_some(), "{series} missing");
    }
}

#[test]
fn queries_are_counted_per_role_kind_decision_with_duration() {
    let m = Metrics::new().unwrap();
    m.query(
        "support",
        StatementKind::Select,
        QueryDecision::Rewrite,
        0.0004,
    );
    let role = m.role("support");
    role.query(StatementKind::Select, QueryDecision::Rewrite, 0.002);
    role.query(StatementKind::Update, QueryDecision::Deny, 0.00001);
    assert_eq!(
        sample(
            &m,
            r#"pgveil_queries_total{decision="rewrite",kind="select",role="support"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"pgveil_queries_total{decision="deny",kind="update",role="support"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"pgveil_query_duration_seconds_count{role="support"}"#),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"pgveil_query_duration_seconds_bucket{role="support",le="0.0005"}"#
        ),
        Some(2.0)
    );
    assert!(Arc::ptr_eq(&role, &m.role("support")), "handles are cached");
}

#[test]
fn denials_rows_masks_rewrite_and_cache() {
    let m = Metrics::new().unwrap();
    m.denied("analyst", "column");
    m.denied("analyst", "column");
    m.rows("analyst", 500);
    m.masked("analyst", "phone", 3);
    m.role("analyst").masked("phone", 1);
    m.rewrite(0.00003);
    m.decision_cache(true);
    m.decision_cache(false);
    m.decision_cache(true);
    assert_eq!(
        sample(&m, r#"pgveil_denied_total{reason="column",role="analyst"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, r#"pgveil_rows_returned_total{role="analyst"}"#),
        Some(500.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"pgveil_masked_columns_total{class="phone",role="analyst"}"#
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"pgveil_rewrite_duration_seconds_bucket{le="0.00005"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"pgveil_decision_cache_total{result="hit"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, r#"pgveil_decision_cache_total{result="miss"}"#),
        Some(1.0)
    );
}

#[test]
fn bytes_upstream_errors_and_unmatched_tags() {
    let m = Metrics::new().unwrap();
    m.bytes(Direction::ClientToUpstream, 100);
    m.bytes(Direction::UpstreamToClient, 7);
    m.bytes(Direction::UpstreamToClient, 3);
    m.upstream_error();
    m.unmatched_tags(2);
    assert_eq!(
        sample(&m, r#"pgveil_bytes_total{direction="client_to_upstream"}"#),
        Some(100.0)
    );
    assert_eq!(
        sample(&m, r#"pgveil_bytes_total{direction="upstream_to_client"}"#),
        Some(10.0)
    );
    assert_eq!(sample(&m, "pgveil_upstream_errors_total"), Some(1.0));
    assert_eq!(sample(&m, "pgveil_policy_unmatched_tags"), Some(2.0));
}

#[test]
fn policy_info_keeps_only_the_current_hash() {
    let m = Metrics::new().unwrap();
    m.policy_loaded("aaa");
    m.policy_reloaded("bbb");
    m.policy_reload_failed();
    assert_eq!(sample(&m, r#"pgveil_policy_info{sha256="aaa"}"#), None);
    assert_eq!(sample(&m, r#"pgveil_policy_info{sha256="bbb"}"#), Some(1.0));
    assert_eq!(
        sample(&m, r#"pgveil_policy_reloads_total{result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"pgveil_policy_reloads_total{result="failed"}"#),
        Some(1.0)
    );
    m.policy_reloaded("bbb");
    assert_eq!(sample(&m, r#"pgveil_policy_info{sha256="bbb"}"#), Some(1.0));
    assert_eq!(
        sample(&m, r#"pgveil_policy_reloads_total{result="ok"}"#),
        Some(2.0)
    );
}

#[test]
fn audit_verbs() {
    let m = Metrics::new().unwrap();
    m.audit_written("file");
    m.audit_written("file");
    m.audit_failed("http");
    m.audit_dropped(5);
    m.audit_queue_depth(12);
    assert_eq!(
        sample(&m, r#"pgveil_audit_events_total{result="ok",sink="file"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"pgveil_audit_events_total{result="failed",sink="http"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"pgveil_audit_events_total{result="dropped",sink="queue"}"#
        ),
        Some(5.0)
    );
    assert_eq!(sample(&m, "pgveil_audit_queue_depth"), Some(12.0));
}

#[test]
fn dynamic_labels_are_capped() {
    let m = Metrics::new().unwrap();
    for i in 0..MAX_DYNAMIC_LABELS + 10 {
        m.rows(&format!("role{i}"), 1);
    }
    assert_eq!(m.roles.len(), MAX_DYNAMIC_LABELS + 1);
    assert_eq!(
        sample(&m, r#"pgveil_rows_returned_total{role="overflow"}"#),
        Some(10.0)
    );
    let role = m.role("r");
    for i in 0..MAX_DYNAMIC_LABELS + 3 {
        role.masked(&format!("class{i}"), 1);
    }
    assert_eq!(
        sample(
            &m,
            r#"pgveil_masked_columns_total{class="overflow",role="overflow"}"#
        ),
        Some(3.0)
    );
}

#[test]
fn global_instance_exports_build_info_and_process_metrics() {
    let text = String::from_utf8(metrics().encode_text().unwrap()).unwrap();
    assert!(text.contains(&format!(
        r#"pgveil_build_info{{version="{}"}} 1"#,
        env!("CARGO_PKG_VERSION")
    )));
    #[cfg(target_os = "linux")]
    assert!(text.contains("process_cpu_seconds_total"));
}

/// Every `pgveil_*` name used by the shipped alerts, dashboard and docs exists, so a
/// renamed metric cannot silently break monitoring.
#[test]
fn deploy_files_and_docs_only_use_existing_metrics() {
    let m = Metrics::new().unwrap();
    // Touch every labelled family so that it appears in the exposition.
    m.query("r", StatementKind::Select, QueryDecision::Allow, 0.001);
    m.denied("r", "table");
    m.masked("r", "c", 1);
    m.rewrite(0.0001);
    m.audit_written("file");
    m.policy_loaded("abc");
    let text = String::from_utf8(m.encode_text().unwrap()).unwrap();
    // Sample names (`…_bucket`, `…_count`) and family names (from `# TYPE name kind`).
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(family) => family.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .collect();

    let sources = [
        (
            "deploy/kubernetes/prometheusrule.yaml",
            include_str!("../../../deploy/kubernetes/prometheusrule.yaml"),
        ),
        (
            "deploy/grafana/pgveil-dashboard.json",
            include_str!("../../../deploy/grafana/pgveil-dashboard.json"),
        ),
        (
            "docs/operations.md",
            include_str!("../../../docs/operations.md"),
        ),
    ];
    let mut checked = 0;
    for (file, body) in sources {
        for (start, _) in body.match_indices("pgveil_") {
            let name: String = body[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // Prose like `pgveil_catalog` (a database user) is not a metric.
            if name == "pgveil_catalog" || name.ends_with('_') {
                continue;
            }
            checked += 1;
            assert!(
                exported.contains(name.as_str()),
                "{file} uses {name}, which pgveil does not export"
            );
        }
    }
    assert!(checked > 20, "expected metric references, found {checked}");
}

#[test]
fn audit_written_in_bulk_counts_every_event() {
    let m = Metrics::new().unwrap();
    m.audit_written("file");
    m.audit_written_n("file", 41);
    m.audit_written_n("file", 0);
    assert_eq!(
        sample(&m, r#"pgveil_audit_events_total{result="ok",sink="file"}"#),
        Some(42.0)
    );
}
