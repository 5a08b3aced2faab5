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

use crate::api::reasons::EventReason;
use crate::api::{StageSet, keys};
use crate::kube_client::{ClientFactory, DiscoveryError};
use crate::metrics::ForceDropReason;
use crate::reconcile::apply::{ObjectRef, bounded, same_kind_runs, sort_for_apply};
use crate::reconcile::error::{Error, Requeue, describe, retrying};
use crate::reconcile::notify::StageSetEvent;
use crate::reconcile::{Env, Outcome, inventory, status};

/// Why deleting objects failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteError {
    /// Every error met, joined.
    pub message: String,
    /// Forbidden or a kind the API server does not serve: retrying cannot help.
    pub permanent: bool,
    /// The API server refused the credentials (401).
    pub unauthorized: bool,
}

impl std::fmt::Display for DeleteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl DeleteError {
    fn plain(message: impl Into<String>) -> DeleteError {
        DeleteError {
            message: message.into(),
            ..DeleteError::default()
        }
    }
}

impl From<Error> for DeleteError {
    /// A pipeline error met while tearing down: denied is permanent.
    fn from(e: Error) -> DeleteError {
        DeleteError {
            permanent: matches!(e, Error::Denied(_)),
            message: e.to_string(),
            ..DeleteError::default()
        }
    }
}

impl From<DeleteError> for Error {
    /// Forbidden (or a kind gone) is [`Error::Denied`]; anything else,
    /// unauthorized included, is retried.
    fn from(e: DeleteError) -> Error {
        if e.permanent {
            Error::Denied(e.message)
        } else {
            Error::Transient(e.message)
        }
    }
}

/// Runs the teardown of a deleting StageSet and releases its finalizer. When
/// the teardown keeps failing, the finalizer is dropped anyway once
/// `--max-teardown-wait` has passed since the deletion, or at once when the
/// failure is permanent (Forbidden, kind gone) or the credentials are refused,
/// with a `TeardownForced` warning and metric.
pub async fn run(env: &Env, ss: &StageSet) -> Outcome {
    let namespace = ss.namespace().unwrap_or_default();
    let name = ss.name_any();
    let key = format!("{namespace}/{name}");
    let quiet = |requeue| Outcome {
        requeue,
        ready: None,
    };
    if !ss.finalizers().iter().any(|f| f == keys::FINALIZER) {
        return quiet(Requeue::Never);
    }
    let forced = match delete_recorded(env, ss).await {
        Ok(()) => None,
        Err((op, e)) => {
            let elapsed = ss
                .meta()
                .deletion_timestamp
                .as_ref()
                .map(|t| {
                    let since = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
                    std::time::Duration::try_from(since).unwrap_or_default()
                })
                .unwrap_or_default();
            let reason = if e.permanent {
                Some(ForceDropReason::Permanent)
            } else if e.unauthorized {
                Some(ForceDropReason::Unauthorized)
            } else if elapsed >= env.settings.max_teardown_wait {
                Some(ForceDropReason::TimedOut)
            } else {
                None
            };
            match reason {
                None => {
                    tracing::warn!(stageset = %key, op, error = %e, "teardown failed; retrying");
                    return quiet(Requeue::Backoff);
                }
                Some(reason) => Some((reason, elapsed, op, e)),
            }
        }
    };
    if let Err(e) = release_finalizer(&env.clients.controller(), ss).await {
        tracing::warn!(stageset = %key, error = %e, "releasing the finalizer failed; retrying");
        return quiet(Requeue::Backoff);
    }
    let stages: Vec<String> = ss.spec.stages.iter().map(|s| s.name.clone()).collect();
    env.metrics.forget_stageset(&namespace, &name, &stages);
    match forced {
        None => tracing::info!(stageset = %key, "torn down"),
        Some((reason, elapsed, op, e)) => {
            let note = format!(
                "finalizer dropped after {} without a complete teardown ({}): {op} failed: {e}",
                crate::duration::GoDuration::from_std(elapsed),
                reason.as_str()
            );
            tracing::warn!(stageset = %key, reason = reason.as_str(), error = %e, "{note}");
            env.metrics
                .teardown_force_dropped(&namespace, &name, reason);
            let event = StageSetEvent {
                stageset: ss,
                instance: &env.instance,
                warning: true,
                reason: EventReason::TeardownForced.as_str(),
                note: &note,
                time: k8s_openapi::jiff::Timestamp::now(),
            };
            if let Err(err) =
                status::event(&env.clients.controller(), env.notifier.as_ref(), &event).await
            {
                tracing::warn!(stageset = %key, error = %err, "event not recorded");
            }
        }
    }
    quiet(Requeue::Never)
}

/// Deletes what every recorded stage applied, last stage first. On failure,
/// names the operation that failed.
async fn delete_recorded(env: &Env, ss: &StageSet) -> Result<(), (&'static str, DeleteError)> {
    let namespace = ss.namespace().unwrap_or_default();
    let name = ss.name_any();
    let records = inventory::read(&env.clients.controller(), &namespace, &name)
        .await
        .map_err(|e| ("read inventory", DeleteError::from(e)))?;
    if records.is_empty() {
        return Ok(());
    }
    // The objects live on the target cluster (a remote one needs its
    // kubeconfig Secret still in place).
    let target = env
        .targets
        .resolve(&env.clients, ss)
        .await
        .map_err(|e| ("connect to target cluster", DeleteError::plain(e.message)))?;
    let mut ordered: Vec<&inventory::StageRecord> = records.values().collect();
    ordered.sort_by(|a, b| b.position.cmp(&a.position).then(a.stage.cmp(&b.stage)));
    for record in ordered {
        let spec_stage = ss.spec.stages.iter().find(|s| s.name == record.stage);
        if spec_stage.and_then(|s| s.prune) == Some(false) {
            tracing::info!(stageset = %format!("{namespace}/{name}"), stage = %record.stage, "prune: false, leaving the stage's objects in place");
            continue;
        }
        let sa = spec_stage
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .or(ss.spec.service_account_name.as_deref());
        let client = target
            .for_service_account(&namespace, sa)
            .await
            .map_err(|e| {
                (
                    "connect to target cluster",
                    DeleteError::plain(e.to_string()),
                )
            })?;
        delete_objects(
            &target,
            &client,
            &record.objects(),
            &name,
            &namespace,
            env.settings.apply_concurrency,
        )
        .await
        .map_err(|e| ("delete objects", e))?;
    }
    Ok(())
}

/// Deletes objects (in reverse apply order) that still belong to the StageSet;
/// the objects of one kind at most `concurrency` at once (DECISIONS 21).
/// Every object is tried; the errors are reported together, in order.
pub async fn delete_objects(
    clients: &ClientFactory,
    client: &kube::Client,
    objects: &[ObjectRef],
    stageset: &str,
    namespace: &str,
    concurrency: usize,
) -> Result<(), DeleteError> {
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
    let mut permanent = false;
    let mut unauthorized = false;
    for run in same_kind_runs(&as_values) {
        let outcomes = bounded(run, concurrency, |v| async move {
            Ok::<_, std::convert::Infallible>(
                delete_owned(clients, client, &ObjectRef::of(v), stageset, namespace).await,
            )
        })
        .await
        .unwrap_or_else(|never| match never {});
        for outcome in outcomes {
            if let Err((message, code)) = outcome {
                permanent |= code == Some(403);
                unauthorized |= code == Some(401);
                errors.push(message);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DeleteError {
            message: errors.join("; "),
            permanent,
            unauthorized,
        })
    }
}

/// Deletes one object if it still carries the StageSet's owner labels and no
/// prune protection. An error names the call and carries the HTTP code.
async fn delete_owned(
    clients: &ClientFactory,
    client: &kube::Client,
    r: &ObjectRef,
    stageset: &str,
    namespace: &str,
) -> Result<(), (String, Option<u16>)> {
    let code = |e: &kube::Error| match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    };
    let resource = match clients.resource(&r.api_version, &r.kind).await {
        Ok(res) => res,
        // A kind that is gone has no objects left to delete.
        Err(DiscoveryError::NotServed { .. }) => return Ok(()),
        Err(e) => return Err((e.to_string(), None)),
    };
    let api: Api<DynamicObject> = if resource.namespaced {
        Api::namespaced_with(client.clone(), &r.namespace, &resource.api)
    } else {
        Api::all_with(client.clone(), &resource.api)
    };
    let live = match retrying(|| api.get_opt(&r.name)).await {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(()),
        Err(e) => return Err((format!("get {}: {}", r.subject(), describe(&e)), code(&e))),
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
        return Ok(());
    }
    let params = DeleteParams::background();
    match retrying(|| api.delete(&r.name, &params)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err((
            format!("delete {}: {}", r.subject(), describe(&e)),
            code(&e),
        )),
    }
}

async fn release_finalizer(client: &kube::Client, ss: &StageSet) -> Result<(), Error> {
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
        Err(e) => Err(Error::api("releasing the finalizer", &e)),
    }
}
