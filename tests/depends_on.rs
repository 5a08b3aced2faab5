//! `spec.dependsOn` between StageSets on kube-sim (delivery.md R6, §5.3;
//! api.md §2.3; operations.md §8.3): the readiness gate, dependent wake-up,
//! cycle detection, the `minVersion` floor and `--no-cross-namespace-refs`.

#![recursion_limit = "256"]

mod support;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use stageset_controller::api::StageSet;
use support::*;

/// Writes a StageSet's status by hand (merge patch on the status subresource),
/// playing a controller for a StageSet the controller under test does not own.
async fn patch_status(h: &Harness, namespace: &str, name: &str, status: Value) {
    Api::<StageSet>::namespaced(h.client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .expect("status patched");
}

/// A Ready=True condition as a controller would write it.
fn ready_true(generation: i64) -> Value {
    json!([{
        "type": "Ready",
        "status": "True",
        "observedGeneration": generation,
        "lastTransitionTime": "2024-01-01T00:00:00Z",
        "reason": "Succeeded",
        "message": "set by the test"
    }])
}

/// A StageSet spec with one stage whose source need not exist.
fn placeholder_spec() -> Value {
    json!({"stages": [{"name": "app", "sourceRef": {"name": "nowhere"}}]})
}

/// Publishes a one-ConfigMap artifact as ExternalArtifact `name` in `namespace`.
async fn configmap_source(h: &Harness, namespace: &str, name: &str, cm: &str) {
    let art = h.artifact(
        &format!("{namespace}-{name}.tar.gz"),
        &[("cm.yaml", &configmap(namespace, cm, "x"))],
    );
    h.external_artifact(namespace, name, &art, "r1").await;
}

/// B depends on A: B reports DependencyNotReady naming A and applies nothing
/// while A is missing or not Ready, then proceeds on its own once A is Ready
/// (woken by A's status change: B's retry interval is an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_waits_for_its_dependency_and_is_woken_when_it_is_ready() {
    const NS: &str = "dep-wake";
    let h = Harness::start().await;
    h.namespace(NS).await;
    let a_art = h.artifact("a.tar.gz", &[("d.yaml", &deployment(NS, "backend"))]);
    h.external_artifact(NS, "a-src", &a_art, "r1").await;
    configmap_source(&h, NS, "b-src", "frontend").await;

    h.stageset(
        NS,
        "b",
        json!({"interval": "1h", "retryInterval": "1h", "dependsOn": [{"name": "a"}],
               "stages": [{"name": "app", "sourceRef": {"name": "b-src"}}]}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "b",
        "DependencyNotReady",
        &format!("dependency {NS}/a not found"),
    )
    .await;

    // A appears (not Ready yet): B is woken by A's creation.
    h.stageset(
        NS,
        "a",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "a-src"}}]}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "b",
        "DependencyNotReady",
        &format!("dependency {NS}/a is not ready"),
    )
    .await;
    h.wait_exists("apps/v1", "Deployment", Some(NS), "backend")
        .await;
    h.wait_stageset(NS, "a", "a verifying", |ss| {
        stage_phase(ss, "app").as_deref() == Some("Verifying")
    })
    .await;
    let b = h.get_stageset(NS, "b").await;
    let status = b.status.clone().unwrap();
    assert!(status.stages.is_empty(), "B ran no stage: {status:?}");
    assert!(status.last_attempted_revisions.is_empty());
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "frontend")
            .await
            .is_none(),
        "B applied nothing"
    );

    // A becomes Ready: B proceeds without any manual trigger.
    h.set_ready("apps/v1", "Deployment", NS, "backend");
    h.wait_ready_reason(NS, "a", "Succeeded", "").await;
    let b = h
        .wait_ready_reason(NS, "b", "Succeeded", "Applied and verified 1 stage(s)")
        .await;
    assert_eq!(
        b.metadata
            .annotations
            .unwrap_or_default()
            .get("reconcile.fluxcd.io/requestedAt"),
        None,
        "no manual trigger"
    );
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "frontend")
            .await
            .is_some()
    );
}

/// A↔B and a self-dependency are cycles (Stalled); a StageSet that merely
/// depends on a cycle member is not itself in a cycle (DependencyNotReady).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_cycle_stalls_every_member() {
    const NS: &str = "dep-cycle";
    let h = Harness::start().await;
    h.namespace(NS).await;
    for name in ["a", "b", "self", "outside"] {
        configmap_source(&h, NS, name, &format!("cm-{name}")).await;
    }
    // Each StageSet applies its own ConfigMap `cm-<name>` from source `<name>`.
    let spec = |name: &str, deps: Value| json!({"dependsOn": deps, "stages": [{"name": "app", "sourceRef": {"name": name}}]});
    h.stageset(NS, "a", spec("a", json!([{"name": "b"}]))).await;
    h.stageset(NS, "b", spec("b", json!([{"name": "a", "namespace": NS}])))
        .await;
    h.stageset(NS, "self", spec("self", json!([{"name": "self"}])))
        .await;
    h.stageset(NS, "outside", spec("outside", json!([{"name": "a"}])))
        .await;
    for name in ["a", "b", "self"] {
        let ss = h
            .wait_ready_reason(NS, name, "Stalled", "spec.dependsOn forms a cycle")
            .await;
        let status = ss.status.unwrap();
        assert_eq!(status.observed_generation, Some(1));
        assert!(status.stages.is_empty());
    }
    h.wait_ready_reason(
        NS,
        "outside",
        "DependencyNotReady",
        &format!("dependency {NS}/a is not ready"),
    )
    .await;
    for name in ["a", "b", "self", "outside"] {
        assert!(
            h.get_opt("v1", "ConfigMap", Some(NS), &format!("cm-{name}"))
                .await
                .is_none(),
            "{name} applied nothing"
        );
    }

    // Breaking the cycle lets both proceed (B first, then A, woken by B).
    h.stageset(NS, "b", spec("b", json!([]))).await;
    h.wait_ready_reason(NS, "b", "Succeeded", "").await;
    h.wait_ready_reason(NS, "a", "Succeeded", "").await;
    h.wait_ready_reason(NS, "outside", "Succeeded", "").await;
    h.wait_ready_reason(NS, "self", "Stalled", "spec.dependsOn forms a cycle")
        .await;
}

/// The gate on a dependency whose status is written by hand (it lives in a
/// namespace the controller does not watch, so nothing overwrites it):
/// minVersion without a version, below the floor, a stale generation, a
/// window-held revision, and finally satisfied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_and_readiness_of_a_dependency_gate_the_dependent() {
    const NS: &str = "team-c";
    const SHARED: &str = "shared-c";
    let h = Harness::start_with(HarnessOptions {
        flags: vec![format!("--watch-namespaces={NS}")],
        ..HarnessOptions::default()
    })
    .await;
    h.namespace(NS).await;
    h.namespace(SHARED).await;
    configmap_source(&h, NS, "src", "gated").await;
    h.stageset(SHARED, "platform", placeholder_spec()).await;
    patch_status(
        &h,
        SHARED,
        "platform",
        json!({"conditions": ready_true(1), "observedGeneration": 1}),
    )
    .await;

    // Cross-namespace dependents are not woken; a short retry interval polls.
    h.stageset(
        NS,
        "app",
        json!({"retryInterval": "1s",
               "dependsOn": [{"name": "platform", "namespace": SHARED, "minVersion": "1.2.0"}],
               "stages": [{"name": "app", "sourceRef": {"name": "src"}}]}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "app",
        "DependencyNotReady",
        "dependency shared-c/platform has no version yet, need >= 1.2.0",
    )
    .await;

    patch_status(&h, SHARED, "platform", json!({"version": "1.1.9"})).await;
    h.wait_ready_reason(
        NS,
        "app",
        "DependencyNotReady",
        "dependency shared-c/platform is at version 1.1.9, need >= 1.2.0",
    )
    .await;

    // A spec change the dependency has not observed yet: not ready.
    h.stageset(
        SHARED,
        "platform",
        json!({"interval": "5m", "stages": [{"name": "app", "sourceRef": {"name": "nowhere"}}]}),
    )
    .await;
    assert_eq!(
        h.get_stageset(SHARED, "platform").await.metadata.generation,
        Some(2)
    );
    patch_status(&h, SHARED, "platform", json!({"version": "1.2.0"})).await;
    h.wait_ready_reason(
        NS,
        "app",
        "DependencyNotReady",
        "dependency shared-c/platform is not ready",
    )
    .await;

    // Observed, but a new revision is held by an update window.
    patch_status(
        &h,
        SHARED,
        "platform",
        json!({"conditions": ready_true(2), "observedGeneration": 2,
               "pendingUpdate": {"revisions": {"shared-c/nowhere": "r2"}}}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "app",
        "DependencyNotReady",
        "dependency shared-c/platform has a new revision held by an update window",
    )
    .await;
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "gated")
            .await
            .is_none()
    );

    // Window passed and the version reached (lenient: a leading v).
    patch_status(
        &h,
        SHARED,
        "platform",
        json!({"pendingUpdate": null, "version": "v1.2.0"}),
    )
    .await;
    h.wait_ready_reason(NS, "app", "Succeeded", "").await;
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "gated")
            .await
            .is_some()
    );

    // The controller left the dependency alone.
    let platform = h.get_stageset(SHARED, "platform").await;
    assert!(platform.metadata.finalizers.unwrap_or_default().is_empty());
    let status = platform.status.unwrap();
    assert_eq!(status.version.as_deref(), Some("v1.2.0"));
    assert_eq!(
        ready(&h.get_stageset(SHARED, "platform").await),
        Some((
            "True".to_string(),
            "Succeeded".to_string(),
            "set by the test".to_string()
        ))
    );
}

/// With `--no-cross-namespace-refs` a dependency in another namespace is
/// refused even though it exists and is Ready; same-namespace ones still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_namespace_dependencies_are_refused_with_the_flag() {
    const NS: &str = "team-d";
    const SHARED: &str = "shared-d";
    let h = Harness::start_with(HarnessOptions {
        flags: vec![
            "--no-cross-namespace-refs".to_string(),
            format!("--watch-namespaces={NS}"),
        ],
        ..HarnessOptions::default()
    })
    .await;
    h.namespace(NS).await;
    h.namespace(SHARED).await;
    configmap_source(&h, NS, "src", "refused").await;
    h.stageset(SHARED, "platform", placeholder_spec()).await;
    patch_status(
        &h,
        SHARED,
        "platform",
        json!({"conditions": ready_true(1), "observedGeneration": 1, "version": "9.9.9"}),
    )
    .await;
    h.stageset(
        NS,
        "app",
        json!({"dependsOn": [{"name": "platform", "namespace": SHARED}],
               "stages": [{"name": "app", "sourceRef": {"name": "src"}}]}),
    )
    .await;
    let ss = h
        .wait_ready_reason(
            NS,
            "app",
            "DependencyNotReady",
            "cross-namespace dependsOn shared-d/platform rejected",
        )
        .await;
    assert!(ss.status.unwrap().stages.is_empty());

    h.stageset(
        NS,
        "local",
        json!({"dependsOn": [{"name": "missing"}],
               "stages": [{"name": "app", "sourceRef": {"name": "src"}}]}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "local",
        "DependencyNotReady",
        "dependency team-d/missing not found",
    )
    .await;
    // Give the controller time to (wrongly) go on, then check it did not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "refused")
            .await
            .is_none()
    );
}
