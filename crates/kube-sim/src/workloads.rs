//! Playing the controllers that do not run here: the status a Deployment,
//! StatefulSet, DaemonSet, ReplicaSet, Job, Pod or PVC reports when its
//! controller (or kubelet) has made it ready, or has given up on it. Tests mark
//! objects ready or failed explicitly; `--auto-ready` does it shortly after every
//! change, for the dev command and benchmarks.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::sim::{Sim, WriteCtx, now_rfc3339};
use crate::store::{Change, Obj};

fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// The status of a healthy, fully rolled-out object of this kind.
pub fn ready_status(group: &str, kind: &str, obj: &Value) -> Option<Value> {
    let now = now_rfc3339();
    let g = generation(obj);
    let r = replicas(obj);
    Some(match (group, kind) {
        ("apps", "Deployment") => json!({
            "observedGeneration": g,
            "replicas": r,
            "updatedReplicas": r,
            "readyReplicas": r,
            "availableReplicas": r,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": format!("ReplicaSet \"{}\" has successfully progressed.", obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")),
                 "lastUpdateTime": now, "lastTransitionTime": now}
            ]
        }),
        ("apps", "StatefulSet") => {
            let rev = format!(
                "{}-{:x}",
                obj.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                g
            );
            json!({
                "observedGeneration": g,
                "replicas": r,
                "readyReplicas": r,
                "currentReplicas": r,
                "updatedReplicas": r,
                "availableReplicas": r,
                "currentRevision": rev,
                "updateRevision": rev,
                "collisionCount": 0
            })
        }
        ("apps", "DaemonSet") => json!({
            "observedGeneration": g,
            "currentNumberScheduled": 1,
            "desiredNumberScheduled": 1,
            "numberAvailable": 1,
            "numberMisscheduled": 0,
            "numberReady": 1,
            "updatedNumberScheduled": 1
        }),
        ("apps", "ReplicaSet") => json!({
            "observedGeneration": g,
            "replicas": r,
            "fullyLabeledReplicas": r,
            "readyReplicas": r,
            "availableReplicas": r
        }),
        ("batch", "Job") => {
            let completions = obj
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            json!({
                "startTime": now,
                "completionTime": now,
                "succeeded": completions,
                "ready": 0,
                "terminating": 0,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now}
                ]
            })
        }
        ("", "Pod") => {
            let statuses: Vec<Value> = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .map(|c| {
                            json!({
                                "name": c["name"],
                                "image": c["image"],
                                "imageID": "",
                                "ready": true,
                                "started": true,
                                "restartCount": 0,
                                "state": {"running": {"startedAt": now}}
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "phase": "Running",
                "observedGeneration": g,
                "conditions": [
                    {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
                ],
                "containerStatuses": statuses,
                "hostIP": "10.0.0.1",
                "podIP": "10.244.0.10",
                "startTime": now,
                "qosClass": "BestEffort"
            })
        }
        ("", "PersistentVolumeClaim") => {
            let storage = obj
                .pointer("/spec/resources/requests/storage")
                .cloned()
                .unwrap_or(json!("1Gi"));
            json!({
                "phase": "Bound",
                "accessModes": obj.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
                "capacity": {"storage": storage}
            })
        }
        ("", "Service")
            if obj.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer") =>
        {
            json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "VIP"}]}})
        }
        _ => return None,
    })
}

/// The status of an object whose rollout has failed for good.
pub fn failed_status(group: &str, kind: &str, obj: &Value) -> Option<Value> {
    let now = now_rfc3339();
    let g = generation(obj);
    let r = replicas(obj);
    Some(match (group, kind) {
        ("apps", "Deployment") => json!({
            "observedGeneration": g,
            "replicas": r,
            "updatedReplicas": r,
            "unavailableReplicas": r,
            "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                 "message": "Deployment does not have minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": format!("ReplicaSet \"{}\" has timed out progressing.", obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")),
                 "lastUpdateTime": now, "lastTransitionTime": now}
            ]
        }),
        ("batch", "Job") => {
            let backoff = obj
                .pointer("/spec/backoffLimit")
                .and_then(Value::as_i64)
                .unwrap_or(6);
            json!({
                "startTime": now,
                "failed": backoff + 1,
                "ready": 0,
                "terminating": 0,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now}
                ]
            })
        }
        ("", "Pod") => json!({
            "phase": "Failed",
            "observedGeneration": g,
            "reason": "Error",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodFailed", "lastTransitionTime": now}
            ],
            "startTime": now
        }),
        _ => return None,
    })
}

/// Whether an object of this kind still waits for its controller to report.
fn needs_ready(group: &str, kind: &str, obj: &Value) -> bool {
    match (group, kind) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            obj.pointer("/status/observedGeneration")
                .and_then(Value::as_i64)
                != Some(generation(obj))
        }
        ("batch", "Job") => obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_none_or(|cs| {
                !cs.iter().any(|c| {
                    (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                })
            }),
        ("", "Pod") => obj.pointer("/status/phase").and_then(Value::as_str) == Some("Pending"),
        ("", "PersistentVolumeClaim") => {
            obj.pointer("/status/phase").and_then(Value::as_str) != Some("Bound")
        }
        ("", "Service") => {
            obj.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
                && obj.pointer("/status/loadBalancer/ingress").is_none()
        }
        _ => false,
    }
}

impl Sim {
    async fn set_status_with(
        self: &Arc<Self>,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        compute: fn(&str, &str, &Value) -> Option<Value>,
        manager: &str,
    ) -> ApiResult<Obj> {
        let rt = self
            .registry()
            .by_kind(api_version, kind)
            .ok_or_else(|| ApiError::bad_request(format!("no kind {kind} in {api_version}")))?;
        let group = rt.group.clone();
        let kind_s = rt.kind.clone();
        let ctx = WriteCtx::internal(manager).status();
        self.update_with(&ctx, &rt, ns, name, None, move |old| {
            let status = compute(&group, &kind_s, old).ok_or_else(|| {
                ApiError::bad_request(format!("kube-sim has no ready/failed status for {kind_s}"))
            })?;
            let mut v = (**old).clone();
            v["status"] = status;
            Ok(v)
        })
        .await
    }

    /// Reports the object as healthy and fully rolled out, as its controller would.
    pub async fn set_ready(
        self: &Arc<Self>,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> ApiResult<Obj> {
        self.set_status_with(
            api_version,
            kind,
            ns,
            name,
            ready_status,
            "kube-controller-manager",
        )
        .await
    }

    /// Reports the object as failed for good (Deployment progress deadline
    /// exceeded, Job backoff limit reached, Pod failed).
    pub async fn set_failed(
        self: &Arc<Self>,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> ApiResult<Obj> {
        self.set_status_with(
            api_version,
            kind,
            ns,
            name,
            failed_status,
            "kube-controller-manager",
        )
        .await
    }
}

/// With `--auto-ready`, marks a changed workload ready after the configured delay
/// (unless it changed again meanwhile, in which case the newer change schedules
/// its own).
pub(crate) fn schedule_auto_ready(sim: &Arc<Sim>, change: &Arc<Change>) {
    let Some(delay) = sim.config.auto_ready else {
        return;
    };
    let group = change.key.group.clone();
    let kind = change
        .object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !needs_ready(&group, &kind, &change.object) {
        return;
    }
    let api_version = change
        .object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ns = change.namespace.clone();
    let name = change.name.clone();
    let rv = change.rv;
    let sim = sim.clone();
    sim.runtime.clone().spawn(async move {
        tokio::time::sleep(delay).await;
        let Some(current) =
            sim.store
                .get(&change_key(&group, &sim, &api_version, &kind), &ns, &name)
        else {
            return;
        };
        let current_rv: u64 = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if current_rv != rv || !needs_ready(&group, &kind, &current) {
            return;
        }
        if let Err(e) = sim.set_ready(&api_version, &kind, &ns, &name).await {
            tracing::debug!(error = %e, "auto-ready skipped");
        }
    });
}

fn change_key(
    group: &str,
    sim: &Sim,
    api_version: &str,
    kind: &str,
) -> crate::registry::StorageKey {
    sim.registry()
        .by_kind(api_version, kind)
        .map(|t| t.storage_key())
        .unwrap_or_else(|| crate::registry::StorageKey::new(group, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let d = json!({"metadata": {"name": "d", "generation": 3}, "spec": {"replicas": 2}});
        let s = ready_status("apps", "Deployment", &d).unwrap();
        assert_eq!(s["observedGeneration"], 3);
        assert_eq!(s["availableReplicas"], 2);
        assert!(needs_ready("apps", "Deployment", &d));
        let mut done = d.clone();
        done["status"] = s;
        assert!(!needs_ready("apps", "Deployment", &done));
        let f = failed_status("batch", "Job", &json!({"spec": {"backoffLimit": 2}})).unwrap();
        assert_eq!(f["failed"], 3);
        assert!(ready_status("", "ConfigMap", &json!({})).is_none());
    }
}
