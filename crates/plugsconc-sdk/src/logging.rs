//! `tracing` to hclog JSON lines on stderr, so a go-plugin or plugsconc host keeps each event's
//! level, message and fields.

use std::fmt::Write as _;
use std::io::Write as _;

use plugsconc_protocol::hclog::{Entry, Level};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Default filter: the plugin's own events down to debug, library internals from info.
const DEFAULT_FILTER: &str = "debug,h2=info,hyper=info,hyper_util=info,tower=info,tonic=info";

/// Writes every event as one hclog JSON line on stderr, with `@module` set to the plugin name.
#[derive(Debug, Clone)]
pub struct HclogLayer {
    module: String,
}

impl HclogLayer {
    /// A layer naming the plugin `module` in every line.
    pub fn new(module: impl Into<String>) -> Self {
        Self {
            module: module.into(),
        }
    }

    /// Formats one event (exposed for tests and for custom writers).
    pub fn format(&self, event: &Event<'_>) -> String {
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let level = match *event.metadata().level() {
            tracing::Level::TRACE => Level::Trace,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::ERROR => Level::Error,
        };
        let mut entry = Entry::new(level, visitor.message);
        entry.module = Some(self.module.clone());
        entry.fields = visitor.fields;
        entry.to_json()
    }
}

impl<S: Subscriber> Layer<S> for HclogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = self.format(event);
        line.push('\n');
        // A failed write to stderr has nowhere to be reported.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .push((field.name().to_owned(), Value::from(format!("{value:?}"))));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields
                .push((field.name().to_owned(), Value::from(value)));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }
}

/// Installs the hclog layer as the global subscriber, filtered by `RUST_LOG` when set.
/// Does nothing if the plugin already installed a subscriber.
pub fn init(module: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::registry()
        .with(HclogLayer::new(module).with_filter(filter))
        .try_init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use plugsconc_protocol::hclog::{Line, LineClassifier};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let line = HclogLayer::new("demo").format(event);
            self.0.lock().unwrap().push(line);
        }
    }

    #[test]
    fn events_become_lines_a_host_parses_with_their_levels() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!("t");
            tracing::debug!(key = "k", "d");
            tracing::info!(n = 3, ok = true, "i {}", 1);
            tracing::warn!(ratio = 0.5, "w");
            tracing::error!(err = ?"boom", "e");
        });
        let lines = capture.0.lock().unwrap().clone();
        let mut classifier = LineClassifier::default();
        let parsed: Vec<_> = lines
            .iter()
            .map(|line| match classifier.classify(line) {
                Line::Structured(entry) => entry,
                Line::Plain { text, .. } => panic!("not hclog JSON: {text}"),
            })
            .collect();
        let levels: Vec<_> = parsed.iter().map(|e| e.level).collect();
        assert_eq!(
            levels,
            [
                Level::Trace,
                Level::Debug,
                Level::Info,
                Level::Warn,
                Level::Error
            ]
        );
        assert_eq!(parsed[2].message, "i 1");
        assert_eq!(parsed[2].module.as_deref(), Some("demo"));
        assert!(parsed[2].fields.contains(&("n".into(), Value::from(3))));
        assert!(parsed[1].fields.contains(&("key".into(), Value::from("k"))));
        assert!(
            parsed[4]
                .fields
                .contains(&("err".into(), Value::from("\"boom\"")))
        );
    }
}
