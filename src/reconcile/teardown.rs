//! Deletion teardown (api.md §9.4): when a StageSet is deleted, delete what its
//! stages recorded in their inventories, stages in reverse recorded position,
//! each under its own identity, then release the finalizer.
//!
//! An object is only deleted while it still carries this StageSet's owner labels
//! and is not annotated `stages.metio.wtf/prune: disabled`; stages with
//! `prune: false` are left in place deliberately.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::{StageSet, keys};
use crate::kube_client::{ClientFactory, DiscoveryError};
use crate::reconcile::apply::{ObjectRef, sort_for_apply};
use crate::reconcile::error::{Requeue, describe};
use crate::reconcile::{Env, Outcome, inventory};

/// Runs the teardown of a deleting StageSet and releases its finalizer.
pub async fn run(env: &Env, ss: &StageSet) -> Outcome {
    let key = format!("{}/{}", ss.namespace().unwrap_or_default(), ss.name_any());
    if !ss.finalizers().iter().any(|f| f == keys::FINALIZER) {
        return Outcome {
            requeue: Requeue::Never,
            ready: None,
        };
    }
    match delete_recorded(env, ss).await {
        Ok(()) => {}
        Err(e) => {
            tracing::warn!(stageset = %key, error = %e, "teardown failed; retrying");
            return Outcome {
                requeue: Requeue::Backoff,
                ready: None,
            };
        }
    }
    match release_finalizer(&env.clients.controller(), ss).await {
        Ok(()) => {
            tracing::info!(stageset = %key, "torn down");
            Outcome {
                requeue: Requeue::Never,
                ready: None,
            }
        }
        Err(e) => {
            tracing::warn!(stageset = %key, error = %e, "releasing the finalizer failed; retrying");
            Outcome {
                requeue: Requeue::Backoff,
                ready: None,
            }
        }
    }
}

async fn delete_recorded(env: &Env, ss: &StageSet) -> Result<(), String> {
    let namespace = ss.namespace().unwrap_or_default();
    let name = ss.name_any();
    let records = inventory::read(&env.clients.controller(), &namespace, &name).await?;
    let mut ordered: Vec<&inventory::StageRecord> = records.values().collect();
    ordered.sort_by(|a, b| b.position.cmp(&a.position).then(a.stage.cmp(&b.stage)));
    for record in ordered {
        let spec_stage = ss.spec.stages.iter().find(|s| s.name == record.stage);
        if spec_stage.and_then(|s| s.prune) == Some(false) {
            continue;
        }
        let sa = spec_stage
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .or(ss.spec.service_account_name.as_deref());
        let client = env
            .clients
            .for_service_account(&namespace, sa)
            .await
            .map_err(|e| e.to_string())?;
        delete_objects(&env.clients, &client, &record.objects(), &name, &namespace).await?;
    }
    Ok(())
}

/// Deletes objects (in reverse apply order) that still belong to the StageSet.
pub async fn delete_objects(
    clients: &ClientFactory,
    client: &kube::Client,
    objects: &[ObjectRef],
    stageset: &str,
    namespace: &str,
) -> Result<(), String> {
    let mut as_values: Vec<Value> = objects
        .iter()
        .map(|r| {
            json!({"apiVersion": r.api_version, "kind": r.kind,
                   "metadata": {"name": r.name, "namespace": r.namespace}})
        })
        .collect();
    sort_for_apply(&mut as_values);
    as_values.reverse();
    let mut errors = Vec::new();
    for v in as_values {
        let r = ObjectRef::of(&v);
        let resource = match clients.resource(&r.api_version, &r.kind).await {
            Ok(res) => res,
            // A kind that is gone has no objects left to delete.
            Err(DiscoveryError::NotServed { .. }) => continue,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let api: Api<DynamicObject> = if resource.namespaced {
            Api::namespaced_with(client.clone(), &r.namespace, &resource.api)
        } else {
            Api::all_with(client.clone(), &resource.api)
        };
        let live = match api.get_opt(&r.name).await {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                errors.push(format!("get {}: {}", r.subject(), describe(&e)));
                continue;
            }
        };
        let labels = live.labels();
        let owned = labels.get(keys::LABEL_OWNER_NAME).map(String::as_str) == Some(stageset)
            && labels.get(keys::LABEL_OWNER_NAMESPACE).map(String::as_str) == Some(namespace);
        let protected = live
            .annotations()
            .get(keys::ANNOTATION_PRUNE)
            .map(String::as_str)
            == Some(keys::PRUNE_DISABLED);
        if !owned || protected {
            continue;
        }
        match api.delete(&r.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => errors.push(format!("delete {}: {}", r.subject(), describe(&e))),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

async fn release_finalizer(client: &kube::Client, ss: &StageSet) -> Result<(), String> {
    let namespace = ss.namespace().unwrap_or_default();
    let api: Api<StageSet> = Api::namespaced(client.clone(), &namespace);
    let remaining: Vec<String> = ss
        .finalizers()
        .iter()
        .filter(|f| *f != keys::FINALIZER)
        .cloned()
        .collect();
    let patch = json!({
        "metadata": {
            "resourceVersion": ss.meta().resource_version,
            "finalizers": remaining,
        }
    });
    match api
        .patch(
            &ss.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(describe(&e)),
    }
}
