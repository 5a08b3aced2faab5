//! Log output: zap/controller-runtime compatible JSON lines, or human-readable text.
//!
//! # JSON format (the default)
//!
//! One object per line on stderr, keys in this order:
//!
//! * `level` – lowercase tracing level (`trace`, `debug`, `info`, `warn`, `error`);
//! * `ts` – RFC 3339 UTC timestamp with milliseconds (`2026-01-02T03:04:05.678Z`);
//! * `logger` – the event's (or an enclosing span's) `logger` field, else the last
//!   path segment of the event's target (`stageset_controller::gate` → `gate`);
//! * `msg` – the event message;
//! * then the fields of the enclosing spans (outermost first) and of the event
//!   itself; an inner value replaces an outer one with the same key. A field that
//!   would clash with `level`, `ts`, `logger` or `msg` is written as `fields.<key>`.
//!
//! # Conventions
//!
//! * Sub-loggers are a `logger` field: `info!(logger = "setup", ...)`, or a span
//!   carrying `logger` around a whole component.
//! * **Errors go under the key `error`** (docs/decisions.md 9), with their source chain:
//!   `error!(error = %logging::chain(&err), "apply failed")`. A field recorded as
//!   `&dyn std::error::Error` (`error = &err as &dyn Error`) is rendered the same way.
//! * Credentials are never logged; `config::Secret` redacts itself.
//!
//! # Stack traces
//!
//! `--zap-stacktrace-level` (`info`, `error`, `panic`) adds a `stacktrace` key,
//! captured with [`std::backtrace::Backtrace::force_capture`], to JSON events at or
//! above that level. Our default is **`panic`**, deliberately unlike
//! controller-runtime's production default of `error`: Rust release binaries carry
//! no symbols, so a trace on every error line would be long and mostly unreadable
//! noise. Panics are always logged with a `stacktrace` by the hook that
//! [`init`] installs. Text output never adds stack traces to ordinary events.

use std::backtrace::Backtrace;
use std::error::Error;
use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The target of the spans made for the trace export (`crate::traced_span!`):
/// their fields are not copied into JSON log lines.
pub const TRACE_SPAN_TARGET: &str = "stageset_controller::trace";

/// The target of spans that only carry fields for log lines (the reconcile
/// span's `namespace`, `name`, `reconcileID`): outside this crate's target,
/// so the trace export (which takes this crate's spans) leaves them out.
pub const LOG_SPAN_TARGET: &str = "stageset_log";

/// The crate version logged at start-up.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit baked in at build time (`STAGESET_COMMIT`), or `unknown`.
pub const COMMIT: &str = match option_env!("STAGESET_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// Output encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (see the module docs).
    Json,
    /// tracing-subscriber's human-readable text.
    Text,
}

/// Minimum severity whose events carry a `stacktrace` (`--zap-stacktrace-level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StacktraceLevel {
    Info,
    Error,
    /// Only panics (the default; see the module docs).
    #[default]
    Panic,
}

impl StacktraceLevel {
    /// Every accepted spelling.
    pub const VALUES: &'static [&'static str] = &["info", "error", "panic"];

    pub fn as_str(self) -> &'static str {
        match self {
            StacktraceLevel::Info => "info",
            StacktraceLevel::Error => "error",
            StacktraceLevel::Panic => "panic",
        }
    }

    /// Parses the exact (case-sensitive) flag spelling.
    pub fn from_flag(s: &str) -> Option<Self> {
        match s {
            "info" => Some(StacktraceLevel::Info),
            "error" => Some(StacktraceLevel::Error),
            "panic" => Some(StacktraceLevel::Panic),
            _ => None,
        }
    }

    /// Whether an ordinary event at `level` carries a stacktrace.
    pub fn applies_to(self, level: &Level) -> bool {
        match self {
            // tracing orders levels by verbosity: ERROR < WARN < INFO.
            StacktraceLevel::Info => *level <= Level::INFO,
            StacktraceLevel::Error => *level == Level::ERROR,
            StacktraceLevel::Panic => false,
        }
    }
}

impl fmt::Display for StacktraceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StacktraceLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Effective logging settings (resolved from the flags by `config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub level: LevelFilter,
    pub format: Format,
    pub stacktrace_level: StacktraceLevel,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            level: LevelFilter::INFO,
            format: Format::Json,
            stacktrace_level: StacktraceLevel::Panic,
        }
    }
}

/// Setting up logging failed (a global subscriber was already installed).
#[derive(Debug, thiserror::Error)]
#[error("cannot install the log subscriber: {0}")]
pub struct InitError(#[from] tracing::subscriber::SetGlobalDefaultError);

/// Installs the global subscriber (writing to stderr) and the panic hook.
pub fn init(settings: &Settings) -> Result<(), InitError> {
    init_with(settings, None)
}

/// A layer added under the log output, e.g. the OpenTelemetry exporter
/// (`crate::telemetry`) when `--tracing-endpoint` is set.
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// [`init`], with `extra` (when given) receiving every span and event as well.
pub fn init_with(settings: &Settings, extra: Option<ExtraLayer>) -> Result<(), InitError> {
    let subscriber = build(
        settings,
        std::io::stderr,
        std::io::stderr().is_terminal(),
        extra,
    );
    tracing::subscriber::set_global_default(subscriber)?;
    install_panic_hook();
    Ok(())
}

/// A subscriber for `settings` writing to `writer`, without ANSI colours; for tests
/// and embedding (`tracing::subscriber::with_default`).
pub fn subscriber<W>(settings: &Settings, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    build(settings, writer, false, None)
}

/// [`subscriber`] with an extra layer (see [`init_with`]).
pub fn subscriber_with<W>(
    settings: &Settings,
    writer: W,
    extra: Option<ExtraLayer>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    build(settings, writer, false, extra)
}

fn build<W>(
    settings: &Settings,
    writer: W,
    ansi: bool,
    extra: Option<ExtraLayer>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    if let Some(extra) = extra {
        // The log level filters the log output only, so that spans still
        // reach `extra` when the log level is above info.
        let registry = Registry::default().with(extra);
        return match settings.format {
            Format::Json => Box::new(registry.with(
                JsonLayer::new(writer, settings.stacktrace_level).with_filter(settings.level),
            )),
            Format::Text => Box::new(
                registry.with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(writer)
                        .with_ansi(ansi)
                        .with_filter(settings.level),
                ),
            ),
        };
    }
    let registry = Registry::default().with(settings.level);
    match settings.format {
        Format::Json => Box::new(registry.with(JsonLayer::new(writer, settings.stacktrace_level))),
        Format::Text => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi),
            ),
        ),
    }
}

/// Logs `starting stageset-controller` with `version` and `commit` (logger `setup`).
pub fn log_start() {
    tracing::info!(
        logger = "setup",
        version = VERSION,
        commit = COMMIT,
        "starting stageset-controller"
    );
}

/// Chains a hook in front of the current panic hook that logs the panic at error
/// level (`msg` `observed a panic`, `panic`, `location`, `stacktrace`, logger
/// `panic`) before the previous hook runs.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".to_string());
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        // Every --zap-stacktrace-level (info, error, panic) is at or below panic.
        let stacktrace = Backtrace::force_capture();
        tracing::error!(
            logger = "panic",
            panic = %message,
            location = %location,
            stacktrace = %stacktrace,
            "observed a panic"
        );
        previous(info);
    }));
}

/// Displays an error followed by its `source()` chain: `outer: inner: root`.
/// A source whose text the previous message already ends with is skipped.
pub struct ErrorChain<'a>(&'a (dyn Error + 'static));

/// Wraps an error for logging under the `error` key: `error = %chain(&err)`.
pub fn chain<'a>(err: &'a (dyn Error + 'static)) -> ErrorChain<'a> {
    ErrorChain(err)
}

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(err) = source {
            let part = err.to_string();
            if !part.is_empty() && !text.ends_with(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = err.source();
        }
        f.write_str(&text)
    }
}

// ---------------------------------------------------------------------------
// JSON layer
// ---------------------------------------------------------------------------

/// The `tracing_subscriber` layer writing JSON lines (see the module docs).
pub struct JsonLayer<W> {
    writer: W,
    stacktrace_level: StacktraceLevel,
}

impl<W> JsonLayer<W> {
    pub fn new(writer: W, stacktrace_level: StacktraceLevel) -> Self {
        JsonLayer {
            writer,
            stacktrace_level,
        }
    }
}

/// Fields recorded on a span, kept in its extensions.
struct SpanFields(Fields);

/// Ordered key/value pairs; a repeated key replaces the earlier value in place.
#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn set(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field.name(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.set(field.name(), v);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.set(field.name(), v);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.set(field.name(), v);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        self.set(field.name(), Value::String(chain(value).to_string()));
    }
}

fn value_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

impl<W> JsonLayer<W> {
    fn render<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>) -> String
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        let mut fields = Fields::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(span_fields)) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &span_fields.0 {
                        fields.set(k, v.clone());
                    }
                }
            }
        }
        event.record(&mut fields);
        let msg = fields.take("message").map(value_text).unwrap_or_default();
        let logger = fields.take("logger").map(value_text).unwrap_or_else(|| {
            meta.target()
                .rsplit("::")
                .next()
                .unwrap_or_default()
                .to_string()
        });
        if self.stacktrace_level.applies_to(meta.level()) && !fields.contains("stacktrace") {
            fields.set(
                "stacktrace",
                Value::String(Backtrace::force_capture().to_string()),
            );
        }

        let mut line = String::with_capacity(256);
        let level = meta.level().as_str().to_ascii_lowercase();
        push_pair(&mut line, "level", &Value::String(level), '{');
        push_pair(
            &mut line,
            "ts",
            &Value::String(rfc3339_millis(SystemTime::now())),
            ',',
        );
        push_pair(&mut line, "logger", &Value::String(logger), ',');
        push_pair(&mut line, "msg", &Value::String(msg), ',');
        for (k, v) in &fields.0 {
            if matches!(k.as_str(), "level" | "ts" | "logger" | "msg") {
                push_pair(&mut line, &format!("fields.{k}"), v, ',');
            } else {
                push_pair(&mut line, k, v, ',');
            }
        }
        line.push_str("}\n");
        line
    }
}

fn push_pair(out: &mut String, key: &str, value: &Value, sep: char) {
    out.push(sep);
    // Serializing a string or a Value into a String cannot fail.
    let _ = write!(out, "{}:{}", Value::String(key.to_string()), value);
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // The spans of the trace export (`crate::telemetry`) add nothing to
        // the log lines inside them.
        if attrs.metadata().target() == TRACE_SPAN_TARGET {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let line = self.render(event, &ctx);
        let mut writer = self.writer.make_writer_for(event.metadata());
        // Nowhere to report a failed log write; drop the line like zap does.
        let _ = writer.write_all(line.as_bytes());
    }
}

/// Formats a time as RFC 3339 in UTC with millisecond precision.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    fn capture(settings: Settings, f: impl FnOnce()) -> Vec<String> {
        let buf = Buf::default();
        let writer = buf.clone();
        tracing::subscriber::with_default(subscriber(&settings, move || writer.clone()), f);
        buf.lines()
    }

    fn json(line: &str) -> serde_json::Map<String, Value> {
        match serde_json::from_str(line).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("apply failed")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Inner;

    #[test]
    fn json_lines_have_zap_keys_in_order() {
        let lines = capture(Settings::default(), || {
            let span = tracing::info_span!("reconcile", namespace = "team-a", name = "web");
            let _guard = span.enter();
            tracing::info!(stages = 3_u64, ready = true, "StageSet synced");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(line.starts_with(r#"{"level":"info","ts":""#), "{line}");
        let m = json(line);
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        for k in [
            "level",
            "ts",
            "logger",
            "msg",
            "namespace",
            "name",
            "stages",
            "ready",
        ] {
            assert!(keys.contains(&k), "{k} missing in {line}");
        }
        assert_eq!(m["logger"], "tests");
        assert_eq!(m["msg"], "StageSet synced");
        assert_eq!(m["namespace"], "team-a");
        assert_eq!(m["stages"], 3);
        assert_eq!(m["ready"], true);
        assert!(!m.contains_key("stacktrace"));
        let ts = m["ts"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-01-02T03:04:05.678Z".len(), "{ts}");
        assert!(
            ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
            "{ts}"
        );
    }

    #[test]
    fn logger_field_errors_and_clashes() {
        let lines = capture(Settings::default(), || {
            let err = Outer(Inner);
            tracing::error!(logger = "gate", error = %chain(&err), "lookup failed");
            tracing::warn!(error = &err as &dyn Error, level = 7, "x");
            let span =
                tracing::info_span!("component", logger = "webhook", id = tracing::field::Empty);
            span.record("id", 42);
            span.in_scope(|| tracing::info!(id = "event wins", "inner"));
        });
        assert_eq!(lines.len(), 3, "{lines:?}");
        let first = json(&lines[0]);
        assert_eq!(first["level"], "error");
        assert_eq!(first["logger"], "gate");
        assert_eq!(first["error"], "apply failed: connection refused");
        let second = json(&lines[1]);
        assert_eq!(second["level"], "warn");
        assert_eq!(second["error"], "apply failed: connection refused");
        assert_eq!(second["fields.level"], 7);
        let third = json(&lines[2]);
        assert_eq!(third["logger"], "webhook");
        assert_eq!(third["id"], "event wins");
    }

    #[test]
    fn level_filter_and_stacktrace_level() {
        let settings = Settings {
            level: LevelFilter::WARN,
            format: Format::Json,
            stacktrace_level: StacktraceLevel::Error,
        };
        let lines = capture(settings, || {
            tracing::info!("hidden");
            tracing::warn!("shown");
            tracing::error!("with trace");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(!json(&lines[0]).contains_key("stacktrace"));
        assert!(json(&lines[1])["stacktrace"].is_string());
    }

    #[test]
    fn text_format_is_not_json() {
        let settings = Settings {
            format: Format::Text,
            ..Settings::default()
        };
        let lines = capture(settings, || tracing::info!(logger = "setup", "hello"));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("hello") && lines[0].contains("INFO"),
            "{lines:?}"
        );
        assert!(serde_json::from_str::<Value>(&lines[0]).is_err());
    }

    #[test]
    fn start_line() {
        let lines = capture(Settings::default(), log_start);
        let m = json(&lines[0]);
        assert_eq!(m["msg"], "starting stageset-controller");
        assert_eq!(m["logger"], "setup");
        assert_eq!(m["version"], VERSION);
        assert_eq!(m["commit"], COMMIT);
    }

    #[test]
    fn panic_hook_logs_before_the_previous_hook() {
        install_panic_hook();
        let lines = capture(Settings::default(), || {
            let result = std::panic::catch_unwind(|| panic!("boom {}", 42));
            assert!(result.is_err());
        });
        let m = json(
            lines
                .iter()
                .find(|l| l.contains("observed a panic"))
                .expect("panic line"),
        );
        assert_eq!(m["level"], "error");
        assert_eq!(m["logger"], "panic");
        assert_eq!(m["panic"], "boom 42");
        assert!(m["location"].as_str().unwrap().contains("logging.rs"));
        assert!(m["stacktrace"].is_string());
    }

    #[test]
    fn timestamps() {
        let at = |secs: u64, millis: u64| {
            rfc3339_millis(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn error_chain_skips_repeated_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("read config: {0}")]
        struct Wrapping(#[source] Inner);
        assert_eq!(
            chain(&Wrapping(Inner)).to_string(),
            "read config: connection refused"
        );
        assert_eq!(
            chain(&Outer(Inner)).to_string(),
            "apply failed: connection refused"
        );
    }
}
