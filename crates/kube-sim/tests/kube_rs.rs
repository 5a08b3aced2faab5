//! kube-sim driven by kube-rs: the client and the watcher our controller uses.

#![recursion_limit = "512"]

mod common;

use std::collections::BTreeMap;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::{Value, json};

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "demo"}},
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
    }))
    .unwrap()
}

fn status_of(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_optimistic_concurrency_and_errors() {
    let sim = start();
    let client = client(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = cms
        .create(&PostParams::default(), &cm("a", &[("k", "v")]))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(
        meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some()
    );
    assert!(meta.generation.is_none(), "ConfigMaps carry no generation");

    let err = status_of(
        cms.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"a\" already exists");

    let err = status_of(cms.get("missing").await.unwrap_err());
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (404, "NotFound", "configmaps \"missing\" not found")
    );

    // Update with the current resourceVersion succeeds, a stale one conflicts.
    let mut fresh = cms.get("a").await.unwrap();
    fresh.data.as_mut().unwrap().insert("k".into(), "v2".into());
    let updated = cms
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    let mut stale = created.clone();
    stale.data.as_mut().unwrap().insert("k".into(), "v3".into());
    let err = status_of(
        cms.replace("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );

    // Merge and JSON patches.
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"m": "1"}})),
    )
    .await
    .unwrap();
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/k", "value": "jp"}]))
            .unwrap();
    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["k"], "jp");
    assert_eq!(patched.data.as_ref().unwrap()["m"], "1");

    // Creating into a missing namespace fails like a real server.
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let err = status_of(
        other
            .create(&PostParams::default(), &cm("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );

    // Delete returns a Status when the object is gone at once.
    let deleted = cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right());
    assert!(cms.get_opt("a").await.unwrap().is_none());
}

#[tokio::test]
async fn list_selectors_pagination_and_generate_name() {
    let sim = start();
    let client = client(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        let mut c = cm(&format!("p{i}"), &[]);
        c.metadata.labels = Some(BTreeMap::from([("idx".to_string(), (i % 2).to_string())]));
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let odd = cms
        .list(&ListParams::default().labels("idx=1"))
        .await
        .unwrap();
    assert_eq!(odd.items.len(), 3);
    let named = cms
        .list(&ListParams::default().fields("metadata.name=p2"))
        .await
        .unwrap();
    assert_eq!(named.items.len(), 1);
    let err = status_of(
        cms.list(&ListParams::default().fields("data.x=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (400, "field label not supported: data.x")
    );

    // Pages of 3 with continue tokens see one snapshot.
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let first = cms.list(&lp).await.unwrap();
    let snapshot_rv = first.metadata.resource_version.clone();
    names.extend(first.items.iter().map(|c| c.metadata.name.clone().unwrap()));
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    cms.create(&PostParams::default(), &cm("zz-after-first-page", &[]))
        .await
        .unwrap();
    let mut token = first.metadata.continue_;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        lp = lp.continue_token(&t);
        let page = cms.list(&lp).await.unwrap();
        assert_eq!(page.metadata.resource_version, snapshot_rv);
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        token = page.metadata.continue_;
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);

    // generateName.
    let mut g = cm("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = cms.create(&PostParams::default(), &g).await.unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn watcher_sees_changes_and_recovers_from_compaction() {
    let sim = start();
    let client = client(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("w0", &[]))
        .await
        .unwrap();
    let mut stream = watcher(cms.clone(), watcher::Config::default().labels("app=demo")).boxed();
    // The initial list.
    let mut seen_init = false;
    while let Some(ev) = stream.try_next().await.unwrap() {
        match ev {
            watcher::Event::InitApply(c) => assert_eq!(c.metadata.name.as_deref(), Some("w0")),
            watcher::Event::InitDone => {
                seen_init = true;
                break;
            }
            _ => {}
        }
    }
    assert!(seen_init);
    cms.create(&PostParams::default(), &cm("w1", &[]))
        .await
        .unwrap();
    cms.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "y"}})),
    )
    .await
    .unwrap();
    cms.delete("w1", &DeleteParams::default()).await.unwrap();
    let mut applies = 0;
    loop {
        match stream.try_next().await.unwrap().unwrap() {
            watcher::Event::Apply(c) if c.metadata.name.as_deref() == Some("w1") => applies += 1,
            watcher::Event::Delete(c) => {
                assert_eq!(c.metadata.name.as_deref(), Some("w1"));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(applies, 2);

    // A label change moving an object out of the selector is a deletion for the watcher.
    cms.patch(
        "w0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    match stream.try_next().await.unwrap().unwrap() {
        watcher::Event::Delete(c) => assert_eq!(c.metadata.name.as_deref(), Some("w0")),
        other => panic!("expected a delete, got {other:?}"),
    }

    // A watch from a compacted resourceVersion gets 410, and the watcher re-lists.
    let old_rv = sim.resource_version();
    cms.create(&PostParams::default(), &cm("w2", &[]))
        .await
        .unwrap();
    sim.compact();
    let raw = cms
        .watch(&kube::api::WatchParams::default(), &old_rv.to_string())
        .await
        .unwrap();
    let events: Vec<_> = raw.collect::<Vec<_>>().await;
    match &events[0] {
        Ok(kube::core::WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn crds_are_served_validated_and_have_status_semantics() {
    let sim = start();
    let client = client(&sim).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(widget_crd()).unwrap(),
    )
    .await
    .unwrap();
    let crd = eventually("the CRD to be Established", || async {
        let c = crds.get("widgets.example.com").await.ok()?;
        let established = c
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(c)
    })
    .await;
    assert!(
        crd.metadata
            .finalizers
            .unwrap()
            .contains(&"customresourcecleanup.apiextensions.k8s.io".to_string())
    );

    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Widget")
        .expect("Widget is discovered");
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "widgets/status" || s.plural == "status")
    );

    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let widget = |name: &str, spec: Value| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})).unwrap()
    };
    // Schema errors are 422 with field causes.
    let err = status_of(
        widgets
            .create(
                &PostParams::default(),
                &widget("bad", json!({"size": "huge", "name": "UP"})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .starts_with("Widget.example.com \"bad\" is invalid"),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("spec.size: Unsupported value: \"huge\""),
        "{}",
        err.message
    );
    let err = status_of(
        widgets
            .create(&PostParams::default(), &widget("bad", json!({})))
            .await
            .unwrap_err(),
    );
    assert!(
        err.message.contains("spec.size: Required value"),
        "{}",
        err.message
    );
    let err = status_of(
        widgets
            .create(
                &PostParams::default(),
                &widget("bad", json!({"size": "small", "replicas": 20})),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        err.message
            .contains("more than 10 replicas need size large"),
        "{}",
        err.message
    );

    // Defaults applied; status dropped on create; generation 1.
    let mut w = widget("w", json!({"size": "small"}));
    w.data["status"] = json!({"ready": true});
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.data["spec"]["replicas"], 1);
    assert!(created.data.get("status").is_none());
    assert_eq!(created.metadata.generation, Some(1));

    // Status subresource: spec changes ignored there, status changes ignored on the main resource.
    let pp = PatchParams::default();
    let s = widgets
        .patch_status(
            "w",
            &pp,
            &Patch::Merge(json!({"status": {"ready": true}, "spec": {"size": "large"}})),
        )
        .await
        .unwrap();
    assert_eq!(s.data["status"]["ready"], true);
    assert_eq!(s.data["spec"]["size"], "small");
    assert_eq!(
        s.metadata.generation,
        Some(1),
        "a status write is no spec change"
    );
    let m = widgets
        .patch(
            "w",
            &pp,
            &Patch::Merge(json!({"status": {"ready": false}, "spec": {"size": "large"}})),
        )
        .await
        .unwrap();
    assert_eq!(m.data["status"]["ready"], true);
    assert_eq!(m.metadata.generation, Some(2));
    // Metadata-only change: no generation bump.
    let m = widgets
        .patch(
            "w",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(m.metadata.generation, Some(2));

    // Strategic merge patch is refused for custom resources.
    let err = status_of(
        widgets
            .patch(
                "w",
                &pp,
                &Patch::Strategic(json!({"spec": {"size": "small"}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 415);

    // Deleting the CRD removes the instances and stops serving the kind.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the CRD to disappear", || async {
        crds.get_opt("widgets.example.com")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let gone = widgets.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(status_of(gone).code, 404);
}

#[tokio::test]
async fn server_side_apply_ownership_conflicts_and_removal() {
    let sim = start();
    let client = client(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let apply = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": data});

    let a = PatchParams::apply("manager-a");
    let created = cms
        .patch("s", &a, &Patch::Apply(apply(json!({"x": "1", "y": "2"}))))
        .await
        .unwrap();
    let mf = created.metadata.managed_fields.unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("manager-a"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Same value from another manager: shared, no conflict.
    let b = PatchParams::apply("manager-b");
    cms.patch("s", &b, &Patch::Apply(apply(json!({"x": "1"}))))
        .await
        .unwrap();
    // Different value: conflict naming the owner and the field.
    let err = status_of(
        cms.patch("s", &b, &Patch::Apply(apply(json!({"y": "other"}))))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("conflict with \"manager-a\""),
        "{}",
        err.message
    );
    assert!(err.message.contains(".data.y"), "{}", err.message);
    // Force takes it over.
    let forced = cms
        .patch(
            "s",
            &b.clone().force(),
            &Patch::Apply(apply(json!({"x": "1", "y": "other"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["y"], "other");

    // manager-a stops applying x: x stays (manager-b co-owns it); y is not a's any more.
    let after = cms
        .patch("s", &a, &Patch::Apply(apply(json!({}))))
        .await
        .unwrap();
    assert_eq!(after.data.as_ref().unwrap()["x"], "1");
    // manager-b stops applying y: y is removed (nobody owns it).
    let after = cms
        .patch("s", &b, &Patch::Apply(apply(json!({"x": "1"}))))
        .await
        .unwrap();
    assert!(
        after.data.as_ref().unwrap().get("y").is_none(),
        "{:?}",
        after.data
    );

    // An unchanged re-apply does not write.
    let before = cms.get("s").await.unwrap().metadata.resource_version;
    let again = cms
        .patch("s", &b, &Patch::Apply(apply(json!({"x": "1"}))))
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, before);

    // Dry run changes nothing.
    let dry = cms
        .patch(
            "s",
            &PatchParams::apply("manager-b").dry_run(),
            &Patch::Apply(apply(json!({"x": "dry"}))),
        )
        .await
        .unwrap();
    assert_eq!(dry.data.as_ref().unwrap()["x"], "dry");
    assert_eq!(cms.get("s").await.unwrap().data.unwrap()["x"], "1");

    // Containers merge by name in a Deployment.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = |image: &str, with_sidecar: bool| {
        let mut containers = vec![json!({"name": "app", "image": image})];
        if with_sidecar {
            containers.push(json!({"name": "sidecar", "image": "busybox:1"}));
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers}}}})
    };
    deploys
        .patch(
            "d",
            &PatchParams::apply("ops"),
            &Patch::Apply(d("nginx:1", true)),
        )
        .await
        .unwrap();
    let out = deploys
        .patch(
            "d",
            &PatchParams::apply("ops"),
            &Patch::Apply(d("nginx:2", false)),
        )
        .await
        .unwrap();
    let containers = out.spec.template.spec.unwrap().containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].image.as_deref(), Some("nginx:2"));
    assert_eq!(
        containers[0].image_pull_policy.as_deref(),
        Some("IfNotPresent"),
        "built-in defaults applied"
    );

    // Re-applies that only change values keep the fields in the applier's
    // Apply entry (even within one second, when the entry looks the same),
    // so a later apply that drops them removes them.
    let c = PatchParams::apply("manager-c");
    let data = |d: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": d});
    for v in ["1", "2", "3"] {
        cms.patch("c", &c, &Patch::Apply(data(json!({"k": v, "keep": "x"}))))
            .await
            .unwrap();
    }
    let out = cms
        .patch("c", &c, &Patch::Apply(data(json!({"keep": "x"}))))
        .await
        .unwrap();
    assert!(
        out.data.as_ref().unwrap().get("k").is_none(),
        "{:?}",
        out.data
    );
    let entries = out.metadata.managed_fields.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].operation.as_deref(), Some("Apply"));
}

#[tokio::test]
async fn finalizers_garbage_collection_and_namespace_deletion() {
    let sim = start();
    let client = client(&sim).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    // The service-account controller's default SA exists.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "team");
    sas.get("default").await.unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let mut owner = cm("owner", &[]);
    owner.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let mut dep = cm("dependent", &[]);
    dep.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    cms.create(&PostParams::default(), &dep).await.unwrap();

    // A finalizer holds the deletion: 202 with deletionTimestamp set.
    let pending = cms.delete("owner", &DeleteParams::default()).await.unwrap();
    let held = pending.left().expect("the object is still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    // No new finalizers on a deleting object.
    let err = status_of(
        cms.patch(
            "owner",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "x/y"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    // Removing the finalizer completes the deletion and the dependent is collected.
    cms.patch(
        "owner",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("owner and dependent to be gone", || async {
        (cms.get_opt("owner").await.unwrap().is_none()
            && cms.get_opt("dependent").await.unwrap().is_none())
        .then_some(())
    })
    .await;

    // Orphan propagation keeps the dependent and strips its ownerReference.
    let owner = cms
        .create(&PostParams::default(), &cm("owner2", &[]))
        .await
        .unwrap();
    let mut dep = cm("dep2", &[]);
    dep.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner2".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    cms.create(&PostParams::default(), &dep).await.unwrap();
    cms.delete("owner2", &DeleteParams::orphan()).await.unwrap();
    let kept = eventually("owner2 gone, dep2 orphaned", || async {
        if cms.get_opt("owner2").await.unwrap().is_some() {
            return None;
        }
        cms.get_opt("dep2").await.unwrap()
    })
    .await;
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // Deleting the namespace deletes its contents, waiting for their finalizers.
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    let ns = namespaces.get("team").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let err = status_of(
        cms.create(&PostParams::default(), &cm("late", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    assert!(
        err.message.contains("because it is being terminated"),
        "{}",
        err.message
    );
    assert!(
        cms.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the namespace to go away", || async {
        namespaces
            .get_opt("team")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn rbac_and_impersonation() {
    let sim = start();
    let admin = client(&sim).await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    // A "controller" user allowed to impersonate the team's deployer SA only.
    let cr: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "impersonator"},
        "rules": [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"], "resourceNames": ["deployer"]},
                  {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"], "resourceNames": ["system:serviceaccounts", "system:authenticated"]}]
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &cr)
        .await
        .unwrap();
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "impersonator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:admin-impersonated"}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap();
    // The deployer SA may manage ConfigMaps in "team".
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "deployer", "namespace": "team"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create", "patch", "update"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), "team")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "deployer", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
        "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "team"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "team")
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();

    // The SA (impersonated by the admin) can write ConfigMaps in team but not in default.
    let sa = impersonating(
        &sim,
        "system:serviceaccount:team:deployer",
        &["system:serviceaccounts", "system:authenticated"],
    )
    .await;
    Api::<ConfigMap>::namespaced(sa.clone(), "team")
        .create(&PostParams::default(), &cm("ok", &[]))
        .await
        .unwrap();
    let err = status_of(
        Api::<ConfigMap>::namespaced(sa.clone(), "default")
            .create(&PostParams::default(), &cm("no", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "configmaps is forbidden: User \"system:serviceaccount:team:deployer\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    let err = status_of(
        Api::<Deployment>::namespaced(sa.clone(), "team")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert!(
        err.message
            .contains("cannot list resource \"deployments\" in API group \"apps\""),
        "{}",
        err.message
    );

    // A user without the impersonate verb cannot impersonate.
    let sim2 = start_with(kube_sim::Options {
        users: vec!["bob:bob-token".parse().unwrap()],
        ..kube_sim::Options::default()
    });
    let bob = client_for_context(&sim2, Some("bob")).await;
    let err = status_of(
        Api::<ConfigMap>::namespaced(bob.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&sim2.kubeconfig()).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions {
            context: Some("bob".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    cfg.auth_info.impersonate = Some("system:serviceaccount:team:deployer".into());
    let bob_as_sa = kube::Client::try_from(cfg).unwrap();
    let err = status_of(
        Api::<ConfigMap>::namespaced(bob_as_sa, "team")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    // Kubernetes 1.37 (constrained impersonation, on by default) reports the
    // first mode it tried for a service-account user.
    assert_eq!(
        err.message,
        "configmaps is forbidden: User \"bob\" cannot impersonate-on:serviceaccount:list resource \"configmaps\" in API group \"\" in the namespace \"team\""
    );

    // SelfSubjectAccessReview answers from the same evaluator.
    let ssar: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
        Api::all(sa.clone());
    let review = ssar
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"resourceAttributes": {"namespace": "team", "verb": "create", "resource": "configmaps"}}})).unwrap(),
        )
        .await
        .unwrap();
    assert!(review.status.unwrap().allowed);
}

#[tokio::test]
async fn dynamic_objects_and_ready_helpers() {
    let sim = start();
    let client = client(&sim).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let d = deploys.get("web").await.unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    assert!(
        d.status
            .as_ref()
            .is_none_or(|s| s.observed_generation.is_none())
    );
    sim.set_ready("apps/v1", "Deployment", "default", "web")
        .unwrap();
    let d = deploys.get("web").await.unwrap();
    let s = d.status.unwrap();
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.available_replicas, Some(2));
    sim.set_failed("apps/v1", "Deployment", "default", "web")
        .unwrap();
    let d = deploys.get("web").await.unwrap();
    let progressing = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("ProgressDeadlineExceeded")
    );

    // Auto-ready mode makes workloads ready shortly after they change.
    let auto = start_with(kube_sim::Options {
        config: kube_sim::SimConfig {
            auto_ready: Some(std::time::Duration::from_millis(50)),
            ..Default::default()
        },
        ..kube_sim::Options::default()
    });
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(client_for_context(&auto, None).await, "default");
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "j", "image": "busybox:1"}]}}}})).unwrap(),
    )
    .await
    .unwrap();
    eventually("the job to complete", || async {
        let j = jobs.get("j").await.ok()?;
        j.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(())
    })
    .await;

    // The dynamic API with a GVK.
    let gvk = GroupVersionKind::gvk("", "v1", "ConfigMap");
    let ar = ApiResource::from_gvk(&gvk);
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dyn"}, "data": {"a": "b"}})).unwrap();
    dynamic.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(dynamic.get("dyn").await.unwrap().data["data"]["a"], "b");
}

#[tokio::test]
async fn webhook_failure_policies_and_dry_run() {
    let hook = TestWebhook::start("guard.default.svc", deny_labelled);
    let sim = start_with(kube_sim::Options {
        config: kube_sim::SimConfig {
            service_map: [
                ("default/guard".to_string(), hook.addr.to_string()),
                // Nothing listens on port 9 (discard) on loopback.
                ("default/down".to_string(), "127.0.0.1:9".to_string()),
                ("default/lenient".to_string(), "127.0.0.1:9".to_string()),
            ]
            .into(),
            ..Default::default()
        },
        ..kube_sim::Options::default()
    });
    let client = client(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    sim.load(webhook_config("guard", &hook.ca_bundle(), "Fail", "None"))
        .unwrap();
    let mut denied = cm("bad", &[]);
    denied.metadata.labels = Some(BTreeMap::from([("deny".to_string(), "true".to_string())]));
    let err = status_of(
        cms.create(&PostParams::default(), &denied)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "admission webhook \"guard.example.com\" denied the request: objects labelled deny=true are not welcome here"
    );
    // Allowed objects pass; the webhook also sees dry runs (sideEffects: None).
    cms.create(&PostParams::default(), &cm("good", &[]))
        .await
        .unwrap();
    let err = status_of(
        cms.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &denied,
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 403);

    // An unreachable webhook fails closed with failurePolicy Fail...
    sim.load(webhook_config("down", &hook.ca_bundle(), "Fail", "None"))
        .unwrap();
    let err = status_of(
        cms.create(&PostParams::default(), &cm("blocked", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 500);
    assert!(
        err.message
            .contains("failed calling webhook \"down.example.com\""),
        "{}",
        err.message
    );
    // ...and is skipped with Ignore.
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
        client.clone(),
    )
    .delete("down", &DeleteParams::default())
    .await
    .unwrap();
    sim.load(webhook_config(
        "lenient",
        &hook.ca_bundle(),
        "Ignore",
        "Unknown",
    ))
    .unwrap();
    cms.create(&PostParams::default(), &cm("passes", &[]))
        .await
        .unwrap();
    // A webhook with unknown side effects refuses dry runs.
    let err = status_of(
        cms.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &cm("dry", &[]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("does not support dry run"),
        "{}",
        err.message
    );
    // A wrong CA fails the TLS verification: closed.
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
        client.clone(),
    )
    .delete("lenient", &DeleteParams::default())
    .await
    .unwrap();
    let other_ca = kube_sim::tls::generate(&[]).unwrap().ca_pem;
    use base64::Engine;
    let wrong = base64::engine::general_purpose::STANDARD.encode(other_ca);
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(client.clone())
        .patch("guard", &PatchParams::default(), &Patch::Merge(json!({"webhooks": [serde_json::from_value::<Value>(webhook_config("guard", &wrong, "Fail", "None")["webhooks"][0].clone()).unwrap()]})))
        .await
        .unwrap();
    let err = status_of(
        cms.create(&PostParams::default(), &cm("tls", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 500);
}

#[tokio::test]
async fn events_k8s_io_share_storage_with_core_events() {
    let sim = start();
    let client = client(&sim).await;
    let new_api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let ev: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "stageset-controller",
        "reportingInstance": "stageset-controller-0",
        "action": "Succeeded",
        "reason": "Succeeded",
        "type": "Normal",
        "note": "Applied and verified 1 stage(s)",
        "regarding": {"apiVersion": "stages.metio.wtf/v1", "kind": "StageSet", "name": "app", "namespace": "default"}
    }))
    .unwrap();
    new_api.create(&PostParams::default(), &ev).await.unwrap();
    // Read through the core API, as kubectl describe does.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let listed = core
        .list(&ListParams::default().fields("involvedObject.kind=StageSet,involvedObject.name=app"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let e = &listed.items[0];
    assert_eq!(
        e.message.as_deref(),
        Some("Applied and verified 1 stage(s)")
    );
    assert_eq!(
        e.reporting_component.as_deref(),
        Some("stageset-controller")
    );
    // And back through events.k8s.io with its own field names and selectors.
    let again = new_api
        .list(&ListParams::default().fields("regarding.name=app,reason=Succeeded"))
        .await
        .unwrap();
    assert_eq!(
        again.items[0].note.as_deref(),
        Some("Applied and verified 1 stage(s)")
    );
}

#[tokio::test]
async fn streaming_list_watch_with_bookmarks() {
    let sim = start_with(kube_sim::Options {
        config: kube_sim::SimConfig {
            bookmark_interval: std::time::Duration::from_millis(100),
            ..Default::default()
        },
        ..kube_sim::Options::default()
    });
    let client = client(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("s0", &[]))
        .await
        .unwrap();
    // sendInitialEvents + bookmarks: the watcher's streaming-list mode.
    let mut stream = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut got_init_done = false;
    while let Some(ev) = stream.try_next().await.unwrap() {
        if matches!(ev, watcher::Event::InitDone) {
            got_init_done = true;
            break;
        }
    }
    assert!(got_init_done);
    cms.create(&PostParams::default(), &cm("s1", &[]))
        .await
        .unwrap();
    loop {
        if let watcher::Event::Apply(c) = stream.try_next().await.unwrap().unwrap()
            && c.metadata.name.as_deref() == Some("s1")
        {
            break;
        }
    }
    // Raw watch with bookmarks: a BOOKMARK carrying a resourceVersion arrives.
    let rv = sim.resource_version().to_string();
    let mut raw = cms
        .watch(
            &kube::api::WatchParams {
                bookmarks: true,
                ..Default::default()
            }
            .timeout(10),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    loop {
        if let kube::core::WatchEvent::Bookmark(b) = raw.try_next().await.unwrap().unwrap() {
            assert!(!b.metadata.resource_version.is_empty());
            break;
        }
    }
}

#[tokio::test]
async fn crds_can_be_established_by_hand() {
    let sim = start_with(kube_sim::Options {
        config: kube_sim::SimConfig {
            auto_establish_crds: false,
            ..Default::default()
        },
        ..kube_sim::Options::default()
    });
    let client = client(&sim).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(widget_crd()).unwrap(),
    )
    .await
    .unwrap();
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    // Not served while not Established.
    assert_eq!(
        status_of(widgets.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );
    sim.establish_crd("widgets.example.com").unwrap();
    assert!(
        widgets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// The `(reason, field, message)` of each cause of an Invalid status.
fn causes_of(s: &kube::core::Status) -> Vec<(String, String, String)> {
    s.details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| (c.reason.clone(), c.field.clone(), c.message.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn immutable_fields_are_refused_on_every_write_path() {
    let sim = start();
    let client = client(&sim).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let web = |app: &str, image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"selector": {"matchLabels": {"app": app}},
                        "template": {"metadata": {"labels": {"app": app}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    };
    let apply = PatchParams::apply("deliver");
    let created = deploys
        .patch("web", &apply, &Patch::Apply(web("web", "nginx:1")))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone();

    // A new selector is refused by apply, its dry run, a merge patch and a PUT.
    let message = r#"Deployment.apps "web" is invalid: spec.selector: Invalid value: {"matchLabels":{"app":"web2"}}: field is immutable"#;
    let cause = (
        "FieldValueInvalid".to_string(),
        "spec.selector".to_string(),
        r#"Invalid value: {"matchLabels":{"app":"web2"}}: field is immutable"#.to_string(),
    );
    for params in [apply.clone(), apply.clone().dry_run()] {
        let err = status_of(
            deploys
                .patch("web", &params, &Patch::Apply(web("web2", "nginx:1")))
                .await
                .unwrap_err(),
        );
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
        assert_eq!(err.message, message);
        assert_eq!(causes_of(&err), std::slice::from_ref(&cause));
        let details = err.details.unwrap();
        assert_eq!(
            (
                details.name.as_str(),
                details.group.as_str(),
                details.kind.as_str()
            ),
            ("web", "apps", "Deployment")
        );
    }
    let merge = json!({"spec": {"selector": {"matchLabels": {"app": "web2"}},
                                "template": {"metadata": {"labels": {"app": "web2"}}}}});
    let err = status_of(
        deploys
            .patch("web", &PatchParams::default(), &Patch::Merge(&merge))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.message.as_str()), (422, message));
    let mut replaced: Deployment = deploys.get("web").await.unwrap();
    let labels: BTreeMap<String, String> = [("app".to_string(), "web2".to_string())].into();
    replaced.spec.selector.match_labels = Some(labels.clone());
    replaced.spec.template.metadata.as_mut().unwrap().labels = Some(labels);
    let err = status_of(
        deploys
            .replace("web", &PostParams::default(), &replaced)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.message.as_str()), (422, message));
    assert_eq!(
        deploys.get("web").await.unwrap().metadata.resource_version,
        rv,
        "nothing was written"
    );

    // Other changes go through; so do status writes.
    let out = deploys
        .patch("web", &apply, &Patch::Apply(web("web", "nginx:2")))
        .await
        .unwrap();
    assert_eq!(out.metadata.generation, Some(2));
    sim.set_ready("apps/v1", "Deployment", "default", "web")
        .unwrap();

    // An immutable ConfigMap: data and the flag itself are frozen, labels are not.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let frozen = |value: &str, immutable: bool| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "frozen"},
               "immutable": immutable, "data": {"k": value}})
    };
    cms.patch("frozen", &apply, &Patch::Apply(frozen("1", true)))
        .await
        .unwrap();
    let err = status_of(
        cms.patch(
            "frozen",
            &apply.clone().dry_run(),
            &Patch::Apply(frozen("2", true)),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (
            422,
            "Invalid",
            r#"ConfigMap "frozen" is invalid: data: Forbidden: field is immutable when `immutable` is set"#
        )
    );
    assert_eq!(
        causes_of(&err),
        [(
            "FieldValueForbidden".to_string(),
            "data".to_string(),
            "Forbidden: field is immutable when `immutable` is set".to_string()
        )]
    );
    let err = status_of(
        cms.patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"immutable": false})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        err.message,
        r#"ConfigMap "frozen" is invalid: immutable: Forbidden: field is immutable when `immutable` is set"#
    );
    cms.patch(
        "frozen",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn pvc_spec_is_immutable_except_storage_requests_of_bound_claims() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let sim = start();
    let client = client(&sim).await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claim = |mode: &str, size: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
               "spec": {"accessModes": [mode], "resources": {"requests": {"storage": size}}}})
    };
    let apply = PatchParams::apply("deliver");
    pvcs.patch("data", &apply, &Patch::Apply(claim("ReadWriteOnce", "1Gi")))
        .await
        .unwrap();

    // Pending: even the size is frozen.
    let err = status_of(
        pvcs.patch("data", &apply, &Patch::Apply(claim("ReadWriteOnce", "2Gi")))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    sim.set_ready("v1", "PersistentVolumeClaim", "default", "data")
        .unwrap();

    // Bound: access modes still refused (dry run included), the size may grow.
    for params in [apply.clone().dry_run(), apply.clone()] {
        let err = status_of(
            pvcs.patch(
                "data",
                &params,
                &Patch::Apply(claim("ReadWriteMany", "1Gi")),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
        assert!(
            err.message.starts_with(
                "PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n"
            ),
            "{}",
            err.message
        );
        let causes = causes_of(&err);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            (causes[0].0.as_str(), causes[0].1.as_str()),
            ("FieldValueForbidden", "spec")
        );
    }
    let grown = pvcs
        .patch("data", &apply, &Patch::Apply(claim("ReadWriteOnce", "2Gi")))
        .await
        .unwrap();
    assert_eq!(
        grown.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "2Gi"
    );
}

/// `latency` delays every request by at least that long; the request
/// counter counts each request under its verb and can be reset.
#[tokio::test]
async fn latency_and_the_request_counter() {
    let latency = std::time::Duration::from_millis(40);
    let sim = start_with(kube_sim::Options {
        config: kube_sim::SimConfig {
            latency,
            ..Default::default()
        },
        ..kube_sim::Options::default()
    });
    let cms: Api<ConfigMap> = Api::namespaced(client_for_context(&sim, None).await, "default");
    // Discovery and bootstrap requests of the client are counted too: start
    // from zero.
    sim.reset_request_counts();
    let started = std::time::Instant::now();
    cms.create(&PostParams::default(), &cm("counted", &[("a", "1")]))
        .await
        .unwrap();
    for _ in 0..3 {
        cms.get("counted").await.unwrap();
    }
    cms.list(&ListParams::default()).await.unwrap();
    cms.patch(
        "counted",
        &PatchParams::apply("t").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "counted"}, "data": {"a": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("counted", &DeleteParams::default())
        .await
        .unwrap();
    // Seven requests, each held at least `latency` (a lower bound: sleeps
    // never end early, so this cannot flake).
    assert!(started.elapsed() >= latency * 7, "{:?}", started.elapsed());
    let counts = sim.request_counts();
    let want: BTreeMap<String, u64> = [
        ("create", 1),
        ("get", 3),
        ("list", 1),
        ("patch", 1),
        ("delete", 1),
    ]
    .into_iter()
    .map(|(v, n)| (v.to_string(), n))
    .collect();
    assert_eq!(counts, want);
    sim.reset_request_counts();
    assert!(sim.request_counts().is_empty());
}

#[tokio::test]
async fn namespaces_carry_their_name_label_for_namespace_selectors() {
    let hook = TestWebhook::start("guard.default.svc", deny_labelled);
    let sim = start_with(kube_sim::Options {
        config: kube_sim::SimConfig {
            service_map: [("default/guard".to_string(), hook.addr.to_string())].into(),
            ..Default::default()
        },
        ..kube_sim::Options::default()
    });
    let client = client(&sim).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["guarded", "open"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let label = |n: &Namespace| {
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/metadata.name").cloned())
    };
    assert_eq!(
        label(&namespaces.get("guarded").await.unwrap()).as_deref(),
        Some("guarded")
    );
    assert_eq!(
        label(&namespaces.get("kube-system").await.unwrap()).as_deref(),
        Some("kube-system")
    );
    // Neither removed nor changed by a client.
    namespaces
        .patch(
            "guarded",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"kubernetes.io/metadata.name": null, "team": "a"}}}),
            ),
        )
        .await
        .unwrap();
    namespaces
        .patch(
            "open",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"kubernetes.io/metadata.name": "guarded"}}}),
            ),
        )
        .await
        .unwrap();
    let guarded = namespaces.get("guarded").await.unwrap();
    assert_eq!(label(&guarded).as_deref(), Some("guarded"));
    assert_eq!(
        guarded
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get("team")
            .map(String::as_str),
        Some("a")
    );
    assert_eq!(
        label(&namespaces.get("open").await.unwrap()).as_deref(),
        Some("open")
    );
    let selected = namespaces
        .list(&ListParams::default().labels("kubernetes.io/metadata.name=guarded"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);

    // A webhook selecting namespaces by that label.
    let mut config = webhook_config("guard", &hook.ca_bundle(), "Fail", "None");
    config["webhooks"][0]["namespaceSelector"] =
        json!({"matchLabels": {"kubernetes.io/metadata.name": "guarded"}});
    sim.load(config).unwrap();
    let mut denied = cm("bad", &[]);
    denied.metadata.labels = Some(BTreeMap::from([("deny".to_string(), "true".to_string())]));
    let in_guarded: Api<ConfigMap> = Api::namespaced(client.clone(), "guarded");
    let err = status_of(
        in_guarded
            .create(&PostParams::default(), &denied)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    let in_open: Api<ConfigMap> = Api::namespaced(client.clone(), "open");
    in_open
        .create(&PostParams::default(), &denied)
        .await
        .unwrap();
}

#[tokio::test]
async fn watch_history_ages_like_the_watch_cache() {
    let sim = start_with(kube_sim::Options {
        config: kube_sim::SimConfig {
            watch_history_min_events: 5,
            watch_history_window: std::time::Duration::ZERO,
            ..Default::default()
        },
        ..kube_sim::Options::default()
    });
    let client = client(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("first", &[]))
        .await
        .unwrap();
    let old_rv = sim.resource_version();

    // The watcher lists, then watches from the list's resourceVersion with a
    // one-second server timeout; meanwhile the type's history moves on.
    let mut stream = watcher(
        cms.clone(),
        watcher::Config::default().labels("app=demo").timeout(1),
    )
    .boxed();
    loop {
        if let Ok(watcher::Event::InitDone) = next(&mut stream).await {
            break;
        }
    }
    for i in 0..10 {
        let mut c = cm(&format!("noise{i}"), &[]);
        c.metadata.labels = None;
        cms.create(&PostParams::default(), &c).await.unwrap();
    }

    // A watch from before the kept history: an ERROR event, 410 Expired.
    let raw = cms
        .watch(&kube::api::WatchParams::default(), &old_rv.to_string())
        .await
        .unwrap();
    let events: Vec<_> = raw.collect::<Vec<_>>().await;
    match &events[0] {
        Ok(kube::core::WatchEvent::Error(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message
                    .starts_with(&format!("too old resource version: {old_rv} (")),
                "{}",
                e.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // A list at such a resourceVersion too.
    let err = status_of(
        cms.list(
            &ListParams::default()
                .at(&old_rv.to_string())
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));

    // The watcher's next watch (after its timeout) resumes from a dropped
    // resourceVersion, gets 410 and re-lists; then it sees new objects.
    // (A re-list ends with InitDone again.)
    loop {
        if let Ok(watcher::Event::InitDone) = next(&mut stream).await {
            break;
        }
    }
    cms.create(&PostParams::default(), &cm("late", &[]))
        .await
        .unwrap();
    loop {
        if let Ok(watcher::Event::Apply(c)) = next(&mut stream).await
            && c.metadata.name.as_deref() == Some("late")
        {
            break;
        }
    }
}

type EventStream =
    futures::stream::BoxStream<'static, Result<watcher::Event<ConfigMap>, watcher::Error>>;

async fn next(stream: &mut EventStream) -> Result<watcher::Event<ConfigMap>, watcher::Error> {
    tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
        .await
        .expect("the watcher keeps going")
        .expect("the stream does not end")
}

#[tokio::test]
async fn builtin_kinds_decode_like_go_structs() {
    let sim = start();
    let client = client(&sim).await;
    let gvk = |g: &str, v: &str, k: &str| ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, k));
    let cms: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &gvk("", "v1", "ConfigMap"));
    let deploys: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &gvk("apps", "v1", "Deployment"));
    let obj = |v: Value| -> DynamicObject { serde_json::from_value(v).unwrap() };
    let deployment = |name: &str, spec_extra: Value| {
        let mut spec = json!({
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}
        });
        json_patch::merge(&mut spec, &spec_extra);
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec})
    };

    let err = status_of(
        cms.create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, "data": {"a": 1}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        err.message,
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: json: cannot unmarshal number into Go struct field ConfigMap.data of type string"
    );
    let err = status_of(
        deploys
            .create(
                &PostParams::default(),
                &obj(deployment("d", json!({"replicas": "2"}))),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            400,
            "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
        )
    );

    // Unknown fields: refused under Strict, dropped otherwise.
    let strict =
        http::Request::post("/apis/apps/v1/namespaces/default/deployments?fieldValidation=Strict")
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&deployment("d", json!({"foo": 1}))).unwrap())
            .unwrap();
    let err = status_of(client.request::<Value>(strict).await.unwrap_err());
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            400,
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.foo\""
        )
    );
    let created = deploys
        .create(
            &PostParams::default(),
            &obj(deployment("d", json!({"foo": 1, "replicas": 2}))),
        )
        .await
        .unwrap();
    assert!(created.data["spec"].get("foo").is_none());
    assert_eq!(created.data["spec"]["replicas"], 2);

    // A merge patch whose result does not decode: 422 on field "patch".
    let err = status_of(
        deploys
            .patch(
                "d",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": "three"}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.starts_with(" \"\" is invalid: patch: Invalid value: \"{")
            && err.message.ends_with(
                "\": json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
            ),
        "{}",
        err.message
    );

    // Server-side apply of a field the type does not have.
    let err = status_of(
        deploys
            .patch(
                "d",
                &PatchParams::apply("test"),
                &Patch::Apply(deployment("d", json!({"foo": 1}))),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 500);
    assert_eq!(
        err.message,
        "failed to create typed patch object (default/d; apps/v1, Kind=Deployment): .spec.foo: field not declared in schema"
    );
}
