//! Tests of the log formats: span fields reach every line, RUST_LOG wins over the config.

use super::*;
use std::io;
use std::sync::{Arc, Mutex};

/// A `MakeWriter` collecting everything into one buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Buffer {
    type Writer = Buffer;

    fn make_writer(&'w self) -> Buffer {
        self.clone()
    }
}

/// Runs `f` under a subscriber of `format` at `level` and returns what it logged.
fn capture(format: LogFormat, level: &str, f: impl FnOnce()) -> String {
    let buf = Buffer::default();
    let subscriber = build(format, filter(level, None).unwrap(), buf.clone(), false);
    tracing::subscriber::with_default(subscriber, f);
    let out = buf.0.lock().unwrap().clone();
    String::from_utf8(out).unwrap()
}

fn session_events() {
    let span = tracing::info_span!("session", id = %"7f3a");
    let _outer = span.enter();
    tracing::info!(user = "support_app", rows = 3u64, "session started");
    let inner = tracing::info_span!("query", kind = "select");
    let _inner = inner.enter();
    tracing::warn!(ok = false, "statement refused");
    tracing::debug!("hidden at info");
}

#[test]
fn json_lines_flatten_span_fields() {
    let out = capture(LogFormat::Json, "info", session_events);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["id"], "7f3a");
    assert_eq!(lines[0]["message"], "session started");
    assert_eq!(lines[0]["user"], "support_app");
    assert_eq!(lines[0]["rows"], 3);
    assert_eq!(lines[0]["level"], "INFO");
    assert_eq!(lines[0]["target"], module_path!());
    assert!(lines[0]["ts"].as_str().is_some_and(|t| t.contains('T')));
    assert_eq!(
        lines[1]["id"], "7f3a",
        "outer span fields reach nested spans"
    );
    assert_eq!(lines[1]["kind"], "select");
    assert_eq!(lines[1]["ok"], false);
    assert_eq!(lines[1]["spans"], serde_json::json!(["session", "query"]));
}

#[test]
fn text_lines_carry_span_fields() {
    let out = capture(LogFormat::Text, "info", session_events);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("session{id=7f3a}"), "{}", lines[0]);
    assert!(
        lines[1].contains("session{id=7f3a}:query{kind=\"select\"}"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("statement refused"));
}

#[test]
fn level_filter_and_rust_log_override() {
    let out = capture(LogFormat::Text, "warn", session_events);
    assert_eq!(out.lines().count(), 1, "{out}");
    let out = capture(LogFormat::Text, "pgveil=debug", session_events);
    assert_eq!(out.lines().count(), 3, "{out}");

    assert!(
        filter("info", Some("")).is_ok(),
        "empty RUST_LOG falls back to the config"
    );
    let err = filter("info", Some("=[")).unwrap_err().to_string();
    assert!(err.contains("RUST_LOG"), "{err}");
    let err = filter("lots[", None).unwrap_err().to_string();
    assert!(err.contains("[log] level"), "{err}");
}

#[test]
fn format_names_parse() {
    assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
    assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
    assert!("yaml".parse::<LogFormat>().is_err());
    let f: LogFormat = serde_json::from_str("\"json\"").unwrap();
    assert_eq!(f, LogFormat::Json);
}
