//! Version tracking end to end (delivery.md §5.4.1–§5.4.6, R12, R13, R22):
//! the desired version from `value`, `fromArtifact` and `fromObject`, the
//! baseline, upgrades, the Version-scoped action ledger, downgrades with and
//! without `allowDowngrade`, `rollback-to`, approvals, the major-bump
//! coverage rule, `InvalidVersion`, and `dependsOn.minVersion` on the
//! recorded version. Each test has its own kube-sim and namespace.

#![recursion_limit = "256"]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use stageset_controller::api::StageSet;
use support::*;

const NS: &str = "shop";

async fn harness() -> Harness {
    let h = Harness::start().await;
    h.namespace(NS).await;
    h
}

/// Publishes revision `revision` of the `app` source: the app's ConfigMap
/// plus `extra` files.
async fn publish(h: &Harness, revision: &str, extra: &[(&str, &str)]) {
    let cm = configmap(NS, "app-config", revision);
    let mut files = vec![("cm.yaml", cm.as_str())];
    files.extend_from_slice(extra);
    let art = h.artifact(&format!("app-{revision}.tar.gz"), &files);
    h.external_artifact(NS, "app", &art, revision).await;
}

async fn cm_data(h: &Harness, name: &str) -> Option<Value> {
    let cm = Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .get_opt(name)
        .await
        .unwrap()?;
    Some(serde_json::to_value(cm.data.unwrap_or_default()).unwrap())
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

fn version_of(ss: &StageSet) -> Option<String> {
    ss.status.as_ref()?.version.clone()
}

fn succeeded_at(version: &'static str) -> impl Fn(&StageSet) -> bool {
    move |ss| {
        ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
            && version_of(ss).as_deref() == Some(version)
    }
}

/// The StageSet's events in the order they were written (kube-sim's
/// resourceVersions only grow; a list is not in creation order).
async fn events(h: &Harness, name: &str) -> Vec<(String, String)> {
    let mut all = h.events(NS, name).await;
    all.sort_by_key(|e| {
        e.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default()
    });
    all.into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Waits until an event with `reason` whose message contains `text` exists.
async fn wait_event(h: &Harness, name: &str, reason: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = events(h, name).await;
        if all.iter().any(|(r, m)| r == reason && m.contains(text)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} event with {text:?}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A patch action stamping `key` into the `marker` ConfigMap.
fn stamp(name: &str, key: &str, scope: &str) -> Value {
    json!({"name": name, "scope": scope, "patch": {
        "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "marker"},
        "patch": format!("{{\"data\": {{\"{key}\": \"yes\"}}}}")}})
}

fn spec(version: Value) -> Value {
    json!({"interval": "1h", "version": version, "stages": [{"name": "app", "sourceRef": {"name": "app"},
        "actions": {"post": [stamp("announce", "announced", "Version"), stamp("every-revision", "revision", "Revision")]}}]})
}

/// The baseline records the version without running Version-scoped
/// actions; an upgrade runs them once; a new revision at the same version
/// skips them (with an event); a `reset-scope` token runs them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_upgrade_and_the_version_ledger() {
    let h = harness().await;
    h.sim
        .load(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "marker", "namespace": NS}, "data": {}}))
        .unwrap();
    publish(&h, "r1", &[]).await;
    h.stageset(NS, "web", spec(json!({"value": "v1.0"}))).await;
    let ss = h
        .wait_stageset(NS, "web", "baselined", succeeded_at("1.0.0"))
        .await;
    let stage = &ss.status.as_ref().unwrap().stages[0];
    assert_eq!(stage.ledger_version.as_deref(), Some("1.0.0"));
    assert_eq!(stage.executed_version_actions, ["announce"]);
    assert_eq!(
        cm_data(&h, "marker").await.unwrap(),
        json!({"revision": "yes"}),
        "the baseline runs no Version-scoped action"
    );
    wait_event(
        &h,
        "web",
        "MigrationsBaselined",
        "baselined at version 1.0.0",
    )
    .await;

    // An upgrade: the Version-scoped action runs once.
    h.stageset(NS, "web", spec(json!({"value": "1.1.0"}))).await;
    h.wait_stageset(NS, "web", "upgraded", succeeded_at("1.1.0"))
        .await;
    assert_eq!(cm_data(&h, "marker").await.unwrap()["announced"], "yes");

    // A new revision at the same version: carried over, reported skipped.
    Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .patch(
            "marker",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": null})),
        )
        .await
        .unwrap();
    publish(&h, "r2", &[]).await;
    // (A pass writes its stage's progress before it is done: wait for the
    // revision of a completed pass.)
    h.wait_stageset(NS, "web", "r2", |ss| {
        succeeded_at("1.1.0")(ss)
            && ss
                .status
                .as_ref()
                .unwrap()
                .last_applied_revisions
                .get("shop/app")
                .map(String::as_str)
                == Some("r2")
    })
    .await;
    assert_eq!(
        cm_data(&h, "marker").await.unwrap_or(json!({})),
        json!({"revision": "yes"}),
        "only the Revision-scoped action ran again"
    );
    wait_event(
        &h,
        "web",
        "ActionSkipped",
        "stage \"app\" action \"announce\": skipped at revision r2; it already ran for version 1.1.0",
    )
    .await;

    // reset-scope: every version ledger starts empty once.
    annotate(&h, "web", "stages.metio.wtf/reset-scope", "again").await;
    annotate(&h, "web", "reconcile.fluxcd.io/requestedAt", "t1").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while cm_data(&h, "marker").await.unwrap_or(json!({}))["announced"] != "yes" {
        assert!(
            Instant::now() < deadline,
            "reset-scope did not run the action again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ss = h
        .wait_stageset(NS, "web", "the token handled", |ss| {
            ss.status
                .as_ref()
                .and_then(|s| s.last_handled_reset_scope.as_deref())
                == Some("again")
                && succeeded_at("1.1.0")(ss)
        })
        .await;
    assert_eq!(
        ss.status.unwrap().stages[0].executed_version_actions,
        ["announce"]
    );
}

/// A lower version is refused without `allowDowngrade` and nothing is
/// applied; with it (or through `rollback-to`) the version goes down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrades_need_allow_downgrade_and_rollback_to_engages_them() {
    let h = harness().await;
    publish(&h, "r1", &[]).await;
    let plain = |version: &str, extra: Value| {
        let mut v = json!({"value": version});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        json!({"interval": "1h", "version": v, "stages": [{"name": "app", "sourceRef": {"name": "app"}}]})
    };
    h.stageset(NS, "web", plain("1.2.0", json!({}))).await;
    h.wait_stageset(NS, "web", "1.2.0", succeeded_at("1.2.0"))
        .await;
    // Down to 1.1.0: refused, and a new revision is not applied either.
    h.stageset(NS, "web", plain("1.1.0", json!({}))).await;
    let refused = "the desired version 1.1.0 is below the deployed version 1.2.0; set spec.version.allowDowngrade: true to permit a downgrade";
    h.wait_ready_reason(NS, "web", "DowngradeNotAllowed", refused)
        .await;
    publish(&h, "r2", &[]).await;
    h.request_reconcile(NS, "web", "t1", |ss| {
        ready(ss).is_some_and(|(_, r, m)| r == "DowngradeNotAllowed" && m == refused)
    })
    .await;
    assert_eq!(cm_data(&h, "app-config").await.unwrap()["value"], "r1");
    // Allowed: down it goes.
    h.stageset(NS, "web", plain("1.1.0", json!({"allowDowngrade": true})))
        .await;
    h.wait_stageset(NS, "web", "1.1.0", succeeded_at("1.1.0"))
        .await;
    assert_eq!(cm_data(&h, "app-config").await.unwrap()["value"], "r2");
    // rollback-to below the deployed version replaces the desired one...
    annotate(&h, "web", "stages.metio.wtf/rollback-to", "1.0.0").await;
    h.wait_stageset(NS, "web", "rolled back to 1.0.0", succeeded_at("1.0.0"))
        .await;
    // ... and expires once reached: a higher value is the desired one again.
    h.stageset(NS, "web", plain("1.3.0", json!({"allowDowngrade": true})))
        .await;
    h.wait_stageset(NS, "web", "1.3.0", succeeded_at("1.3.0"))
        .await;
}

/// `approvalMode: Always` holds a real change (not the baseline) until the
/// exact version is approved; nothing is applied meanwhile.
/// `requireMigrationCoverage` refuses a major bump no migration covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_and_major_bumps() {
    let h = harness().await;
    publish(&h, "r1", &[]).await;
    let versioned = |version: &str| {
        json!({"interval": "1h", "version": {"value": version, "approvalMode": "Always", "requireMigrationCoverage": true},
            "stages": [{"name": "app", "sourceRef": {"name": "app"}}]})
    };
    h.stageset(NS, "web", versioned("1.0.0")).await;
    h.wait_stageset(NS, "web", "the baseline is not held", succeeded_at("1.0.0"))
        .await;
    h.stageset(NS, "web", versioned("1.1.0")).await;
    h.wait_ready_reason(NS, "web", "AwaitingApproval", "").await;
    // A new revision meanwhile is not applied.
    publish(&h, "r2", &[]).await;
    annotate(&h, "web", "reconcile.fluxcd.io/requestedAt", "t0").await;
    let ss = h
        .wait_stageset(NS, "web", "a held pass with r2", |ss| {
            ss.status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some("t0")
                && ready(ss).is_some_and(|(_, r, _)| r == "AwaitingApproval")
        })
        .await;
    assert_eq!(
        ss.status
            .as_ref()
            .unwrap()
            .last_attempted_revisions
            .get("shop/app")
            .map(String::as_str),
        Some("r2")
    );
    let ss = h
        .wait_ready_reason(
            NS,
            "web",
            "AwaitingApproval",
            "version 1.1.0 (deployed: 1.0.0) waits for approval: kubectl -n shop annotate stageset/web --overwrite stages.metio.wtf/approved-version=1.1.0",
        )
        .await;
    assert_eq!(
        ss.status.as_ref().unwrap().pending_version.as_deref(),
        Some("1.1.0")
    );
    assert_eq!(cm_data(&h, "app-config").await.unwrap()["value"], "r1");
    // An approval of another version does not count.
    annotate(&h, "web", "stages.metio.wtf/approved-version", "1.0.5").await;
    h.request_reconcile(NS, "web", "t1", |ss| {
        ready(ss).is_some_and(|(_, r, _)| r == "AwaitingApproval")
    })
    .await;
    annotate(&h, "web", "stages.metio.wtf/approved-version", "1.1.0").await;
    let ss = h
        .wait_stageset(NS, "web", "approved", succeeded_at("1.1.0"))
        .await;
    assert_eq!(ss.status.unwrap().pending_version, None);
    assert_eq!(cm_data(&h, "app-config").await.unwrap()["value"], "r2");
    // A major bump without a migration covering it.
    annotate(&h, "web", "stages.metio.wtf/approved-version", "2.0.0").await;
    h.stageset(NS, "web", versioned("2.0.0")).await;
    h.wait_ready_reason(
        NS,
        "web",
        "MigrationCoverageMissing",
        "the upgrade from 1.1.0 to 2.0.0 crosses a major version and no migration covers it",
    )
    .await;
}

/// `fromArtifact` reads a file of a stage's pinned artifact, `fromObject` a
/// rendered object's label or field; a version that cannot be found or
/// parsed is `InvalidVersion` and nothing is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_from_artifacts_and_objects() {
    let h = harness().await;
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: shop\n  labels:\n    app.kubernetes.io/version: \"4.2.0\"\nspec:\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n      - name: api\n        image: api:${tag}\n";
    let info = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: release\n  namespace: shop\ndata:\n  version: \"v${tag}\"\n";
    publish(
        &h,
        "r1",
        &[
            ("VERSION", "  v3.1\n"),
            ("deploy.yaml", deploy),
            ("info.yaml", info),
        ],
    )
    .await;
    let with = |version: Value| {
        json!({"interval": "1h", "version": version, "stages": [{"name": "app", "sourceRef": {"name": "app"},
            "postBuild": {"substitute": {"tag": "5.0.1"}}, "readyChecks": {"disableWait": true}}]})
    };
    // One StageSet, its version source changed step by step (each higher);
    // each apply drops the source the previous one set.
    h.stageset(
        NS,
        "web",
        with(json!({"fromArtifact": {"stage": "app", "path": "VERSION"}})),
    )
    .await;
    h.wait_stageset(NS, "web", "3.1.0", succeeded_at("3.1.0"))
        .await;
    h.stageset(
        NS,
        "web",
        with(json!({"fromObject": {"kind": "Deployment", "name": "api"}})),
    )
    .await;
    h.wait_stageset(NS, "web", "4.2.0", succeeded_at("4.2.0"))
        .await;
    // Substitution applies before the field is read.
    h.stageset(
        NS,
        "web",
        with(
            json!({"fromObject": {"stage": "app", "apiVersion": "v1", "kind": "ConfigMap",
            "name": "release", "fieldPath": "{.data.version}"}}),
        ),
    )
    .await;
    h.wait_stageset(NS, "web", "5.0.1", succeeded_at("5.0.1"))
        .await;
    for version in [
        (
            json!({"fromArtifact": {"stage": "app", "path": "MISSING"}}),
            "the artifact of stage \"app\" (revision r1) has no file \"MISSING\"",
        ),
        (
            json!({"fromArtifact": {"stage": "db", "path": "VERSION"}}),
            "spec.version.fromArtifact.stage \"db\" is not a stage of this StageSet",
        ),
        (
            json!({"fromObject": {"kind": "Deployment", "name": "ghost"}}),
            "stage \"app\" renders no Deployment named \"ghost\"",
        ),
        (
            json!({"fromObject": {"kind": "ConfigMap", "name": "release", "fieldPath": "{.data.nope}"}}),
            "fieldPath {.data.nope} matches nothing in ConfigMap \"release\" of stage \"app\"",
        ),
        (
            json!({"value": "latest"}),
            "the desired version \"latest\" is not a valid semantic version",
        ),
    ] {
        let (source, message) = version;
        h.stageset(NS, "web", with(source)).await;
        let ss = h
            .wait_ready_reason(NS, "web", "InvalidVersion", message)
            .await;
        assert_eq!(version_of(&ss).as_deref(), Some("5.0.1"), "{message}");
    }
}

/// `dependsOn.minVersion` waits for the dependency's recorded version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_min_version_reads_the_recorded_version() {
    let h = harness().await;
    publish(&h, "r1", &[]).await;
    let art = h.artifact(
        "db.tar.gz",
        &[("cm.yaml", &configmap(NS, "db-config", "d1"))],
    );
    h.external_artifact(NS, "db", &art, "d1").await;
    let db = |version: &str| {
        json!({"interval": "1h", "version": {"value": version},
            "stages": [{"name": "db", "sourceRef": {"name": "db"}}]})
    };
    h.stageset(NS, "db", db("1.0.0")).await;
    h.wait_stageset(NS, "db", "1.0.0", succeeded_at("1.0.0"))
        .await;
    h.stageset(
        NS,
        "app",
        json!({"interval": "1h", "dependsOn": [{"name": "db", "minVersion": "1.1.0"}],
            "stages": [{"name": "app", "sourceRef": {"name": "app"}}]}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "app",
        "DependencyNotReady",
        "dependency shop/db is at version 1.0.0, need >= 1.1.0",
    )
    .await;
    assert!(cm_data(&h, "app-config").await.is_none());
    h.stageset(NS, "db", db("1.1.0")).await;
    h.wait_stageset(NS, "db", "1.1.0", succeeded_at("1.1.0"))
        .await;
    annotate(&h, "app", "reconcile.fluxcd.io/requestedAt", "t1").await;
    h.wait_stageset(NS, "app", "Ready", |ss| {
        ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
    })
    .await;
    assert_eq!(cm_data(&h, "app-config").await.unwrap()["value"], "r1");
}

// --- migrations --------------------------------------------------------------------

/// A patch action of a migration: stamps `key` into the `marker` ConfigMap
/// (or into `target`).
fn mark(name: &str, target: &str, key: &str) -> Value {
    json!({"name": name, "patch": {
        "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": target},
        "patch": format!("{{\"data\": {{\"{key}\": \"yes\"}}}}")}})
}

async fn marker(h: &Harness) -> Value {
    cm_data(h, "marker").await.unwrap_or(json!({}))
}

async fn clear_marker(h: &Harness) {
    Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .patch(
            "marker",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": null})),
        )
        .await
        .unwrap();
}

fn ladder() -> Value {
    json!([
        {"name": "add-column", "to": "1.1.0", "actions": [mark("alter", "marker", "m1")],
            "down": [mark("undo", "marker", "m1-down")]},
        {"name": "backfill", "to": "1.2.0", "from": ">=1.1.0", "actions": [mark("fill", "marker", "m2")],
            "down": [mark("unfill", "marker", "m2-down")]},
        {"name": "old-only", "to": "1.2.0", "from": "<1.0.0", "actions": [mark("never", "marker", "never")],
            "down": [mark("old-down", "marker", "old-down")]},
        {"name": "next-major", "to": "2.0.0", "actions": [mark("major", "marker", "m3")]}
    ])
}

fn migrating(version: &str, extra: Value) -> Value {
    let mut v = json!({"value": version});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    json!({"interval": "1h", "version": v, "migrations": ladder(),
        "stages": [{"name": "app", "sourceRef": {"name": "app"}}]})
}

/// Migrations run once per boundary, in `to` order, only those whose
/// `from` admits the deployed version; none on the baseline; a downgrade
/// runs `down` in reverse order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_per_boundary_up_and_down() {
    let h = harness().await;
    h.sim
        .load(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "marker", "namespace": NS}, "data": {}}))
        .unwrap();
    publish(&h, "r1", &[]).await;
    h.stageset(NS, "db", migrating("1.0.0", json!({}))).await;
    h.wait_stageset(NS, "db", "baselined", succeeded_at("1.0.0"))
        .await;
    assert_eq!(
        marker(&h).await,
        json!({}),
        "the baseline runs no migration"
    );

    // 1.0.0 → 1.2.0 crosses add-column, backfill and old-only; `from` is
    // judged against the deployed 1.0.0, which backfill (>=1.1.0) and
    // old-only (<1.0.0) do not admit: only add-column runs.
    h.stageset(NS, "db", migrating("1.2.0", json!({}))).await;
    let ss = h
        .wait_stageset(NS, "db", "1.2.0", succeeded_at("1.2.0"))
        .await;
    assert_eq!(marker(&h).await, json!({"m1": "yes"}));
    let status = ss.status.unwrap();
    assert!(status.executed_migrations.is_empty(), "cleared on success");
    assert!(status.executed_migration_actions.is_empty());
    assert!(status.pending_migrations.is_empty());
    wait_event(
        &h,
        "db",
        "MigrationStarted",
        "migration \"add-column\" (to 1.1.0) started before stage \"app\"",
    )
    .await;
    wait_event(
        &h,
        "db",
        "MigrationCompleted",
        "migration \"add-column\" (to 1.1.0) completed",
    )
    .await;

    // The same version again: nothing runs.
    clear_marker(&h).await;
    h.request_reconcile(NS, "db", "t1", |ss| succeeded_at("1.2.0")(ss))
        .await;
    assert_eq!(marker(&h).await, json!({}));

    // Down to 1.0.0: every boundary above 1.0.0 up to 1.2.0 is crossed
    // downwards (`from` does not filter a downgrade), the higher first,
    // ladder order within a boundary.
    h.stageset(
        NS,
        "db",
        migrating("1.0.0", json!({"allowDowngrade": true})),
    )
    .await;
    h.wait_stageset(NS, "db", "1.0.0", succeeded_at("1.0.0"))
        .await;
    assert_eq!(
        marker(&h).await,
        json!({"m1-down": "yes", "m2-down": "yes", "old-down": "yes"})
    );
    let all = events(&h, "db").await;
    let started: Vec<&String> = all
        .iter()
        .filter(|(r, m)| r == "MigrationStarted" && m.starts_with("rollback of migration"))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(started.len(), 3, "{all:?}");
    assert!(started[0].contains("\"backfill\""), "{started:?}");
    assert!(started[1].contains("\"old-only\""), "{started:?}");
    assert!(started[2].contains("\"add-column\""), "{started:?}");

    // A major bump crosses next-major (and the others again, upwards).
    clear_marker(&h).await;
    // (The ledgers of the downgrade were cleared when it succeeded.)
    let status = h.get_stageset(NS, "db").await.status.unwrap();
    assert!(status.executed_migrations.is_empty(), "{status:?}");
    h.stageset(
        NS,
        "db",
        migrating("2.0.0", json!({"requireMigrationCoverage": true})),
    )
    .await;
    h.wait_stageset(NS, "db", "2.0.0", succeeded_at("2.0.0"))
        .await;
    assert_eq!(marker(&h).await, json!({"m1": "yes", "m3": "yes"}));
}

/// A failing migration action fails the stage (`MigrationFailed`) without
/// applying it; the actions that succeeded are not run again on the retry;
/// after five failures in a row the migrations halt (`MigrationDirty`)
/// until a `requestedAt` token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_migrations_resume_where_they_stopped_and_halt_when_dirty() {
    let h = harness().await;
    h.sim
        .load(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "marker", "namespace": NS}, "data": {}}))
        .unwrap();
    publish(&h, "r1", &[]).await;
    let spec = |version: &str| {
        json!({"interval": "1h", "version": {"value": version},
            "migrations": [{"name": "two-steps", "to": "1.1.0",
                "actions": [mark("first", "marker", "first"), mark("second", "missing", "second")]}],
            "stages": [{"name": "app", "sourceRef": {"name": "app"}}]})
    };
    h.stageset(NS, "db", spec("1.0.0")).await;
    h.wait_stageset(NS, "db", "baselined", succeeded_at("1.0.0"))
        .await;
    h.stageset(NS, "db", spec("1.1.0")).await;
    // The retries come fast (back-off from milliseconds): the failure may
    // already have become MigrationDirty when the test looks.
    let ss = h
        .wait_stageset(NS, "db", "the migration failing", |ss| {
            ready(ss).is_some_and(|(_, r, m)| {
                (r == "MigrationFailed" || r == "MigrationDirty")
                    && m.contains("migration \"two-steps\" (to 1.1.0): action \"second\"")
            })
        })
        .await;
    wait_event(
        &h,
        "db",
        "MigrationFailed",
        "migration \"two-steps\" (to 1.1.0): action \"second\"",
    )
    .await;
    let status = ss.status.unwrap();
    assert_eq!(status.version.as_deref(), Some("1.0.0"));
    assert!(
        status
            .executed_migration_actions
            .iter()
            .any(|k| k.starts_with("two-steps@") && k.ends_with("/first")),
        "{:?}",
        status.executed_migration_actions
    );
    // A new revision meanwhile: the stage stays unapplied while its
    // migration fails. Retries keep failing (back-off, then every watch
    // event) until dirty.
    publish(&h, "r2", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    let ss = loop {
        let ss = h.get_stageset(NS, "db").await;
        if ready(&ss).is_some_and(|(_, r, _)| r == "MigrationDirty") {
            break ss;
        }
        assert!(Instant::now() < deadline, "never dirty: {:?}", ready(&ss));
        n += 1;
        annotate(&h, "db", "test.stages.metio.wtf/nudge", &n.to_string()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, _, message) = ready(&ss).unwrap();
    assert!(message.contains("migration halted (dirty)"), "{message}");
    assert_eq!(ss.status.unwrap().migration_failure_count, Some(5));
    assert_eq!(
        cm_data(&h, "app-config").await.unwrap()["value"],
        "r1",
        "the stage was not applied"
    );
    // The cause is fixed, a reconcile is requested: only "second" runs.
    clear_marker(&h).await;
    h.sim
        .load(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "missing", "namespace": NS}, "data": {}}))
        .unwrap();
    annotate(&h, "db", "reconcile.fluxcd.io/requestedAt", "fixed").await;
    h.wait_stageset(NS, "db", "1.1.0", succeeded_at("1.1.0"))
        .await;
    assert_eq!(marker(&h).await, json!({}), "\"first\" did not run again");
    assert_eq!(cm_data(&h, "missing").await.unwrap()["second"], "yes");
    assert_eq!(cm_data(&h, "app-config").await.unwrap()["value"], "r2");
}

/// Migrations anchored to a stage run before that stage (after the ones
/// before it); `OnMigrations` approval shows them in
/// `status.pendingMigrations` and waits; a downgrade across a migration
/// without `down` and an anchor that matches no stage are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchors_previews_approval_and_refusals() {
    let h = harness().await;
    h.sim
        .load(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "marker", "namespace": NS}, "data": {}}))
        .unwrap();
    publish(&h, "r1", &[]).await;
    let art = h.artifact(
        "db.tar.gz",
        &[("cm.yaml", &configmap(NS, "db-config", "d1"))],
    );
    h.external_artifact(NS, "db", &art, "d1").await;
    let spec = |version: &str, migrations: Value, extra: Value| {
        let mut v = json!({"value": version, "approvalMode": "OnMigrations"});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        json!({"interval": "1h", "version": v, "migrations": migrations,
            "stages": [{"name": "app", "sourceRef": {"name": "app"}},
                       {"name": "data", "sourceRef": {"name": "db"}, "migrationAnchor": "database"}]})
    };
    let schema = json!([{"name": "schema", "to": "1.1.0", "stage": "database",
        "actions": [mark("alter", "marker", "schema")]}]);
    h.stageset(NS, "web", spec("1.0.0", schema.clone(), json!({})))
        .await;
    h.wait_stageset(NS, "web", "baselined", succeeded_at("1.0.0"))
        .await;
    h.stageset(NS, "web", spec("1.1.0", schema.clone(), json!({})))
        .await;
    let ss = h
        .wait_ready_reason(
            NS,
            "web",
            "AwaitingApproval",
            "stages.metio.wtf/approved-version=1.1.0",
        )
        .await;
    let pending = ss.status.unwrap().pending_migrations;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].name, "schema");
    assert_eq!(pending[0].to, "1.1.0");
    assert_eq!(pending[0].stage.as_deref(), Some("data"));
    assert_eq!(pending[0].actions, ["patch"]);
    assert_eq!(pending[0].digest.as_deref().map(str::len), Some(12));
    assert_eq!(marker(&h).await, json!({}));
    annotate(&h, "web", "stages.metio.wtf/approved-version", "1.1.0").await;
    h.wait_stageset(NS, "web", "1.1.0", succeeded_at("1.1.0"))
        .await;
    assert_eq!(marker(&h).await, json!({"schema": "yes"}));
    wait_event(
        &h,
        "web",
        "MigrationStarted",
        "migration \"schema\" (to 1.1.0) started before stage \"data\"",
    )
    .await;
    // Down across "schema", which has no down actions.
    h.stageset(
        NS,
        "web",
        spec("1.0.0", schema.clone(), json!({"allowDowngrade": true})),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "web",
        "DowngradeRequiresMigration",
        "the downgrade from 1.1.0 to 1.0.0 crosses migration \"schema\" (to 1.1.0), which has no down actions",
    )
    .await;
    // An anchor no stage has.
    let lost = json!([{"name": "lost", "to": "1.2.0", "stage": "nowhere", "actions": [mark("x", "marker", "x")]}]);
    h.stageset(NS, "web", spec("1.2.0", lost, json!({}))).await;
    // (Admission's rule, checked again by the reconciler.)
    h.wait_ready_reason(
        NS,
        "web",
        "InvalidSpec",
        "migration \"lost\" anchors to unknown stage or anchor \"nowhere\"",
    )
    .await;
}

// --- sourced ladders ---------------------------------------------------------------

/// A GitRepository (in the harness's minimal Flux CRDs) serving `files`,
/// with `spec.ref` and extra status conditions.
async fn git_source(
    h: &Harness,
    name: &str,
    revision: &str,
    files: &[(&str, &str)],
    git_ref: Value,
    extra: Value,
) {
    let art = h.artifact(&format!("{name}-{revision}.tar.gz"), files);
    let mut status = stageset_controller::dev::flux::ready_status(&art.url, &art.digest, revision);
    for c in extra.as_array().into_iter().flatten() {
        status["conditions"].as_array_mut().unwrap().push(c.clone());
    }
    // As source-controller does: the spec, then the status subresource.
    let api = h
        .dynamic("source.toolkit.fluxcd.io/v1", "GitRepository", Some(NS))
        .await;
    let pp = PatchParams::apply("source-controller").force();
    let object = |part: &str, value: Value| {
        let mut o = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": name, "namespace": NS}});
        o[part] = value;
        o
    };
    let spec =
        json!({"url": "https://git.example.com/ladder.git", "interval": "1m", "ref": git_ref});
    api.patch(name, &pp, &Patch::Apply(object("spec", spec)))
        .await
        .unwrap();
    api.patch_status(name, &pp, &Patch::Apply(object("status", status)))
        .await
        .unwrap();
}

fn verified(status: &str) -> Value {
    json!([{"type": "SourceVerified", "status": status, "reason": "Verified", "message": "m",
        "lastTransitionTime": "2026-12-06T10:00:00Z"}])
}

const LADDER: &str = "- name: add-column\n  to: \"1.1.0\"\n  actions:\n  - name: alter\n    patch:\n      target: {apiVersion: v1, kind: ConfigMap, name: marker}\n      patch: '{\"data\": {\"m1\": \"yes\"}}'\n- name: backfill\n  to: \"1.2.0\"\n  actions:\n  - name: fill\n    patch:\n      target: {apiVersion: v1, kind: ConfigMap, name: marker}\n      patch: '{\"data\": {\"m2\": \"yes\"}}'\n";

fn sourced(version: &str, source: Value) -> Value {
    json!({"interval": "1h", "version": {"value": version}, "migrationsSourceRef": source,
        "stages": [{"name": "app", "sourceRef": {"name": "app"}}]})
}

/// A ladder read from an artifact (only its files under `path`) runs like
/// an inline one and its events say where it came from; a source that can
/// move is reported (Warning `MigrationSourceMutable`) and used; one that
/// failed verification is refused; an artifact with an unknown field or no
/// ladder files is `MigrationArtifactInvalid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sourced_ladders_and_their_provenance() {
    let h = harness().await;
    h.sim
        .load(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "marker", "namespace": NS}, "data": {}}))
        .unwrap();
    publish(&h, "r1", &[]).await;
    let ladder = h.artifact(
        "ladder-l1.tar.gz",
        &[
            ("db/migrations.yaml", LADDER),
            ("db/notes.txt", "not a ladder"),
            ("other/x.yaml", "- nonsense: 1\n"),
        ],
    );
    h.external_artifact(NS, "ladder", &ladder, "l1").await;
    let from_ea = json!({"sourceRef": {"name": "ladder"}, "path": "./db"});
    h.stageset(NS, "db", sourced("1.0.0", from_ea.clone()))
        .await;
    h.wait_stageset(NS, "db", "baselined", succeeded_at("1.0.0"))
        .await;
    h.stageset(NS, "db", sourced("1.1.0", from_ea.clone()))
        .await;
    h.wait_stageset(NS, "db", "1.1.0", succeeded_at("1.1.0"))
        .await;
    assert_eq!(marker(&h).await, json!({"m1": "yes"}));
    wait_event(
        &h,
        "db",
        "MigrationCompleted",
        &format!(
            "migration \"add-column\" (to 1.1.0) from source revision l1 (artifact {}) completed",
            ladder.digest
        ),
    )
    .await;
    assert!(
        !events(&h, "db")
            .await
            .iter()
            .any(|(r, _)| r == "MigrationSourceMutable"),
        "an ExternalArtifact is pinned"
    );
    // A GitRepository that follows a branch: reported, and used.
    git_source(
        &h,
        "ladder-git",
        "main@sha1:abc",
        &[("migrations.yaml", LADDER)],
        json!({"branch": "main"}),
        json!([]),
    )
    .await;
    let from_git = json!({"sourceRef": {"kind": "GitRepository", "name": "ladder-git"}});
    h.stageset(NS, "db", sourced("1.2.0", from_git.clone()))
        .await;
    h.wait_stageset(NS, "db", "1.2.0", succeeded_at("1.2.0"))
        .await;
    assert_eq!(marker(&h).await, json!({"m1": "yes", "m2": "yes"}));
    wait_event(
        &h,
        "db",
        "MigrationSourceMutable",
        "the migrations source GitRepository \"ladder-git\" is not pinned (GitRepository follows branch \"main\", not a commit)",
    )
    .await;
    // Failed verification.
    git_source(
        &h,
        "ladder-git",
        "main@sha1:abd",
        &[("migrations.yaml", LADDER)],
        json!({"commit": "abd"}),
        verified("False"),
    )
    .await;
    h.stageset(NS, "db", sourced("1.3.0", from_git.clone()))
        .await;
    h.wait_ready_reason(
        NS,
        "db",
        "MigrationSourceNotVerified",
        "the migrations source GitRepository \"ladder-git\" failed verification (SourceVerified=False)",
    )
    .await;
    // Broken artifacts.
    // (The ladder's source is read when a pass needs it, not watched: a
    // reconcile is requested after each change.)
    for (files, message) in [
        (
            vec![("m.yaml", "- name: a\n  to: \"1.3.0\"\n  stepz: []\n")],
            "m.yaml: migration 0: unknown field \"stepz\"",
        ),
        (
            vec![("README.md", "no ladder here")],
            "migrations artifact contains no .yaml, .yml, or .json files",
        ),
    ] {
        let art = h.artifact(&format!("broken-{}.tar.gz", files[0].0), &files);
        h.external_artifact(NS, "ladder", &art, files[0].0).await;
        h.stageset(
            NS,
            "db",
            sourced("1.3.0", json!({"sourceRef": {"name": "ladder"}})),
        )
        .await;
        annotate(&h, "db", "reconcile.fluxcd.io/requestedAt", files[0].0).await;
        h.wait_ready_reason(NS, "db", "MigrationArtifactInvalid", message)
            .await;
    }
}

/// With `--require-verified-migration-sources` and
/// `--require-pinned-migration-sources`, a source must report
/// `SourceVerified=True` and be pinned to a commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_flags_refuse_unverified_and_unpinned_ladders() {
    let h = Harness::start_with(HarnessOptions {
        flags: vec![
            "--require-verified-migration-sources".into(),
            "--require-pinned-migration-sources".into(),
        ],
        ..Default::default()
    })
    .await;
    h.namespace(NS).await;
    h.sim
        .load(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "marker", "namespace": NS}, "data": {}}))
        .unwrap();
    publish(&h, "r1", &[]).await;
    let from_git = json!({"sourceRef": {"kind": "GitRepository", "name": "ladder-git"}});
    git_source(
        &h,
        "ladder-git",
        "c1",
        &[("migrations.yaml", LADDER)],
        json!({"commit": "c1"}),
        json!([]),
    )
    .await;
    h.stageset(NS, "db", sourced("1.0.0", from_git.clone()))
        .await;
    h.wait_stageset(
        NS,
        "db",
        "baselined (no ladder is read)",
        succeeded_at("1.0.0"),
    )
    .await;
    h.stageset(NS, "db", sourced("1.1.0", from_git.clone()))
        .await;
    h.wait_ready_reason(
        NS,
        "db",
        "MigrationSourceNotVerified",
        "reports no SourceVerified condition, and --require-verified-migration-sources is set",
    )
    .await;
    git_source(
        &h,
        "ladder-git",
        "c2",
        &[("migrations.yaml", LADDER)],
        json!({"tag": "v1"}),
        verified("True"),
    )
    .await;
    annotate(&h, "db", "reconcile.fluxcd.io/requestedAt", "t1").await;
    h.wait_ready_reason(
        NS,
        "db",
        "MigrationSourceNotPinned",
        "is not pinned (GitRepository follows tag \"v1\", not a commit), and --require-pinned-migration-sources is set",
    )
    .await;
    assert_eq!(marker(&h).await, json!({}));
    git_source(
        &h,
        "ladder-git",
        "c3",
        &[("migrations.yaml", LADDER)],
        json!({"commit": "c3"}),
        verified("True"),
    )
    .await;
    annotate(&h, "db", "reconcile.fluxcd.io/requestedAt", "t2").await;
    h.wait_stageset(NS, "db", "1.1.0", succeeded_at("1.1.0"))
        .await;
    assert_eq!(marker(&h).await, json!({"m1": "yes"}));
}

/// A migration crossing runs each action once even when the controller is
/// stopped mid-migration and started again after the first action's ledger
/// write; re-reconciles and a later upgrade that crosses nothing run none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_survives_a_controller_restart_without_running_twice() {
    let mut h = harness().await;
    for name in ["marker", "gate"] {
        h.sim
            .load(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": NS}, "data": {}}))
            .unwrap();
    }
    publish(&h, "r1", &[]).await;
    let spec = |version: &str| {
        json!({"interval": "1h", "version": {"value": version},
            "migrations": [{"name": "two-phase", "to": "2.0.0", "actions": [
                mark("first", "marker", "first"),
                {"name": "until-open", "timeout": "5m", "wait": {
                    "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "gate"},
                    "expr": "has(metadata.labels) && 'open' in metadata.labels"}}]}],
            "stages": [{"name": "app", "sourceRef": {"name": "app"}}]})
    };
    h.stageset(NS, "db", spec("1.9.0")).await;
    h.wait_stageset(NS, "db", "baselined", succeeded_at("1.9.0"))
        .await;
    h.stageset(NS, "db", spec("2.0.0")).await;
    // The first action ran and its ledger entry is written; the second waits.
    h.wait_stageset(NS, "db", "the first action recorded", |ss| {
        ss.status.as_ref().is_some_and(|s| {
            s.executed_migration_actions
                .iter()
                .any(|k| k.starts_with("two-phase@") && k.ends_with("/first"))
        })
    })
    .await;
    assert_eq!(marker(&h).await, json!({"first": "yes"}));
    h.stop_controller();
    clear_marker(&h).await;
    h.start_controller().await;
    Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .patch(
            "gate",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"open": "yes"}}})),
        )
        .await
        .unwrap();
    h.wait_stageset(NS, "db", "2.0.0", succeeded_at("2.0.0"))
        .await;
    assert_eq!(marker(&h).await, json!({}), "\"first\" ran once");
    let completed = events(&h, "db")
        .await
        .into_iter()
        .filter(|(r, m)| r == "MigrationCompleted" && m.contains("\"two-phase\""))
        .count();
    assert_eq!(completed, 1);
    // Re-reconciles and 2.0.0 → 2.1.0 run nothing.
    annotate(&h, "db", "reconcile.fluxcd.io/requestedAt", "again").await;
    h.stageset(NS, "db", spec("2.1.0")).await;
    h.wait_stageset(NS, "db", "2.1.0", succeeded_at("2.1.0"))
        .await;
    assert_eq!(marker(&h).await, json!({}));
}
