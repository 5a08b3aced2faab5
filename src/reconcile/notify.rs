//! Forwarding the controller's events to Flux's notification-controller
//! (`--events-addr`, docs/decisions.md 10, delivery.md §5.10), in addition to the
//! Kubernetes Events written through events.k8s.io/v1.
//!
//! The payload is Flux's event format (`github.com/fluxcd/pkg/apis/event`
//! `Event`, as posted by `fluxcd/pkg/runtime/events` `Recorder`): a JSON
//! object with `involvedObject` (a core/v1 ObjectReference), `severity`
//! (`info` for Normal, `error` for Warning), `timestamp` (RFC 3339, seconds,
//! UTC), `message`, `reason`, `action` (the reason, as for our Kubernetes
//! Events), `metadata`, `reportingController` and `reportingInstance`, POSTed
//! as `application/json` to the configured address.
//!
//! Metadata follows Flux's convention: keys are prefixed with the involved
//! object's API group (notification-controller drops every other key except
//! `event.toolkit.fluxcd.io/*`): `stages.metio.wtf/revision` (the pinned
//! revision(s)), `stages.metio.wtf/token` (the StageSet's generation, which
//! with the message and revision makes up the receiver's de-duplication key),
//! plus every `event.toolkit.fluxcd.io/*` annotation of the StageSet
//! (Flux RFC-0008).
//!
//! Delivery never holds up or fails a reconcile: [`Notifier::forward`] is
//! synchronous and only queues the event on a bounded channel; one background
//! task posts the queued events, one after the other, in order. Like Flux's
//! retrying client, connection errors and 5xx answers (but 501) are retried
//! with exponential back-off, a bounded number of times and within a deadline
//! per event; 429 is notification-controller's answer to a duplicate event and
//! is not retried. An event that cannot be delivered (nobody listens at the
//! address, the receiver keeps failing or hangs, or refuses it) is dropped
//! after that, and so is an event that finds the queue full: each is logged at
//! WARN with the StageSet's key and counted in
//! `stageset_events_dropped_total{reason}` (`undeliverable` or `queue_full`).
//! [`Notifier::flush`] waits until everything queued before it is finished.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::api::{StageSet, StageSetStatus};
use crate::metrics::{EventDropReason, Metrics};

/// The API group Flux reserves for event metadata copied from annotations.
pub const FLUX_EVENT_GROUP: &str = "event.toolkit.fluxcd.io";
/// Flux's `severity` for Normal events.
pub const SEVERITY_INFO: &str = "info";
/// Flux's `severity` for Warning events.
pub const SEVERITY_ERROR: &str = "error";
/// Flux's limit on an event message (`+kubebuilder:validation:MaxLength=39000`).
pub const MAX_MESSAGE_CHARS: usize = 39_000;

/// One event about a StageSet: what is recorded as a Kubernetes Event and
/// forwarded to notification-controller.
#[derive(Clone, Copy, Debug)]
pub struct StageSetEvent<'a> {
    /// The StageSet the event is about (its status gives the revision).
    pub stageset: &'a StageSet,
    /// This controller replica (`reportingInstance`).
    pub instance: &'a str,
    /// Warning (Flux severity `error`) or Normal (`info`).
    pub warning: bool,
    pub reason: &'a str,
    /// The message (Kubernetes calls it the note).
    pub note: &'a str,
    pub time: Timestamp,
}

/// An event in Flux's format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FluxEvent {
    pub involved_object: ObjectReference,
    pub severity: String,
    pub timestamp: String,
    pub message: String,
    pub reason: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    pub reporting_controller: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_instance: String,
}

/// The revision(s) a status pinned: those of the latest attempt, else those
/// of the latest successful run. One source gives its revision as is; several
/// give `<namespace>/<name>=<revision>` entries joined with `,`.
pub fn revision_of(status: &StageSetStatus) -> Option<String> {
    let revisions = if status.last_attempted_revisions.is_empty() {
        &status.last_applied_revisions
    } else {
        &status.last_attempted_revisions
    };
    match revisions.len() {
        0 => None,
        1 => revisions.values().next().cloned(),
        _ => Some(
            revisions
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// The Flux event for an event about a StageSet.
pub fn flux_event(event: &StageSetEvent<'_>) -> FluxEvent {
    let StageSetEvent {
        stageset: ss,
        instance,
        warning,
        reason,
        note: message,
        time: now,
    } = *event;
    let meta = ss.meta();
    let group = crate::api::GROUP;
    let mut metadata = BTreeMap::new();
    // Annotations first, so that our own keys always win.
    for (k, v) in ss.annotations() {
        if k.strip_prefix(FLUX_EVENT_GROUP)
            .is_some_and(|rest| rest.starts_with('/'))
        {
            metadata.insert(k.clone(), v.clone());
        }
    }
    if let Some(revision) = ss.status.as_ref().and_then(revision_of) {
        metadata.insert(format!("{group}/revision"), revision);
    }
    if let Some(generation) = meta.generation {
        metadata.insert(format!("{group}/token"), generation.to_string());
    }
    FluxEvent {
        involved_object: ObjectReference {
            api_version: Some(crate::api::API_VERSION.to_string()),
            kind: Some("StageSet".to_string()),
            name: Some(ss.name_any()),
            namespace: ss.namespace(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            field_path: None,
        },
        severity: if warning {
            SEVERITY_ERROR
        } else {
            SEVERITY_INFO
        }
        .to_string(),
        timestamp: now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        message: truncate_chars(message, MAX_MESSAGE_CHARS),
        reason: reason.to_string(),
        action: reason.to_string(),
        metadata,
        reporting_controller: crate::api::keys::EVENT_REPORTER.to_string(),
        reporting_instance: instance.to_string(),
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let cut = s.char_indices().nth(max - 3).map_or(s.len(), |(i, _)| i);
            format!("{}...", &s[..cut])
        }
    }
}

/// How a [`Notifier`] queues and retries.
#[derive(Clone, Debug)]
pub struct NotifierOptions {
    /// Events waiting to be posted; more are dropped (with a WARN and
    /// `stageset_events_dropped_total{reason="queue_full"}`).
    pub queue: usize,
    /// Timeout of one POST.
    pub attempt_timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one.
    pub backoff: Duration,
    /// Upper bound on the whole delivery of one event, retries included.
    pub deadline: Duration,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            queue: 256,
            attempt_timeout: Duration::from_secs(5),
            retries: 2,
            backoff: Duration::from_secs(1),
            deadline: Duration::from_secs(15),
        }
    }
}

struct Delivery {
    key: String,
    reason: String,
    body: Bytes,
}

/// What the delivery task takes from the queue.
enum Queued {
    Event(Delivery),
    /// Answered once everything queued before it is finished.
    Flush(oneshot::Sender<()>),
}

/// Posts events to notification-controller from a background task.
#[derive(Clone)]
pub struct Notifier {
    address: Arc<str>,
    tx: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier posting to `address` (`--events-addr`, a full URL) with the
    /// default options, counting dropped events in `metrics`. Call it inside
    /// the controller's Tokio runtime: the delivery task is spawned on it.
    pub fn new(address: &str, metrics: Arc<Metrics>) -> Notifier {
        Notifier::with_options(address, NotifierOptions::default(), metrics)
    }

    /// [`Notifier::new`] with explicit options.
    pub fn with_options(
        address: &str,
        options: NotifierOptions,
        metrics: Arc<Metrics>,
    ) -> Notifier {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let address: Arc<str> = Arc::from(address);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let client = client(options.attempt_timeout);
                handle.spawn(deliver_all(
                    client,
                    address.clone(),
                    rx,
                    options,
                    metrics.clone(),
                ));
            }
            Err(_) => tracing::warn!(
                logger = "setup",
                address = %address,
                "no async runtime; events will not be forwarded to notification-controller"
            ),
        }
        Notifier {
            address,
            tx,
            metrics,
        }
    }

    /// Where events are posted.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Queues an event about a StageSet for delivery. Never waits: when the
    /// queue is full the event is dropped (and counted).
    pub fn forward(&self, event: &StageSetEvent<'_>) {
        let ss = event.stageset;
        let reason = event.reason;
        let key = format!("{}/{}", ss.namespace().unwrap_or_default(), ss.name_any());
        let event = flux_event(event);
        let body = match serde_json::to_vec(&event) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(stageset = %key, reason, error = %e, "encoding the event for notification-controller failed");
                self.metrics.event_dropped(EventDropReason::Undeliverable);
                return;
            }
        };
        let delivery = Delivery {
            key,
            reason: reason.to_string(),
            body,
        };
        match self.tx.try_send(Queued::Event(delivery)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Queued::Event(d))) => {
                tracing::warn!(
                    stageset = %d.key,
                    reason = %d.reason,
                    "notification-controller queue full; event not forwarded"
                );
                self.metrics.event_dropped(EventDropReason::QueueFull);
            }
            Err(mpsc::error::TrySendError::Closed(Queued::Event(d))) => {
                tracing::debug!(
                    stageset = %d.key,
                    reason = %d.reason,
                    "notification-controller forwarder stopped; event not forwarded"
                );
                self.metrics.event_dropped(EventDropReason::Undeliverable);
            }
            Err(_) => unreachable!("forward only queues events"),
        }
    }

    /// Waits until every event queued before this call is finished:
    /// delivered, discarded as a duplicate, or dropped. Returns at once when
    /// no forwarder runs. Unlike [`Notifier::forward`] this waits, also for
    /// room in the queue; the pipeline never calls it.
    pub async fn flush(&self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Queued::Flush(done)).await.is_ok() {
            // An error means the forwarder stopped: nothing is left to wait for.
            let _ = finished.await;
        }
    }
}

fn client(timeout: Duration) -> reqwest::Client {
    crate::reconcile::outbound::install_crypto_provider();
    let builder = || {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stageset-controller/", env!("CARGO_PKG_VERSION")))
    };
    match builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                logger = "setup",
                error = %crate::reconcile::outbound::error_chain(&e),
                "no usable system CA certificates; posting events to an https:// --events-addr will fail"
            );
            builder()
                .tls_certs_only(Vec::<reqwest::Certificate>::new())
                .build()
                .expect("building a reqwest client without roots cannot fail")
        }
    }
}

async fn deliver_all(
    client: reqwest::Client,
    address: Arc<str>,
    mut rx: mpsc::Receiver<Queued>,
    options: NotifierOptions,
    metrics: Arc<Metrics>,
) {
    while let Some(queued) = rx.recv().await {
        let d = match queued {
            Queued::Event(d) => d,
            Queued::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let outcome = tokio::time::timeout(
            options.deadline,
            deliver(&client, &address, &d.body, &options),
        )
        .await;
        match outcome {
            Ok(Ok(Posted::Accepted)) => {
                tracing::debug!(stageset = %d.key, reason = %d.reason, "event forwarded to notification-controller")
            }
            Ok(Ok(Posted::Duplicate)) => {
                tracing::debug!(stageset = %d.key, reason = %d.reason, "notification-controller discarded a duplicate event")
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    stageset = %d.key,
                    reason = %d.reason,
                    address = %address,
                    error = %e,
                    "forwarding the event to notification-controller failed; event dropped"
                );
                metrics.event_dropped(EventDropReason::Undeliverable);
            }
            Err(_) => {
                tracing::warn!(
                    stageset = %d.key,
                    reason = %d.reason,
                    address = %address,
                    error = %format!("no success within {:?}", options.deadline),
                    "forwarding the event to notification-controller failed; event dropped"
                );
                metrics.event_dropped(EventDropReason::Undeliverable);
            }
        }
    }
}

enum Posted {
    Accepted,
    Duplicate,
}

async fn deliver(
    client: &reqwest::Client,
    address: &str,
    body: &Bytes,
    options: &NotifierOptions,
) -> Result<Posted, String> {
    let mut wait = options.backoff;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let sent = client
            .post(address)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let failure = match sent {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    return Ok(Posted::Accepted);
                }
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    return Ok(Posted::Duplicate);
                }
                let failure = format!("HTTP {status}");
                let retryable =
                    status.is_server_error() && status != reqwest::StatusCode::NOT_IMPLEMENTED;
                if !retryable {
                    return Err(failure);
                }
                failure
            }
            Err(e) => crate::reconcile::outbound::error_chain(&e),
        };
        if attempts > options.retries {
            return Err(format!("giving up after {attempts} attempt(s): {failure}"));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stageset() -> StageSet {
        serde_json::from_value(json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {
                "name": "shop",
                "namespace": "apps",
                "uid": "7d0cdc51-ddcf-4743-b223-83ca5c699632",
                "resourceVersion": "42",
                "generation": 3,
                "annotations": {
                    "event.toolkit.fluxcd.io/env": "prod",
                    "event.toolkit.fluxcd.io.evil/x": "no",
                    "other/key": "no"
                }
            },
            "spec": {"stages": [{"name": "app", "sourceRef": {"name": "a"}}]},
            "status": {"lastAttemptedRevisions": {"apps/a": "main@sha1:abc"}}
        }))
        .unwrap()
    }

    #[test]
    fn flux_format() {
        let now: Timestamp = "2022-10-28T07:26:19.123456Z".parse().unwrap();
        let ss = stageset();
        let ev = flux_event(&StageSetEvent {
            stageset: &ss,
            instance: "pod-1",
            warning: true,
            reason: "StageFailed",
            note: "stage \"app\" failed",
            time: now,
        });
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            v,
            json!({
                "involvedObject": {
                    "apiVersion": "stages.metio.wtf/v1",
                    "kind": "StageSet",
                    "name": "shop",
                    "namespace": "apps",
                    "uid": "7d0cdc51-ddcf-4743-b223-83ca5c699632",
                    "resourceVersion": "42"
                },
                "severity": "error",
                "timestamp": "2022-10-28T07:26:19Z",
                "message": "stage \"app\" failed",
                "reason": "StageFailed",
                "action": "StageFailed",
                "metadata": {
                    "event.toolkit.fluxcd.io/env": "prod",
                    "stages.metio.wtf/revision": "main@sha1:abc",
                    "stages.metio.wtf/token": "3"
                },
                "reportingController": "stageset-controller",
                "reportingInstance": "pod-1"
            })
        );
        let normal = flux_event(&StageSetEvent {
            stageset: &ss,
            instance: "",
            warning: false,
            reason: "Succeeded",
            note: "ok",
            time: now,
        });
        assert_eq!(normal.severity, "info");
        let v = serde_json::to_value(&normal).unwrap();
        assert!(v.get("reportingInstance").is_none());
    }

    #[test]
    fn revisions() {
        let mut status = StageSetStatus::default();
        assert_eq!(revision_of(&status), None);
        status
            .last_applied_revisions
            .insert("ns/a".into(), "r0".into());
        assert_eq!(revision_of(&status).as_deref(), Some("r0"));
        status
            .last_attempted_revisions
            .insert("ns/b".into(), "r2".into());
        status
            .last_attempted_revisions
            .insert("ns/a".into(), "r1".into());
        assert_eq!(revision_of(&status).as_deref(), Some("ns/a=r1,ns/b=r2"));
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        let cut = truncate_chars(&long, MAX_MESSAGE_CHARS);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS);
        assert!(cut.ends_with("..."));
        assert_eq!(truncate_chars("short", MAX_MESSAGE_CHARS), "short");
    }
}
