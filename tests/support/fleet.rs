//! FleetRollout test helpers: versioned member StageSets in labelled
//! namespaces, FleetRollouts, and waiting on their status.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use stageset_controller::api::reasons::CONDITION_READY;
use stageset_controller::api::{FleetRollout, StageSet};

use super::{Harness, configmap, ready};

pub const APPROVED: &str = "stages.metio.wtf/approved-version";
pub const ROLLBACK_TO: &str = "stages.metio.wtf/rollback-to";

/// Creates namespace `name` with `labels`, and the `app` ExternalArtifact
/// the members there deliver (one ConfigMap).
pub async fn team(h: &Harness, name: &str, labels: Value) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(h.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    let art = h.artifact(
        &format!("{name}-app.tar.gz"),
        &[("cm.yaml", &configmap(name, "app-config", "r1"))],
    );
    h.external_artifact(name, "app", &art, "r1").await;
}

/// The spec of a member at `version` (approval always needed; downgrades
/// allowed so a fleet's rollback can take effect).
pub fn member_spec(version: &str) -> Value {
    json!({
        "interval": "1h",
        "version": {"value": version, "approvalMode": "Always", "allowDowngrade": true},
        "stages": [{"name": "app", "sourceRef": {"name": "app"}}],
    })
}

/// Creates (or re-applies) member `ns/name` in `wave` at `version`.
pub async fn member(h: &Harness, ns: &str, name: &str, wave: &str, version: &str) {
    let body = json!({
        "apiVersion": "stages.metio.wtf/v1", "kind": "StageSet",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "shop", "wave": wave}},
        "spec": member_spec(version),
    });
    Api::<StageSet>::namespaced(h.client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("test-user").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("member applied");
}

/// Whether a StageSet succeeded at `version`.
pub fn at(version: &'static str) -> impl Fn(&StageSet) -> bool {
    move |ss| {
        ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
            && ss.status.as_ref().and_then(|s| s.version.as_deref()) == Some(version)
    }
}

/// Whether a StageSet waits for approval of `version`.
pub fn held(version: &'static str) -> impl Fn(&StageSet) -> bool {
    move |ss| {
        ready(ss).is_some_and(|(_, r, _)| r == "AwaitingApproval")
            && ss
                .status
                .as_ref()
                .and_then(|s| s.pending_version.as_deref())
                == Some(version)
    }
}

/// An annotation of a StageSet, if set.
pub async fn annotation(h: &Harness, ns: &str, name: &str, key: &str) -> Option<String> {
    h.get_stageset(ns, name)
        .await
        .annotations()
        .get(key)
        .cloned()
}

/// Creates or updates FleetRollout `name` (server-side apply as a user).
pub async fn fleet(h: &Harness, name: &str, spec: Value) {
    let body = json!({
        "apiVersion": "stages.metio.wtf/v1", "kind": "FleetRollout",
        "metadata": {"name": name}, "spec": spec,
    });
    Api::<FleetRollout>::all(h.client.clone())
        .patch(
            name,
            &PatchParams::apply("test-user").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("FleetRollout applied");
}

/// Asks for a pass now (`reconcile.fluxcd.io/requestedAt`).
pub async fn poke(h: &Harness, name: &str, token: &str) {
    Api::<FleetRollout>::all(h.client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}}),
            ),
        )
        .await
        .unwrap();
}

/// (status, reason, message) of a FleetRollout's Ready condition.
pub fn fleet_ready(f: &FleetRollout) -> Option<(String, String, String)> {
    let c = f
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)?;
    Some((
        serde_json::to_value(c.status).ok()?.as_str()?.to_string(),
        c.reason.clone(),
        c.message.clone(),
    ))
}

/// Waits (up to 60 s) until the FleetRollout satisfies `pred`.
pub async fn wait_fleet<F>(h: &Harness, name: &str, what: &str, pred: F) -> FleetRollout
where
    F: Fn(&FleetRollout) -> bool,
{
    let api: Api<FleetRollout> = Api::all(h.client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        if let Ok(f) = api.get(name).await {
            if pred(&f) {
                return f;
            }
            last = Some(f);
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for FleetRollout {name}: {what}; last status: {}",
                serde_json::to_string_pretty(&last.and_then(|f| f.status)).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the FleetRollout's Ready reason (message containing `contains`).
pub async fn wait_fleet_reason(
    h: &Harness,
    name: &str,
    reason: &str,
    contains: &str,
) -> FleetRollout {
    wait_fleet(
        h,
        name,
        &format!("reason {reason} containing {contains:?}"),
        |f| fleet_ready(f).is_some_and(|(_, r, m)| r == reason && m.contains(contains)),
    )
    .await
}

/// The Events recorded about a FleetRollout (in `default`, where events of
/// cluster-scoped objects go): (type, reason, message).
pub async fn fleet_events(h: &Harness, name: &str) -> Vec<(String, String, String)> {
    Api::<k8s_openapi::api::core::v1::Event>::namespaced(h.client.clone(), "default")
        .list(&kube::api::ListParams::default().fields(&format!(
            "involvedObject.kind=FleetRollout,involvedObject.name={name}"
        )))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits (up to 60 s) until the FleetRollout's events satisfy `pred` (the
/// event is recorded after the status write that announces the halt).
pub async fn wait_fleet_events<F>(h: &Harness, name: &str, pred: F) -> Vec<(String, String, String)>
where
    F: Fn(&[(String, String, String)]) -> bool,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = fleet_events(h, name).await;
        if pred(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for events of FleetRollout {name}; last: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
