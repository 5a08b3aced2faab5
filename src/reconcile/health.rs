//! kstatus health rules (delivery.md §2.9): the readiness of a live object,
//! computed from its `metadata` and `status` only.
//!
//! A re-implementation of `sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute`:
//! generic checks first, then a per-kind rule for the built-in workload kinds,
//! then the `Ready` condition for everything else. Kinds are matched on API
//! group + kind (the version is ignored). Malformed fields (wrong JSON type)
//! are treated as absent rather than reported as errors.

use std::fmt;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// How long a Pod may stay `PodScheduled=False/Unschedulable` before it is
/// reported as Failed (kstatus `ScheduleWindow`).
const SCHEDULE_WINDOW: SignedDuration = SignedDuration::from_secs(15);

/// Longest condition message copied into a reason.
const MAX_DETAIL_CHARS: usize = 300;

/// The kstatus health of an object. The `String`s are short human-readable
/// reasons meant for status messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// The object has reached its desired state.
    Current,
    /// The object is still converging (or we cannot tell yet).
    InProgress(String),
    /// The object has failed to converge and will not without intervention.
    Failed(String),
    /// The object has a `deletionTimestamp`.
    Terminating,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Current => f.write_str("Current"),
            Health::InProgress(reason) => write!(f, "InProgress: {reason}"),
            Health::Failed(reason) => write!(f, "Failed: {reason}"),
            Health::Terminating => f.write_str("Terminating"),
        }
    }
}

/// Computes the kstatus health of `obj` (a full object including `status`,
/// as read from the API server). `now` is only used by the Pod
/// unschedulable rule.
///
/// Generic checks, in order, for every kind:
/// 1. `metadata.deletionTimestamp` set → [`Health::Terminating`];
/// 2. `metadata.generation` and `status.observedGeneration` both present and
///    different → InProgress (like kstatus, the check is skipped when either
///    is absent);
/// 3. a `Reconciling=True` condition → InProgress, else a `Stalled=True`
///    condition → Failed.
///
/// Then the per-kind rule, see the private `*_health` functions.
pub fn compute(obj: &Value, now: Timestamp) -> Health {
    let kind = str_at(obj, &["kind"]).unwrap_or_default();
    let group = group_of(str_at(obj, &["apiVersion"]).unwrap_or_default());
    let conditions = conditions(obj);

    if str_at(obj, &["metadata", "deletionTimestamp"]).is_some_and(|s| !s.is_empty()) {
        return Health::Terminating;
    }
    if let (Some(generation), Some(observed)) = (
        int_at(obj, &["metadata", "generation"]),
        int_at(obj, &["status", "observedGeneration"]),
    ) && generation != observed
    {
        return Health::InProgress(format!(
            "{} generation {generation} not yet observed (observed generation {observed})",
            kind_label(kind)
        ));
    }
    if let Some(c) = find_condition(&conditions, "Reconciling", "True") {
        return Health::InProgress(with_detail(
            format!("{} is reconciling", kind_label(kind)),
            c,
        ));
    }
    if let Some(c) = find_condition(&conditions, "Stalled", "True") {
        return Health::Failed(with_detail(format!("{} is stalled", kind_label(kind)), c));
    }

    match (group, kind) {
        ("apps" | "extensions", "Deployment") => deployment_health(obj, &conditions),
        ("apps", "StatefulSet") => statefulset_health(obj),
        ("apps" | "extensions", "DaemonSet") => daemonset_health(obj),
        ("apps" | "extensions", "ReplicaSet") => replicaset_health(obj, &conditions),
        ("", "Pod") => pod_health(obj, &conditions, now),
        ("batch", "Job") => job_health(&conditions, obj),
        ("", "PersistentVolumeClaim") => pvc_health(obj),
        ("", "Service") => service_health(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd_health(&conditions),
        ("policy", "PodDisruptionBudget") | ("", "ConfigMap" | "Secret") | ("batch", "CronJob") => {
            Health::Current
        }
        _ => ready_condition_health(kind, &conditions),
    }
}

/// One entry of `status.conditions`; missing fields are empty.
#[derive(Debug, Default)]
struct Condition<'a> {
    type_: &'a str,
    status: &'a str,
    reason: &'a str,
    message: &'a str,
    last_transition_time: Option<&'a str>,
}

fn conditions(obj: &Value) -> Vec<Condition<'_>> {
    let Some(items) = obj
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|c| c.is_object())
        .map(|c| {
            let field = |name: &str| c.get(name).and_then(Value::as_str);
            Condition {
                type_: field("type").unwrap_or_default(),
                status: field("status").unwrap_or_default(),
                reason: field("reason").unwrap_or_default(),
                message: field("message").unwrap_or_default(),
                last_transition_time: field("lastTransitionTime"),
            }
        })
        .collect()
}

fn find_condition<'c, 'a>(
    conditions: &'c [Condition<'a>],
    type_: &str,
    status: &str,
) -> Option<&'c Condition<'a>> {
    conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
}

fn condition<'c, 'a>(conditions: &'c [Condition<'a>], type_: &str) -> Option<&'c Condition<'a>> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Deployment (apps, extensions).
fn deployment_health(obj: &Value, conditions: &[Condition<'_>]) -> Health {
    if let Some(c) = condition(conditions, "Progressing")
        && c.reason == "ProgressDeadlineExceeded"
    {
        return Health::Failed(with_detail(
            "Deployment exceeded its progress deadline".to_owned(),
            c,
        ));
    }
    // Without a progress deadline (absent, or MaxInt32 which the controller
    // treats as none) the controller never reports NewReplicaSetAvailable.
    let no_deadline =
        int_at(obj, &["spec", "progressDeadlineSeconds"]).is_none_or(|d| d == i64::from(i32::MAX));
    let rollout_complete = no_deadline
        || conditions.iter().any(|c| {
            c.type_ == "Progressing" && c.status == "True" && c.reason == "NewReplicaSetAvailable"
        });
    let available = find_condition(conditions, "Available", "True").is_some();

    let spec = int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let replicas = int_at(obj, &["status", "replicas"]).unwrap_or(0);
    let updated = int_at(obj, &["status", "updatedReplicas"]).unwrap_or(0);
    let ready = int_at(obj, &["status", "readyReplicas"]).unwrap_or(0);
    let available_replicas = int_at(obj, &["status", "availableReplicas"]).unwrap_or(0);

    if spec > replicas {
        return in_progress(format!(
            "Deployment is scaling up ({replicas}/{spec} replicas)"
        ));
    }
    if spec > updated {
        return in_progress(format!(
            "Deployment rollout in progress ({updated}/{spec} replicas updated)"
        ));
    }
    if replicas > spec {
        return in_progress(format!(
            "Deployment rollout in progress ({} old replicas pending termination)",
            replicas - spec
        ));
    }
    if updated > available_replicas {
        return in_progress(format!(
            "Deployment rollout in progress ({available_replicas}/{updated} updated replicas available)"
        ));
    }
    if spec > ready {
        return in_progress(format!(
            "Deployment does not have minimum availability ({ready}/{spec} ready)"
        ));
    }
    if !rollout_complete {
        let detail = condition(conditions, "Progressing");
        let message =
            "Deployment rollout in progress (new ReplicaSet not yet available)".to_owned();
        return in_progress(match detail {
            Some(c) => with_detail(message, c),
            None => message,
        });
    }
    if !available {
        let message = "Deployment is not Available".to_owned();
        return in_progress(match condition(conditions, "Available") {
            Some(c) => with_detail(message, c),
            None => message,
        });
    }
    Health::Current
}

/// StatefulSet (apps).
fn statefulset_health(obj: &Value) -> Health {
    if str_at(obj, &["spec", "updateStrategy", "type"]) == Some("OnDelete") {
        return Health::Current;
    }
    let spec = int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let replicas = int_at(obj, &["status", "replicas"]).unwrap_or(0);
    let ready = int_at(obj, &["status", "readyReplicas"]).unwrap_or(0);
    let current = int_at(obj, &["status", "currentReplicas"]).unwrap_or(0);
    let updated = int_at(obj, &["status", "updatedReplicas"]).unwrap_or(0);
    let partition = int_at(
        obj,
        &["spec", "updateStrategy", "rollingUpdate", "partition"],
    );

    if spec > replicas {
        return in_progress(format!(
            "StatefulSet is scaling up ({replicas}/{spec} replicas)"
        ));
    }
    if spec > ready {
        return in_progress(format!("StatefulSet has {ready}/{spec} replicas ready"));
    }
    if replicas > spec {
        return in_progress(format!(
            "StatefulSet is scaling down ({} replicas pending termination)",
            replicas - spec
        ));
    }
    if let Some(partition) = partition {
        let target = spec - partition;
        if updated < target {
            return in_progress(format!(
                "StatefulSet partitioned rollout in progress ({updated}/{target} replicas updated, partition {partition})"
            ));
        }
        return Health::Current;
    }
    if spec > current {
        return in_progress(format!(
            "StatefulSet rollout in progress ({current}/{spec} replicas at the current revision)"
        ));
    }
    let current_revision = str_at(obj, &["status", "currentRevision"]).unwrap_or_default();
    let update_revision = str_at(obj, &["status", "updateRevision"]).unwrap_or_default();
    if current_revision != update_revision {
        return in_progress(format!(
            "StatefulSet rollout in progress (current revision {current_revision:?}, update revision {update_revision:?})"
        ));
    }
    Health::Current
}

/// DaemonSet (apps, extensions).
fn daemonset_health(obj: &Value) -> Health {
    // The DaemonSet controller always sets these once it has acted on the
    // object, so their absence means it has not yet.
    if int_at(obj, &["metadata", "generation"]).is_none() {
        return in_progress("DaemonSet has no metadata.generation yet".to_owned());
    }
    if int_at(obj, &["status", "observedGeneration"]).is_none() {
        return in_progress("DaemonSet status not yet observed by its controller".to_owned());
    }
    let Some(desired) = int_at(obj, &["status", "desiredNumberScheduled"]) else {
        return in_progress("DaemonSet status.desiredNumberScheduled not reported yet".to_owned());
    };
    let scheduled = int_at(obj, &["status", "currentNumberScheduled"]).unwrap_or(0);
    let updated = int_at(obj, &["status", "updatedNumberScheduled"]).unwrap_or(0);
    let available = int_at(obj, &["status", "numberAvailable"]).unwrap_or(0);
    let ready = int_at(obj, &["status", "numberReady"]).unwrap_or(0);

    if desired > scheduled {
        return in_progress(format!(
            "DaemonSet has {scheduled}/{desired} pods scheduled"
        ));
    }
    if desired > updated {
        return in_progress(format!(
            "DaemonSet rollout in progress ({updated}/{desired} pods updated)"
        ));
    }
    if desired > available {
        return in_progress(format!(
            "DaemonSet has {available}/{desired} pods available"
        ));
    }
    if desired > ready {
        return in_progress(format!("DaemonSet has {ready}/{desired} pods ready"));
    }
    Health::Current
}

/// ReplicaSet (apps, extensions).
fn replicaset_health(obj: &Value, conditions: &[Condition<'_>]) -> Health {
    if let Some(c) = find_condition(conditions, "ReplicaFailure", "True") {
        return in_progress(with_detail(
            "ReplicaSet cannot create all its pods".to_owned(),
            c,
        ));
    }
    let spec = int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let replicas = int_at(obj, &["status", "replicas"]).unwrap_or(0);
    let labeled = int_at(obj, &["status", "fullyLabeledReplicas"]).unwrap_or(0);
    let available = int_at(obj, &["status", "availableReplicas"]).unwrap_or(0);
    let ready = int_at(obj, &["status", "readyReplicas"]).unwrap_or(0);

    if spec > labeled {
        return in_progress(format!(
            "ReplicaSet has {labeled}/{spec} fully labeled replicas"
        ));
    }
    if spec > available {
        return in_progress(format!(
            "ReplicaSet has {available}/{spec} replicas available"
        ));
    }
    if spec > ready {
        return in_progress(format!("ReplicaSet has {ready}/{spec} replicas ready"));
    }
    if replicas > spec {
        return in_progress(format!(
            "ReplicaSet is scaling down ({} replicas pending termination)",
            replicas - spec
        ));
    }
    Health::Current
}

/// Pod (core).
fn pod_health(obj: &Value, conditions: &[Condition<'_>], now: Timestamp) -> Health {
    match str_at(obj, &["status", "phase"]).unwrap_or_default() {
        "Succeeded" | "Failed" => Health::Current,
        "Running" => {
            if find_condition(conditions, "Ready", "True").is_some() {
                return Health::Current;
            }
            let crash_looping = crash_looping_containers(obj);
            if !crash_looping.is_empty() {
                return Health::Failed(format!(
                    "Pod has containers in CrashLoopBackOff: {}",
                    crash_looping.join(", ")
                ));
            }
            in_progress("Pod is running but not ready".to_owned())
        }
        "Pending" => {
            let Some(c) = conditions.iter().find(|c| {
                c.type_ == "PodScheduled" && c.status == "False" && c.reason == "Unschedulable"
            }) else {
                return in_progress("Pod is pending".to_owned());
            };
            // Age of the Unschedulable verdict: from the condition's
            // lastTransitionTime, else from the Pod's creation.
            let since = c
                .last_transition_time
                .or_else(|| str_at(obj, &["metadata", "creationTimestamp"]))
                .and_then(|t| t.parse::<Timestamp>().ok());
            match since {
                Some(since) if now.duration_since(since) >= SCHEDULE_WINDOW => {
                    let seconds = now.duration_since(since).as_secs();
                    Health::Failed(with_detail(format!("Pod unschedulable for {seconds}s"), c))
                }
                _ => in_progress(with_detail("Pod not yet scheduled".to_owned(), c)),
            }
        }
        "" => in_progress("Pod phase not reported yet".to_owned()),
        other => in_progress(format!("Pod is in phase {other}")),
    }
}

/// Names of the containers (init, regular, ephemeral) waiting in
/// `CrashLoopBackOff`.
fn crash_looping_containers(obj: &Value) -> Vec<&str> {
    [
        "initContainerStatuses",
        "containerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .filter_map(|field| obj.get("status")?.get(*field)?.as_array())
    .flatten()
    .filter(|cs| {
        cs.get("state")
            .and_then(|s| s.get("waiting"))
            .and_then(|w| w.get("reason"))
            .and_then(Value::as_str)
            == Some("CrashLoopBackOff")
    })
    .map(|cs| {
        cs.get("name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
    })
    .collect()
}

/// Job (batch).
fn job_health(conditions: &[Condition<'_>], obj: &Value) -> Health {
    if find_condition(conditions, "Complete", "True").is_some() {
        return Health::Current;
    }
    if let Some(c) = find_condition(conditions, "Failed", "True") {
        return Health::Failed(with_detail("Job failed".to_owned(), c));
    }
    if str_at(obj, &["status", "startTime"]).is_none_or(str::is_empty) {
        return in_progress("Job has not started yet".to_owned());
    }
    Health::Current
}

/// PersistentVolumeClaim (core).
fn pvc_health(obj: &Value) -> Health {
    match str_at(obj, &["status", "phase"]) {
        Some("Bound") => Health::Current,
        Some(phase) if !phase.is_empty() => in_progress(format!(
            "PersistentVolumeClaim is not Bound (phase {phase})"
        )),
        _ => in_progress("PersistentVolumeClaim is not Bound yet".to_owned()),
    }
}

/// Service (core).
fn service_health(obj: &Value) -> Health {
    let load_balancer = str_at(obj, &["spec", "type"]) == Some("LoadBalancer");
    let cluster_ip = str_at(obj, &["spec", "clusterIP"]).unwrap_or_default();
    if load_balancer && cluster_ip.is_empty() {
        return in_progress("LoadBalancer Service has no cluster IP assigned yet".to_owned());
    }
    Health::Current
}

/// CustomResourceDefinition (apiextensions.k8s.io).
fn crd_health(conditions: &[Condition<'_>]) -> Health {
    if let Some(c) = find_condition(conditions, "NamesAccepted", "False") {
        return Health::Failed(with_detail(
            "CustomResourceDefinition names not accepted".to_owned(),
            c,
        ));
    }
    if let Some(c) = condition(conditions, "Established") {
        if c.status == "False" && c.reason != "Installing" {
            return Health::Failed(with_detail(
                "CustomResourceDefinition not established".to_owned(),
                c,
            ));
        }
        if c.status == "True" {
            return Health::Current;
        }
    }
    in_progress("CustomResourceDefinition is not established yet".to_owned())
}

/// Any other kind: the `Ready` condition if there is one, else Current.
fn ready_condition_health(kind: &str, conditions: &[Condition<'_>]) -> Health {
    let Some(c) = condition(conditions, "Ready") else {
        return Health::Current;
    };
    match c.status {
        "True" => Health::Current,
        "False" => in_progress(with_detail(format!("{} is not Ready", kind_label(kind)), c)),
        // Unknown, and any non-standard value: not confirmed ready.
        _ => in_progress(with_detail(
            format!("{} readiness is unknown", kind_label(kind)),
            c,
        )),
    }
}

fn in_progress(reason: String) -> Health {
    Health::InProgress(reason)
}

/// `base`, followed by `: Reason: message` from the condition when present.
fn with_detail(base: String, c: &Condition<'_>) -> String {
    let message = truncate(c.message.trim());
    match (c.reason.is_empty(), message.is_empty()) {
        (true, true) => base,
        (false, true) => format!("{base}: {}", c.reason),
        (true, false) => format!("{base}: {message}"),
        (false, false) => format!("{base}: {}: {message}", c.reason),
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn kind_label(kind: &str) -> &str {
    if kind.is_empty() { "object" } else { kind }
}

/// The API group of an `apiVersion` (`""` for the core group).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

fn value_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |value, key| value.get(key))
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    value_at(obj, path)?.as_str()
}

/// An integer field; integral floats (`2.0`) are accepted, anything else is
/// treated as absent.
fn int_at(obj: &Value, path: &[&str]) -> Option<i64> {
    let value = value_at(obj, path)?;
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

#[cfg(test)]
mod tests;
