//! Every deployment file under `deploy/` must parse, and the shutdown timings spread over
//! several files must agree; a typo in a manifest otherwise surfaces only in production.
//!
//! Meant for `tests/deploy_files.rs` (dev-dependencies: `yaml-rust2`, `serde_json`,
//! `toml`). YAML files may hold several documents; each Kubernetes document must carry
//! `apiVersion`, `kind` and `metadata.name`.

use std::fs;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

/// `deploy/` at the repository root (this test lives in a crate one level below it).
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// All files under `dir`, recursively, in a stable order.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
                .path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn extension(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or("")
}

/// Parses every YAML document of `path`; errors name the file.
fn yaml_docs(path: &Path) -> Result<Vec<Yaml>, String> {
    YamlLoader::load_from_str(&read(path)).map_err(|e| format!("{}: {e}", path.display()))
}

#[test]
fn every_deploy_file_parses() {
    let mut errors = Vec::new();
    let mut checked = 0;
    for path in files(&deploy_dir()) {
        let result = match extension(&path) {
            "yaml" | "yml" => yaml_docs(&path).and_then(|docs| check_k8s_docs(&path, &docs)),
            "json" => serde_json::from_str::<serde_json::Value>(&read(&path))
                .map(drop)
                .map_err(|e| format!("{}: {e}", path.display())),
            "toml" => toml::from_str::<toml::Table>(&read(&path))
                .map(drop)
                .map_err(|e| format!("{}: {e}", path.display())),
            _ => continue,
        };
        checked += 1;
        if let Err(e) = result {
            errors.push(e);
        }
    }
    assert!(
        checked >= 5,
        "expected deploy files under {}",
        deploy_dir().display()
    );
    assert!(
        errors.is_empty(),
        "invalid deploy files:\n{}",
        errors.join("\n")
    );
}

/// Kubernetes manifests need apiVersion, kind and metadata.name (kustomization files only
/// the first two).
fn check_k8s_docs(path: &Path, docs: &[Yaml]) -> Result<(), String> {
    if !path.components().any(|c| c.as_os_str() == "kubernetes") {
        return Ok(());
    }
    for (i, doc) in docs.iter().enumerate() {
        let missing = |what: &str| format!("{} document {}: missing {what}", path.display(), i + 1);
        let kind = doc["kind"].as_str().ok_or_else(|| missing("kind"))?;
        doc["apiVersion"]
            .as_str()
            .ok_or_else(|| missing("apiVersion"))?;
        if kind != "Kustomization" {
            doc["metadata"]["name"]
                .as_str()
                .ok_or_else(|| missing("metadata.name"))?;
        }
    }
    Ok(())
}

/// `[limits] shutdown_grace_ms` of a pgveil.toml text (default 30000).
fn shutdown_grace_ms(toml_text: &str, what: &str) -> i64 {
    let table: toml::Table = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{what}: {e}"));
    table
        .get("limits")
        .and_then(|l| l.get("shutdown_grace_ms"))
        .and_then(toml::Value::as_integer)
        .unwrap_or(30_000)
}

#[test]
fn systemd_stop_timeout_exceeds_shutdown_grace() {
    let dir = deploy_dir();
    let grace_ms = shutdown_grace_ms(&read(&dir.join("examples/pgveil.toml")), "pgveil.toml");
    let unit = read(&dir.join("systemd/pgveil.service"));
    let timeout = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("TimeoutStopSec="))
        .expect("pgveil.service sets TimeoutStopSec");
    let secs: i64 = timeout
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|e| panic!("TimeoutStopSec={timeout}: {e}"));
    assert!(
        secs * 1000 > grace_ms,
        "TimeoutStopSec={timeout} must exceed shutdown_grace_ms={grace_ms}"
    );
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
}

#[test]
fn kubernetes_grace_covers_prestop_and_shutdown_grace() {
    let dir = deploy_dir().join("kubernetes");
    let config = yaml_docs(&dir.join("configmap.yaml")).expect("configmap parses");
    let data = &config[0]["data"];
    let grace_ms = shutdown_grace_ms(
        data["pgveil.toml"]
            .as_str()
            .expect("configmap has pgveil.toml"),
        "configmap pgveil.toml",
    );
    toml::from_str::<toml::Table>(
        data["policy.toml"]
            .as_str()
            .expect("configmap has policy.toml"),
    )
    .expect("configmap policy.toml parses");

    let deployment = yaml_docs(&dir.join("deployment.yaml")).expect("deployment parses");
    let pod = &deployment[0]["spec"]["template"]["spec"];
    let termination_s = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds is set");
    let container = &pod["containers"][0];
    let prestop_s = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        termination_s * 1000 > prestop_s * 1000 + grace_ms,
        "terminationGracePeriodSeconds={termination_s} must exceed preStop {prestop_s}s + shutdown_grace_ms={grace_ms}"
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
}
