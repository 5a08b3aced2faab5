//! Events forwarded to Flux's notification-controller (`--events-addr`,
//! docs/decisions.md 10): the payload follows Flux's event format field by field,
//! and a receiver that fails, hangs or is down never blocks or fails a rollout.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use stageset_controller::api::StageSet;
use support::*;
use tokio::net::TcpListener;

const NS: &str = "default";

/// What the receiver answers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Status(u16),
    /// Reads the request, never answers.
    Hang,
}

#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Value,
}

/// A stand-in for notification-controller's event receiver.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, mode, store.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The POSTs about StageSet `name` with this reason.
    fn about(&self, name: &str, reason: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.body["involvedObject"]["name"] == name && r.body["reason"] == reason)
            .collect()
    }

    /// Waits (up to 60 s) until at least `count` POSTs about `name` with
    /// `reason` arrived.
    async fn wait_for(&self, name: &str, reason: &str, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.about(name, reason);
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count} {reason} event(s) about {name}; received: {:#?}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: Request<Incoming>,
    mode: Mode,
    store: Arc<Mutex<Vec<Received>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    store.lock().unwrap().push(Received {
        method,
        path,
        content_type,
        body,
    });
    match mode {
        Mode::Status(code) => Ok(Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(Full::new(Bytes::new()))
            .unwrap()),
        Mode::Hang => std::future::pending().await,
    }
}

async fn harness(events_addr: &str) -> Harness {
    Harness::start_with(HarnessOptions {
        flags: vec![
            format!("--events-addr={events_addr}"),
            // As the chart runs it (the binary adds no runbook links by default).
            "--runbook-base-url=https://stageset.projects.metio.wtf/runbooks".into(),
        ],
        ..Default::default()
    })
    .await
}

/// Creates a StageSet with annotations (the harness helper sets only a spec).
async fn stageset_annotated(h: &Harness, name: &str, annotations: Value, spec: Value) {
    let body = json!({
        "apiVersion": "stages.metio.wtf/v1",
        "kind": "StageSet",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": spec
    });
    Api::<StageSet>::namespaced(h.client.clone(), NS)
        .patch(
            name,
            &PatchParams::apply("test-user").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("StageSet applied");
}

/// Checks one forwarded event against Flux's event format
/// (fluxcd/pkg/apis/event `Event`) and the StageSet it is about.
fn assert_flux_event(
    got: &Received,
    ss: &StageSet,
    severity: &str,
    reason: &str,
    message: &str,
    revision: &str,
) {
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/");
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    let ev = got.body.as_object().expect("a JSON object");
    let fields: std::collections::BTreeSet<&str> = ev.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        [
            "involvedObject",
            "severity",
            "timestamp",
            "message",
            "reason",
            "action",
            "metadata",
            "reportingController",
            "reportingInstance",
        ]
        .into_iter()
        .collect(),
        "{ev:#?}"
    );
    let obj = &ev["involvedObject"];
    assert_eq!(obj["kind"], "StageSet");
    assert_eq!(obj["apiVersion"], "stages.metio.wtf/v1");
    assert_eq!(obj["namespace"], NS);
    assert_eq!(obj["name"].as_str(), ss.metadata.name.as_deref());
    assert_eq!(obj["uid"].as_str(), ss.metadata.uid.as_deref());
    assert!(obj["uid"].as_str().is_some_and(|u| !u.is_empty()), "{obj}");
    assert!(
        obj["resourceVersion"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{obj}"
    );
    assert_eq!(ev["severity"], severity);
    assert_eq!(ev["reason"], reason);
    assert_eq!(ev["action"], reason);
    assert_eq!(ev["message"], message);
    assert_eq!(ev["reportingController"], "stageset-controller");
    assert_eq!(
        ev["reportingInstance"].as_str(),
        Some(stageset_controller::leader::instance_name().as_str())
    );
    // metav1.Time: RFC 3339, seconds, UTC.
    let ts = ev["timestamp"].as_str().expect("timestamp is a string");
    let parsed: Timestamp = ts.parse().expect("timestamp is RFC 3339");
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    let age = Timestamp::now().duration_since(parsed);
    assert!(
        age.as_secs() >= -5 && age.as_secs() < 300,
        "timestamp {ts} is not recent"
    );
    // Metadata keys carry the involved object's API group, as Flux's do.
    let meta = ev["metadata"].as_object().expect("metadata is a map");
    assert_eq!(meta["stages.metio.wtf/revision"], revision);
    assert_eq!(
        meta["stages.metio.wtf/token"].as_str(),
        ss.metadata.generation.map(|g| g.to_string()).as_deref()
    );
    for (k, v) in meta {
        assert!(v.is_string(), "metadata values are strings: {k}={v}");
        assert!(
            k.starts_with("stages.metio.wtf/") || k.starts_with("event.toolkit.fluxcd.io/"),
            "metadata key {k} has no API group prefix"
        );
    }
}

/// A rollout to Ready sends a Normal `Succeeded` event with severity info, a
/// failure a Warning with severity error, both in Flux's format, alongside the
/// Kubernetes Events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_forwarded_in_flux_event_format() {
    let receiver = Receiver::start(Mode::Status(200)).await;
    let h = harness(&receiver.url()).await;

    // Success.
    let art = h.artifact("ok.tar.gz", &[("cm.yaml", &configmap(NS, "fwd-ok", "x"))]);
    h.external_artifact(NS, "ok", &art, "v1@sha1:abc").await;
    stageset_annotated(
        &h,
        "good",
        json!({"event.toolkit.fluxcd.io/env": "staging", "unrelated.example.com/x": "no"}),
        json!({"stages": [{"name": "app", "sourceRef": {"name": "ok"}}]}),
    )
    .await;
    let ss = h
        .wait_ready_reason(NS, "good", "Succeeded", "Applied and verified")
        .await;
    let (_, _, ready_message) = ready(&ss).unwrap();
    let got = receiver.wait_for("good", "Succeeded", 1).await;
    assert_flux_event(
        &got[0],
        &ss,
        "info",
        "Succeeded",
        &ready_message,
        "v1@sha1:abc",
    );
    let meta = &got[0].body["metadata"];
    assert_eq!(meta["event.toolkit.fluxcd.io/env"], "staging");
    assert!(meta.get("unrelated.example.com/x").is_none());
    // The Kubernetes Event is still written.
    let events = h.events(NS, "good").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Succeeded")
                && e.type_.as_deref() == Some("Normal"))
    );

    // Failure: a missing ServiceAccount fails the stage.
    let art = h.artifact("bad.tar.gz", &[("cm.yaml", &configmap(NS, "fwd-bad", "x"))]);
    h.external_artifact(NS, "bad", &art, "r7").await;
    h.stageset(
        NS,
        "bad",
        json!({"serviceAccountName": "ghost", "stages": [{"name": "app", "sourceRef": {"name": "bad"}}]}),
    )
    .await;
    let ss = h
        .wait_ready_reason(
            NS,
            "bad",
            "StageFailed",
            "serviceaccount \"ghost\" not found",
        )
        .await;
    let (_, _, ready_message) = ready(&ss).unwrap();
    assert!(ready_message.contains("(runbook: "), "{ready_message}");
    let got = receiver.wait_for("bad", "StageFailed", 1).await;
    assert_flux_event(&got[0], &ss, "error", "StageFailed", &ready_message, "r7");
    assert!(
        got[0].body["metadata"]
            .get("event.toolkit.fluxcd.io/env")
            .is_none()
    );
    let events = h.events(NS, "bad").await;
    assert!(events.iter().any(
        |e| e.reason.as_deref() == Some("StageFailed") && e.type_.as_deref() == Some("Warning")
    ));
    // Every forwarded event names one of our StageSets and has a Flux severity.
    for r in receiver.received() {
        assert!(["info", "error"].contains(&r.body["severity"].as_str().unwrap()));
    }
}

/// Rolls out one ConfigMap stage and waits for Ready, returning how long it
/// took.
async fn roll_out(h: &Harness, name: &str) -> Duration {
    let start = Instant::now();
    let art = h.artifact(
        &format!("{name}.tar.gz"),
        &[("cm.yaml", &configmap(NS, name, "x"))],
    );
    h.external_artifact(NS, name, &art, "r1").await;
    h.stageset(
        NS,
        name,
        json!({"stages": [{"name": "app", "sourceRef": {"name": name}}]}),
    )
    .await;
    h.wait_ready_reason(NS, name, "Succeeded", "Applied and verified")
        .await;
    assert!(h.get_opt("v1", "ConfigMap", Some(NS), name).await.is_some());
    start.elapsed()
}

/// A receiver answering 500 gets the event again (retries with back-off),
/// and the rollout neither waits for it nor fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_is_retried_and_never_blocks_the_rollout() {
    let receiver = Receiver::start(Mode::Status(500)).await;
    let h = harness(&receiver.url()).await;
    roll_out(&h, "five-hundred").await;
    // A second StageSet rolls out while the first one's event is still being
    // retried.
    roll_out(&h, "five-hundred-2").await;
    // Two retries after the first attempt (1 s, then 2 s back-off), then the
    // event is given up.
    let got = receiver.wait_for("five-hundred", "Succeeded", 3).await;
    assert_eq!(got[0].body, got[1].body, "a retry posts the same event");
    assert_eq!(got[1].body, got[2].body, "a retry posts the same event");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(receiver.about("five-hundred", "Succeeded").len(), 3);
    let ss = h.get_stageset(NS, "five-hundred").await;
    assert_eq!(ready(&ss).unwrap().0, "True");
}

/// A receiver that is down (connection refused) or hangs (never answers)
/// blocks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_hanging_receiver_never_blocks_the_rollout() {
    // Down: a port nobody listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let h = harness(&down).await;
    let took = roll_out(&h, "down").await;
    assert!(took < Duration::from_secs(30), "took {took:?}");
    drop(h);

    // Hanging: every POST times out; several StageSets still roll out
    // promptly while the forwarder waits.
    let receiver = Receiver::start(Mode::Hang).await;
    let h = harness(&receiver.url()).await;
    for name in ["hang-1", "hang-2", "hang-3"] {
        let took = roll_out(&h, name).await;
        assert!(took < Duration::from_secs(30), "{name} took {took:?}");
    }
    receiver.wait_for("hang-1", "Succeeded", 1).await;
}

fn bare_stageset(name: &str) -> StageSet {
    serde_json::from_value(json!({
        "apiVersion": "stages.metio.wtf/v1",
        "kind": "StageSet",
        "metadata": {"name": name, "namespace": NS, "uid": "u-1", "generation": 1},
        "spec": {"stages": [{"name": "app", "sourceRef": {"name": "a"}}]}
    }))
    .unwrap()
}

/// 429 is notification-controller's answer to a duplicate event and 4xx a
/// refusal: neither is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_refusals_are_not_retried() {
    use stageset_controller::reconcile::notify::{Notifier, StageSetEvent};
    for code in [429, 400] {
        let receiver = Receiver::start(Mode::Status(code)).await;
        let notifier = Notifier::new(&receiver.url());
        let name = format!("direct-{code}");
        notifier.forward(&StageSetEvent {
            stageset: &bare_stageset(&name),
            instance: "test",
            warning: false,
            reason: "Succeeded",
            note: "ok",
            time: Timestamp::now(),
        });
        receiver.wait_for(&name, "Succeeded", 1).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(receiver.about(&name, "Succeeded").len(), 1, "HTTP {code}");
    }
}

/// Events beyond the bounded queue are dropped, never waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_events_without_blocking() {
    use stageset_controller::reconcile::notify::{Notifier, NotifierOptions, StageSetEvent};
    let receiver = Receiver::start(Mode::Hang).await;
    let notifier = Notifier::with_options(
        &receiver.url(),
        NotifierOptions {
            queue: 1,
            attempt_timeout: Duration::from_millis(300),
            retries: 0,
            backoff: Duration::from_millis(10),
            deadline: Duration::from_secs(1),
        },
    );
    let ss = bare_stageset("flood");
    let start = Instant::now();
    for i in 0..10 {
        notifier.forward(&StageSetEvent {
            stageset: &ss,
            instance: "test",
            warning: true,
            reason: "StageFailed",
            note: &format!("failure {i}"),
            time: Timestamp::now(),
        });
    }
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "forwarding never waits"
    );
    receiver.wait_for("flood", "StageFailed", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = receiver.about("flood", "StageFailed").len();
    assert!(
        (1..=3).contains(&got),
        "{got} of 10 events posted with a queue of 1"
    );
}
