//! Stage actions on kube-sim (delivery.md §3, issue 14): each verb, each hook,
//! the order pre → apply → Ready → post seen through watches, a failing pre
//! action applying nothing, onFailure on every failure, onRollback, the
//! Revision and Lifetime scopes across revisions, forced stages, controller
//! restarts and StageSet re-creation, completion anchors, and ActionDirty.
//! Http actions need a receiver off loopback: they are in tests/outbound_net.rs,
//! which runs in a private network namespace.

#![recursion_limit = "256"]

#[path = "support/corpus.rs"]
mod corpus;
mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};
use stageset_controller::api::{StageLedger, StageSet};
use support::*;

const NS: &str = "shop";

async fn harness() -> Harness {
    let h = Harness::start().await;
    h.namespace(NS).await;
    h
}

/// Publishes the stage artifact `app` at `revision`: one ConfigMap whose
/// data is the revision, plus `extra` files.
async fn app_source(h: &Harness, revision: &str, extra: &[(&str, &str)]) {
    let cm = configmap(NS, "app-config", revision);
    let mut files = vec![("cm.yaml", cm.as_str())];
    files.extend_from_slice(extra);
    let art = h.artifact(&format!("app-{revision}.tar.gz"), &files);
    h.external_artifact(NS, "app", &art, revision).await;
}

fn cms(h: &Harness) -> Api<ConfigMap> {
    Api::namespaced(h.client.clone(), NS)
}

fn stagesets(h: &Harness) -> Api<StageSet> {
    Api::namespaced(h.client.clone(), NS)
}

/// Creates (or replaces) a ConfigMap with `data`.
async fn put_cm(h: &Harness, name: &str, data: Value) {
    let body: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS}, "data": data
    }))
    .unwrap();
    let _ = cms(h).delete(name, &DeleteParams::default()).await;
    cms(h).create(&PostParams::default(), &body).await.unwrap();
}

async fn cm_data(h: &Harness, name: &str) -> Option<Value> {
    cms(h)
        .get_opt(name)
        .await
        .unwrap()
        .map(|c| serde_json::to_value(c.data.unwrap_or_default()).unwrap())
}

async fn exists(h: &Harness, name: &str) -> bool {
    cms(h).get_opt(name).await.unwrap().is_some()
}

/// Waits until a ConfigMap is gone (an action deleted it).
async fn wait_gone(h: &Harness, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while exists(h, name).await {
        assert!(
            Instant::now() < deadline,
            "ConfigMap {name} was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Annotates the StageSet and waits until a pass handled `token`: the status
/// carries it, which a pass writes only after its pre actions ran.
async fn request(h: &Harness, name: &str, token: &str) -> StageSet {
    annotate(h, name, "reconcile.fluxcd.io/requestedAt", token).await;
    h.wait_stageset(NS, name, &format!("requestedAt {token} handled"), |ss| {
        ss.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some(token)
            && ready(ss).is_some_and(|(s, _, _)| s != "Unknown")
    })
    .await
}

async fn annotate(h: &Harness, name: &str, key: &str, value: &str) {
    stagesets(h)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap();
}

fn succeeded(ss: &StageSet) -> bool {
    ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
}

fn stage_entry(ss: &StageSet) -> stageset_controller::api::StageStatus {
    ss.status.as_ref().unwrap().stages[0].clone()
}

/// Waits until the last pass failed the stage with `contains` in the Ready
/// message *and* the stage entry says Failed: a retry pass may already be
/// under way and write its progress phase before its verdict.
async fn wait_stage_failed(h: &Harness, name: &str, contains: &str) -> StageSet {
    h.wait_stageset(
        NS,
        name,
        &format!("Ready StageFailed containing {contains:?} with the stage Failed"),
        |ss| {
            ready(ss).is_some_and(|(_, r, m)| r == "StageFailed" && m.contains(contains))
                && stage_phase(ss, "app").as_deref() == Some("Failed")
        },
    )
    .await
}

/// The names of the Jobs created in the namespace from now on (they are
/// deleted once their action is done, so a later list would miss them).
fn record_jobs(h: &Harness) -> Arc<Mutex<BTreeSet<String>>> {
    let created: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), NS);
    let from = h.sim.resource_version().to_string();
    let names = created.clone();
    tokio::spawn(async move {
        let mut stream = jobs
            .watch(&WatchParams::default(), &from)
            .await
            .unwrap()
            .boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            if let WatchEvent::Added(j) = event {
                names.lock().unwrap().insert(j.metadata.name.unwrap());
            }
        }
    });
    created
}

/// Waits until Jobs whose names start with each of `prefixes` were created.
async fn wait_jobs_created(created: &Arc<Mutex<BTreeSet<String>>>, prefixes: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names = created.lock().unwrap().clone();
        if prefixes
            .iter()
            .all(|p| names.iter().any(|n| n.starts_with(&format!("{p}-"))))
        {
            return;
        }
        assert!(Instant::now() < deadline, "Jobs created: {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A source artifact with one Job (`name`) at `dir` (the root if empty).
async fn job_source(h: &Harness, source: &str, name: &str, dir: &str) {
    let job = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: tools:1\n"
    );
    let path = if dir.is_empty() {
        format!("{name}.yaml")
    } else {
        format!("{dir}/{name}.yaml")
    };
    let art = h.artifact(
        &format!("{source}.tar.gz"),
        &[(path.as_str(), job.as_str())],
    );
    h.external_artifact(NS, source, &art, &format!("{source}-1"))
        .await;
}

fn one_stage(actions: Value) -> Value {
    json!({"interval": "1h", "stages": [{"name": "app", "sourceRef": {"name": "app"}, "actions": actions}]})
}

async fn ledger(h: &Harness, name: &str) -> Option<StageLedger> {
    Api::<StageLedger>::namespaced(h.client.clone(), NS)
        .get_opt(name)
        .await
        .unwrap()
}

async fn event_reasons(h: &Harness, name: &str) -> Vec<(String, String)> {
    h.events(NS, name)
        .await
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// What a watch saw, ordered by the API server's resourceVersion.
type Seen = Arc<Mutex<Vec<(u64, String)>>>;

/// Watches one kind from the current resourceVersion and records what
/// `label` makes of each event of the object `name`.
fn watch<K, F>(h: &Harness, api: Api<K>, name: &'static str, seen: Seen, label: F)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(&K) -> Option<String> + Send + 'static,
{
    let from = h.sim.resource_version().to_string();
    tokio::spawn(async move {
        let wp = WatchParams::default().fields(&format!("metadata.name={name}"));
        let mut stream = api.watch(&wp, &from).await.unwrap().boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            let (WatchEvent::Added(o) | WatchEvent::Modified(o)) = event else {
                continue;
            };
            let rv: u64 = o
                .meta()
                .resource_version
                .as_deref()
                .unwrap()
                .parse()
                .unwrap();
            if let Some(l) = label(&o) {
                let mut seen = seen.lock().unwrap();
                if !seen.iter().any(|(_, s)| *s == l) {
                    seen.push((rv, l));
                }
            }
        }
    });
}

// --- hooks and their order ----------------------------------------------------

/// The pre action runs before anything of the stage is applied, the post
/// action only once the stage's objects are healthy, and the stage is Ready
/// only after the post action: seen through watches, ordered by the API
/// server's resourceVersions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_apply_ready_post_run_in_order() {
    let h = harness().await;
    app_source(&h, "r1", &[("web.yaml", &deployment(NS, "web"))]).await;
    put_cm(&h, "log", json!({"created": "yes"})).await;
    let seen: Seen = Arc::default();
    watch(&h, cms(&h), "log", seen.clone(), |cm: &ConfigMap| {
        let data = cm.data.clone().unwrap_or_default();
        if data.contains_key("post") {
            Some("post action".into())
        } else if data.contains_key("pre") {
            Some("pre action".into())
        } else {
            None
        }
    });
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(h.client.clone(), NS);
    watch(&h, deployments, "web", seen.clone(), |d| {
        let ready = d
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .is_some_and(|n| n >= 1);
        Some(if ready { "web healthy" } else { "web applied" }.into())
    });
    watch(&h, stagesets(&h), "ordered", seen.clone(), |ss| {
        succeeded(ss).then(|| "StageSet Ready".into())
    });
    h.stageset(
        NS,
        "ordered",
        one_stage(json!({
            "pre": [{"name": "mark-pre", "patch": {
                "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "log"},
                "patch": "{\"data\": {\"pre\": \"done\"}}"}}],
            "post": [{"name": "mark-post", "patch": {
                "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "log"},
                "type": "json6902",
                "patch": "[{\"op\": \"add\", \"path\": \"/data/post\", \"value\": \"done\"}]"}}],
        })),
    )
    .await;
    h.wait_exists("apps/v1", "Deployment", Some(NS), "web")
        .await;
    // Applied, not healthy: the pre action ran, the post action did not.
    let ss = h
        .wait_stageset(NS, "ordered", "the stage verifying", |ss| {
            stage_phase(ss, "app").as_deref() == Some("Verifying")
        })
        .await;
    assert!(!succeeded(&ss));
    let log = cm_data(&h, "log").await.unwrap();
    assert_eq!(log["pre"], "done");
    assert!(log.get("post").is_none(), "{log}");
    h.set_ready("apps/v1", "Deployment", NS, "web");
    let ss = h.wait_stageset(NS, "ordered", "Ready", succeeded).await;
    assert_eq!(stage_entry(&ss).executed_actions, ["mark-pre", "mark-post"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut order = seen.lock().unwrap().clone();
        if order.len() == 5 {
            order.sort();
            let names: Vec<&str> = order.iter().map(|(_, l)| l.as_str()).collect();
            assert_eq!(
                names,
                [
                    "pre action",
                    "web applied",
                    "web healthy",
                    "post action",
                    "StageSet Ready"
                ]
            );
            break;
        }
        assert!(Instant::now() < deadline, "watches saw {order:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A failing pre action fails the stage with `pre-action`, applies nothing
/// of the stage and does not run onFailure (nothing was applied); once its
/// cause is fixed the retry rolls the stage out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_action_applies_nothing() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    put_cm(&h, "flag", json!({})).await;
    h.stageset(
        NS,
        "gated",
        one_stage(json!({
            "pre": [{"name": "open-gate", "patch": {
                "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "gate"},
                "patch": "{\"data\": {\"open\": \"yes\"}}"}}],
            "onFailure": [{"name": "drop-flag", "delete": {
                "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "flag"}}}],
        })),
    )
    .await;
    let ss = wait_stage_failed(
        &h,
        "gated",
        "stage \"app\" pre-action: action \"open-gate\": ",
    )
    .await;
    let message = ready(&ss).unwrap().2;
    assert!(message.contains("gate"), "{message}");
    assert!(
        !exists(&h, "app-config").await,
        "nothing of the stage is applied"
    );
    assert!(
        exists(&h, "flag").await,
        "onFailure does not run for pre actions"
    );
    // The missing object appears; the back-off retry succeeds.
    put_cm(&h, "gate", json!({})).await;
    let ss = h.wait_stageset(NS, "gated", "Ready", succeeded).await;
    assert_eq!(cm_data(&h, "gate").await.unwrap()["open"], "yes");
    assert!(exists(&h, "app-config").await);
    assert!(exists(&h, "flag").await);
    assert_eq!(stage_entry(&ss).executed_actions, ["open-gate"]);
}

/// onFailure runs after every failure from the apply on, not once per
/// revision (docs/decisions.md 10): a failed verify, the same failure again
/// at the same revision, and an apply the API server refuses. Its own
/// failure is a Warning, never the stage's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_runs_on_every_failure() {
    let h = harness().await;
    app_source(&h, "r1", &[("web.yaml", &deployment(NS, "web"))]).await;
    put_cm(&h, "flag", json!({})).await;
    let on_failure = json!([
        {"name": "drop-flag", "delete": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "flag"}}},
        {"name": "hold", "wait": {"duration": "100ms"}},
        {"name": "page", "patch": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "pager"},
            "patch": "{\"data\": {\"paged\": \"yes\"}}"}},
    ]);
    h.stageset(NS, "flaky", one_stage(json!({"onFailure": on_failure})))
        .await;
    h.wait_exists("apps/v1", "Deployment", Some(NS), "web")
        .await;
    h.sim
        .set_failed("apps/v1", "Deployment", NS, "web")
        .unwrap();
    h.wait_ready_reason(NS, "flaky", "StageFailed", "stage \"app\" verify: ")
        .await;
    wait_gone(&h, "flag").await;
    // The second onFailure action fails (no pager ConfigMap): a Warning
    // event, the Ready condition still names the verify failure.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = event_reasons(&h, "flaky").await;
        if let Some((_, m)) = events.iter().find(|(r, _)| r == "OnFailureAction") {
            assert!(
                m.contains("stage \"app\" onFailure (after verify): action \"page\""),
                "{m}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no OnFailureAction event: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same failure at the same revision runs onFailure again.
    put_cm(&h, "flag", json!({})).await;
    let ss = request(&h, "flaky", "again").await;
    assert_eq!(ready(&ss).unwrap().1, "StageFailed");
    wait_gone(&h, "flag").await;
    // An apply the API server refuses (a ConfigMap with a malformed name).
    put_cm(&h, "flag", json!({})).await;
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Name\n  namespace: shop\n";
    let art = h.artifact("bad.tar.gz", &[("bad.yaml", bad)]);
    h.external_artifact(NS, "app", &art, "r2").await;
    h.wait_ready_reason(NS, "flaky", "StageFailed", "stage \"app\" apply: ")
        .await;
    wait_gone(&h, "flag").await;
}

/// A failing post action runs onFailure and keeps the stage from Ready;
/// the pre actions that succeeded are not repeated by the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_post_action_runs_on_failure_and_blocks_ready() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    put_cm(&h, "flag", json!({})).await;
    put_cm(&h, "counter", json!({})).await;
    h.stageset(
        NS,
        "smoke",
        one_stage(json!({
            "pre": [{"name": "drop-counter", "delete": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "counter"}}}],
            "post": [{"name": "smoke-test", "wait": {
                "target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "smoke"},
                "expr": "status.availableReplicas >= 1", "timeout": "1s"}}],
            "onFailure": [{"name": "drop-flag", "delete": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "flag"}}}],
        })),
    )
    .await;
    let ss = wait_stage_failed(
        &h,
        "smoke",
        "stage \"app\" post-action: action \"smoke-test\": ",
    )
    .await;
    assert_eq!(stage_entry(&ss).executed_actions, ["drop-counter"]);
    assert!(exists(&h, "app-config").await, "the stage was applied");
    wait_gone(&h, "flag").await;
    assert!(!exists(&h, "counter").await);
    // The pre action is in the revision ledger: recreated, its object stays.
    put_cm(&h, "counter", json!({})).await;
    h.sim
        .load(serde_yaml_ng::from_str(&deployment(NS, "smoke")).unwrap())
        .unwrap();
    h.set_ready("apps/v1", "Deployment", NS, "smoke");
    let ss = h.wait_stageset(NS, "smoke", "Ready", succeeded).await;
    assert_eq!(
        stage_entry(&ss).executed_actions,
        ["drop-counter", "smoke-test"]
    );
    assert!(
        exists(&h, "counter").await,
        "the pre action did not run twice"
    );
}

// --- scopes ---------------------------------------------------------------------

/// Revision scope: once per pinned revision; a new revision or a
/// `reconcile-stage` token for the stage runs the action again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_actions_run_once_per_revision_unless_forced() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    put_cm(&h, "flag", json!({})).await;
    h.stageset(
        NS,
        "rev",
        one_stage(json!({"pre": [{"name": "drop-flag", "delete": {
            "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "flag"}}}]})),
    )
    .await;
    let ss = h.wait_stageset(NS, "rev", "Ready", succeeded).await;
    assert!(!exists(&h, "flag").await);
    let entry = stage_entry(&ss);
    assert_eq!(entry.executed_actions, ["drop-flag"]);
    assert_eq!(entry.ledger_revision.as_deref(), Some("r1"));
    // Same revision, another pass: skipped.
    put_cm(&h, "flag", json!({})).await;
    let ss = request(&h, "rev", "t1").await;
    assert!(succeeded(&ss));
    assert!(exists(&h, "flag").await, "the action ran twice at r1");
    // A new revision runs it again.
    app_source(&h, "r2", &[]).await;
    let ss = h
        .wait_stageset(NS, "rev", "r2 applied", |ss| {
            succeeded(ss) && stage_entry(ss).ledger_revision.as_deref() == Some("r2")
        })
        .await;
    assert_eq!(stage_entry(&ss).executed_actions, ["drop-flag"]);
    assert!(!exists(&h, "flag").await);
    // A reconcile-stage token clears the stage's ledger once.
    put_cm(&h, "flag", json!({})).await;
    annotate(&h, "rev", "stages.metio.wtf/reconcile-stage", "app@force-1").await;
    h.wait_stageset(NS, "rev", "the force handled", |ss| {
        stage_entry(ss).last_handled_reconcile_at.as_deref() == Some("force-1")
    })
    .await;
    assert!(
        !exists(&h, "flag").await,
        "the forced stage re-ran its action"
    );
    // Handled: the same token does not force again.
    put_cm(&h, "flag", json!({})).await;
    request(&h, "rev", "t2").await;
    assert!(exists(&h, "flag").await);
}

/// Lifetime scope: once for the StageSet's name, across revisions, a
/// controller restart, and deleting and re-creating the StageSet (the
/// StageLedger has no owner and is adopted, with an event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_actions_run_once_ever() {
    let mut h = harness().await;
    app_source(&h, "r1", &[]).await;
    put_cm(&h, "flag", json!({})).await;
    let spec = one_stage(
        json!({"pre": [{"name": "seed", "scope": "Lifetime", "delete": {
        "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "flag"}}}]}),
    );
    h.stageset(NS, "once", spec.clone()).await;
    let ss = h.wait_stageset(NS, "once", "Ready", succeeded).await;
    assert!(!exists(&h, "flag").await);
    assert!(
        stage_entry(&ss).executed_actions.is_empty(),
        "not a revision action"
    );
    let l = ledger(&h, "once").await.expect("the StageLedger exists");
    assert!(l.metadata.owner_references.unwrap_or_default().is_empty());
    let done = l.status.unwrap().completed_actions;
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].stage.as_str(), done[0].action.as_str()),
        ("app", "seed")
    );
    // A new revision after a controller restart: not again.
    h.stop_controller();
    put_cm(&h, "flag", json!({})).await;
    app_source(&h, "r2", &[]).await;
    h.start_controller().await;
    h.wait_stageset(NS, "once", "r2 applied", |ss| {
        succeeded(ss) && stage_entry(ss).applied_revision.as_deref() == Some("r2")
    })
    .await;
    assert!(exists(&h, "flag").await, "a Lifetime action ran twice");
    // Deleted and re-created: the ledger is adopted.
    stagesets(&h)
        .delete("once", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stagesets(&h).get_opt("once").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the StageSet was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ledger(&h, "once").await.is_some(), "the ledger survives");
    h.stageset(NS, "once", spec).await;
    h.wait_stageset(NS, "once", "Ready", succeeded).await;
    assert!(exists(&h, "flag").await, "the adopted completion holds");
    let events = event_reasons(&h, "once").await;
    assert!(
        events.iter().any(|(r, _)| r == "LedgerAdopted"),
        "{events:?}"
    );
}

/// A Lifetime completion with a completionAnchor holds while the anchor
/// exists with the UID recorded; replaced, the action runs again (with a
/// LedgerInvalidated event). An anchor that is missing when the action
/// completes fails the action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_anchors_revoke_lifetime_completions() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    put_cm(&h, "flag", json!({})).await;
    h.stageset(
        NS,
        "anchored",
        one_stage(json!({"post": [{"name": "seed-db", "scope": "Lifetime",
            "completionAnchor": {"apiVersion": "v1", "kind": "ConfigMap", "name": "database"},
            "delete": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "flag"}}}]})),
    )
    .await;
    // No anchor yet: the action ran, but its completion cannot be recorded
    // (the retries soon escalate to ActionDirty: the action is pending).
    h.wait_stageset(NS, "anchored", "the anchor missing", |ss| {
        ready(ss).is_some_and(|(_, _, m)| m.contains(
            "action \"seed-db\": recording its completion: the completion anchor ConfigMap database does not exist",
        ))
    })
    .await;
    put_cm(&h, "database", json!({})).await;
    let uid = cms(&h).get("database").await.unwrap().metadata.uid.unwrap();
    annotate(
        &h,
        "anchored",
        "reconcile.fluxcd.io/requestedAt",
        "anchor-created",
    )
    .await;
    h.wait_stageset(NS, "anchored", "Ready", succeeded).await;
    let l = ledger(&h, "anchored").await.unwrap();
    let anchor = l.status.unwrap().completed_actions[0]
        .anchor
        .clone()
        .unwrap();
    assert_eq!(anchor.uid, uid);
    // Still there: a new pass skips it.
    put_cm(&h, "flag", json!({})).await;
    request(&h, "anchored", "t1").await;
    assert!(exists(&h, "flag").await);
    // The database is re-created (a new UID): the action runs again.
    put_cm(&h, "database", json!({})).await;
    let new_uid = cms(&h).get("database").await.unwrap().metadata.uid.unwrap();
    assert_ne!(new_uid, uid);
    request(&h, "anchored", "t2").await;
    wait_gone(&h, "flag").await;
    let events = event_reasons(&h, "anchored").await;
    let invalidated = events
        .iter()
        .find(|(r, _)| r == "LedgerInvalidated")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(invalidated.1.contains("seed-db"), "{}", invalidated.1);
    let done = ledger(&h, "anchored")
        .await
        .unwrap()
        .status
        .unwrap()
        .completed_actions;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].anchor.as_ref().unwrap().uid, new_uid);
}

/// `spec.baseline` of a StageLedger written before the StageSet: the named
/// Lifetime action counts as done (origin Baselined) and never runs; an
/// entry naming no Lifetime action is held and reported (BaselineValid
/// False/Unresolved, a BaselineInvalid event on the ledger). Editing the
/// ledger wakes the StageSet: fixing the entry resolves the condition
/// without waiting for the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_entries_adopt_completions_without_running_them() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    put_cm(&h, "flag", json!({})).await;
    let ledgers: Api<StageLedger> = Api::namespaced(h.client.clone(), NS);
    let body: StageLedger = serde_json::from_value(json!({
        "apiVersion": "stages.metio.wtf/v1", "kind": "StageLedger",
        "metadata": {"name": "adopted", "namespace": NS},
        "spec": {"baseline": [{"stage": "app", "action": "seed"}, {"stage": "app", "action": "ghost"}]}
    }))
    .unwrap();
    ledgers.create(&PostParams::default(), &body).await.unwrap();
    h.stageset(
        NS,
        "adopted",
        one_stage(
            json!({"pre": [{"name": "seed", "scope": "Lifetime", "delete": {
            "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "flag"}}}]}),
        ),
    )
    .await;
    h.wait_stageset(NS, "adopted", "Ready", succeeded).await;
    assert!(exists(&h, "flag").await, "a baselined action never runs");
    let status = ledger(&h, "adopted").await.unwrap().status.unwrap();
    assert_eq!(status.completed_actions.len(), 1);
    let done = &status.completed_actions[0];
    assert_eq!((done.stage.as_str(), done.action.as_str()), ("app", "seed"));
    assert_eq!(
        serde_json::to_value(done.origin).unwrap(),
        json!("Baselined")
    );
    let valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == "BaselineValid")
        .expect("a BaselineValid condition");
    assert_eq!(serde_json::to_value(valid.status).unwrap(), json!("False"));
    assert_eq!(valid.reason, "Unresolved");
    assert!(valid.message.contains("app/ghost"), "{}", valid.message);
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(h.client.clone(), NS)
        .list(
            &ListParams::default()
                .fields("involvedObject.kind=StageLedger,involvedObject.name=adopted"),
        )
        .await
        .unwrap()
        .items;
    let invalid = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("BaselineInvalid"))
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(
        invalid
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("app/ghost"),
        "{invalid:?}"
    );
    // The user drops the stray entry: the edit alone (the interval is an
    // hour) resolves the condition; the completion stays.
    ledgers
        .patch(
            "adopted",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"baseline": [{"stage": "app", "action": "seed"}]}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = ledger(&h, "adopted").await.unwrap().status.unwrap();
        let resolved = status
            .conditions
            .iter()
            .any(|c| c.type_ == "BaselineValid" && c.reason == "AllResolved");
        if resolved {
            assert_eq!(status.completed_actions.len(), 1);
            break;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exists(&h, "flag").await);
}

/// Five failed runs of a stage with a pending Lifetime action halt it with
/// ActionDirty: the action does not run again (not on a spec change, not
/// when its cause is fixed) until a requestedAt token resets the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_dirty_halts_until_a_reconcile_is_requested() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    let spec = |timeout: &str| {
        json!({"interval": "1h", "timeout": timeout, "stages": [{"name": "app", "sourceRef": {"name": "app"},
            "actions": {"pre": [{"name": "migrate-once", "scope": "Lifetime", "patch": {
                "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "schema"},
                "patch": "{\"data\": {\"migrated\": \"yes\"}}"}}]}}]})
    };
    h.stageset(NS, "dirty", spec("5m")).await;
    let ss = h
        .wait_ready_reason(NS, "dirty", "ActionDirty", "action \"migrate-once\"")
        .await;
    assert_eq!(ss.status.as_ref().unwrap().action_failure_count, Some(5));
    assert!(!exists(&h, "app-config").await);
    // The cause is fixed and the spec changes: still halted.
    put_cm(&h, "schema", json!({})).await;
    h.stageset(NS, "dirty", spec("6m")).await;
    let ss = h
        .wait_stageset(NS, "dirty", "the new generation halted", |ss| {
            let s = ss.status.as_ref().unwrap();
            s.observed_generation == ss.metadata.generation
                && ready(ss).is_some_and(|(_, r, m)| r == "ActionDirty" && m.contains("halted"))
        })
        .await;
    assert_eq!(ss.status.as_ref().unwrap().action_failure_count, Some(5));
    assert!(
        cm_data(&h, "schema")
            .await
            .unwrap()
            .get("migrated")
            .is_none()
    );
    // A requested reconcile clears the halt.
    annotate(&h, "dirty", "reconcile.fluxcd.io/requestedAt", "fixed").await;
    let ss = h.wait_stageset(NS, "dirty", "Ready", succeeded).await;
    assert_eq!(ss.status.as_ref().unwrap().action_failure_count, Some(0));
    assert_eq!(cm_data(&h, "schema").await.unwrap()["migrated"], "yes");
}

/// A failing action of a stage without a pending Lifetime action never
/// escalates to ActionDirty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_failures_do_not_escalate() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    h.stageset(
        NS,
        "plain",
        one_stage(json!({"pre": [{"name": "needs-gate", "patch": {
            "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "gate"},
            "patch": "{\"data\": {\"x\": \"y\"}}"}}]})),
    )
    .await;
    // Well past five back-off retries, still StageFailed.
    for token in ["a", "b", "c", "d", "e", "f"] {
        let ss = request(&h, "plain", token).await;
        assert_eq!(ready(&ss).unwrap().1, "StageFailed");
    }
    let ss = h.get_stageset(NS, "plain").await;
    assert!(ss.status.unwrap().action_failure_count.unwrap_or(0) == 0);
}

// --- verbs ----------------------------------------------------------------------

const WIDGET_CRD: &str = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
 "metadata": {"name": "widgets.example.com"},
 "spec": {"group": "example.com", "scope": "Namespaced",
  "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
  "versions": [{"name": "v1", "served": true, "storage": true,
   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}"#;

/// patch: a merge patch is a JSON merge patch (works on custom resources,
/// DECISIONS 10), json6902 a JSON patch; by name or by selector (every
/// match patched, none matching is success); a missing target fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_actions() {
    let h = harness().await;
    h.sim
        .load(serde_json::from_str(WIDGET_CRD).unwrap())
        .unwrap();
    h.sim
        .load(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": NS}, "spec": {"size": 1, "color": "red"}}))
        .unwrap();
    for (name, app) in [("data-a", "db"), ("data-b", "db"), ("logs", "other")] {
        h.sim
            .load(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
            .unwrap();
        // Bound (kube-sim plays the volume controller): only bound claims grow.
        h.set_ready("v1", "PersistentVolumeClaim", NS, name);
    }
    put_cm(&h, "svc-like", json!({"selector": "blue"})).await;
    app_source(&h, "r1", &[]).await;
    h.stageset(
        NS,
        "patches",
        one_stage(json!({"pre": [
            {"name": "grow", "patch": {"target": {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w"},
                "patch": "{\"spec\": {\"size\": 3, \"color\": null}}"}},
            {"name": "switch", "patch": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "svc-like"},
                "type": "merge", "patch": "{ \"data\": { \"selector\": \"green\" } }"}},
            {"name": "json", "patch": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "svc-like"},
                "type": "json6902", "patch": "- op: add\n  path: /data/extra\n  value: \"1\"\n"}},
            {"name": "grow-volumes", "patch": {"target": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "selector": {"matchLabels": {"app": "db"}}},
                "patch": "{ \"spec\": { \"resources\": { \"requests\": { \"storage\": \"5Gi\" } } } }"}},
            {"name": "nothing-matches", "patch": {"target": {"kind": "ConfigMap",
                "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["none"]}]}},
                "patch": "{\"data\": {\"x\": \"y\"}}"}},
        ]})),
    )
    .await;
    h.wait_stageset(NS, "patches", "Ready", succeeded).await;
    let w = h
        .get_opt("example.com/v1", "Widget", Some(NS), "w")
        .await
        .unwrap();
    assert_eq!(w.data["spec"], json!({"size": 3}), "a JSON merge patch");
    assert_eq!(
        cm_data(&h, "svc-like").await.unwrap(),
        json!({"selector": "green", "extra": "1"})
    );
    for (name, size) in [("data-a", "5Gi"), ("data-b", "5Gi"), ("logs", "1Gi")] {
        let pvc = h
            .get_opt("v1", "PersistentVolumeClaim", Some(NS), name)
            .await
            .unwrap();
        assert_eq!(
            pvc.data["spec"]["resources"]["requests"]["storage"], size,
            "{name}"
        );
    }
}

/// delete: missing is success; `cascade: Orphan` leaves the dependents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_actions() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    put_cm(&h, "legacy", json!({})).await;
    put_cm(&h, "old-config", json!({})).await;
    h.sim
        .load(json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "legacy-migration", "namespace": NS},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "m", "image": "busybox"}]}}}}))
        .unwrap();
    h.stageset(
        NS,
        "deletes",
        one_stage(json!({"pre": [
            {"name": "drop-legacy", "delete": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "legacy"}}},
            {"name": "drop-missing", "delete": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "never-was"}}},
            {"name": "drop-job", "delete": {"target": {"apiVersion": "batch/v1", "kind": "Job", "name": "legacy-migration"},
                "cascade": "Orphan"}},
        ], "post": [
            {"name": "drop-old-config", "delete": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "old-config"}}},
        ]})),
    )
    .await;
    let ss = h.wait_stageset(NS, "deletes", "Ready", succeeded).await;
    assert_eq!(
        stage_entry(&ss).executed_actions,
        ["drop-legacy", "drop-missing", "drop-job", "drop-old-config"]
    );
    assert!(!exists(&h, "legacy").await);
    assert!(!exists(&h, "old-config").await);
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while jobs.get_opt("legacy-migration").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the Job was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// wait: a duration, or a CEL expression polled on a target until true,
/// failing at its timeout with the last evaluation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_actions() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    h.sim
        .load(serde_yaml_ng::from_str(&deployment(NS, "db")).unwrap())
        .unwrap();
    h.stageset(
        NS,
        "waits",
        one_stage(json!({"pre": [
            {"name": "settle", "wait": {"duration": "1s"}},
            {"name": "until-db", "wait": {"target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "db"},
                "expr": "status.availableReplicas >= 1", "timeout": "5m"}},
        ], "post": [{"name": "cool-down", "wait": {"duration": "200ms"}}]})),
    )
    .await;
    // The stage is applied only after the expression held: the Deployment
    // was available before the stage's ConfigMap was created.
    let seen: Seen = Arc::default();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(h.client.clone(), NS);
    watch(&h, deployments, "db", seen.clone(), |d| {
        (d.status.as_ref()?.available_replicas? >= 1).then(|| "db available".into())
    });
    watch(&h, cms(&h), "app-config", seen.clone(), |_: &ConfigMap| {
        Some("stage applied".into())
    });
    h.set_ready("apps/v1", "Deployment", NS, "db");
    let ss = h.wait_stageset(NS, "waits", "Ready", succeeded).await;
    assert_eq!(
        stage_entry(&ss).executed_actions,
        ["settle", "until-db", "cool-down"]
    );
    let mut order = seen.lock().unwrap().clone();
    order.sort();
    let order: Vec<&str> = order.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(order, ["db available", "stage applied"]);
    // A timeout fails the action. The spec changes first and is observed
    // at r1 (whose ledger holds "until-db", so nothing runs); only then does
    // the revision move, so no pass of the old spec can record "until-db"
    // for r2.
    h.sim
        .load(serde_yaml_ng::from_str(&deployment(NS, "db2")).unwrap())
        .unwrap();
    h.stageset(
        NS,
        "waits",
        json!({"interval": "1h", "stages": [{"name": "app", "sourceRef": {"name": "app"}, "actions": {"pre": [
            {"name": "until-db", "timeout": "2s", "wait": {"target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "db2"},
                "expr": "status.availableReplicas >= 1"}}]}}]}),
    )
    .await;
    h.wait_stageset(NS, "waits", "the new spec observed and Ready", |ss| {
        succeeded(ss) && ss.status.as_ref().unwrap().observed_generation == ss.metadata.generation
    })
    .await;
    app_source(&h, "r2", &[]).await;
    let ss = h
        .wait_ready_reason(
            NS,
            "waits",
            "StageFailed",
            "action \"until-db\": timed out after 2s",
        )
        .await;
    assert_eq!(stage_entry(&ss).applied_revision.as_deref(), Some("r2"));
}

/// job: Jobs rendered from a source artifact at run time, named after the
/// job artifact's revision, awaited, and deleted afterwards; a failed Job
/// fails the action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_actions() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: migrate:1\n";
    let art = h.artifact(
        "jobs-1.tar.gz",
        &[("jobs/migrate.yaml", job), ("README.md", "not a manifest")],
    );
    h.external_artifact(NS, "migrations", &art, "m1").await;
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), NS);
    let created = record_jobs(&h);
    h.stageset(
        NS,
        "jobs",
        one_stage(
            json!({"pre": [{"name": "migrate", "timeout": "5m", "retries": 1,
            "job": {"sourceRef": {"name": "migrations"}, "path": "./jobs"}}]}),
        ),
    )
    .await;
    // The Job appears with the revision suffix; kube-sim plays the Job
    // controller and completes it.
    let name = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = jobs.list(&ListParams::default()).await.unwrap();
            if let Some(j) = list.items.into_iter().next() {
                break j.metadata.name.unwrap();
            }
            assert!(Instant::now() < deadline, "no Job was created");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(
        name.starts_with("migrate-") && name.len() == "migrate-".len() + 8,
        "{name}"
    );
    assert!(
        !exists(&h, "app-config").await,
        "the stage waits for the Job"
    );
    h.set_ready("batch/v1", "Job", NS, &name);
    h.wait_stageset(NS, "jobs", "Ready", succeeded).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while jobs.get_opt(&name).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the Job was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new job artifact revision: a new Job name; it fails, so does the action.
    let art = h.artifact("jobs-2.tar.gz", &[("jobs/migrate.yaml", job)]);
    h.external_artifact(NS, "migrations", &art, "m2").await;
    app_source(&h, "r2", &[]).await;
    let second = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = jobs.list(&ListParams::default()).await.unwrap();
            if let Some(j) = list
                .items
                .into_iter()
                .find(|j| j.metadata.name.as_deref() != Some(&name))
            {
                break j.metadata.name.unwrap();
            }
            assert!(Instant::now() < deadline, "no second Job was created");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_ne!(second, name);
    h.sim.set_failed("batch/v1", "Job", NS, &second).unwrap();
    h.wait_ready_reason(NS, "jobs", "StageFailed", "action \"migrate\": ")
        .await;
    assert!(created.lock().unwrap().contains(&name));
}

/// The job shapes users write: a whole artifact or a path, a timeout, and
/// run-once Jobs after the stage (one anchored to an object the stage
/// created); every Job is created, completes and is cleaned up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_action_shapes() {
    let h = Harness::start_with(HarnessOptions {
        auto_ready: Some(Duration::from_millis(50)),
        ..Default::default()
    })
    .await;
    h.namespace(NS).await;
    app_source(&h, "r1", &[]).await;
    job_source(&h, "maintenance-on", "maintenance-on", "").await;
    job_source(&h, "schema", "schema", "jobs").await;
    job_source(&h, "warm", "warm-cache", "").await;
    job_source(&h, "install", "install-db", "").await;
    job_source(&h, "seed", "seed-db", "").await;
    let created = record_jobs(&h);
    h.stageset(
        NS,
        "moodle",
        one_stage(json!({
            "pre": [
                {"name": "enable-maintenance-mode", "job": {"sourceRef": {"name": "maintenance-on"}}},
                {"name": "migrate", "job": {"sourceRef": {"name": "schema"}, "path": "./jobs"}},
                {"name": "warm", "timeout": "5m", "job": {"sourceRef": {"name": "warm"}}}],
            "post": [
                {"name": "install-database", "scope": "Lifetime", "job": {"sourceRef": {"name": "install"}}},
                {"name": "seed-database", "scope": "Lifetime",
                    "completionAnchor": {"apiVersion": "v1", "kind": "ConfigMap", "name": "app-config"},
                    "job": {"sourceRef": {"name": "seed"}}}],
        })),
    )
    .await;
    let ss = h.wait_stageset(NS, "moodle", "Ready", succeeded).await;
    assert_eq!(
        stage_entry(&ss).executed_actions,
        ["enable-maintenance-mode", "migrate", "warm"]
    );
    wait_jobs_created(
        &created,
        &[
            "maintenance-on",
            "schema",
            "warm-cache",
            "install-db",
            "seed-db",
        ],
    )
    .await;
    let done = ledger(&h, "moodle")
        .await
        .expect("the StageLedger exists")
        .status
        .unwrap()
        .completed_actions;
    let names: Vec<&str> = done.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(names, ["install-database", "seed-database"]);
    assert!(done[0].anchor.is_none());
    let uid = cms(&h)
        .get("app-config")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(done[1].anchor.as_ref().unwrap().uid, uid);
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the Jobs were not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// apply: objects from a source artifact applied with the owner labels but
/// no stage label, never recorded in the inventory (so never pruned), and
/// with `wait: true` awaited until healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_actions() {
    let h = harness().await;
    app_source(&h, "r1", &[]).await;
    let canary = h.artifact(
        "canary.tar.gz",
        &[
            ("canary/web.yaml", &deployment(NS, "canary")),
            ("canary/cm.yaml", &configmap(NS, "canary-config", "c")),
        ],
    );
    h.external_artifact(NS, "canary", &canary, "c1").await;
    // Without a path: the whole artifact.
    let whole = h.artifact(
        "whole.tar.gz",
        &[("whole.yaml", &configmap(NS, "whole-config", "w"))],
    );
    h.external_artifact(NS, "whole", &whole, "w1").await;
    h.stageset(
        NS,
        "applies",
        one_stage(json!({"pre": [
            {"name": "canary", "apply": {"sourceRef": {"name": "canary"}, "path": "./canary", "wait": true}},
            {"name": "whole", "apply": {"sourceRef": {"name": "whole"}, "wait": true}}]})),
    )
    .await;
    let web = h
        .wait_exists("apps/v1", "Deployment", Some(NS), "canary")
        .await;
    assert!(
        !exists(&h, "app-config").await,
        "the apply waits for health"
    );
    let labels = web.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("stages.metio.wtf/name").map(String::as_str),
        Some("applies")
    );
    assert_eq!(
        labels.get("stages.metio.wtf/namespace").map(String::as_str),
        Some(NS)
    );
    assert!(!labels.contains_key("stages.metio.wtf/stage"), "{labels:?}");
    h.set_ready("apps/v1", "Deployment", NS, "canary");
    h.wait_stageset(NS, "applies", "Ready", succeeded).await;
    assert_eq!(cm_data(&h, "whole-config").await.unwrap()["value"], "w");
    // Not in the inventory: a new revision without the action prunes nothing.
    let inventories = h
        .dynamic("stages.metio.wtf/v1", "StageInventory", Some(NS))
        .await
        .list(&ListParams::default())
        .await
        .unwrap();
    let text = serde_json::to_string(&inventories.items).unwrap();
    assert!(text.contains("app-config"), "{text}");
    assert!(!text.contains("canary"), "{text}");
    app_source(&h, "r2", &[]).await;
    h.stageset(NS, "applies", one_stage(json!({}))).await;
    h.wait_stageset(NS, "applies", "r2 applied", |ss| {
        succeeded(ss) && stage_entry(ss).applied_revision.as_deref() == Some("r2")
    })
    .await;
    assert!(
        exists(&h, "canary-config").await,
        "transient objects are never pruned"
    );
}

// --- identity and onRollback -----------------------------------------------------

/// Every cluster call of a stage's action is made as the stage's
/// ServiceAccount: a tenant that may not touch Secrets cannot patch one
/// through an action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_run_as_the_tenant() {
    let h = harness().await;
    for obj in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": NS}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "deployer", "namespace": NS},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "deployer", "namespace": NS},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
               "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": NS}]}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-creds", "namespace": NS}, "stringData": {"k": "v"}}),
    ] {
        h.sim.load(obj).unwrap();
    }
    app_source(&h, "r1", &[]).await;
    h.stageset(
        NS,
        "tenant",
        json!({"interval": "1h", "serviceAccountName": "deployer", "stages": [{"name": "app", "sourceRef": {"name": "app"},
            "actions": {"pre": [{"name": "rotate", "patch": {"target": {"apiVersion": "v1", "kind": "Secret", "name": "db-creds"},
                "patch": "{\"metadata\": {\"labels\": {\"rotated\": \"yes\"}}}"}}]}}]}),
    )
    .await;
    let ss = h
        .wait_ready_reason(NS, "tenant", "RBACDenied", "action \"rotate\"")
        .await;
    let message = ready(&ss).unwrap().2;
    assert!(
        message.contains("system:serviceaccount:shop:deployer"),
        "{message}"
    );
    let secret = h
        .get_opt("v1", "Secret", Some(NS), "db-creds")
        .await
        .unwrap();
    assert!(
        !secret
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("rotated")
    );
    assert!(!exists(&h, "app-config").await);
}

/// onRollback runs after a whole-run rollback, as the StageSet-level
/// identity, every time; its failure is a Warning event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rollback_runs_after_a_rollback() {
    // Jobs complete by themselves here.
    let h = Harness::start_with(HarnessOptions {
        auto_ready: Some(Duration::from_millis(50)),
        ..Default::default()
    })
    .await;
    h.namespace(NS).await;
    app_source(&h, "r1", &[]).await;
    put_cm(&h, "maintenance", json!({})).await;
    job_source(&h, "maintenance-off", "maintenance-off", "").await;
    job_source(&h, "announce", "announce", "").await;
    let created = record_jobs(&h);
    h.stageset(
        NS,
        "rb",
        json!({"interval": "1h", "rollbackOnFailure": true,
            "stages": [{"name": "app", "sourceRef": {"name": "app"},
                "readyChecks": {"exprs": [{"apiVersion": "v1", "kind": "ConfigMap", "current": "true",
                    "failed": "has(metadata.annotations) && 'broken' in metadata.annotations"}]}}],
            "onRollback": [
                {"name": "drop-maintenance", "delete": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "maintenance"}}},
                {"name": "settle", "wait": {"duration": "100ms"}},
                {"name": "disable-maintenance-mode", "timeout": "5m", "job": {"sourceRef": {"name": "maintenance-off"}}},
                {"name": "announce", "job": {"sourceRef": {"name": "announce"}}},
                {"name": "notify", "patch": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "pager"},
                    "patch": "{\"data\": {\"x\": \"y\"}}"}}]}),
    )
    .await;
    h.wait_stageset(NS, "rb", "Ready", succeeded).await;
    assert!(
        exists(&h, "maintenance").await,
        "no rollback, no onRollback"
    );
    assert!(created.lock().unwrap().is_empty(), "no rollback, no Jobs");
    // "broken" fails its ready check: the run rolls back to r1, then
    // onRollback runs.
    let broken = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\n  namespace: shop\n  annotations:\n    broken: \"yes\"\ndata:\n  value: broken\n";
    let art = h.artifact("app-broken.tar.gz", &[("cm.yaml", broken)]);
    h.external_artifact(NS, "app", &art, "broken").await;
    wait_gone(&h, "maintenance").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = event_reasons(&h, "rb").await;
        let rolled = events.iter().any(|(r, _)| r == "RolledBack");
        let warned = events
            .iter()
            .find(|(r, _)| r == "OnRollbackAction")
            .map(|(_, m)| m.clone());
        if rolled && let Some(m) = warned {
            assert!(m.contains("onRollback: action \"notify\""), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "events: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The Jobs ran (and completed: the last action came after them).
    wait_jobs_created(&created, &["maintenance-off", "announce"]).await;
    // The retry passes apply "broken" again and roll back again, so the
    // object alternates: wait for the restored r1 rather than read it once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cm_data(&h, "app-config").await.unwrap()["value"] != "r1" {
        assert!(Instant::now() < deadline, "r1 was never restored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every rollback runs it again (no ledger).
    put_cm(&h, "maintenance", json!({})).await;
    request(&h, "rb", "again").await;
    wait_gone(&h, "maintenance").await;
}

// --- corpus coverage -------------------------------------------------------------

/// Every action shape (hook, verb, the verb's fields, the common fields)
/// in the admitted corpus files, and the test that runs that shape against
/// kube-sim (http in tests/outbound_net.rs, in the private network
/// namespace).
const COVERED: &[(&str, &str)] = &[
    (
        "onFailure delete [target] []",
        "on_failure_runs_on_every_failure",
    ),
    (
        "onFailure http [method, url] []",
        "failing_http_actions_retry_only_what_may_heal",
    ),
    (
        "onFailure http [url] []",
        "failing_http_actions_retry_only_what_may_heal",
    ),
    (
        "onFailure wait [duration] []",
        "on_failure_runs_on_every_failure",
    ),
    (
        "onRollback job [sourceRef] []",
        "on_rollback_runs_after_a_rollback",
    ),
    (
        "onRollback job [sourceRef] [timeout]",
        "on_rollback_runs_after_a_rollback",
    ),
    (
        "onRollback wait [duration] []",
        "on_rollback_runs_after_a_rollback",
    ),
    ("post delete [target] []", "delete_actions"),
    (
        "post http [expectedStatus, headersFrom, method, url] []",
        "every_http_shape_users_write_is_delivered",
    ),
    (
        "post http [expectedStatus, method, url] []",
        "every_http_shape_users_write_is_delivered",
    ),
    (
        "post http [expectedStatus, method, url] [retries]",
        "every_http_shape_users_write_is_delivered",
    ),
    (
        "post http [expectedStatus, url] [retries]",
        "every_http_shape_users_write_is_delivered",
    ),
    (
        "post http [method, url] []",
        "every_http_shape_users_write_is_delivered",
    ),
    (
        "post job [sourceRef] [completionAnchor, scope]",
        "job_action_shapes",
    ),
    ("post job [sourceRef] [scope]", "job_action_shapes"),
    (
        "post http [expectedStatus, url] []",
        "every_http_shape_users_write_is_delivered",
    ),
    (
        "post http [url] [scope]",
        "version_and_lifetime_scoped_http_actions_run_once",
    ),
    (
        "post http [url] [completionAnchor, scope]",
        "version_and_lifetime_scoped_http_actions_run_once",
    ),
    ("post wait [duration] []", "wait_actions"),
    ("pre apply [path, sourceRef, wait] []", "apply_actions"),
    ("pre apply [sourceRef, wait] []", "apply_actions"),
    ("pre delete [cascade, target] []", "delete_actions"),
    ("pre delete [target] []", "delete_actions"),
    (
        "pre http [bodyFrom, expectedStatus, headersFrom, method, url] []",
        "stage_http_actions_deliver_method_headers_and_body",
    ),
    (
        "pre http [bodyFrom, url] []",
        "every_http_shape_users_write_is_delivered",
    ),
    (
        "pre http [url] [scope]",
        "every_http_shape_users_write_is_delivered",
    ),
    ("pre job [path, sourceRef] []", "job_action_shapes"),
    (
        "pre job [path, sourceRef] [retries, timeout]",
        "job_actions",
    ),
    ("pre job [sourceRef] []", "job_action_shapes"),
    (
        "pre job [sourceRef] [scope]",
        "version_scoped_jobs_run_once_per_version",
    ),
    ("pre job [sourceRef] [timeout]", "job_action_shapes"),
    (
        "pre patch [patch, target, target.apiVersion, target.kind, target.name] []",
        "pre_apply_ready_post_run_in_order",
    ),
    (
        "pre patch [patch, target, target.apiVersion, target.kind, target.selector] []",
        "patch_actions",
    ),
    (
        "pre patch [patch, target, type, target.apiVersion, target.kind, target.name] []",
        "patch_actions",
    ),
    ("pre wait [duration] []", "wait_actions"),
    ("pre wait [expr, target, timeout] []", "wait_actions"),
];

/// The shape of one action as [`COVERED`] spells it.
fn shape(hook: &str, action: &serde_json::Map<String, Value>) -> String {
    const VERBS: [&str; 6] = ["http", "job", "apply", "patch", "delete", "wait"];
    let verb = *VERBS
        .iter()
        .find(|v| action.contains_key(**v))
        .unwrap_or_else(|| panic!("an action without a verb: {action:?}"));
    let body = action[verb].as_object().unwrap();
    let mut fields: Vec<String> = body.keys().cloned().collect();
    fields.sort();
    if verb == "patch" {
        let mut target: Vec<String> = body["target"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| format!("target.{k}"))
            .collect();
        target.sort();
        fields.extend(target);
    }
    let mut common: Vec<&str> = action
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "name" && *k != verb)
        .collect();
    common.sort();
    format!(
        "{hook} {verb} [{}] [{}]",
        fields.join(", "),
        common.join(", ")
    )
}

/// The action shapes of the corpus' admitted StageSets, each with a file
/// that uses it.
fn corpus_shapes(valid: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let refused: BTreeSet<&str> = corpus::NOT_SUPPORTED_YET.iter().map(|(f, _)| *f).collect();
    let mut shapes = std::collections::BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(valid)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if refused.contains(file.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let Ok(doc) = <Value as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            if doc["kind"] != "StageSet" {
                continue;
            }
            let mut actions: Vec<(String, &Value)> = Vec::new();
            for a in doc["spec"]["onRollback"].as_array().into_iter().flatten() {
                actions.push(("onRollback".into(), a));
            }
            for stage in doc["spec"]["stages"].as_array().into_iter().flatten() {
                for (hook, list) in stage["actions"].as_object().into_iter().flatten() {
                    for a in list.as_array().into_iter().flatten() {
                        actions.push((hook.clone(), a));
                    }
                }
            }
            for (hook, a) in actions {
                shapes
                    .entry(shape(&hook, a.as_object().unwrap()))
                    .or_insert_with(|| file.clone());
            }
        }
    }
    shapes
}

/// Every action shape the corpus admits runs in a test here or in
/// tests/outbound_net.rs, and [`COVERED`] lists no shape the corpus lacks.
#[test]
fn every_corpus_action_shape_runs_in_a_test() {
    let Some(reference) = corpus::reference("the corpus action shapes") else {
        return;
    };
    let shapes = corpus_shapes(&reference.join("corpus/examples/valid"));
    assert!(shapes.len() >= 30, "{shapes:?}");
    let sources = [include_str!("actions.rs"), include_str!("outbound_net.rs")];
    let covered: std::collections::BTreeMap<&str, &str> = COVERED.iter().copied().collect();
    for (shape, file) in &shapes {
        let test = covered
            .get(shape.as_str())
            .unwrap_or_else(|| panic!("{file}: no test runs the action shape {shape}"));
        let declared = format!("async fn {test}()");
        assert!(
            sources.iter().any(|s| s.contains(&declared)),
            "{shape}: no test {test}"
        );
    }
    for (shape, _) in COVERED {
        assert!(
            shapes.contains_key(*shape),
            "COVERED names {shape}, which no admitted corpus file uses"
        );
    }
}

/// A Version-scoped pre job runs once per version: not for the baseline,
/// once for an upgrade, not again for a new revision at that version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_scoped_jobs_run_once_per_version() {
    let h = Harness::start_with(HarnessOptions {
        auto_ready: Some(Duration::from_millis(50)),
        ..Default::default()
    })
    .await;
    h.namespace(NS).await;
    app_source(&h, "r1", &[]).await;
    job_source(&h, "db-upgrade", "db-upgrade", "").await;
    let created = record_jobs(&h);
    let spec = |version: &str| {
        json!({"interval": "1h", "version": {"value": version},
            "stages": [{"name": "app", "sourceRef": {"name": "app"}, "actions": {"pre": [
                {"name": "db-upgrade", "scope": "Version", "job": {"sourceRef": {"name": "db-upgrade"}}}]}}]})
    };
    let at = |version: &'static str, revision: &'static str| {
        move |ss: &StageSet| {
            let status = ss.status.as_ref();
            ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
                && status.and_then(|s| s.version.as_deref()) == Some(version)
                && status.and_then(|s| s.last_applied_revisions.get("shop/app").map(String::as_str))
                    == Some(revision)
        }
    };
    let upgrades = |created: &Arc<Mutex<BTreeSet<String>>>| {
        created
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.starts_with("db-upgrade-"))
            .count()
    };
    h.stageset(NS, "versioned", spec("1.0.0")).await;
    h.wait_stageset(NS, "versioned", "the baseline", at("1.0.0", "r1"))
        .await;
    assert_eq!(
        upgrades(&created),
        0,
        "the baseline runs no Version-scoped job"
    );
    h.stageset(NS, "versioned", spec("1.1.0")).await;
    h.wait_stageset(NS, "versioned", "the upgrade", at("1.1.0", "r1"))
        .await;
    wait_jobs_created(&created, &["db-upgrade"]).await;
    app_source(&h, "r2", &[]).await;
    h.wait_stageset(NS, "versioned", "r2 at 1.1.0", at("1.1.0", "r2"))
        .await;
    assert_eq!(upgrades(&created), 1, "one job for version 1.1.0");
}
