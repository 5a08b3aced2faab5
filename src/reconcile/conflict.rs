//! Conflict policies (delivery.md §2.6, api.md §2.7): what to do with an object
//! whose apply hits an immutable field, decided per rendered object before the
//! apply.
//!
//! Precedence: the rendered object's own `stages.metio.wtf/force` annotation
//! (any non-empty value) → the first matching `conflictPolicy.rules[]` entry →
//! `conflictPolicy.default` → `Recreate` when `stage.force` → `Fail`.
//!
//! `Recreate` stamps `stages.metio.wtf/force=<token>` with a token that is fresh
//! for every apply; the apply only recreates objects whose desired copy carries
//! this apply's token, so a stale annotation on a live object never selects it.
//! `KeepExisting` stamps `stages.metio.wtf/keep-existing=true`; the apply then
//! creates the object when absent and never touches it once it exists. A *rule*
//! that would recreate a core PersistentVolumeClaim or PersistentVolume without
//! `allowDataLoss: true` fails the stage before anything is applied.

use serde_json::Value;

use crate::api::{ConflictAction, ConflictTarget, Stage, keys};
use crate::reconcile::apply::ObjectRef;

/// The decision for one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// An immutable-field conflict fails the stage.
    Fail,
    /// Delete and create again on an immutable-field conflict.
    Recreate,
    /// Create when absent, never update.
    KeepExisting,
}

/// A fresh per-apply token (16 hex characters).
pub fn fresh_token() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn matches(target: &ConflictTarget, r: &ObjectRef) -> bool {
    let eq = |want: &Option<String>, have: &str| {
        want.as_deref()
            .filter(|w| !w.is_empty())
            .is_none_or(|w| w == have)
    };
    eq(&target.api_version, &r.api_version)
        && eq(&target.kind, &r.kind)
        && eq(&target.name, &r.name)
        && eq(&target.namespace, &r.namespace)
}

fn is_volume(r: &ObjectRef) -> bool {
    r.api_version == "v1" && (r.kind == "PersistentVolumeClaim" || r.kind == "PersistentVolume")
}

/// Decides the policy of one rendered object.
pub fn decide(obj: &Value, stage: &Stage) -> Result<Policy, String> {
    let r = ObjectRef::of(obj);
    let annotated = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(keys::ANNOTATION_FORCE))
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty());
    if annotated {
        return Ok(Policy::Recreate);
    }
    let policy = stage.conflict_policy.as_ref();
    if let Some(rule) = policy
        .and_then(|p| p.rules.as_ref())
        .into_iter()
        .flatten()
        .find(|rule| matches(&rule.target, &r))
    {
        let decided = to_policy(&rule.action);
        if decided == Policy::Recreate && is_volume(&r) && rule.allow_data_loss != Some(true) {
            return Err(format!(
                "conflictPolicy refuses to recreate {} \"{}\": that destroys data; set the rule's allowDataLoss: true to permit it",
                r.kind, r.name
            ));
        }
        return Ok(decided);
    }
    Ok(match policy.and_then(|p| p.default.as_ref()) {
        Some(action) => to_policy(action),
        None if stage.force == Some(true) => Policy::Recreate,
        None => Policy::Fail,
    })
}

fn to_policy(action: &ConflictAction) -> Policy {
    match action {
        ConflictAction::Fail => Policy::Fail,
        ConflictAction::Recreate => Policy::Recreate,
        ConflictAction::KeepExisting => Policy::KeepExisting,
    }
}

/// Decides every object's policy and stamps the marker annotations. `token`
/// is this apply's force token. The first refused object fails the whole
/// stage, before anything is applied.
pub fn resolve(objects: &mut [Value], stage: &Stage, token: &str) -> Result<Vec<Policy>, String> {
    let mut policies = Vec::with_capacity(objects.len());
    for obj in objects.iter_mut() {
        let policy = decide(obj, stage)?;
        match policy {
            Policy::Recreate => annotate(obj, keys::ANNOTATION_FORCE, token),
            Policy::KeepExisting => annotate(obj, keys::ANNOTATION_KEEP_EXISTING, "true"),
            Policy::Fail => {}
        }
        policies.push(policy);
    }
    Ok(policies)
}

fn annotate(obj: &mut Value, key: &str, value: &str) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = serde_json::json!({});
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| serde_json::json!({}));
    if !annotations.is_object() {
        *annotations = serde_json::json!({});
    }
    annotations
        .as_object_mut()
        .expect("annotations is an object")
        .insert(key.to_string(), Value::String(value.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConflictPolicy, ConflictRule};
    use serde_json::json;

    fn stage(policy: Option<ConflictPolicy>, force: Option<bool>) -> Stage {
        let mut s: Stage = serde_json::from_value(json!({
            "name": "s", "sourceRef": {"name": "a"}
        }))
        .unwrap();
        s.conflict_policy = policy;
        s.force = force;
        s
    }

    fn obj(api_version: &str, kind: &str, name: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": "n"}})
    }

    fn rule(kind: &str, action: ConflictAction, allow: Option<bool>) -> ConflictRule {
        ConflictRule {
            target: ConflictTarget {
                kind: Some(kind.into()),
                ..Default::default()
            },
            action,
            allow_data_loss: allow,
        }
    }

    #[test]
    fn precedence() {
        let cm = obj("v1", "ConfigMap", "a");
        assert_eq!(decide(&cm, &stage(None, None)).unwrap(), Policy::Fail);
        assert_eq!(
            decide(&cm, &stage(None, Some(true))).unwrap(),
            Policy::Recreate
        );
        // A present conflictPolicy default wins over force (the CRD default trap).
        let p = ConflictPolicy {
            default: Some(ConflictAction::Fail),
            rules: None,
        };
        assert_eq!(
            decide(&cm, &stage(Some(p), Some(true))).unwrap(),
            Policy::Fail
        );
        // The first matching rule wins.
        let p = ConflictPolicy {
            default: Some(ConflictAction::Recreate),
            rules: Some(vec![
                rule("ConfigMap", ConflictAction::KeepExisting, None),
                rule("ConfigMap", ConflictAction::Fail, None),
            ]),
        };
        assert_eq!(
            decide(&cm, &stage(Some(p.clone()), None)).unwrap(),
            Policy::KeepExisting
        );
        assert_eq!(
            decide(&obj("apps/v1", "Deployment", "d"), &stage(Some(p), None)).unwrap(),
            Policy::Recreate
        );
        // The object's own annotation beats everything.
        let mut forced = cm.clone();
        forced["metadata"]["annotations"] = json!({"stages.metio.wtf/force": "enabled"});
        let p = ConflictPolicy {
            default: Some(ConflictAction::KeepExisting),
            rules: None,
        };
        assert_eq!(
            decide(&forced, &stage(Some(p), None)).unwrap(),
            Policy::Recreate
        );
    }

    #[test]
    fn data_loss_guard() {
        let pvc = obj("v1", "PersistentVolumeClaim", "data");
        let refuse = ConflictPolicy {
            default: None,
            rules: Some(vec![rule(
                "PersistentVolumeClaim",
                ConflictAction::Recreate,
                None,
            )]),
        };
        let err = decide(&pvc, &stage(Some(refuse), None)).unwrap_err();
        assert_eq!(
            err,
            "conflictPolicy refuses to recreate PersistentVolumeClaim \"data\": that destroys data; set the rule's allowDataLoss: true to permit it"
        );
        let allow = ConflictPolicy {
            default: None,
            rules: Some(vec![rule(
                "PersistentVolumeClaim",
                ConflictAction::Recreate,
                Some(true),
            )]),
        };
        assert_eq!(
            decide(&pvc, &stage(Some(allow), None)).unwrap(),
            Policy::Recreate
        );
        // force: true and the annotation are not guarded.
        assert_eq!(
            decide(&pvc, &stage(None, Some(true))).unwrap(),
            Policy::Recreate
        );
    }

    #[test]
    fn stamps_markers() {
        let p = ConflictPolicy {
            default: Some(ConflictAction::Recreate),
            rules: Some(vec![rule("Secret", ConflictAction::KeepExisting, None)]),
        };
        let mut objs = vec![obj("v1", "ConfigMap", "a"), obj("v1", "Secret", "b")];
        let token = fresh_token();
        assert_eq!(token.len(), 16);
        let policies = resolve(&mut objs, &stage(Some(p), None), &token).unwrap();
        assert_eq!(policies, [Policy::Recreate, Policy::KeepExisting]);
        assert_eq!(
            objs[0]["metadata"]["annotations"]["stages.metio.wtf/force"],
            token.as_str()
        );
        assert_eq!(
            objs[1]["metadata"]["annotations"]["stages.metio.wtf/keep-existing"],
            "true"
        );
    }
}
