//! `pgveil check policy.toml`: validate a policy and say so in words a DBA can act on.

use crate::load::load;

/// Validates a policy and returns (ok, report).
///
/// On failure the report lists every diagnostic (errors and warnings), one per line,
/// followed by a count; on success it is [`crate::model::Policy::summary`] followed by any
/// warnings. The CLI prints the report and exits 0 when ok, 1 otherwise.
pub fn check(file_name: &str, text: &str) -> (bool, String) {
    match load(file_name, text) {
        Ok(loaded) => {
            let mut report = loaded.policy.summary();
            if !loaded.warnings.is_empty() {
                report.push('\n');
                report.push_str(&loaded.warnings.to_string());
            }
            (true, report)
        }
        Err(diags) => {
            let errors = diags.error_count();
            let warnings = diags.warning_count();
            let mut report = diags.to_string();
            report.push_str(&format!(
                "\n{file_name}: policy rejected: {errors} error{}{}",
                if errors == 1 { "" } else { "s" },
                match warnings {
                    0 => String::new(),
                    1 => ", 1 warning".to_string(),
                    n => format!(", {n} warnings"),
                }
            ));
            (false, report)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_policy_prints_summary_and_warnings() {
        let text = "version = 1\n\n[classes.phone]\nlevel = 3\nmask = { fn = \"null\" }\n\n\
                    [roles.dba]\nusers = [\"postgres\"]\nstatements = [\"all\"]\ntables = [\"*\"]\n\
                    see = { default = \"raw\" }\n";
        let (ok, report) = check("p.toml", text);
        assert!(ok, "{report}");
        let mut lines = report.lines();
        let summary = lines.next().unwrap_or_default();
        assert!(
            summary.starts_with("policy ok: 1 role (dba), 1 class, 0 column tags, sha256 "),
            "{summary}"
        );
        assert!(summary.ends_with('…'), "{summary}");
        assert_eq!(
            lines.next(),
            Some(
                "p.toml:3:10: warning: classes.phone: class \"phone\" is not used by any \
                 [columns] tag, so it protects nothing; tag columns with it or remove it"
            )
        );
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn bad_policy_prints_every_diagnostic_and_a_count() {
        let text = "version = 2\n[roles.x]\nusers = []\n";
        let (ok, report) = check("p.toml", text);
        assert!(!ok);
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(
            lines[0],
            "p.toml:1:11: error: version: unsupported policy version 2; this pgveil reads version = 1"
        );
        assert!(
            lines[1].starts_with("p.toml:2:1: error: roles.x: missing required key \"statements\""),
            "{}",
            lines[1]
        );
        assert!(
            lines
                .last()
                .is_some_and(|l| l.starts_with("p.toml: policy rejected: ")),
            "{report}"
        );
        assert_eq!(lines.len(), 5, "{report}");
    }
}
