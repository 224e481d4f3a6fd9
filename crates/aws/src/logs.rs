//! Logging: on Lambda, one flat JSON object per line, carrying the fields of every span it was
//! written in (a task's span names `task_id`, `tenant`, `project`, `version` and
//! `correlation_id`), so one CloudWatch filter such as `{ $.correlation_id = "..." }` finds a
//! task's whole path across functions. Elsewhere, the usual human-readable lines.

use std::io::Write;
use std::sync::Mutex;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Sets up logging: flat JSON lines on Lambda (`AWS_LAMBDA_FUNCTION_NAME` set), plain text
/// elsewhere; `RUST_LOG` filters, `info` by default.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        tracing_subscriber::registry()
            .with(filter)
            .with(JsonLines::new(Box::new(std::io::stdout())))
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .init();
    }
}

/// Span fields, kept in the span's extensions.
struct Fields(Map<String, Value>);

struct Collect<'a>(&'a mut Map<String, Value>);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

/// A layer writing each event as one JSON object: `level`, `message`, then the fields of its
/// spans (outermost first) and its own, an inner one replacing an outer one of the same name.
pub struct JsonLines {
    out: Mutex<Box<dyn Write + Send>>,
}

impl JsonLines {
    /// Lines written to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }
}

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attributes.record(&mut Collect(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Fields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(&mut Collect(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        line.insert(
            "level".to_owned(),
            Value::from(event.metadata().level().as_str()),
        );
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<Fields>() {
                    line.extend(fields.0.clone());
                }
            }
        }
        event.record(&mut Collect(&mut line));
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A log line that cannot be written is not worth failing the task for.
        let _ = writeln!(out, "{}", Value::Object(line)).and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use tracing::{info, info_span, warn};

    use super::*;
    use crate::captured::Captured;

    #[test]
    fn every_line_in_a_task_span_carries_the_task_fields_at_the_top_level() {
        let captured = Captured::default();
        let subscriber =
            tracing_subscriber::registry().with(JsonLines::new(Box::new(captured.clone())));
        tracing::subscriber::with_default(subscriber, || {
            let message = info_span!("message", message_id = "m-1");
            let _message = message.enter();
            let task = info_span!(
                "task",
                task_id = "t-1",
                tenant = "acme",
                project = "p",
                version = 3_u64,
                correlation_id = tracing::field::Empty
            );
            task.record("correlation_id", "corr-9");
            let _task = task.enter();
            info!(version = 4_u64, "transition applied");
            warn!(error = ?"boom", "failed");
        });
        let lines = captured.lines();
        assert_eq!(lines.len(), 2);
        for line in &lines {
            for field in ["task_id", "tenant", "project", "version", "correlation_id"] {
                assert!(line.get(field).is_some(), "{field} missing from {line}");
            }
            assert_eq!(line["correlation_id"], "corr-9");
            assert_eq!(line["message_id"], "m-1");
        }
        assert_eq!(lines[0]["message"], "transition applied");
        assert_eq!(lines[0]["version"], 4, "the event's own field wins");
        assert_eq!(lines[1]["version"], 3);
        assert_eq!(
            (&lines[1]["level"], &lines[1]["error"]),
            (&Value::from("WARN"), &Value::from("\"boom\""))
        );
    }
}
