//! Gated delivery end to end (issue 16). Promotion (delivery.md §5.5): a
//! soak holds the next stage until its end on the test's clock and starts
//! again for a new revision; a manual gate waits for a fresh
//! `stages.metio.wtf/promote` token.
//!
//! Update windows (delivery.md §5.1) on a clock the
//! test moves: a weekend freeze holds a new StageSet (`UpdateDeferred`) and
//! a new revision of a deployed one ("Deployed; delivery held…", the held
//! revisions in `status.pendingUpdate`, dependents not ready), lets drift
//! correction through unless `windowScope: All`, opens on time, and the
//! one-shot `update-now` token lets one pass through. Schedules, zones and
//! DST are unit-tested in `src/reconcile/windows.rs`.

#![recursion_limit = "256"]

#[path = "support/corpus.rs"]
mod corpus;
mod support;

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use stageset_controller::api::StageSet;
use stageset_controller::reconcile::Clock;
use support::*;

const NS: &str = "shop";
/// Friday 18:00 UTC for 62 hours: no deploys over the weekend.
const WEEKEND: &str = "0 18 * * 5";

/// A harness whose controller reads the returned time.
async fn harness_at(at: &str) -> (Harness, Arc<Mutex<Timestamp>>) {
    let now = Arc::new(Mutex::new(at.parse::<Timestamp>().unwrap()));
    let read = now.clone();
    let h = Harness::start_with(HarnessOptions {
        clock: Some(Clock::from_fn(move || *read.lock().unwrap())),
        ..Default::default()
    })
    .await;
    h.namespace(NS).await;
    (h, now)
}

fn set_time(now: &Arc<Mutex<Timestamp>>, at: &str) {
    *now.lock().unwrap() = at.parse().unwrap();
}

async fn app_source(h: &Harness, revision: &str) {
    let art = h.artifact(
        &format!("app-{revision}.tar.gz"),
        &[("cm.yaml", &configmap(NS, "app-config", revision))],
    );
    h.external_artifact(NS, "app", &art, revision).await;
}

fn frozen(extra: Value) -> Value {
    let mut spec = json!({"interval": "1h",
        "updateWindows": [{"type": "Deny", "schedule": WEEKEND, "duration": "62h"}],
        "stages": [{"name": "app", "sourceRef": {"name": "app"}}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

async fn annotate(h: &Harness, name: &str, key: &str, value: &str) {
    Api::<StageSet>::namespaced(h.client.clone(), NS)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap();
}

async fn value(h: &Harness) -> Option<String> {
    let cm = Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .get_opt("app-config")
        .await
        .unwrap()?;
    cm.data.unwrap_or_default().get("value").cloned()
}

fn succeeded(ss: &StageSet) -> bool {
    ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
}

fn observed(ss: &StageSet) -> bool {
    ss.status.as_ref().and_then(|s| s.observed_generation) == ss.metadata.generation
}

/// A StageSet created during the freeze is not deployed: UpdateDeferred,
/// the next opening in status, an event; on Monday it goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stageset_waits_for_the_window() {
    let (h, now) = harness_at("2026-12-05T10:00:00Z").await;
    app_source(&h, "r1").await;
    h.stageset(NS, "shop", frozen(json!({}))).await;
    let ss = h
        .wait_ready_reason(
            NS,
            "shop",
            "UpdateDeferred",
            "delivery held by update window (next window opens 2026-12-07T08:00:00Z)",
        )
        .await;
    let pending = ss.status.unwrap().pending_update.unwrap();
    assert_eq!(pending.revisions.values().collect::<Vec<_>>(), ["r1"]);
    assert_eq!(
        pending.next_window_opens.unwrap().0.to_string(),
        "2026-12-07T08:00:00Z"
    );
    assert_eq!(value(&h).await, None, "nothing is applied in the freeze");
    let events = h.events(NS, "shop").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("UpdateDeferred")),
        "{events:?}"
    );
    // Monday morning: the next pass (here requested) delivers.
    set_time(&now, "2026-12-07T08:00:00Z");
    annotate(&h, "shop", "reconcile.fluxcd.io/requestedAt", "monday").await;
    let ss = h.wait_stageset(NS, "shop", "Ready", succeeded).await;
    assert!(ss.status.unwrap().pending_update.is_none());
    assert_eq!(value(&h).await.as_deref(), Some("r1"));
}

/// A deployed StageSet stays Ready while a new revision is held; its
/// dependents are not ready meanwhile; `update-now` lets exactly one pass
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_revisions_are_held_and_update_now_lets_one_through() {
    let (h, now) = harness_at("2026-12-04T12:00:00Z").await;
    app_source(&h, "r1").await;
    h.stageset(NS, "shop", frozen(json!({}))).await;
    h.wait_stageset(NS, "shop", "Ready", succeeded).await;
    assert_eq!(value(&h).await.as_deref(), Some("r1"));
    // Saturday, r2 arrives: held.
    set_time(&now, "2026-12-05T09:00:00Z");
    app_source(&h, "r2").await;
    let ss = h
        .wait_stageset(NS, "shop", "r2 held", |ss| {
            ss.status
                .as_ref()
                .and_then(|s| s.pending_update.as_ref())
                .is_some_and(|p| p.revisions.values().any(|r| r == "r2"))
        })
        .await;
    let (status, reason, message) = ready(&ss).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Succeeded"));
    assert_eq!(
        message,
        "Deployed; delivery held by update window (next window opens 2026-12-07T08:00:00Z)"
    );
    assert_eq!(value(&h).await.as_deref(), Some("r1"));
    // A StageSet that depends on it waits.
    let art = h.artifact(
        "other.tar.gz",
        &[("cm.yaml", &configmap(NS, "other", "o1"))],
    );
    h.external_artifact(NS, "other", &art, "o1").await;
    h.stageset(
        NS,
        "downstream",
        json!({"interval": "1h", "dependsOn": [{"name": "shop"}],
            "stages": [{"name": "app", "sourceRef": {"name": "other"}}]}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "downstream",
        "DependencyNotReady",
        "has a new revision held by an update window",
    )
    .await;
    // update-now: one pass through the freeze (it does not trigger a pass
    // by itself; like the CLI, the test bumps requestedAt with it).
    annotate(&h, "shop", "stages.metio.wtf/update-now", "hotfix-1").await;
    annotate(&h, "shop", "reconcile.fluxcd.io/requestedAt", "hotfix-1").await;
    let ss = h
        .wait_stageset(NS, "shop", "r2 deployed", |ss| {
            succeeded(ss)
                && ss
                    .status
                    .as_ref()
                    .is_some_and(|s| s.last_applied_revisions.values().any(|r| r == "r2"))
        })
        .await;
    let status = ss.status.unwrap();
    assert!(status.pending_update.is_none());
    assert_eq!(
        status.last_handled_update_override.as_deref(),
        Some("hotfix-1")
    );
    assert_eq!(value(&h).await.as_deref(), Some("r2"));
    // The token is spent: r3 is held again.
    app_source(&h, "r3").await;
    h.wait_stageset(NS, "shop", "r3 held", |ss| {
        ss.status
            .as_ref()
            .and_then(|s| s.pending_update.as_ref())
            .is_some_and(|p| p.revisions.values().any(|r| r == "r3"))
    })
    .await;
    assert_eq!(value(&h).await.as_deref(), Some("r2"));
}

/// In the freeze, drift is corrected with `windowScope: Updates` (the
/// default) and left alone with `All`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_scope_all_also_holds_drift_correction() {
    let (h, now) = harness_at("2026-12-04T12:00:00Z").await;
    app_source(&h, "r1").await;
    h.stageset(NS, "shop", frozen(json!({}))).await;
    h.wait_stageset(NS, "shop", "Ready", succeeded).await;
    set_time(&now, "2026-12-05T09:00:00Z");
    let drift = |v: &'static str| {
        let client = h.client.clone();
        async move {
            Api::<ConfigMap>::namespaced(client, NS)
                .patch(
                    "app-config",
                    &PatchParams::apply("someone").force(),
                    &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "app-config", "namespace": NS}, "data": {"value": v}})),
                )
                .await
                .unwrap();
        }
    };
    // Updates: corrected.
    drift("edited").await;
    annotate(&h, "shop", "reconcile.fluxcd.io/requestedAt", "t1").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while value(&h).await.as_deref() != Some("r1") {
        assert!(
            std::time::Instant::now() < deadline,
            "drift was not corrected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // All: held, with no revisions pending.
    h.stageset(NS, "shop", frozen(json!({"windowScope": "All"})))
        .await;
    let ss = h
        .wait_stageset(NS, "shop", "the hard freeze", |ss| {
            observed(ss)
                && ss
                    .status
                    .as_ref()
                    .and_then(|s| s.pending_update.as_ref())
                    .is_some_and(|p| p.revisions.is_empty())
        })
        .await;
    assert!(succeeded(&ss));
    drift("edited-again").await;
    h.request_reconcile(NS, "shop", "t2", |_| true).await;
    assert_eq!(value(&h).await.as_deref(), Some("edited-again"));
}

/// Every update window of an admitted corpus StageSet evaluates (what
/// admission accepts, the reconciler can run).
#[test]
fn every_admitted_corpus_window_compiles() {
    let Some(reference) = corpus::reference("the corpus update windows") else {
        return;
    };
    let refused: std::collections::BTreeSet<&str> =
        corpus::NOT_SUPPORTED_YET.iter().map(|(f, _)| *f).collect();
    let dir = reference.join("corpus/examples/valid");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if refused.contains(file.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let Ok(ss) = <StageSet as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            let windows = ss.spec.update_windows.clone().unwrap_or_default();
            if windows.is_empty() {
                continue;
            }
            seen += 1;
            let compiled = stageset_controller::reconcile::windows::compile(&windows)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            // And answers at an arbitrary instant.
            let t: Timestamp = "2027-03-28T01:30:00Z".parse().unwrap();
            let _ = stageset_controller::reconcile::windows::allowed(&compiled, t);
            let _ = stageset_controller::reconcile::windows::next_change(&compiled, t);
        }
    }
    assert!(seen >= 5, "{seen} StageSets with windows");
}

/// Our JSONPath (metric-source webhooks) selects what the real kubectl's
/// JSONPath selects, and refuses what kubectl refuses, for the shapes
/// users write: `kubectl annotate --local -o jsonpath=...` is the oracle.
#[test]
fn jsonpath_agrees_with_kubectl() {
    use stageset_controller::validate::jsonpath::JsonPath;
    let doc = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "slo", "labels": {"app.kubernetes.io/version": "1.2.3"}},
        "remaining": 0.42,
        "budget": {"remaining": "0.375", "total": 100},
        "objectives": [
            {"name": "latency", "errorBudgetRemaining": 0.9, "ok": true, "rank": 1},
            {"name": "availability", "errorBudgetRemaining": "0.15", "ok": false, "rank": 2},
            {"name": "errors", "errorBudgetRemaining": 0.5, "rank": 3}
        ]
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let templates = [
        "{.remaining}",
        "{$.remaining}",
        "{.budget.remaining}",
        "{.budget['total']}",
        r"{.metadata.labels.app\.kubernetes\.io/version}",
        // Not `['app.kubernetes.io/version']`: kubectl splits quoted names
        // at dots and finds nothing; we take the name as written.
        "{.objectives[0].errorBudgetRemaining}",
        "{.objectives[-1].errorBudgetRemaining}",
        "{.objectives[1:3].name}",
        "{.objectives[0:3:2].name}",
        "{.objectives[0,2].rank}",
        "{.objectives[*].rank}",
        "{.objectives[0]['name','rank']}",
        "{..errorBudgetRemaining}",
        "{.objectives[?(@.name=='availability')].errorBudgetRemaining}",
        r#"{.objectives[?(@.name == "errors")].errorBudgetRemaining}"#,
        "{.objectives[?(@.ok)].name}",
        "{.objectives[?(@.ok == false)].rank}",
        "{.objectives[?(@.rank > 1)].name}",
        "{.objectives[?(@.rank <= 2)].name}",
        "{.objectives[?(@.rank != 2)].name}",
        "{.objectives[?(@.name < 'b')].rank}",
        "{.objectives[?(@.missing == 1)].name}",
        "{.missing}",
        "{.remaining.deeper}",
        "{.objectives[3].name}",
        "{.objectives[?(@.errorBudgetRemaining > 0.6)].name}",
        "{.objectives[?(@.ok == 'x')].name}",
    ];
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for template in templates {
        let out = std::process::Command::new("kubectl")
            .args(["annotate", "--local", "-f"])
            .arg(&file)
            .args(["a=b", "-o", &format!("jsonpath={template}")])
            .output()
            .expect("kubectl runs");
        let ours = JsonPath::parse(template)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
            .find(&doc);
        if out.status.success() {
            let theirs = String::from_utf8(out.stdout).unwrap();
            let ours = ours
                .unwrap_or_else(|e| panic!("{template}: kubectl answers {theirs:?}, we fail: {e}"));
            let ours: Vec<String> = ours.into_iter().map(scalar).collect();
            assert_eq!(ours.join(" "), theirs, "{template}");
        } else {
            let theirs = String::from_utf8_lossy(&out.stderr);
            assert!(
                ours.is_err(),
                "{template}: kubectl fails ({theirs}), we answer {ours:?}"
            );
        }
    }
}

// --- promotion ---------------------------------------------------------------------

async fn source(h: &Harness, name: &str, revision: &str) {
    let art = h.artifact(
        &format!("{name}-{revision}.tar.gz"),
        &[(
            "cm.yaml",
            &configmap(NS, &format!("{name}-config"), revision),
        )],
    );
    h.external_artifact(NS, name, &art, revision).await;
}

async fn cm_value(h: &Harness, name: &str) -> Option<String> {
    let cm = Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .get_opt(name)
        .await
        .unwrap()?;
    cm.data.unwrap_or_default().get("value").cloned()
}

fn two_stages(promotion: Value) -> Value {
    json!({"interval": "1h", "stages": [
        {"name": "canary", "sourceRef": {"name": "canary"}, "promotion": promotion},
        {"name": "prod", "sourceRef": {"name": "prod"}}]})
}

fn stage_phase_of(ss: &StageSet, stage: &str) -> Option<String> {
    let entry = ss
        .status
        .as_ref()?
        .stages
        .iter()
        .find(|s| s.name == stage)?;
    entry
        .promotion_state
        .as_ref()?
        .phase
        .map(|p| format!("{p:?}"))
}

/// A soak holds the next stage until it ends (on the test's clock), then
/// promotes; a new revision soaks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_holds_the_next_stage_until_it_ends() {
    let (h, now) = harness_at("2026-12-07T10:00:00Z").await;
    source(&h, "canary", "r1").await;
    source(&h, "prod", "p1").await;
    h.stageset(NS, "web", two_stages(json!({"soak": "10m"})))
        .await;
    let ss = h
        .wait_ready_reason(
            NS,
            "web",
            "Soaking",
            "stage \"canary\" is soaking until 2026-12-07T10:10:00Z",
        )
        .await;
    assert_eq!(stage_phase_of(&ss, "canary").as_deref(), Some("Soaking"));
    assert_eq!(cm_value(&h, "canary-config").await.as_deref(), Some("r1"));
    assert_eq!(cm_value(&h, "prod-config").await, None, "prod waits");
    // Five minutes on: still soaking, the same end.
    set_time(&now, "2026-12-07T10:05:00Z");
    h.request_reconcile(NS, "web", "t1", |ss| {
        ready(ss).is_some_and(|(_, r, m)| r == "Soaking" && m.contains("10:10:00Z"))
    })
    .await;
    assert_eq!(cm_value(&h, "prod-config").await, None);
    // The soak is over.
    set_time(&now, "2026-12-07T10:10:00Z");
    annotate(&h, "web", "reconcile.fluxcd.io/requestedAt", "t2").await;
    let ss = h.wait_stageset(NS, "web", "Ready", succeeded).await;
    assert_eq!(stage_phase_of(&ss, "canary").as_deref(), Some("Promoted"));
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p1"));
    // A new canary revision soaks again; prod keeps what it has.
    set_time(&now, "2026-12-07T11:00:00Z");
    source(&h, "canary", "r2").await;
    h.wait_ready_reason(
        NS,
        "web",
        "Soaking",
        "stage \"canary\" is soaking until 2026-12-07T11:10:00Z",
    )
    .await;
    assert_eq!(cm_value(&h, "canary-config").await.as_deref(), Some("r2"));
}

/// A manual gate waits for a promote token for its stage; a spent token
/// does not promote the next revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_promotion_waits_for_a_fresh_token() {
    let (h, _now) = harness_at("2026-12-07T10:00:00Z").await;
    source(&h, "canary", "r1").await;
    source(&h, "prod", "p1").await;
    h.stageset(
        NS,
        "web",
        two_stages(json!({"requireManualPromotion": true})),
    )
    .await;
    let ss = h
        .wait_ready_reason(NS, "web", "AwaitingPromotion", "waits for manual promotion")
        .await;
    let message = ready(&ss).unwrap().2;
    assert!(
        message.contains("kubectl -n shop annotate stageset/web --overwrite stages.metio.wtf/promote=canary@<token>"),
        "{message}"
    );
    assert_eq!(cm_value(&h, "prod-config").await, None);
    // A token for another stage does nothing.
    annotate(&h, "web", "stages.metio.wtf/promote", "prod@x").await;
    h.request_reconcile(NS, "web", "t0", |ss| {
        ready(ss).is_some_and(|(_, r, _)| r == "AwaitingPromotion")
    })
    .await;
    assert_eq!(cm_value(&h, "prod-config").await, None);
    // Promoted.
    annotate(&h, "web", "stages.metio.wtf/promote", "canary@approved-1").await;
    let ss = h.wait_stageset(NS, "web", "Ready", succeeded).await;
    let canary = ss
        .status
        .as_ref()
        .unwrap()
        .stages
        .iter()
        .find(|s| s.name == "canary")
        .unwrap()
        .clone();
    assert_eq!(canary.last_handled_promotion.as_deref(), Some("approved-1"));
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p1"));
    // r2 waits again: the spent token does not carry over.
    source(&h, "canary", "r2").await;
    source(&h, "prod", "p2").await;
    h.wait_stageset(NS, "web", "r2 awaiting", |ss| {
        ready(ss).is_some_and(|(_, r, m)| r == "AwaitingPromotion" && m.contains("revision r2"))
    })
    .await;
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p1"));
}

/// Loads (or replaces) a pod `name` labelled `app=api` whose one container
/// restarted `restarts` times; returns its UID.
async fn api_pod(h: &Harness, name: &str, restarts: i32) -> String {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(h.client.clone(), NS);
    if pods.get_opt(name).await.unwrap().is_none() {
        h.sim
            .load(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": "api:1"}]}}))
            .unwrap();
    }
    // The kubelet's part: the status subresource.
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "containerStatuses": [{"name": "api",
            "image": "api:1", "imageID": "", "ready": true, "restartCount": restarts, "started": true,
            "state": {"running": {}}}]}})),
    )
    .await
    .unwrap();
    pods.get(name).await.unwrap().metadata.uid.unwrap()
}

/// A restart gate blocks a new revision whose pods restarted more than the
/// check allows since the stage last promoted; replaced pods unblock it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_gate_blocks_on_restarts_since_the_last_promotion() {
    let (mut h, _now) = harness_at("2026-12-07T10:00:00Z").await;
    api_pod(&h, "api-1", 2).await;
    source(&h, "canary", "r1").await;
    source(&h, "prod", "p1").await;
    h.stageset(
        NS,
        "web",
        two_stages(json!({"restartGate": {"checks": [
            {"name": "api", "selector": {"matchLabels": {"app": "api"}}, "maxRestarts": 1}]}})),
    )
    .await;
    // The two restarts from before are the baseline: promoted.
    let ss = h.wait_stageset(NS, "web", "Ready", succeeded).await;
    let canary = ss.status.unwrap().stages[0].clone();
    let state = canary.promotion_state.unwrap();
    assert_eq!(state.restart_baseline[0].restarts, Some(2));
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p1"));
    // r2 while the pod restarts three more times: blocked, prod keeps p1.
    // With the controller stopped, so that no pass at r1 (which, promoted,
    // takes the live totals as its baseline) falls between the two.
    h.stop_controller();
    api_pod(&h, "api-1", 5).await;
    source(&h, "canary", "r2").await;
    source(&h, "prod", "p2").await;
    h.start_controller().await;
    let ss = h
        .wait_ready_reason(
            NS,
            "web",
            "PromotionBlocked",
            "restart check \"api\" saw 3 restart(s) beyond its baseline (at most 1 allowed)",
        )
        .await;
    let state = ss.status.unwrap().stages[0]
        .promotion_state
        .clone()
        .unwrap();
    assert_eq!(state.restart_check.as_deref(), Some("api"));
    assert_eq!(state.observed_restarts, Some(3));
    assert_eq!(cm_value(&h, "canary-config").await.as_deref(), Some("r2"));
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p1"));
    // The pod is replaced by a healthy one: the next pass promotes.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(h.client.clone(), NS);
    pods.delete("api-1", &Default::default()).await.unwrap();
    api_pod(&h, "api-2", 0).await;
    annotate(&h, "web", "reconcile.fluxcd.io/requestedAt", "replaced").await;
    h.wait_stageset(NS, "web", "Ready", succeeded).await;
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p2"));
}

/// A promotion gate whose pod read fails for a while (the API server answers
/// 500) is unevaluable, not a failure: the stage's entry is written, Ready
/// stays what it was (no transition, no event), the pass is retried with
/// back-off, and once pods can be read the gate promotes (delivery.md R19.4,
/// DEL-97).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_cannot_read_pods_keeps_ready_and_retries() {
    let (h, _now) = harness_at("2026-12-07T10:00:00Z").await;
    api_pod(&h, "api-1", 0).await;
    source(&h, "canary", "r1").await;
    source(&h, "prod", "p1").await;
    h.stageset(
        NS,
        "web",
        two_stages(json!({"restartGate": {"checks": [
            {"name": "api", "selector": {"matchLabels": {"app": "api"}}}]}})),
    )
    .await;
    let before = h.wait_stageset(NS, "web", "Ready", succeeded).await;
    let ready_before = ready(&before).unwrap();
    let events_before = h.events(NS, "web").await.len();
    h.sim.set_faults(kube_sim::FaultConfig {
        rate_500: 1.0,
        verbs: vec!["list".into()],
        resources: vec!["pods".into()],
        ..Default::default()
    });
    source(&h, "canary", "r2").await;
    source(&h, "prod", "p2").await;
    // The canary stage applied r2 and recorded it; its gate keeps failing to
    // read pods, pass after pass.
    let ss = h
        .wait_stageset(NS, "web", "canary at r2, gate unread", |ss| {
            ss.status
                .as_ref()
                .and_then(|s| s.stages.iter().find(|e| e.name == "canary"))
                .is_some_and(|e| e.applied_revision.as_deref() == Some("r2"))
                && h.sim
                    .fault_counts()
                    .get("list")
                    .is_some_and(|c| c.internal_error >= 8)
        })
        .await;
    assert_eq!(ready(&ss).unwrap(), ready_before, "Ready is left alone");
    assert_eq!(
        ss.status.as_ref().unwrap().observed_generation,
        before.status.as_ref().unwrap().observed_generation
    );
    assert_eq!(cm_value(&h, "canary-config").await.as_deref(), Some("r2"));
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p1"));
    let events: Vec<_> = h.events(NS, "web").await;
    assert_eq!(
        events.len(),
        events_before,
        "no Ready transition, so no event: {:?}",
        events.iter().map(|e| e.reason.clone()).collect::<Vec<_>>()
    );
    // Pods can be read again: the gate promotes and prod follows.
    h.sim.set_faults(kube_sim::FaultConfig::default());
    h.wait_stageset(NS, "web", "Ready", |ss| {
        succeeded(ss)
            && ss
                .status
                .as_ref()
                .is_some_and(|s| s.last_applied_revisions.values().any(|r| r == "p2"))
    })
    .await;
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p2"));
}

/// An event gate blocks on Warning events of the selected pods with a
/// listed reason; other reasons and other pods do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_gate_blocks_on_warning_events_of_its_pods() {
    let (h, _now) = harness_at("2026-12-07T10:00:00Z").await;
    let uid = api_pod(&h, "api-1", 0).await;
    let event = |name: &str, reason: &str, kind: &str, uid: &str| {
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": NS},
            "involvedObject": {"apiVersion": "v1", "kind": kind, "name": "api-1", "namespace": NS, "uid": uid},
            "reason": reason, "message": "m", "type": "Warning", "count": 2,
            "source": {"component": "kubelet"}})
    };
    // Noise that must not count: another reason, and a Normal event.
    h.sim
        .load(event("noise-1", "BackOff", "Pod", &uid))
        .unwrap();
    let mut normal = event("noise-2", "OOMKilling", "Pod", &uid);
    normal["type"] = json!("Normal");
    h.sim.load(normal).unwrap();
    source(&h, "canary", "r1").await;
    source(&h, "prod", "p1").await;
    h.stageset(
        NS,
        "web",
        two_stages(json!({"eventGate": {"checks": [
            {"name": "api", "selector": {"matchLabels": {"app": "api"}}, "reasons": ["OOMKilling"], "maxEvents": 1}]}})),
    )
    .await;
    h.wait_stageset(NS, "web", "Ready", succeeded).await;
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p1"));
    // An OOM kill counted twice: blocked at the next revision.
    h.sim
        .load(event("oom-1", "OOMKilling", "Pod", &uid))
        .unwrap();
    source(&h, "canary", "r2").await;
    source(&h, "prod", "p2").await;
    let ss = h
        .wait_ready_reason(
            NS,
            "web",
            "PromotionBlocked",
            "event check \"api\" saw 2 matching Warning event(s) (at most 1 allowed)",
        )
        .await;
    let state = ss.status.unwrap().stages[0]
        .promotion_state
        .clone()
        .unwrap();
    assert_eq!(state.event_check.as_deref(), Some("api"));
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p1"));
    // Break-glass: the promote token wins over the gate.
    annotate(&h, "web", "stages.metio.wtf/promote", "canary@override-1").await;
    h.wait_stageset(NS, "web", "Ready", succeeded).await;
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p2"));
}

/// A restart gate with `onFailure: Rollback` reverts only its stage to the
/// last good revision (deleting what the failing revision added), runs
/// `onRollback`, and parks the aborted revision: later passes neither
/// apply it again nor start the next stage, until a promote token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gate_rolls_its_stage_back_and_parks_the_revision() {
    let (mut h, _now) = harness_at("2026-12-07T10:00:00Z").await;
    api_pod(&h, "api-1", 0).await;
    h.sim
        .load(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "rollback-marker", "namespace": NS}, "data": {}}))
        .unwrap();
    source(&h, "canary", "r1").await;
    source(&h, "prod", "p1").await;
    let mut spec = two_stages(json!({"restartGate": {"onFailure": "Rollback", "checks": [
        {"name": "api", "selector": {"matchLabels": {"app": "api"}}}]}}));
    spec["rollbackOnFailure"] = json!(true);
    spec["onRollback"] = json!([{"name": "mark", "patch": {
        "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "rollback-marker"},
        "patch": "{\"data\": {\"rolled\": \"yes\"}}"}}]);
    h.stageset(NS, "web", spec).await;
    h.wait_stageset(NS, "web", "Ready", succeeded).await;
    assert_eq!(cm_value(&h, "canary-config").await.as_deref(), Some("r1"));
    // r2 adds an object, and the pod restarts three times (the controller
    // stopped meanwhile, so no pass sees one without the other).
    h.stop_controller();
    let art = h.artifact(
        "canary-r2.tar.gz",
        &[
            ("cm.yaml", &configmap(NS, "canary-config", "r2")),
            ("extra.yaml", &configmap(NS, "canary-extra", "r2")),
        ],
    );
    h.external_artifact(NS, "canary", &art, "r2").await;
    api_pod(&h, "api-1", 3).await;
    source(&h, "prod", "p2").await;
    h.start_controller().await;
    // The pass that rolls back is soon followed by one that parks (prod's
    // new revision wakes it): wait for the state, then read the event.
    let ss = h
        .wait_stageset(NS, "web", "canary rolled back", |ss| {
            ss.status.as_ref().is_some_and(|s| {
                s.stages.first().is_some_and(|c| {
                    c.promotion_state
                        .as_ref()
                        .is_some_and(|p| p.aborted_revision.as_deref() == Some("r2"))
                })
            })
        })
        .await;
    let canary = ss.status.unwrap().stages[0].clone();
    assert_eq!(canary.applied_revision.as_deref(), Some("r1"));
    assert_eq!(canary.entries_count, Some(1));
    let state = canary.promotion_state.unwrap();
    assert_eq!(state.aborted_revision.as_deref(), Some("r2"));
    assert_eq!(format!("{:?}", state.phase.unwrap()), "Blocked");
    assert_eq!(cm_value(&h, "canary-config").await.as_deref(), Some("r1"));
    assert_eq!(
        cm_value(&h, "canary-extra").await,
        None,
        "r2's addition is gone"
    );
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p1"));
    let marker = Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .get("rollback-marker")
        .await
        .unwrap();
    assert_eq!(
        marker.data.unwrap().get("rolled").map(String::as_str),
        Some("yes")
    );
    // The Ready transition's Warning event follows the status write.
    let rolled_back = "stage \"canary\" promotion blocked at revision r2: restart check \"api\" saw 3 restart(s) beyond its baseline (at most 0 allowed); rolled back to revision r1";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let events = h.events(NS, "web").await;
        if events.iter().any(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("PromotionBlocked")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains(rolled_back))
        }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The next pass: parked, r2 is not applied again.
    h.request_reconcile(NS, "web", "t1", |ss| {
        ready(ss).is_some_and(|(s, r, m)| {
            s == "False"
                && r == "PromotionBlocked"
                && m.contains(
                    "stage \"canary\" is parked at revision r1: revision r2 was rolled back",
                )
        })
    })
    .await;
    assert_eq!(cm_value(&h, "canary-config").await.as_deref(), Some("r1"));
    assert_eq!(cm_value(&h, "canary-extra").await, None);
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p1"));
    // A promote token un-parks it: r2 goes out and prod follows.
    annotate(&h, "web", "stages.metio.wtf/promote", "canary@ship-it").await;
    h.wait_stageset(NS, "web", "Ready", succeeded).await;
    assert_eq!(cm_value(&h, "canary-config").await.as_deref(), Some("r2"));
    assert_eq!(cm_value(&h, "canary-extra").await.as_deref(), Some("r2"));
    assert_eq!(cm_value(&h, "prod-config").await.as_deref(), Some("p2"));
}

/// Without a last good revision to go back to (`rollbackOnFailure` keeps
/// none), a gate asking for a rollback holds and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_rollback_without_a_snapshot_holds() {
    let (mut h, _now) = harness_at("2026-12-07T10:00:00Z").await;
    api_pod(&h, "api-1", 0).await;
    source(&h, "canary", "r1").await;
    source(&h, "prod", "p1").await;
    h.stageset(
        NS,
        "web",
        two_stages(json!({"restartGate": {"checks": [
            {"name": "api", "selector": {"matchLabels": {"app": "api"}}, "onFailure": "Rollback"}]}})),
    )
    .await;
    h.wait_stageset(NS, "web", "Ready", succeeded).await;
    h.stop_controller();
    api_pod(&h, "api-1", 1).await;
    source(&h, "canary", "r2").await;
    h.start_controller().await;
    let ss = h
        .wait_ready_reason(
            NS,
            "web",
            "PromotionBlocked",
            "; could not be reverted: no last good revision is recorded for it (status.lastAppliedSnapshot is kept when rollbackOnFailure is true); holding",
        )
        .await;
    let canary = ss.status.unwrap().stages[0].clone();
    assert_eq!(canary.applied_revision.as_deref(), Some("r2"));
    assert_eq!(canary.promotion_state.unwrap().aborted_revision, None);
    assert_eq!(cm_value(&h, "canary-config").await.as_deref(), Some("r2"));
}
