//! Writing a StageSet's status (delivery.md §2.14–§2.19): the `Ready` condition
//! with its wire-stable reasons and runbook links, per-stage entries merged so
//! that unreached stages keep their record, and a Kubernetes Event on every
//! Ready transition.
//!
//! Status is written with server-side apply on the status subresource by the
//! StageSetActor only (field manager `stageset-controller`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::reasons::{CONDITION_READY, StageSetReason};
use crate::api::{Condition, ConditionStatus, StageSet, StageSetStatus, StageStatus, keys};
use crate::reconcile::error::Error;
use crate::reconcile::notify::{Notifier, StageSetEvent};

/// A computed Ready condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub status: ConditionStatus,
    pub reason: StageSetReason,
    pub message: String,
}

impl Ready {
    pub fn new(reason: StageSetReason, message: impl Into<String>) -> Ready {
        Ready {
            status: if reason.is_ready() {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            reason,
            message: message.into(),
        }
    }
}

/// Appends the runbook link to messages of actionable reasons (docs/decisions.md 5).
pub fn decorate(reason: StageSetReason, message: &str, runbook_base: Option<&str>) -> String {
    match runbook_base.filter(|b| !b.is_empty()) {
        Some(base) if reason.has_runbook() => format!(
            "{message} (runbook: {}/{}/)",
            base.trim_end_matches('/'),
            reason.runbook_slug()
        ),
        _ => message.to_string(),
    }
}

/// The Ready condition of a status, if any.
pub fn ready_of(status: &StageSetStatus) -> Option<&Condition> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
}

/// Sets the Ready condition, keeping `lastTransitionTime` when the status did not
/// change. Returns whether (status, reason) changed (an event is due).
pub fn set_ready(
    status: &mut StageSetStatus,
    ready: &Ready,
    generation: i64,
    runbook_base: Option<&str>,
) -> bool {
    let message = decorate(ready.reason, &ready.message, runbook_base);
    let now = Time(Timestamp::now());
    let previous = ready_of(status).cloned();
    let transition = previous.as_ref().is_none_or(|p| p.status != ready.status);
    let changed = previous
        .as_ref()
        .is_none_or(|p| p.status != ready.status || p.reason != ready.reason.as_str());
    let condition = Condition {
        type_: CONDITION_READY.to_string(),
        status: ready.status,
        observed_generation: Some(generation),
        last_transition_time: if transition {
            now
        } else {
            previous
                .map(|p| p.last_transition_time)
                .unwrap_or_else(|| Time(Timestamp::now()))
        },
        reason: ready.reason.as_str().to_string(),
        message,
    };
    status.conditions.retain(|c| c.type_ != CONDITION_READY);
    status.conditions.push(condition);
    changed
}

/// Merges this pass's stage entries into the previous ones (§2.19): entries
/// produced now win, spec stages not reached keep their previous entry, stages
/// no longer in the spec are dropped, the result is in spec order.
pub fn merge_stages(
    spec_stages: &[String],
    previous: &[StageStatus],
    now: &[StageStatus],
) -> Vec<StageStatus> {
    spec_stages
        .iter()
        .filter_map(|name| {
            now.iter()
                .find(|s| &s.name == name)
                .or_else(|| previous.iter().find(|s| &s.name == name))
                .cloned()
        })
        .collect()
}

/// Writes the status with server-side apply on the status subresource;
/// returns the StageSet's resourceVersion after the write.
pub async fn write(
    client: &kube::Client,
    ss: &StageSet,
    status: &StageSetStatus,
) -> Result<Option<String>, Error> {
    let namespace = ss.namespace().unwrap_or_default();
    let api: Api<StageSet> = Api::namespaced(client.clone(), &namespace);
    let body = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "StageSet",
        "metadata": {"name": ss.name_any(), "namespace": namespace},
        "status": status,
    });
    let name = ss.name_any();
    let params = PatchParams::apply(keys::FIELD_MANAGER).force();
    let patch = Patch::Apply(&body);
    crate::reconcile::error::retrying(|| api.patch_status(&name, &params, &patch))
        .await
        .map(|written| written.resource_version())
        .map_err(|e| {
            Error::api(
                &format!("writing the status of {namespace}/{}", ss.name_any()),
                &e,
            )
        })
}

/// Records a Kubernetes Event (events.k8s.io/v1) about a StageSet and, when
/// `--events-addr` is set, forwards it to Flux's notification-controller
/// (docs/decisions.md 10). The Kubernetes Event is the primary record; forwarding
/// is queued (never blocks) and happens even when the Kubernetes write failed.
/// The forwarded message is not cut to the Event API's 1 KiB.
pub async fn event(
    client: &kube::Client,
    notifier: Option<&Notifier>,
    event: &StageSetEvent<'_>,
) -> Result<(), Error> {
    let recorded = record(client, event).await;
    if let Some(notifier) = notifier {
        notifier.forward(event);
    }
    recorded
}

async fn record(client: &kube::Client, event: &StageSetEvent<'_>) -> Result<(), Error> {
    let StageSetEvent {
        stageset: ss,
        instance,
        warning,
        reason,
        note,
        time,
    } = *event;
    let namespace = ss.namespace().unwrap_or_default();
    let name = ss.name_any();
    record_event(
        client,
        &EventRecord {
            namespace: &namespace,
            name_prefix: &name,
            reporter: keys::EVENT_REPORTER,
            instance,
            warning,
            reason,
            note,
            time,
            regarding: json!({
                "apiVersion": crate::api::API_VERSION,
                "kind": "StageSet",
                "name": name,
                "namespace": namespace,
                "uid": ss.meta().uid.clone().unwrap_or_default(),
                "resourceVersion": ss.meta().resource_version.clone().unwrap_or_default(),
            }),
        },
    )
    .await
}

/// One events.k8s.io/v1 Event to create.
pub struct EventRecord<'a> {
    /// Where the Event lives: the object's namespace, `default` for a
    /// cluster-scoped object (as client-go's recorder does).
    pub namespace: &'a str,
    /// The Event's name starts with this (the object's name).
    pub name_prefix: &'a str,
    /// `reportingController`.
    pub reporter: &'a str,
    /// `reportingInstance`.
    pub instance: &'a str,
    pub warning: bool,
    /// Both `reason` and `action`.
    pub reason: &'a str,
    /// Cut to the API server's 1 KiB.
    pub note: &'a str,
    pub time: Timestamp,
    /// The `regarding` object reference.
    pub regarding: serde_json::Value,
}

/// Creates an Event.
pub async fn record_event(client: &kube::Client, e: &EventRecord<'_>) -> Result<(), Error> {
    let name = format!(
        "{}.{:016x}",
        e.name_prefix,
        (e.time.as_nanosecond() as u64) ^ fastrand::u64(..)
    );
    // Event notes are limited to 1 KiB by the API server.
    let mut note = e.note.to_string();
    if note.len() > 1024 {
        let mut cut = 1021;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let ev = json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": e.namespace},
        "eventTime": e.time.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "reportingController": e.reporter,
        "reportingInstance": e.instance,
        "action": e.reason,
        "reason": e.reason,
        "type": if e.warning { "Warning" } else { "Normal" },
        "note": note,
        "regarding": e.regarding,
    });
    let api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), e.namespace);
    let ev: k8s_openapi::api::events::v1::Event =
        serde_json::from_value(ev).map_err(|err| Error::Transient(err.to_string()))?;
    api.create(&PostParams::default(), &ev)
        .await
        .map(|_| ())
        .map_err(|err| Error::api(&format!("recording event {}", e.reason), &err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_links() {
        let base = Some("https://stageset.projects.metio.wtf/runbooks");
        assert_eq!(
            decorate(StageSetReason::StageFailed, "boom", base),
            "boom (runbook: https://stageset.projects.metio.wtf/runbooks/stagefailed/)"
        );
        assert_eq!(decorate(StageSetReason::Succeeded, "ok", base), "ok");
        assert_eq!(decorate(StageSetReason::Suspended, "s", base), "s");
        assert_eq!(decorate(StageSetReason::StageFailed, "boom", None), "boom");
        assert_eq!(
            decorate(
                StageSetReason::RBACDenied,
                "x",
                Some("https://example.com/rb/")
            ),
            "x (runbook: https://example.com/rb/rbacdenied/)"
        );
    }

    #[test]
    fn transition_time_kept_on_message_change() {
        let mut status = StageSetStatus::default();
        assert!(set_ready(
            &mut status,
            &Ready::new(StageSetReason::StageProgressing, "a"),
            1,
            None
        ));
        let first = ready_of(&status).unwrap().last_transition_time.clone();
        // Same status (False), other reason: an event, but the transition time stays.
        assert!(set_ready(
            &mut status,
            &Ready::new(StageSetReason::StageFailed, "b"),
            2,
            None
        ));
        assert_eq!(ready_of(&status).unwrap().last_transition_time, first);
        // Only the message changes: no event.
        assert!(!set_ready(
            &mut status,
            &Ready::new(StageSetReason::StageFailed, "c"),
            2,
            None
        ));
        assert_eq!(ready_of(&status).unwrap().observed_generation, Some(2));
        assert_eq!(status.conditions.len(), 1);
        assert!(set_ready(
            &mut status,
            &Ready::new(StageSetReason::Succeeded, "ok"),
            2,
            None
        ));
        assert_eq!(ready_of(&status).unwrap().status, ConditionStatus::True);
    }

    #[test]
    fn stage_merge() {
        let s = |n: &str, m: &str| StageStatus {
            name: n.into(),
            message: Some(m.into()),
            ..Default::default()
        };
        let spec = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let merged = merge_stages(
            &spec,
            &[s("c", "old-c"), s("b", "old-b"), s("gone", "x")],
            &[s("a", "new-a")],
        );
        let names: Vec<_> = merged
            .iter()
            .map(|s| (s.name.clone(), s.message.clone().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("a".into(), "new-a".into()),
                ("b".into(), "old-b".into()),
                ("c".into(), "old-c".into())
            ]
        );
    }
}
