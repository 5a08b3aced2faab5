//! OpenTelemetry tracing (operations.md §7.8, OPS-61/OPS-62).
//!
//! Off unless `--tracing-endpoint` is set: then no exporter exists and nothing
//! leaves the process. With it, the `tracing` spans of the reconcile pipeline
//! (`StageSet.Reconcile` and its children) are exported over OTLP/gRPC to
//! `host:port` (TLS with the system and webpki roots unless
//! `--tracing-insecure`) through a batch span processor, sampled per
//! `--tracing-sample-ratio` (≤ 0 never, ≥ 1 always, else TraceID-ratio, not
//! parent-based), with the resource `service.name=stageset-controller` and
//! `service.version`. The W3C trace-context propagator is installed globally
//! (docs/decisions.md 9) and [`inject`] writes `traceparent` into outgoing
//! requests.
//!
//! The pipeline itself only uses `tracing`: errors are recorded on a span
//! with [`fail`], which sets the `otel.status_code` / `otel.status_description`
//! fields that `tracing-opentelemetry` turns into the span status.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The `service.name` of every exported span.
pub const SERVICE_NAME: &str = "stageset-controller";

/// The instrumentation scope (operations.md §7.8 lets Rust use its crate name).
pub const SCOPE: &str = env!("CARGO_PKG_NAME");

/// How long the shutdown flush may take (operations.md §7.8).
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Where and how spans are exported (from the `--tracing-*` flags).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The collector's `host:port`.
    pub endpoint: String,
    /// Plaintext gRPC instead of TLS.
    pub insecure: bool,
    /// `--tracing-sample-ratio`.
    pub sample_ratio: f64,
}

/// Setting up the exporter failed (the binary exits 1).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot start the tracing runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot set up the OTLP trace exporter for --tracing-endpoint {endpoint:?}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("invalid --tracing-endpoint {0:?}: want host:port")]
    Endpoint(String),
}

/// The running exporter: the tracer provider and the runtime its gRPC channel
/// lives on. [`Telemetry::shutdown`] flushes what is still queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// The sampler of `--tracing-sample-ratio`: ≤ 0 never, ≥ 1 always, else the
/// TraceID ratio (not parent-based).
pub fn sampler(ratio: f64) -> Sampler {
    if ratio.is_nan() || ratio <= 0.0 {
        Sampler::AlwaysOff
    } else if ratio >= 1.0 {
        Sampler::AlwaysOn
    } else {
        Sampler::TraceIdRatioBased(ratio)
    }
}

/// The collector URL of `host:port`: `http://` when insecure, else `https://`.
pub fn collector_url(endpoint: &str, insecure: bool) -> Result<String, InitError> {
    if crate::config::check_host_port(endpoint).is_err() || endpoint.starts_with(':') {
        return Err(InitError::Endpoint(endpoint.to_string()));
    }
    let scheme = if insecure { "http" } else { "https" };
    Ok(format!("{scheme}://{endpoint}"))
}

/// Installs the W3C trace-context propagator globally (docs/decisions.md 9).
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// Starts the OTLP exporter of `settings` and installs the W3C propagator.
pub fn start(settings: &Settings, version: &str) -> Result<Telemetry, InitError> {
    let url = collector_url(&settings.endpoint, settings.insecure)?;
    // The gRPC channel's tasks run on a runtime of their own, independent of
    // the controller's runtimes and of whether the main thread drives one.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()?;
    let exporter = {
        let _enter = runtime.enter();
        let builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(10));
        let builder = if settings.insecure {
            builder
        } else {
            use opentelemetry_otlp::tonic_types::transport::ClientTlsConfig;
            // The system roots when there are any (tonic refuses an empty
            // system store), and the bundled webpki roots always.
            let tls = ClientTlsConfig::new().with_webpki_roots();
            let system = !rustls_native_certs::load_native_certs().certs.is_empty();
            builder.with_tls_config(if system { tls.with_native_roots() } else { tls })
        };
        builder.build().map_err(|source| InitError::Exporter {
            endpoint: settings.endpoint.clone(),
            source,
        })?
    };
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", SERVICE_NAME),
            KeyValue::new("service.version", version.to_string()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(settings.sample_ratio))
        .with_resource(resource)
        .build();
    install_propagator();
    Ok(Telemetry {
        provider,
        runtime: Some(runtime),
    })
}

impl Telemetry {
    /// The `tracing` layer exporting spans through this provider.
    pub fn layer<S>(&self) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SCOPE))
            // This crate's spans and events at info and above: the
            // pipeline's spans (and the log events inside them), not the
            // HTTP servers' request spans nor other crates' chatter.
            .with_filter(Targets::new().with_target(
                env!("CARGO_CRATE_NAME"),
                tracing::level_filters::LevelFilter::INFO,
            ))
            .boxed()
    }

    /// Flushes the queued spans (at most [`SHUTDOWN_FLUSH`]) and stops the
    /// exporter.
    pub fn shutdown(mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_FLUSH) {
            tracing::warn!(logger = "setup", error = %e, "flushing the trace exporter failed");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Writes the W3C `traceparent` (and `tracestate`) of the current span into
/// `headers`; nothing when no span context is active (tracing off).
pub fn inject(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    let propagator = TraceContextPropagator::new();
    propagator.inject_context(&cx, &mut HeaderInjector(headers));
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// An info-level span that can be marked failed with [`fail`]: it declares
/// `otel.status_code`, `otel.status_description` and `error` besides the given
/// fields. Its target is [`crate::logging::TRACE_SPAN_TARGET`], so its fields
/// stay out of the JSON log lines.
#[macro_export]
macro_rules! traced_span {
    ($name:literal $(, $($fields:tt)*)?) => {
        ::tracing::info_span!(
            target: $crate::logging::TRACE_SPAN_TARGET,
            $name,
            otel.status_code = ::tracing::field::Empty,
            otel.status_description = ::tracing::field::Empty,
            error = ::tracing::field::Empty
            $(, $($fields)*)?
        )
    };
}

/// Marks `span` failed: records `error` and sets the span status Error (the
/// `otel.status_code` / `otel.status_description` fields, which the span must
/// declare, e.g. with [`tracing::field::Empty`]).
pub fn fail(span: &tracing::Span, error: &dyn std::fmt::Display) {
    let message = error.to_string();
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", message.as_str());
    span.record("error", message.as_str());
}
