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
