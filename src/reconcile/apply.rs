//! Server-side apply of a stage's objects (delivery.md §2.5): staged (CRDs,
//! Namespaces and ClusterRoles first and waited for, then `*Class` kinds, then
//! everything else), in Flux's kind order, with field manager
//! `stageset-controller` and forced ownership. Each object is dry-run first and
//! only written when the dry run differs from the live object, so a steady-state
//! reconcile writes nothing.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::api::keys;
use crate::kube_client::{ClientFactory, DiscoveryError, FIELD_MANAGER};
use crate::reconcile::error::{
    Error, describe, kind_missing_message, rbac_denied_message, retrying,
};
use crate::reconcile::health::{Health, compute};

/// What the apply did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeAction {
    Created,
    Configured,
    Unchanged,
    /// Left alone (KeepExisting on an existing object).
    Skipped,
}

impl ChangeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeAction::Created => "created",
            ChangeAction::Configured => "configured",
            ChangeAction::Unchanged => "unchanged",
            ChangeAction::Skipped => "skipped",
        }
    }
}

/// One applied object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn of(obj: &Value) -> ObjectRef {
        let s = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        ObjectRef {
            api_version: s("/apiVersion"),
            kind: s("/kind"),
            namespace: s("/metadata/namespace"),
            name: s("/metadata/name"),
        }
    }

    /// `Kind/namespace/name` (or `Kind/name` when cluster-scoped), as in events.
    pub fn subject(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }

    /// The API group of the object.
    pub fn group(&self) -> &str {
        self.api_version
            .split_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }

    /// The version of the object's apiVersion.
    pub fn version(&self) -> &str {
        self.api_version
            .split_once('/')
            .map(|(_, v)| v)
            .unwrap_or(&self.api_version)
    }
}

/// One entry of the change set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub object: ObjectRef,
    pub action: ChangeAction,
    /// The object's health as the apply last saw it (the live object read,
    /// or the answer to the write), so verification's first round needs
    /// no read of its own.
    pub seen: Option<Health>,
}

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The tenant may not do this (terminal `RBACDenied`).
    #[error("{0}")]
    Forbidden(String),
    /// The kind is not served (terminal `RBACDenied`, install the CRD).
    #[error("{0}")]
    KindNotServed(String),
    /// A namespaced object without a namespace (no defaulting, as upstream).
    #[error("{subject}: namespace not specified for a namespaced kind")]
    NamespaceMissing { subject: String },
    /// Anything else the API server refused (retried).
    #[error("{subject}: {message}")]
    Api { subject: String, message: String },
    /// A staged batch did not become ready in time.
    #[error("{0}")]
    StagingTimeout(String),
}

impl From<ApplyError> for Error {
    /// Authorization and missing-kind problems are [`Error::Denied`] (an
    /// admin's Role or CRD heals them); anything else is retried.
    fn from(e: ApplyError) -> Error {
        match e {
            ApplyError::Forbidden(m) | ApplyError::KindNotServed(m) => Error::Denied(m),
            other => Error::Transient(other.to_string()),
        }
    }
}

/// Position of a kind in Flux's apply order; unknown kinds sort between the
/// known workload kinds and the webhook configurations.
fn kind_rank(kind: &str) -> usize {
    const FIRST: &[&str] = &[
        "CustomResourceDefinition",
        "Namespace",
        "ClusterRole",
        "ClusterClass",
        "RuntimeClass",
        "PriorityClass",
        "StorageClass",
        "VolumeSnapshotClass",
        "IngressClass",
        "GatewayClass",
        "ClusterRoleBinding",
        "ResourceQuota",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "LimitRange",
        "Deployment",
        "StatefulSet",
        "CronJob",
        "PodDisruptionBudget",
    ];
    const LAST: &[&str] = &[
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    if let Some(i) = FIRST.iter().position(|k| *k == kind) {
        i
    } else if let Some(i) = LAST.iter().position(|k| *k == kind) {
        FIRST.len() + 1 + i
    } else {
        FIRST.len()
    }
}

/// Sorts objects into apply order: kind rank, then (for unknown kinds) group and
/// kind, then namespace and name.
pub fn sort_for_apply(objects: &mut [Value]) {
    objects.sort_by(|a, b| {
        let ra = ObjectRef::of(a);
        let rb = ObjectRef::of(b);
        (
            kind_rank(&ra.kind),
            ra.group().to_string(),
            ra.kind.clone(),
            ra.namespace.clone(),
            ra.name.clone(),
        )
            .cmp(&(
                kind_rank(&rb.kind),
                rb.group().to_string(),
                rb.kind.clone(),
                rb.namespace.clone(),
                rb.name.clone(),
            ))
    });
}

fn stage_of(kind: &str, group: &str) -> u8 {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition")
        | ("", "Namespace")
        | ("rbac.authorization.k8s.io", "ClusterRole") => 0,
        (_, k) if k.ends_with("Class") => 1,
        _ => 2,
    }
}

/// The part of an object an apply can change: everything but server-owned
/// metadata and status (labels and annotations count). The value of the force
/// annotation is a fresh token per apply, so only its presence counts.
fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
        let labels = m.get("metadata").and_then(|md| md.get("labels")).cloned();
        let mut annotations = m
            .get("metadata")
            .and_then(|md| md.get("annotations"))
            .cloned();
        if let Some(forced) = annotations
            .as_mut()
            .and_then(|a| a.get_mut(keys::ANNOTATION_FORCE))
        {
            *forced = Value::String("*".into());
        }
        m.insert(
            "metadata".into(),
            serde_json::json!({"labels": labels, "annotations": annotations}),
        );
    }
    v
}

/// The options of one apply.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Objects of one kind written at once (DECISIONS 21).
    pub concurrency: usize,
    /// How long a staged batch (CRDs, Namespaces, `*Class`) may take to be
    /// ready, and how long a recreated object may take to go away.
    pub staging_timeout: Duration,
    /// This apply's force token: objects whose desired copy carries
    /// `stages.metio.wtf/force=<token>` are recreated on an immutable-field
    /// conflict (see [`crate::reconcile::conflict`]).
    pub force_token: Option<String>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            concurrency: crate::reconcile::DEFAULT_APPLY_CONCURRENCY,
            staging_timeout: Duration::from_secs(60),
            force_token: None,
        }
    }
}

/// Applies `objects` (already labelled) with `client` (the stage's identity) and
/// returns the change set in apply order.
///
/// Batches and kind ranks are written in order; the objects of one kind are
/// written concurrently, up to `options.concurrency` (DECISIONS 21). The first
/// failed write stops new writes; writes in flight finish; the error reported
/// is the first in apply order.
pub async fn apply(
    clients: &ClientFactory,
    client: &kube::Client,
    mut objects: Vec<Value>,
    options: &ApplyOptions,
) -> Result<Vec<Change>, ApplyError> {
    sort_for_apply(&mut objects);
    let mut changes = Vec::with_capacity(objects.len());
    for batch in 0..3u8 {
        let members: Vec<&Value> = objects
            .iter()
            .filter(|o| {
                let r = ObjectRef::of(o);
                stage_of(&r.kind, r.group()) == batch
            })
            .collect();
        if members.is_empty() {
            continue;
        }
        let mut batch_refs = Vec::new();
        for run in same_kind_runs(&members) {
            let applied = bounded(run, options.concurrency, |obj| {
                apply_one(clients, client, obj, options)
            })
            .await?;
            for (obj, change) in run.iter().zip(applied) {
                batch_refs.push((change.object.clone(), *obj));
                changes.push(change);
            }
        }
        if batch < 2 {
            wait_staged(clients, client, &batch_refs, options.staging_timeout).await?;
        }
    }
    Ok(changes)
}

/// Splits sorted objects into runs of one kind (group and kind), in order.
pub fn same_kind_runs<T: std::borrow::Borrow<Value>>(sorted: &[T]) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=sorted.len() {
        let boundary = i == sorted.len() || {
            let a = ObjectRef::of(sorted[i - 1].borrow());
            let b = ObjectRef::of(sorted[i].borrow());
            a.kind != b.kind || a.group() != b.group()
        };
        if boundary {
            if i > start {
                runs.push(&sorted[start..i]);
            }
            start = i;
        }
    }
    runs
}

/// Runs `f` over `items`, at most `limit` at once, starting them in order.
/// After the first error (in completion order) no new item starts; those in
/// flight finish. The result is every output in order, or the error of the
/// earliest failed item in order.
pub async fn bounded<'a, T, R, E, F, Fut>(items: &'a [T], limit: usize, f: F) -> Result<Vec<R>, E>
where
    F: Fn(&'a T) -> Fut,
    Fut: std::future::Future<Output = Result<R, E>>,
{
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    let limit = limit.max(1);
    let mut slots: Vec<Option<Result<R, E>>> = Vec::with_capacity(items.len());
    slots.resize_with(items.len(), || None);
    let mut inflight = FuturesUnordered::new();
    let mut next = 0;
    let mut failed = false;
    loop {
        while !failed && next < items.len() && inflight.len() < limit {
            let index = next;
            let run = f(&items[index]);
            inflight.push(async move { (index, run.await) });
            next += 1;
        }
        let Some((index, result)) = inflight.next().await else {
            break;
        };
        failed |= result.is_err();
        slots[index] = Some(result);
    }
    let mut out = Vec::with_capacity(items.len());
    for result in slots.into_iter().flatten() {
        out.push(result?);
    }
    Ok(out)
}

/// The API for an object's kind (with the stage identity) and its plural name.
async fn api_for(
    clients: &ClientFactory,
    client: &kube::Client,
    r: &ObjectRef,
) -> Result<(Api<DynamicObject>, String), ApplyError> {
    let resource = clients
        .resource(&r.api_version, &r.kind)
        .await
        .map_err(|e| match e {
            DiscoveryError::NotServed { .. } => ApplyError::KindNotServed(kind_missing_message(
                &format!("apply {}", r.subject()),
                &e.to_string(),
            )),
            other => ApplyError::Api {
                subject: r.subject(),
                message: other.to_string(),
            },
        })?;
    if resource.namespaced {
        if r.namespace.is_empty() {
            return Err(ApplyError::NamespaceMissing {
                subject: r.subject(),
            });
        }
        Ok((
            Api::namespaced_with(client.clone(), &r.namespace, &resource.api),
            resource.api.plural,
        ))
    } else {
        Ok((
            Api::all_with(client.clone(), &resource.api),
            resource.api.plural,
        ))
    }
}

fn classify(verb: &str, r: &ObjectRef, plural: &str, e: kube::Error) -> ApplyError {
    match &e {
        kube::Error::Api(s) if s.code == 403 => {
            let call = if r.namespace.is_empty() {
                format!("{verb} {plural} \"{}\"", r.name)
            } else {
                format!(
                    "{verb} {plural} \"{}\" in namespace \"{}\"",
                    r.name, r.namespace
                )
            };
            ApplyError::Forbidden(rbac_denied_message(&call, &s.message))
        }
        _ => ApplyError::Api {
            subject: r.subject(),
            message: describe(&e),
        },
    }
}

/// Whether an apply error means an immutable field stands in the way (as
/// Flux decides it: Invalid or Conflict answers, or an admission message
/// saying a field is immutable).
pub fn is_immutable_error(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 422 || s.code == 409 || s.message.to_lowercase().contains("immutable")
        }
        _ => false,
    }
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn health_of(obj: &Value) -> Health {
    compute(obj, k8s_openapi::jiff::Timestamp::now())
}

async fn apply_one(
    clients: &ClientFactory,
    client: &kube::Client,
    obj: &Value,
    options: &ApplyOptions,
) -> Result<Change, ApplyError> {
    let r = ObjectRef::of(obj);
    let (api, plural) = api_for(clients, client, &r).await?;
    let live = match retrying(|| api.get_opt(&r.name)).await {
        Ok(live) => live,
        Err(e) => return Err(classify("get", &r, &plural, e)),
    };
    let keep_existing = annotation(obj, keys::ANNOTATION_KEEP_EXISTING) == Some("true");
    let recreate = options
        .force_token
        .as_deref()
        .is_some_and(|t| annotation(obj, keys::ANNOTATION_FORCE) == Some(t));
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let action = match &live {
        None => ChangeAction::Created,
        Some(live) => {
            let live_v = serde_json::to_value(live).unwrap_or(Value::Null);
            if keep_existing {
                return Ok(Change {
                    object: r,
                    action: ChangeAction::Skipped,
                    seen: Some(health_of(&live_v)),
                });
            }
            // The one-request path: our last apply is what we would apply
            // now and nobody changed a field of it since (delivery.md §2.7
            // drift correction still happens: any difference falls through
            // to the dry run).
            if super::owned::unchanged(obj, &live_v, FIELD_MANAGER) {
                return Ok(Change {
                    object: r,
                    action: ChangeAction::Unchanged,
                    seen: Some(health_of(&live_v)),
                });
            }
            let dry_params = params.clone().dry_run();
            let patch = Patch::Apply(obj);
            let dry = match retrying(|| api.patch(&r.name, &dry_params, &patch)).await {
                Ok(dry) => dry,
                Err(e) if recreate && is_immutable_error(&e) => {
                    tracing::info!(object = %r.subject(), error = %describe(&e), "recreating the object: an immutable field changed and its conflict policy is Recreate");
                    delete_and_wait(&api, &r, &plural, options.staging_timeout).await?;
                    let written = api
                        .patch(&r.name, &params, &Patch::Apply(obj))
                        .await
                        .map_err(|e| classify("patch", &r, &plural, e))?;
                    return Ok(Change {
                        object: r,
                        action: ChangeAction::Created,
                        seen: serde_json::to_value(&written).ok().map(|v| health_of(&v)),
                    });
                }
                Err(e) => return Err(classify("patch", &r, &plural, e)),
            };
            let dry_v = serde_json::to_value(&dry).unwrap_or(Value::Null);
            if comparable(&live_v) == comparable(&dry_v) {
                return Ok(Change {
                    object: r,
                    action: ChangeAction::Unchanged,
                    seen: Some(health_of(&live_v)),
                });
            }
            ChangeAction::Configured
        }
    };
    let patch = Patch::Apply(obj);
    let written = retrying(|| api.patch(&r.name, &params, &patch))
        .await
        .map_err(|e| classify("patch", &r, &plural, e))?;
    Ok(Change {
        object: r,
        action,
        seen: serde_json::to_value(&written).ok().map(|v| health_of(&v)),
    })
}

/// Deletes an object (background propagation) and waits until it is gone.
async fn delete_and_wait(
    api: &Api<DynamicObject>,
    r: &ObjectRef,
    plural: &str,
    timeout: Duration,
) -> Result<(), ApplyError> {
    match api
        .delete(&r.name, &kube::api::DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(classify("delete", r, plural, e)),
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(25);
    loop {
        match api.get_opt(&r.name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) => {}
            Err(e) => return Err(classify("get", r, plural, e)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApplyError::Api {
                subject: r.subject(),
                message: format!(
                    "recreate: the old object was not gone after {}s",
                    timeout.as_secs()
                ),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Waits until every object of a staged batch is Current (poll every 2 s).
async fn wait_staged(
    clients: &ClientFactory,
    client: &kube::Client,
    batch: &[(ObjectRef, &Value)],
    timeout: Duration,
) -> Result<(), ApplyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        let mut pending = Vec::new();
        for (r, _) in batch {
            let (api, plural) = api_for(clients, client, r).await?;
            match api.get_opt(&r.name).await {
                Ok(Some(o)) => {
                    let v = serde_json::to_value(&o).unwrap_or(Value::Null);
                    match compute(&v, k8s_openapi::jiff::Timestamp::now()) {
                        Health::Current => {}
                        Health::Failed(why) => {
                            return Err(ApplyError::StagingTimeout(format!(
                                "{} failed: {why}",
                                r.subject()
                            )));
                        }
                        Health::InProgress(why) => pending.push(format!("{} ({why})", r.subject())),
                        Health::Terminating => {
                            pending.push(format!("{} (terminating)", r.subject()))
                        }
                    }
                }
                Ok(None) => pending.push(format!("{} (not found)", r.subject())),
                Err(e) => return Err(classify("get", r, &plural, e)),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApplyError::StagingTimeout(format!(
                "timed out after {}s waiting for {}",
                timeout.as_secs(),
                pending.join(", ")
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Sets the stage and owner labels on every object (S12, §2.5), and the
/// ApplySet membership label when `applyset` is given.
pub fn label(
    objects: &mut [Value],
    stageset: &str,
    namespace: &str,
    stage: &str,
    applyset: Option<&str>,
) {
    for obj in objects {
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = serde_json::json!({});
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        let labels = meta
            .entry("labels")
            .or_insert_with(|| serde_json::json!({}));
        if !labels.is_object() {
            *labels = serde_json::json!({});
        }
        let labels = labels.as_object_mut().expect("labels is an object");
        labels.insert(keys::LABEL_STAGE.into(), Value::String(stage.into()));
        labels.insert(
            keys::LABEL_OWNER_NAME.into(),
            Value::String(stageset.into()),
        );
        labels.insert(
            keys::LABEL_OWNER_NAMESPACE.into(),
            Value::String(namespace.into()),
        );
        match applyset {
            Some(id) => {
                labels.insert(
                    keys::APPLYSET_PART_OF_LABEL.into(),
                    Value::String(id.into()),
                );
            }
            // Never claim membership the controller did not grant.
            None => {
                labels.remove(keys::APPLYSET_PART_OF_LABEL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn o(api_version: &str, kind: &str, ns: &str, name: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": ns}})
    }

    #[test]
    fn apply_order() {
        let mut objs = vec![
            o("apps/v1", "Deployment", "a", "d"),
            o("example.com/v1", "Widget", "a", "w"),
            o("v1", "ConfigMap", "a", "c"),
            o(
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                "",
                "v",
            ),
            o("v1", "Namespace", "", "a"),
            o(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "",
                "widgets.example.com",
            ),
            o("networking.k8s.io/v1", "IngressClass", "", "nginx"),
        ];
        sort_for_apply(&mut objs);
        let kinds: Vec<_> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "CustomResourceDefinition",
                "Namespace",
                "IngressClass",
                "ConfigMap",
                "Deployment",
                "Widget",
                "ValidatingWebhookConfiguration"
            ]
        );
        assert_eq!(stage_of("IngressClass", "networking.k8s.io"), 1);
        assert_eq!(stage_of("Namespace", ""), 0);
        assert_eq!(stage_of("ConfigMap", ""), 2);
    }

    /// DECISIONS 21: at most `limit` at once, outputs in order; after the
    /// first failure nothing new starts, and the earliest failure in order
    /// is the one reported.
    #[tokio::test(start_paused = true)]
    async fn bounded_writes() {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<u64> = (0..20).collect();
        let out = bounded(&items, 4, |i| {
            let (running, peak) = (&running, &peak);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20 - i)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>(*i * 10)
            }
        })
        .await
        .unwrap();
        assert_eq!(out, (0..20).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 4);

        // Item 1 fails fast while item 0 is still writing: nothing else starts.
        let started = Mutex::new(Vec::new());
        let plan: Vec<(u64, bool)> = vec![(50, true), (1, false), (1, true), (1, true)];
        let err = bounded(&plan, 2, |(ms, ok)| {
            let started = &started;
            async move {
                started.lock().unwrap().push(*ms);
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                if *ok {
                    Ok(())
                } else {
                    Err(format!("failed after {ms}"))
                }
            }
        })
        .await
        .unwrap_err();
        assert_eq!(err, "failed after 1");
        assert_eq!(started.lock().unwrap().len(), 2);

        // Two failures: the earlier one in order wins, whatever finished first.
        let plan: Vec<(u64, &str)> = vec![(50, "first"), (1, "second")];
        let err = bounded(&plan, 2, |(ms, name)| async move {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            Err::<(), _>(name.to_string())
        })
        .await
        .unwrap_err();
        assert_eq!(err, "first");
    }

    #[test]
    fn runs_of_one_kind() {
        let mut objs = vec![
            o("v1", "ConfigMap", "a", "c2"),
            o("v1", "ConfigMap", "a", "c1"),
            o("apps/v1", "Deployment", "a", "d"),
            o("example.com/v1", "Widget", "a", "w"),
            o("example.com/v1", "Gadget", "a", "g"),
            o("other.io/v1", "Widget", "a", "w"),
        ];
        sort_for_apply(&mut objs);
        let runs: Vec<Vec<&str>> = same_kind_runs(&objs)
            .iter()
            .map(|r| {
                r.iter()
                    .map(|o| o["metadata"]["name"].as_str().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(
            runs,
            vec![vec!["c1", "c2"], vec!["d"], vec!["g"], vec!["w"], vec!["w"]]
        );
    }

    #[test]
    fn comparison_ignores_server_fields() {
        let live = json!({"metadata": {"name": "a", "resourceVersion": "5", "labels": {"x": "1"}}, "data": {"k": "v"}, "status": {"s": 1}});
        let dry = json!({"metadata": {"name": "a", "resourceVersion": "6", "managedFields": [], "labels": {"x": "1"}}, "data": {"k": "v"}});
        assert_eq!(comparable(&live), comparable(&dry));
        let changed = json!({"metadata": {"labels": {"x": "2"}}, "data": {"k": "v"}});
        assert_ne!(comparable(&live), comparable(&changed));
    }

    #[test]
    fn labels_are_stamped() {
        let mut objs = vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"keep": "me"}}}),
        ];
        label(&mut objs, "app", "team", "web", Some("applyset-x-v1"));
        let labels = &objs[0]["metadata"]["labels"];
        assert_eq!(labels["keep"], "me");
        assert_eq!(labels["stages.metio.wtf/stage"], "web");
        assert_eq!(labels["stages.metio.wtf/name"], "app");
        assert_eq!(labels["stages.metio.wtf/namespace"], "team");
        assert_eq!(labels["applyset.kubernetes.io/part-of"], "applyset-x-v1");
    }
}
