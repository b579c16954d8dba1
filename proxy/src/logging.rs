//! Process logging: human text or one JSON object per line, always on stderr.
//!
//! Logs go to stderr because stdout may carry the audit stream (`kind = "stdout"` sink).
//! Every line of a session carries the fields of its enclosing spans, so the session id
//! from `info_span!("session", id = %sid)` is on each of them: the text format prints
//! `session{id=…}:` before the message, the JSON format flattens span fields into the
//! top-level object (`{"ts":…,"level":"INFO","target":…,"id":"7f3a…","message":…}`),
//! which is what log pipelines index best. `RUST_LOG` overrides the configured level.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// `[log] format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, span fields flattened in.
    Json,
}

impl FromStr for LogFormat {
    type Err = LogError;

    fn from_str(s: &str) -> Result<Self, LogError> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(LogError::Format(other.to_owned())),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log format {0:?} (expected text or json)")]
    Format(String),
    #[error("invalid log filter {filter:?} from {origin}: {reason}")]
    Filter {
        filter: String,
        /// `RUST_LOG` or `[log] level`.
        origin: &'static str,
        reason: String,
    },
    #[error("logging is already initialised")]
    AlreadySet,
}

/// Installs the global subscriber writing to stderr. `level` is a tracing filter
/// (`info`, `pgveil=debug,warn` …); a non-empty `RUST_LOG` replaces it.
pub fn init(format: LogFormat, level: &str) -> Result<(), LogError> {
    let filter = filter(level, std::env::var("RUST_LOG").ok().as_deref())?;
    let ansi = std::io::stderr().is_terminal();
    let subscriber = build(format, filter, std::io::stderr, ansi);
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LogError::AlreadySet)
}

/// The filter from the configured level, unless `rust_log` is set and non-empty.
fn filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, LogError> {
    let (text, origin) = match rust_log.map(str::trim) {
        Some(env) if !env.is_empty() => (env, "RUST_LOG"),
        _ => (level.trim(), "[log] level"),
    };
    EnvFilter::builder()
        .parse(text)
        .map_err(|e| LogError::Filter {
            filter: text.to_owned(),
            origin,
            reason: e.to_string(),
        })
}

/// The subscriber for `format`, writing through `writer` (stderr, or a buffer in tests).
fn build<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).with_target(true).finish()),
        LogFormat::Json => Box::new(
            builder
                .with_ansi(false)
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson)
                .finish(),
        ),
    }
}

/// JSON lines with the fields of every enclosing span (root first, inner spans win) and
/// of the event itself at the top level.
struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut obj = Map::new();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        obj.insert("ts".into(), Value::String(ts));
        let meta = event.metadata();
        obj.insert("level".into(), Value::String(meta.level().to_string()));
        obj.insert("target".into(), Value::String(meta.target().to_owned()));
        if let Some(scope) = ctx.event_scope() {
            let mut names = Vec::new();
            for span in scope.from_root() {
                names.push(Value::String(span.name().to_owned()));
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                // JsonFields stores span fields as a JSON object text.
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&fields.fields) {
                    obj.extend(map);
                }
            }
            obj.insert("spans".into(), Value::Array(names));
        }
        event.record(&mut JsonVisitor(&mut obj));
        let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// Collects event fields into a JSON map, keeping numbers and booleans typed.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().into(), v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests;
