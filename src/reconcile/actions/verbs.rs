//! The action verbs (api.md §2.9.3, delivery.md §3.3), each one attempt:
//! `patch`, `wait`, `job`, `delete`, `apply` (and `http`, in `http.rs`).
//! Every cluster call goes through the context's client: the stage's
//! effective identity, or the StageSet-level one for `onRollback`.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{
    ApplyAction, CustomHealthCheck, DeleteAction, DeleteCascade, JobAction, LabelSelector,
    NamespacedObjectKindReference, PatchAction, PatchType, SourceReference, WaitAction, keys,
};
use crate::kube_client::{DiscoveryError, Resource};
use crate::reconcile::error::describe;
use crate::reconcile::{apply, build, source, verify};
use crate::validate::cel::{self, ExprOutcome};

use super::{ActionCtx, Attempt};

/// How often `wait` expressions and `job` completions are polled.
pub(super) const POLL: Duration = Duration::from_secs(2);
/// `wait.timeout` when unset.
pub(super) const WAIT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// A `job` action's limit when the action has no `timeout`.
pub(super) const JOB_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// An `apply` action's readiness wait when the action has no `timeout`.
pub(super) const APPLY_WAIT: Duration = Duration::from_secs(5 * 60);
/// The field manager of objects `apply` actions write (never inventoried).
const ACTION_FIELD_MANAGER: &str = "stageset-controller-action";

/// The resource of `kind` at `api_version`, or at the preferred version of
/// the first group serving `kind` when no apiVersion is given.
pub(super) async fn resource(
    ctx: &ActionCtx<'_>,
    api_version: Option<&str>,
    kind: &str,
) -> Result<Resource, Attempt> {
    if let Some(api_version) = api_version.filter(|a| !a.is_empty()) {
        return ctx
            .clients
            .resource(api_version, kind)
            .await
            .map_err(discovery_error);
    }
    let discovery = kube::discovery::Discovery::new(ctx.client.clone())
        .run()
        .await
        .map_err(|e| Attempt::Retry(format!("discovering kind {kind}: {}", describe(&e))))?;
    for group in discovery.groups() {
        for (api, caps) in group.recommended_resources() {
            if api.kind == kind {
                return Ok(Resource {
                    namespaced: matches!(caps.scope, kube::discovery::Scope::Namespaced),
                    api,
                });
            }
        }
    }
    Err(Attempt::Stop(format!(
        "kind {kind} is not served by the API server"
    )))
}

fn discovery_error(e: DiscoveryError) -> Attempt {
    match e {
        DiscoveryError::NotServed { .. } => Attempt::Stop(e.to_string()),
        other => Attempt::Retry(other.to_string()),
    }
}

/// An Api for objects of `resource` in `namespace` (ignored when cluster-scoped).
fn api_for(ctx: &ActionCtx<'_>, resource: &Resource, namespace: &str) -> Api<DynamicObject> {
    if resource.namespaced {
        Api::namespaced_with(ctx.client.clone(), namespace, &resource.api)
    } else {
        Api::all_with(ctx.client.clone(), &resource.api)
    }
}

/// A Kubernetes error as one attempt's outcome: Forbidden, Unprocessable and
/// other 4xx refusals will not change on a retry; the rest may.
fn api_error(what: &str, e: &kube::Error) -> Attempt {
    let message = format!("{what}: {}", describe(e));
    match e {
        kube::Error::Api(s) if s.code == 403 => Attempt::Denied(
            crate::reconcile::error::rbac_denied_message(what, &s.message),
        ),
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 408 && s.code != 429 => {
            Attempt::Stop(message)
        }
        _ => Attempt::Retry(message),
    }
}

fn target_namespace<'a>(ctx: &'a ActionCtx<'_>, namespace: Option<&'a str>) -> &'a str {
    namespace
        .filter(|n| !n.is_empty())
        .unwrap_or(&ctx.namespace)
}

/// A label selector in the API's query syntax.
pub(crate) fn selector_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for r in selector.match_expressions.iter().flatten() {
        let values = r.values.clone().unwrap_or_default().join(",");
        parts.push(match r.operator.as_str() {
            "In" => format!("{} in ({values})", r.key),
            "NotIn" => format!("{} notin ({values})", r.key),
            "Exists" => r.key.clone(),
            _ => format!("!{}", r.key),
        });
    }
    parts.join(",")
}

/// `patch`: a JSON merge patch (`merge`) or a JSON patch (`json6902`) on one
/// object by name, or on every object of the kind in the namespace that
/// matches a selector (none matching is success).
pub(super) async fn patch(ctx: &ActionCtx<'_>, p: &PatchAction) -> Result<(), Attempt> {
    let t = &p.target;
    let by_name = t.name.as_deref().filter(|n| !n.is_empty());
    let selector = t.selector.as_ref();
    kustomize::check_aliases(p.patch.as_bytes())
        .map_err(|e| Attempt::Stop(format!("the patch does not parse: {e}")))?;
    let body: Value = serde_yaml_ng::from_str(&p.patch)
        .map_err(|e| Attempt::Stop(format!("the patch does not parse: {e}")))?;
    let patch = match p.type_.unwrap_or(PatchType::Merge) {
        PatchType::Merge => {
            if !body.is_object() {
                return Err(Attempt::Stop("a merge patch must be an object".into()));
            }
            Patch::Merge(body)
        }
        PatchType::Json6902 => Patch::Json(
            serde_json::from_value::<json_patch::Patch>(body)
                .map_err(|e| Attempt::Stop(format!("the JSON patch is invalid: {e}")))?,
        ),
    };
    let resource = resource(ctx, t.api_version.as_deref(), &t.kind).await?;
    let api = api_for(
        ctx,
        &resource,
        target_namespace(ctx, t.namespace.as_deref()),
    );
    let names: Vec<String> = match (by_name, selector) {
        (Some(name), None) => vec![name.to_string()],
        (None, Some(selector)) => {
            let query = selector_query(selector);
            if query.is_empty() {
                return Err(Attempt::Stop(
                    "target.selector is empty: it would patch every object".into(),
                ));
            }
            api.list(&ListParams::default().labels(&query))
                .await
                .map_err(|e| api_error(&format!("listing {} ({query})", t.kind), &e))?
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect()
        }
        _ => {
            return Err(Attempt::Stop(
                "target must set exactly one of name and selector".into(),
            ));
        }
    };
    for name in names {
        api.patch(&name, &PatchParams::default(), &patch)
            .await
            .map_err(|e| api_error(&format!("patching {} {name}", t.kind), &e))?;
    }
    Ok(())
}

/// `delete`: NotFound is success; `Background` (or unset) sends no
/// propagation policy, so the API server's default for the kind applies.
pub(super) async fn delete(ctx: &ActionCtx<'_>, d: &DeleteAction) -> Result<(), Attempt> {
    let t = &d.target;
    let resource = resource(ctx, t.api_version.as_deref(), &t.kind).await?;
    let api = api_for(
        ctx,
        &resource,
        target_namespace(ctx, t.namespace.as_deref()),
    );
    let params = match d.cascade {
        None | Some(DeleteCascade::Background) => DeleteParams::default(),
        Some(DeleteCascade::Foreground) => DeleteParams::foreground(),
        Some(DeleteCascade::Orphan) => DeleteParams::orphan(),
    };
    match api.delete(&t.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_error(&format!("deleting {} {}", t.kind, t.name), &e)),
    }
}

/// `wait`: sleeps `duration`; else polls the CEL `expr` over `target` until
/// it holds or `timeout` (5 m) passes; neither is a no-op.
pub(super) async fn wait(ctx: &ActionCtx<'_>, w: &WaitAction) -> Result<(), Attempt> {
    if let Some(d) = w.duration.as_ref() {
        let d = d
            .parse()
            .ok()
            .and_then(|d: crate::duration::GoDuration| d.to_std())
            .ok_or_else(|| Attempt::Stop(format!("duration {:?} is not valid", d.0)))?;
        tokio::time::sleep(d).await;
        return Ok(());
    }
    let Some(expr) = w.expr.as_deref().filter(|e| !e.trim().is_empty()) else {
        return Ok(());
    };
    let Some(target) = w.target.as_ref() else {
        return Err(Attempt::Stop("expr needs a target".into()));
    };
    let limit = w
        .timeout
        .as_ref()
        .and_then(|t| t.parse().ok())
        .and_then(|t: crate::duration::GoDuration| t.to_std())
        .filter(|t| !t.is_zero())
        .unwrap_or(WAIT_TIMEOUT);
    let api_version = target.api_version.clone().unwrap_or_else(|| "v1".into());
    let check = cel::compile(&CustomHealthCheck {
        api_version: api_version.clone(),
        kind: target.kind.clone(),
        current: Some(expr.to_string()),
        in_progress: None,
        failed: None,
    })
    .map_err(|e| {
        let detail = e.strip_prefix("current: ").unwrap_or(&e);
        Attempt::Stop(format!("expr {expr:?}: {detail}"))
    })?;
    let resource = resource(ctx, target.api_version.as_deref(), &target.kind).await?;
    let api = api_for(
        ctx,
        &resource,
        target_namespace(ctx, target.namespace.as_deref()),
    );
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match api.get_opt(&target.name).await {
            Ok(Some(obj)) => {
                let value = serde_json::to_value(&obj).unwrap_or(Value::Null);
                match cel::evaluate(&check, &value) {
                    ExprOutcome::Current => return Ok(()),
                    ExprOutcome::InFlight(why)
                    | ExprOutcome::NotReady(why)
                    | ExprOutcome::Failed(why) => why,
                }
            }
            Ok(None) => format!("{} {} not found", target.kind, target.name),
            Err(e) => describe(&e),
        };
        if tokio::time::Instant::now() + POLL > deadline {
            return Err(Attempt::Retry(format!(
                "timed out after {} waiting for {} {}: {last}",
                crate::duration::GoDuration::from_std(limit),
                target.kind,
                target.name
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Resolves an action's source as the context's identity, fetches and
/// builds it (path only: no patches, substitution or decryption). Returns
/// the objects and the source revision.
async fn build_source(
    ctx: &ActionCtx<'_>,
    source_ref: &SourceReference,
    path: Option<&str>,
) -> Result<(Vec<Value>, String), Attempt> {
    let resolved = source::resolve_as(
        &ctx.clients,
        &ctx.client,
        "action",
        &ctx.namespace,
        source_ref,
        ctx.env.settings.no_cross_namespace_refs,
    )
    .await
    .map_err(|e| Attempt::Retry(e.message))?;
    let artifact = ctx
        .env
        .fetcher
        .fetch(&resolved.url, &resolved.digest)
        .await
        .map_err(|e| {
            if e.is_terminal() {
                Attempt::Stop(e.to_string())
            } else {
                Attempt::Retry(e.to_string())
            }
        })?;
    let objects = build::render(&artifact.files, path.unwrap_or("./"), &[], None)
        .map_err(|e| Attempt::Stop(format!("build: {e}")))?;
    Ok((objects, resolved.revision))
}

/// The name a `job` action gives a rendered object: the name cut to leave
/// room for `-` and the first 8 hex digits of SHA-256 of the job artifact's
/// revision, so a new revision creates new Jobs.
pub(super) fn job_name(name: &str, revision: &str) -> String {
    let hash = Sha256::digest(revision.as_bytes());
    let suffix: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut base: String = name.chars().take(63 - 9).collect();
    while base.ends_with('-') || base.ends_with('.') {
        base.pop();
    }
    format!("{base}-{suffix}")
}

/// Whether a Job's status has condition `type` with status True.
fn condition_true(obj: &Value, type_: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(type_)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// `job`: creates the rendered Jobs (under a name keyed by the job
/// artifact's revision), awaits each until `Complete` or `Failed`, and
/// deletes everything it created afterwards, whatever the outcome.
pub(super) async fn job(
    ctx: &ActionCtx<'_>,
    j: &JobAction,
    limit: Option<Duration>,
) -> Result<(), Attempt> {
    let (mut objects, revision) = build_source(ctx, &j.source_ref, j.path.as_deref()).await?;
    if objects.is_empty() {
        return Err(Attempt::Stop("the job source renders no objects".into()));
    }
    for o in &mut objects {
        let name = o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("job")
            .to_string();
        o["metadata"]["name"] = Value::String(job_name(&name, &revision));
        if o.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            o["metadata"]["namespace"] = Value::String(ctx.namespace.clone());
        }
    }
    let deadline = tokio::time::Instant::now() + limit.unwrap_or(JOB_TIMEOUT);
    let mut created: Vec<(Api<DynamicObject>, String)> = Vec::new();
    let outcome = async {
        for o in &objects {
            let r = apply::ObjectRef::of(o);
            let resource = resource(ctx, Some(&r.api_version), &r.kind).await?;
            let api = api_for(ctx, &resource, &r.namespace);
            let obj: DynamicObject = serde_json::from_value(o.clone())
                .map_err(|e| Attempt::Stop(format!("{}: {e}", r.subject())))?;
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                // Created by an earlier attempt: await the same object.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(api_error(&format!("creating {}", r.subject()), &e)),
            }
            created.push((api, r.name.clone()));
        }
        for (api, name) in &created {
            loop {
                let obj = api
                    .get_opt(name)
                    .await
                    .map_err(|e| api_error(&format!("reading Job {name}"), &e))?
                    .map(|o| serde_json::to_value(o).unwrap_or(Value::Null));
                match obj {
                    Some(o) if condition_true(&o, "Complete") => break,
                    Some(o) if condition_true(&o, "Failed") => {
                        return Err(Attempt::Stop(format!("Job {name} failed")));
                    }
                    None => return Err(Attempt::Retry(format!("Job {name} disappeared"))),
                    Some(_) => {}
                }
                if tokio::time::Instant::now() + POLL > deadline {
                    return Err(Attempt::Retry(format!(
                        "timed out waiting for Job {name} to complete"
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }
    .await;
    for (api, name) in &created {
        if let Err(e) = api.delete(name, &DeleteParams::background()).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404)
        {
            tracing::warn!(namespace = %ctx.namespace, job = %name, error = %describe(&e), "deleting an action's Job failed");
        }
    }
    outcome
}

/// `apply`: server-side applies the rendered objects with the StageSet's
/// owner labels only (no stage label: they are not the stage's, never
/// inventoried, never pruned), then optionally waits for them to be ready.
pub(super) async fn apply_objects(
    ctx: &ActionCtx<'_>,
    a: &ApplyAction,
    limit: Option<Duration>,
) -> Result<(), Attempt> {
    let (mut objects, _) = build_source(ctx, &a.source_ref, a.path.as_deref()).await?;
    for o in &mut objects {
        if !o.get("metadata").is_some_and(Value::is_object) {
            o["metadata"] = serde_json::json!({});
        }
        if !o["metadata"].get("labels").is_some_and(Value::is_object) {
            o["metadata"]["labels"] = serde_json::json!({});
        }
        let labels = o["metadata"]["labels"]
            .as_object_mut()
            .expect("labels is an object");
        labels.insert(
            keys::LABEL_OWNER_NAME.into(),
            Value::String(ctx.ss.name_any()),
        );
        labels.insert(
            keys::LABEL_OWNER_NAMESPACE.into(),
            Value::String(ctx.namespace.clone()),
        );
        labels.remove(keys::LABEL_STAGE);
        labels.remove(keys::APPLYSET_PART_OF_LABEL);
        if o.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            let r = apply::ObjectRef::of(o);
            if let Ok(res) = ctx.clients.resource(&r.api_version, &r.kind).await
                && res.namespaced
            {
                o["metadata"]["namespace"] = Value::String(ctx.namespace.clone());
            }
        }
    }
    let refs: Vec<apply::ObjectRef> = objects.iter().map(apply::ObjectRef::of).collect();
    for o in &objects {
        let r = apply::ObjectRef::of(o);
        let resource = resource(ctx, Some(&r.api_version), &r.kind).await?;
        let api = api_for(ctx, &resource, &r.namespace);
        api.patch(
            &r.name,
            &PatchParams::apply(ACTION_FIELD_MANAGER).force(),
            &Patch::Apply(o),
        )
        .await
        .map_err(|e| api_error(&format!("applying {}", r.subject()), &e))?;
    }
    if a.wait == Some(true) {
        match verify::wait_ready(
            &ctx.clients,
            &ctx.client,
            &refs,
            verify::Known {
                concurrency: crate::reconcile::DEFAULT_APPLY_CONCURRENCY,
                ..Default::default()
            },
            limit.unwrap_or(APPLY_WAIT),
            || async { false },
        )
        .await
        {
            verify::Verdict::Ready => {}
            verify::Verdict::Progressing(m) | verify::Verdict::Failed(m) => {
                return Err(Attempt::Retry(m));
            }
            verify::Verdict::Deleted => return Err(Attempt::Stop("aborted".into())),
        }
    }
    Ok(())
}

/// An object reference with its kind's resource resolved, for anchors.
pub(super) async fn read_uid(
    ctx: &ActionCtx<'_>,
    target: &NamespacedObjectKindReference,
) -> Result<Option<String>, String> {
    let resource = resource(ctx, target.api_version.as_deref(), &target.kind)
        .await
        .map_err(Attempt::message)?;
    let api = api_for(
        ctx,
        &resource,
        target_namespace(ctx, target.namespace.as_deref()),
    );
    match api.get_opt(&target.name).await {
        Ok(obj) => Ok(obj.and_then(|o| o.metadata.uid)),
        Err(e) => Err(describe(&e)),
    }
}

/// A Secret value, read as the context's identity in the StageSet's
/// namespace. The error names the Secret and key, never the value.
pub(super) async fn secret_value(
    ctx: &ActionCtx<'_>,
    name: &str,
    key: &str,
) -> Result<Vec<u8>, Attempt> {
    use k8s_openapi::api::core::v1::Secret;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
        .get(name)
        .await
        .map_err(|e| api_error(&format!("reading Secret {name}"), &e))?;
    let mut data: BTreeMap<String, k8s_openapi::ByteString> = secret.data.unwrap_or_default();
    data.remove(key)
        .map(|v| v.0)
        .ok_or_else(|| Attempt::Stop(format!("Secret {name} has no key {key:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LabelSelectorRequirement;

    #[test]
    fn job_names_follow_the_revision() {
        let a = job_name("migrate", "main@sha1:1");
        let b = job_name("migrate", "main@sha1:2");
        assert!(
            a.starts_with("migrate-") && a.len() == "migrate-".len() + 8,
            "{a}"
        );
        assert_ne!(a, b);
        assert_eq!(a, job_name("migrate", "main@sha1:1"));
        let long = job_name(&"x".repeat(80), "r");
        assert!(long.len() <= 63, "{long}");
    }

    #[test]
    fn selectors_render_in_query_syntax() {
        let s = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "Exists".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(selector_query(&s), "app=web,tier in (a,b),!legacy,canary");
        assert_eq!(selector_query(&LabelSelector::default()), "");
    }

    #[test]
    fn job_conditions() {
        let done =
            serde_json::json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert!(condition_true(&done, "Complete"));
        assert!(!condition_true(&done, "Failed"));
    }
}
