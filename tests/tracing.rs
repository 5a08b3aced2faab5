//! OpenTelemetry tracing (operations.md §7.8, OPS-61/OPS-62): the controller
//! binary runs as a child process (its global subscriber and exporter are
//! per process) against kube-sim and exports to a loopback OTLP/gRPC
//! receiver implemented here; the W3C `traceparent` of outgoing http calls
//! is checked on the request path of `outbound::send`.

#![recursion_limit = "256"]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::json;
use support::*;

const NS: &str = "default";

// ---------------------------------------------------------------------------
// The loopback OTLP/gRPC receiver
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    connections: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A received span with the resource it came with.
#[derive(Clone, Debug)]
struct Got {
    resource: BTreeMap<String, String>,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
    fn is_error(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }
}

fn value_text(v: &Option<AnyValue>) -> Option<String> {
    match v.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => Some(s.clone()),
        Any::IntValue(i) => Some(i.to_string()),
        Any::BoolValue(b) => Some(b.to_string()),
        Any::DoubleValue(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| value_text(&kv.value))
}

impl Received {
    /// Serves OTLP/gRPC on a loopback port; returns the port.
    async fn start() -> (Received, u16) {
        let received = Received::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = received.connections.clone();
        let incoming = futures::stream::unfold(listener, move |l| {
            let connections = connections.clone();
            async move {
                let accepted = l.accept().await.map(|(s, _)| s);
                connections.fetch_add(1, Ordering::SeqCst);
                Some((accepted, l))
            }
        });
        let service = TraceServiceServer::new(received.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        (received, port)
    }

    /// Serves OTLP/gRPC over TLS (a certificate for 127.0.0.1 from `certs`)
    /// on a loopback port; returns the port.
    async fn start_tls(certs: &kube_sim::tls::ServingCerts) -> (Received, u16) {
        use tonic::transport::{Identity, ServerTlsConfig};
        let received = Received::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = futures::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        let service = TraceServiceServer::new(received.clone());
        let identity = Identity::from_pem(&certs.cert_pem, &certs.key_pem);
        let mut server = tonic::transport::Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap();
        tokio::spawn(async move {
            server
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        (received, port)
    }

    fn spans(&self) -> Vec<Got> {
        let mut out = Vec::new();
        for req in self.requests.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let resource: BTreeMap<String, String> = rs
                    .resource
                    .iter()
                    .flat_map(|r| r.attributes.iter())
                    .filter_map(|kv| Some((kv.key.clone(), value_text(&kv.value)?)))
                    .collect();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push(Got {
                            resource: resource.clone(),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

/// A kube-sim with the CRDs and a kubeconfig file for the child process.
async fn cluster() -> (Harness, tempfile::TempDir, std::path::PathBuf) {
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    h.sim.write_kubeconfig(&kubeconfig).unwrap();
    (h, dir, kubeconfig)
}

/// One StageSet `name` with a single good stage, left to succeed.
async fn deliver_one(h: &Harness, name: &str) {
    let cfg = h.artifact(
        &format!("{name}.tar.gz"),
        &[("cm.yaml", &configmap(NS, name, "one"))],
    );
    h.external_artifact(NS, name, &cfg, "v1").await;
    h.stageset(
        NS,
        name,
        json!({"stages": [{"name": "config", "sourceRef": {"name": name}}]}),
    )
    .await;
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// A rollout whose second stage fails to build: the spans of the pass reach
/// the collector with the tree, attributes and error status of §7.8, and the
/// resource names the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_span_tree_of_a_pass_reaches_the_collector() {
    let (received, port) = Received::start().await;
    let (h, _dir, kubeconfig) = cluster().await;
    let cfg = h.artifact(
        "cfg.tar.gz",
        &[("cm.yaml", &configmap(NS, "traced", "one"))],
    );
    let bad = h.artifact(
        "bad.tar.gz",
        &[(
            "broken.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n",
        )],
    );
    h.external_artifact(NS, "cfg", &cfg, "v1@sha1:aaa").await;
    h.external_artifact(NS, "bad", &bad, "v1@sha1:bbb").await;
    h.stageset(
        NS,
        "traced",
        json!({"stages": [
            {"name": "config", "sourceRef": {"name": "cfg"}},
            {"name": "broken", "sourceRef": {"name": "bad"}}
        ]}),
    )
    .await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut controller = process::Controller::spawn(
        &kubeconfig,
        "tracing-0",
        NS,
        &[
            format!("--tracing-endpoint=127.0.0.1:{port}"),
            "--tracing-insecure=true".into(),
            format!("--metrics-bind-address=127.0.0.1:{metrics_port}"),
        ],
    );
    controller
        .wait_line("tracing enabled", Duration::from_secs(30))
        .await;
    h.wait_stageset(NS, "traced", "stage broken failed", |ss| {
        stage_phase(ss, "config").as_deref() == Some("Ready")
            && ready(ss).is_some_and(|r| r.0 == "False" && r.2.contains("broken"))
    })
    .await;
    // A scrape: the HTTP servers' request spans are not exported.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
            .await
            .expect("the metrics server listens");
        conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // SIGTERM: the batch processor flushes on shutdown (≤ 5 s).
    let status = controller.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");

    let spans = received.spans();
    assert!(!spans.is_empty(), "no spans received");
    // Only the pipeline's spans (operations.md §7.8) are exported.
    for s in &spans {
        assert!(
            [
                "StageSet.Reconcile",
                "stageset.gateWindows",
                "stageset.gateErrorBudget",
                "stageset.planMigrations",
                "stageset.buildDecryptor",
                "stage.fetch",
                "stage.decrypt",
                "stage.build",
                "stage.apply",
                "stageset.rollback",
            ]
            .contains(&s.span.name.as_str()),
            "unexpected span {:?}",
            s.span.name
        );
    }
    // The resource.
    for s in &spans {
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some("stageset-controller")
        );
        assert!(
            s.resource
                .get("service.version")
                .is_some_and(|v| !v.is_empty()),
            "{:?}",
            s.resource
        );
    }
    // The pass that failed the second stage: its build span is an error.
    let failed_build = spans
        .iter()
        .find(|s| s.span.name == "stage.build" && s.attr("stage").as_deref() == Some("broken"))
        .unwrap_or_else(|| panic!("no stage.build span of \"broken\": {spans:#?}"));
    assert!(failed_build.is_error(), "{failed_build:#?}");
    let trace = failed_build.span.trace_id.clone();
    let in_trace: Vec<&Got> = spans.iter().filter(|s| s.span.trace_id == trace).collect();
    let root = in_trace
        .iter()
        .find(|s| s.span.name == "StageSet.Reconcile")
        .expect("the root span of the failing pass");
    assert!(root.span.parent_span_id.is_empty(), "a root span");
    assert_eq!(root.attr("stageset.namespace").as_deref(), Some(NS));
    assert_eq!(root.attr("stageset.name").as_deref(), Some("traced"));
    assert_eq!(root.attr("stageset.generation").as_deref(), Some("1"));
    assert!(root.is_error(), "a failed pass marks the root Error");
    // The gates, the plan and the decryptor of the failing pass.
    let child = |name: &str| -> &Got {
        in_trace
            .iter()
            .find(|s| s.span.name == name)
            .unwrap_or_else(|| panic!("no {name} span in the trace: {in_trace:#?}"))
    };
    for name in [
        "stageset.gateWindows",
        "stageset.gateErrorBudget",
        "stageset.planMigrations",
        "stageset.buildDecryptor",
    ] {
        let s = child(name);
        assert_eq!(s.span.parent_span_id, root.span.span_id, "{name}");
        assert!(!s.is_error(), "{name}");
    }
    assert_eq!(failed_build.span.parent_span_id, root.span.span_id);
    assert!(
        failed_build
            .span
            .status
            .as_ref()
            .is_some_and(|s| !s.message.is_empty()),
        "the error is recorded: {failed_build:#?}"
    );
    let fetch_bad = in_trace
        .iter()
        .find(|s| s.span.name == "stage.fetch" && s.attr("stage").as_deref() == Some("broken"))
        .expect("stage.fetch of the broken stage");
    assert_eq!(fetch_bad.span.parent_span_id, root.span.span_id);
    assert_eq!(
        fetch_bad.attr("stage.revision").as_deref(),
        Some("v1@sha1:bbb")
    );
    assert_eq!(
        fetch_bad.attr("stage.digest").as_deref(),
        Some(bad.digest.as_str())
    );
    assert!(!fetch_bad.is_error());
    // The broken stage was never applied.
    assert!(
        !spans
            .iter()
            .any(|s| s.span.name == "stage.apply" && s.attr("stage").as_deref() == Some("broken"))
    );

    // The good stage's spans (in whichever pass applied it), each a child
    // of that pass's root.
    let root_of = |s: &Got| -> Got {
        spans
            .iter()
            .find(|r| r.span.trace_id == s.span.trace_id && r.span.span_id == s.span.parent_span_id)
            .cloned()
            .unwrap_or_else(|| panic!("no parent of {s:#?}"))
    };
    let of_stage = |name: &str| -> &Got {
        spans
            .iter()
            .find(|s| s.span.name == name && s.attr("stage").as_deref() == Some("config"))
            .unwrap_or_else(|| panic!("no {name} span of stage config: {spans:#?}"))
    };
    for name in ["stage.fetch", "stage.decrypt", "stage.build", "stage.apply"] {
        let s = of_stage(name);
        assert!(!s.is_error(), "{name}");
        let parent = root_of(s);
        assert_eq!(parent.span.name, "StageSet.Reconcile", "{name}");
        assert_eq!(parent.attr("stageset.name").as_deref(), Some("traced"));
    }
    let fetch = of_stage("stage.fetch");
    assert_eq!(fetch.attr("stage.revision").as_deref(), Some("v1@sha1:aaa"));
    assert_eq!(
        fetch.attr("stage.digest").as_deref(),
        Some(cfg.digest.as_str())
    );
    assert_eq!(
        of_stage("stage.apply").attr("stage.objectCount").as_deref(),
        Some("1")
    );
}

/// A failed run with `rollbackOnFailure`: the restore is the span
/// `stageset.rollback`, a child of the failing pass's root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_is_a_span_of_the_failing_pass() {
    let (received, port) = Received::start().await;
    let (h, _dir, kubeconfig) = cluster().await;
    let v1 = h.artifact("rb-v1.tar.gz", &[("cm.yaml", &configmap(NS, "rb", "one"))]);
    h.external_artifact(NS, "rb", &v1, "v1").await;
    h.stageset(
        NS,
        "rb",
        json!({"rollbackOnFailure": true,
               "stages": [{"name": "web", "sourceRef": {"name": "rb"}}]}),
    )
    .await;
    let mut controller = process::Controller::spawn(
        &kubeconfig,
        "tracing-rb",
        NS,
        &[
            format!("--tracing-endpoint=127.0.0.1:{port}"),
            "--tracing-insecure".into(),
        ],
    );
    h.wait_ready_reason(NS, "rb", "Succeeded", "").await;
    let v2 = h.artifact(
        "rb-v2.tar.gz",
        &[(
            "broken.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n",
        )],
    );
    h.external_artifact(NS, "rb", &v2, "v2").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = h.events(NS, "rb").await;
        if events
            .iter()
            .any(|e| e.reason.as_deref() == Some("RolledBack"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no RolledBack event: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = controller.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    let spans = received.spans();
    let rollback = spans
        .iter()
        .find(|s| s.span.name == "stageset.rollback")
        .unwrap_or_else(|| panic!("no stageset.rollback span: {spans:#?}"));
    assert!(!rollback.is_error(), "the restore worked: {rollback:#?}");
    let root = spans
        .iter()
        .find(|s| {
            s.span.trace_id == rollback.span.trace_id
                && s.span.span_id == rollback.span.parent_span_id
        })
        .expect("the parent of the rollback span");
    assert_eq!(root.span.name, "StageSet.Reconcile");
    assert_eq!(root.attr("stageset.name").as_deref(), Some("rb"));
    assert!(root.is_error(), "the pass failed a stage");
    assert!(
        spans.iter().any(|s| s.span.trace_id == root.span.trace_id
            && s.span.name == "stage.build"
            && s.is_error()),
        "the failing build is in the same trace"
    );
}

/// Without `--tracing-endpoint` nothing leaves the process, even with the
/// standard OTLP environment variables pointing at a collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_without_an_endpoint() {
    let (received, port) = Received::start().await;
    let (h, _dir, kubeconfig) = cluster().await;
    deliver_one(&h, "quiet").await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut controller = process::Controller::spawn_with_env(
        &kubeconfig,
        "tracing-off",
        NS,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
        ],
    );
    h.wait_ready_reason(NS, "quiet", "Succeeded", "").await;
    let status = controller.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    assert!(controller.find("tracing enabled").is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(received.connections.load(Ordering::SeqCst), 0);
    assert!(received.spans().is_empty());
}

/// `--tracing-sample-ratio=0` samples nothing: no span is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratio_zero_sends_nothing() {
    let (received, port) = Received::start().await;
    let (h, _dir, kubeconfig) = cluster().await;
    deliver_one(&h, "unsampled").await;
    let mut controller = process::Controller::spawn(
        &kubeconfig,
        "tracing-zero",
        NS,
        &[
            format!("--tracing-endpoint=127.0.0.1:{port}"),
            "--tracing-insecure".into(),
            "--tracing-sample-ratio=0".into(),
        ],
    );
    controller
        .wait_line("tracing enabled", Duration::from_secs(30))
        .await;
    h.wait_ready_reason(NS, "unsampled", "Succeeded", "").await;
    let status = controller.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(received.spans().is_empty(), "{:#?}", received.spans());
    assert_eq!(received.connections.load(Ordering::SeqCst), 0);
}

/// Without `--tracing-insecure` the exporter speaks TLS: a plaintext
/// receiver sees connections but never a request it can read, and the
/// controller still reconciles and stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_the_default() {
    let (received, port) = Received::start().await;
    let (h, _dir, kubeconfig) = cluster().await;
    deliver_one(&h, "tls").await;
    let mut controller = process::Controller::spawn(
        &kubeconfig,
        "tracing-tls",
        NS,
        &[format!("--tracing-endpoint=127.0.0.1:{port}")],
    );
    let line = controller
        .wait_line("tracing enabled", Duration::from_secs(30))
        .await;
    assert_eq!(line["insecure"], false);
    h.wait_ready_reason(NS, "tls", "Succeeded", "").await;
    let status = controller.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    assert!(
        received.connections.load(Ordering::SeqCst) > 0,
        "the exporter tried the collector"
    );
    assert!(received.spans().is_empty(), "no plaintext export");
}

/// TLS against the system roots (`SSL_CERT_FILE` names them here): a
/// collector with a certificate from a trusted CA receives the spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_tls_collector_trusted_by_the_system_roots() {
    kube_sim::tls::install_crypto_provider();
    let certs = kube_sim::tls::generate(&[]).expect("certificates");
    let (received, port) = Received::start_tls(&certs).await;
    let (h, dir, kubeconfig) = cluster().await;
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, &certs.ca_pem).unwrap();
    deliver_one(&h, "secure").await;
    let roots = roots.display().to_string();
    let mut controller = process::Controller::spawn_with_env(
        &kubeconfig,
        "tracing-tls-ok",
        NS,
        &[format!("--tracing-endpoint=127.0.0.1:{port}")],
        &[("SSL_CERT_FILE", roots.as_str())],
    );
    h.wait_ready_reason(NS, "secure", "Succeeded", "").await;
    let status = controller.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    let spans = received.spans();
    assert!(
        spans.iter().any(|s| s.span.name == "StageSet.Reconcile"
            && s.attr("stageset.name").as_deref() == Some("secure")),
        "{spans:#?}"
    );
}

/// A collector that accepts connections and never answers does not hold
/// the shutdown: the flush gives up after 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_collector_does_not_hold_the_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let (h, _dir, kubeconfig) = cluster().await;
    deliver_one(&h, "hang").await;
    let mut controller = process::Controller::spawn(
        &kubeconfig,
        "tracing-hang",
        NS,
        &[
            format!("--tracing-endpoint=127.0.0.1:{port}"),
            "--tracing-insecure".into(),
        ],
    );
    h.wait_ready_reason(NS, "hang", "Succeeded", "").await;
    let started = std::time::Instant::now();
    let status = controller.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "shutdown took {:?}",
        started.elapsed()
    );
}

fn run_binary(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_stageset-controller"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("the binary runs")
}

/// Validation rule 7: the ratio must be within [0, 1] (exit 2).
#[test]
fn a_ratio_outside_zero_to_one_is_refused() {
    for ratio in ["1.5", "-0.1"] {
        let out = run_binary(&[&format!("--tracing-sample-ratio={ratio}")]);
        assert_eq!(out.status.code(), Some(2), "{ratio}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "invalid --tracing-sample-ratio {ratio}: must be within [0.0, 1.0]"
            )),
            "{stderr}"
        );
    }
}

/// The tracing flags are accepted now (no "is not supported yet"), and an
/// exporter that cannot be set up exits 1 with a clear message.
#[test]
fn an_exporter_that_cannot_be_set_up_exits_1() {
    let out = run_binary(&["--tracing-endpoint=:4317", "--tracing-insecure"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid --tracing-endpoint \":4317\": want host:port"),
        "{stderr}"
    );
    assert!(!stderr.contains("not supported yet"), "{stderr}");
}

// ---------------------------------------------------------------------------
// traceparent on outgoing http calls
// ---------------------------------------------------------------------------

/// A subscriber exporting nowhere, so spans carry an OpenTelemetry context.
fn otel_subscriber(ratio: f64) -> impl tracing::Subscriber + Send + Sync {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(stageset_controller::telemetry::sampler(ratio))
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
}

fn is_traceparent(v: &str, sampled: bool) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 4
        && parts[0] == "00"
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[1].bytes().all(|b| b.is_ascii_hexdigit())
        && parts[2].bytes().all(|b| b.is_ascii_hexdigit())
        && parts[1] != "0".repeat(32)
        && parts[3] == if sampled { "01" } else { "00" }
}

/// The request path of `outbound::send` (http actions and metric sources)
/// writes the `traceparent` of the current span; nothing without a span
/// context (tracing off); a `traceparent` the request sets itself is kept.
#[test]
fn outgoing_requests_carry_the_current_trace_context() {
    use http::HeaderMap;
    use stageset_controller::reconcile::outbound::trace_context;

    // Tracing off: no OpenTelemetry layer, no header.
    let mut headers = HeaderMap::new();
    let span = tracing::info_span!("off");
    span.in_scope(|| trace_context(&mut headers));
    assert!(headers.get("traceparent").is_none());

    tracing::subscriber::with_default(otel_subscriber(1.0), || {
        let span = tracing::info_span!("StageSet.Reconcile");
        let mut headers = HeaderMap::new();
        span.in_scope(|| trace_context(&mut headers));
        let value = headers["traceparent"].to_str().unwrap().to_string();
        assert!(is_traceparent(&value, true), "{value}");
        // Outside any span: nothing.
        let mut headers = HeaderMap::new();
        trace_context(&mut headers);
        assert!(headers.get("traceparent").is_none());
        // The request's own header wins.
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-custom".parse().unwrap());
        span.in_scope(|| trace_context(&mut headers));
        assert_eq!(headers["traceparent"], "00-custom");
    });
    // An unsampled pass still propagates its context, flagged unsampled.
    tracing::subscriber::with_default(otel_subscriber(0.0), || {
        let span = tracing::info_span!("StageSet.Reconcile");
        let mut headers = HeaderMap::new();
        span.in_scope(|| trace_context(&mut headers));
        let value = headers["traceparent"].to_str().unwrap().to_string();
        assert!(is_traceparent(&value, false), "{value}");
    });
}

/// The sampler of `--tracing-sample-ratio`: ≤ 0 never, ≥ 1 always, else the
/// TraceID ratio (not parent-based).
#[test]
fn the_sampler_follows_the_ratio() {
    use opentelemetry_sdk::trace::Sampler;
    use stageset_controller::telemetry::sampler;
    assert!(matches!(sampler(0.0), Sampler::AlwaysOff));
    assert!(matches!(sampler(-1.0), Sampler::AlwaysOff));
    assert!(matches!(sampler(1.0), Sampler::AlwaysOn));
    assert!(matches!(sampler(2.0), Sampler::AlwaysOn));
    assert!(matches!(sampler(0.25), Sampler::TraceIdRatioBased(r) if r == 0.25));
}

/// An address the action guard lets the client dial (not loopback): the
/// 192.0.2.10 of scripts/test.sh's network namespace, else this host's own
/// outbound address; `None` when neither exists.
fn dialable_address() -> Option<std::net::IpAddr> {
    use stageset_controller::reconcile::outbound::is_forbidden_ip;
    let netns: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    let own = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok();
    [Some(netns), own]
        .into_iter()
        .flatten()
        .find(|ip| !is_forbidden_ip(*ip, false) && std::net::TcpListener::bind((*ip, 0)).is_ok())
}

/// End to end through `outbound::send` (the client of http actions and
/// metric sources): the receiver sees the `traceparent` of the active span.
#[test]
fn an_http_action_carries_traceparent_on_the_wire() {
    use stageset_controller::api::HttpMethod;
    use stageset_controller::reconcile::outbound::{ActionPolicy, HttpActionRequest, send};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Some(ip) = dialable_address() else {
        eprintln!("skipped: no address the action guard may dial");
        return;
    };
    stageset_controller::reconcile::outbound::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = tracing::subscriber::with_default(otel_subscriber(1.0), || {
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await
                .unwrap();
                String::from_utf8_lossy(&request).to_string()
            });
            let span = tracing::info_span!("StageSet.Reconcile");
            let url = format!("http://{addr}/hook");
            let policy = ActionPolicy::new(Vec::new());
            tracing::Instrument::instrument(
                async {
                    send(HttpActionRequest::new(url, HttpMethod::Get), &policy)
                        .await
                        .expect("the call succeeds")
                },
                span,
            )
            .await;
            server.await.unwrap()
        })
    });
    let line = seen
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("traceparent:"))
        .unwrap_or_else(|| panic!("no traceparent in {seen:?}"));
    let value = line.split_once(':').unwrap().1.trim();
    assert!(is_traceparent(value, true), "{value}");
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The trace spans add nothing to the JSON log lines inside them, with or
/// without the exporter's layer, and the log level still filters the log
/// output when the exporter's layer is there.
#[test]
fn trace_spans_stay_out_of_the_log_lines() {
    use stageset_controller::logging::{self, Settings};
    use tracing::level_filters::LevelFilter;
    use tracing_subscriber::Layer;

    let run = |subscriber: Box<dyn tracing::Subscriber + Send + Sync>| {
        tracing::subscriber::with_default(subscriber, || {
            let span = stageset_controller::traced_span!(
                "StageSet.Reconcile",
                stageset.namespace = "default",
                stageset.name = "shop",
            );
            span.in_scope(|| {
                tracing::debug!("hidden");
                tracing::warn!(logger = "test", "inside");
            });
            stageset_controller::telemetry::fail(&span, &"boom");
            span.in_scope(|| tracing::warn!(logger = "test", "after"));
        });
    };
    let settings = Settings {
        level: LevelFilter::WARN,
        ..Settings::default()
    };
    let plain = Buffer::default();
    run(logging::subscriber(&settings, {
        let b = plain.clone();
        move || b.clone()
    }));
    let otel = Buffer::default();
    let layer = {
        use opentelemetry::trace::TracerProvider as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .boxed()
    };
    run(logging::subscriber_with(
        &settings,
        {
            let b = otel.clone();
            move || b.clone()
        },
        Some(layer),
    ));
    for buffer in [plain, otel] {
        let lines = buffer.lines();
        let msgs: Vec<&str> = lines.iter().map(|l| l["msg"].as_str().unwrap()).collect();
        assert_eq!(msgs, ["inside", "after"], "{lines:#?}");
        for line in &lines {
            let keys: std::collections::BTreeSet<&str> = line
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let want: std::collections::BTreeSet<&str> =
                ["level", "ts", "logger", "msg"].into_iter().collect();
            assert_eq!(keys, want, "{line}");
        }
    }
}
