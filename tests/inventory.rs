//! Inventory, pruning, teardown, drift, conflict policies, readiness checks and
//! namespace isolation on kube-sim (issue 5). Each test runs its own kube-sim
//! and controller; artifacts are real tar.gz files served over HTTP.

#![recursion_limit = "256"]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};
use stageset_controller::api::StageSet;
use support::*;

const NS: &str = "default";

/// Loads a ServiceAccount with a Role (and binding) granting `rules`.
fn tenant(h: &Harness, ns: &str, sa: &str, rules: Value) {
    for obj in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": sa, "namespace": ns}, "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": sa, "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
               "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]}),
    ] {
        h.sim.load(obj).unwrap();
    }
}

fn all_verbs() -> Value {
    json!([
        "get", "list", "watch", "create", "patch", "update", "delete"
    ])
}

/// Asks for a reconcile the way `flux reconcile` does and waits until it ran.
async fn request_reconcile(h: &Harness, ns: &str, name: &str, token: &str) -> StageSet {
    Api::<StageSet>::namespaced(h.client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}}),
            ),
        )
        .await
        .unwrap();
    h.wait_stageset(ns, name, &format!("token {token} handled"), |ss| {
        let s = ss.status.as_ref();
        s.and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some(token)
            && ss.metadata.generation == s.and_then(|s| s.observed_generation)
            && ready(ss).is_some_and(|r| r.1 != "Suspended")
    })
    .await
}

/// Publishes a new revision of an ExternalArtifact and waits until the
/// StageSet has applied it and is Ready.
async fn roll_out(
    h: &Harness,
    ns: &str,
    ss: &str,
    source: &str,
    files: &[(&str, &str)],
    revision: &str,
) -> StageSet {
    let art = h.artifact(&format!("{source}-{revision}.tar.gz"), files);
    h.external_artifact(ns, source, &art, revision).await;
    h.wait_stageset(ns, ss, &format!("{revision} applied"), |s| {
        let st = s.status.as_ref();
        ready(s).is_some_and(|r| r.0 == "True")
            && st.is_some_and(|st| st.last_applied_revisions.values().any(|v| v == revision))
    })
    .await
}

async fn names(h: &Harness, api_version: &str, kind: &str, ns: &str) -> Vec<String> {
    let mut v: Vec<String> = h
        .dynamic(api_version, kind, Some(ns))
        .await
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.name_any())
        .collect();
    v.sort();
    v
}

async fn shards(h: &Harness, ns: &str, selector: &str) -> Vec<DynamicObject> {
    let mut v = h
        .dynamic("stages.metio.wtf/v1", "StageInventory", Some(ns))
        .await
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items;
    v.sort_by_key(|o| o.name_any());
    v
}

fn entry_ids(shard: &DynamicObject) -> Vec<String> {
    shard.data["spec"]["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until an object is gone.
async fn wait_gone(h: &Harness, api_version: &str, kind: &str, ns: Option<&str>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.get_opt(api_version, kind, ns, name).await.is_some() {
        assert!(Instant::now() < deadline, "{kind} {name} was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kubectl(h: &Harness, dir: &tempfile::TempDir, args: &[&str]) -> String {
    let kubeconfig = dir.path().join("kubeconfig");
    h.sim.write_kubeconfig(&kubeconfig).unwrap();
    let out =
        std::process::Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .output()
            .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// --- Inventory ------------------------------------------------------------

/// Default (`hybrid`) mode: shards with the upstream names, labels, owner and
/// position, sharded at the cap, obsolete shards removed; shard 0 is an
/// ApplySet parent and `kubectl get -l applyset.kubernetes.io/part-of=<id>`
/// lists exactly the stage's members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_inventory_shards_and_applyset() {
    let h = Harness::start_with(HarnessOptions {
        flags: vec!["--inventory-shard-cap=2".into()],
        ..Default::default()
    })
    .await;
    h.namespace("other").await;
    let base = h.artifact("base.tar.gz", &[("cm.yaml", &configmap(NS, "base", "x"))]);
    h.external_artifact(NS, "base", &base, "b1").await;
    let files: Vec<(String, String)> = (1..=4)
        .map(|i| {
            (
                format!("cm{i}.yaml"),
                configmap(NS, &format!("app-{i}"), "x"),
            )
        })
        .chain([(
            "other.yaml".to_string(),
            configmap("other", "elsewhere", "y"),
        )])
        .collect();
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let art = h.artifact("app-r1.tar.gz", &borrowed);
    h.external_artifact(NS, "app", &art, "r1").await;
    h.stageset(
        NS,
        "inv",
        json!({"stages": [
            {"name": "base", "sourceRef": {"name": "base"}},
            {"name": "app", "sourceRef": {"name": "app"}}
        ]}),
    )
    .await;
    let ss = h.wait_ready_reason(NS, "inv", "Succeeded", "").await;
    let app_status = ss
        .status
        .as_ref()
        .unwrap()
        .stages
        .iter()
        .find(|s| s.name == "app")
        .unwrap()
        .clone();
    assert_eq!(app_status.entries_count, Some(5));
    assert_eq!(app_status.shards, Some(3));

    let app_shards = shards(
        &h,
        NS,
        "stages.metio.wtf/stage-set=inv,stages.metio.wtf/stage=app",
    )
    .await;
    assert_eq!(app_shards.len(), 3, "5 entries at a cap of 2");
    let uid = ss.metadata.uid.clone().unwrap();
    for (i, shard) in app_shards.iter().enumerate() {
        assert!(
            shard.name_any().starts_with(&format!("inv-app-{i:02}-")),
            "{}",
            shard.name_any()
        );
        let labels = shard.labels();
        assert_eq!(labels["stages.metio.wtf/shard"], i.to_string());
        assert_eq!(labels["stages.metio.wtf/stage"], "app");
        assert_eq!(shard.data["spec"]["stagePosition"], 1);
        let owner = &shard.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("StageSet", uid.as_str(), Some(true))
        );
    }
    let all_ids: Vec<String> = app_shards.iter().flat_map(entry_ids).collect();
    assert_eq!(
        all_ids,
        [
            "default_app-1__ConfigMap",
            "default_app-2__ConfigMap",
            "default_app-3__ConfigMap",
            "default_app-4__ConfigMap",
            "other_elsewhere__ConfigMap"
        ]
    );
    assert_eq!(app_shards[0].data["spec"]["entries"][0]["v"], "v1");

    // Shard 0 is the ApplySet parent.
    let parent = &app_shards[0];
    let id = parent.labels()["applyset.kubernetes.io/id"].clone();
    assert!(id.starts_with("applyset-") && id.ends_with("-v1"), "{id}");
    let annotations = parent.annotations();
    assert_eq!(
        annotations["applyset.kubernetes.io/tooling"],
        "stageset-controller/v1"
    );
    assert_eq!(
        annotations["applyset.kubernetes.io/contains-group-kinds"],
        "ConfigMap"
    );
    assert_eq!(
        annotations["applyset.kubernetes.io/additional-namespaces"],
        "other"
    );
    assert!(
        !app_shards[1]
            .labels()
            .contains_key("applyset.kubernetes.io/id"),
        "only shard 0 is a parent"
    );

    // Real kubectl sees exactly the stage's members through the ApplySet label.
    let dir = tempfile::tempdir().unwrap();
    let listed = kubectl(
        &h,
        &dir,
        &[
            "get",
            "configmaps",
            "-A",
            "-l",
            &format!("applyset.kubernetes.io/part-of={id}"),
            "-o",
            "name",
        ],
    );
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "configmap/app-1",
            "configmap/app-2",
            "configmap/app-3",
            "configmap/app-4",
            "configmap/elsewhere"
        ]
    );

    // Fewer objects: obsolete shards are removed.
    roll_out(
        &h,
        NS,
        "inv",
        "app",
        &[("cm1.yaml", &configmap(NS, "app-1", "x"))],
        "r2",
    )
    .await;
    let app_shards = shards(
        &h,
        NS,
        "stages.metio.wtf/stage-set=inv,stages.metio.wtf/stage=app",
    )
    .await;
    assert_eq!(app_shards.len(), 1);
    assert_eq!(entry_ids(&app_shards[0]), ["default_app-1__ConfigMap"]);
    assert!(
        !app_shards[0]
            .annotations()
            .contains_key("applyset.kubernetes.io/additional-namespaces")
    );
    for gone in ["app-2", "app-3", "app-4"] {
        assert!(
            h.get_opt("v1", "ConfigMap", Some(NS), gone).await.is_none(),
            "{gone} pruned"
        );
    }
    assert!(
        h.get_opt("v1", "ConfigMap", Some("other"), "elsewhere")
            .await
            .is_none()
    );
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "app-1")
            .await
            .is_some()
    );
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "base")
            .await
            .is_some()
    );
}

/// `entries` writes no ApplySet metadata; `applyset` also prunes live members
/// of the stage's ApplySet that the entries do not list, while `hybrid`
/// leaves such an object alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_and_applyset_modes() {
    for (mode, stray_pruned) in [("entries", false), ("applyset", true), ("hybrid", false)] {
        let h = Harness::start_with(HarnessOptions {
            flags: vec![format!("--inventory-mode={mode}")],
            ..Default::default()
        })
        .await;
        let art = h.artifact("a.tar.gz", &[("cm.yaml", &configmap(NS, "member", "x"))]);
        h.external_artifact(NS, "a", &art, "r1").await;
        h.stageset(
            NS,
            "modes",
            json!({"stages": [{"name": "app", "sourceRef": {"name": "a"}}]}),
        )
        .await;
        h.wait_ready_reason(NS, "modes", "Succeeded", "").await;
        let shard = shards(&h, NS, "stages.metio.wtf/stage-set=modes")
            .await
            .remove(0);
        let member = h
            .get_opt("v1", "ConfigMap", Some(NS), "member")
            .await
            .unwrap();
        let id = stageset_controller::reconcile::inventory::stage_applyset_id("modes", NS, "app");
        if mode == "entries" {
            assert!(
                !shard.labels().contains_key("applyset.kubernetes.io/id"),
                "{mode}"
            );
            assert!(
                !shard
                    .annotations()
                    .contains_key("applyset.kubernetes.io/tooling"),
                "{mode}"
            );
            assert!(
                !member
                    .labels()
                    .contains_key("applyset.kubernetes.io/part-of"),
                "{mode}"
            );
        } else {
            assert_eq!(shard.labels()["applyset.kubernetes.io/id"], id, "{mode}");
            assert_eq!(
                member.labels()["applyset.kubernetes.io/part-of"],
                id,
                "{mode}"
            );
        }
        // An object that claims membership of this stage (owner, stage and
        // ApplySet labels) without being in the recorded entries.
        h.sim
            .load(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "stray", "namespace": NS, "labels": {
                    "stages.metio.wtf/name": "modes", "stages.metio.wtf/namespace": NS,
                    "stages.metio.wtf/stage": "app", "applyset.kubernetes.io/part-of": id}}}))
            .unwrap();
        request_reconcile(&h, NS, "modes", "t1").await;
        let present = h
            .get_opt("v1", "ConfigMap", Some(NS), "stray")
            .await
            .is_some();
        assert_eq!(present, !stray_pruned, "mode {mode}");
        assert!(
            h.get_opt("v1", "ConfigMap", Some(NS), "member")
                .await
                .is_some()
        );
    }
}

// --- Pruning ----------------------------------------------------------------

/// Objects that left a stage are deleted, except those protected by the
/// per-object opt-out or relabelled to another owner; `prune: false` keeps
/// everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_deletes_only_what_left_and_is_still_ours() {
    let h = Harness::start().await;
    let r1 = [
        ("a.yaml", configmap(NS, "keep", "x")),
        ("b.yaml", configmap(NS, "leaves", "x")),
        ("c.yaml", configmap(NS, "opted-out", "x")),
        ("d.yaml", configmap(NS, "adopted", "x")),
    ];
    let r1: Vec<(&str, &str)> = r1.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let art = h.artifact("p1.tar.gz", &r1);
    h.external_artifact(NS, "p", &art, "r1").await;
    let kept_art = h.artifact("k1.tar.gz", &[("a.yaml", &configmap(NS, "unpruned", "x"))]);
    h.external_artifact(NS, "k", &kept_art, "r1").await;
    h.stageset(
        NS,
        "pruner",
        json!({"stages": [
            {"name": "app", "sourceRef": {"name": "p"}},
            {"name": "sticky", "sourceRef": {"name": "k"}, "prune": false}
        ]}),
    )
    .await;
    h.wait_ready_reason(NS, "pruner", "Succeeded", "").await;
    // Suspended while the objects change hands: a reconcile of revision 1 in
    // between (any trigger) would rightly take the relabelled object back,
    // since revision 1 still renders it.
    h.suspend(NS, "pruner", true).await;
    h.wait_ready_reason(NS, "pruner", "Suspended", "").await;
    let cms = h.dynamic("v1", "ConfigMap", Some(NS)).await;
    // A user opts one object out of pruning; someone else adopts another.
    cms.patch(
        "opted-out",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"stages.metio.wtf/prune": "disabled"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "adopted",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"stages.metio.wtf/name": "someone-else"}}})),
    )
    .await
    .unwrap();
    // Revision 2 of both stages renders only the first object / nothing new.
    let app2 = h.artifact("p2.tar.gz", &[("a.yaml", &configmap(NS, "keep", "x"))]);
    h.external_artifact(NS, "p", &app2, "r2").await;
    let sticky2 = h.artifact(
        "k2.tar.gz",
        &[("b.yaml", &configmap(NS, "other-sticky", "x"))],
    );
    h.external_artifact(NS, "k", &sticky2, "r2").await;
    h.suspend(NS, "pruner", false).await;
    h.wait_stageset(NS, "pruner", "both stages at r2", |s| {
        ready(s).is_some_and(|r| r.0 == "True")
            && s.status.as_ref().is_some_and(|st| {
                ["default/p", "default/k"]
                    .iter()
                    .all(|k| st.last_applied_revisions.get(*k).map(String::as_str) == Some("r2"))
            })
    })
    .await;
    let left = names(&h, "v1", "ConfigMap", NS).await;
    assert!(left.contains(&"keep".to_string()));
    assert!(!left.contains(&"leaves".to_string()), "pruned: {left:?}");
    assert!(
        left.contains(&"opted-out".to_string()),
        "prune: disabled is honoured: {left:?}"
    );
    assert!(
        left.contains(&"adopted".to_string()),
        "relabelled objects are protected: {left:?}"
    );
    assert!(
        left.contains(&"unpruned".to_string()),
        "prune: false keeps objects: {left:?}"
    );
    assert!(left.contains(&"other-sticky".to_string()));
    // The inventories now list exactly what each stage renders.
    let app = shards(
        &h,
        NS,
        "stages.metio.wtf/stage-set=pruner,stages.metio.wtf/stage=app",
    )
    .await;
    assert_eq!(entry_ids(&app[0]), ["default_keep__ConfigMap"]);
}

/// An object moved from one stage to another in a single revision survives
/// (ownership transfer); two stages claiming one object is refused before the
/// second stage applies anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_objects_between_stages_and_duplicate_claims() {
    let h = Harness::start().await;
    // One artifact, one directory per stage: a single revision moves objects.
    let r1 = h.artifact(
        "mono-r1.tar.gz",
        &[
            ("first/m.yaml", &configmap(NS, "mover", "1")),
            ("first/s.yaml", &configmap(NS, "stays", "1")),
            ("second/t.yaml", &configmap(NS, "two-only", "1")),
        ],
    );
    h.external_artifact(NS, "mono", &r1, "r1").await;
    h.stageset(
        NS,
        "movers",
        json!({"stages": [
            {"name": "first", "sourceRef": {"name": "mono"}, "path": "./first"},
            {"name": "second", "sourceRef": {"name": "mono"}, "path": "./second"}
        ]}),
    )
    .await;
    h.wait_ready_reason(NS, "movers", "Succeeded", "").await;
    let before = h
        .get_opt("v1", "ConfigMap", Some(NS), "mover")
        .await
        .unwrap();
    roll_out(
        &h,
        NS,
        "movers",
        "mono",
        &[
            ("first/s.yaml", &configmap(NS, "stays", "1")),
            ("second/t.yaml", &configmap(NS, "two-only", "1")),
            ("second/m.yaml", &configmap(NS, "mover", "1")),
        ],
        "r2",
    )
    .await;
    let after = h
        .get_opt("v1", "ConfigMap", Some(NS), "mover")
        .await
        .expect("the moved object survives");
    assert_eq!(after.uid(), before.uid(), "never deleted and re-created");
    assert_eq!(after.labels()["stages.metio.wtf/stage"], "second");
    let first = shards(
        &h,
        NS,
        "stages.metio.wtf/stage-set=movers,stages.metio.wtf/stage=first",
    )
    .await;
    assert_eq!(entry_ids(&first[0]), ["default_stays__ConfigMap"]);

    // Revision 3: stage "second" also renders "stays", which "first" owns.
    let r3 = h.artifact(
        "mono-r3.tar.gz",
        &[
            ("first/s.yaml", &configmap(NS, "stays", "1")),
            ("second/s.yaml", &configmap(NS, "stays", "changed")),
            ("second/x.yaml", &configmap(NS, "never-applied", "1")),
        ],
    );
    h.external_artifact(NS, "mono", &r3, "r3").await;
    let ss = h
        .wait_ready_reason(NS, "movers", "InvalidSpec", "1 object(s) are claimed by more than one stage: ConfigMap/default/stays (also in stage \"first\")")
        .await;
    assert_eq!(stage_phase(&ss, "second").as_deref(), Some("Failed"));
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "never-applied")
            .await
            .is_none(),
        "the second stage applied nothing"
    );
    let stays = h
        .get_opt("v1", "ConfigMap", Some(NS), "stays")
        .await
        .unwrap();
    assert_eq!(stays.data["data"]["value"], "1");
    assert_eq!(stays.labels()["stages.metio.wtf/stage"], "first");
    // Nothing was pruned either: the old members of "second" are still there.
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "mover")
            .await
            .is_some()
    );
}

/// Stages removed from the spec are torn down, last recorded position first,
/// and their shards are deleted; objects a remaining stage renders stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_stages_are_torn_down_in_reverse_order() {
    let h = Harness::start().await;
    let mut spec_stages = Vec::new();
    for (i, stage) in ["keep", "gone-a", "gone-b"].iter().enumerate() {
        let art = h.artifact(
            &format!("{stage}.tar.gz"),
            &[(
                "cm.yaml",
                &configmap(NS, &format!("cm-{stage}"), &i.to_string()),
            )],
        );
        h.external_artifact(NS, stage, &art, "r1").await;
        spec_stages.push(json!({"name": stage, "sourceRef": {"name": stage}}));
    }
    h.stageset(NS, "shrink", json!({"stages": spec_stages}))
        .await;
    h.wait_ready_reason(NS, "shrink", "Succeeded", "3 stage(s)")
        .await;
    let order = deletion_order(&h, NS, "shrink", 2, async {
        h.stageset(
            NS,
            "shrink",
            json!({"stages": [{"name": "keep", "sourceRef": {"name": "keep"}}]}),
        )
        .await;
    })
    .await;
    assert_eq!(order, ["cm-gone-b", "cm-gone-a"]);
    h.wait_ready_reason(NS, "shrink", "Succeeded", "1 stage(s)")
        .await;
    assert_eq!(
        shards(&h, NS, "stages.metio.wtf/stage-set=shrink")
            .await
            .len(),
        1
    );
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "cm-keep")
            .await
            .is_some()
    );
}

/// Watches the StageSet's ConfigMaps while `action` runs and returns the names
/// of the first `count` deleted, in deletion order.
async fn deletion_order(
    h: &Harness,
    ns: &str,
    stageset: &str,
    count: usize,
    action: impl std::future::Future<Output = ()>,
) -> Vec<String> {
    let cms = h.dynamic("v1", "ConfigMap", Some(ns)).await;
    let list = cms.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let stream = cms
        .watch(
            &WatchParams::default()
                .labels(&format!("stages.metio.wtf/name={stageset}"))
                .timeout(60),
            &rv,
        )
        .await
        .unwrap();
    action.await;
    let mut stream = stream.boxed();
    let mut deleted = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while deleted.len() < count {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("deletions within the deadline")
            .expect("watch open")
            .unwrap();
        if let WatchEvent::Deleted(o) = ev {
            deleted.push(o.name_any());
        }
    }
    deleted
}

// --- Deletion teardown ---------------------------------------------------------

/// Deleting a StageSet removes its stages' objects in reverse stage order,
/// leaves `prune: false` stages in place, and releases the finalizer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_stageset_tears_down_in_reverse_order() {
    let h = Harness::start().await;
    let mut spec_stages = Vec::new();
    for stage in ["one", "two", "three"] {
        let art = h.artifact(
            &format!("{stage}.tar.gz"),
            &[("cm.yaml", &configmap(NS, &format!("cm-{stage}"), "x"))],
        );
        h.external_artifact(NS, stage, &art, "r1").await;
        spec_stages.push(json!({"name": stage, "sourceRef": {"name": stage}}));
    }
    let art = h.artifact(
        "orphan.tar.gz",
        &[("cm.yaml", &configmap(NS, "cm-orphan", "x"))],
    );
    h.external_artifact(NS, "orphan", &art, "r1").await;
    spec_stages.push(json!({"name": "orphan", "sourceRef": {"name": "orphan"}, "prune": false}));
    h.stageset(NS, "doomed", json!({"stages": spec_stages}))
        .await;
    h.wait_ready_reason(NS, "doomed", "Succeeded", "4 stage(s)")
        .await;
    let api = Api::<StageSet>::namespaced(h.client.clone(), NS);
    let order = deletion_order(&h, NS, "doomed", 3, async {
        api.delete("doomed", &DeleteParams::default())
            .await
            .unwrap();
    })
    .await;
    assert_eq!(order, ["cm-three", "cm-two", "cm-one"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt("doomed").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "finalizer released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "cm-orphan")
            .await
            .is_some(),
        "prune: false stage left in place"
    );
    // Shards are garbage-collected with their owner.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !shards(&h, NS, "stages.metio.wtf/stage-set=doomed")
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "shards collected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A teardown that cannot complete is abandoned: at once when the tenant is
/// forbidden to delete (`permanent`), after `--max-teardown-wait` when the
/// failure might heal (`timed_out`), each with a TeardownForced event and the
/// force-drop metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_teardowns_are_force_dropped() {
    let h = Harness::start_with(HarnessOptions {
        flags: vec!["--max-teardown-wait=1s".into()],
        ..Default::default()
    })
    .await;
    h.namespace("team").await;
    // "nodelete" may create ConfigMaps but never delete them.
    tenant(
        &h,
        "team",
        "nodelete",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "update"]}]),
    );
    tenant(
        &h,
        "team",
        "vanishing",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": all_verbs()}]),
    );
    let a = h.artifact(
        "a.tar.gz",
        &[("cm.yaml", &configmap("team", "undeletable", "x"))],
    );
    let b = h.artifact(
        "b.tar.gz",
        &[("cm.yaml", &configmap("team", "unreachable", "x"))],
    );
    h.external_artifact("team", "a", &a, "r1").await;
    h.external_artifact("team", "b", &b, "r1").await;
    h.stageset("team", "forbidden", json!({"serviceAccountName": "nodelete", "stages": [{"name": "s", "sourceRef": {"name": "a"}}]})).await;
    h.stageset("team", "orphaned", json!({"serviceAccountName": "vanishing", "stages": [{"name": "s", "sourceRef": {"name": "b"}}]})).await;
    h.wait_ready_reason("team", "forbidden", "Succeeded", "")
        .await;
    h.wait_ready_reason("team", "orphaned", "Succeeded", "")
        .await;
    // The second tenant's ServiceAccount disappears: its teardown cannot run.
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(h.client.clone(), "team")
        .delete("vanishing", &DeleteParams::default())
        .await
        .unwrap();
    let api = Api::<StageSet>::namespaced(h.client.clone(), "team");
    api.delete("forbidden", &DeleteParams::default())
        .await
        .unwrap();
    api.delete("orphaned", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt("forbidden").await.unwrap().is_some()
        || api.get_opt("orphaned").await.unwrap().is_some()
    {
        assert!(Instant::now() < deadline, "finalizers force-dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing was deleted with the controller's own identity.
    assert!(
        h.get_opt("v1", "ConfigMap", Some("team"), "undeletable")
            .await
            .is_some()
    );
    assert!(
        h.get_opt("v1", "ConfigMap", Some("team"), "unreachable")
            .await
            .is_some()
    );
    let forced: Vec<(String, String)> = h
        .events("team", "forbidden")
        .await
        .into_iter()
        .chain(h.events("team", "orphaned").await)
        .filter(|e| e.reason.as_deref() == Some("TeardownForced"))
        .map(|e| (e.involved_object.name.unwrap(), e.message.unwrap()))
        .collect();
    let by_name: BTreeMap<_, _> = forced.into_iter().collect();
    assert!(by_name["forbidden"].contains("(permanent)"), "{by_name:?}");
    assert!(
        by_name["forbidden"].contains("delete objects failed"),
        "{by_name:?}"
    );
    assert!(by_name["orphaned"].contains("(timed_out)"), "{by_name:?}");
    assert!(
        by_name["orphaned"].contains("serviceaccount \"vanishing\" not found"),
        "{by_name:?}"
    );
    let metrics = h.controller.as_ref().unwrap().metrics().encode();
    assert!(metrics.contains(r#"stageset_teardown_force_drop_total{namespace="team",name="forbidden",reason="permanent"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"stageset_teardown_force_drop_total{namespace="team",name="orphaned",reason="timed_out"} 1"#), "{metrics}");
}

// --- Lost inventory ---------------------------------------------------------

/// A StageInventory lost while the StageSet could not react (suspended) is
/// rebuilt from labelled live objects when a new revision arrives; that pass
/// says it skips pruning and asks for the next pass at once, which prunes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_inventory_is_reconstructed_without_pruning() {
    let h = Harness::start().await;
    let art = h.artifact(
        "r1.tar.gz",
        &[
            ("a.yaml", &configmap(NS, "a", "x")),
            ("b.yaml", &configmap(NS, "b", "x")),
        ],
    );
    h.external_artifact(NS, "src", &art, "r1").await;
    h.stageset(
        NS,
        "amnesia",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "src"}}]}),
    )
    .await;
    h.wait_ready_reason(NS, "amnesia", "Succeeded", "").await;
    // Suspended, so the deletion's immediate re-queue (api.md §3) finds nothing
    // to do and revision 2 meets the lost inventory.
    h.suspend(NS, "amnesia", true).await;
    h.wait_ready_reason(NS, "amnesia", "Suspended", "").await;
    h.dynamic("stages.metio.wtf/v1", "StageInventory", Some(NS))
        .await
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("stages.metio.wtf/stage-set=amnesia"),
        )
        .await
        .unwrap();
    // Revision 2 drops "b"; the inventory that would say so is gone.
    let art = h.artifact("r2.tar.gz", &[("a.yaml", &configmap(NS, "a", "x"))]);
    h.external_artifact(NS, "src", &art, "r2").await;
    h.suspend(NS, "amnesia", false).await;
    h.wait_stageset(NS, "amnesia", "r2 applied", |s| {
        ready(s).is_some_and(|r| r.0 == "True")
            && s.status
                .as_ref()
                .is_some_and(|st| st.last_applied_revisions.values().any(|v| v == "r2"))
    })
    .await;
    // The reconstruction pass rebuilt the record from the labelled live objects
    // and said it skips pruning. (Whether "b" is still there now depends on
    // whether a second trigger already ran the next pass, so it is not checked.)
    let events = h.events(NS, "amnesia").await;
    let note = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("InventoryReconstructed"))
        .expect("an InventoryReconstructed event");
    assert_eq!(note.type_.as_deref(), Some("Warning"));
    assert!(
        note.message
            .as_deref()
            .unwrap()
            .contains("pruning is skipped this pass")
    );
    // The next pass, requeued at once (no trigger needed), prunes with the
    // rebuilt record.
    wait_gone(&h, "v1", "ConfigMap", Some(NS), "b").await;
    let shard = shards(&h, NS, "stages.metio.wtf/stage-set=amnesia")
        .await
        .remove(0);
    assert_eq!(entry_ids(&shard), ["default_a__ConfigMap"]);
}

// --- Drift ------------------------------------------------------------------

/// Out-of-band changes are reverted on the drift-detection cadence without any
/// trigger, with a DriftCorrected event and metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_corrected_on_the_detection_interval() {
    let h = Harness::start().await;
    let art = h.artifact(
        "d.tar.gz",
        &[("cm.yaml", &configmap(NS, "watched", "desired"))],
    );
    h.external_artifact(NS, "d", &art, "r1").await;
    h.stageset(NS, "drifty", json!({"interval": "1h", "driftDetectionInterval": "1s", "stages": [{"name": "app", "sourceRef": {"name": "d"}}]}))
        .await;
    h.wait_ready_reason(NS, "drifty", "Succeeded", "").await;
    // Someone edits the object by hand (another field manager).
    h.dynamic("v1", "ConfigMap", Some(NS))
        .await
        .patch(
            "watched",
            &PatchParams::apply("kubectl-edit").force(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched"}, "data": {"value": "hacked"}}),
            ),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cm = h
            .get_opt("v1", "ConfigMap", Some(NS), "watched")
            .await
            .unwrap();
        if cm.data["data"]["value"] == "desired" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drift not corrected: {:?}",
            cm.data["data"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let event = loop {
        if let Some(e) = h
            .events(NS, "drifty")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("DriftCorrected"))
        {
            break e;
        }
        assert!(Instant::now() < deadline, "no DriftCorrected event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        event
            .message
            .unwrap()
            .contains("ConfigMap/default/watched configured")
    );
    let metrics = h.controller.as_ref().unwrap().metrics().encode();
    assert!(
        metrics.contains(
            r#"stageset_drift_corrected_total{namespace="default",name="drifty",stage="app"} 1"#
        ),
        "{metrics}"
    );

    // An edit as `kubectl edit` makes it (an Update, not an apply) that
    // changes a value and drops one of the controller's labels: the
    // one-request path must see it (docs/design/one-request-per-object.md).
    h.dynamic("v1", "ConfigMap", Some(NS))
        .await
        .patch(
            "watched",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({
                "metadata": {"labels": {"stages.metio.wtf/stage": null}},
                "data": {"value": "edited"}
            })),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cm = h
            .get_opt("v1", "ConfigMap", Some(NS), "watched")
            .await
            .unwrap();
        let label = cm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("stages.metio.wtf/stage"))
            .cloned();
        if cm.data["data"]["value"] == "desired" && label.as_deref() == Some("app") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drift not corrected: {:?} {:?}",
            cm.data,
            cm.metadata.labels
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = h.controller.as_ref().unwrap().metrics().encode();
        if metrics.contains(
            r#"stageset_drift_corrected_total{namespace="default",name="drifty",stage="app"} 2"#,
        ) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "second correction not counted: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- Conflict policies ------------------------------------------------------

fn deployment_with_selector(name: &str, selector: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {selector}}}\n  template:\n    metadata:\n      labels: {{app: {selector}}}\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.27\n"
    )
}

/// An immutable-field change fails the stage under `Fail` (retryably) and is
/// healed by switching the stage to a `Recreate` rule; `force: true` recreates
/// too; KeepExisting never updates an existing object; a rule recreating a
/// PVC without `allowDataLoss` is refused before anything is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_policies() {
    let h = Harness::start_with(HarnessOptions {
        auto_ready: Some(Duration::from_millis(10)),
        ..Default::default()
    })
    .await;
    let v1 = h.artifact(
        "w1.tar.gz",
        &[
            ("d.yaml", &deployment_with_selector("web", "web")),
            ("cm.yaml", &configmap(NS, "seed", "first")),
        ],
    );
    h.external_artifact(NS, "w", &v1, "r1").await;
    let stage = |extra: Value| {
        let mut s = json!({"name": "app", "sourceRef": {"name": "w"}});
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"stages": [s]})
    };
    let keep_seed = json!({"conflictPolicy": {"rules": [{"target": {"kind": "ConfigMap", "name": "seed"}, "action": "KeepExisting"}]}});
    h.stageset(NS, "conflicts", stage(keep_seed.clone())).await;
    h.wait_ready_reason(NS, "conflicts", "Succeeded", "").await;
    let original = h
        .get_opt("apps/v1", "Deployment", Some(NS), "web")
        .await
        .unwrap();
    let seed = h
        .get_opt("v1", "ConfigMap", Some(NS), "seed")
        .await
        .unwrap();
    assert_eq!(seed.annotations()["stages.metio.wtf/keep-existing"], "true");

    // r2 changes the Deployment's selector (immutable) and the seed's data.
    let v2 = h.artifact(
        "w2.tar.gz",
        &[
            ("d.yaml", &deployment_with_selector("web", "web-v2")),
            ("cm.yaml", &configmap(NS, "seed", "second")),
        ],
    );
    h.external_artifact(NS, "w", &v2, "r2").await;
    let ss = h
        .wait_ready_reason(NS, "conflicts", "StageFailed", "stage \"app\" apply:")
        .await;
    let message = ready(&ss).unwrap().2;
    assert!(message.contains("field is immutable"), "{message}");
    assert_eq!(
        h.get_opt("apps/v1", "Deployment", Some(NS), "web")
            .await
            .unwrap()
            .uid(),
        original.uid()
    );

    // A Recreate rule for Deployments heals it: deleted and created again.
    let mut rules = keep_seed.clone();
    rules["conflictPolicy"]["rules"].as_array_mut().unwrap().push(json!({"target": {"apiVersion": "apps/v1", "kind": "Deployment"}, "action": "Recreate"}));
    h.stageset(NS, "conflicts", stage(rules)).await;
    h.wait_ready_reason(NS, "conflicts", "Succeeded", "").await;
    let recreated = h
        .get_opt("apps/v1", "Deployment", Some(NS), "web")
        .await
        .unwrap();
    assert_ne!(recreated.uid(), original.uid(), "recreated");
    assert_eq!(
        recreated.data["spec"]["selector"]["matchLabels"]["app"],
        "web-v2"
    );
    let token = recreated.annotations()["stages.metio.wtf/force"].clone();
    assert_eq!(token.len(), 16, "a per-apply token: {token}");
    // KeepExisting: the seed ConfigMap kept its first content.
    let seed = h
        .get_opt("v1", "ConfigMap", Some(NS), "seed")
        .await
        .unwrap();
    assert_eq!(seed.data["data"]["value"], "first");

    // `force: true` (no conflictPolicy block) recreates too.
    let v3 = h.artifact(
        "w3.tar.gz",
        &[
            ("d.yaml", &deployment_with_selector("web", "web-v3")),
            ("cm.yaml", &configmap(NS, "seed", "second")),
        ],
    );
    h.stageset(NS, "conflicts", stage(json!({"force": true})))
        .await;
    h.external_artifact(NS, "w", &v3, "r3").await;
    h.wait_stageset(NS, "conflicts", "r3 Ready", |s| {
        ready(s).is_some_and(|r| r.0 == "True")
            && s.status
                .as_ref()
                .unwrap()
                .last_applied_revisions
                .values()
                .any(|v| v == "r3")
    })
    .await;
    let forced = h
        .get_opt("apps/v1", "Deployment", Some(NS), "web")
        .await
        .unwrap();
    assert_ne!(forced.uid(), recreated.uid());

    // The data-loss guard: a rule recreating a PVC needs allowDataLoss.
    let pvc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n  namespace: default\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n";
    let v4 = h.artifact(
        "w4.tar.gz",
        &[
            ("pvc.yaml", pvc),
            ("cm.yaml", &configmap(NS, "with-pvc", "x")),
        ],
    );
    h.stageset(NS, "conflicts", stage(json!({"conflictPolicy": {"rules": [{"target": {"kind": "PersistentVolumeClaim"}, "action": "Recreate"}]}}))).await;
    h.external_artifact(NS, "w", &v4, "r4").await;
    let ss = h
        .wait_ready_reason(NS, "conflicts", "StageFailed", "conflict policy: conflictPolicy refuses to recreate PersistentVolumeClaim \"data\": that destroys data; set the rule's allowDataLoss: true to permit it")
        .await;
    assert_eq!(stage_phase(&ss, "app").as_deref(), Some("Failed"));
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "with-pvc")
            .await
            .is_none(),
        "nothing applied"
    );
    assert!(
        h.get_opt("v1", "PersistentVolumeClaim", Some(NS), "data")
            .await
            .is_none()
    );
}

// --- Readiness checks -------------------------------------------------------

/// `disableWait` skips the applied objects, explicit `checks` are still waited
/// on (a cluster-scoped kind ignores the namespace given), and an
/// `onTimeout: Rollback` stage fails clearly instead of holding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_checks_disable_wait_and_on_timeout() {
    let h = Harness::start().await;
    let art = h.artifact("r.tar.gz", &[("d.yaml", &deployment(NS, "never-ready"))]);
    h.external_artifact(NS, "r", &art, "r1").await;
    // A cluster-scoped object the stage waits for, not created yet.
    h.stageset(
        NS,
        "checks",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "r"}, "readyChecks": {
            "disableWait": true,
            "checks": [{"apiVersion": "v1", "kind": "Namespace", "name": "prerequisite", "namespace": "ignored"}]
        }}]}),
    )
    .await;
    h.wait_stageset(NS, "checks", "verifying", |s| {
        stage_phase(s, "app").as_deref() == Some("Verifying")
    })
    .await;
    h.namespace("prerequisite").await;
    h.wait_ready_reason(NS, "checks", "Succeeded", "").await;

    // onTimeout: Rollback turns a progressing timeout into a failure.
    h.stageset(
        NS,
        "strict",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "r"}, "timeout": "1s", "onTimeout": "Rollback"}]}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "strict",
        "StageFailed",
        "stage \"app\" verify: timed out after 1s",
    )
    .await;
    // The default (Hold) keeps the objects and reports progress instead.
    h.stageset(
        NS,
        "patient",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "r"}, "timeout": "1s"}]}),
    )
    .await;
    let ss = h
        .wait_ready_reason(NS, "patient", "StageProgressing", "timed out after 1s")
        .await;
    assert_eq!(stage_phase(&ss, "app").as_deref(), Some("Verifying"));
}

// --- Isolation --------------------------------------------------------------

/// With `--watch-namespaces`, StageSets elsewhere are invisible; with
/// `--no-cross-namespace-refs`, a source in another namespace is refused with
/// a message that reveals nothing about that namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespaces_and_cross_namespace_refs() {
    // Everything exists before the controller starts, so its first lists of
    // both watched namespaces see StageSets in each.
    let mut h = Harness::start_with(HarnessOptions {
        flags: vec![
            "--watch-namespaces=a,c".into(),
            "--no-cross-namespace-refs".into(),
        ],
        start_controller: false,
        ..Default::default()
    })
    .await;
    for ns in ["a", "b", "c"] {
        h.namespace(ns).await;
    }
    let art = h.artifact("x.tar.gz", &[("cm.yaml", &configmap("a", "from-b", "x"))]);
    h.external_artifact("b", "shared", &art, "r1").await;
    let own = h.artifact(
        "own.tar.gz",
        &[("cm.yaml", &configmap("b", "unwatched", "x"))],
    );
    h.external_artifact("b", "own", &own, "r1").await;
    h.stageset(
        "b",
        "invisible",
        json!({"stages": [{"name": "s", "sourceRef": {"name": "own"}}]}),
    )
    .await;
    // Existing and missing sources in b get the same answer.
    h.stageset(
        "a",
        "reaching",
        json!({"stages": [{"name": "s", "sourceRef": {"name": "shared", "namespace": "b"}}]}),
    )
    .await;
    h.stageset("a", "probing", json!({"stages": [{"name": "s", "sourceRef": {"name": "no-such-thing", "namespace": "b"}}]})).await;
    let c1 = h.artifact("c1.tar.gz", &[("cm.yaml", &configmap("c", "in-c", "1"))]);
    h.external_artifact("c", "csrc", &c1, "r1").await;
    h.stageset(
        "c",
        "watched-c",
        json!({"stages": [{"name": "s", "sourceRef": {"name": "csrc"}}]}),
    )
    .await;
    h.start_controller().await;
    let reaching = h
        .wait_ready_reason("a", "reaching", "ResolveFailed", "")
        .await;
    let probing = h
        .wait_ready_reason("a", "probing", "ResolveFailed", "")
        .await;
    let m1 = ready(&reaching).unwrap().2;
    let m2 = ready(&probing).unwrap().2;
    assert!(m1.contains("cross-namespace"), "{m1}");
    assert_eq!(
        m1.replace("shared", "X"),
        m2.replace("no-such-thing", "X"),
        "no existence oracle"
    );
    assert!(
        h.get_opt("v1", "ConfigMap", Some("a"), "from-b")
            .await
            .is_none()
    );
    // The StageSet in b was never touched: no finalizer, no status, no objects.
    let invisible = h.get_stageset("b", "invisible").await;
    assert!(invisible.metadata.finalizers.is_none());
    assert!(invisible.status.is_none());
    assert!(
        h.get_opt("v1", "ConfigMap", Some("b"), "unwatched")
            .await
            .is_none()
    );
    // Both watched namespaces stay live: a StageSet in the second one rolls
    // out, and keeps following its source after the first namespace's watch
    // listed (one namespace's list never evicts the other's StageSets).
    h.wait_ready_reason("c", "watched-c", "Succeeded", "").await;
    roll_out(
        &h,
        "c",
        "watched-c",
        "csrc",
        &[("cm.yaml", &configmap("c", "in-c", "2"))],
        "r2",
    )
    .await;
    let cm = h
        .get_opt("v1", "ConfigMap", Some("c"), "in-c")
        .await
        .unwrap();
    assert_eq!(cm.data["data"]["value"], "2");
}

/// A tenant that may manage Deployments but not ClusterRoles cannot get a
/// ClusterRole created by shipping one: the stage is RBACDenied and nothing of
/// it is written (ClusterRoles are applied first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_escalate_through_its_artifact() {
    let h = Harness::start().await;
    h.namespace("team").await;
    tenant(
        &h,
        "team",
        "deployer",
        json!([
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": all_verbs()},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": all_verbs()}
        ]),
    );
    let sneaky = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: tenant-superpowers\nrules:\n- apiGroups: ['*']\n  resources: ['*']\n  verbs: ['*']\n";
    let art = h.artifact(
        "esc.tar.gz",
        &[
            ("cr.yaml", sneaky),
            ("d.yaml", &deployment("team", "app")),
            ("cm.yaml", &configmap("team", "cfg", "x")),
        ],
    );
    h.external_artifact("team", "esc", &art, "r1").await;
    h.stageset("team", "escalate", json!({"serviceAccountName": "deployer", "stages": [{"name": "s", "sourceRef": {"name": "esc"}}]})).await;
    let ss = h
        .wait_ready_reason(
            "team",
            "escalate",
            "RBACDenied",
            "clusterroles \"tenant-superpowers\"",
        )
        .await;
    assert_eq!(stage_phase(&ss, "s").as_deref(), Some("Failed"));
    assert!(
        h.get_opt(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            None,
            "tenant-superpowers"
        )
        .await
        .is_none()
    );
    assert!(
        h.get_opt("apps/v1", "Deployment", Some("team"), "app")
            .await
            .is_none(),
        "nothing half-applied"
    );
    assert!(
        h.get_opt("v1", "ConfigMap", Some("team"), "cfg")
            .await
            .is_none()
    );
}

/// A stage's own ServiceAccount is used for its prune, not the StageSet's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_service_accounts_prune_their_own_objects() {
    let h = Harness::start().await;
    h.namespace("team").await;
    // The StageSet-level SA may only read; the stage SA may manage ConfigMaps.
    tenant(
        &h,
        "team",
        "reader",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]),
    );
    tenant(
        &h,
        "team",
        "writer",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": all_verbs()}]),
    );
    let art = h.artifact(
        "s1.tar.gz",
        &[
            ("a.yaml", &configmap("team", "a", "x")),
            ("b.yaml", &configmap("team", "b", "x")),
        ],
    );
    h.external_artifact("team", "s", &art, "r1").await;
    h.stageset("team", "split", json!({"serviceAccountName": "reader", "stages": [{"name": "app", "serviceAccountName": "writer", "sourceRef": {"name": "s"}}]})).await;
    h.wait_ready_reason("team", "split", "Succeeded", "").await;
    roll_out(
        &h,
        "team",
        "split",
        "s",
        &[("a.yaml", &configmap("team", "a", "x"))],
        "r2",
    )
    .await;
    assert!(
        h.get_opt("v1", "ConfigMap", Some("team"), "b")
            .await
            .is_none(),
        "pruned as the stage SA"
    );
    // An identity that may apply but not delete gets a clear RBACDenied
    // naming the prune, and the object stays.
    tenant(
        &h,
        "team",
        "nodelete",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "update"]}]),
    );
    let art = h.artifact(
        "n1.tar.gz",
        &[
            ("c.yaml", &configmap("team", "c", "x")),
            ("d.yaml", &configmap("team", "d", "x")),
        ],
    );
    h.external_artifact("team", "n", &art, "r1").await;
    h.stageset("team", "stuck", json!({"stages": [{"name": "app", "serviceAccountName": "nodelete", "sourceRef": {"name": "n"}}]})).await;
    h.wait_ready_reason("team", "stuck", "Succeeded", "").await;
    let art = h.artifact("n2.tar.gz", &[("c.yaml", &configmap("team", "c", "x"))]);
    h.external_artifact("team", "n", &art, "r2").await;
    let ss = h
        .wait_ready_reason(
            "team",
            "stuck",
            "RBACDenied",
            "stage \"app\" prune: delete ConfigMap/team/d",
        )
        .await;
    assert_eq!(
        stage_phase(&ss, "app").as_deref(),
        Some("Ready"),
        "the stage itself is applied"
    );
    assert!(
        h.get_opt("v1", "ConfigMap", Some("team"), "d")
            .await
            .is_some()
    );
}

/// CEL `readyChecks.exprs`: a stage waits until `current` holds for every
/// applied object of the kind, fails at once when `failed` holds, and a
/// StageSet whose expression does not compile applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cel_ready_expressions() {
    let h = Harness::start().await;
    h.sim
        .load(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}))
        .unwrap();
    h.wait_exists(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        "widgets.example.com",
    )
    .await;
    let widget = |name: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  size: 1\n"
        )
    };
    let art = h.artifact(
        "w.tar.gz",
        &[("a.yaml", &widget("good")), ("b.yaml", &widget("bad"))],
    );
    h.external_artifact(NS, "w", &art, "r1").await;
    let exprs = json!([{"apiVersion": "example.com/v1", "kind": "Widget",
        "current": "has(status.phase) && status.phase == 'Ready'",
        "inProgress": "has(status.phase) && status.phase == 'Starting'",
        "failed": "has(status.phase) && status.phase == 'Broken'"}]);
    h.stageset(NS, "celled", json!({"stages": [{"name": "app", "sourceRef": {"name": "w"}, "readyChecks": {"exprs": exprs}}]}))
        .await;
    h.wait_stageset(NS, "celled", "verifying", |s| {
        stage_phase(s, "app").as_deref() == Some("Verifying")
    })
    .await;
    let widgets = h.dynamic("example.com/v1", "Widget", Some(NS)).await;
    widgets
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    // Still waiting for "bad"; then it breaks, which fails the stage at once.
    h.wait_stageset(NS, "celled", "still verifying", |s| {
        stage_phase(s, "app").as_deref() == Some("Verifying")
    })
    .await;
    widgets
        .patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Broken"}})),
        )
        .await
        .unwrap();
    // Ready and the stage phase are read together: a back-off retry may
    // already be verifying again (and fails the same way).
    h.wait_stageset(NS, "celled", "failed by the expression", |s| {
        ready(s).is_some_and(|(_, r, m)| {
            r == "StageFailed" && m.contains("readyCheck failed for Widget/default/bad")
        }) && stage_phase(s, "app").as_deref() == Some("Failed")
    })
    .await;
    // Fixed: the next attempt (back-off) sees both Ready.
    widgets
        .patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    h.wait_ready_reason(NS, "celled", "Succeeded", "").await;

    // An expression that does not compile: InvalidSpec, nothing applied.
    let other = h.artifact(
        "o.tar.gz",
        &[("c.yaml", &configmap(NS, "not-applied", "x"))],
    );
    h.external_artifact(NS, "o", &other, "r1").await;
    h.stageset(
        NS,
        "broken-cel",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "o"}, "readyChecks": {"exprs": [
        {"apiVersion": "v1", "kind": "ConfigMap", "current": "data.value =="}]}}]}),
    )
    .await;
    let ss = h
        .wait_ready_reason(
            NS,
            "broken-cel",
            "InvalidSpec",
            // The admission rules run at reconcile time too (R5), before any
            // stage starts.
            "stage \"app\" readyChecks.exprs[0] current \"data.value ==\": compile CEL:",
        )
        .await;
    assert_eq!(stage_phase(&ss, "app"), None, "no stage was started");
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "not-applied")
            .await
            .is_none()
    );
}

/// api.md §3: a StageInventory deleted or edited by someone else wakes its
/// StageSet at once (the interval here is an hour), which restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_inventories_changed_by_others_requeue_the_stageset() {
    let h = Harness::start().await;
    let art = h.artifact(
        "inv-watch.tar.gz",
        &[("cm.yaml", &configmap(NS, "watched", "x"))],
    );
    h.external_artifact(NS, "src", &art, "r1").await;
    h.stageset(
        NS,
        "watched",
        json!({"interval": "1h", "stages": [{"name": "app", "sourceRef": {"name": "src"}}]}),
    )
    .await;
    h.wait_ready_reason(NS, "watched", "Succeeded", "").await;
    let selector = "stages.metio.wtf/stage-set=watched";
    let before = shards(&h, NS, selector).await;
    assert_eq!(before.len(), 1);
    let shard = before[0].name_any();
    let api = h
        .dynamic("stages.metio.wtf/v1", "StageInventory", Some(NS))
        .await;

    // Someone empties the shard: the StageSet reconciles and restores it.
    api.patch(
        &shard,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"entries": []}})),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = api.get(&shard).await.unwrap();
        if entry_ids(&now) == entry_ids(&before[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "edited shard not restored: {:?}",
            now.data
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Someone deletes the shard: it comes back.
    api.delete(&shard, &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(now) = api.get_opt(&shard).await.unwrap()
            && entry_ids(&now) == entry_ids(&before[0])
        {
            break;
        }
        assert!(Instant::now() < deadline, "deleted shard not recreated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
