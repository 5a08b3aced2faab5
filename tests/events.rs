//! Events forwarded to Flux's notification-controller (`--events-addr`,
//! docs/decisions.md 10): the payload follows Flux's event format field by field,
//! and a receiver that fails, hangs or is down never blocks or fails a rollout;
//! events it cannot take are dropped after bounded retries and counted in
//! `stageset_events_dropped_total{reason}`.
//!
//! No assertion here depends on how long something took. "Not retried any
//! more" is checked after the forwarder reports the event finished (through
//! that metric, or `Notifier::flush`), and "never waits" by a call that returns
//! while the receiver holds a request open.

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
use stageset_controller::metrics::Metrics;
use stageset_controller::reconcile::notify::{Notifier, NotifierOptions, StageSetEvent};
use support::*;
use tokio::net::TcpListener;

const NS: &str = "default";

/// What the receiver answers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Status(u16),
    /// Reads the request, never answers.
    Hang,
    /// Reads the request and answers 200 once the test calls
    /// [`Receiver::release`].
    Hold,
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
    released: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let (released, release) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let store = store.clone();
                let release = release.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(req, mode, store.clone(), release.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            received,
            released,
            task,
        }
    }

    /// [`Mode::Hold`]: answers the held requests, and every later one, 200.
    fn release(&self) {
        self.released.send_replace(true);
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
    mut release: tokio::sync::watch::Receiver<bool>,
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
    let code = match mode {
        Mode::Status(code) => code,
        Mode::Hang => std::future::pending().await,
        Mode::Hold => {
            let _ = release.wait_for(|released| *released).await;
            200
        }
    };
    Ok(Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .body(Full::new(Bytes::new()))
        .unwrap())
}

/// `stageset_events_dropped_total{reason}` as exposed on /metrics.
fn dropped(metrics: &Metrics, reason: &str) -> u64 {
    let text = metrics.encode();
    let series = format!("stageset_events_dropped_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no series {series}in\n{text}"))
        .parse()
        .unwrap()
}

/// Waits (up to 60 s) until `dropped(metrics, reason)` reaches `count`.
async fn wait_dropped(metrics: &Metrics, reason: &str, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = dropped(metrics, reason);
        if now >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {count} {reason} drop(s), have {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn controller_metrics(h: &Harness) -> Arc<Metrics> {
    h.controller.as_ref().expect("controller running").metrics()
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

/// Rolls out one ConfigMap stage and waits for Ready.
async fn roll_out(h: &Harness, name: &str) {
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
}

/// A receiver answering 500 gets the event again (retries with back-off),
/// exactly as often as the bounded retries allow, and the rollout neither
/// waits for it nor fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_is_retried_and_never_blocks_the_rollout() {
    let receiver = Receiver::start(Mode::Status(500)).await;
    let h = harness(&receiver.url()).await;
    roll_out(&h, "five-hundred").await;
    // A second StageSet rolls out while the first one's event may still be
    // retried.
    roll_out(&h, "five-hundred-2").await;
    let got = receiver.wait_for("five-hundred", "Succeeded", 3).await;
    let event = got[0].body.clone();
    assert_eq!(got[1].body, event, "a retry posts the same event");
    assert_eq!(got[2].body, event, "a retry posts the same event");
    // The forwarder posts one event at a time, in queue order, and with a
    // receiver answering 500 every event ends dropped. So once as many events
    // are dropped as the receiver had seen up to and including this one, the
    // forwarder is done with it: no further attempt can follow.
    let mut seen: Vec<Value> = Vec::new();
    for r in receiver.received() {
        if !seen.contains(&r.body) {
            seen.push(r.body);
        }
    }
    let position = seen.iter().position(|b| *b == event).unwrap() + 1;
    wait_dropped(&controller_metrics(&h), "undeliverable", position as u64).await;
    let attempts = receiver
        .received()
        .iter()
        .filter(|r| r.body == event)
        .count();
    assert_eq!(attempts, 3, "one attempt and two retries, then dropped");
    let ss = h.get_stageset(NS, "five-hundred").await;
    assert_eq!(ready(&ss).unwrap().0, "True");
}

/// A receiver that is down (connection refused) or hangs (never answers)
/// blocks nothing: the rollouts finish, and the undeliverable event is dropped
/// and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_hanging_receiver_never_blocks_the_rollout() {
    // Down: a port nobody listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let h = harness(&down).await;
    roll_out(&h, "down").await;
    wait_dropped(&controller_metrics(&h), "undeliverable", 1).await;
    assert_eq!(dropped(&controller_metrics(&h), "queue_full"), 0);
    let ss = h.get_stageset(NS, "down").await;
    assert_eq!(ready(&ss).unwrap().0, "True");
    drop(h);

    // Hanging: the receiver never answers, yet several StageSets roll out
    // while the forwarder waits on it.
    let receiver = Receiver::start(Mode::Hang).await;
    let h = harness(&receiver.url()).await;
    for name in ["hang-1", "hang-2", "hang-3"] {
        roll_out(&h, name).await;
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

fn event<'a>(ss: &'a StageSet, reason: &'a str, note: &'a str) -> StageSetEvent<'a> {
    StageSetEvent {
        stageset: ss,
        instance: "test",
        warning: reason != "Succeeded",
        reason,
        note,
        time: Timestamp::now(),
    }
}

/// 429 is notification-controller's answer to a duplicate event and 4xx a
/// refusal: neither is retried, and only the refusal counts as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_refusals_are_not_retried() {
    for (code, refused) in [(429, 0), (400, 1)] {
        let receiver = Receiver::start(Mode::Status(code)).await;
        let metrics = Arc::new(Metrics::default());
        let notifier = Notifier::new(&receiver.url(), metrics.clone());
        let name = format!("direct-{code}");
        notifier.forward(&event(&bare_stageset(&name), "Succeeded", "ok"));
        notifier.flush().await;
        assert_eq!(receiver.about(&name, "Succeeded").len(), 1, "HTTP {code}");
        assert_eq!(dropped(&metrics, "undeliverable"), refused, "HTTP {code}");
        assert_eq!(dropped(&metrics, "queue_full"), 0, "HTTP {code}");
    }
}

/// Events to an address nobody listens on are given up after the bounded
/// retries and counted; forwarding them never waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_nobody_receives_are_dropped_after_the_retries_and_counted() {
    let nobody = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let options = NotifierOptions {
        queue: 8,
        attempt_timeout: Duration::from_secs(30),
        retries: 2,
        backoff: Duration::from_millis(10),
        deadline: Duration::from_secs(300),
    };
    let metrics = Arc::new(Metrics::default());
    let notifier = Notifier::with_options(&nobody, options.clone(), metrics.clone());
    let ss = bare_stageset("nobody");
    for i in 0..3 {
        notifier.forward(&event(&ss, "StageFailed", &format!("failure {i}")));
    }
    notifier.flush().await;
    assert_eq!(dropped(&metrics, "undeliverable"), 3);
    assert_eq!(dropped(&metrics, "queue_full"), 0);

    // The same bounded retries against a receiver that answers 503: the
    // attempts are countable there, one plus two retries.
    let receiver = Receiver::start(Mode::Status(503)).await;
    let metrics = Arc::new(Metrics::default());
    let notifier = Notifier::with_options(&receiver.url(), options, metrics.clone());
    notifier.forward(&event(&ss, "StageFailed", "failure"));
    notifier.flush().await;
    assert_eq!(receiver.about("nobody", "StageFailed").len(), 3);
    assert_eq!(dropped(&metrics, "undeliverable"), 1);
}

/// Events beyond the bounded queue are dropped and counted, never waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_events_without_blocking() {
    let receiver = Receiver::start(Mode::Hold).await;
    let metrics = Arc::new(Metrics::default());
    let notifier = Notifier::with_options(
        &receiver.url(),
        NotifierOptions {
            queue: 1,
            // Nothing times out: the forwarder stays on the first event until
            // the receiver is released.
            attempt_timeout: Duration::from_secs(3600),
            retries: 0,
            backoff: Duration::from_millis(10),
            deadline: Duration::from_secs(3600),
        },
        metrics.clone(),
    );
    let ss = bare_stageset("flood");
    notifier.forward(&event(&ss, "StageFailed", "failure 0"));
    // The first event is being posted and held: the forwarder is busy.
    receiver.wait_for("flood", "StageFailed", 1).await;
    // These calls return while that request is still open, so forwarding
    // never waits on delivery; one event fits in the queue, eight do not.
    for i in 1..10 {
        notifier.forward(&event(&ss, "StageFailed", &format!("failure {i}")));
    }
    assert_eq!(dropped(&metrics, "queue_full"), 8);
    assert_eq!(receiver.about("flood", "StageFailed").len(), 1);
    receiver.release();
    notifier.flush().await;
    let posted: Vec<String> = receiver
        .about("flood", "StageFailed")
        .iter()
        .map(|r| r.body["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(posted, ["failure 0", "failure 1"]);
    assert_eq!(dropped(&metrics, "undeliverable"), 0);
}
