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
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2025-06-01T12:00:20Z".parse().unwrap()
    }

    fn health(obj: Value) -> Health {
        compute(&obj, now())
    }

    fn assert_in_progress(obj: Value, expected: &str) {
        match health(obj) {
            Health::InProgress(reason) => assert_eq!(reason, expected),
            other => panic!("expected InProgress({expected:?}), got {other:?}"),
        }
    }

    fn assert_failed(obj: Value, expected: &str) {
        match health(obj) {
            Health::Failed(reason) => assert_eq!(reason, expected),
            other => panic!("expected Failed({expected:?}), got {other:?}"),
        }
    }

    // ----- generic checks -----

    #[test]
    fn deletion_timestamp_is_terminating() {
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "deletionTimestamp": "2025-06-01T12:00:00Z", "finalizers": ["x"]}
        });
        assert_eq!(health(obj), Health::Terminating);
        // Terminating wins over everything else, even a healthy Deployment status.
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "generation": 1, "deletionTimestamp": "2025-06-01T12:00:00Z"},
            "status": {"observedGeneration": 0}
        });
        assert_eq!(health(obj), Health::Terminating);
    }

    #[test]
    fn unobserved_generation_is_in_progress() {
        let obj = json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "a", "generation": 3},
            "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}
        });
        assert_in_progress(
            obj,
            "Widget generation 3 not yet observed (observed generation 2)",
        );
        // Skipped when either side is missing.
        let obj = json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "a"},
            "status": {"observedGeneration": 2}
        });
        assert_eq!(health(obj), Health::Current);
        let obj = json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "a", "generation": 3},
            "status": {}
        });
        assert_eq!(health(obj), Health::Current);
    }

    #[test]
    fn reconciling_and_stalled_conditions() {
        let obj = json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "repo", "generation": 2},
            "status": {"observedGeneration": 2, "conditions": [
                {"type": "Ready", "status": "Unknown", "reason": "Progressing"},
                {"type": "Reconciling", "status": "True", "reason": "Progressing",
                 "message": "building artifact: new upstream revision 'main@sha1:abc'"}
            ]}
        });
        assert_in_progress(
            obj,
            "GitRepository is reconciling: Progressing: building artifact: new upstream revision 'main@sha1:abc'",
        );
        let obj = json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "app"},
            "status": {"conditions": [
                {"type": "Ready", "status": "False", "reason": "InstallFailed"},
                {"type": "Stalled", "status": "True", "reason": "RetriesExceeded",
                 "message": "Failed to install after 1 attempt(s)"}
            ]}
        });
        assert_failed(
            obj,
            "HelmRelease is stalled: RetriesExceeded: Failed to install after 1 attempt(s)",
        );
        // Reconciling=True takes precedence over Stalled=True; False values are ignored.
        let obj = json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "a"},
            "status": {"conditions": [
                {"type": "Stalled", "status": "True", "reason": "Broken"},
                {"type": "Reconciling", "status": "True", "reason": "Retrying"}
            ]}
        });
        assert_in_progress(obj, "Widget is reconciling: Retrying");
        let obj = json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "a"},
            "status": {"conditions": [
                {"type": "Stalled", "status": "False"},
                {"type": "Reconciling", "status": "False"}
            ]}
        });
        assert_eq!(health(obj), Health::Current);
        // The generic checks also apply to built-in kinds.
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},
            "status": {"conditions": [{"type": "Stalled", "status": "True"}]}
        });
        assert_failed(obj, "ConfigMap is stalled");
    }

    // ----- Deployment -----

    fn deployment(api_version: &str, spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": api_version, "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "generation": 4},
            "spec": spec,
            "status": status
        })
    }

    fn healthy_deployment_status(replicas: i64) -> Value {
        json!({
            "observedGeneration": 4,
            "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": "ReplicaSet \"web-5d4f8\" has successfully progressed."}
            ]
        })
    }

    #[test]
    fn deployment_current() {
        let spec = json!({"replicas": 3, "progressDeadlineSeconds": 600});
        assert_eq!(
            health(deployment(
                "apps/v1",
                spec.clone(),
                healthy_deployment_status(3)
            )),
            Health::Current
        );
        assert_eq!(
            health(deployment(
                "extensions/v1beta1",
                spec,
                healthy_deployment_status(3)
            )),
            Health::Current
        );
        // spec.replicas defaults to 1.
        assert_eq!(
            health(deployment(
                "apps/v1",
                json!({"progressDeadlineSeconds": 600}),
                healthy_deployment_status(1)
            )),
            Health::Current
        );
    }

    #[test]
    fn deployment_mid_rollout() {
        let spec = json!({"replicas": 3, "progressDeadlineSeconds": 600});
        let status = json!({
            "observedGeneration": 4,
            "replicas": 4, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3,
            "unavailableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                 "message": "ReplicaSet \"web-7c9b\" is progressing."}
            ]
        });
        assert_in_progress(
            deployment("apps/v1", spec.clone(), status),
            "Deployment rollout in progress (2/3 replicas updated)",
        );

        let mut status = healthy_deployment_status(3);
        status["replicas"] = json!(1);
        assert_in_progress(
            deployment("apps/v1", spec.clone(), status),
            "Deployment is scaling up (1/3 replicas)",
        );

        let mut status = healthy_deployment_status(3);
        status["replicas"] = json!(5);
        assert_in_progress(
            deployment("apps/v1", spec.clone(), status),
            "Deployment rollout in progress (2 old replicas pending termination)",
        );

        let mut status = healthy_deployment_status(3);
        status["availableReplicas"] = json!(2);
        assert_in_progress(
            deployment("apps/v1", spec.clone(), status),
            "Deployment rollout in progress (2/3 updated replicas available)",
        );

        let mut status = healthy_deployment_status(2);
        status["readyReplicas"] = json!(0);
        status["availableReplicas"] = json!(2);
        assert_in_progress(
            deployment("apps/v1", json!({"replicas": 2}), status),
            "Deployment does not have minimum availability (0/2 ready)",
        );
    }

    #[test]
    fn deployment_progressing_condition() {
        let spec = json!({"replicas": 2, "progressDeadlineSeconds": 600});
        let mut status = healthy_deployment_status(2);
        status["conditions"][1] = json!({"type": "Progressing", "status": "True",
            "reason": "ReplicaSetUpdated", "message": "ReplicaSet \"web-7c9b\" is progressing."});
        assert_in_progress(
            deployment("apps/v1", spec, status.clone()),
            "Deployment rollout in progress (new ReplicaSet not yet available): ReplicaSetUpdated: ReplicaSet \"web-7c9b\" is progressing.",
        );
        // Without a progress deadline (absent or MaxInt32) the reason is never set.
        assert_eq!(
            health(deployment(
                "apps/v1",
                json!({"replicas": 2}),
                status.clone()
            )),
            Health::Current
        );
        assert_eq!(
            health(deployment(
                "apps/v1",
                json!({"replicas": 2, "progressDeadlineSeconds": 2147483647}),
                status
            )),
            Health::Current
        );
    }

    #[test]
    fn deployment_not_available() {
        let mut status = healthy_deployment_status(2);
        status["conditions"][0] = json!({"type": "Available", "status": "False",
            "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."});
        assert_in_progress(
            deployment(
                "apps/v1",
                json!({"replicas": 2, "progressDeadlineSeconds": 600}),
                status,
            ),
            "Deployment is not Available: MinimumReplicasUnavailable: Deployment does not have minimum availability.",
        );
        let mut status = healthy_deployment_status(2);
        status["conditions"].as_array_mut().unwrap().remove(0);
        assert_in_progress(
            deployment("apps/v1", json!({"replicas": 2}), status),
            "Deployment is not Available",
        );
    }

    #[test]
    fn deployment_progress_deadline_exceeded() {
        let status = json!({
            "observedGeneration": 4,
            "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2,
            "unavailableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": "ReplicaSet \"web-7c9b\" has timed out progressing."}
            ]
        });
        assert_failed(
            deployment(
                "apps/v1",
                json!({"replicas": 2, "progressDeadlineSeconds": 600}),
                status,
            ),
            "Deployment exceeded its progress deadline: ProgressDeadlineExceeded: ReplicaSet \"web-7c9b\" has timed out progressing.",
        );
    }

    #[test]
    fn deployment_in_other_group_uses_ready_condition() {
        let obj = json!({
            "apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replicas": 5}, "status": {}
        });
        assert_eq!(health(obj), Health::Current);
    }

    // ----- StatefulSet -----

    fn statefulset(spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "default", "generation": 2},
            "spec": spec, "status": status
        })
    }

    #[test]
    fn statefulset_rules() {
        let done = json!({
            "observedGeneration": 2, "replicas": 3, "readyReplicas": 3, "currentReplicas": 3,
            "updatedReplicas": 3, "availableReplicas": 3,
            "currentRevision": "db-6c8f9", "updateRevision": "db-6c8f9"
        });
        assert_eq!(
            health(statefulset(json!({"replicas": 3}), done.clone())),
            Health::Current
        );

        let mut status = done.clone();
        status["replicas"] = json!(2);
        assert_in_progress(
            statefulset(json!({"replicas": 3}), status),
            "StatefulSet is scaling up (2/3 replicas)",
        );
        let mut status = done.clone();
        status["readyReplicas"] = json!(1);
        assert_in_progress(
            statefulset(json!({"replicas": 3}), status),
            "StatefulSet has 1/3 replicas ready",
        );
        let mut status = done.clone();
        status["replicas"] = json!(4);
        assert_in_progress(
            statefulset(json!({"replicas": 3}), status),
            "StatefulSet is scaling down (1 replicas pending termination)",
        );
        // Rolling update without partition: old pods at the current revision.
        let mid = json!({
            "observedGeneration": 2, "replicas": 3, "readyReplicas": 3, "currentReplicas": 2,
            "updatedReplicas": 1, "currentRevision": "db-6c8f9", "updateRevision": "db-7d9a1"
        });
        assert_in_progress(
            statefulset(json!({"replicas": 3}), mid),
            "StatefulSet rollout in progress (2/3 replicas at the current revision)",
        );
        let mut status = done.clone();
        status["updateRevision"] = json!("db-7d9a1");
        assert_in_progress(
            statefulset(json!({"replicas": 3}), status),
            "StatefulSet rollout in progress (current revision \"db-6c8f9\", update revision \"db-7d9a1\")",
        );
    }

    #[test]
    fn statefulset_partition() {
        let spec = json!({"replicas": 5, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 3}}});
        let status = json!({
            "observedGeneration": 2, "replicas": 5, "readyReplicas": 5, "currentReplicas": 4,
            "updatedReplicas": 1, "currentRevision": "db-1", "updateRevision": "db-2"
        });
        assert_in_progress(
            statefulset(spec.clone(), status.clone()),
            "StatefulSet partitioned rollout in progress (1/2 replicas updated, partition 3)",
        );
        // Once the pods above the partition are updated the revision mismatch is expected.
        let mut status = status;
        status["updatedReplicas"] = json!(2);
        status["currentReplicas"] = json!(3);
        assert_eq!(health(statefulset(spec, status)), Health::Current);
    }

    #[test]
    fn statefulset_on_delete() {
        let spec = json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}});
        let status = json!({"observedGeneration": 2, "replicas": 1, "readyReplicas": 0});
        assert_eq!(health(statefulset(spec, status)), Health::Current);
    }

    // ----- DaemonSet -----

    fn daemonset(generation: Option<i64>, status: Value) -> Value {
        let mut obj = json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "kube-system"},
            "spec": {}, "status": status
        });
        if let Some(g) = generation {
            obj["metadata"]["generation"] = json!(g);
        }
        obj
    }

    #[test]
    fn daemonset_rules() {
        let done = json!({
            "observedGeneration": 1, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
            "updatedNumberScheduled": 3, "numberAvailable": 3, "numberReady": 3, "numberMisscheduled": 0
        });
        assert_eq!(health(daemonset(Some(1), done.clone())), Health::Current);
        assert_in_progress(
            daemonset(None, done.clone()),
            "DaemonSet has no metadata.generation yet",
        );
        let mut status = done.clone();
        status.as_object_mut().unwrap().remove("observedGeneration");
        assert_in_progress(
            daemonset(Some(1), status),
            "DaemonSet status not yet observed by its controller",
        );
        assert_in_progress(
            daemonset(Some(1), json!({"observedGeneration": 1})),
            "DaemonSet status.desiredNumberScheduled not reported yet",
        );
        for (field, expected) in [
            ("currentNumberScheduled", "DaemonSet has 2/3 pods scheduled"),
            (
                "updatedNumberScheduled",
                "DaemonSet rollout in progress (2/3 pods updated)",
            ),
            ("numberAvailable", "DaemonSet has 2/3 pods available"),
            ("numberReady", "DaemonSet has 2/3 pods ready"),
        ] {
            let mut status = done.clone();
            status[field] = json!(2);
            assert_in_progress(daemonset(Some(1), status), expected);
        }
        // Zero desired pods (no matching nodes) is Current.
        let empty = json!({"observedGeneration": 1, "desiredNumberScheduled": 0, "currentNumberScheduled": 0,
            "numberReady": 0, "numberMisscheduled": 0});
        assert_eq!(health(daemonset(Some(1), empty)), Health::Current);
    }

    // ----- ReplicaSet -----

    #[test]
    fn replicaset_rules() {
        let rs = |status: Value| {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                   "metadata": {"name": "web-5d4f8", "generation": 1},
                   "spec": {"replicas": 2}, "status": status})
        };
        let done = json!({"observedGeneration": 1, "replicas": 2, "fullyLabeledReplicas": 2,
                          "availableReplicas": 2, "readyReplicas": 2});
        assert_eq!(health(rs(done.clone())), Health::Current);

        let mut status = done.clone();
        status["conditions"] = json!([{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": "pods \"web-5d4f8-x\" is forbidden: exceeded quota: compute"}]);
        assert_in_progress(
            rs(status),
            "ReplicaSet cannot create all its pods: FailedCreate: pods \"web-5d4f8-x\" is forbidden: exceeded quota: compute",
        );
        for (field, value, expected) in [
            (
                "fullyLabeledReplicas",
                1,
                "ReplicaSet has 1/2 fully labeled replicas",
            ),
            (
                "availableReplicas",
                1,
                "ReplicaSet has 1/2 replicas available",
            ),
            ("readyReplicas", 0, "ReplicaSet has 0/2 replicas ready"),
            (
                "replicas",
                3,
                "ReplicaSet is scaling down (1 replicas pending termination)",
            ),
        ] {
            let mut status = done.clone();
            status[field] = json!(value);
            assert_in_progress(rs(status), expected);
        }
    }

    // ----- Pod -----

    fn pod(status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "default", "creationTimestamp": "2025-06-01T12:00:00Z"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            "status": status
        })
    }

    #[test]
    fn pod_completed_and_ready() {
        assert_eq!(health(pod(json!({"phase": "Succeeded"}))), Health::Current);
        assert_eq!(
            health(pod(json!({"phase": "Failed", "reason": "Evicted"}))),
            Health::Current
        );
        let ready = json!({"phase": "Running", "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "PodScheduled", "status": "True"}
        ]});
        assert_eq!(health(pod(ready)), Health::Current);
    }

    #[test]
    fn pod_crash_loop_back_off() {
        let status = json!({
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                {"type": "PodScheduled", "status": "True"}
            ],
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 5,
                 "state": {"waiting": {"reason": "CrashLoopBackOff",
                    "message": "back-off 2m40s restarting failed container=app"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}},
                {"name": "sidecar", "ready": true, "state": {"running": {"startedAt": "2025-06-01T12:00:05Z"}}}
            ]
        });
        assert_failed(pod(status), "Pod has containers in CrashLoopBackOff: app");
    }

    #[test]
    fn pod_running_not_ready() {
        let status = json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [{"name": "app", "ready": false, "state": {"running": {}}}]
        });
        assert_in_progress(pod(status), "Pod is running but not ready");
    }

    #[test]
    fn pod_unschedulable_window() {
        let unschedulable = |since: &str| {
            json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "lastTransitionTime": since,
                    "message": "0/3 nodes are available: 3 Insufficient cpu."}]
            })
        };
        // now() is 12:00:20.
        assert_failed(
            pod(unschedulable("2025-06-01T12:00:00Z")),
            "Pod unschedulable for 20s: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.",
        );
        assert_in_progress(
            pod(unschedulable("2025-06-01T12:00:15Z")),
            "Pod not yet scheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.",
        );
        // Exactly 15 s counts as expired (as in kstatus).
        assert!(matches!(
            health(pod(unschedulable("2025-06-01T12:00:05Z"))),
            Health::Failed(_)
        ));
        // Without lastTransitionTime the Pod's creation time is used.
        let status = json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]});
        assert!(matches!(health(pod(status.clone())), Health::Failed(_)));
        let mut young = pod(status);
        young["metadata"]["creationTimestamp"] = json!("2025-06-01T12:00:18Z");
        assert_in_progress(young, "Pod not yet scheduled: Unschedulable");
    }

    #[test]
    fn pod_pending_and_unobserved() {
        let status = json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]
        });
        assert_in_progress(pod(status), "Pod is pending");
        assert_in_progress(pod(json!({})), "Pod phase not reported yet");
        assert_in_progress(pod(json!({"phase": "Unknown"})), "Pod is in phase Unknown");
    }

    // ----- Job -----

    fn job(status: Value) -> Value {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "generation": 1},
            "spec": {"backoffLimit": 2, "template": {}},
            "status": status
        })
    }

    #[test]
    fn job_rules() {
        let complete = json!({"startTime": "2025-06-01T11:59:00Z", "completionTime": "2025-06-01T11:59:30Z",
            "succeeded": 1, "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "True"}]});
        assert_eq!(health(job(complete)), Health::Current);

        let failed = json!({"startTime": "2025-06-01T11:59:00Z", "failed": 3, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}]});
        assert_failed(
            job(failed),
            "Job failed: BackoffLimitExceeded: Job has reached the specified backoff limit",
        );
        assert_in_progress(job(json!({})), "Job has not started yet");
        assert_eq!(
            health(job(
                json!({"startTime": "2025-06-01T11:59:00Z", "active": 1})
            )),
            Health::Current
        );
    }

    // ----- PersistentVolumeClaim, Service -----

    #[test]
    fn pvc_rules() {
        let pvc = |status: Value| {
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                   "spec": {"accessModes": ["ReadWriteOnce"]}, "status": status})
        };
        assert_eq!(
            health(pvc(
                json!({"phase": "Bound", "capacity": {"storage": "1Gi"}})
            )),
            Health::Current
        );
        assert_in_progress(
            pvc(json!({"phase": "Pending"})),
            "PersistentVolumeClaim is not Bound (phase Pending)",
        );
        assert_in_progress(pvc(json!({})), "PersistentVolumeClaim is not Bound yet");
    }

    #[test]
    fn service_rules() {
        let svc = |spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": spec});
        assert_in_progress(
            svc(json!({"type": "LoadBalancer"})),
            "LoadBalancer Service has no cluster IP assigned yet",
        );
        assert_eq!(
            health(svc(
                json!({"type": "LoadBalancer", "clusterIP": "10.0.0.12"})
            )),
            Health::Current
        );
        // A pending external IP does not block (kstatus only checks clusterIP).
        let mut pending = svc(json!({"type": "LoadBalancer", "clusterIP": "10.0.0.12"}));
        pending["status"] = json!({"loadBalancer": {}});
        assert_eq!(health(pending), Health::Current);
        assert_eq!(health(svc(json!({"clusterIP": "None"}))), Health::Current);
        assert_eq!(health(svc(json!({}))), Health::Current);
    }

    // ----- CustomResourceDefinition -----

    fn crd(conditions: Value) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com", "generation": 1},
            "status": {"conditions": conditions}
        })
    }

    #[test]
    fn crd_rules() {
        assert_eq!(
            health(crd(json!([
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}
            ]))),
            Health::Current
        );
        assert_failed(
            crd(json!([
                {"type": "NamesAccepted", "status": "False", "reason": "MultipleNameConflict",
                 "message": "\"widgets\" is already in use"},
                {"type": "Established", "status": "False", "reason": "NotAccepted"}
            ])),
            "CustomResourceDefinition names not accepted: MultipleNameConflict: \"widgets\" is already in use",
        );
        assert_failed(
            crd(json!([
                {"type": "NamesAccepted", "status": "True"},
                {"type": "Established", "status": "False", "reason": "NotAccepted", "message": "not all names are accepted"}
            ])),
            "CustomResourceDefinition not established: NotAccepted: not all names are accepted",
        );
        assert_in_progress(
            crd(json!([
                {"type": "NamesAccepted", "status": "True"},
                {"type": "Established", "status": "False", "reason": "Installing", "message": "the initial names have not been accepted"}
            ])),
            "CustomResourceDefinition is not established yet",
        );
        assert_in_progress(
            crd(json!([])),
            "CustomResourceDefinition is not established yet",
        );
    }

    // ----- always ready -----

    #[test]
    fn always_current_kinds() {
        for (api_version, kind) in [
            ("policy/v1", "PodDisruptionBudget"),
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("batch/v1", "CronJob"),
        ] {
            let obj = json!({
                "apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "generation": 1},
                "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False"}]}
            });
            assert_eq!(health(obj), Health::Current, "{kind}");
        }
    }

    // ----- generic Ready fallback -----

    fn widget(conditions: Option<Value>) -> Value {
        let mut obj = json!({
            "apiVersion": "example.com/v1alpha1", "kind": "Widget",
            "metadata": {"name": "w", "generation": 5},
            "spec": {"size": 3},
            "status": {"observedGeneration": 5}
        });
        if let Some(conditions) = conditions {
            obj["status"]["conditions"] = conditions;
        }
        obj
    }

    #[test]
    fn custom_resource_ready_condition() {
        assert_eq!(
            health(widget(Some(
                json!([{"type": "Ready", "status": "True", "reason": "Succeeded"}])
            ))),
            Health::Current
        );
        assert_in_progress(
            widget(Some(
                json!([{"type": "Ready", "status": "False", "reason": "DependencyNotReady",
                "message": "waiting for database"}]),
            )),
            "Widget is not Ready: DependencyNotReady: waiting for database",
        );
        assert_in_progress(
            widget(Some(
                json!([{"type": "Ready", "status": "Unknown", "reason": "Progressing"}]),
            )),
            "Widget readiness is unknown: Progressing",
        );
        assert_eq!(health(widget(None)), Health::Current);
        assert_eq!(
            health(widget(Some(json!([{"type": "Synced", "status": "False"}])))),
            Health::Current
        );
        // Objects without a status at all.
        assert_eq!(
            health(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                          "metadata": {"name": "view"}})
            ),
            Health::Current
        );
        // Core kinds without a specific rule use the fallback too.
        assert_eq!(
            health(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"},
                          "status": {"phase": "Active"}})
            ),
            Health::Current
        );
    }

    #[test]
    fn long_condition_messages_are_truncated() {
        let message = "x".repeat(1000);
        let Health::InProgress(reason) = health(widget(Some(json!([
            {"type": "Ready", "status": "False", "message": message}
        ])))) else {
            panic!("expected InProgress");
        };
        assert!(reason.chars().count() < 350, "{}", reason.len());
        assert!(reason.ends_with('…'));
    }

    #[test]
    fn malformed_fields_do_not_panic() {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "generation": "one"},
            "spec": {"replicas": "3"},
            "status": {"observedGeneration": 2, "conditions": ["bogus", {"type": 1}], "replicas": 1.0,
                       "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
        });
        assert_in_progress(obj, "Deployment is not Available");
        assert_eq!(health(json!(null)), Health::Current);
        // No apiVersion means the core group.
        assert_in_progress(json!({"kind": "Pod"}), "Pod phase not reported yet");
    }

    #[test]
    fn display() {
        assert_eq!(Health::Current.to_string(), "Current");
        assert_eq!(Health::InProgress("x".into()).to_string(), "InProgress: x");
        assert_eq!(Health::Failed("y".into()).to_string(), "Failed: y");
        assert_eq!(Health::Terminating.to_string(), "Terminating");
    }
}
